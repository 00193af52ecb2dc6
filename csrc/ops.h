/* ops.h — element-wise and attention ops used by the forward pass.
 * Numerics follow ggml's CPU ops (double-precision sums in norms/softmax). */
#ifndef PYRT_OPS_H
#define PYRT_OPS_H

#include <math.h>
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
void op_rope(float *x, int32_t n_rot, int32_t mode, float pos, float freq_base, float freq_scale,
             const float *freq_factors,    /* theta_i /= freq_factors[i] (NULL: none) */
             float mscale);                /* cos and sin times mscale, as ggml's rope_yarn */

/* Rope pair i's cos and sin (times mscale) for angle theta = pos * base^(-2i/n_rot) */
static inline void op_rope_angle(float theta, int32_t i, float freq_scale, const float *ff, float mscale,
                                 float *c, float *s) {
    const float t = freq_scale * (ff ? theta / ff[i] : theta);
    *c = cosf(t) * mscale;   /* exact when mscale is 1 */
    *s = sinf(t) * mscale;
}

/* Pair i of x rotated by (c, s), op_rope_fused's way */
static inline void op_rope_rotate(float *x, int32_t half, int32_t i, int32_t mode, float c, float s, int x1_fused) {
    float *a, *b;
    if (mode == PYRT_ROPE_NEOX) { a = &x[i]; b = &x[i + half]; }
    else                        { a = &x[2 * i]; b = &x[2 * i + 1]; }
    const float x0 = *a, x1 = *b;
    *a = x1_fused ? fmaf(-x1, s, x0 * c) : fmaf(x0, c, -(x1 * s));
    *b = fmaf(x0, s, x1 * c);
}

/* op_rope with the FMA contraction GCC applies to ggml's rotate_pairs, written
 * out so no compiler choice is involved: x0's products fused and x1's rounded
 * (the x86 build, and AArch64 for NEOX pairs); with normal_x1_fused, NORMAL
 * pairs' first output fuses x1's product instead (x0 * c rounded), as GCC's
 * AArch64 build of ggml contracts its vectorized NORMAL loop. The rope of the
 * SIMD tables, inlined where fmaf is one instruction. */
static inline void op_rope_fused(float *x, int32_t n_rot, int32_t mode, float pos, float freq_base,
                                 float freq_scale, const float *ff, float mscale, int normal_x1_fused) {
    const float theta_scale = powf(freq_base, -2.0f / (float)n_rot);
    float theta = pos;
    const int32_t half = n_rot / 2;
    const int x1_fused = normal_x1_fused && mode != PYRT_ROPE_NEOX;
    for (int32_t i = 0; i < half; i++) {
        float c, s;
        op_rope_angle(theta, i, freq_scale, ff, mscale, &c, &s);
        op_rope_rotate(x, half, i, mode, c, s, x1_fused);
        theta *= theta_scale;
    }
}

/* A position's rope angles are the same for every head of its token, and
 * their cosines and sines cost most of a head's rotation: the forward pass
 * computes them once per token (kernels.h: rope_cache, cs[i] = cos, cs[n_rot/2
 * + i] = sin of pair i, the same floats op_rope computes) and rotates each
 * head with them (rope_cs, the variant's rope given the table). */
void op_rope_cache(float *cs, int32_t n_rot, float pos, float freq_base, float freq_scale, const float *ff,
                   float mscale);
static inline void op_rope_cs_fused(float *x, int32_t n_rot, int32_t mode, const float *cs, int normal_x1_fused) {
    const int32_t half = n_rot / 2;
    const int x1_fused = normal_x1_fused && mode != PYRT_ROPE_NEOX;
    for (int32_t i = 0; i < half; i++) op_rope_rotate(x, half, i, mode, cs[i], cs[half + i], x1_fused);
}
void op_rope_cs(float *x, int32_t n_rot, int32_t mode, const float *cs);

/* g[n] = silu(g) * u  /  gelu_tanh(g) * u (llama.cpp's fp16-table GELU) */
void op_swiglu(float *g, const float *u, int64_t n);
void op_geglu(float *g, const float *u, int64_t n);
/* ggml's GELU table: entry h = fp16(gelu(fp16 value h)), 2^16 entries (+ padding) */
const uint16_t *pyrt_gelu_table(void);

/* In place, each of the n/len chunks of x[n] (len a power of 2) times the
 * orthonormal Walsh-Hadamard matrix of size len, as ggml's CPU fwht computes
 * it (x * (1/sqrtf(len)) first, then butterflies u+v, u-v for widths
 * 1, 2, 4, ...: every step one rounding, so any order of pairs gives the
 * same result). llama.cpp rotates q, k and v this way around a quantized KV
 * cache (forward.c). */
void op_fwht(float *x, int64_t n, int32_t len);

/* In-place softmax over x[n]; returns nothing, x sums to 1. */
void op_softmax(float *x, int64_t n);
float op_dot_f32_8(const float *w, const float *x, int64_t n);

/* Causal attention of one query head (scalar reference; see kernels.h):
 * out = sum_j softmax(scale * q.k_j)_j * v_j over j in [first, last], with q
 * and the probabilities rounded to F16 before their dot products as llama.cpp
 * does (its K/V cache is F16 and mul_mat converts the other operand). */
void op_attention_head(const pyrt_attn_args *a);

#endif
