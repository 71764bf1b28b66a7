#include "BenchSupport.h"
#if defined(__x86_64__)
#include <immintrin.h>
__attribute__((target("avx2"))) static float sum_avx2(const float *x, int64_t n) {
    __m256 a = _mm256_setzero_ps(), b = a, c = a, d = a;
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        a = _mm256_add_ps(a, _mm256_loadu_ps(x + i));
        b = _mm256_add_ps(b, _mm256_loadu_ps(x + i + 8));
        c = _mm256_add_ps(c, _mm256_loadu_ps(x + i + 16));
        d = _mm256_add_ps(d, _mm256_loadu_ps(x + i + 24));
    }
    float out[8];
    _mm256_storeu_ps(out, _mm256_add_ps(_mm256_add_ps(a, b), _mm256_add_ps(c, d)));
    float s = 0;
    for (int j = 0; j < 8; j++) s += out[j];
    for (; i < n; i++) s += x[i];
    return s;
}
#endif
#if defined(__x86_64__)
__attribute__((target("avx2"))) static float sum4_avx2(const float *x, int64_t part) {
    const float *p0 = x, *p1 = x + part, *p2 = x + 2 * part, *p3 = x + 3 * part;
    __m256 a = _mm256_setzero_ps(), b = a, c = a, d = a;
    int64_t i = 0;
    for (; i + 16 <= part; i += 16) {
        a = _mm256_add_ps(a, _mm256_add_ps(_mm256_loadu_ps(p0 + i), _mm256_loadu_ps(p0 + i + 8)));
        b = _mm256_add_ps(b, _mm256_add_ps(_mm256_loadu_ps(p1 + i), _mm256_loadu_ps(p1 + i + 8)));
        c = _mm256_add_ps(c, _mm256_add_ps(_mm256_loadu_ps(p2 + i), _mm256_loadu_ps(p2 + i + 8)));
        d = _mm256_add_ps(d, _mm256_add_ps(_mm256_loadu_ps(p3 + i), _mm256_loadu_ps(p3 + i + 8)));
    }
    float out[8];
    _mm256_storeu_ps(out, _mm256_add_ps(_mm256_add_ps(a, b), _mm256_add_ps(c, d)));
    float s = 0;
    for (int j = 0; j < 8; j++) s += out[j];
    return s;
}
#endif

float bench_stream_sum_interleaved(const float *x, int64_t n, int streams) {
#if defined(__x86_64__)
    if (streams == 4 && __builtin_cpu_supports("avx2")) return sum4_avx2(x, n / 4);
#endif
    (void)streams;
    return bench_stream_sum(x, n);
}

float bench_stream_sum(const float *x, int64_t n) {
#if defined(__x86_64__)
    if (__builtin_cpu_supports("avx2")) return sum_avx2(x, n);
#endif
    float s = 0;
    for (int64_t i = 0; i < n; i++) s += x[i];
    return s;
}
