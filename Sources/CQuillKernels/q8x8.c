// Q8_0 weights with eight rows interleaved per block, as Q4_0x8 interleaves Q4_0 (q4x8.c).
// Group g of rows 8g ... 8g + 7, block b of their 32-column blocks, is 272 bytes at
// (g * blocks + b) * 272:
//   uint16 d[8]      the eight rows' F16 scales
//   int8 qs[8][32]   chunk c holds quants 4c ... 4c + 3 of each row, row r at 4r
// One 32-byte load then feeds one maddubs for all eight rows against four activation bytes
// broadcast to every row, so a block's eight row sums land one per lane: no horizontal
// sums and one scale conversion per eight rows. maddubs needs one unsigned operand, so
// the weights enter as |w| and the activations take w's sign, as the row kernel does.
#include "internal.h"

#define GROUP_BYTES (8 * QUILL_Q8_0_BLOCK_BYTES)

void quill_repack_q8_0x8(const void *src, int64_t rows, int64_t k, void *dst) {
    quill_repack_x8(src, rows, k, QUILL_Q8_0_BLOCK_BYTES, dst);
}

// Embedding lookups and tests read rows this way; the kernels never do, so it stays scalar.
void quill_dequantize_q8_0x8_rows(const void *w, int64_t k, int64_t row_begin, int64_t row_end, float *dst) {
    (void)quill_kernel_level();  // fills quill_f16_table on first use
    const int64_t nb = k / QUILL_QK;
    for (int64_t row = row_begin; row < row_end; row++, dst += k) {
        const int64_t g = row / 8, r = row % 8;
        for (int64_t b = 0; b < nb; b++) {
            const uint8_t *blk = (const uint8_t *)w + (g * nb + b) * GROUP_BYTES;
            const float d = quill_f16_table[quill_read_u16(blk + 2 * r)];
            for (int c = 0; c < 8; c++)
                for (int j = 0; j < 4; j++) dst[b * QUILL_QK + 4 * c + j] = (float)(int8_t)blk[16 + 32 * c + 4 * r + j] * d;
        }
    }
}

// The portable path: each row's integer block sums, then the two scales, as the vector kernel.
static void gemv_q8_0x8_rows_scalar(const void *w, int64_t k, const quill_activation_block *x, float *y, int64_t ys,
                                    int64_t r0, int64_t r1, int64_t m) {
    const int64_t nb = k / QUILL_QK;
    for (int64_t i = 0; i < m; i++)
        for (int64_t row = r0; row < r1; row++) {
            const int64_t g = row / 8, r = row % 8;
            float acc = 0;
            for (int64_t b = 0; b < nb; b++) {
                const uint8_t *blk = (const uint8_t *)w + (g * nb + b) * GROUP_BYTES;
                const quill_activation_block *a = x + i * nb + b;
                int32_t sum = 0;
                for (int c = 0; c < 8; c++)
                    for (int j = 0; j < 4; j++) sum += (int8_t)blk[16 + 32 * c + 4 * r + j] * a->q[4 * c + j];
                acc += (float)sum * (quill_f16_table[quill_read_u16(blk + 2 * r)] * a->d[0]);
            }
            y[i * ys + row] = acc;
        }
}

#ifdef QUILL_X86
#include <immintrin.h>

// Every cache line of a block, this far ahead (see q4x8.c: the kernel's own loads leave too
// few misses in flight to stream a matrix at the DRAM's rate; 4 KB measured best there).
#define Q8X8_PREFETCH_BYTES 4096

// `rows` (1 to 4, a constant after inlining) activation rows against one group of eight
// weight rows, each chunk's |w| formed once for all of them. An activation row's operations
// do not depend on how many rows share the call, so batched results equal single-row ones.
static inline __attribute__((always_inline)) QUILL_AVX2 void q8x8_rows(const uint8_t *group, int64_t nb,
                                                                        const quill_activation_block *x, int64_t x_stride,
                                                                        float *y, int64_t ys, const int rows) {
    const __m256i ones = _mm256_set1_epi16(1);
    __m256 acc[4];
    for (int i = 0; i < rows; i++) acc[i] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *blk = group + b * GROUP_BYTES;
        for (int line = 0; line < 5; line++) _mm_prefetch((const char *)blk + Q8X8_PREFETCH_BYTES + 64 * line, _MM_HINT_T0);
        __m256i sums[4];
        for (int i = 0; i < rows; i++) sums[i] = _mm256_setzero_si256();
        // Unrolled: one 8-row Q8_0x8 product ran 58.6-58.9 → 61.7-62.0 GMAC/s on one core (C
        // benchmark, 8 activation rows, 2816 × 2048); clang leaves this loop rolled otherwise.
        _Pragma("clang loop unroll(full)")
        for (int c = 0; c < 8; c++) {
            const __m256i w = _mm256_loadu_si256((const __m256i *)(const void *)(blk + 16 + 32 * c));
            const __m256i magnitude = _mm256_sign_epi8(w, w);
            for (int i = 0; i < rows; i++) {
                int32_t bytes;
                memcpy(&bytes, x[i * x_stride + b].q + 4 * c, 4);
                // Two products of at most 128 × 127 per int16 lane stay below 2^15.
                const __m256i products = _mm256_maddubs_epi16(magnitude, _mm256_sign_epi8(_mm256_set1_epi32(bytes), w));
                sums[i] = _mm256_add_epi32(sums[i], _mm256_madd_epi16(products, ones));
            }
        }
        const __m256 scales = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)blk));
        for (int i = 0; i < rows; i++)
            acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums[i]), _mm256_mul_ps(scales, _mm256_broadcast_ss(x[i * x_stride + b].d)), acc[i]);
    }
    for (int i = 0; i < rows; i++) _mm256_storeu_ps(y + i * ys, acc[i]);
}

static QUILL_AVX2 void gemv_q8_0x8_rows_avx2(const void *w, int64_t k, const quill_activation_block *x, float *y, int64_t ys,
                                            int64_t r0, int64_t r1, int64_t m) {
    QUILL_X8_GROUPS(q8x8_rows, GROUP_BYTES, w, k, x, y, ys, r0, r1, m);
}
#endif

void quill_gemv_q8_0x8_rows(const void *w, int64_t k, const quill_activation_block *x, float *y, int64_t y_stride,
                            int64_t row_begin, int64_t row_end, int64_t m) {
#ifdef QUILL_X86
    if (quill_kernel_level() == 1) { gemv_q8_0x8_rows_avx2(w, k, x, y, y_stride, row_begin, row_end, m); return; }
#endif
    gemv_q8_0x8_rows_scalar(w, k, x, y, y_stride, row_begin, row_end, m);
}
