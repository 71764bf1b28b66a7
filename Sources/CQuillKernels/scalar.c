// Portable scalar kernels. They are the fallback on CPUs without AVX2 and the reference
// the AVX2 kernels are tested against, so they favour plainness over speed.
#include "internal.h"
#include <math.h>

static inline uint32_t f32_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static inline float f32_from_bits(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

float quill_f16_to_f32_scalar(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exponent = (h >> 10) & 0x1F;
    uint32_t mantissa = h & 0x3FF;
    if (exponent == 0) {
        // Zero or subnormal: mantissa * 2^-24 is exact in float.
        float magnitude = (float)mantissa * 0x1.0p-24f;
        return sign ? -magnitude : magnitude;
    }
    if (exponent == 31) return f32_from_bits(sign | 0x7F800000u | (mantissa << 13));
    return f32_from_bits(sign | ((exponent + 112) << 23) | (mantissa << 13));
}

// Round-to-nearest-even float -> half, including subnormals, infinities and NaN
// (the bit-manipulation method used by the FP16 library and ggml's non-F16C path).
uint16_t quill_f32_to_f16_scalar(float f) {
    const float scale_to_inf = 0x1.0p+112f;
    const float scale_to_zero = 0x1.0p-110f;
    float base = (fabsf(f) * scale_to_inf) * scale_to_zero;
    uint32_t w = f32_bits(f);
    uint32_t shl1_w = w + w;
    uint32_t sign = w & 0x80000000u;
    uint32_t bias = shl1_w & 0xFF000000u;
    if (bias < 0x71000000u) bias = 0x71000000u;
    base = f32_from_bits((bias >> 1) + 0x07800000u) + base;
    uint32_t bits = f32_bits(base);
    uint32_t exp_bits = (bits >> 13) & 0x00007C00u;
    uint32_t mantissa_bits = bits & 0x00000FFFu;
    uint32_t nonsign = exp_bits + mantissa_bits;
    return (uint16_t)((sign >> 16) | (shl1_w > 0xFF000000u ? 0x7E00u : nonsign));
}

void quill_f16_to_f32(const uint16_t *src, float *dst, int64_t n) {
#ifdef QUILL_X86
    if (quill_kernel_level() == 1) { quill_f16_to_f32_avx2(src, dst, n); return; }
#endif
    for (int64_t i = 0; i < n; i++) dst[i] = quill_f16_to_f32_scalar(src[i]);
}

void quill_f32_to_f16(const float *src, uint16_t *dst, int64_t n) { quill_f32_to_f16_strided(src, dst, n, 1); }

void quill_f32_to_f16_strided(const float *src, uint16_t *dst, int64_t n, int64_t stride) {
#ifdef QUILL_X86
    if (quill_kernel_level() == 1) { quill_f32_to_f16_avx2(src, dst, n, stride); return; }
#endif
    for (int64_t i = 0; i < n; i++) dst[i * stride] = quill_f32_to_f16_scalar(src[i]);
}

void quill_bf16_to_f32_scalar(const uint16_t *src, float *dst, int64_t n) {
    for (int64_t i = 0; i < n; i++) dst[i] = quill_bf16_bits_to_f32(src[i]);
}

void quill_f32_to_bf16(const float *src, uint16_t *dst, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        uint32_t u = f32_bits(src[i]);
        if ((u & 0x7FFFFFFFu) > 0x7F800000u) { dst[i] = (uint16_t)((u >> 16) | 0x40); continue; }
        u += 0x7FFFu + ((u >> 16) & 1u);  // round to nearest even
        dst[i] = (uint16_t)(u >> 16);
    }
}

// MARK: - GGML reference quantizers

void quill_quantize_q8_0(const float *src, void *dst, int64_t n) {
    uint8_t *out = (uint8_t *)dst;
    for (int64_t b = 0; b < n / QUILL_QK; b++, src += QUILL_QK, out += QUILL_Q8_0_BLOCK_BYTES) {
        float amax = 0.0f;
        for (int j = 0; j < QUILL_QK; j++) amax = fmaxf(amax, fabsf(src[j]));
        const float d = amax / 127.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        uint16_t dh = quill_f32_to_f16_scalar(d);
        memcpy(out, &dh, 2);
        for (int j = 0; j < QUILL_QK; j++) out[2 + j] = (uint8_t)(int8_t)roundf(src[j] * id);
    }
}

void quill_quantize_q4_0(const float *src, void *dst, int64_t n) {
    uint8_t *out = (uint8_t *)dst;
    for (int64_t b = 0; b < n / QUILL_QK; b++, src += QUILL_QK, out += QUILL_Q4_0_BLOCK_BYTES) {
        float amax = 0.0f, max = 0.0f;  // max keeps the sign of the largest magnitude
        for (int j = 0; j < QUILL_QK; j++) {
            if (amax < fabsf(src[j])) { amax = fabsf(src[j]); max = src[j]; }
        }
        const float d = max / -8.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        uint16_t dh = quill_f32_to_f16_scalar(d);
        memcpy(out, &dh, 2);
        for (int j = 0; j < QUILL_QK / 2; j++) {
            int lo = (int)(int8_t)(src[j] * id + 8.5f);
            int hi = (int)(int8_t)(src[j + QUILL_QK / 2] * id + 8.5f);
            if (lo > 15) lo = 15;
            if (hi > 15) hi = 15;
            out[2 + j] = (uint8_t)(lo | (hi << 4));
        }
    }
}

void quill_dequantize_q8_0_scalar(const void *src, float *dst, int64_t n) {
    const uint8_t *in = (const uint8_t *)src;
    for (int64_t b = 0; b < n / QUILL_QK; b++, in += QUILL_Q8_0_BLOCK_BYTES, dst += QUILL_QK) {
        const float d = quill_f16_to_f32_scalar(quill_read_u16(in));
        for (int j = 0; j < QUILL_QK; j++) dst[j] = (float)(int8_t)in[2 + j] * d;
    }
}

void quill_dequantize_q4_0_scalar(const void *src, float *dst, int64_t n) {
    const uint8_t *in = (const uint8_t *)src;
    for (int64_t b = 0; b < n / QUILL_QK; b++, in += QUILL_Q4_0_BLOCK_BYTES, dst += QUILL_QK) {
        const float d = quill_f16_to_f32_scalar(quill_read_u16(in));
        for (int j = 0; j < QUILL_QK / 2; j++) {
            dst[j] = (float)((int)(in[2 + j] & 0x0F) - 8) * d;
            dst[j + QUILL_QK / 2] = (float)((int)(in[2 + j] >> 4) - 8) * d;
        }
    }
}

// The j-th 6-bit scale and min of a Q4_K block's 12 packed bytes.
static void q4_K_scale_min(int j, const uint8_t *q, uint8_t *scale, uint8_t *min) {
    if (j < 4) {
        *scale = q[j] & 63;
        *min = q[j + 4] & 63;
    } else {
        *scale = (uint8_t)((q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4));
        *min = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

void quill_dequantize_q4_K(const void *src, float *dst, int64_t n) {
    const uint8_t *block = (const uint8_t *)src;
    for (int64_t b = 0; b < n / 256; b++, block += 144) {
        const float d = quill_f16_to_f32_scalar(quill_read_u16(block));
        const float dmin = quill_f16_to_f32_scalar(quill_read_u16(block + 2));
        const uint8_t *scales = block + 4, *q = block + 16;
        for (int j = 0; j < 256; j += 64, q += 32) {
            uint8_t s1, m1, s2, m2;
            q4_K_scale_min(j / 32, scales, &s1, &m1);
            q4_K_scale_min(j / 32 + 1, scales, &s2, &m2);
            const float d1 = d * s1, min1 = dmin * m1, d2 = d * s2, min2 = dmin * m2;
            for (int l = 0; l < 32; l++) *dst++ = d1 * (float)(q[l] & 0x0F) - min1;
            for (int l = 0; l < 32; l++) *dst++ = d2 * (float)(q[l] >> 4) - min2;
        }
    }
}

void quill_dequantize_q6_K(const void *src, float *dst, int64_t n) {
    const uint8_t *block = (const uint8_t *)src;
    for (int64_t b = 0; b < n / 256; b++, block += 210) {
        const uint8_t *ql = block, *qh = block + 128;
        const int8_t *scales = (const int8_t *)(const void *)(block + 192);
        const float d = quill_f16_to_f32_scalar(quill_read_u16(block + 208));
        for (int half = 0; half < 2; half++, ql += 64, qh += 32, scales += 8, dst += 128) {
            for (int l = 0; l < 32; l++) {
                const int s = l / 16;
                const int q1 = (int)((ql[l] & 0x0F) | (((qh[l] >> 0) & 3) << 4)) - 32;
                const int q2 = (int)((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) - 32;
                const int q3 = (int)((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                const int q4 = (int)((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                dst[l] = d * (float)scales[s] * (float)q1;
                dst[l + 32] = d * (float)scales[s + 2] * (float)q2;
                dst[l + 64] = d * (float)scales[s + 4] * (float)q3;
                dst[l + 96] = d * (float)scales[s + 6] * (float)q4;
            }
        }
    }
}

void quill_dequantize_rows(int type, const void *w, int64_t row_stride, int64_t k,
                           int64_t row_begin, int64_t row_end, float *dst) {
    if (type == 5) { quill_dequantize_q4_0x8_rows(w, k, row_begin, row_end, dst); return; }  // rows are interleaved
    if (type == 6) { quill_dequantize_q8_0x8_rows(w, k, row_begin, row_end, dst); return; }
    for (int64_t r = row_begin; r < row_end; r++, dst += k) {
        const uint8_t *row = (const uint8_t *)w + r * row_stride;
        switch (type) {
        case 0: memcpy(dst, row, (size_t)k * sizeof(float)); break;
        case 1: quill_f16_to_f32((const uint16_t *)(const void *)row, dst, k); break;
        case 2: quill_bf16_to_f32((const uint16_t *)(const void *)row, dst, k); break;
        case 3: quill_dequantize_q8_0(row, dst, k); break;
        case 4: quill_dequantize_q4_0(row, dst, k); break;
        default: break;
        }
    }
}

void quill_quantize_activation_scalar(const float *x, int64_t k, quill_activation_block *out) {
    for (int64_t b = 0; b < k / QUILL_QK; b++) {
        const float *xb = x + b * QUILL_QK;
        float amax = 0.0f;
        for (int j = 0; j < QUILL_QK; j++) amax = fmaxf(amax, fabsf(xb[j]));
        const float scale = amax / 127.0f;
        const float inverse = scale != 0.0f ? 1.0f / scale : 0.0f;
        int sum = 0;
        for (int j = 0; j < QUILL_QK; j++) {
            int v = (int)nearbyintf(xb[j] * inverse);
            out[b].q[j] = (int8_t)v;
            sum += v;
        }
        for (int j = 0; j < 8; j++) { out[b].d[j] = scale; out[b].offset[j] = 0; }
        out[b].offset[0] = -8 * sum;
    }
}

// Built from the block layout, so both paths quantize identically.
void quill_quantize_activation_pairs(const float *x, int64_t k, quill_activation_pair *out) {
    const int64_t nb = k / QUILL_QK;
    for (int64_t p = 0; p < (nb + 1) / 2; p++) {
        quill_activation_block blocks[2];
        memset(blocks, 0, sizeof blocks);
        const int64_t count = (2 * p + 1 < nb) ? 2 : 1;
        quill_quantize_activation(x + 2 * p * QUILL_QK, count * QUILL_QK, blocks);
        for (int h = 0; h < 2; h++) {
            memcpy(out[p].low + 16 * h, blocks[h].q, 16);
            memcpy(out[p].high + 16 * h, blocks[h].q + 16, 16);
            for (int j = 0; j < 4; j++) {
                out[p].d[4 * h + j] = blocks[h].d[0];
                out[p].offset[4 * h + j] = j == 0 ? blocks[h].offset[0] : 0;
            }
        }
    }
}

// MARK: - GEMV

void quill_gemv_f32_scalar(const void *w, int64_t rs, const float *x, int64_t k, float *y,
                           int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++) {
        const float *row = (const float *)(const void *)((const uint8_t *)w + r * rs);
        float sum = 0.0f;
        for (int64_t i = 0; i < k; i++) sum += row[i] * x[i];
        y[r] = sum;
    }
}

void quill_gemv_f16_scalar(const void *w, int64_t rs, const float *x, int64_t k, float *y,
                           int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *row = (const uint8_t *)w + r * rs;
        float sum = 0.0f;
        for (int64_t i = 0; i < k; i++) sum += quill_f16_to_f32_scalar(quill_read_u16(row + 2 * i)) * x[i];
        y[r] = sum;
    }
}

void quill_gemv_bf16_scalar(const void *w, int64_t rs, const float *x, int64_t k, float *y,
                            int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *row = (const uint8_t *)w + r * rs;
        float sum = 0.0f;
        for (int64_t i = 0; i < k; i++) sum += quill_bf16_bits_to_f32(quill_read_u16(row + 2 * i)) * x[i];
        y[r] = sum;
    }
}

void quill_gemv_q8_0_scalar(const void *w, int64_t rs, const quill_activation_block *x, int64_t k,
                            float *y, int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *block = (const uint8_t *)w + r * rs;
        float sum = 0.0f;
        for (int64_t b = 0; b < k / QUILL_QK; b++, block += QUILL_Q8_0_BLOCK_BYTES) {
            int isum = 0;
            for (int j = 0; j < QUILL_QK; j++) isum += (int)(int8_t)block[2 + j] * x[b].q[j];
            sum += (float)isum * (quill_f16_to_f32_scalar(quill_read_u16(block)) * x[b].d[0]);
        }
        y[r] = sum;
    }
}

void quill_gemv_q4_0_scalar(const void *w, int64_t rs, const quill_activation_pair *x, int64_t k,
                            float *y, int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *block = (const uint8_t *)w + r * rs;
        float sum = 0.0f;
        for (int64_t b = 0; b < k / QUILL_QK; b++, block += QUILL_Q4_0_BLOCK_BYTES) {
            const quill_activation_pair *pair = x + b / 2;
            const int h = (int)(b % 2);
            int isum = 0;
            for (int j = 0; j < QUILL_QK / 2; j++) {
                isum += ((int)(block[2 + j] & 0x0F) - 8) * pair->low[16 * h + j];
                isum += ((int)(block[2 + j] >> 4) - 8) * pair->high[16 * h + j];
            }
            sum += (float)isum * (quill_f16_to_f32_scalar(quill_read_u16(block)) * pair->d[4 * h]);
        }
        y[r] = sum;
    }
}

void quill_gemv_q8_0_rows_scalar(const void *w, int64_t rs, const quill_activation_block *x, int64_t k,
                                 float *y, int64_t ys, int64_t r0, int64_t r1, int64_t m) {
    for (int64_t i = 0; i < m; i++) quill_gemv_q8_0_scalar(w, rs, x + i * (k / QUILL_QK), k, y + i * ys, r0, r1);
}

void quill_gemv_q4_0_rows_scalar(const void *w, int64_t rs, const quill_activation_pair *x, int64_t k,
                                 float *y, int64_t ys, int64_t r0, int64_t r1, int64_t m) {
    const int64_t pairs = (k / QUILL_QK + 1) / 2;
    for (int64_t i = 0; i < m; i++) quill_gemv_q4_0_scalar(w, rs, x + i * pairs, k, y + i * ys, r0, r1);
}

// MARK: - Elementwise

void quill_rmsnorm_scalar(const float *x, const float *w, float *y, int64_t n, float eps) {
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++) sum += (double)x[i] * (double)x[i];
    const float inverse = 1.0f / sqrtf((float)(sum / (double)n) + eps);
    for (int64_t i = 0; i < n; i++) y[i] = (x[i] * inverse) * w[i];
}

void quill_rope(float *x, int64_t n_heads, int64_t head_dim, int64_t rot_dim,
                const float *c, const float *s, int layout) {
    const int64_t half = rot_dim / 2;
    for (int64_t h = 0; h < n_heads; h++) {
        float *v = x + h * head_dim;
        for (int64_t i = 0; i < half; i++) {
            const int64_t a = layout == 0 ? i : 2 * i;
            const int64_t b = layout == 0 ? i + half : 2 * i + 1;
            const float x0 = v[a], x1 = v[b];
            v[a] = x0 * c[i] - x1 * s[i];
            v[b] = x1 * c[i] + x0 * s[i];
        }
    }
}

void quill_silu_scalar(const float *x, float *y, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] = x[i] / (1.0f + expf(-x[i]));
}

void quill_swiglu_scalar(const float *g, const float *u, float *y, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] = (g[i] / (1.0f + expf(-g[i]))) * u[i];
}

void quill_gelu(const float *x, float *y, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] = 0.5f * x[i] * (1.0f + erff(x[i] * 0.70710678118654752f));
}

void quill_gelu_tanh(const float *x, float *y, int64_t n) {
    const float k = 0.79788456080286536f;  // sqrt(2 / pi)
    for (int64_t i = 0; i < n; i++) {
        const float v = x[i];
        y[i] = 0.5f * v * (1.0f + tanhf(k * (v + 0.044715f * v * v * v)));
    }
}

void quill_softmax_scalar(float *x, int64_t n) {
    float max = -INFINITY;
    for (int64_t i = 0; i < n; i++) max = fmaxf(max, x[i]);
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++) { x[i] = expf(x[i] - max); sum += x[i]; }
    const float inverse = (float)(1.0 / sum);
    for (int64_t i = 0; i < n; i++) x[i] *= inverse;
}

void quill_add(const float *a, const float *b, float *y, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] = a[i] + b[i];
}

void quill_mul(const float *a, const float *b, float *y, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] = a[i] * b[i];
}

void quill_scale(float *x, float s, int64_t n) {
    for (int64_t i = 0; i < n; i++) x[i] *= s;
}

float quill_dot_f32_scalar(const float *a, const float *b, int64_t n) {
    float sum = 0.0f;
    for (int64_t i = 0; i < n; i++) sum += a[i] * b[i];
    return sum;
}

int64_t quill_argmax(const float *x, int64_t n) {
    int64_t best = 0;
    for (int64_t i = 1; i < n; i++) if (x[i] > x[best]) best = i;
    return best;
}

// "a ranks above b": larger value, or equal value and lower index.
static inline int ranks_above(float va, int64_t ia, float vb, int64_t ib) {
    return va > vb || (va == vb && ia < ib);
}

int64_t quill_top_k(const float *x, int64_t n, int64_t k, int64_t *idx, float *val) {
    if (k > n) k = n;
    if (k <= 0) return 0;
    // A min-heap (by rank) of the k best seen so far, then sorted in place.
    int64_t size = 0;
    for (int64_t i = 0; i < n; i++) {
        if (size < k) {
            int64_t c = size++;
            while (c > 0) {
                int64_t p = (c - 1) / 2;
                if (!ranks_above(val[p], idx[p], x[i], i)) break;
                idx[c] = idx[p]; val[c] = val[p]; c = p;
            }
            idx[c] = i; val[c] = x[i];
        } else if (ranks_above(x[i], i, val[0], idx[0])) {
            int64_t c = 0;
            for (;;) {
                int64_t l = 2 * c + 1, r = l + 1, m = c;
                float mv = x[i]; int64_t mi = i;
                if (l < size && ranks_above(mv, mi, val[l], idx[l])) { m = l; mv = val[l]; mi = idx[l]; }
                if (r < size && ranks_above(mv, mi, val[r], idx[r])) { m = r; }
                if (m == c) break;
                idx[c] = idx[m]; val[c] = val[m]; c = m;
            }
            idx[c] = i; val[c] = x[i];
        }
    }
    // Heap sort: repeatedly move the lowest-ranked to the end, giving descending order.
    for (int64_t end = size - 1; end > 0; end--) {
        int64_t ti = idx[end]; float tv = val[end];
        idx[end] = idx[0]; val[end] = val[0];
        int64_t c = 0;
        for (;;) {
            int64_t l = 2 * c + 1, r = l + 1, m = c;
            float mv = tv; int64_t mi = ti;
            if (l < end && ranks_above(mv, mi, val[l], idx[l])) { m = l; mv = val[l]; mi = idx[l]; }
            if (r < end && ranks_above(mv, mi, val[r], idx[r])) { m = r; }
            if (m == c) break;
            idx[c] = idx[m]; val[c] = val[m]; c = m;
        }
        idx[c] = ti; val[c] = tv;
    }
    return size;
}
