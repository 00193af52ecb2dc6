/* generic/iquants.c — scalar reference for the non-linear 4-bit types:
 *
 *   IQ4_NL  32-element blocks: fp16 d, 16 bytes of 4-bit indices into the
 *           level table PYRT_KVALUES_IQ4NL (quant.h). Element j < 16 is the
 *           low nibble of qs[j], element j + 16 its high nibble (as Q4_0):
 *           x = d * kv[idx]. Activations: Q8_0.
 *   IQ4_XS  256-element super-blocks: fp16 d, 8 sub-blocks of 32 with 6-bit
 *           scales ls (low 4 bits in scales_l, high 2 in scales_h), codes as
 *           IQ4_NL per sub-block: x = (d * (ls - 32)) * kv[idx]. Activations:
 *           Q8_K.
 *
 * Dequantization follows ggml's dequantize_row_iq4_nl / _xs: d*kv is exact in
 * f32 (11-bit by 8-bit mantissas); IQ4_XS rounds (d*(ls-32))*kv in that order,
 * as gguf.quants does.
 *
 * Dot products are ggml's generic ones (ggml-cpu/quants.c): per 32 elements
 * the exact integer sum of kv*q8, then sumf += d * isum in float, with
 * d = d_a*d_w (IQ4_NL) or d = (d_w*d_a)*(ls-32) (IQ4_XS). This file is built
 * without FMA contraction; the x86 variants (x86/iquants_avx2.c) keep
 * llama.cpp's x86 orders instead. */
#include "kernels.h"

#define FP16(h) pyrt_fp16_to_fp32(h)

static const int8_t kvalues[16] = PYRT_KVALUES_IQ4NL;

/* sub-block s (0..7) scale of an IQ4_XS super-block, minus 32 (-32..31) */
static inline int iq4_xs_scale(const block_iq4_xs *x, int s) {
    const int ls = ((x->scales_l[s / 2] >> 4 * (s % 2)) & 0xf) | (((x->scales_h >> 2 * s) & 3) << 4);
    return ls - 32;
}

/* sum over 32 elements of kv[codes] * q8: qs[16] packed codes, q[32] int8 */
static inline int32_t isum32(const uint8_t *qs, const int8_t *q) {
    int32_t s1 = 0, s2 = 0;
    for (int j = 0; j < 16; j++) {
        s1 += q[j] * kvalues[qs[j] & 0xf];
        s2 += q[j + 16] * kvalues[qs[j] >> 4];
    }
    return s1 + s2;
}

/* ======================================================================== */
/* dequantize                                                                */
/* ======================================================================== */

static void dequant_iq4_nl(const void *src, float *dst, int64_t n) {
    const block_iq4_nl *x = (const block_iq4_nl *)src;   /* [n/32] */
    for (int64_t b = 0; b < n / QK4_NL; b++) {
        const float d = FP16(x[b].d);
        float *y = dst + QK4_NL * b;
        for (int j = 0; j < 16; j++) {
            y[j] = d * kvalues[x[b].qs[j] & 0xf];
            y[j + 16] = d * kvalues[x[b].qs[j] >> 4];
        }
    }
}

static void dequant_iq4_xs(const void *src, float *dst, int64_t n) {
    const block_iq4_xs *x = (const block_iq4_xs *)src;   /* [n/256] */
    for (int64_t b = 0; b < n / QK_K; b++) {
        const float d = FP16(x[b].d);
        for (int s = 0; s < QK_K / 32; s++) {
            const float dl = d * (float)iq4_xs_scale(&x[b], s);
            const uint8_t *qs = x[b].qs + 16 * s;
            float *y = dst + QK_K * b + 32 * s;
            for (int j = 0; j < 16; j++) {
                y[j] = dl * kvalues[qs[j] & 0xf];
                y[j + 16] = dl * kvalues[qs[j] >> 4];
            }
        }
    }
}

/* ======================================================================== */
/* vec_dot                                                                   */
/* ======================================================================== */

static void dot_iq4_nl(int64_t n, float *s, const void *w, const void *a) {
    const block_iq4_nl *x = (const block_iq4_nl *)w;     /* [n/32] */
    const block_q8_0 *y = (const block_q8_0 *)a;         /* [n/32] */
    float sumf = 0.0f;
    for (int64_t b = 0; b < n / QK4_NL; b++) {
        const float d = FP16(y[b].d) * FP16(x[b].d);
        sumf += d * (float)isum32(x[b].qs, y[b].qs);
    }
    *s = sumf;
}

static void dot_iq4_xs(int64_t n, float *s, const void *w, const void *a) {
    const block_iq4_xs *x = (const block_iq4_xs *)w;     /* [n/256] */
    const block_q8_K *y = (const block_q8_K *)a;         /* [n/256] */
    float sumf = 0.0f;
    for (int64_t b = 0; b < n / QK_K; b++) {
        const float d4d8 = FP16(x[b].d) * y[b].d;
        for (int sb = 0; sb < QK_K / 32; sb++) {
            const float dl = d4d8 * (float)iq4_xs_scale(&x[b], sb);
            sumf += dl * (float)isum32(x[b].qs + 16 * sb, y[b].qs + 32 * sb);
        }
    }
    *s = sumf;
}

/* ======================================================================== */

void pyrt_fill_iquants_scalar(pyrt_kernels *k) {
    k->type[PYRT_TYPE_IQ4_NL].dequantize = dequant_iq4_nl;
    k->type[PYRT_TYPE_IQ4_XS].dequantize = dequant_iq4_xs;
    k->type[PYRT_TYPE_IQ4_NL].vec_dot = dot_iq4_nl;
    k->type[PYRT_TYPE_IQ4_XS].vec_dot = dot_iq4_xs;
}
