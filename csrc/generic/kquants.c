/* generic/kquants.c — scalar reference for the K-quant weight types (Q2_K, Q3_K,
 * Q4_K, Q5_K, Q6_K: 256-element super-blocks with 16 or 8 sub-block scales)
 * and their activation type Q8_K.
 *
 * Block layouts are in quant.h. Element e of a super-block (0..255):
 *   Q2_K  q = (qs[32*(e/128) + e%32] >> 2*((e%128)/32)) & 3       (0..3)
 *         sub-block s = e/16: x = d*(scales[s]&15)*q - dmin*(scales[s]>>4)
 *   Q3_K  q = same 2 bits, minus 4 where bit (e%128)/32 + 4*(e/128) of
 *         hmask[e%32] is clear (-4..3); x = d*(sc6[s]-32)*q, s = e/16
 *   Q4_K  q = nibble (low: e%64 < 32, high otherwise) of qs[32*(e/64) + e%32];
 *         sub-block s = e/32 with 6-bit scale sc and min m: x = d*sc*q - dmin*m
 *   Q5_K  Q4_K plus bit 4 from bit s of qh[e%32]                    (0..31)
 *   Q6_K  4 low bits from ql, 2 high bits from qh, minus 32 (-32..31);
 *         x = d*scales[e/16]*q with int8 scales
 *   Q8_K  f32 d, int8 qs[256], bsums[16] = sums of each 16 qs
 *
 * Dequantization is bit-identical to gguf.quants (and to ggml): every product
 * is exact in f32 except Q6_K's d*sc*q, computed in the same order (d*sc)*q.
 *
 * Activations: Q8_K as ggml's quantize_row_q8_K_ref, which is also what its
 * x86 build runs: the element of largest magnitude (first one on ties) maps to
 * -127, q = nearest-even(x * (-127/max)) via the float "magic number" trick,
 * d = 1/iscale.
 *
 * Dot products: the exact integer sum of each super-block (scales applied as
 * integers), times d_w*d_a, accumulated in float; the min term (Q2/Q4/Q5_K)
 * uses the activation block sums. The AVX2 variants (x86/kquants_avx2.c) keep
 * llama.cpp's x86 accumulation order instead. */
#include <math.h>
#include <string.h>
#include "kernels.h"

#define FP16(h) pyrt_fp16_to_fp32(h)

/* ---- scale unpacking ----------------------------------------------------- */

/* Q4_K/Q5_K: sub-block j (0..7) 6-bit scale and min from the 12 packed bytes */
static inline void scale_min_k4(int j, const uint8_t *q, int *sc, int *m) {
    if (j < 4) {
        *sc = q[j] & 63;
        *m  = q[j + 4] & 63;
    } else {
        *sc = (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4);
        *m  = (q[j + 4] >> 4)   | ((q[j] >> 6) << 4);
    }
}

/* Q3_K: the 16 signed 6-bit scales (already minus 32) */
static inline void scales_q3_K(const uint8_t packed[12], int sc[16]) {
    for (int s = 0; s < 16; s++) {
        const int lo = s < 8 ? packed[s] & 0x0F : packed[s - 8] >> 4;
        const int hi = (packed[8 + s % 4] >> (2 * (s / 4))) & 3;
        sc[s] = (lo | (hi << 4)) - 32;
    }
}

/* ---- element decoders: q values of one super-block, in element order ------ */

static inline void codes_q2_K(const block_q2_K *x, int q[QK_K]) {
    for (int e = 0; e < QK_K; e++)
        q[e] = (x->qs[32 * (e / 128) + e % 32] >> (2 * ((e % 128) / 32))) & 3;
}

static inline void codes_q3_K(const block_q3_K *x, int q[QK_K]) {
    for (int e = 0; e < QK_K; e++) {
        const int lo = (x->qs[32 * (e / 128) + e % 32] >> (2 * ((e % 128) / 32))) & 3;
        const int hbit = (x->hmask[e % 32] >> ((e % 128) / 32 + 4 * (e / 128))) & 1;
        q[e] = lo - (hbit ? 0 : 4);
    }
}

static inline void codes_q4_K(const block_q4_K *x, int q[QK_K]) {
    for (int e = 0; e < QK_K; e++) {
        const uint8_t b = x->qs[32 * (e / 64) + e % 32];
        q[e] = (e % 64) < 32 ? (b & 0x0F) : (b >> 4);
    }
}

static inline void codes_q5_K(const block_q5_K *x, int q[QK_K]) {
    for (int e = 0; e < QK_K; e++) {
        const uint8_t b = x->qs[32 * (e / 64) + e % 32];
        const int lo = (e % 64) < 32 ? (b & 0x0F) : (b >> 4);
        q[e] = lo | (((x->qh[e % 32] >> (e / 32)) & 1) << 4);
    }
}

static inline void codes_q6_K(const block_q6_K *x, int q[QK_K]) {
    for (int e = 0; e < QK_K; e++) {
        const int h = e / 128, l = e % 32, g = (e % 128) / 32;        /* g: which of 4 quarter-planes */
        const uint8_t lb = x->ql[64 * h + 32 * (g & 1) + l];
        const int lo = g < 2 ? (lb & 0x0F) : (lb >> 4);
        const int hi = (x->qh[32 * h + l] >> (2 * g)) & 3;
        q[e] = (lo | (hi << 4)) - 32;
    }
}

/* ======================================================================== */
/* dequantize                                                                */
/* ======================================================================== */

static void dequant_q2_K(const void *src, float *dst, int64_t n) {
    const block_q2_K *x = (const block_q2_K *)src;   /* [n/256] */
    int q[QK_K];
    for (int64_t b = 0; b < n / QK_K; b++, dst += QK_K) {
        const float d = FP16(x[b].d), dmin = FP16(x[b].dmin);
        codes_q2_K(&x[b], q);
        for (int e = 0; e < QK_K; e++) {
            const uint8_t sc = x[b].scales[e / 16];
            const float dl = d * (float)(sc & 0x0F), ml = dmin * (float)(sc >> 4);
            dst[e] = dl * (float)q[e] - ml;
        }
    }
}

static void dequant_q3_K(const void *src, float *dst, int64_t n) {
    const block_q3_K *x = (const block_q3_K *)src;   /* [n/256] */
    int q[QK_K], sc[16];
    for (int64_t b = 0; b < n / QK_K; b++, dst += QK_K) {
        const float d = FP16(x[b].d);
        scales_q3_K(x[b].scales, sc);
        codes_q3_K(&x[b], q);
        for (int e = 0; e < QK_K; e++) dst[e] = (d * (float)sc[e / 16]) * (float)q[e];
    }
}

static void dequant_q4_K(const void *src, float *dst, int64_t n) {
    const block_q4_K *x = (const block_q4_K *)src;   /* [n/256] */
    int q[QK_K];
    for (int64_t b = 0; b < n / QK_K; b++, dst += QK_K) {
        const float d = FP16(x[b].d), dmin = FP16(x[b].dmin);
        codes_q4_K(&x[b], q);
        for (int j = 0; j < 8; j++) {
            int sc, m;
            scale_min_k4(j, x[b].scales, &sc, &m);
            const float dl = d * (float)sc, ml = dmin * (float)m;
            for (int l = 0; l < 32; l++) dst[32 * j + l] = dl * (float)q[32 * j + l] - ml;
        }
    }
}

static void dequant_q5_K(const void *src, float *dst, int64_t n) {
    const block_q5_K *x = (const block_q5_K *)src;   /* [n/256] */
    int q[QK_K];
    for (int64_t b = 0; b < n / QK_K; b++, dst += QK_K) {
        const float d = FP16(x[b].d), dmin = FP16(x[b].dmin);
        codes_q5_K(&x[b], q);
        for (int j = 0; j < 8; j++) {
            int sc, m;
            scale_min_k4(j, x[b].scales, &sc, &m);
            const float dl = d * (float)sc, ml = dmin * (float)m;
            for (int l = 0; l < 32; l++) dst[32 * j + l] = dl * (float)q[32 * j + l] - ml;
        }
    }
}

static void dequant_q6_K(const void *src, float *dst, int64_t n) {
    const block_q6_K *x = (const block_q6_K *)src;   /* [n/256] */
    int q[QK_K];
    for (int64_t b = 0; b < n / QK_K; b++, dst += QK_K) {
        const float d = FP16(x[b].d);
        codes_q6_K(&x[b], q);
        for (int e = 0; e < QK_K; e++) dst[e] = (d * (float)x[b].scales[e / 16]) * (float)q[e];
    }
}

/* ======================================================================== */
/* Q8_K activations                                                          */
/* ======================================================================== */

/* round-to-nearest-even of |f| < 2^22 through the float adder, as ggml does
 * (this file is built without FMA contraction, so f + magic rounds on its own) */
static inline int nearest_int(float f) {
    const float v = f + 12582912.0f;   /* 1.5 * 2^23 */
    int32_t i;
    memcpy(&i, &v, sizeof i);
    return (i & 0x007fffff) - 0x00400000;
}

static void quant_q8_K(const float *src, void *dst, int64_t n) {
    block_q8_K *y = (block_q8_K *)dst;                 /* [n/256] */
    for (int64_t b = 0; b < n / QK_K; b++, src += QK_K) {
        float amax = 0.0f, max = 0.0f;
        for (int j = 0; j < QK_K; j++) {
            const float a = fabsf(src[j]);
            if (a > amax) { amax = a; max = src[j]; }
        }
        if (amax == 0.0f) {
            memset(&y[b], 0, sizeof y[b]);
            continue;
        }
        const float iscale = -127.0f / max;
        for (int j = 0; j < QK_K; j++) {
            const int v = nearest_int(iscale * src[j]);
            y[b].qs[j] = (int8_t)(v < 127 ? v : 127);
        }
        for (int g = 0; g < QK_K / 16; g++) {
            int sum = 0;
            for (int j = 0; j < 16; j++) sum += y[b].qs[16 * g + j];
            y[b].bsums[g] = (int16_t)sum;
        }
        y[b].d = 1.0f / iscale;
    }
}

/* ======================================================================== */
/* vec_dot: exact integer sum per super-block, float accumulation            */
/* ======================================================================== */

static void dot_q2_K(int64_t n, float *s, const void *w, const void *a) {
    const block_q2_K *x = (const block_q2_K *)w;      /* [n/256] */
    const block_q8_K *y = (const block_q8_K *)a;      /* [n/256] */
    int q[QK_K];
    float sum = 0.0f;
    for (int64_t b = 0; b < n / QK_K; b++) {
        codes_q2_K(&x[b], q);
        int isum = 0, imin = 0;
        for (int sb = 0; sb < 16; sb++) {
            int d = 0;
            for (int l = 0; l < 16; l++) d += q[16 * sb + l] * y[b].qs[16 * sb + l];
            isum += (x[b].scales[sb] & 0x0F) * d;
            imin += (x[b].scales[sb] >> 4) * y[b].bsums[sb];
        }
        sum += y[b].d * FP16(x[b].d) * (float)isum - y[b].d * FP16(x[b].dmin) * (float)imin;
    }
    *s = sum;
}

static void dot_q3_K(int64_t n, float *s, const void *w, const void *a) {
    const block_q3_K *x = (const block_q3_K *)w;      /* [n/256] */
    const block_q8_K *y = (const block_q8_K *)a;      /* [n/256] */
    int q[QK_K], sc[16];
    float sum = 0.0f;
    for (int64_t b = 0; b < n / QK_K; b++) {
        codes_q3_K(&x[b], q);
        scales_q3_K(x[b].scales, sc);
        int isum = 0;
        for (int sb = 0; sb < 16; sb++) {
            int d = 0;
            for (int l = 0; l < 16; l++) d += q[16 * sb + l] * y[b].qs[16 * sb + l];
            isum += sc[sb] * d;
        }
        sum += y[b].d * FP16(x[b].d) * (float)isum;
    }
    *s = sum;
}

/* Q4_K and Q5_K share everything but the codes */
static inline float dot_q45_K_block(const int q[QK_K], const uint8_t scales[12], pyrt_fp16 d,
                                    pyrt_fp16 dmin, const block_q8_K *y) {
    int isum = 0, imin = 0;
    for (int j = 0; j < 8; j++) {
        int sc, m, dj = 0;
        scale_min_k4(j, scales, &sc, &m);
        for (int l = 0; l < 32; l++) dj += q[32 * j + l] * y->qs[32 * j + l];
        isum += sc * dj;
        imin += m * (y->bsums[2 * j] + y->bsums[2 * j + 1]);
    }
    return y->d * FP16(d) * (float)isum - y->d * FP16(dmin) * (float)imin;
}

static void dot_q4_K(int64_t n, float *s, const void *w, const void *a) {
    const block_q4_K *x = (const block_q4_K *)w;      /* [n/256] */
    const block_q8_K *y = (const block_q8_K *)a;      /* [n/256] */
    int q[QK_K];
    float sum = 0.0f;
    for (int64_t b = 0; b < n / QK_K; b++) {
        codes_q4_K(&x[b], q);
        sum += dot_q45_K_block(q, x[b].scales, x[b].d, x[b].dmin, &y[b]);
    }
    *s = sum;
}

static void dot_q5_K(int64_t n, float *s, const void *w, const void *a) {
    const block_q5_K *x = (const block_q5_K *)w;      /* [n/256] */
    const block_q8_K *y = (const block_q8_K *)a;      /* [n/256] */
    int q[QK_K];
    float sum = 0.0f;
    for (int64_t b = 0; b < n / QK_K; b++) {
        codes_q5_K(&x[b], q);
        sum += dot_q45_K_block(q, x[b].scales, x[b].d, x[b].dmin, &y[b]);
    }
    *s = sum;
}

static void dot_q6_K(int64_t n, float *s, const void *w, const void *a) {
    const block_q6_K *x = (const block_q6_K *)w;      /* [n/256] */
    const block_q8_K *y = (const block_q8_K *)a;      /* [n/256] */
    int q[QK_K];
    float sum = 0.0f;
    for (int64_t b = 0; b < n / QK_K; b++) {
        codes_q6_K(&x[b], q);
        int isum = 0;
        for (int sb = 0; sb < 16; sb++) {
            int d = 0;
            for (int l = 0; l < 16; l++) d += q[16 * sb + l] * y[b].qs[16 * sb + l];
            isum += x[b].scales[sb] * d;
        }
        sum += y[b].d * FP16(x[b].d) * (float)isum;
    }
    *s = sum;
}

/* ======================================================================== */

void pyrt_fill_kquants_scalar(pyrt_kernels *k) {
    k->type[PYRT_TYPE_Q2_K].dequantize = dequant_q2_K;
    k->type[PYRT_TYPE_Q3_K].dequantize = dequant_q3_K;
    k->type[PYRT_TYPE_Q4_K].dequantize = dequant_q4_K;
    k->type[PYRT_TYPE_Q5_K].dequantize = dequant_q5_K;
    k->type[PYRT_TYPE_Q6_K].dequantize = dequant_q6_K;

    k->type[PYRT_TYPE_Q8_K].quantize_act = quant_q8_K;

    k->type[PYRT_TYPE_Q2_K].vec_dot = dot_q2_K;
    k->type[PYRT_TYPE_Q3_K].vec_dot = dot_q3_K;
    k->type[PYRT_TYPE_Q4_K].vec_dot = dot_q4_K;
    k->type[PYRT_TYPE_Q5_K].vec_dot = dot_q5_K;
    k->type[PYRT_TYPE_Q6_K].vec_dot = dot_q6_K;
}
