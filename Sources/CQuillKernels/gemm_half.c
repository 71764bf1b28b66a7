// GEMM for 16-bit float weights (F16, BF16) on many activation rows (prompts, batched
// decode): y[i * ys + r] = sum_k x[i * k + k'] * w[r][k'] for i < m, r0 <= r < r1.
//
// Why not sgemm: sgemm needs float weights, so these types were converted tile by tile into
// a scratch and sgemm ran per tile. perf of a 1.1B F16 512-token prompt put 15% of the time
// outside sgemm's kernel: the conversion, and OpenBLAS repacking all the activations for
// every 128-row tile. Here a weight panel is converted once, straight into the layout the
// micro-kernel reads, and the activations are packed once per block of 240 rows × 256 columns.
//
// Blocking, for Zen 3 (32 KB L1D, 512 KB L2 per core), as BLIS blocks sgemm:
//  - activation rows go MC at a time; for each KC-column block, those rows are copied into
//    xpack[group of 6][KC][6] (MC × KC floats, 240 KB: stays in L2), so the micro-kernel
//    reads one sequential stream instead of six rows 8 KB apart;
//  - 16 weight rows × KC columns are converted into wpack[KC][16] (16 KB: stays in L1);
//  - the micro-kernel takes 6 activation rows × those 16 weight rows: 12 accumulators, and
//    per column 2 weight loads, 6 activation broadcasts and 12 FMAs (a block's last rows
//    may go 4 at a time instead, see group_rows). It adds its block to the output after the
//    first KC block, prefetching it first;
//  - while it runs, the next panel's weight rows are prefetched.
// Each output is a plain sum over k in order within each KC block, the blocks added in
// order: a row's result does not depend on m or on the rows beside it.
#include "internal.h"

#define PANEL 16
#define KC 256
#define MC 240  // a multiple of the micro-kernel's 6 rows
_Static_assert(MC % 6 == 0, "group_rows pads a last group only when mc < MC");

// Scalar: the same sums in the same blocks, for CPUs without AVX2.
static void gemm_half_scalar(int bf16, const void *w, int64_t rs, const float *x, int64_t k, float *y, int64_t ys,
                             int64_t r0, int64_t r1, int64_t m) {
    for (int64_t i = 0; i < m; i++)
        for (int64_t r = r0; r < r1; r++) {
            const uint16_t *row = (const uint16_t *)((const uint8_t *)w + r * rs);
            float total = 0;
            for (int64_t k0 = 0; k0 < k; k0 += KC) {
                float acc = 0;
                const int64_t k1 = k0 + KC < k ? k0 + KC : k;
                for (int64_t c = k0; c < k1; c++) {
                    const uint16_t h = quill_read_u16(row + c);
                    acc += x[i * k + c] * (bf16 ? quill_bf16_bits_to_f32(h) : quill_f16_table[h]);
                }
                total = k0 == 0 ? acc : total + acc;
            }
            y[i * ys + r] = total;
        }
}

#ifdef QUILL_X86
#include <immintrin.h>

// Eight 16-bit values as floats.
static inline QUILL_AVX2 __m256 load_half8(const uint16_t *p, int bf16) {
    const __m128i h = _mm_loadu_si128((const __m128i *)(const void *)p);
    if (bf16) return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    return _mm256_cvtph_ps(h);
}

// pack[c][j] = float(w[row0 + j][k0 + c]) for c < kc, j < 16; rows past `rows` are zero.
// Full groups of eight rows and eight columns go through an 8×8 transpose in registers.
static QUILL_AVX2 void pack_panel(int bf16, const void *w, int64_t rs, int64_t row0, int64_t rows, int64_t k0,
                                  int64_t kc, float *pack) {
    for (int64_t half = 0; half < PANEL; half += 8) {
        const uint16_t *p[8];
        for (int j = 0; j < 8; j++) p[j] = (const uint16_t *)((const uint8_t *)w + (row0 + half + j) * rs) + k0;
        int64_t c = 0;
        if (half + 8 <= rows) {
            for (; c + 8 <= kc; c += 8) {
                const __m256 v0 = load_half8(p[0] + c, bf16), v1 = load_half8(p[1] + c, bf16);
                const __m256 v2 = load_half8(p[2] + c, bf16), v3 = load_half8(p[3] + c, bf16);
                const __m256 v4 = load_half8(p[4] + c, bf16), v5 = load_half8(p[5] + c, bf16);
                const __m256 v6 = load_half8(p[6] + c, bf16), v7 = load_half8(p[7] + c, bf16);
                const __m256 t0 = _mm256_unpacklo_ps(v0, v1), t1 = _mm256_unpackhi_ps(v0, v1);
                const __m256 t2 = _mm256_unpacklo_ps(v2, v3), t3 = _mm256_unpackhi_ps(v2, v3);
                const __m256 t4 = _mm256_unpacklo_ps(v4, v5), t5 = _mm256_unpackhi_ps(v4, v5);
                const __m256 t6 = _mm256_unpacklo_ps(v6, v7), t7 = _mm256_unpackhi_ps(v6, v7);
                const __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE);
                const __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE);
                const __m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xEE);
                const __m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xEE);
                float *o = pack + c * PANEL + half;
                _mm256_store_ps(o + 0 * PANEL, _mm256_permute2f128_ps(s0, s4, 0x20));
                _mm256_store_ps(o + 1 * PANEL, _mm256_permute2f128_ps(s1, s5, 0x20));
                _mm256_store_ps(o + 2 * PANEL, _mm256_permute2f128_ps(s2, s6, 0x20));
                _mm256_store_ps(o + 3 * PANEL, _mm256_permute2f128_ps(s3, s7, 0x20));
                _mm256_store_ps(o + 4 * PANEL, _mm256_permute2f128_ps(s0, s4, 0x31));
                _mm256_store_ps(o + 5 * PANEL, _mm256_permute2f128_ps(s1, s5, 0x31));
                _mm256_store_ps(o + 6 * PANEL, _mm256_permute2f128_ps(s2, s6, 0x31));
                _mm256_store_ps(o + 7 * PANEL, _mm256_permute2f128_ps(s3, s7, 0x31));
            }
        }
        // The column tail; all columns for a last panel's partial group of rows.
        for (; c < kc; c++)
            for (int j = 0; j < 8; j++) {
                float v = 0;
                if (half + j < rows) {
                    const uint16_t h = quill_read_u16(p[j] + c);
                    v = bf16 ? quill_bf16_bits_to_f32(h) : quill_f16_table[h];
                }
                pack[c * PANEL + half + j] = v;
            }
    }
}

// Every cache line of bytes [p, p + bytes), towards L1.
static inline QUILL_AVX2 void prefetch_row_part(const uint8_t *p, int64_t bytes) {
    for (int64_t b = 0; b < bytes; b += 64) _mm_prefetch((const char *)(p + b), _MM_HINT_T0);
}

// How many rows the group starting at row `start` of an mc-row block holds: six, except at
// the block's end, where 7 or 8 rows left go as 4 + 3 or 4 + 4 (not 6 + 1 or 6 + 2) and up to
// 4 rows as one group of four lanes; so a 128-row prompt runs 20 × 6 + 2 × 4 rows instead of
// 22 × 6. A group of four keeps 8 accumulators, enough to hide the FMA latency on both pipes.
// A last group of 5 or 3 rows is padded to 6 or 4 lanes; that only happens when mc < MC (MC
// is a multiple of 6), so the padding fits in xpack's MC × KC floats.
static inline int64_t group_rows(int64_t mc, int64_t start) {
    const int64_t left = mc - start;
    if (left == 7 || left == 8) return 4;
    return left >= 6 ? 6 : left;
}

// For each group from row i0 + start with n rows, xpack[start * kc + c * g + j] =
// x[(i0 + start + j) * k + k0 + c] with g = 6 or 4 lanes (rows past the block: zero, and
// their outputs are never stored).
static QUILL_AVX2 void pack_activations(const float *x, int64_t k, int64_t i0, int64_t mc, int64_t k0, int64_t kc,
                                        float *xpack) {
    for (int64_t start = 0; start < mc;) {
        const int64_t n = group_rows(mc, start), lanes = n > 4 ? 6 : 4;
        float *o = xpack + start * kc;
        const float *src[6];
        for (int64_t j = 0; j < lanes; j++) src[j] = x + (i0 + start + (j < n ? j : 0)) * k + k0;
        for (int64_t c = 0; c < kc; c++)
            for (int64_t j = 0; j < lanes; j++) o[c * lanes + j] = j < n ? src[j][c] : 0.0f;
        start += n;
    }
}

// LANES (6 or 4, a constant at each call) packed activation rows × 16 packed weight rows over
// kc columns; the first `rows` rows and `cols` columns of the block are stored at y, added to
// what is there unless `first`.
static inline __attribute__((always_inline)) QUILL_AVX2 void
micro_kernel(const int lanes, const float *xp, const float *wp, int64_t kc, float *y, int64_t ys, int64_t rows,
             int64_t cols, int first) {
    if (!first)
        for (int64_t i = 0; i < rows; i++) _mm_prefetch((const char *)(y + i * ys), _MM_HINT_T0);
    __m256 lo[6], hi[6];
    for (int j = 0; j < lanes; j++) lo[j] = hi[j] = _mm256_setzero_ps();
    for (int64_t c = 0; c < kc; c++, xp += lanes, wp += PANEL) {
        const __m256 b0 = _mm256_load_ps(wp), b1 = _mm256_load_ps(wp + 8);
        for (int j = 0; j < lanes; j++) {
            const __m256 a = _mm256_broadcast_ss(xp + j);
            lo[j] = _mm256_fmadd_ps(a, b0, lo[j]);
            hi[j] = _mm256_fmadd_ps(a, b1, hi[j]);
        }
    }
    for (int64_t i = 0; i < rows; i++) {
        float *out = y + i * ys;
        if (cols == PANEL) {
            __m256 l = lo[i], h = hi[i];
            if (!first) {
                l = _mm256_add_ps(_mm256_loadu_ps(out), l);
                h = _mm256_add_ps(_mm256_loadu_ps(out + 8), h);
            }
            _mm256_storeu_ps(out, l);
            _mm256_storeu_ps(out + 8, h);
        } else {
            float t[PANEL];
            _mm256_storeu_ps(t, lo[i]);
            _mm256_storeu_ps(t + 8, hi[i]);
            for (int64_t j = 0; j < cols; j++) out[j] = first ? t[j] : out[j] + t[j];
        }
    }
}

static QUILL_AVX2 void gemm_half_avx2(int bf16, const void *w, int64_t rs, const float *x, int64_t k, float *y,
                                      int64_t ys, int64_t r0, int64_t r1, int64_t m, float *pack) {
    float *wpack = pack, *xpack = pack + PANEL * KC;
    for (int64_t i0 = 0; i0 < m; i0 += MC) {
        const int64_t mc = m - i0 < MC ? m - i0 : MC;
        int64_t groups = 0;
        for (int64_t i = 0; i < mc; i += group_rows(mc, i)) groups++;
        for (int64_t k0 = 0; k0 < k; k0 += KC) {
            const int64_t kc = k - k0 < KC ? k - k0 : KC;
            pack_activations(x, k, i0, mc, k0, kc, xpack);
            for (int64_t row0 = r0; row0 < r1; row0 += PANEL) {
                const int64_t cols = r1 - row0 < PANEL ? r1 - row0 : PANEL;
                pack_panel(bf16, w, rs, row0, cols, k0, kc, wpack);
                // The panel pack_panel converts next: its rows are 16 streams a row stride apart,
                // which the hardware prefetcher does not follow, so the conversion waited on
                // memory (11% of a 128-row product in perf). A share of its rows is prefetched
                // before each micro-kernel call, so all of it is on the way by the last one.
                int64_t next = row0 + PANEL, next_k0 = k0;
                if (next >= r1) next = r0, next_k0 = k0 + KC;
                const int64_t next_end = next_k0 < k ? (next + PANEL < r1 ? next + PANEL : r1) : next;
                const int64_t rows_per_call = (PANEL + groups - 1) / groups;
                for (int64_t i = 0; i < mc;) {
                    for (int64_t e = 0; e < rows_per_call && next < next_end; e++, next++)
                        prefetch_row_part((const uint8_t *)w + next * rs + next_k0 * 2, kc * 2);
                    const int64_t n = group_rows(mc, i);
                    float *out = y + (i0 + i) * ys + row0;
                    if (n > 4) micro_kernel(6, xpack + i * kc, wpack, kc, out, ys, n, cols, k0 == 0);
                    else micro_kernel(4, xpack + i * kc, wpack, kc, out, ys, n, cols, k0 == 0);
                    i += n;
                }
            }
        }
    }
}
#endif

int64_t quill_gemm_half_pack_floats(void) { return (int64_t)(PANEL + MC) * KC; }

void quill_gemm_half(int bf16, const void *w, int64_t rs, const float *x, int64_t k, float *y, int64_t ys,
                     int64_t r0, int64_t r1, int64_t m, float *pack) {
#ifdef QUILL_X86
    if (quill_kernel_level() == 1) {
        gemm_half_avx2(bf16, w, rs, x, k, y, ys, r0, r1, m, pack);
        return;
    }
#endif
    (void)pack;
    (void)quill_kernel_level();  // fills quill_f16_table on first use
    gemm_half_scalar(bf16, w, rs, x, k, y, ys, r0, r1, m);
}
