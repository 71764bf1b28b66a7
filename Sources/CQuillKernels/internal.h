// Declarations shared by the scalar and AVX2 translation units.
#ifndef QUILL_INTERNAL_H
#define QUILL_INTERNAL_H
#include "QuillKernels.h"
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#define QUILL_X86 1
#define QUILL_AVX2 __attribute__((target("avx2,fma,f16c")))
#endif

static inline float quill_bf16_bits_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline uint16_t quill_read_u16(const void *p) {
    uint16_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

/// fp16 bits -> float for every half value: the quantized kernels broadcast a block scale
/// straight from here (a load, where the F16C route costs three shuffles).
extern float quill_f16_table[65536];

// Scalar implementations: the portable fallback and the reference the tests check against.
void quill_gemv_f32_scalar(const void *, int64_t, const float *, int64_t, float *, int64_t, int64_t);
void quill_gemv_f16_scalar(const void *, int64_t, const float *, int64_t, float *, int64_t, int64_t);
void quill_gemv_bf16_scalar(const void *, int64_t, const float *, int64_t, float *, int64_t, int64_t);
void quill_gemv_q8_0_scalar(const void *, int64_t, const quill_activation_block *, int64_t, float *, int64_t, int64_t);
void quill_gemv_q4_0_scalar(const void *, int64_t, const quill_activation_pair *, int64_t, float *, int64_t, int64_t);
void quill_gemv_q8_0_rows_scalar(const void *, int64_t, const quill_activation_block *, int64_t, float *, int64_t, int64_t, int64_t, int64_t);
void quill_gemv_q4_0_rows_scalar(const void *, int64_t, const quill_activation_pair *, int64_t, float *, int64_t, int64_t, int64_t, int64_t);
void quill_dequantize_q8_0_scalar(const void *, float *, int64_t);
void quill_dequantize_q4_0_scalar(const void *, float *, int64_t);
void quill_bf16_to_f32_scalar(const uint16_t *, float *, int64_t);
void quill_rmsnorm_scalar(const float *, const float *, float *, int64_t, float);
void quill_silu_scalar(const float *, float *, int64_t);
void quill_swiglu_scalar(const float *, const float *, float *, int64_t);
void quill_softmax_scalar(float *, int64_t);
float quill_dot_f32_scalar(const float *, const float *, int64_t);
void quill_quantize_activation_scalar(const float *, int64_t, quill_activation_block *);

// MARK: Eight rows interleaved per block (q4x8.c, q8x8.c)

/// Repacks row-major blocks of `block_bytes` (an F16 scale, then the quants) so that group g
/// of rows 8g ... 8g + 7, block b, holds the eight scales and then chunk c of 32 bytes with
/// quant bytes 4c ... 4c + 3 of each row, row r at 4r.
static inline void quill_repack_x8(const void *src, int64_t rows, int64_t k, int64_t block_bytes, void *dst) {
    const int64_t nb = k / QUILL_QK, chunks = (block_bytes - 2) / 4, group_bytes = 8 * block_bytes;
    const uint8_t *in = (const uint8_t *)src;
    uint8_t *out = (uint8_t *)dst;
    for (int64_t g = 0; g < rows / 8; g++)
        for (int64_t b = 0; b < nb; b++) {
            uint8_t *o = out + (g * nb + b) * group_bytes;
            for (int64_t r = 0; r < 8; r++) {
                const uint8_t *block = in + ((g * 8 + r) * nb + b) * block_bytes;
                memcpy(o + 2 * r, block, 2);
                for (int64_t c = 0; c < chunks; c++) memcpy(o + 16 + 32 * c + 4 * r, block + 2 + 4 * c, 4);
            }
        }
}

/// Runs KERNEL(group, nb, x, x_stride, y, y_stride, rows) over every group of eight weight
/// rows in [r0, r1) for m activation rows: four at a time, then the remainder, so that each
/// call's row count is a constant the kernel's loops unroll by.
#define QUILL_X8_GROUPS(KERNEL, GROUP_BYTES, w, k, x, y, ys, r0, r1, m)                                  \
    do {                                                                                               \
        const int64_t nb_ = (k) / QUILL_QK;                                                            \
        for (int64_t g_ = (r0) / 8; g_ < (r1) / 8; g_++) {                                             \
            const uint8_t *group_ = (const uint8_t *)(w) + g_ * nb_ * (GROUP_BYTES);                   \
            int64_t i_ = 0;                                                                            \
            for (; i_ + 4 <= (m); i_ += 4) KERNEL(group_, nb_, (x) + i_ * nb_, nb_, (y) + i_ * (ys) + g_ * 8, ys, 4); \
            switch ((m) - i_) {                                                                        \
            case 3: KERNEL(group_, nb_, (x) + i_ * nb_, nb_, (y) + i_ * (ys) + g_ * 8, ys, 3); break;   \
            case 2: KERNEL(group_, nb_, (x) + i_ * nb_, nb_, (y) + i_ * (ys) + g_ * 8, ys, 2); break;   \
            case 1: KERNEL(group_, nb_, (x) + i_ * nb_, nb_, (y) + i_ * (ys) + g_ * 8, ys, 1); break;   \
            default: break;                                                                            \
            }                                                                                          \
        }                                                                                              \
    } while (0)

#ifdef QUILL_X86
void quill_f16_to_f32_avx2(const uint16_t *, float *, int64_t);
void quill_f32_to_f16_avx2(const float *, uint16_t *, int64_t n, int64_t stride);
void quill_gemv_f32_avx2(const void *, int64_t, const float *, int64_t, float *, int64_t, int64_t);
void quill_gemv_f16_avx2(const void *, int64_t, const float *, int64_t, float *, int64_t, int64_t);
void quill_gemv_bf16_avx2(const void *, int64_t, const float *, int64_t, float *, int64_t, int64_t);
void quill_gemv_f32_rows_avx2(const void *, int64_t, const float *, int64_t, float *, int64_t, int64_t, int64_t, int64_t);
void quill_gemv_f16_rows_avx2(const void *, int64_t, const float *, int64_t, float *, int64_t, int64_t, int64_t, int64_t);
void quill_gemv_bf16_rows_avx2(const void *, int64_t, const float *, int64_t, float *, int64_t, int64_t, int64_t, int64_t);
void quill_gemv_q8_0_avx2(const void *, int64_t, const quill_activation_block *, int64_t, float *, int64_t, int64_t);
void quill_gemv_q4_0_avx2(const void *, int64_t, const quill_activation_pair *, int64_t, float *, int64_t, int64_t);
void quill_gemv_q8_0_rows_avx2(const void *, int64_t, const quill_activation_block *, int64_t, float *, int64_t, int64_t, int64_t, int64_t);
void quill_gemv_q4_0_rows_avx2(const void *, int64_t, const quill_activation_pair *, int64_t, float *, int64_t, int64_t, int64_t, int64_t);
void quill_dequantize_q8_0_avx2(const void *, float *, int64_t);
void quill_dequantize_q4_0_avx2(const void *, float *, int64_t);
void quill_bf16_to_f32_avx2(const uint16_t *, float *, int64_t);
void quill_rmsnorm_avx2(const float *, const float *, float *, int64_t, float);
void quill_silu_avx2(const float *, float *, int64_t);
void quill_swiglu_avx2(const float *, const float *, float *, int64_t);
void quill_softmax_avx2(float *, int64_t);
float quill_dot_f32_avx2(const float *, const float *, int64_t);
void quill_quantize_activation_avx2(const float *, int64_t, quill_activation_block *);
#endif
#endif
