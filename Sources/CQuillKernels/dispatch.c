// Chooses, once, between the AVX2 and the scalar kernels, and routes every public entry
// point accordingly.
#include "internal.h"
#include <pthread.h>
#include <stdatomic.h>

float quill_f16_table[65536];
static pthread_once_t table_once = PTHREAD_ONCE_INIT;
static void fill_f16_table(void) {
    for (uint32_t h = 0; h < 65536; h++) quill_f16_table[h] = quill_f16_to_f32_scalar((uint16_t)h);
}

static atomic_int current_level = -1;
// A per-thread override (-1: none), so a test can pin one path without affecting others.
static _Thread_local int thread_level = -1;

int quill_kernel_best_level(void) {
#ifdef QUILL_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
        __builtin_cpu_supports("f16c")) {
        return 1;
    }
#endif
    return 0;
}

int quill_kernel_level(void) {
    pthread_once(&table_once, fill_f16_table);
    if (thread_level >= 0) return thread_level;
    int level = atomic_load_explicit(&current_level, memory_order_relaxed);
    if (level < 0) {
        level = quill_kernel_best_level();
        atomic_store_explicit(&current_level, level, memory_order_relaxed);
    }
    return level;
}

void quill_set_kernel_level(int level) {
    int best = quill_kernel_best_level();
    if (level > best) level = best;
    if (level < 0) level = 0;
    atomic_store_explicit(&current_level, level, memory_order_relaxed);
}

void quill_set_thread_kernel_level(int level) {
    if (level < 0) { thread_level = -1; return; }
    int best = quill_kernel_best_level();
    thread_level = level > best ? best : level;
}

#ifdef QUILL_X86
#define DISPATCH(name, ...)                                   \
    do {                                                      \
        if (quill_kernel_level() == 1) name##_avx2(__VA_ARGS__); \
        else name##_scalar(__VA_ARGS__);                      \
    } while (0)
#define DISPATCH_RETURN(name, ...) \
    return quill_kernel_level() == 1 ? name##_avx2(__VA_ARGS__) : name##_scalar(__VA_ARGS__)
#else
#define DISPATCH(name, ...) name##_scalar(__VA_ARGS__)
#define DISPATCH_RETURN(name, ...) return name##_scalar(__VA_ARGS__)
#endif

void quill_gemv_f32(const void *w, int64_t rs, const float *x, int64_t k, float *y,
                    int64_t r0, int64_t r1) {
    DISPATCH(quill_gemv_f32, w, rs, x, k, y, r0, r1);
}
void quill_gemv_f16(const void *w, int64_t rs, const float *x, int64_t k, float *y,
                    int64_t r0, int64_t r1) {
    DISPATCH(quill_gemv_f16, w, rs, x, k, y, r0, r1);
}
void quill_gemv_bf16(const void *w, int64_t rs, const float *x, int64_t k, float *y,
                     int64_t r0, int64_t r1) {
    DISPATCH(quill_gemv_bf16, w, rs, x, k, y, r0, r1);
}

// m activation rows; the scalar path is the single-row kernel once per row.
#ifdef QUILL_X86
#define FLOAT_ROWS_AVX2(NAME, ...) if (quill_kernel_level() == 1) { NAME##_avx2(__VA_ARGS__); return; }
#else
#define FLOAT_ROWS_AVX2(NAME, ...)
#endif
#define FLOAT_ROWS_DISPATCH(NAME, SINGLE)                                                               \
    void NAME(const void *w, int64_t rs, const float *x, int64_t k, float *y, int64_t ys, int64_t r0,    \
              int64_t r1, int64_t m) {                                                                  \
        FLOAT_ROWS_AVX2(NAME, w, rs, x, k, y, ys, r0, r1, m)                                            \
        for (int64_t j = 0; j < m; j++) SINGLE##_scalar(w, rs, x + j * k, k, y + j * ys, r0, r1);      \
    }
FLOAT_ROWS_DISPATCH(quill_gemv_f32_rows, quill_gemv_f32)
FLOAT_ROWS_DISPATCH(quill_gemv_f16_rows, quill_gemv_f16)
FLOAT_ROWS_DISPATCH(quill_gemv_bf16_rows, quill_gemv_bf16)
void quill_gemv_q8_0(const void *w, int64_t rs, const quill_activation_block *x, int64_t k, float *y,
                     int64_t r0, int64_t r1) {
    DISPATCH(quill_gemv_q8_0, w, rs, x, k, y, r0, r1);
}
void quill_gemv_q4_0(const void *w, int64_t rs, const quill_activation_pair *x, int64_t k, float *y,
                     int64_t r0, int64_t r1) {
    DISPATCH(quill_gemv_q4_0, w, rs, x, k, y, r0, r1);
}
void quill_gemv_q8_0_rows(const void *w, int64_t rs, const quill_activation_block *x, int64_t k, float *y, int64_t ys,
                          int64_t r0, int64_t r1, int64_t m) {
    DISPATCH(quill_gemv_q8_0_rows, w, rs, x, k, y, ys, r0, r1, m);
}
void quill_gemv_q4_0_rows(const void *w, int64_t rs, const quill_activation_pair *x, int64_t k, float *y, int64_t ys,
                          int64_t r0, int64_t r1, int64_t m) {
    DISPATCH(quill_gemv_q4_0_rows, w, rs, x, k, y, ys, r0, r1, m);
}
void quill_quantize_activation(const float *x, int64_t k, quill_activation_block *out) {
    DISPATCH(quill_quantize_activation, x, k, out);
}
void quill_dequantize_q8_0(const void *src, float *dst, int64_t n) { DISPATCH(quill_dequantize_q8_0, src, dst, n); }
void quill_dequantize_q4_0(const void *src, float *dst, int64_t n) { DISPATCH(quill_dequantize_q4_0, src, dst, n); }
void quill_bf16_to_f32(const uint16_t *src, float *dst, int64_t n) { DISPATCH(quill_bf16_to_f32, src, dst, n); }
void quill_rmsnorm(const float *x, const float *w, float *y, int64_t n, float eps) {
    DISPATCH(quill_rmsnorm, x, w, y, n, eps);
}
void quill_silu(const float *x, float *y, int64_t n) { DISPATCH(quill_silu, x, y, n); }
void quill_swiglu(const float *g, const float *u, float *y, int64_t n) {
    DISPATCH(quill_swiglu, g, u, y, n);
}
void quill_softmax(float *x, int64_t n) { DISPATCH(quill_softmax, x, n); }
float quill_dot_f32(const float *a, const float *b, int64_t n) {
    DISPATCH_RETURN(quill_dot_f32, a, b, n);
}
