// Attention over a paged KV cache. The algorithm is written once, over three primitives
// (a dot product, an axpy and an in-place exp) chosen per call for the CPU and the KV type.
#include "internal.h"
#include <math.h>

typedef float (*dot_fn)(const float *q, const void *k, int64_t d);
typedef void (*axpy_fn)(float *acc, float a, const void *v, int64_t d);
typedef void (*exp_fn)(float *x, int64_t n);

static float dot_f32(const float *q, const void *k, int64_t d) { return quill_dot_f32_scalar(q, (const float *)k, d); }
static float dot_f16(const float *q, const void *k, int64_t d) {
    const uint16_t *h = (const uint16_t *)k;
    float s = 0;
    for (int64_t i = 0; i < d; i++) s += q[i] * quill_f16_to_f32_scalar(h[i]);
    return s;
}
static void axpy_f32(float *acc, float a, const void *v, int64_t d) {
    const float *x = (const float *)v;
    for (int64_t i = 0; i < d; i++) acc[i] += a * x[i];
}
static void axpy_f16(float *acc, float a, const void *v, int64_t d) {
    const uint16_t *h = (const uint16_t *)v;
    for (int64_t i = 0; i < d; i++) acc[i] += a * quill_f16_to_f32_scalar(h[i]);
}
static void exp_scalar(float *x, int64_t n) { for (int64_t i = 0; i < n; i++) x[i] = expf(x[i]); }

#ifdef QUILL_X86
#include <immintrin.h>
float quill_dot_f32_avx2(const float *, const float *, int64_t);
static QUILL_AVX2 float dot_f32_avx2(const float *q, const void *k, int64_t d) { return quill_dot_f32_avx2(q, (const float *)k, d); }
static QUILL_AVX2 float dot_f16_avx2(const float *q, const void *k, int64_t d) {
    const uint16_t *h = (const uint16_t *)k;
    __m256 a = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= d; i += 8) a = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(h + i))), a);
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    float r = _mm_cvtss_f32(s);
    for (; i < d; i++) r += q[i] * _cvtsh_ss(h[i]);
    return r;
}
static QUILL_AVX2 void axpy_f32_avx2(float *acc, float a, const void *v, int64_t d) {
    const float *x = (const float *)v;
    const __m256 va = _mm256_set1_ps(a);
    int64_t i = 0;
    for (; i + 8 <= d; i += 8) _mm256_storeu_ps(acc + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(acc + i)));
    for (; i < d; i++) acc[i] += a * x[i];
}
static QUILL_AVX2 void axpy_f16_avx2(float *acc, float a, const void *v, int64_t d) {
    const uint16_t *h = (const uint16_t *)v;
    const __m256 va = _mm256_set1_ps(a);
    int64_t i = 0;
    for (; i + 8 <= d; i += 8)
        _mm256_storeu_ps(acc + i, _mm256_fmadd_ps(va, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(h + i))), _mm256_loadu_ps(acc + i)));
    for (; i < d; i++) acc[i] += a * _cvtsh_ss(h[i]);
}
void quill_exp_avx2(float *x, int64_t n);
#endif

void quill_attention_paged(const float *q, float *out, int64_t row_stride, int64_t n_queries, int64_t group, int64_t d,
                           const void *k_base, const void *v_base, int64_t block_stride, const int32_t *blocks,
                           int64_t block_size, int64_t first_position, int64_t window, float scale, int kv_type,
                           float *scratch) {
    dot_fn dot = kv_type == 1 ? dot_f16 : dot_f32;
    axpy_fn axpy = kv_type == 1 ? axpy_f16 : axpy_f32;
    exp_fn expv = exp_scalar;
#ifdef QUILL_X86
    if (quill_kernel_level() == 1) {
        dot = kv_type == 1 ? dot_f16_avx2 : dot_f32_avx2;
        axpy = kv_type == 1 ? axpy_f16_avx2 : axpy_f32_avx2;
        expv = quill_exp_avx2;
    }
#endif
    const int64_t element = kv_type == 1 ? 2 : 4, rows = n_queries * group;
    float *acc = scratch;                      // [rows][d]
    float *running_max = acc + rows * d;       // [rows]
    float *running_sum = running_max + rows;   // [rows]
    float *scores = running_sum + rows;        // [block_size][group] for one query at a time
    for (int64_t r = 0; r < rows; r++) {
        running_max[r] = -INFINITY;
        running_sum[r] = 0;
        for (int64_t i = 0; i < d; i++) acc[r * d + i] = 0;
    }
    const int64_t last_position = first_position + n_queries - 1;
    const int64_t lowest = window > 0 ? (first_position - window + 1 > 0 ? first_position - window + 1 : 0) : 0;
    for (int64_t b = lowest / block_size; b * block_size <= last_position; b++) {
        const uint8_t *k_run = (const uint8_t *)k_base + (int64_t)blocks[b] * block_stride;
        const uint8_t *v_run = (const uint8_t *)v_base + (int64_t)blocks[b] * block_stride;
        const int64_t start = b * block_size;
        for (int64_t qi = 0; qi < n_queries; qi++) {
            const int64_t position = first_position + qi;
            const int64_t lo = window > 0 && position - window + 1 > start ? position - window + 1 : start;
            const int64_t hi = position + 1 < start + block_size ? position + 1 : start + block_size;  // exclusive
            if (lo >= hi) continue;
            const int64_t count = hi - lo;
            // Scores of this tile for every head of the group.
            for (int64_t j = 0; j < count; j++) {
                const void *k = k_run + (lo - start + j) * d * element;
                for (int64_t g = 0; g < group; g++) scores[g * block_size + j] = dot(q + qi * row_stride + g * d, k, d) * scale;
            }
            for (int64_t g = 0; g < group; g++) {
                const int64_t r = qi * group + g;
                float *s = scores + g * block_size;
                float tile_max = s[0];
                for (int64_t j = 1; j < count; j++) tile_max = s[j] > tile_max ? s[j] : tile_max;
                const float new_max = tile_max > running_max[r] ? tile_max : running_max[r];
                // Rescale what was accumulated under the old maximum (exp(-inf) = 0 at first).
                const float correction = expf(running_max[r] - new_max);
                for (int64_t j = 0; j < count; j++) s[j] -= new_max;
                expv(s, count);
                float tile_sum = 0;
                for (int64_t j = 0; j < count; j++) tile_sum += s[j];
                running_sum[r] = running_sum[r] * correction + tile_sum;
                running_max[r] = new_max;
                float *a = acc + r * d;
                if (correction != 1.0f) for (int64_t i = 0; i < d; i++) a[i] *= correction;
                for (int64_t j = 0; j < count; j++) axpy(a, s[j], v_run + (lo - start + j) * d * element, d);
            }
        }
    }
    for (int64_t r = 0; r < rows; r++) {
        const float inverse = running_sum[r] > 0 ? 1.0f / running_sum[r] : 0.0f;
        float *o = out + (r / group) * row_stride + (r % group) * d;
        for (int64_t i = 0; i < d; i++) o[i] = acc[r * d + i] * inverse;
    }
}
