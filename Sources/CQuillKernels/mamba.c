// Mamba's selective scan: the recurrence that cannot be a matrix multiply. Vectorized over
// the state dimension (16 in every released Mamba), one channel at a time.
#include "internal.h"
#include <math.h>
#ifdef QUILL_X86
#include <immintrin.h>
#include "avx2_math.h"
#endif

/// torch's softplus with threshold 20.
static inline float softplus(float x) { return x > 20.0f ? x : log1pf(expf(x)); }

static inline float silu(float x) { return x / (1.0f + expf(-x)); }

void quill_mamba_scan_scalar(const quill_mamba_scan_args *s, int64_t c0, int64_t c1) {
    const int64_t n = s->states;
    for (int64_t t = 0; t < s->tokens; t++) {
        const float *delta = s->delta + t * s->delta_stride, *b = s->bc + t * s->bc_stride, *c = b + n;
        const float *u = s->u + t * s->u_stride, *z = s->z + t * s->z_stride;
        float *y = s->y + t * s->y_stride;
        for (int64_t ch = c0; ch < c1; ch++) {
            const float step = softplus(delta[ch] + s->dt_bias[ch]);
            float *h = s->h + ch * n;
            const float *a = s->a + ch * n;
            float accumulated = 0.0f;
            for (int64_t i = 0; i < n; i++) {
                h[i] = expf(a[i] * step) * h[i] + step * b[i] * u[ch];
                accumulated += h[i] * c[i];
            }
            y[ch] = (accumulated + u[ch] * s->d[ch]) * silu(z[ch]);
        }
    }
}

#ifdef QUILL_X86

void QUILL_AVX2 quill_mamba_scan_avx2(const quill_mamba_scan_args *s, int64_t c0, int64_t c1) {
    const int64_t n = s->states, vectors = n / 8;
    if (n % 8 != 0) {  // no released model; keep the exact scalar path
        quill_mamba_scan_scalar(s, c0, c1);
        return;
    }
    for (int64_t t = 0; t < s->tokens; t++) {
        const float *delta = s->delta + t * s->delta_stride, *b = s->bc + t * s->bc_stride, *c = b + n;
        const float *u = s->u + t * s->u_stride, *z = s->z + t * s->z_stride;
        float *y = s->y + t * s->y_stride;
        for (int64_t first = c0; first < c1; first += 8) {
            // Eight channels' step sizes and gates at once: softplus and SiLU were three
            // libm calls per channel, as much time as the recurrence itself.
            const int64_t count = c1 - first < 8 ? c1 - first : 8;
            float steps[8], gates[8];
            if (count == 8) {
                _mm256_storeu_ps(steps, softplus256(_mm256_add_ps(_mm256_loadu_ps(delta + first), _mm256_loadu_ps(s->dt_bias + first))));
                _mm256_storeu_ps(gates, silu256(_mm256_loadu_ps(z + first)));
            } else {
                for (int64_t j = 0; j < count; j++) {
                    steps[j] = softplus(delta[first + j] + s->dt_bias[first + j]);
                    gates[j] = silu(z[first + j]);
                }
            }
            for (int64_t j = 0; j < count; j++) {
                const int64_t ch = first + j;
                const __m256 vstep = _mm256_set1_ps(steps[j]), vsu = _mm256_set1_ps(steps[j] * u[ch]);
                float *h = s->h + ch * n;
                const float *a = s->a + ch * n;
                __m256 accumulated = _mm256_setzero_ps();
                for (int64_t v = 0; v < vectors; v++) {
                    // a = −exp(A_log) < 0 and step = softplus(·) ≥ 0, so a·step ≤ 0: the cheaper
                    // exponential applies (quill bench, Mamba-130M Q4_0 decode, three alternations:
                    // median 356 → 370 tok/s, within a noisy machine's spread).
                    const __m256 decay = exp256_nonpositive(_mm256_mul_ps(_mm256_loadu_ps(a + 8 * v), vstep));
                    const __m256 hv = _mm256_fmadd_ps(decay, _mm256_loadu_ps(h + 8 * v), _mm256_mul_ps(vsu, _mm256_loadu_ps(b + 8 * v)));
                    _mm256_storeu_ps(h + 8 * v, hv);
                    accumulated = _mm256_fmadd_ps(hv, _mm256_loadu_ps(c + 8 * v), accumulated);
                }
                y[ch] = (hsum256(accumulated) + u[ch] * s->d[ch]) * gates[j];
            }
        }
    }
}
#endif

void quill_causal_conv(const float *x, int64_t x_stride, float *y, int64_t y_stride, int64_t tokens, float *window,
                       const float *weights, const float *bias, int64_t channels, int64_t kernel) {
    const int64_t taps = kernel - 1;
    for (int64_t t = 0; t < tokens; t++) {
        const float *input = x + t * x_stride;
        float *output = y + t * y_stride;
        for (int64_t ch = 0; ch < channels; ch++) {
            const float *w = weights + ch * kernel;
            float *past = window + ch * taps;
            float sum = bias[ch];
            for (int64_t j = 0; j < taps; j++) sum += w[j] * past[j];
            sum += w[taps] * input[ch];
            output[ch] = sum;
            if (taps > 0) {  // shift the window left and append this input
                for (int64_t j = 0; j + 1 < taps; j++) past[j] = past[j + 1];
                past[taps - 1] = input[ch];
            }
        }
    }
}

void quill_mamba_scan(const quill_mamba_scan_args *args, int64_t c0, int64_t c1) {
#ifdef QUILL_X86
    if (quill_kernel_level() == 1) { quill_mamba_scan_avx2(args, c0, c1); return; }
#endif
    quill_mamba_scan_scalar(args, c0, c1);
}
