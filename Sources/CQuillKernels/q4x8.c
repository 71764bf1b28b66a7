// Q4_0 weights with eight rows interleaved per block (Quill's in-memory layout for matrix
// products; files keep ggml's row-major Q4_0). Group g of rows 8g ... 8g + 7, block b of
// their 32-column blocks, is 144 bytes at (g * blocks + b) * 144:
//   uint16 d[8]      the eight rows' F16 scales
//   uint8 qs[4][32]  chunk c holds bytes 4c ... 4c + 3 of each row's 16 quant bytes, row r at 4r
// One 32-byte load then feeds one maddubs for all eight rows (low nibbles: columns 4c ...
// 4c + 3, high nibbles: 16 + 4c ...), against four activation bytes broadcast to every row:
// the row sums of a block land one per lane, with no horizontal sums and one scale
// conversion for eight rows. Against one row at a time this halves the instructions per
// weight, which is what batched decoding (compute-bound without VNNI) runs into.
#include "internal.h"

#define GROUP_BYTES (8 * QUILL_Q4_0_BLOCK_BYTES)

void quill_repack_q4_0x8(const void *src, int64_t rows, int64_t k, void *dst) {
    quill_repack_x8(src, rows, k, QUILL_Q4_0_BLOCK_BYTES, dst);
}

static void dequantize_q4_0x8_rows_scalar(const void *w, int64_t k, int64_t row_begin, int64_t row_end, float *dst) {
    const int64_t nb = k / QUILL_QK;
    for (int64_t row = row_begin; row < row_end; row++, dst += k) {
        const int64_t g = row / 8, r = row % 8;
        for (int64_t b = 0; b < nb; b++) {
            const uint8_t *blk = (const uint8_t *)w + (g * nb + b) * GROUP_BYTES;
            const float d = quill_f16_table[quill_read_u16(blk + 2 * r)];
            float *o = dst + b * QUILL_QK;
            for (int c = 0; c < 4; c++)
                for (int j = 0; j < 4; j++) {
                    const uint8_t byte = blk[16 + 32 * c + 4 * r + j];
                    o[4 * c + j] = (float)((int)(byte & 0x0F) - 8) * d;
                    o[16 + 4 * c + j] = (float)((int)(byte >> 4) - 8) * d;
                }
        }
    }
}

// The portable path: each row's integer block sums as the vector kernel forms them.
static void gemv_q4_0x8_rows_scalar(const void *w, int64_t k, const quill_activation_block *x, float *y, int64_t ys,
                                    int64_t r0, int64_t r1, int64_t m) {
    const int64_t nb = k / QUILL_QK;
    for (int64_t i = 0; i < m; i++)
        for (int64_t row = r0; row < r1; row++) {
            const int64_t g = row / 8, r = row % 8;
            float acc = 0;
            for (int64_t b = 0; b < nb; b++) {
                const uint8_t *blk = (const uint8_t *)w + (g * nb + b) * GROUP_BYTES;
                const quill_activation_block *a = x + i * nb + b;
                int32_t sum = a->offset[0];
                for (int c = 0; c < 4; c++)
                    for (int j = 0; j < 4; j++) {
                        const uint8_t byte = blk[16 + 32 * c + 4 * r + j];
                        sum += (byte & 0x0F) * a->q[4 * c + j] + (byte >> 4) * a->q[16 + 4 * c + j];
                    }
                acc += (float)sum * (quill_f16_table[quill_read_u16(blk + 2 * r)] * a->d[0]);
            }
            y[i * ys + row] = acc;
        }
}

#ifdef QUILL_X86
#include <immintrin.h>
#include "avx2_math.h"

// Software prefetch of every cache line a block spans, this far ahead of it. Without it one
// core streams a matrix at 14 GB/s (the kernel's loads leave too few misses in flight) and
// two at 17-23 GB/s; with it 17 and 26-29 GB/s, the plain read rate (a C benchmark over an
// 82 MB matrix, 1 and 2 threads). Prefetches never fault, so running past the end is safe.
// 4 KB ahead, not 1 KB: on the host of 2026-12-04 (tensorcore-bench --only gemv --threads 2
// --types q4_0x8,q8_0x8 --shapes 5632x2048,2048x5632, two alternations of 1, 2, 4 and 8 KB)
// Q4_0x8 went from 0.74-0.80 of the bandwidth at 1 KB to 0.85-0.86 at 2 KB, 0.87-0.90 at
// 4 KB and 0.80-0.89 at 8 KB; Q8_0x8 (the same distance, q8x8.c) 0.80-0.86 -> 0.87-0.92.
#ifndef Q4X8_PREFETCH_BYTES
#define Q4X8_PREFETCH_BYTES 4096
#endif

// `rows` (1 to 4) activation rows against `groups` (1 or 2) consecutive groups of eight
// weight rows, both constants after inlining: each chunk is unpacked once for all rows, and
// with two groups each activation broadcast feeds two maddubs. An activation row's
// operations do not depend on how many rows or groups share the call, so batched results
// equal single-row ones.
static inline __attribute__((always_inline)) QUILL_AVX2 void q4x8_tile(const uint8_t *group, int64_t nb,
                                                                        const quill_activation_block *x, int64_t x_stride,
                                                                        float *y, int64_t ys, const int rows, const int groups) {
    const __m256i mask = _mm256_set1_epi8(0x0F), ones = _mm256_set1_epi16(1);
    __m256 acc[4][2];
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < groups; j++) acc[i][j] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *blk[2];
        for (int j = 0; j < groups; j++) {
            blk[j] = group + (j * nb + b) * GROUP_BYTES;
            _mm_prefetch((const char *)blk[j] + Q4X8_PREFETCH_BYTES, _MM_HINT_T0);
            _mm_prefetch((const char *)blk[j] + Q4X8_PREFETCH_BYTES + 64, _MM_HINT_T0);
            _mm_prefetch((const char *)blk[j] + Q4X8_PREFETCH_BYTES + 128, _MM_HINT_T0);
        }
        // Eight products of at most 15 × 127 per int16 lane pair stay below 2^15.
        __m256i sums[4][2];
        for (int i = 0; i < rows; i++)
            for (int j = 0; j < groups; j++) sums[i][j] = _mm256_setzero_si256();
        for (int c = 0; c < 4; c++) {
            __m256i low[2], high[2];
            for (int j = 0; j < groups; j++) {
                const __m256i raw = _mm256_loadu_si256((const __m256i *)(const void *)(blk[j] + 16 + 32 * c));
                low[j] = _mm256_and_si256(raw, mask);
                high[j] = _mm256_and_si256(_mm256_srli_epi16(raw, 4), mask);
            }
            for (int i = 0; i < rows; i++) {
                const int8_t *q = x[i * x_stride + b].q;
                int32_t lo_bytes, hi_bytes;
                memcpy(&lo_bytes, q + 4 * c, 4);
                memcpy(&hi_bytes, q + 16 + 4 * c, 4);
                const __m256i lo = _mm256_set1_epi32(lo_bytes), hi = _mm256_set1_epi32(hi_bytes);
                for (int j = 0; j < groups; j++)
                    sums[i][j] = _mm256_add_epi16(sums[i][j], _mm256_add_epi16(_mm256_maddubs_epi16(low[j], lo),
                                                                               _mm256_maddubs_epi16(high[j], hi)));
            }
        }
        for (int j = 0; j < groups; j++) {
            const __m256 scales = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)blk[j]));
            for (int i = 0; i < rows; i++) {
                const quill_activation_block *a = x + i * x_stride + b;
                const __m256i total = _mm256_add_epi32(_mm256_madd_epi16(sums[i][j], ones), _mm256_set1_epi32(a->offset[0]));
                acc[i][j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(total), _mm256_mul_ps(scales, _mm256_broadcast_ss(a->d)), acc[i][j]);
            }
        }
    }
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < groups; j++) _mm256_storeu_ps(y + i * ys + 8 * j, acc[i][j]);
}

static inline __attribute__((always_inline)) QUILL_AVX2 void q4x8_rows(const uint8_t *group, int64_t nb,
                                                                        const quill_activation_block *x, int64_t x_stride,
                                                                        float *y, int64_t ys, const int rows) {
    q4x8_tile(group, nb, x, x_stride, y, ys, rows, 1);
}

// Four or more activation rows (prompts, batched decode) take pairs of groups four rows at
// a time: the activation blocks (96 bytes per 32 values) are then read once per 16 weight
// rows instead of once per 8, which was most of what these products moved between L1 and
// L2. C benchmark, one core, 8 rows: 2048 × 5632 58 → 99 GMAC/s, 2816 × 2048 89 → 99.
// The rows and groups left over go through the one-group kernel.
static QUILL_AVX2 void gemv_q4_0x8_rows_avx2(const void *w, int64_t k, const quill_activation_block *x, float *y, int64_t ys,
                                            int64_t r0, int64_t r1, int64_t m) {
    const int64_t nb = k / QUILL_QK, paired_end = m >= 4 ? r0 + (r1 - r0) / 16 * 16 : r0, quads = m / 4 * 4;
    for (int64_t g = r0 / 8; g < paired_end / 8; g += 2)
        for (int64_t i = 0; i < quads; i += 4)
            q4x8_tile((const uint8_t *)w + g * nb * GROUP_BYTES, nb, x + i * nb, nb, y + i * ys + g * 8, ys, 4, 2);
    if (paired_end > r0 && quads < m)  // the rows past the last four, on the paired groups
        QUILL_X8_GROUPS(q4x8_rows, GROUP_BYTES, w, k, x + quads * nb, y + quads * ys, ys, r0, paired_end, m - quads);
    QUILL_X8_GROUPS(q4x8_rows, GROUP_BYTES, w, k, x, y, ys, paired_end, r1, m);  // groups not paired, all rows
}

// Whole groups of eight rows: a 4 × 8 transpose of 4-byte pieces gives each row its 16
// quant bytes back in Q4_0 order, converted as quill_dequantize_q4_0 converts a block.
static QUILL_AVX2 void dequantize_q4_0x8_rows_avx2(const void *w, int64_t k, int64_t row_begin, int64_t row_end, float *dst) {
    const int64_t nb = k / QUILL_QK;
    int64_t row = row_begin;
    for (; row < row_end && (row % 8 != 0 || row + 8 > row_end); row++)  // a partial group first
        dequantize_q4_0x8_rows_scalar(w, k, row, row + 1, dst + (row - row_begin) * k);
    for (; row + 8 <= row_end; row += 8) {
        const int64_t g = row / 8;
        float *out = dst + (row - row_begin) * k;
        for (int64_t b = 0; b < nb; b++) {
            const uint8_t *blk = (const uint8_t *)w + (g * nb + b) * GROUP_BYTES;
            const __m256i c0 = _mm256_loadu_si256((const __m256i *)(const void *)(blk + 16));
            const __m256i c1 = _mm256_loadu_si256((const __m256i *)(const void *)(blk + 48));
            const __m256i c2 = _mm256_loadu_si256((const __m256i *)(const void *)(blk + 80));
            const __m256i c3 = _mm256_loadu_si256((const __m256i *)(const void *)(blk + 112));
            const __m256i t0 = _mm256_unpacklo_epi32(c0, c1), t1 = _mm256_unpackhi_epi32(c0, c1);
            const __m256i t2 = _mm256_unpacklo_epi32(c2, c3), t3 = _mm256_unpackhi_epi32(c2, c3);
            // Rows r (low lane) and r + 4 (high lane) for r = 0 ... 3.
            const __m256i pairs[4] = {_mm256_unpacklo_epi64(t0, t2), _mm256_unpackhi_epi64(t0, t2),
                                      _mm256_unpacklo_epi64(t1, t3), _mm256_unpackhi_epi64(t1, t3)};
            for (int r = 0; r < 8; r++) {
                const __m128i quants = r < 4 ? _mm256_castsi256_si128(pairs[r]) : _mm256_extracti128_si256(pairs[r - 4], 1);
                store_q4_0_block(quants, _mm256_broadcast_ss(&quill_f16_table[quill_read_u16(blk + 2 * r)]), out + r * k + b * QUILL_QK);
            }
        }
    }
    for (; row < row_end; row++) dequantize_q4_0x8_rows_scalar(w, k, row, row + 1, dst + (row - row_begin) * k);
}
#endif

void quill_dequantize_q4_0x8_rows(const void *w, int64_t k, int64_t row_begin, int64_t row_end, float *dst) {
#ifdef QUILL_X86
    if (quill_kernel_level() == 1) { dequantize_q4_0x8_rows_avx2(w, k, row_begin, row_end, dst); return; }
#endif
    dequantize_q4_0x8_rows_scalar(w, k, row_begin, row_end, dst);
}

void quill_gemv_q4_0x8_rows(const void *w, int64_t k, const quill_activation_block *x, float *y, int64_t y_stride,
                            int64_t row_begin, int64_t row_end, int64_t m) {
#ifdef QUILL_X86
    if (quill_kernel_level() == 1) { gemv_q4_0x8_rows_avx2(w, k, x, y, y_stride, row_begin, row_end, m); return; }
#endif
    gemv_q4_0x8_rows_scalar(w, k, x, y, y_stride, row_begin, row_end, m);
}
