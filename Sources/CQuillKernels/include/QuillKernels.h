// Quill's hot kernels. Every entry point is dispatched once, at run time, between an
// AVX2/FMA/F16C implementation (compiled with a per-function target attribute, so the
// package needs no unsafe compiler flags) and a portable scalar one. The Swift layer
// (TensorCore) validates all shapes and buffer sizes before calling in here: these
// functions trust their arguments.
#ifndef QUILL_KERNELS_H
#define QUILL_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// MARK: - Dispatch

/// 0 = portable scalar code, 1 = AVX2 + FMA + F16C.
int quill_kernel_level(void);
/// The best level this CPU supports.
int quill_kernel_best_level(void);
/// Forces a level (clamped to what the CPU supports); tests use it to check both paths.
void quill_set_kernel_level(int level);
/// Overrides the level for the calling thread only (-1 removes the override).
void quill_set_thread_kernel_level(int level);

// MARK: - GGML block layouts (byte-identical to ggml's block_q8_0 / block_q4_0)

#define QUILL_QK 32
#define QUILL_Q8_0_BLOCK_BYTES 34
#define QUILL_Q4_0_BLOCK_BYTES 18

// MARK: - Conversions (n elements)

void quill_f16_to_f32(const uint16_t *src, float *dst, int64_t n);
void quill_f32_to_f16(const float *src, uint16_t *dst, int64_t n);
/// dst[i * stride] = half(src[i]): the transposed key rows of the KV cache.
void quill_f32_to_f16_strided(const float *src, uint16_t *dst, int64_t n, int64_t stride);
void quill_bf16_to_f32(const uint16_t *src, float *dst, int64_t n);
void quill_f32_to_bf16(const float *src, uint16_t *dst, int64_t n);
float quill_f16_to_f32_scalar(uint16_t h);
uint16_t quill_f32_to_f16_scalar(float f);

/// GGML's reference quantizers (n % 32 == 0); dst receives n/32 blocks.
void quill_quantize_q8_0(const float *src, void *dst, int64_t n);
void quill_quantize_q4_0(const float *src, void *dst, int64_t n);
void quill_dequantize_q8_0(const void *src, float *dst, int64_t n);
void quill_dequantize_q4_0(const void *src, float *dst, int64_t n);

/// One block of 32 activations quantized for dotting against Q8_0/Q4_0 weights. The scale
/// and offset are stored as full vectors so the AVX2 kernels read them as plain loads:
/// on Zen 3 these kernels are bound by vector pipes, not by loads.
typedef struct quill_activation_block {
    int8_t q[32];        ///< round-to-nearest-even of x / d
    float d[8];          ///< the block scale max|x| / 127, repeated 8 times
    int32_t offset[8];   ///< { -8 * sum(q), 0, ... }: removes Q4_0's +8 nibble offset
} quill_activation_block;

/// Quantizes an activation row (k % 32 == 0) into k/32 blocks.
void quill_quantize_activation(const float *x, int64_t k, quill_activation_block *out);

/// Two consecutive activation blocks a and b laid out for Q4_0 weights, whose nibbles the
/// kernel splits as [a low nibbles | b low nibbles] and [a high | b high]: elements 0..15
/// of a block pair with its low nibbles, 16..31 with its high ones.
typedef struct quill_activation_pair {
    int8_t low[32];      ///< a[0..15], b[0..15]
    int8_t high[32];     ///< a[16..31], b[16..31]
    float d[8];          ///< a's scale ×4, b's scale ×4
    int32_t offset[8];   ///< { -8·sum(a), 0, 0, 0, -8·sum(b), 0, 0, 0 }
} quill_activation_pair;

/// Quantizes an activation row (k % 32 == 0) into (k/32 + 1)/2 pairs; with an odd block
/// count the last pair's second block is zero.
void quill_quantize_activation_pairs(const float *x, int64_t k, quill_activation_pair *out);

// MARK: - Matrix x vector: y[r] = dot(W[r, 0..<k], x) for r in [row_begin, row_end)
// row_stride is in bytes: rows of a weight matrix are contiguous in GGML/PyTorch layout.

void quill_gemv_f32(const void *w, int64_t row_stride, const float *x, int64_t k,
                    float *y, int64_t row_begin, int64_t row_end);
void quill_gemv_f16(const void *w, int64_t row_stride, const float *x, int64_t k,
                    float *y, int64_t row_begin, int64_t row_end);
void quill_gemv_bf16(const void *w, int64_t row_stride, const float *x, int64_t k,
                     float *y, int64_t row_begin, int64_t row_end);
/// m activation rows at once (x: m rows of k floats; y: row i at y + i·y_stride), two rows
/// sharing each weight load; bit-identical to the single-row kernel per row.
void quill_gemv_f32_rows(const void *w, int64_t row_stride, const float *x, int64_t k, float *y, int64_t y_stride,
                         int64_t row_begin, int64_t row_end, int64_t m);
void quill_gemv_f16_rows(const void *w, int64_t row_stride, const float *x, int64_t k, float *y, int64_t y_stride,
                         int64_t row_begin, int64_t row_end, int64_t m);
void quill_gemv_bf16_rows(const void *w, int64_t row_stride, const float *x, int64_t k, float *y, int64_t y_stride,
                          int64_t row_begin, int64_t row_end, int64_t m);
/// Quantized weights dotted against an activation quantized by quill_quantize_activation.
void quill_gemv_q8_0(const void *w, int64_t row_stride, const quill_activation_block *x, int64_t k,
                     float *y, int64_t row_begin, int64_t row_end);
void quill_gemv_q4_0(const void *w, int64_t row_stride, const quill_activation_pair *x, int64_t k,
                     float *y, int64_t row_begin, int64_t row_end);
/// m activation rows at once (x: m rows of k/32 blocks; y: row i at y + i·y_stride), each
/// weight block read once for up to four rows; bit-identical to quill_gemv_q8_0 per row.
void quill_gemv_q8_0_rows(const void *w, int64_t row_stride, const quill_activation_block *x, int64_t k,
                          float *y, int64_t y_stride, int64_t row_begin, int64_t row_end, int64_t m);
/// Q4_0 with eight rows interleaved per block (see q4x8.c): rows must be a multiple of 8.
/// Repacks row-major Q4_0 rows (k/32 blocks of 18 bytes each) into dst (the same size).
void quill_repack_q4_0x8(const void *src, int64_t rows, int64_t k, void *dst);
/// Rows [row_begin, row_end) of an interleaved Q4_0 matrix as floats (k per row).
void quill_dequantize_q4_0x8_rows(const void *w, int64_t k, int64_t row_begin, int64_t row_end, float *dst);
/// y[i * y_stride + r] = dot(W[r], activation row i) for r in [row_begin, row_end) (multiples
/// of 8) and i < m, with activation row i at x + i * (k/32) (quill_quantize_activation).
/// Each row's result is the same whatever m is.
void quill_gemv_q4_0x8_rows(const void *w, int64_t k, const quill_activation_block *x, float *y, int64_t y_stride,
                            int64_t row_begin, int64_t row_end, int64_t m);
/// Q8_0 with eight rows interleaved per block (see q8x8.c), as Q4_0x8 above: the same
/// repacking (34-byte blocks), row dequantization and kernel contract.
void quill_repack_q8_0x8(const void *src, int64_t rows, int64_t k, void *dst);
void quill_dequantize_q8_0x8_rows(const void *w, int64_t k, int64_t row_begin, int64_t row_end, float *dst);
void quill_gemv_q8_0x8_rows(const void *w, int64_t k, const quill_activation_block *x, float *y, int64_t y_stride,
                            int64_t row_begin, int64_t row_end, int64_t m);
/// m activation rows at once (x: m rows of (k/32 + 1)/2 pairs; y: row i at y + i·y_stride),
/// each weight block unpacked once for up to four rows. Every result is bit-identical to
/// quill_gemv_q4_0 on that activation row alone.
void quill_gemv_q4_0_rows(const void *w, int64_t row_stride, const quill_activation_pair *x, int64_t k,
                          float *y, int64_t y_stride, int64_t row_begin, int64_t row_end, int64_t m);

/// ggml's K-quants, dequantized (n % 256 == 0): Q4_K (144-byte blocks of 256: fp16 d and
/// dmin, 12 bytes of packed 6-bit scales and mins, 128 bytes of nibbles) and Q6_K (210-byte
/// blocks: 128 bytes of low nibbles, 64 of high 2-bit pairs, 16 int8 scales, fp16 d).
void quill_dequantize_q4_K(const void *src, float *dst, int64_t n);
void quill_dequantize_q6_K(const void *src, float *dst, int64_t n);

/// Dequantizes rows [row_begin, row_end) of a weight matrix of any supported type into
/// dst (row-major, k floats per row). type: 0 f32, 1 f16, 2 bf16, 3 q8_0, 4 q4_0, 5 q4_0x8,
/// 6 q8_0x8 (row_stride unused for the interleaved types).
void quill_dequantize_rows(int type, const void *w, int64_t row_stride, int64_t k,
                           int64_t row_begin, int64_t row_end, float *dst);

/// y[i * y_stride + r] = sum over c of x[i * k + c] * w[r][c] for activation rows i < m and
/// weight rows row_begin <= r < row_end of a 16-bit float matrix (bf16 != 0: BF16, else F16;
/// row_stride in bytes): the GEMM path for these types. `pack` is scratch of
/// quill_gemm_half_pack_floats() floats, 32-byte aligned, used by one call at a time. A row's
/// result does not depend on m or the rows beside it.
void quill_gemm_half(int bf16, const void *w, int64_t row_stride, const float *x, int64_t k, float *y,
                     int64_t y_stride, int64_t row_begin, int64_t row_end, int64_t m, float *pack);
/// Floats of scratch `quill_gemm_half` needs.
int64_t quill_gemm_half_pack_floats(void);

// MARK: - Elementwise and reductions

/// y = (x * rsqrt(mean(x^2) + eps)) * weight, the order Hugging Face uses.
void quill_rmsnorm(const float *x, const float *weight, float *y, int64_t n, float eps);
/// Rotates n_heads vectors of head_dim floats in place at one position. Only the first
/// rot_dim dimensions rotate. cos/sin hold rot_dim/2 values. layout 0: half-split pairs
/// (i, i + rot_dim/2), Hugging Face's rotate_half; layout 1: adjacent pairs (2i, 2i+1).
void quill_rope(float *x, int64_t n_heads, int64_t head_dim, int64_t rot_dim,
                const float *cos_table, const float *sin_table, int layout);
void quill_silu(const float *x, float *y, int64_t n);
/// y = silu(gate) * up (the SwiGLU MLP's gate).
void quill_swiglu(const float *gate, const float *up, float *y, int64_t n);
/// Exact GELU, 0.5 x (1 + erf(x / sqrt 2)).
void quill_gelu(const float *x, float *y, int64_t n);
/// GELU with the tanh approximation (PyTorch's approximate="tanh").
void quill_gelu_tanh(const float *x, float *y, int64_t n);
/// Numerically stable softmax in place.
void quill_softmax(float *x, int64_t n);
void quill_add(const float *a, const float *b, float *y, int64_t n);
void quill_mul(const float *a, const float *b, float *y, int64_t n);
void quill_scale(float *x, float s, int64_t n);
float quill_dot_f32(const float *a, const float *b, int64_t n);
/// Index of the largest value (the first on ties); n > 0.
int64_t quill_argmax(const float *x, int64_t n);
/// The k largest values, sorted descending (ties: lower index first). Returns the count
/// written, min(k, n).
int64_t quill_top_k(const float *x, int64_t n, int64_t k, int64_t *indices, float *values);

// MARK: - Attention over a paged KV cache

/// Online-softmax attention for one key/value head and the `group` query heads sharing it,
/// for `n_queries` consecutive positions starting at `first_position`, reading keys and
/// values through a block table (FlashAttention-style: one block of keys per tile, a running
/// max and sum per query row, no score matrix).
///   q, out: n_queries rows, `row_stride` floats apart, each holding [group][head_dim]
///   k_base, v_base: this (layer, head)'s runs in block 0; block b's runs are at
///     base + blocks[b] * block_stride. Keys are stored transposed, [head_dim][block_size];
///     values by token, [block_size][head_dim].
///   kv_type: 0 F32, 1 F16, 2 Q8_0 (head_dim a multiple of 32; see quill_kv_quantize_q8_0)
///   Query at position p sees keys max(0, p - window + 1) ... p (window 0: all of 0 ... p).
///   scratch: at least (n_queries * group) * (head_dim + 2) + block_size * (group + 2 * head_dim) floats.
/// Keys 0 ... first_position + n_queries - 1 must exist.
void quill_attention_paged(const float *q, float *out, int64_t row_stride, int64_t n_queries, int64_t group, int64_t head_dim,
                           const void *k_base, const void *v_base, int64_t block_stride, const int64_t *blocks,
                           int64_t block_size, int64_t first_position, int64_t window, float scale, int kv_type,
                           float *scratch);

/// quill_attention_paged over the table's blocks [block_begin, block_end) only (split-K): each
/// row's unnormalized accumulator, running maximum and running sum go to partial, [rows][d + 2]
/// with rows = n_queries * group.
void quill_attention_paged_partial(const float *q, int64_t row_stride, int64_t n_queries, int64_t group, int64_t head_dim,
                                   const void *k_base, const void *v_base, int64_t block_stride, const int64_t *blocks,
                                   int64_t block_size, int64_t first_position, int64_t window, float scale, int kv_type,
                                   float *scratch, int64_t block_begin, int64_t block_end, float *partial);
/// Merges `segments` consecutive partial results ([segments][rows][d + 2]) into the normalized
/// output, laid out as quill_attention_paged writes it.
void quill_attention_combine(const float *partials, int64_t segments, int64_t rows, int64_t group, int64_t head_dim,
                             float *out, int64_t row_stride);

/// Quantizes n floats (a multiple of 32) to Q8_0 for the KV cache: one F16 scale per 32
/// values (amax / 127) at scales[b * scale_stride], value i's int8 at quants[i * quant_stride].
/// A Q8_0 run of bs tokens stores quants ([head_dim][bs] for keys, [bs][head_dim] for values)
/// followed by the scales, [head_dim / 32][bs]. NaN becomes 0; infinities zero their block.
void quill_kv_quantize_q8_0(const float *x, int64_t n, int8_t *quants, int64_t quant_stride, uint16_t *scales,
                            int64_t scale_stride);
/// A Q8_0 run as floats, in the run's own layout ([head_dim][bs] keys, or values [bs][head_dim]).
void quill_kv_dequantize_q8_0(const void *run, int64_t head_dim, int64_t bs, int values, float *out);

// MARK: - Mamba

/// Operands of Mamba's selective scan over `tokens` consecutive tokens (rows of the
/// activation buffers, each with its stride in floats).
typedef struct {
    float *h;                    ///< [inner × states] state, updated in place
    const float *a;              ///< [inner × states] A = -exp(A_log)
    const float *dt_bias;        ///< [inner]
    const float *d;              ///< [inner] skip weights
    const float *delta;          ///< [tokens][inner] dt_proj output, before bias and softplus
    const float *bc;             ///< [tokens]: B at bc[0..states), C at bc[states..2·states)
    const float *u;              ///< [tokens][inner] conv output (x)
    const float *z;              ///< [tokens][inner] gate
    float *y;                    ///< [tokens][inner] output
    int64_t delta_stride, bc_stride, u_stride, z_stride, y_stride;
    int64_t tokens, states;
} quill_mamba_scan_args;

/// Channels [c0, c1) of the scan: step = softplus(delta + dt_bias); h = exp(a·step)·h +
/// step·B·u; y = (h·C + u·d)·silu(z), token after token.
void quill_mamba_scan(const quill_mamba_scan_args *args, int64_t c0, int64_t c1);

/// Mamba's causal depthwise convolution over `tokens` rows: y[t][ch] = bias[ch] + the
/// kernel−1 previous inputs in `window` ([channels × (kernel−1)], oldest first, updated) and
/// x[t][ch], each times its tap of weights ([channels × kernel]).
void quill_causal_conv(const float *x, int64_t x_stride, float *y, int64_t y_stride, int64_t tokens, float *window,
                       const float *weights, const float *bias, int64_t channels, int64_t kernel);

// MARK: - Thread pool

typedef struct quill_pool quill_pool;
typedef void (*quill_task_fn)(void *context, int64_t task);

/// A persistent pool: n_threads - 1 workers plus the calling thread. NULL on failure.
quill_pool *quill_pool_create(int n_threads);
void quill_pool_destroy(quill_pool *pool);
int quill_pool_threads(const quill_pool *pool);
/// Runs fn(context, i) for every i in [0, n_tasks) across the pool and returns when all
/// are done. Concurrent calls on one pool are serialized.
void quill_pool_run(quill_pool *pool, quill_task_fn fn, void *context, int64_t n_tasks);
/// The calling thread's index within the pool running it: 1 ..< n_threads for a pool's
/// workers, 0 on any other thread (the caller of quill_pool_run takes part as thread 0).
int quill_pool_thread_index(void);

#ifdef __cplusplus
}
#endif
#endif
