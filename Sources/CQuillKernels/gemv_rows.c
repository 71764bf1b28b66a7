// Float GEMV over several activation rows (batched decode, speculative verification): the
// row-wise path, where every row's result must equal what FLOAT_GEMV (avx2.c) gives that
// row alone, so each (weight row, activation row) pair keeps FLOAT_GEMV's four-row-group
// arithmetic: a and b accumulators over alternate 8-column vectors, then hsum(a + b), then
// the scalar tail. Within that, a tile of weight rows × activation rows reads each weight
// vector once for its activation rows (and converts it: an F16 conversion costs about one
// FMA slot) and each activation vector once for its weight rows: a pair of weight rows ×
// three activation rows with both parities (12 accumulators), or, from four activation rows
// on, three weight rows × four activation rows one parity at a time (SPLIT_ROWS).
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

#define SPLIT_KC 256     // columns per chunk: 16 activation rows' chunk (16 KB) and the converted weights (3 KB) stay in L1
#define SPLIT_BLOCK 16   // activation rows per block: 2 × 16 × 3 accumulators live on the stack

// One parity of R weight rows (p, re elements apart) × J activation rows (x: k floats
// apart) over columns [c, c + len), 16 at a time: parity 0 visits the first 8 of every 16
// columns (FLOAT_GEMV's a accumulators), parity 1 the second 8 (b), so R × J accumulators
// suffice where both parities at once would need twice as many registers; acc[j * R + r]
// carries them from chunk to chunk. With `out`, the weights come from the matrix, are
// converted and kept in out (R rows of SPLIT_KC floats, indexed from c) for the other
// activation groups of the chunk, and the rows `gap` bytes further are prefetched; without,
// they are read back from `kept`. F32 weights (KEEP 0) need no conversion: every group reads
// them from the matrix (from L1 after the first): 0.90× the old kernel, a copy 0.88×.
#define SPLIT_PASS(ELEM, LOAD8, KEEP)                                                                        \
    static inline __attribute__((always_inline)) QUILL_AVX2 void split_pass_##ELEM##_##LOAD8(            \
        const int R, const int J, const ELEM *p, int64_t re, const float *kept, float *out,             \
        const float *x, int64_t k, int64_t c, int64_t len, __m256 *acc, int64_t gap) {                 \
        __m256 a[12];                                                                                  \
        for (int q = 0; q < R * J; q++) a[q] = acc[q];                                                \
        for (int64_t i = c; i < c + len; i += 16) {                                                    \
            __m256 w[3];                                                                               \
            if (out) {                                                                                 \
                if (gap && (i * (int64_t)sizeof(ELEM)) % 64 == 0)                                      \
                    for (int r = 0; r < R; r++) _mm_prefetch((const char *)(p + r * re + i) + gap, _MM_HINT_T0); \
                for (int r = 0; r < R; r++) {                                                          \
                    w[r] = LOAD8(p + r * re + i);                                                      \
                    if (KEEP) _mm256_store_ps(out + r * SPLIT_KC + (i - c), w[r]);                     \
                }                                                                                      \
            } else {                                                                                   \
                for (int r = 0; r < R; r++)                                                            \
                    w[r] = KEEP ? _mm256_load_ps(kept + r * SPLIT_KC + (i - c)) : LOAD8(p + r * re + i); \
            }                                                                                          \
            for (int j = 0; j < J; j++) {                                                              \
                const __m256 xv = _mm256_loadu_ps(x + j * k + i);                                      \
                for (int r = 0; r < R; r++) a[j * R + r] = _mm256_fmadd_ps(w[r], xv, a[j * R + r]);   \
            }                                                                                          \
        }                                                                                              \
        for (int q = 0; q < R * J; q++) acc[q] = a[q];                                                \
    }                                                                                                  \
    /* Both parities: the a accumulators at acc, the b ones at b. */                                   \
    static inline __attribute__((always_inline)) QUILL_AVX2 void split_both_##ELEM##_##LOAD8(            \
        const int R, const int J, const ELEM *p, int64_t re, const float *kept, float *out,             \
        const float *x, int64_t k, int64_t c, int64_t len, __m256 *acc, __m256 *b, int64_t gap) {       \
        split_pass_##ELEM##_##LOAD8(R, J, p, re, kept, out, x, k, c, len, acc, gap);                    \
        split_pass_##ELEM##_##LOAD8(R, J, p, re, kept ? kept + 8 : NULL, out ? out + 8 : NULL, x, k,    \
                                    c + 8, len - 8, b, 0);                                             \
    }

// R (2 or 3) weight rows against mb activation rows (4 ≤ mb ≤ SPLIT_BLOCK), chunk by chunk
// of columns: the first four activation rows convert the chunk's weights, the others (four
// at a time, then the one to three left) reuse them from L1; then each pair's 8-column and
// scalar tails as FLOAT_GEMV does. `next` (or NULL) is the next group's first row.
#define SPLIT_ROWS(ELEM, LOAD8, SCALAR, KEEP)                                                          \
    SPLIT_PASS(ELEM, LOAD8, KEEP)                                                                            \
    static inline __attribute__((always_inline)) QUILL_AVX2 void split_rows_##ELEM##_##LOAD8(            \
        const int R, const ELEM *p, int64_t rs, const float *x, int64_t k, float *y, int64_t ys,        \
        int64_t mb, const uint8_t *next) {                                                             \
        const int64_t re = rs / (int64_t)sizeof(ELEM), k16 = k / 16 * 16;                              \
        const int64_t gap = next ? next - (const uint8_t *)(const void *)p : 0;                       \
        __m256 acc[2 * SPLIT_BLOCK * 3]; /* [parity][activation row j][weight row r] */                \
        float kept[3 * SPLIT_KC] __attribute__((aligned(32)));                                        \
        __m256 *b = acc + mb * R;                                                                      \
        for (int64_t q = 0; q < 2 * mb * R; q++) acc[q] = _mm256_setzero_ps();                        \
        for (int64_t c = 0; c < k16; c += SPLIT_KC) {                                                  \
            const int64_t len = k16 - c < SPLIT_KC ? k16 - c : SPLIT_KC;                               \
            split_both_##ELEM##_##LOAD8(R, 4, p, re, NULL, kept, x, k, c, len, acc, b, gap);           \
            int64_t j = 4;                                                                             \
            for (; j + 4 <= mb; j += 4)                                                                \
                split_both_##ELEM##_##LOAD8(R, 4, p, re, kept, NULL, x + j * k, k, c, len, acc + j * R, b + j * R, 0); \
            /* J must be a constant for the passes to unroll, hence one call per remainder. */        \
            switch (mb - j) {                                                                          \
            case 3: split_both_##ELEM##_##LOAD8(R, 3, p, re, kept, NULL, x + j * k, k, c, len, acc + j * R, b + j * R, 0); break; \
            case 2: split_both_##ELEM##_##LOAD8(R, 2, p, re, kept, NULL, x + j * k, k, c, len, acc + j * R, b + j * R, 0); break; \
            case 1: split_both_##ELEM##_##LOAD8(R, 1, p, re, kept, NULL, x + j * k, k, c, len, acc + j * R, b + j * R, 0); break; \
            }                                                                                          \
        }                                                                                              \
        for (int64_t j = 0; j < mb; j++)                                                               \
            for (int r = 0; r < R; r++) {                                                              \
                const ELEM *pr = p + r * re;                                                           \
                const float *xj = x + j * k;                                                           \
                __m256 av = acc[j * R + r], bv = b[j * R + r];                                         \
                int64_t i = k16;                                                                       \
                for (; i + 8 <= k; i += 8) av = _mm256_fmadd_ps(LOAD8(pr + i), _mm256_loadu_ps(xj + i), av); \
                float s = hsum256(_mm256_add_ps(av, bv));                                              \
                for (; i < k; i++) s += SCALAR(pr[i]) * xj[i];                                         \
                y[j * ys + r] = s;                                                                     \
            }                                                                                          \
    }

// m activation rows (x: m rows of k floats; y row i at y + i·ys). The weight rows FLOAT_GEMV
// takes in groups of four are streamed from memory once for every block of up to
// SPLIT_BLOCK activation rows: from 4 rows on, three weight rows at a time (two for the
// last one or two pairs, so every group count works), the parities apart and the converted
// weights reused from L1 (an F16 conversion costs about an FMA slot, so converting once for
// all rows of the block is what helps most); 2 or 3 rows go a pair of weight rows at a time
// against all of them. The tail weight rows go through FLOAT_GEMV itself. Measured against
// the kernel it replaced (three weight rows × two activation rows, both parities at once;
// a throwaway C benchmark, one core, F16 weights cycled from DRAM, best of 7, results
// identical): 8 rows 1.18–1.23× (5632×2048, 2048×2048, 2048×5632), 16 rows 1.32×, 4–6 rows
// 0.97–1.00×; F32 0.89× (see the CHANGELOG for the model figures).
#define FLOAT_GEMV_ROWS(NAME, SINGLE, ELEM, LOAD8, SCALAR, KEEP)                                     \
    FLOAT_TILE(ELEM, LOAD8, SCALAR)                                                                  \
    SPLIT_ROWS(ELEM, LOAD8, SCALAR, KEEP)                                                                  \
    void QUILL_AVX2 NAME(const void *w, int64_t rs, const float *x, int64_t k, float *y, int64_t ys,    \
                         int64_t r0, int64_t r1, int64_t m) {                                        \
        const int64_t grouped = r0 + (r1 - r0) / 4 * 4;                                              \
        int64_t r = r0;                                                                              \
        if (m >= 4) {                                                                                \
            int64_t triples = (grouped - r0) / 3;                                                    \
            if ((grouped - r0 - 3 * triples) % 2) triples--; /* leave pairs */                       \
            const int64_t pairs_from = r0 + 3 * triples;                                             \
            /* Blocks of at most SPLIT_BLOCK rows, as even as can be: each holds at least 4. */      \
            for (int64_t j0 = 0, mb; j0 < m; j0 += mb) {                                             \
                const int64_t blocks = (m - j0 + SPLIT_BLOCK - 1) / SPLIT_BLOCK;                     \
                mb = (m - j0 + blocks - 1) / blocks;                                                 \
                for (int64_t t = r0; t < grouped;) {                                                 \
                    const int64_t n = t < pairs_from ? 3 : 2;                                        \
                    const ELEM *p = (const ELEM *)(const void *)((const uint8_t *)w + t * rs);       \
                    const uint8_t *next = t + n < grouped ? (const uint8_t *)(const void *)p + n * rs : NULL; \
                    if (n == 3) split_rows_##ELEM##_##LOAD8(3, p, rs, x + j0 * k, k, y + j0 * ys + t, ys, mb, next); \
                    else split_rows_##ELEM##_##LOAD8(2, p, rs, x + j0 * k, k, y + j0 * ys + t, ys, mb, next); \
                    t += n;                                                                          \
                }                                                                                    \
            }                                                                                        \
            r = grouped;                                                                             \
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

FLOAT_GEMV_ROWS(quill_gemv_f32_rows_avx2, quill_gemv_f32_avx2, float, LOAD_F32, SCALAR_F32, 0)
FLOAT_GEMV_ROWS(quill_gemv_f16_rows_avx2, quill_gemv_f16_avx2, uint16_t, LOAD_F16, SCALAR_F16, 1)
FLOAT_GEMV_ROWS(quill_gemv_bf16_rows_avx2, quill_gemv_bf16_avx2, uint16_t, LOAD_BF16, SCALAR_BF16, 1)

#endif  // QUILL_X86
