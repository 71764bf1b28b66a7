// AVX2 + FMA + F16C kernels, compiled per function through a target attribute so the
// package builds without unsafe flags; dispatch.c calls them only when cpuid allows.
#include "internal.h"
#ifdef QUILL_X86
#include <immintrin.h>
#include <math.h>
#include "avx2_math.h"

static inline QUILL_AVX2 float hmax256(__m256 v) {
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

void QUILL_AVX2 quill_f16_to_f32_avx2(const uint16_t *src, float *dst, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
    for (; i < n; i++) dst[i] = _cvtsh_ss(src[i]);
}

// Round to nearest even like quill_f32_to_f16_scalar; F16C keeps a NaN's payload, so NaN
// lanes are replaced by the scalar path's canonical quiet NaN (sign | 0x7E00).
static inline QUILL_AVX2 __m128i f32_to_f16_8(__m256 x) {
    const __m128i half = _mm256_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m256 nan = _mm256_cmp_ps(x, x, _CMP_UNORD_Q);
    if (_mm256_testz_ps(nan, nan)) return half;
    const __m256i high = _mm256_srai_epi32(_mm256_castps_si256(x), 16);  // sign-extended top halves
    const __m128i top = _mm_packs_epi32(_mm256_castsi256_si128(high), _mm256_extracti128_si256(high, 1));
    const __m128i canonical = _mm_or_si128(_mm_and_si128(top, _mm_set1_epi16((short)0x8000)), _mm_set1_epi16(0x7E00));
    const __m256i wide = _mm256_castps_si256(nan);
    const __m128i mask = _mm_packs_epi32(_mm256_castsi256_si128(wide), _mm256_extracti128_si256(wide, 1));
    return _mm_blendv_epi8(half, canonical, mask);
}

void QUILL_AVX2 quill_f32_to_f16_avx2(const float *src, uint16_t *dst, int64_t n, int64_t stride) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m128i half = f32_to_f16_8(_mm256_loadu_ps(src + i));
        if (stride == 1) { _mm_storeu_si128((__m128i *)(dst + i), half); continue; }
        uint16_t lanes[8];
        _mm_storeu_si128((__m128i *)lanes, half);
        for (int j = 0; j < 8; j++) dst[(i + j) * stride] = lanes[j];
    }
    for (; i < n; i++) dst[i * stride] = quill_f32_to_f16_scalar(src[i]);
}

// MARK: - Dequantization (the GEMM path dequantizes weight tiles before sgemm)

void QUILL_AVX2 quill_dequantize_q8_0_avx2(const void *src, float *dst, int64_t n) {
    const uint8_t *in = (const uint8_t *)src;
    for (int64_t b = 0; b < n / QUILL_QK; b++, in += QUILL_Q8_0_BLOCK_BYTES, dst += QUILL_QK)
        store_scaled_bytes(_mm256_loadu_si256((const __m256i *)(in + 2)), _mm256_broadcast_ss(&quill_f16_table[quill_read_u16(in)]), dst);
}

void QUILL_AVX2 quill_dequantize_q4_0_avx2(const void *src, float *dst, int64_t n) {
    const uint8_t *in = (const uint8_t *)src;
    for (int64_t b = 0; b < n / QUILL_QK; b++, in += QUILL_Q4_0_BLOCK_BYTES, dst += QUILL_QK)
        store_q4_0_block(_mm_loadu_si128((const __m128i *)(in + 2)), _mm256_broadcast_ss(&quill_f16_table[quill_read_u16(in)]), dst);
}

void QUILL_AVX2 quill_bf16_to_f32_avx2(const uint16_t *src, float *dst, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256i wide = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(src + i)));
        _mm256_storeu_ps(dst + i, _mm256_castsi256_ps(_mm256_slli_epi32(wide, 16)));
    }
    for (; i < n; i++) dst[i] = quill_bf16_bits_to_f32(src[i]);
}

// MARK: - Float GEMV: four weight rows share each load of x; two accumulators per row
// keep the FMA pipes busy. LOAD8 turns 8 weights at p into floats.

// The four rows are four streams that end where the next group's begin, so the hardware
// prefetcher starts three new streams per group (every 6 KB at k = 768); each line of the
// next group is prefetched at the same offset instead. Measured: Mamba-130M F16 decode
// 52-67 -> 66-73 tok/s, 1.1B F16 9.5-9.8 -> 10.0-10.6 tok/s (quill bench / model-bench,
// three alternations). A fixed 1 KB ahead along each row made both slower.
#define FLOAT_PREFETCH(p) _mm_prefetch((const char *)(p) + 4 * rs, _MM_HINT_T0)

// Every row length takes the four-row groups. Sessions 10-12 streamed rows shorter than 8 KB
// one after another instead (four short rows looked like four streams the prefetchers
// restart every few KB), which measured faster on that host: 2048×2048, 5632×2048 and
// 32000×2048 F16 from 19-25 to 32-33 GB/s. On this project's host of 2026-12-04 it was the
// other way round: tensorcore-bench --only gemv --threads 2, three alternations with the
// streaming build, F16 at k = 2048 (5632×2048, 2048×2048, 32000×2048) 0.69-0.76 -> 0.99-1.15
// of the bandwidth, at k = 768 (3072×768, 50280×768) 0.68-0.72 -> 0.93-0.98, F32 at k = 768
// 0.79-0.83 -> 0.95-0.99; quill bench decode, 1.1B F16 8.8-10.2 -> 12.3-13.3 tok/s and
// Mamba-130M F16 68-77 -> 91-100 (three alternations). The groups' software prefetch keeps
// four rows' lines in flight however the hardware prefetcher treats the streams.

#define FLOAT_GEMV(NAME, ELEM, LOAD8, SCALAR)                                               \
    void QUILL_AVX2 NAME(const void *w, int64_t rs, const float *x, int64_t k, float *y,    \
                         int64_t r0, int64_t r1) {                                           \
        int64_t r = r0;                                                                      \
        for (; r + 4 <= r1; r += 4) {                                                        \
            const ELEM *p0 = (const ELEM *)(const void *)((const uint8_t *)w + r * rs);      \
            const ELEM *p1 = (const ELEM *)(const void *)((const uint8_t *)p0 + rs);         \
            const ELEM *p2 = (const ELEM *)(const void *)((const uint8_t *)p1 + rs);         \
            const ELEM *p3 = (const ELEM *)(const void *)((const uint8_t *)p2 + rs);         \
            __m256 a0 = _mm256_setzero_ps(), b0 = a0, a1 = a0, b1 = a0, a2 = a0, b2 = a0,   \
                   a3 = a0, b3 = a0;                                                         \
            int64_t i = 0;                                                                   \
            for (; i + 16 <= k; i += 16) {                                                   \
                if ((i * (int64_t)sizeof(ELEM)) % 64 == 0) {                                 \
                    FLOAT_PREFETCH(p0 + i); FLOAT_PREFETCH(p1 + i);                          \
                    FLOAT_PREFETCH(p2 + i); FLOAT_PREFETCH(p3 + i);                          \
                }                                                                            \
                const __m256 x0 = _mm256_loadu_ps(x + i), x1 = _mm256_loadu_ps(x + i + 8);   \
                a0 = _mm256_fmadd_ps(LOAD8(p0 + i), x0, a0);                                 \
                b0 = _mm256_fmadd_ps(LOAD8(p0 + i + 8), x1, b0);                             \
                a1 = _mm256_fmadd_ps(LOAD8(p1 + i), x0, a1);                                 \
                b1 = _mm256_fmadd_ps(LOAD8(p1 + i + 8), x1, b1);                             \
                a2 = _mm256_fmadd_ps(LOAD8(p2 + i), x0, a2);                                 \
                b2 = _mm256_fmadd_ps(LOAD8(p2 + i + 8), x1, b2);                             \
                a3 = _mm256_fmadd_ps(LOAD8(p3 + i), x0, a3);                                 \
                b3 = _mm256_fmadd_ps(LOAD8(p3 + i + 8), x1, b3);                             \
            }                                                                                \
            for (; i + 8 <= k; i += 8) {                                                     \
                const __m256 x0 = _mm256_loadu_ps(x + i);                                    \
                a0 = _mm256_fmadd_ps(LOAD8(p0 + i), x0, a0);                                 \
                a1 = _mm256_fmadd_ps(LOAD8(p1 + i), x0, a1);                                 \
                a2 = _mm256_fmadd_ps(LOAD8(p2 + i), x0, a2);                                 \
                a3 = _mm256_fmadd_ps(LOAD8(p3 + i), x0, a3);                                 \
            }                                                                                \
            float s0 = hsum256(_mm256_add_ps(a0, b0)), s1 = hsum256(_mm256_add_ps(a1, b1)); \
            float s2 = hsum256(_mm256_add_ps(a2, b2)), s3 = hsum256(_mm256_add_ps(a3, b3)); \
            for (; i < k; i++) {                                                             \
                s0 += SCALAR(p0[i]) * x[i]; s1 += SCALAR(p1[i]) * x[i];                      \
                s2 += SCALAR(p2[i]) * x[i]; s3 += SCALAR(p3[i]) * x[i];                      \
            }                                                                                \
            y[r] = s0; y[r + 1] = s1; y[r + 2] = s2; y[r + 3] = s3;                          \
        }                                                                                    \
        for (; r < r1; r++) {                                                                \
            const ELEM *p = (const ELEM *)(const void *)((const uint8_t *)w + r * rs);       \
            __m256 a = _mm256_setzero_ps();                                                  \
            int64_t i = 0;                                                                   \
            for (; i + 8 <= k; i += 8) a = _mm256_fmadd_ps(LOAD8(p + i), _mm256_loadu_ps(x + i), a); \
            float s = hsum256(a);                                                            \
            for (; i < k; i++) s += SCALAR(p[i]) * x[i];                                     \
            y[r] = s;                                                                        \
        }                                                                                    \
    }

// (The same products over several activation rows, bit for bit: gemv_rows.c.)
FLOAT_GEMV(quill_gemv_f32_avx2, float, LOAD_F32, SCALAR_F32)
FLOAT_GEMV(quill_gemv_f16_avx2, uint16_t, LOAD_F16, SCALAR_F16)
FLOAT_GEMV(quill_gemv_bf16_avx2, uint16_t, LOAD_BF16, SCALAR_BF16)

// MARK: - Quantized GEMV (int8 dot products, as ggml does)
//
// Measured on Zen 3: these kernels are limited by the two shuffle pipes, so block scales
// become floats through a table and a broadcast *load* (not cvtph2ps + vbroadcastss), and
// Q4_0 nibbles are split with a broadcast load, a shift and a blend instead of an insert.
// Rows are processed one at a time: quantized rows are short (2.3 KB for Q4_0 at k=4096),
// and interleaving four of them restarts the hardware prefetcher's streams every few KB,
// which cost 25% of the DRAM bandwidth; one row after another is one sequential stream.
// The activation (k bytes) stays in L1, so nothing is lost by not sharing its loads.

// Software prefetch distances along a row's stream, measured with two threads streaming
// 4096×4096 weights from DRAM: Q4_0 goes from 24 to 29 GB/s with 2 KB; Q8_0 gains ~2%.
#define Q4_0_PREFETCH_BYTES 2048
#define Q8_0_PREFETCH_BYTES 1024
#define PREFETCH(p) _mm_prefetch((const char *)(p), _MM_HINT_T0)

// A Q8_0 weight block read once for every activation row: maddubs needs one unsigned
// operand, so the rows take w's sign and w is used as |w|; and its fp16 scale.
typedef struct { __m256i magnitude, signs; __m256 scale; } q8_unpacked;

static inline QUILL_AVX2 q8_unpacked q8_unpack(const uint8_t *block) {
    const __m256i w = _mm256_loadu_si256((const __m256i *)(block + 2));
    q8_unpacked u;
    u.magnitude = _mm256_sign_epi8(w, w);
    u.signs = w;
    u.scale = _mm256_broadcast_ss(&quill_f16_table[quill_read_u16(block)]);
    return u;
}

// acc += float(the 32 int8 products summed in 8 int32 lanes) * dx * dw
static inline QUILL_AVX2 __m256 q8_block_dot(q8_unpacked u, const quill_activation_block *x, __m256 acc) {
    const __m256i xv = _mm256_loadu_si256((const __m256i *)x->q);
    const __m256i dot32 = _mm256_madd_epi16(_mm256_maddubs_epi16(u.magnitude, _mm256_sign_epi8(xv, u.signs)), _mm256_set1_epi16(1));
    return _mm256_fmadd_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(dot32), _mm256_loadu_ps(x->d)), u.scale, acc);
}

// Up to four activation rows against one weight row (one row: the plain GEMV). Row i's
// accumulators see the same operations in the same order whatever `rows` is, so a row's
// result does not depend on the rows beside it.
static inline __attribute__((always_inline)) QUILL_AVX2 void q8_rows(const uint8_t *p, const quill_activation_block *x,
                                                                     int64_t nb, float *y, int64_t ys, const int rows) {
    __m256 a0[4], a1[4];
    for (int i = 0; i < rows; i++) a0[i] = a1[i] = _mm256_setzero_ps();
    int64_t b = 0;
    for (; b + 2 <= nb; b += 2) {
        const uint8_t *blk = p + b * QUILL_Q8_0_BLOCK_BYTES;
        PREFETCH(blk + Q8_0_PREFETCH_BYTES);
        const q8_unpacked u0 = q8_unpack(blk), u1 = q8_unpack(blk + QUILL_Q8_0_BLOCK_BYTES);
        for (int i = 0; i < rows; i++) {
            a0[i] = q8_block_dot(u0, x + i * nb + b, a0[i]);
            a1[i] = q8_block_dot(u1, x + i * nb + b + 1, a1[i]);
        }
    }
    for (; b < nb; b++) {
        const q8_unpacked u0 = q8_unpack(p + b * QUILL_Q8_0_BLOCK_BYTES);
        for (int i = 0; i < rows; i++) a0[i] = q8_block_dot(u0, x + i * nb + b, a0[i]);
    }
    for (int i = 0; i < rows; i++) y[i * ys] = hsum256(_mm256_add_ps(a0[i], a1[i]));
}

void QUILL_AVX2 quill_gemv_q8_0_avx2(const void *w, int64_t rs, const quill_activation_block *x, int64_t k,
                                     float *y, int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++) q8_rows((const uint8_t *)w + r * rs, x, k / QUILL_QK, y + r, 0, 1);
}

void QUILL_AVX2 quill_gemv_q8_0_rows_avx2(const void *w, int64_t rs, const quill_activation_block *x, int64_t k,
                                          float *y, int64_t ys, int64_t r0, int64_t r1, int64_t m) {
    const int64_t nb = k / QUILL_QK;
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *p = (const uint8_t *)w + r * rs;
        int64_t i = 0;
        for (; i + 4 <= m; i += 4) q8_rows(p, x + i * nb, nb, y + i * ys + r, ys, 4);
        switch (m - i) {
        case 3: q8_rows(p, x + i * nb, nb, y + i * ys + r, ys, 3); break;
        case 2: q8_rows(p, x + i * nb, nb, y + i * ys + r, ys, 2); break;
        case 1: q8_rows(p, x + i * nb, nb, y + i * ys + r, ys, 1); break;
        default: break;
        }
    }
}

// Q4_0, two blocks at a time: block a's 16 bytes in the low lane and b's in the high lane
// give both blocks' low nibbles with one AND and both high nibbles with one shift and AND;
// the activation pair is laid out to match, so two maddubs, one add and one madd leave
// block a's sum in lanes 0-3 and b's in lanes 4-7. The unsigned nibbles' +8 offset is
// removed by the pair's precomputed -8·sum(q). Half the float work of one block at a time.
// The unpacked nibbles and scales of a block pair, shared by every activation row.
typedef struct { __m256i low, high; __m256 scales; } q4_unpacked;

static inline QUILL_AVX2 q4_unpacked q4_unpack(const uint8_t *a) {
    const __m256i raw = _mm256_loadu2_m128i((const __m128i *)(a + QUILL_Q4_0_BLOCK_BYTES + 2), (const __m128i *)(a + 2));
    const __m256i mask = _mm256_set1_epi8(0x0F);
    q4_unpacked u;
    u.low = _mm256_and_si256(raw, mask);
    u.high = _mm256_and_si256(_mm256_srli_epi16(raw, 4), mask);
    u.scales = _mm256_blend_ps(_mm256_broadcast_ss(&quill_f16_table[quill_read_u16(a)]),
                               _mm256_broadcast_ss(&quill_f16_table[quill_read_u16(a + QUILL_Q4_0_BLOCK_BYTES)]), 0xF0);
    return u;
}

static inline QUILL_AVX2 __m256 q4_pair_dot(q4_unpacked u, const quill_activation_pair *x, __m256 acc) {
    const __m256i products = _mm256_add_epi16(_mm256_maddubs_epi16(u.low, _mm256_loadu_si256((const __m256i *)x->low)),
                                              _mm256_maddubs_epi16(u.high, _mm256_loadu_si256((const __m256i *)x->high)));
    const __m256i sums = _mm256_add_epi32(_mm256_madd_epi16(products, _mm256_set1_epi16(1)),
                                          _mm256_loadu_si256((const __m256i *)x->offset));
    return _mm256_fmadd_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(sums), _mm256_loadu_ps(x->d)), u.scales, acc);
}

static inline QUILL_AVX2 __m256 q4_pair(const uint8_t *a, const quill_activation_pair *x, __m256 acc) {
    return q4_pair_dot(q4_unpack(a), x, acc);
}

// The last block of an odd count, against the first half of its pair.
static inline QUILL_AVX2 __m256 q4_single(const uint8_t *a, const quill_activation_pair *x, __m256 acc) {
    const __m128i raw = _mm_loadu_si128((const __m128i *)(a + 2));
    const __m128i mask = _mm_set1_epi8(0x0F);
    const __m256i w = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(raw, 4), mask), _mm_and_si128(raw, mask));
    const __m256i xv = _mm256_loadu2_m128i((const __m128i *)x->high, (const __m128i *)x->low);
    const __m256i sums = _mm256_madd_epi16(_mm256_maddubs_epi16(w, xv), _mm256_set1_epi16(1));
    const float scale = quill_f16_table[quill_read_u16(a)] * x->d[0];
    const __m256 dot = _mm256_cvtepi32_ps(_mm256_add_epi32(sums, _mm256_setr_epi32(x->offset[0], 0, 0, 0, 0, 0, 0, 0)));
    return _mm256_fmadd_ps(dot, _mm256_set1_ps(scale), acc);
}

void QUILL_AVX2 quill_gemv_q4_0_avx2(const void *w, int64_t rs, const quill_activation_pair *x, int64_t k,
                                     float *y, int64_t r0, int64_t r1) {
    const int64_t nb = k / QUILL_QK;
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *p = (const uint8_t *)w + r * rs;
        __m256 a0 = _mm256_setzero_ps(), a1 = a0;
        int64_t b = 0;
        for (; b + 4 <= nb; b += 4) {
            PREFETCH(p + b * QUILL_Q4_0_BLOCK_BYTES + Q4_0_PREFETCH_BYTES);
            a0 = q4_pair(p + b * QUILL_Q4_0_BLOCK_BYTES, x + b / 2, a0);
            a1 = q4_pair(p + (b + 2) * QUILL_Q4_0_BLOCK_BYTES, x + b / 2 + 1, a1);
        }
        if (b + 2 <= nb) { a0 = q4_pair(p + b * QUILL_Q4_0_BLOCK_BYTES, x + b / 2, a0); b += 2; }
        if (b < nb) a1 = q4_single(p + b * QUILL_Q4_0_BLOCK_BYTES, x + b / 2, a1);
        y[r] = hsum256(_mm256_add_ps(a0, a1));
    }
}

// Up to four activation rows against the same weight rows: each block pair is unpacked
// once for all of them. Row i's accumulators see exactly the operations, in the same
// order, as in quill_gemv_q4_0_avx2, so every result is bit-identical to the single-row
// kernel's (batched decode must equal solo decode).
static inline __attribute__((always_inline)) QUILL_AVX2 void q4_rows(const uint8_t *p, const quill_activation_pair *x,
                                                                     int64_t pairs, int64_t nb, float *y, int64_t ys,
                                                                     const int rows) {
    __m256 a0[4], a1[4];
    for (int i = 0; i < rows; i++) a0[i] = a1[i] = _mm256_setzero_ps();
    int64_t b = 0;
    for (; b + 4 <= nb; b += 4) {
        PREFETCH(p + b * QUILL_Q4_0_BLOCK_BYTES + Q4_0_PREFETCH_BYTES);
        const q4_unpacked u0 = q4_unpack(p + b * QUILL_Q4_0_BLOCK_BYTES);
        const q4_unpacked u1 = q4_unpack(p + (b + 2) * QUILL_Q4_0_BLOCK_BYTES);
        for (int i = 0; i < rows; i++) {
            a0[i] = q4_pair_dot(u0, x + i * pairs + b / 2, a0[i]);
            a1[i] = q4_pair_dot(u1, x + i * pairs + b / 2 + 1, a1[i]);
        }
    }
    if (b + 2 <= nb) {
        const q4_unpacked u0 = q4_unpack(p + b * QUILL_Q4_0_BLOCK_BYTES);
        for (int i = 0; i < rows; i++) a0[i] = q4_pair_dot(u0, x + i * pairs + b / 2, a0[i]);
        b += 2;
    }
    if (b < nb) {
        for (int i = 0; i < rows; i++) a1[i] = q4_single(p + b * QUILL_Q4_0_BLOCK_BYTES, x + i * pairs + b / 2, a1[i]);
    }
    for (int i = 0; i < rows; i++) y[i * ys] = hsum256(_mm256_add_ps(a0[i], a1[i]));
}

void QUILL_AVX2 quill_gemv_q4_0_rows_avx2(const void *w, int64_t rs, const quill_activation_pair *x, int64_t k,
                                          float *y, int64_t ys, int64_t r0, int64_t r1, int64_t m) {
    const int64_t nb = k / QUILL_QK, pairs = (nb + 1) / 2;
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *p = (const uint8_t *)w + r * rs;
        int64_t i = 0;
        for (; i + 4 <= m; i += 4) q4_rows(p, x + i * pairs, pairs, nb, y + i * ys + r, ys, 4);
        switch (m - i) {
        case 3: q4_rows(p, x + i * pairs, pairs, nb, y + i * ys + r, ys, 3); break;
        case 2: q4_rows(p, x + i * pairs, pairs, nb, y + i * ys + r, ys, 2); break;
        case 1: q4_rows(p, x + i * pairs, pairs, nb, y + i * ys + r, ys, 1); break;
        default: break;
        }
    }
}

#define ROUND_NEAREST (_MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)

void QUILL_AVX2 quill_quantize_activation_avx2(const float *x, int64_t k, quill_activation_block *out) {
    const __m256 sign_bit = _mm256_set1_ps(-0.0f);
    for (int64_t b = 0; b < k / QUILL_QK; b++) {
        const float *xb = x + b * QUILL_QK;
        __m256 v0 = _mm256_loadu_ps(xb), v1 = _mm256_loadu_ps(xb + 8);
        __m256 v2 = _mm256_loadu_ps(xb + 16), v3 = _mm256_loadu_ps(xb + 24);
        __m256 amax = _mm256_max_ps(_mm256_andnot_ps(sign_bit, v0), _mm256_andnot_ps(sign_bit, v1));
        amax = _mm256_max_ps(amax, _mm256_max_ps(_mm256_andnot_ps(sign_bit, v2), _mm256_andnot_ps(sign_bit, v3)));
        const float scale = hmax256(amax) / 127.0f;
        const __m256 inverse = _mm256_set1_ps(scale != 0.0f ? 1.0f / scale : 0.0f);
        __m256i i0 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v0, inverse), ROUND_NEAREST));
        __m256i i1 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v1, inverse), ROUND_NEAREST));
        __m256i i2 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v2, inverse), ROUND_NEAREST));
        __m256i i3 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v3, inverse), ROUND_NEAREST));
        const __m256i sum = _mm256_add_epi32(_mm256_add_epi32(i0, i1), _mm256_add_epi32(i2, i3));
        __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(sum), _mm256_extracti128_si256(sum, 1));
        s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, _MM_SHUFFLE(1, 0, 3, 2)));
        s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, _MM_SHUFFLE(2, 3, 0, 1)));
        // Pack 4 x 8 int32 to 32 int8; the packs interleave 128-bit lanes, the permute undoes it.
        __m256i packed = _mm256_packs_epi16(_mm256_packs_epi32(i0, i1), _mm256_packs_epi32(i2, i3));
        packed = _mm256_permutevar8x32_epi32(packed, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256((__m256i *)out[b].q, packed);
        _mm256_storeu_ps(out[b].d, _mm256_set1_ps(scale));
        _mm256_storeu_si256((__m256i *)out[b].offset, _mm256_setr_epi32(-8 * _mm_cvtsi128_si32(s4), 0, 0, 0, 0, 0, 0, 0));
    }
}

// MARK: - Elementwise

void QUILL_AVX2 quill_rmsnorm_avx2(const float *x, const float *w, float *y, int64_t n, float eps) {
    __m256 acc = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 v = _mm256_loadu_ps(x + i);
        acc = _mm256_fmadd_ps(v, v, acc);
    }
    float sum = hsum256(acc);
    for (; i < n; i++) sum += x[i] * x[i];
    const float inverse = 1.0f / sqrtf(sum / (float)n + eps);
    const __m256 vi = _mm256_set1_ps(inverse);
    for (i = 0; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(x + i), vi), _mm256_loadu_ps(w + i)));
    for (; i < n; i++) y[i] = (x[i] * inverse) * w[i];
}

void QUILL_AVX2 quill_silu_avx2(const float *x, float *y, int64_t n) {
    const __m256 one = _mm256_set1_ps(1.0f);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 v = _mm256_loadu_ps(x + i);
        const __m256 e = exp256(_mm256_sub_ps(_mm256_setzero_ps(), v));
        _mm256_storeu_ps(y + i, _mm256_div_ps(v, _mm256_add_ps(one, e)));
    }
    for (; i < n; i++) y[i] = x[i] / (1.0f + expf(-x[i]));
}

void QUILL_AVX2 quill_swiglu_avx2(const float *g, const float *u, float *y, int64_t n) {
    const __m256 one = _mm256_set1_ps(1.0f);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 v = _mm256_loadu_ps(g + i);
        const __m256 e = exp256(_mm256_sub_ps(_mm256_setzero_ps(), v));
        _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_div_ps(v, _mm256_add_ps(one, e)), _mm256_loadu_ps(u + i)));
    }
    for (; i < n; i++) y[i] = (g[i] / (1.0f + expf(-g[i]))) * u[i];
}

void QUILL_AVX2 quill_softmax_avx2(float *x, int64_t n) {
    __m256 vmax = _mm256_set1_ps(-INFINITY);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) vmax = _mm256_max_ps(vmax, _mm256_loadu_ps(x + i));
    float max = hmax256(vmax);
    for (; i < n; i++) max = fmaxf(max, x[i]);
    const __m256 m = _mm256_set1_ps(max);
    __m256 acc = _mm256_setzero_ps();
    for (i = 0; i + 8 <= n; i += 8) {
        const __m256 e = exp256(_mm256_sub_ps(_mm256_loadu_ps(x + i), m));
        _mm256_storeu_ps(x + i, e);
        acc = _mm256_add_ps(acc, e);
    }
    float sum = hsum256(acc);
    for (; i < n; i++) { x[i] = expf(x[i] - max); sum += x[i]; }
    const __m256 inverse = _mm256_set1_ps(1.0f / sum);
    for (i = 0; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), inverse));
    for (; i < n; i++) x[i] *= 1.0f / sum;
}

void QUILL_AVX2 quill_exp_avx2(float *x, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, exp256(_mm256_loadu_ps(x + i)));
    for (; i < n; i++) x[i] = expf(x[i]);
}

float QUILL_AVX2 quill_dot_f32_avx2(const float *a, const float *b, int64_t n) {
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
        acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), acc1);
    }
    for (; i + 8 <= n; i += 8) acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
    float sum = hsum256(_mm256_add_ps(acc0, acc1));
    for (; i < n; i++) sum += a[i] * b[i];
    return sum;
}
#endif
