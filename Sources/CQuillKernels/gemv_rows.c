// Float GEMV over several activation rows (batched decode, speculative verification): the
// row-wise path, where every row's result must equal what FLOAT_GEMV (avx2.c) gives that
// row alone, so each (weight row, activation row) pair keeps FLOAT_GEMV's four-row-group
// arithmetic: a and b accumulators over alternate 8-column vectors, then hsum(a + b), then
// the scalar tail. Within that, a tile of weight rows × activation rows reads each weight
// vector once for its activation rows (and converts it: an F16 conversion costs about one
// FMA slot) and each activation vector once for its weight rows; 12 accumulators allow
// 2 × 3 or 3 × 2.
#include "internal.h"
#ifdef QUILL_X86
#include <immintrin.h>
#include "avx2_math.h"

// Weight vectors W0 and W1 (columns at OFFSET) against every activation row of the tile.
#define FLOAT_TILE_BLOCK(ACC0, ACC1, W0, W1, OFFSET)                                                 \
    for (int j = 0; j < nj; j++) {                                                                   \
        const __m256 xv = _mm256_loadu_ps(x + j * k + (OFFSET));                                     \
        ACC0[j] = _mm256_fmadd_ps(W0, xv, ACC0[j]);                                                  \
        ACC1[j] = _mm256_fmadd_ps(W1, xv, ACC1[j]);                                                  \
    }

// Two weight rows against up to three activation rows (x: rows k floats apart, y: outputs
// ys apart): each weight vector is loaded (and converted) once for all of them. Every
// (weight row, activation row) pair keeps its own a/b accumulators with exactly FLOAT_GEMV's
// four-row-group arithmetic, so results are bit-identical to one row at a time. `next` (or
// NULL) is the following pair's first row, prefetched at the same offset: the pair is read
// from memory once, by the first call for it, and stays in L1 for the others.
#define FLOAT_TILE(ELEM, LOAD8, SCALAR)                                                                \
    static inline __attribute__((always_inline)) QUILL_AVX2 void float_tile_##ELEM##_##LOAD8(            \
        const ELEM *p0, const ELEM *p1, const float *x, int64_t k, float *y, int64_t ys, const int nj,    \
        const uint8_t *next) {                                                                         \
        const int64_t gap = next ? next - (const uint8_t *)(const void *)p0 : 0;                      \
        __m256 a0[3], b0[3], a1[3], b1[3];                                                             \
        for (int j = 0; j < nj; j++) a0[j] = b0[j] = a1[j] = b1[j] = _mm256_setzero_ps();             \
        int64_t i = 0;                                                                                 \
        for (; i + 16 <= k; i += 16) {                                                                 \
            if (next && (i * (int64_t)sizeof(ELEM)) % 64 == 0) {                                       \
                _mm_prefetch((const char *)(p0 + i) + gap, _MM_HINT_T0);                               \
                _mm_prefetch((const char *)(p1 + i) + gap, _MM_HINT_T0);                               \
            }                                                                                          \
            const __m256 w0 = LOAD8(p0 + i), w1 = LOAD8(p1 + i);                                       \
            FLOAT_TILE_BLOCK(a0, a1, w0, w1, i);                                                       \
            const __m256 v0 = LOAD8(p0 + i + 8), v1 = LOAD8(p1 + i + 8);                               \
            FLOAT_TILE_BLOCK(b0, b1, v0, v1, i + 8);                                                   \
        }                                                                                              \
        for (; i + 8 <= k; i += 8) {                                                                   \
            const __m256 w0 = LOAD8(p0 + i), w1 = LOAD8(p1 + i);                                       \
            FLOAT_TILE_BLOCK(a0, a1, w0, w1, i);                                                       \
        }                                                                                              \
        for (int j = 0; j < nj; j++) {                                                                 \
            const float *xj = x + j * k;                                                               \
            float s0 = hsum256(_mm256_add_ps(a0[j], b0[j])), s1 = hsum256(_mm256_add_ps(a1[j], b1[j])); \
            for (int64_t c = i; c < k; c++) {                                                          \
                s0 += SCALAR(p0[c]) * xj[c];                                                           \
                s1 += SCALAR(p1[c]) * xj[c];                                                           \
            }                                                                                          \
            y[j * ys] = s0;                                                                            \
            y[j * ys + 1] = s1;                                                                        \
        }                                                                                              \
    }

#define TRIPLE_KC 256     // columns per chunk of a three-row tile: two activation rows stay in L1
#define TRIPLE_BLOCK 16   // activation rows a group of three weight rows keeps accumulators for

// Three weight rows (p, re elements apart) against two activation rows (x: k floats apart)
// over columns [c, c + len), len a multiple of 16, continuing the a/b accumulators
// acc[(j * 3 + r) * 2 + {0: a, 1: b}]. `next` as in FLOAT_TILE.
#define FLOAT_TRIPLE(ELEM, LOAD8)                                                                      \
    static inline __attribute__((always_inline)) QUILL_AVX2 void float_triple_##ELEM##_##LOAD8(          \
        const ELEM *p, int64_t re, const float *x, int64_t k, int64_t c, int64_t len, __m256 *acc,      \
        const uint8_t *next) {                                                                         \
        const int64_t gap = next ? next - (const uint8_t *)(const void *)p : 0;                       \
        __m256 a[6], b[6];                                                                             \
        for (int q = 0; q < 6; q++) a[q] = acc[2 * q], b[q] = acc[2 * q + 1];                         \
        for (int64_t i = c; i < c + len; i += 16) {                                                    \
            if (next && (i * (int64_t)sizeof(ELEM)) % 64 == 0)                                         \
                for (int r = 0; r < 3; r++) _mm_prefetch((const char *)(p + r * re + i) + gap, _MM_HINT_T0); \
            for (int r = 0; r < 3; r++) {                                                              \
                const __m256 w = LOAD8(p + r * re + i);                                                \
                for (int j = 0; j < 2; j++) a[j * 3 + r] = _mm256_fmadd_ps(w, _mm256_loadu_ps(x + j * k + i), a[j * 3 + r]); \
            }                                                                                          \
            for (int r = 0; r < 3; r++) {                                                              \
                const __m256 w = LOAD8(p + r * re + i + 8);                                            \
                for (int j = 0; j < 2; j++) b[j * 3 + r] = _mm256_fmadd_ps(w, _mm256_loadu_ps(x + j * k + i + 8), b[j * 3 + r]); \
            }                                                                                          \
        }                                                                                              \
        for (int q = 0; q < 6; q++) acc[2 * q] = a[q], acc[2 * q + 1] = b[q];                         \
    }

// Three weight rows against an even number mb ≤ TRIPLE_BLOCK of activation rows, two at a
// time, chunk by chunk of columns, so the chunk of every activation row stays in L1 while
// the three rows' chunk is in L1 too; then each pair's 8-column and scalar tails.
#define FLOAT_TRIPLE_ROWS(ELEM, LOAD8, SCALAR)                                                         \
    FLOAT_TRIPLE(ELEM, LOAD8)                                                                          \
    static QUILL_AVX2 void float_triple_rows_##ELEM##_##LOAD8(const ELEM *p, int64_t rs, const float *x, \
                                                              int64_t k, float *y, int64_t ys, int64_t mb, \
                                                              const uint8_t *next) {                   \
        const int64_t re = rs / (int64_t)sizeof(ELEM), k16 = k / 16 * 16;                              \
        __m256 acc[TRIPLE_BLOCK * 6];                                                                  \
        for (int64_t q = 0; q < 6 * mb; q++) acc[q] = _mm256_setzero_ps();                            \
        for (int64_t c = 0; c < k16; c += TRIPLE_KC) {                                                 \
            const int64_t len = k16 - c < TRIPLE_KC ? k16 - c : TRIPLE_KC;                             \
            for (int64_t j = 0; j < mb; j += 2)                                                        \
                float_triple_##ELEM##_##LOAD8(p, re, x + j * k, k, c, len, acc + 6 * j, j == 0 ? next : NULL); \
        }                                                                                              \
        for (int64_t j = 0; j < mb; j++)                                                               \
            for (int r = 0; r < 3; r++) {                                                              \
                const ELEM *pr = p + r * re;                                                           \
                const float *xj = x + j * k;                                                           \
                __m256 a = acc[(j * 3 + r) * 2], b = acc[(j * 3 + r) * 2 + 1];                         \
                int64_t i = k16;                                                                       \
                for (; i + 8 <= k; i += 8) a = _mm256_fmadd_ps(LOAD8(pr + i), _mm256_loadu_ps(xj + i), a); \
                float s = hsum256(_mm256_add_ps(a, b));                                                \
                for (; i < k; i++) s += SCALAR(pr[i]) * xj[i];                                         \
                y[j * ys + r] = s;                                                                     \
            }                                                                                          \
    }

// m activation rows (x: m rows of k floats; y row i at y + i·ys). The weight rows FLOAT_GEMV
// takes in groups of four go through tiles, so each is streamed from memory once for all m
// rows (once per TRIPLE_BLOCK rows on the three-row path); the tail weight rows go through
// FLOAT_GEMV itself. When m is even, at least 4 and not a multiple of 3, most weight rows go
// three at a time against activation pairs (fewer activation loads per FMA), the rest a
// pair at a time against activation triples, as every other m does. Measured against pairs
// for every m (a throwaway C benchmark, one core, F16, old and new kernel in one process,
// medians of 21 alternations): 8 rows 1.08–1.34× (2048×2048, 5632×2048, 2048×5632), 4 rows
// 1.25×, 10 and 16 rows 1.12×, 20 rows 1.02×, k = 768 0.98–1.05×. Three-row tiles were no
// faster at 2 and 5–7 rows and 0.73× at 3, so those keep the pairs.
#define FLOAT_GEMV_ROWS(NAME, SINGLE, ELEM, LOAD8, SCALAR)                                           \
    FLOAT_TILE(ELEM, LOAD8, SCALAR)                                                                  \
    FLOAT_TRIPLE_ROWS(ELEM, LOAD8, SCALAR)                                                           \
    void QUILL_AVX2 NAME(const void *w, int64_t rs, const float *x, int64_t k, float *y, int64_t ys,    \
                         int64_t r0, int64_t r1, int64_t m) {                                        \
        const int64_t grouped = r0 + (r1 - r0) / 4 * 4;                                              \
        int64_t r = r0;                                                                              \
        if (m >= 4 && m % 2 == 0 && m % 3 != 0) {                                                    \
            int64_t triples = (grouped - r0) / 3;                                                    \
            if ((grouped - r0 - 3 * triples) % 2) triples--; /* leave pairs */                       \
            const int64_t end = r0 + 3 * triples;                                                    \
            for (int64_t j0 = 0; j0 < m; j0 += TRIPLE_BLOCK) {                                       \
                const int64_t mb = m - j0 < TRIPLE_BLOCK ? m - j0 : TRIPLE_BLOCK;                    \
                for (int64_t t = r0; t < end; t += 3) {                                              \
                    const ELEM *p = (const ELEM *)(const void *)((const uint8_t *)w + t * rs);       \
                    const uint8_t *next = t + 3 < end ? (const uint8_t *)(const void *)p + 3 * rs : NULL; \
                    float_triple_rows_##ELEM##_##LOAD8(p, rs, x + j0 * k, k, y + j0 * ys + t, ys, mb, next); \
                }                                                                                    \
            }                                                                                        \
            r = end;                                                                                 \
        }                                                                                            \
        for (; r < grouped; r += 2) {                                                                \
            const ELEM *p0 = (const ELEM *)(const void *)((const uint8_t *)w + r * rs);              \
            const ELEM *p1 = (const ELEM *)(const void *)((const uint8_t *)p0 + rs);                 \
            const uint8_t *next = r + 2 < grouped ? (const uint8_t *)p1 + rs : NULL;                 \
            int64_t j = 0;                                                                           \
            for (; j + 3 <= m; j += 3)                                                               \
                float_tile_##ELEM##_##LOAD8(p0, p1, x + j * k, k, y + j * ys + r, ys, 3, j == 0 ? next : NULL); \
            if (m - j == 2)                                                                          \
                float_tile_##ELEM##_##LOAD8(p0, p1, x + j * k, k, y + j * ys + r, ys, 2, j == 0 ? next : NULL); \
            else if (m - j == 1)                                                                     \
                float_tile_##ELEM##_##LOAD8(p0, p1, x + j * k, k, y + j * ys + r, ys, 1, j == 0 ? next : NULL); \
        }                                                                                            \
        for (int64_t j = 0; j < m; j++) SINGLE(w, rs, x + j * k, k, y + j * ys, grouped, r1);        \
    }

FLOAT_GEMV_ROWS(quill_gemv_f32_rows_avx2, quill_gemv_f32_avx2, float, LOAD_F32, SCALAR_F32)
FLOAT_GEMV_ROWS(quill_gemv_f16_rows_avx2, quill_gemv_f16_avx2, uint16_t, LOAD_F16, SCALAR_F16)
FLOAT_GEMV_ROWS(quill_gemv_bf16_rows_avx2, quill_gemv_bf16_avx2, uint16_t, LOAD_BF16, SCALAR_BF16)

#endif  // QUILL_X86
