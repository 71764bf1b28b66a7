// Attention over a paged KV cache: FlashAttention's online softmax with one KV block as the
// tile. Keys are stored transposed inside a block ([head_dim][block_size]) so that a
// block's scores for several query heads accumulate in registers with no horizontal sums;
// values are stored by token ([block_size][head_dim]) for the weighted sum.
#include "internal.h"
#include <math.h>
#include <stdint.h>

// scores[g * bs + j] = scale * q_g · k_j for j < bs, g < group; kT is [d][bs] floats.
static void block_scores_scalar(const float *q, int64_t group, const float *kT, int64_t d, int64_t bs, float scale, float *scores) {
    for (int64_t g = 0; g < group; g++)
        for (int64_t j = 0; j < bs; j++) {
            float s = 0;
            for (int64_t e = 0; e < d; e++) s += q[g * d + e] * kT[e * bs + j];
            scores[g * bs + j] = s * scale;
        }
}

// acc[i] += sum over j < count of p[j] * v[j * d + i].
static void block_pv_scalar(float *acc, const float *p, const float *v, int64_t count, int64_t d) {
    for (int64_t j = 0; j < count; j++)
        for (int64_t i = 0; i < d; i++) acc[i] += p[j] * v[j * d + i];
}

static void exp_scalar(float *x, int64_t n) { for (int64_t i = 0; i < n; i++) x[i] = expf(x[i]); }

// MARK: Q8_0 keys and values
// A Q8_0 run of bs tokens holds int8 quants, then one F16 scale per (token, 32 elements),
// stored scale-block-major ([d / 32][bs]) so that a block's 16 token scales load as two
// vectors: keys are quants [d][bs] (transposed, as F32/F16 keys are) then scales; values
// are quants [bs][d] then scales. Queries stay F32: only the cache is quantized.

void quill_kv_quantize_q8_0(const float *x, int64_t n, int8_t *quants, int64_t quant_stride, uint16_t *scales,
                            int64_t scale_stride) {
    for (int64_t b = 0; b < n / 32; b++) {
        const float *block = x + b * 32;
        float amax = 0;
        for (int j = 0; j < 32; j++) amax = fabsf(block[j]) > amax ? fabsf(block[j]) : amax;  // NaN never wins
        const uint16_t bits = quill_f32_to_f16_scalar(amax / 127.0f);
        // Quantize against the scale as stored, so dequantization sees the values rounded here.
        const float stored = quill_f16_to_f32_scalar(bits);
        const float inverse = stored > 0 && stored < INFINITY ? 1.0f / stored : 0.0f;
        scales[b * scale_stride] = bits;
        for (int j = 0; j < 32; j++) {
            float v = block[j] * inverse;
            v = v > 127.0f ? 127.0f : v < -127.0f ? -127.0f : v;
            if (v != v) v = 0;  // NaN: converting it to an integer is undefined
            quants[(b * 32 + j) * quant_stride] = (int8_t)roundf(v);
        }
    }
}

void quill_kv_dequantize_q8_0(const void *run, int64_t d, int64_t bs, int values, float *out) {
    const int8_t *q = (const int8_t *)run;
    const uint16_t *s = (const uint16_t *)(const void *)(q + d * bs);
    for (int64_t j = 0; j < bs; j++)
        for (int64_t e = 0; e < d; e++) {
            const int64_t index = values ? j * d + e : e * bs + j;
            out[index] = (float)q[index] * quill_f16_table[s[(e / 32) * bs + j]];
        }
}

#ifdef QUILL_X86
#include <immintrin.h>
#include "avx2_math.h"
void quill_exp_avx2(float *x, int64_t n);

// Four heads × 16 keys in 8 accumulators (bs must be 16); F16 keys are converted in the
// loads, so a block is never copied. kT holds ELEM values, [d][16].
#define BLOCK_SCORES(NAME, ELEM, LOAD)                                                                     \
    static QUILL_AVX2 void NAME(const float *q, int64_t group, const void *keys, int64_t d, float scale,    \
                                float *scores) {                                                           \
        const ELEM *kT = (const ELEM *)keys;                                                               \
        const __m256 vs = _mm256_set1_ps(scale);                                                           \
        int64_t g = 0;                                                                                     \
        for (; g + 4 <= group; g += 4) {                                                                   \
            __m256 a0 = _mm256_setzero_ps(), b0 = a0, a1 = a0, b1 = a0, a2 = a0, b2 = a0, a3 = a0, b3 = a0;\
            const float *q0 = q + g * d, *q1 = q0 + d, *q2 = q1 + d, *q3 = q2 + d;                         \
            for (int64_t e = 0; e < d; e++) {                                                              \
                const __m256 lo = LOAD(kT + e * 16), hi = LOAD(kT + e * 16 + 8);                           \
                __m256 x = _mm256_broadcast_ss(q0 + e); a0 = _mm256_fmadd_ps(x, lo, a0); b0 = _mm256_fmadd_ps(x, hi, b0); \
                x = _mm256_broadcast_ss(q1 + e); a1 = _mm256_fmadd_ps(x, lo, a1); b1 = _mm256_fmadd_ps(x, hi, b1);       \
                x = _mm256_broadcast_ss(q2 + e); a2 = _mm256_fmadd_ps(x, lo, a2); b2 = _mm256_fmadd_ps(x, hi, b2);       \
                x = _mm256_broadcast_ss(q3 + e); a3 = _mm256_fmadd_ps(x, lo, a3); b3 = _mm256_fmadd_ps(x, hi, b3);       \
            }                                                                                              \
            float *s = scores + g * 16;                                                                    \
            _mm256_storeu_ps(s, _mm256_mul_ps(a0, vs)); _mm256_storeu_ps(s + 8, _mm256_mul_ps(b0, vs));    \
            _mm256_storeu_ps(s + 16, _mm256_mul_ps(a1, vs)); _mm256_storeu_ps(s + 24, _mm256_mul_ps(b1, vs)); \
            _mm256_storeu_ps(s + 32, _mm256_mul_ps(a2, vs)); _mm256_storeu_ps(s + 40, _mm256_mul_ps(b2, vs)); \
            _mm256_storeu_ps(s + 48, _mm256_mul_ps(a3, vs)); _mm256_storeu_ps(s + 56, _mm256_mul_ps(b3, vs)); \
        }                                                                                                  \
        for (; g < group; g++) {                                                                           \
            __m256 a = _mm256_setzero_ps(), b = a;                                                         \
            for (int64_t e = 0; e < d; e++) {                                                              \
                const __m256 x = _mm256_broadcast_ss(q + g * d + e);                                       \
                a = _mm256_fmadd_ps(x, LOAD(kT + e * 16), a);                                              \
                b = _mm256_fmadd_ps(x, LOAD(kT + e * 16 + 8), b);                                          \
            }                                                                                              \
            _mm256_storeu_ps(scores + g * 16, _mm256_mul_ps(a, vs));                                       \
            _mm256_storeu_ps(scores + g * 16 + 8, _mm256_mul_ps(b, vs));                                   \
        }                                                                                                  \
    }

// acc[i] += sum over j < count of p[j] * v[j][i]: 32 output floats stay in registers
// across every key of the block (d must be a multiple of 8).
#define BLOCK_PV(NAME, ELEM, LOAD)                                                                         \
    static QUILL_AVX2 void NAME(float *acc, const float *p, const void *values, int64_t count, int64_t d) {\
        const ELEM *v = (const ELEM *)values;                                                              \
        int64_t i = 0;                                                                                     \
        for (; i + 32 <= d; i += 32) {                                                                     \
            __m256 a0 = _mm256_loadu_ps(acc + i), a1 = _mm256_loadu_ps(acc + i + 8);                        \
            __m256 a2 = _mm256_loadu_ps(acc + i + 16), a3 = _mm256_loadu_ps(acc + i + 24);                  \
            for (int64_t j = 0; j < count; j++) {                                                          \
                const __m256 w = _mm256_broadcast_ss(p + j);                                               \
                const ELEM *row = v + j * d + i;                                                           \
                a0 = _mm256_fmadd_ps(w, LOAD(row), a0);                                                    \
                a1 = _mm256_fmadd_ps(w, LOAD(row + 8), a1);                                                \
                a2 = _mm256_fmadd_ps(w, LOAD(row + 16), a2);                                               \
                a3 = _mm256_fmadd_ps(w, LOAD(row + 24), a3);                                               \
            }                                                                                              \
            _mm256_storeu_ps(acc + i, a0); _mm256_storeu_ps(acc + i + 8, a1);                              \
            _mm256_storeu_ps(acc + i + 16, a2); _mm256_storeu_ps(acc + i + 24, a3);                        \
        }                                                                                                  \
        for (; i < d; i += 8) {                                                                            \
            __m256 a = _mm256_loadu_ps(acc + i);                                                           \
            for (int64_t j = 0; j < count; j++) a = _mm256_fmadd_ps(_mm256_broadcast_ss(p + j), LOAD(v + j * d + i), a); \
            _mm256_storeu_ps(acc + i, a);                                                                  \
        }                                                                                                  \
    }

// The same sum for every query head of a group at once: acc[g][i] += sum over j < count of
// p[g * 16 + j] * v[j][i]. Four heads share each loaded (and converted) value vector, which
// the one-head kernel would load four times; each head's additions happen in the same order
// as the one-head kernel's, so the results are bit-identical to it.
#define BLOCK_PV_GROUP(NAME, ELEM, LOAD, ONE_HEAD)                                                         \
    static QUILL_AVX2 void NAME(float *acc, const float *p, int64_t group, const void *values, int64_t count,\
                                int64_t d) {                                                               \
        const ELEM *v = (const ELEM *)values;                                                              \
        int64_t g = 0;                                                                                     \
        for (; g + 4 <= group; g += 4) {                                                                   \
            float *a = acc + g * d;                                                                        \
            const float *p0 = p + g * 16, *p1 = p0 + 16, *p2 = p1 + 16, *p3 = p2 + 16;                     \
            int64_t i = 0;                                                                                 \
            for (; i + 16 <= d; i += 16) {                                                                 \
                __m256 a0 = _mm256_loadu_ps(a + i), b0 = _mm256_loadu_ps(a + i + 8);                       \
                __m256 a1 = _mm256_loadu_ps(a + d + i), b1 = _mm256_loadu_ps(a + d + i + 8);               \
                __m256 a2 = _mm256_loadu_ps(a + 2 * d + i), b2 = _mm256_loadu_ps(a + 2 * d + i + 8);       \
                __m256 a3 = _mm256_loadu_ps(a + 3 * d + i), b3 = _mm256_loadu_ps(a + 3 * d + i + 8);       \
                for (int64_t j = 0; j < count; j++) {                                                      \
                    const __m256 lo = LOAD(v + j * d + i), hi = LOAD(v + j * d + i + 8);                   \
                    __m256 w = _mm256_broadcast_ss(p0 + j); a0 = _mm256_fmadd_ps(w, lo, a0); b0 = _mm256_fmadd_ps(w, hi, b0); \
                    w = _mm256_broadcast_ss(p1 + j); a1 = _mm256_fmadd_ps(w, lo, a1); b1 = _mm256_fmadd_ps(w, hi, b1);       \
                    w = _mm256_broadcast_ss(p2 + j); a2 = _mm256_fmadd_ps(w, lo, a2); b2 = _mm256_fmadd_ps(w, hi, b2);       \
                    w = _mm256_broadcast_ss(p3 + j); a3 = _mm256_fmadd_ps(w, lo, a3); b3 = _mm256_fmadd_ps(w, hi, b3);       \
                }                                                                                          \
                _mm256_storeu_ps(a + i, a0); _mm256_storeu_ps(a + i + 8, b0);                              \
                _mm256_storeu_ps(a + d + i, a1); _mm256_storeu_ps(a + d + i + 8, b1);                      \
                _mm256_storeu_ps(a + 2 * d + i, a2); _mm256_storeu_ps(a + 2 * d + i + 8, b2);              \
                _mm256_storeu_ps(a + 3 * d + i, a3); _mm256_storeu_ps(a + 3 * d + i + 8, b3);              \
            }                                                                                              \
            for (; i < d; i += 8) {                                                                        \
                __m256 a0 = _mm256_loadu_ps(a + i), a1 = _mm256_loadu_ps(a + d + i);                       \
                __m256 a2 = _mm256_loadu_ps(a + 2 * d + i), a3 = _mm256_loadu_ps(a + 3 * d + i);           \
                for (int64_t j = 0; j < count; j++) {                                                      \
                    const __m256 x = LOAD(v + j * d + i);                                                  \
                    a0 = _mm256_fmadd_ps(_mm256_broadcast_ss(p0 + j), x, a0);                              \
                    a1 = _mm256_fmadd_ps(_mm256_broadcast_ss(p1 + j), x, a1);                              \
                    a2 = _mm256_fmadd_ps(_mm256_broadcast_ss(p2 + j), x, a2);                              \
                    a3 = _mm256_fmadd_ps(_mm256_broadcast_ss(p3 + j), x, a3);                              \
                }                                                                                          \
                _mm256_storeu_ps(a + i, a0); _mm256_storeu_ps(a + d + i, a1);                              \
                _mm256_storeu_ps(a + 2 * d + i, a2); _mm256_storeu_ps(a + 3 * d + i, a3);                  \
            }                                                                                              \
        }                                                                                                  \
        for (; g < group; g++) ONE_HEAD(acc + g * d, p + g * 16, values, count, d);                        \
    }

// A full block of 16 scores: exponentiate against the new running maximum and return their
// sum (s becomes the weights); the maximum and sum reductions stay in vector registers.
static QUILL_AVX2 float full_block_weights_avx2(float *s, float running_max, float *new_max_out) {
    __m256 lo = _mm256_loadu_ps(s), hi = _mm256_loadu_ps(s + 8);
    __m256 m = _mm256_max_ps(lo, hi);
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
    float tile_max = _mm_cvtss_f32(m4);
    const float new_max = tile_max > running_max ? tile_max : running_max;
    const __m256 vm = _mm256_set1_ps(new_max);
    lo = exp256(_mm256_sub_ps(lo, vm));
    hi = exp256(_mm256_sub_ps(hi, vm));
    _mm256_storeu_ps(s, lo);
    _mm256_storeu_ps(s + 8, hi);
    const __m256 sum = _mm256_add_ps(lo, hi);
    __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(sum), _mm256_extractf128_ps(sum, 1));
    s4 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    s4 = _mm_add_ss(s4, _mm_movehdup_ps(s4));
    *new_max_out = new_max;
    return _mm_cvtss_f32(s4);
}

// Lane h of the result is the max (or sum) of v[h]'s eight lanes: a transpose folded into the
// reduction, 21 instructions for eight vectors instead of five per vector plus the trips
// through scalar registers.
#define REDUCE8(NAME, OP)                                                                                  \
    static inline QUILL_AVX2 __m256 NAME(const __m256 *v) {                                                \
        const __m256 t01 = OP(_mm256_unpacklo_ps(v[0], v[1]), _mm256_unpackhi_ps(v[0], v[1]));             \
        const __m256 t23 = OP(_mm256_unpacklo_ps(v[2], v[3]), _mm256_unpackhi_ps(v[2], v[3]));             \
        const __m256 t45 = OP(_mm256_unpacklo_ps(v[4], v[5]), _mm256_unpackhi_ps(v[4], v[5]));             \
        const __m256 t67 = OP(_mm256_unpacklo_ps(v[6], v[7]), _mm256_unpackhi_ps(v[6], v[7]));             \
        const __m256 u0 = OP(_mm256_shuffle_ps(t01, t23, 0x44), _mm256_shuffle_ps(t01, t23, 0xEE));        \
        const __m256 u1 = OP(_mm256_shuffle_ps(t45, t67, 0x44), _mm256_shuffle_ps(t45, t67, 0xEE));        \
        return OP(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31));             \
    }
REDUCE8(reduce8_max, _mm256_max_ps)
REDUCE8(reduce8_sum, _mm256_add_ps)

// The online-softmax step of up to eight heads over one full block at once (s is
// [heads][16] scores, replaced by their weights): the heads' maxima, corrections and sums
// are lanes of one vector, so the sixteen exponentials are independent of each other and
// nothing waits on a horizontal reduction per head. Writes each head's correction factor
// (1 where its maximum did not move).
static QUILL_AVX2 void full_block_weights_heads_avx2(float *s, int64_t heads, float *running_max, float *running_sum,
                                                     float *correction) {
    __m256 m[8];
    for (int64_t h = 0; h < 8; h++) {
        const float *row = s + (h < heads ? h : 0) * 16;  // spare lanes repeat head 0
        m[h] = _mm256_max_ps(_mm256_loadu_ps(row), _mm256_loadu_ps(row + 8));
    }
    float old_max[8], old_sum[8];
    for (int64_t h = 0; h < 8; h++) {
        old_max[h] = h < heads ? running_max[h] : -INFINITY;
        old_sum[h] = h < heads ? running_sum[h] : 0;
    }
    const __m256 old = _mm256_loadu_ps(old_max), tile = reduce8_max(m);
    const __m256 new_max = _mm256_max_ps(tile, old);
    // exp(-inf - finite) is 0, as the first block needs; an unchanged maximum gives exactly 1.
    const __m256 c = _mm256_blendv_ps(exp256(_mm256_sub_ps(old, new_max)), _mm256_set1_ps(1.0f),
                                      _mm256_cmp_ps(old, new_max, _CMP_EQ_OQ));
    for (int64_t h = 0; h < 8; h++) {
        float *row = s + (h < heads ? h : 0) * 16;
        const __m256 shift = _mm256_permutevar8x32_ps(new_max, _mm256_set1_epi32((int)h));
        const __m256 lo = exp256_nonpositive(_mm256_sub_ps(_mm256_loadu_ps(row), shift));
        const __m256 hi = exp256_nonpositive(_mm256_sub_ps(_mm256_loadu_ps(row + 8), shift));
        if (h < heads) {
            _mm256_storeu_ps(row, lo);
            _mm256_storeu_ps(row + 8, hi);
        }
        m[h] = _mm256_add_ps(lo, hi);
    }
    const __m256 sum = _mm256_fmadd_ps(_mm256_loadu_ps(old_sum), c, reduce8_sum(m));
    float new_max_lanes[8], sum_lanes[8], c_lanes[8];
    _mm256_storeu_ps(new_max_lanes, new_max);
    _mm256_storeu_ps(sum_lanes, sum);
    _mm256_storeu_ps(c_lanes, c);
    for (int64_t h = 0; h < heads; h++) {
        running_max[h] = new_max_lanes[h];
        running_sum[h] = sum_lanes[h];
        correction[h] = c_lanes[h];
    }
}

static QUILL_AVX2 void scale_avx2(float *a, float c, int64_t d) {
    const __m256 vc = _mm256_set1_ps(c);
    int64_t i = 0;
    for (; i + 8 <= d; i += 8) _mm256_storeu_ps(a + i, _mm256_mul_ps(_mm256_loadu_ps(a + i), vc));
    for (; i < d; i++) a[i] *= c;
}

BLOCK_SCORES(block_scores_f32_avx2, float, LOAD_F32)
BLOCK_SCORES(block_scores_f16_avx2, uint16_t, LOAD_F16)
BLOCK_PV(block_pv_f32_avx2, float, LOAD_F32)
BLOCK_PV(block_pv_f16_avx2, uint16_t, LOAD_F16)
BLOCK_PV_GROUP(block_pv_group_f32_avx2, float, LOAD_F32, block_pv_f32_avx2)
BLOCK_PV_GROUP(block_pv_group_f16_avx2, uint16_t, LOAD_F16, block_pv_f16_avx2)

// Eight int8 values as floats.
#define LOAD_Q8(p) _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(const void *)(p))))

// Scores of `heads` (1 or 4, a constant after inlining) query heads against a Q8_0 key block
// (bs 16): each 32-element scale block's dot products accumulate from int8 keys converted in
// registers, then are weighted by the 16 tokens' scales for that block. Eight keys at a time
// keep the partial and total sums of four heads in registers.
static inline __attribute__((always_inline)) QUILL_AVX2 void scores_q8_heads(const float *q, int64_t heads, const int8_t *kq,
                                                                             const uint16_t *ks, int64_t d, __m256 vs,
                                                                             float *scores) {
    for (int64_t half = 0; half < 16; half += 8) {
        __m256 total[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
        for (int64_t b = 0; b < d / 32; b++) {
            __m256 part[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
            for (int64_t e = b * 32; e < b * 32 + 32; e++) {
                const __m256 k = LOAD_Q8(kq + e * 16 + half);
                for (int64_t h = 0; h < heads; h++) part[h] = _mm256_fmadd_ps(_mm256_broadcast_ss(q + h * d + e), k, part[h]);
            }
            const __m256 s = LOAD_F16(ks + b * 16 + half);
            for (int64_t h = 0; h < heads; h++) total[h] = _mm256_fmadd_ps(part[h], s, total[h]);
        }
        for (int64_t h = 0; h < heads; h++) _mm256_storeu_ps(scores + h * 16 + half, _mm256_mul_ps(total[h], vs));
    }
}

static QUILL_AVX2 void block_scores_q8_avx2(const float *q, int64_t group, const void *keys, int64_t d, float scale,
                                            float *scores) {
    const int8_t *kq = (const int8_t *)keys;
    const uint16_t *ks = (const uint16_t *)(const void *)(kq + d * 16);
    const __m256 vs = _mm256_set1_ps(scale);
    int64_t g = 0;
    for (; g + 4 <= group; g += 4) scores_q8_heads(q + g * d, 4, kq, ks, d, vs, scores + g * 16);
    for (; g < group; g++) scores_q8_heads(q + g * d, 1, kq, ks, d, vs, scores + g * 16);
}

// acc[h][i] += sum over tokens first <= j < first + count of p[h * 16 + j] * value[j][i] for
// `heads` (1 or 4) heads of a Q8_0 value block: each head's weights are multiplied by the
// tokens' scales once per 32-element block, and the four heads share every converted vector.
static inline __attribute__((always_inline)) QUILL_AVX2 void pv_q8_heads(float *acc, const float *p, int64_t heads,
                                                                         const int8_t *vq, const uint16_t *vs,
                                                                         int64_t first, int64_t count, int64_t d) {
    float w[4 * 16];
    for (int64_t b = 0; b < d / 32; b++) {
        const __m256 lo_scale = LOAD_F16(vs + b * 16), hi_scale = LOAD_F16(vs + b * 16 + 8);
        for (int64_t h = 0; h < heads; h++) {
            _mm256_storeu_ps(w + h * 16, _mm256_mul_ps(_mm256_loadu_ps(p + h * 16), lo_scale));
            _mm256_storeu_ps(w + h * 16 + 8, _mm256_mul_ps(_mm256_loadu_ps(p + h * 16 + 8), hi_scale));
        }
        for (int64_t i = b * 32; i < b * 32 + 32; i += 16) {
            __m256 lo[4], hi[4];
            for (int64_t h = 0; h < heads; h++) { lo[h] = _mm256_loadu_ps(acc + h * d + i); hi[h] = _mm256_loadu_ps(acc + h * d + i + 8); }
            for (int64_t j = first; j < first + count; j++) {
                const __m256 x0 = LOAD_Q8(vq + j * d + i), x1 = LOAD_Q8(vq + j * d + i + 8);
                for (int64_t h = 0; h < heads; h++) {
                    const __m256 weight = _mm256_broadcast_ss(w + h * 16 + j);
                    lo[h] = _mm256_fmadd_ps(weight, x0, lo[h]);
                    hi[h] = _mm256_fmadd_ps(weight, x1, hi[h]);
                }
            }
            for (int64_t h = 0; h < heads; h++) { _mm256_storeu_ps(acc + h * d + i, lo[h]); _mm256_storeu_ps(acc + h * d + i + 8, hi[h]); }
        }
    }
}

static QUILL_AVX2 void block_pv_group_q8_avx2(float *acc, const float *p, int64_t group, const void *values, int64_t first,
                                              int64_t count, int64_t d) {
    const int8_t *vq = (const int8_t *)values;
    const uint16_t *vs = (const uint16_t *)(const void *)(vq + d * 16);
    int64_t g = 0;
    for (; g + 4 <= group; g += 4) pv_q8_heads(acc + g * d, p + g * 16, 4, vq, vs, first, count, d);
    for (; g < group; g++) pv_q8_heads(acc + g * d, p + g * 16, 1, vq, vs, first, count, d);
}
#endif

// Attention over the table's blocks [block_begin, block_end) only; with `partial`, each
// row's unnormalized accumulator, running maximum and sum are written there ([rows][d + 2])
// for quill_attention_combine instead of the normalized output.
static void attention_range(const float *q, float *out, int64_t row_stride, int64_t n_queries, int64_t group, int64_t d,
                            const void *k_base, const void *v_base, int64_t block_stride, const int64_t *blocks,
                            int64_t block_size, int64_t first_position, int64_t window, float scale, int kv_type,
                            float *scratch, int64_t block_begin, int64_t block_end, float *partial) {
    // The AVX2 kernels read F32, F16 or Q8_0 blocks in place; the scalar path converts F16
    // and Q8_0 blocks into scratch first.
    int vector = 0;
    void (*expv)(float *, int64_t) = exp_scalar;
#ifdef QUILL_X86
    if (quill_kernel_level() == 1 && block_size == 16 && d % 8 == 0) {
        vector = 1;
        expv = quill_exp_avx2;
    }
#endif
    const int64_t bs = block_size, rows = n_queries * group;
    float *acc = scratch;                       // [rows][d]
    float *running_max = acc + rows * d;        // [rows]
    float *running_sum = running_max + rows;    // [rows]
    float *scores = running_sum + rows;         // [group][bs] for one query at a time
    float *keys = scores + group * bs;          // [d][bs]: an F16 block's keys as F32
    float *values = keys + bs * d;              // [bs][d]
    for (int64_t r = 0; r < rows; r++) {
        running_max[r] = -INFINITY;
        running_sum[r] = 0;
        for (int64_t i = 0; i < d; i++) acc[r * d + i] = 0;
    }
    const int64_t last_position = first_position + n_queries - 1;
    const int64_t lowest = window > 0 && first_position - window + 1 > 0 ? first_position - window + 1 : 0;
    for (int64_t b = lowest / bs > block_begin ? lowest / bs : block_begin; b * bs <= last_position && b < block_end; b++) {
        const float *kT = (const float *)(const void *)((const uint8_t *)k_base + blocks[b] * block_stride);
        const float *v = (const float *)(const void *)((const uint8_t *)v_base + blocks[b] * block_stride);
        if (kv_type != 0 && !vector) {  // the scalar path converts the block once
            if (kv_type == 1) {
                quill_f16_to_f32((const uint16_t *)(const void *)kT, keys, bs * d);
                quill_f16_to_f32((const uint16_t *)(const void *)v, values, bs * d);
            } else {
                quill_kv_dequantize_q8_0(kT, d, bs, 0, keys);
                quill_kv_dequantize_q8_0(v, d, bs, 1, values);
            }
            kT = keys;
            v = values;
        }
        const int64_t element = !vector ? 4 : kv_type == 2 ? 1 : kv_type == 1 ? 2 : 4;  // bytes per stored value
#ifdef QUILL_X86
        // The value pass reads the block's rows by 16-dimension columns, a strided pattern the
        // hardware prefetchers follow late; asking for every line now overlaps those misses
        // with the score pass.
        if (vector)
            for (int64_t line = 0; line < bs * d * element; line += 64) _mm_prefetch((const char *)v + line, _MM_HINT_T0);
#endif
        const int64_t start = b * bs;
        for (int64_t qi = 0; qi < n_queries; qi++) {
            const int64_t position = first_position + qi;
            const int64_t lo = window > 0 && position - window + 1 > start ? position - window + 1 : start;
            const int64_t hi = position + 1 < start + bs ? position + 1 : start + bs;  // exclusive
            if (lo >= hi) continue;
            const int64_t first = lo - start, count = hi - lo;
#ifdef QUILL_X86
            if (vector) {
                if (kv_type == 2) block_scores_q8_avx2(q + qi * row_stride, group, kT, d, scale, scores);
                else if (kv_type == 1) block_scores_f16_avx2(q + qi * row_stride, group, kT, d, scale, scores);
                else block_scores_f32_avx2(q + qi * row_stride, group, kT, d, scale, scores);
            } else
#endif
                block_scores_scalar(q + qi * row_stride, group, kT, d, bs, scale, scores);
            // Each head's weights for this block, and its accumulator rescaled to the new maximum.
            int64_t g = 0;
#ifdef QUILL_X86
            // Full blocks of two or more heads: eight heads at a time, as lanes of one vector.
            for (; vector && count == 16 && group - g >= 2; g += 8) {
                const int64_t heads = group - g < 8 ? group - g : 8, r = qi * group + g;
                float correction[8];
                full_block_weights_heads_avx2(scores + g * bs, heads, running_max + r, running_sum + r, correction);
                for (int64_t h = 0; h < heads; h++)
                    if (correction[h] != 1.0f) scale_avx2(acc + (r + h) * d, correction[h], d);
            }
#endif
            for (; g < group; g++) {
                const int64_t r = qi * group + g;
                float *s = scores + g * bs + first;  // the visible keys of this block
                float new_max, tile_sum = 0;
#ifdef QUILL_X86
                if (vector && count == 16) {
                    tile_sum = full_block_weights_avx2(s, running_max[r], &new_max);
                } else
#endif
                {
                    float tile_max = s[0];
                    for (int64_t j = 1; j < count; j++) tile_max = s[j] > tile_max ? s[j] : tile_max;
                    new_max = tile_max > running_max[r] ? tile_max : running_max[r];
                    for (int64_t j = 0; j < count; j++) s[j] -= new_max;
                    expv(s, count);
                    for (int64_t j = 0; j < count; j++) tile_sum += s[j];
                }
                // Rescale what was accumulated under the old maximum (exp(-inf) = 0 at first);
                // once the maximum settles, most blocks leave it unchanged.
                const float correction = running_max[r] == new_max ? 1.0f : expf(running_max[r] - new_max);
                running_sum[r] = running_sum[r] * correction + tile_sum;
                running_max[r] = new_max;
                float *a = acc + r * d;
                if (correction != 1.0f) {
#ifdef QUILL_X86
                    if (vector) scale_avx2(a, correction, d); else
#endif
                    for (int64_t i = 0; i < d; i++) a[i] *= correction;
                }
            }
            const void *rows_v = (const uint8_t *)(const void *)v + first * d * element;
#ifdef QUILL_X86
            if (vector && qi == 0 && b + 1 < block_end && (b + 1) * bs <= last_position) {
                const char *next = (const char *)k_base + blocks[b + 1] * block_stride;
                for (int64_t line = 0; line < bs * d * element; line += 64) _mm_prefetch(next + line, _MM_HINT_T0);
            }
#endif
#ifdef QUILL_X86
            if (vector) {
                if (kv_type == 2) block_pv_group_q8_avx2(acc + qi * group * d, scores, group, v, first, count, d);
                else if (kv_type == 1) block_pv_group_f16_avx2(acc + qi * group * d, scores + first, group, rows_v, count, d);
                else block_pv_group_f32_avx2(acc + qi * group * d, scores + first, group, rows_v, count, d);
            } else
#endif
                for (int64_t g = 0; g < group; g++)
                    block_pv_scalar(acc + (qi * group + g) * d, scores + g * bs + first, (const float *)rows_v, count, d);
        }
    }
    if (partial) {
        for (int64_t r = 0; r < rows; r++) {
            float *p = partial + r * (d + 2);
            for (int64_t i = 0; i < d; i++) p[i] = acc[r * d + i];
            p[d] = running_max[r];
            p[d + 1] = running_sum[r];
        }
        return;
    }
    for (int64_t r = 0; r < rows; r++) {
        const float inverse = running_sum[r] > 0 ? 1.0f / running_sum[r] : 0.0f;
        float *o = out + (r / group) * row_stride + (r % group) * d;
        for (int64_t i = 0; i < d; i++) o[i] = acc[r * d + i] * inverse;
    }
}

void quill_attention_paged(const float *q, float *out, int64_t row_stride, int64_t n_queries, int64_t group, int64_t d,
                           const void *k_base, const void *v_base, int64_t block_stride, const int64_t *blocks,
                           int64_t block_size, int64_t first_position, int64_t window, float scale, int kv_type,
                           float *scratch) {
    attention_range(q, out, row_stride, n_queries, group, d, k_base, v_base, block_stride, blocks, block_size,
                    first_position, window, scale, kv_type, scratch, 0, INT64_MAX, NULL);
}

void quill_attention_paged_partial(const float *q, int64_t row_stride, int64_t n_queries, int64_t group, int64_t d,
                                   const void *k_base, const void *v_base, int64_t block_stride, const int64_t *blocks,
                                   int64_t block_size, int64_t first_position, int64_t window, float scale, int kv_type,
                                   float *scratch, int64_t block_begin, int64_t block_end, float *partial) {
    attention_range(q, NULL, row_stride, n_queries, group, d, k_base, v_base, block_stride, blocks, block_size,
                    first_position, window, scale, kv_type, scratch, block_begin, block_end, partial);
}

void quill_attention_combine(const float *partials, int64_t segments, int64_t rows, int64_t group, int64_t d, float *out,
                             int64_t row_stride) {
    const int64_t segment_floats = rows * (d + 2);
    for (int64_t r = 0; r < rows; r++) {
        float maximum = -INFINITY;
        for (int64_t s = 0; s < segments; s++) {
            const float m = partials[s * segment_floats + r * (d + 2) + d];
            maximum = m > maximum ? m : maximum;
        }
        float *o = out + (r / group) * row_stride + (r % group) * d;
        for (int64_t i = 0; i < d; i++) o[i] = 0;
        float total = 0;
        if (maximum == -INFINITY) continue;  // no visible key: zeros, as the unsplit kernel gives
        for (int64_t s = 0; s < segments; s++) {
            const float *p = partials + s * segment_floats + r * (d + 2);
            if (p[d] == -INFINITY) continue;
            const float weight = expf(p[d] - maximum);
            total += p[d + 1] * weight;
            for (int64_t i = 0; i < d; i++) o[i] += p[i] * weight;
        }
        const float inverse = total > 0 ? 1.0f / total : 0.0f;
        for (int64_t i = 0; i < d; i++) o[i] *= inverse;
    }
}
