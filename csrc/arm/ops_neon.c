/* arm/ops_neon.c — forward-pass ops (softmax, SwiGLU, rope, attention over an
 * F16 cache) in NEON registers, computing the floating-point sequence of
 * llama.cpp's AArch64 CPU backend built for baseline Armv8-A (NEON without
 * FP16 vector arithmetic, as a GGML_NATIVE=OFF build or a distribution
 * package has it; a build for a CPU with FP16 arithmetic, such as a native
 * build on Apple silicon, accumulates its F16 dot products in F16 and
 * rounds differently):
 *   - exp is ggml's 4-lane ggml_v_expf (Arm's optimized-routines expf, the
 *     same constants and steps as the AVX2 exp of x86/ops_avx2.c), silu(x) =
 *     x / (1 + exp(-x)); softmax sums the exp values in groups of 4 (one
 *     vaddvq each) added to a double;
 *   - q.k is ggml_vec_dot_f16 with F32Cx4 registers: q rounded to f16, four
 *     4-lane accumulators over 16-element steps, reduced (0+2, 1+3, then
 *     0+1, then vaddvq: (l0+l1)+(l2+l3)), the tail in double;
 *   - p.v: a single token takes ggml_vec_dot_f16 over the positions (16
 *     slots j mod 16, p rounded to f16); a multi-token batch takes
 *     llamafile's tinyBLAS<4> for an F16 matrix times the f32 probabilities
 *     (not rounded: the F32 right-hand side is its first choice on this
 *     build), one 4-lane accumulator per output (slots j mod 4), vaddvq;
 *   - rope: GCC's contraction of ggml's rotation on AArch64 (op_rope_fused).
 * vaddvq_f32 is one FADDP of the pairs and one of the two sums. Reached only
 * on AArch64, where NEON is baseline. */
#if defined(__aarch64__)
#include <arm_neon.h>
#include <math.h>
#include <string.h>

#include "kernels.h"
#include "ops.h"


static inline float32x4_t ld4_f16(const pyrt_fp16 *p) {
    return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16((const uint16_t *)p)));
}
static inline float f16_f32(pyrt_fp16 h) { return vgetq_lane_f32(vcvt_f32_f16(vreinterpret_f16_u16(vdup_n_u16(h))), 0); }

/* ---- exp, silu, softmax ------------------------------------------------------- */

/* exp(x) = 2^n (1 + poly(b)), n = round(x / ln2) by the 1.5*2^23 shift, b = x
 * - n ln2 with a two-part ln2; where some |n| > 126 the scale is split in two
 * factors (2^n overflows or is subnormal) and n > 192 gives +inf. */
static inline float32x4_t exp4(float32x4_t x) {
    const float32x4_t shift = vdupq_n_f32(0x1.8p23f);
    const float32x4_t z = vfmaq_f32(shift, x, vdupq_n_f32(0x1.715476p+0f));
    const float32x4_t n = vsubq_f32(z, shift);
    const float32x4_t b = vfmsq_f32(vfmsq_f32(x, n, vdupq_n_f32(0x1.62e4p-1f)), n, vdupq_n_f32(0x1.7f7d1cp-20f));
    const uint32x4_t e = vshlq_n_u32(vreinterpretq_u32_f32(z), 23);
    const float32x4_t k = vreinterpretq_f32_u32(vaddq_u32(e, vreinterpretq_u32_f32(vdupq_n_f32(1.0f))));
    const uint32x4_t big = vcagtq_f32(n, vdupq_n_f32(126.0f));
    const float32x4_t u = vmulq_f32(b, b);
    const float32x4_t hi = vfmaq_f32(vdupq_n_f32(0x1.573e2ep-5f), vdupq_n_f32(0x1.0e4020p-7f), b);
    const float32x4_t lo = vfmaq_f32(vdupq_n_f32(0x1.fffdb6p-2f), vdupq_n_f32(0x1.555e66p-3f), b);
    const float32x4_t j = vfmaq_f32(vmulq_f32(vdupq_n_f32(0x1.ffffecp-1f), b), vfmaq_f32(lo, hi, u), u);
    if (vmaxvq_u32(big) == 0) return vfmaq_f32(k, j, k);
    const uint32x4_t d = vandq_u32(vclezq_f32(n), vdupq_n_u32(0x82000000u));
    const float32x4_t s1 = vreinterpretq_f32_u32(vaddq_u32(d, vdupq_n_u32(0x7f000000u)));
    const float32x4_t s2 = vreinterpretq_f32_u32(vsubq_u32(e, d));
    return vbslq_f32(vcagtq_f32(n, vdupq_n_f32(192.0f)), vmulq_f32(s1, s1),
                     vbslq_f32(big, vmulq_f32(vfmaq_f32(s2, s2, j), s1), vfmaq_f32(k, k, j)));
}

static void swiglu_neon(float *g, const float *u, int64_t n) {
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        const float32x4_t x = vld1q_f32(g + i);
        const float32x4_t s = vdivq_f32(x, vaddq_f32(vdupq_n_f32(1.0f), exp4(vnegq_f32(x))));
        vst1q_f32(g + i, vmulq_f32(s, vld1q_f32(u + i)));
    }
    if (i < n) op_swiglu(g + i, u + i, n - i);
}

/* exp(x - mx) in place over [0, n), 4 at a time, each group summed by vaddvq
 * into a double; the tail with expf */
static double exp_sum(float *x, int64_t n, float mx) {
    double sum = 0.0;
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        const float32x4_t e = exp4(vsubq_f32(vld1q_f32(x + i), vdupq_n_f32(mx)));
        vst1q_f32(x + i, e);
        sum += (double)vaddvq_f32(e);
    }
    for (; i < n; i++) { const float e = expf(x[i] - mx); x[i] = e; sum += (double)e; }
    return sum;
}

static void softmax_neon(float *x, int64_t n) {
    float mx = -INFINITY;
    for (int64_t i = 0; i < n; i++) if (x[i] > mx) mx = x[i];
    const float inv = (float)(1.0 / exp_sum(x, n, mx));
    for (int64_t i = 0; i < n; i++) x[i] *= inv;
}

/* ---- attention over an F16 cache ------------------------------------------------ */

/* ggml_vec_dot_f16 (F32Cx4) of an f16 row with f32 values of f16s */
static inline float dot_f16_row(const pyrt_fp16 *x, const float *y, int32_t n) {
    const int32_t np = n & ~15;
    float32x4_t s0 = vdupq_n_f32(0.0f), s1 = s0, s2 = s0, s3 = s0;
    for (int32_t d = 0; d < np; d += 16) {
        s0 = vfmaq_f32(s0, ld4_f16(x + d), vld1q_f32(y + d));
        s1 = vfmaq_f32(s1, ld4_f16(x + d + 4), vld1q_f32(y + d + 4));
        s2 = vfmaq_f32(s2, ld4_f16(x + d + 8), vld1q_f32(y + d + 8));
        s3 = vfmaq_f32(s3, ld4_f16(x + d + 12), vld1q_f32(y + d + 12));
    }
    double sum = (double)vaddvq_f32(vaddq_f32(vaddq_f32(s0, s2), vaddq_f32(s1, s3)));
    for (int32_t d = np; d < n; d++) sum += (double)(f16_f32(x[d]) * y[d]);
    return (float)sum;
}

/* cache rows for the coming positions (a prefetch past the end never faults) */
#define PF_AHEAD 8
static inline void prefetch_row(const pyrt_fp16 *p, int32_t n) {
    for (int32_t d = 0; d < n; d += 32) __builtin_prefetch(p + d);
}

/* One query. Scratch: scores and probs16 by absolute position, acc >= 16*hd. */
static void attn_one_neon(const pyrt_attn_args *a) {
    const int32_t hd = a->head_dim, first = a->first, last = a->last;
    const int64_t st = a->stride;
    float *sc = a->scores;

    /* q rounded to f16, kept as f32 in acc (free until the V pass) */
    float *qf = a->acc;
    for (int32_t d = 0; d < hd; d++) qf[d] = f16_f32(pyrt_fp32_to_fp16(a->q[d]));
    float mx = -INFINITY;
    for (int32_t j = first; j <= last; j++) {
        const pyrt_fp16 *kj = a->k + (int64_t)j * st;
        prefetch_row(kj + PF_AHEAD * st, hd);
        const float s = pyrt_softcap(dot_f16_row(kj, qf, hd) * a->scale, a->softcap);
        sc[j] = s;
        if (s > mx) mx = s;
    }

    /* exp in groups of 4 aligned at position 0 (positions outside [first,
     * last] are -inf: exp 0, which adds nothing) */
    const int32_t g0 = first & ~3, g1 = (last + 4) & ~3;
    for (int32_t j = g0; j < first; j++) sc[j] = -INFINITY;
    for (int32_t j = last + 1; j < g1; j++) sc[j] = -INFINITY;
    const float32x4_t inv = vdupq_n_f32((float)(1.0 / exp_sum(sc + g0, g1 - g0, mx)));
    const int batched = a->batched && hd % 4 == 0;   /* tinyBLAS<4> takes only rows % 4 == 0 */
    for (int32_t j = g0; j < g1; j += 4) {
        const float32x4_t p = vmulq_f32(vld1q_f32(sc + j), inv);
        if (batched) vst1q_f32(sc + j, p);      /* tinyBLAS takes the f32 probabilities */
        else vst1_u16((uint16_t *)(a->probs16 + j), vreinterpret_u16_f16(vcvt_f16_f32(p)));
    }

    /* out[d] = sum_j p_j v_j[d] in llama.cpp's slots (batched: j mod 4,
     * single token: j mod 16), each slot a vector over d */
    const int nslot = batched ? 4 : 16;
    float *acc = a->acc;
    memset(acc, 0, sizeof(float) * (size_t)nslot * hd);
    for (int32_t j = first; j <= last; j++) {
        const float p = batched ? sc[j] : f16_f32(a->probs16[j]);
        if (p == 0.0f) continue;             /* adds exactly +0 */
        const pyrt_fp16 *vj = a->v + (int64_t)j * st;
        prefetch_row(vj + PF_AHEAD * st, hd);
        float *slot = acc + (size_t)(j % nslot) * hd;
        int32_t d = 0;
        for (; d + 4 <= hd; d += 4) vst1q_f32(slot + d, vfmaq_n_f32(vld1q_f32(slot + d), ld4_f16(vj + d), p));
        for (; d < hd; d++) slot[d] = fmaf(f16_f32(vj[d]), p, slot[d]);
    }
#define S(i) acc[(size_t)(i) * hd + d]
    for (int32_t d = 0; d < hd; d++) {
        if (batched) {
            a->out[d] = (S(0) + S(1)) + (S(2) + S(3));
        } else {
            float y[4];
            for (int l = 0; l < 4; l++) y[l] = (S(l) + S(8 + l)) + (S(4 + l) + S(12 + l));
            a->out[d] = (y[0] + y[1]) + (y[2] + y[3]);
        }
    }
#undef S
}

static void attn_head_neon(const pyrt_attn_args *a) {
    pyrt_attn_each_query(a, attn_one_neon);
}

/* ---- rope ----------------------------------------------------------------------- */

static void rope_neon(float *x, int32_t n_rot, int32_t mode, float pos, float freq_base, float freq_scale,
                      const float *ff, float mscale) {
    op_rope_fused(x, n_rot, mode, pos, freq_base, freq_scale, ff, mscale, 1);
}
static void rope_cs_neon(float *x, int32_t n_rot, int32_t mode, const float *cs) {
    op_rope_cs_fused(x, n_rot, mode, cs, 1);
}

void pyrt_fill_ops_neon(pyrt_kernels *k) {
    k->softmax = softmax_neon;
    k->swiglu = swiglu_neon;
    k->rope = rope_neon;
    k->rope_cs = rope_cs_neon;
    k->attn_head = attn_head_neon;
}
#endif /* __aarch64__ */
