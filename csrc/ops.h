/* ops.h — element-wise and attention ops used by the forward pass.
 * Numerics follow ggml's CPU ops (double-precision sums in norms/softmax). */
#ifndef PYRT_OPS_H
#define PYRT_OPS_H

#include <stdint.h>
#include "kernels.h"

/* y[n] = x[n] / sqrt(mean(x^2) + eps) * w[n]   (w may be NULL; y may alias x) */
void op_rmsnorm(float *y, const float *x, const float *w, int64_t n, float eps);
/* x[n] += y[n] */
void op_add(float *x, const float *y, int64_t n);
/* x[n] *= s */
void op_scale(float *x, float s, int64_t n);

/* Rotate one head in place: x[head_dim], first n_rot dims, at position pos.
 * mode PYRT_ROPE_NORMAL pairs (2i, 2i+1); PYRT_ROPE_NEOX pairs (i, i+n_rot/2). */
void op_rope(float *x, int32_t n_rot, int32_t mode, float pos, float freq_base, float freq_scale);

/* g[n] = silu(g) * u  /  gelu_tanh(g) * u */
void op_swiglu(float *g, const float *u, int64_t n);
void op_geglu(float *g, const float *u, int64_t n);

/* In-place softmax over x[n]; returns nothing, x sums to 1. */
void op_softmax(float *x, int64_t n);

/* Causal attention of one query head against n_kv cached positions.
 *   q[head_dim] (f32), k/v: rows of the cache for this kv head, row stride
 *   `stride` elements (F16); scores: scratch[n_kv] f32, probs16: scratch[n_kv].
 *   out[head_dim] = sum_j softmax(scale * q·k_j)_j * v_j
 * Matches llama.cpp's non-flash path: q and the probabilities are rounded to
 * F16 before their dot products, accumulation is f32. */
void op_attention_head(const pyrt_kernels *k, float *out, const float *q,
                       const pyrt_fp16 *kc, const pyrt_fp16 *vc, int64_t stride,
                       int32_t head_dim, int32_t n_kv, float scale,
                       float *scores, pyrt_fp16 *q16, pyrt_fp16 *probs16);

#endif
