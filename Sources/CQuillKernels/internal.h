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
