// AVX2 math shared by the kernel files (x86 only; include after immintrin.h).
#ifndef QUILL_AVX2_MATH_H
#define QUILL_AVX2_MATH_H
#include "internal.h"
#ifdef QUILL_X86
#include <immintrin.h>

// Eight float-matrix elements at p as floats (LOAD_*), and one element (SCALAR_*).
#define LOAD_F32(p) _mm256_loadu_ps((const float *)(const void *)(p))
#define LOAD_F16(p) _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)(p)))
#define LOAD_BF16(p) \
    _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(const void *)(p))), 16))
#define SCALAR_F32(v) (v)
#define SCALAR_F16(v) _cvtsh_ss(v)
#define SCALAR_BF16(v) quill_bf16_bits_to_f32(v)

// The sum of the eight lanes.
static inline QUILL_AVX2 float hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

// 32 int8 values times `scale`, as floats at dst[0 ... 31].
static inline QUILL_AVX2 void store_scaled_bytes(__m256i bytes, __m256 scale, float *dst) {
    const __m128i lo = _mm256_castsi256_si128(bytes), hi = _mm256_extracti128_si256(bytes, 1);
    _mm256_storeu_ps(dst, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(lo)), scale));
    _mm256_storeu_ps(dst + 8, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(lo, 8))), scale));
    _mm256_storeu_ps(dst + 16, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(hi)), scale));
    _mm256_storeu_ps(dst + 24, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(hi, 8))), scale));
}

// One Q4_0 block's 16 quant bytes (element j low nibble, j + 16 high) as 32 floats.
static inline QUILL_AVX2 void store_q4_0_block(__m128i quants, __m256 scale, float *dst) {
    const __m128i mask = _mm_set1_epi8(0x0F), eight = _mm_set1_epi8(8);
    const __m128i lo = _mm_sub_epi8(_mm_and_si128(quants, mask), eight);
    const __m128i hi = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(quants, 4), mask), eight);
    store_scaled_bytes(_mm256_set_m128i(hi, lo), scale, dst);
}

// exp(r) for r in [-ln2/2, ln2/2], after the range reduction: Cephes' degree-5 polynomial.
static inline QUILL_AVX2 __m256 exp256_polynomial(__m256 x) {
    const __m256 z = _mm256_mul_ps(x, x);
    __m256 y = _mm256_set1_ps(1.9875691500e-4f);
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.3981999507e-3f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(8.3334519073e-3f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(4.1665795894e-2f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.6666665459e-1f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(5.0000001201e-1f));
    y = _mm256_fmadd_ps(y, z, _mm256_add_ps(x, _mm256_set1_ps(1.0f)));
    return y;
}

// exp(x) for float lanes: Cephes-style range reduction to [-ln2/2, ln2/2] and a degree-5
// polynomial; about 2 ulp over the range where expf is finite and normal.
static inline QUILL_AVX2 __m256 exp256(__m256 x) {
    x = _mm256_min_ps(x, _mm256_set1_ps(88.3762626647949f));
    x = _mm256_max_ps(x, _mm256_set1_ps(-88.3762626647949f));
    __m256 fx = _mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f), _mm256_set1_ps(0.5f));
    fx = _mm256_floor_ps(fx);
    x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);
    x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), x);
    const __m256 y = exp256_polynomial(x);
    __m256i n = _mm256_add_epi32(_mm256_cvttps_epi32(fx), _mm256_set1_epi32(127));
    n = _mm256_max_epi32(n, _mm256_setzero_si256());
    return _mm256_mul_ps(y, _mm256_castsi256_ps(_mm256_slli_epi32(n, 23)));
}

// exp(x) for lanes x <= 0 (scores minus their maximum): exp256's reduction and polynomial,
// with the rounding to an integer and the power of two taken from the bits of x·log2(e) plus
// 1.5·2^23 instead of a floor and two conversions. Below -87.3 it returns about 1.2e-38
// rather than 0 or a subnormal.
static inline QUILL_AVX2 __m256 exp256_nonpositive(__m256 x) {
    const __m256 magic = _mm256_set1_ps(12582912.0f + 127.0f);  // 1.5·2^23, plus the exponent bias
    x = _mm256_max_ps(x, _mm256_set1_ps(-87.3f));
    const __m256 t = _mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f), magic);
    const __m256 n = _mm256_sub_ps(t, magic);  // round(x·log2(e)), as a float
    x = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    x = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), x);
    const __m256 y = exp256_polynomial(x);
    // t's low mantissa bits hold round(x·log2(e)) + 127: moved into the exponent field, 2^n.
    return _mm256_mul_ps(y, _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_castps_si256(t), 23)));
}

// log(x) for positive, finite, normal float lanes: Cephes-style split into exponent and a
// mantissa in [sqrt(1/2), sqrt(2)), then a degree-8 polynomial; about 1 ulp.
static inline QUILL_AVX2 __m256 log256(__m256 x) {
    const __m256 one = _mm256_set1_ps(1.0f);
    __m256i bits = _mm256_castps_si256(x);
    __m256 e = _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_srli_epi32(bits, 23), _mm256_set1_epi32(126)));
    __m256 m = _mm256_castsi256_ps(_mm256_or_si256(_mm256_and_si256(bits, _mm256_set1_epi32(0x007FFFFF)),
                                                   _mm256_set1_epi32(0x3F000000)));  // [0.5, 1)
    const __m256 small = _mm256_cmp_ps(m, _mm256_set1_ps(0.707106781186547524f), _CMP_LT_OQ);
    e = _mm256_sub_ps(e, _mm256_and_ps(one, small));
    m = _mm256_sub_ps(_mm256_add_ps(m, _mm256_and_ps(m, small)), one);
    const __m256 z = _mm256_mul_ps(m, m);
    __m256 y = _mm256_set1_ps(7.0376836292e-2f);
    y = _mm256_fmadd_ps(y, m, _mm256_set1_ps(-1.1514610310e-1f));
    y = _mm256_fmadd_ps(y, m, _mm256_set1_ps(1.1676998740e-1f));
    y = _mm256_fmadd_ps(y, m, _mm256_set1_ps(-1.2420140846e-1f));
    y = _mm256_fmadd_ps(y, m, _mm256_set1_ps(1.4249322787e-1f));
    y = _mm256_fmadd_ps(y, m, _mm256_set1_ps(-1.6668057665e-1f));
    y = _mm256_fmadd_ps(y, m, _mm256_set1_ps(2.0000714765e-1f));
    y = _mm256_fmadd_ps(y, m, _mm256_set1_ps(-2.4999993993e-1f));
    y = _mm256_fmadd_ps(y, m, _mm256_set1_ps(3.3333331174e-1f));
    y = _mm256_mul_ps(_mm256_mul_ps(y, m), z);
    y = _mm256_fmadd_ps(e, _mm256_set1_ps(-2.12194440e-4f), y);
    y = _mm256_fnmadd_ps(z, _mm256_set1_ps(0.5f), y);
    return _mm256_fmadd_ps(e, _mm256_set1_ps(0.693359375f), _mm256_add_ps(m, y));
}

// torch's softplus (threshold 20): x above 20, else log1p(exp(x)). log1p(w) is computed as
// log(1 + w) · w / ((1 + w) − 1), which keeps its relative accuracy when w is tiny (and is
// w itself when 1 + w rounds to 1).
static inline QUILL_AVX2 __m256 softplus256(__m256 x) {
    const __m256 one = _mm256_set1_ps(1.0f);
    const __m256 w = exp256(_mm256_min_ps(x, _mm256_set1_ps(20.0f)));
    const __m256 u = _mm256_add_ps(one, w), d = _mm256_sub_ps(u, one);
    const __m256 exact = _mm256_cmp_ps(d, _mm256_setzero_ps(), _CMP_EQ_OQ);
    const __m256 ratio = _mm256_blendv_ps(_mm256_div_ps(w, d), one, exact);
    const __m256 log1p = _mm256_blendv_ps(_mm256_mul_ps(log256(u), ratio), w, exact);
    // x itself above the threshold, and for NaN (which the clamps above would make finite).
    const __m256 passthrough = _mm256_or_ps(_mm256_cmp_ps(x, _mm256_set1_ps(20.0f), _CMP_GT_OQ), _mm256_cmp_ps(x, x, _CMP_UNORD_Q));
    return _mm256_blendv_ps(log1p, x, passthrough);
}

// x · sigmoid(x).
static inline QUILL_AVX2 __m256 silu256(__m256 x) {
    return _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0f), exp256(_mm256_sub_ps(_mm256_setzero_ps(), x))));
}
#endif
#endif
