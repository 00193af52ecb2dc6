/* cuda_ops.cuh — device kernels of the CUDA backend and their host launchers
 * (cuda_ops.cu). Every launcher is asynchronous on the given stream and
 * returns cudaGetLastError() of the launch; callers check it.
 *
 * Numerics follow the scalar CPU reference (generic/quants.c, generic/ops.c) wherever
 * that costs nothing on a GPU:
 *   - activations are quantized exactly as quantize_row_q8_0/q8_1_ref
 *     (d = amax/127, q = roundf(x/d), s = fp16(d*sum q)), bit for bit;
 *   - F16/BF16 weights see activations rounded to F16/BF16 first, as the CPU
 *     path quantizes its activation row to the weight's activation type;
 *   - RMSNorm sums the float squares in double; RoPE builds theta by the same
 *     chain of float multiplications and rotates without FMA contraction;
 *   - attention rounds q to F16 (the cache is F16) and accumulates in f32.
 *   - K-quant weights (Q2_K..Q6_K) are dotted with these 32-blocks, not with
 *     the CPU's 256-element Q8_K activations, as llama.cpp's CUDA backend
 *     does: same weights, activations rounded on another grid (its per-block
 *     math is checked on the CPU by tests/c/test_cuda_kquants.cpp).
 * What differs, within the kernel tolerances of docs/ARCHITECTURE.md, 'Correctness': summation order
 * (warp reductions), attention's online softmax (the CPU rounds the
 * probabilities to F16 before P·V, this path keeps them in f32), and
 * cosf/sinf/expf/tanhf of the CUDA math library (<= 2 ulp). */
#ifndef PYRT_CUDA_OPS_CUH
#define PYRT_CUDA_OPS_CUH

#include <cuda_runtime.h>
#include <stdint.h>

extern "C" {
#include "../kernels.h"
}

namespace pyrt_cuda {

/* A weight matrix on the device: rows of `cols` elements in `type`. */
struct dweight {
    const uint8_t *data = nullptr;
    int32_t type = -1;
    int64_t cols = 0, rows = 0, row_bytes = 0;
};

/* Activations quantized for the integer kernels, for n_tok rows of cols:
 * qs [n_tok][cols] int8 and ds [n_tok][cols/32] = (d, s), both already
 * rounded to fp16 precision as the CPU's block_q8_1 stores them. Serves
 * Q8_0-activation weights (which ignore s), Q8_1 ones, and the K-quants
 * (which take exact integer sums of the activations for their min terms). */
struct act_q8 {
    int8_t *qs = nullptr;
    float2 *ds = nullptr;
};

/* Weight types with device kernels (matmul and embedding lookup). */
bool type_supported(int32_t type);
/* True if the matmul of this weight type reads act_q8 (else f32 rows). */
bool type_uses_q8(int32_t type);

/* x rows (stride ldx floats) -> a; cols % 32 == 0 */
cudaError_t quantize_q8(const float *x, int64_t ldx, int64_t n_tok, int64_t cols, act_q8 a, cudaStream_t st);

/* y[t*ldy + r] = dot(W row r, x row t) for r < w.rows, t < n_tok. Quantized
 * types read `a` (quantize_q8 of x first); float types read x. */
cudaError_t matmul(const dweight &w, const float *x, int64_t ldx, act_q8 a, int64_t n_tok,
                   float *y, int64_t ldy, cudaStream_t st);

/* x[t*w.cols + j] = dequant(W row tokens[t])[j] (* scale when scale > 0) */
cudaError_t get_rows(const dweight &w, const int32_t *tokens, int64_t n_tok, float *x, float scale,
                     cudaStream_t st);

/* y row = rmsnorm(x row) * w (w may be null), for `rows` rows of n */
cudaError_t rmsnorm(float *y, int64_t ldy, const float *x, int64_t ldx, const float *w, int64_t n,
                    int64_t rows, float eps, cudaStream_t st);

/* Per row: x += (post_w ? rmsnorm(t) * post_w : t); then, if next_w,
 * xn = rmsnorm(x) * next_w. Rows are n wide and contiguous. */
cudaError_t residual_norm(float *x, const float *t, const float *post_w, float *xn, const float *next_w,
                          int64_t n, int64_t rows, float eps, cudaStream_t st);

struct rope_args {
    float *q;                 /* [n_tok][n_head*head_dim]     in place    */
    float *k;                 /* [n_tok][n_head_kv*head_dim]  in place    */
    const float *v;           /* [n_tok][n_head_kv*head_dim]              */
    uint16_t *kc, *vc;        /* this layer's cache [n_ctx][kv_dim] F16   */
    const float *q_norm, *k_norm;   /* [head_dim] or null (gemma3 QK-norm) */
    int32_t n_tok, pos0, n_head, n_head_kv, head_dim, n_rot, mode;
    float theta_scale;        /* powf(freq_base, -2/n_rot), computed on the host */
    float freq_scale, eps;
    float q_scale;            /* q *= q_scale after rope (gemma3 folds the
                                 attention scale into q, in f32); 1: none */
};
/* QK-norm (optional), RoPE on q and k, q scaling, and k/v rows into the F16
 * cache at positions pos0 .. pos0+n_tok-1. */
cudaError_t qk_rope_store(const rope_args &a, cudaStream_t st);

struct attn_args {
    float *out;               /* [n_tok][n_head*head_dim]                  */
    const float *q;           /* [n_tok][n_head*head_dim] after rope       */
    const uint16_t *kc, *vc;  /* this layer's cache [n_ctx][kv_dim] F16    */
    float *partial;           /* scratch: attn_partial_floats(...) floats  */
    int32_t n_tok, pos0, n_head, n_head_kv, head_dim;
    int32_t window;           /* > 0: attend to the last `window` positions */
    int32_t n_split;          /* position ranges per (token, head); >= 1   */
    float scale;
};
/* Causal attention of every (token, head) over cache positions
 * [max(0, pos-window+1), pos], pos = pos0 + t: one pass over K/V with an
 * online softmax, split over n_split blocks and combined. */
cudaError_t attention(const attn_args &a, cudaStream_t st);
int64_t attn_partial_floats(int32_t n_tok, int32_t n_head, int32_t head_dim, int32_t n_split);
/* The split a decode of n_tok tokens up to max_pos positions should use. */
int32_t attn_pick_split(int32_t n_tok, int32_t n_head, int32_t max_pos);
constexpr int32_t ATTN_MAX_SPLIT = 32;
constexpr int32_t ATTN_MAX_HEAD_DIM = 1024;

/* g[i] = silu(g[i]) * u[i] (gelu = 0) or gelu_tanh(g[i]) * u[i] (gelu = 1) */
cudaError_t glu(float *g, const float *u, int64_t n, int gelu, cudaStream_t st);

}  // namespace pyrt_cuda

#endif
