/* generic/quants.c — scalar reference kernels: the readable definition of every
 * dequantize / quantize-activation / dot product, and the oracle the SIMD
 * variants are tested against.
 *
 * Numerics follow ggml's reference (ggml-quants.c, ggml-cpu/quants.c *_generic):
 *   - activations: Q8_0 / Q8_1 with d = amax/127 (fp16), q = roundf(x/d)
 *     (half away from zero); Q8_1 also stores s = fp16(d * sum(q)) with the
 *     float (not fp16-rounded) d.
 *   - dot products: exact integer sum per 32-block, times the fp16 scales,
 *     accumulated in float; Q4_1/Q5_1 add m_w * s_a per block.
 * Dequantization is bit-identical to gguf.quants on every target: d*q is exact
 * in f32 (fp16 d has 11 significant bits, |q| < 2^8), so whether a compiler
 * fuses d*q + m into an FMA does not change the result. */
#include <math.h>
#include <string.h>
#include "kernels.h"

/* ---- small helpers ----------------------------------------------------- */

#define FP16(h) pyrt_fp16_to_fp32(h)

/* Q4/Q5 element j of a block: low nibble of byte j (j < 16), high nibble of
 * byte j-16 (j >= 16); Q5 adds bit j of qh as bit 4. */
static inline uint32_t load_qh(const uint8_t qh[4]) {
    uint32_t v;
    memcpy(&v, qh, 4);   /* GGUF is little-endian; so are all our targets */
    return v;
}

/* ======================================================================== */
/* dequantize: weight type -> f32                                            */
/* ======================================================================== */

static void dequant_f32(const void *src, float *dst, int64_t n) {
    memcpy(dst, src, (size_t)n * sizeof(float));
}

static void dequant_f16(const void *src, float *dst, int64_t n) {
    const pyrt_fp16 *x = (const pyrt_fp16 *)src;
    for (int64_t i = 0; i < n; i++) dst[i] = pyrt_fp16_to_fp32(x[i]);
}

static void dequant_bf16(const void *src, float *dst, int64_t n) {
    const uint16_t *x = (const uint16_t *)src;
    for (int64_t i = 0; i < n; i++) dst[i] = pyrt_bf16_to_fp32(x[i]);
}

static void dequant_q8_0(const void *src, float *dst, int64_t n) {
    const block_q8_0 *x = (const block_q8_0 *)src;    /* [n/32] */
    for (int64_t b = 0; b < n / QK8_0; b++) {
        const float d = FP16(x[b].d);
        for (int j = 0; j < QK8_0; j++) dst[b * QK8_0 + j] = (float)x[b].qs[j] * d;
    }
}

static void dequant_q4_0(const void *src, float *dst, int64_t n) {
    const block_q4_0 *x = (const block_q4_0 *)src;    /* [n/32] */
    for (int64_t b = 0; b < n / QK4_0; b++) {
        const float d = FP16(x[b].d);
        float *y = dst + b * QK4_0;
        for (int j = 0; j < QK4_0 / 2; j++) {
            y[j]          = (float)((x[b].qs[j] & 0x0F) - 8) * d;
            y[j + QK4_0/2] = (float)((x[b].qs[j] >> 4) - 8) * d;
        }
    }
}

static void dequant_q4_1(const void *src, float *dst, int64_t n) {
    const block_q4_1 *x = (const block_q4_1 *)src;    /* [n/32] */
    for (int64_t b = 0; b < n / QK4_1; b++) {
        const float d = FP16(x[b].d), m = FP16(x[b].m);
        float *y = dst + b * QK4_1;
        for (int j = 0; j < QK4_1 / 2; j++) {
            y[j]           = (float)(x[b].qs[j] & 0x0F) * d + m;
            y[j + QK4_1/2] = (float)(x[b].qs[j] >> 4) * d + m;
        }
    }
}

static void dequant_q5_0(const void *src, float *dst, int64_t n) {
    const block_q5_0 *x = (const block_q5_0 *)src;    /* [n/32] */
    for (int64_t b = 0; b < n / QK5_0; b++) {
        const float d = FP16(x[b].d);
        const uint32_t qh = load_qh(x[b].qh);
        float *y = dst + b * QK5_0;
        for (int j = 0; j < QK5_0 / 2; j++) {
            const int q0 = (x[b].qs[j] & 0x0F) | (int)(((qh >> j) & 1u) << 4);
            const int q1 = (x[b].qs[j] >> 4)   | (int)(((qh >> (j + 16)) & 1u) << 4);
            y[j]           = (float)(q0 - 16) * d;
            y[j + QK5_0/2] = (float)(q1 - 16) * d;
        }
    }
}

static void dequant_q5_1(const void *src, float *dst, int64_t n) {
    const block_q5_1 *x = (const block_q5_1 *)src;    /* [n/32] */
    for (int64_t b = 0; b < n / QK5_1; b++) {
        const float d = FP16(x[b].d), m = FP16(x[b].m);
        const uint32_t qh = load_qh(x[b].qh);
        float *y = dst + b * QK5_1;
        for (int j = 0; j < QK5_1 / 2; j++) {
            const int q0 = (x[b].qs[j] & 0x0F) | (int)(((qh >> j) & 1u) << 4);
            const int q1 = (x[b].qs[j] >> 4)   | (int)(((qh >> (j + 16)) & 1u) << 4);
            y[j]           = (float)q0 * d + m;
            y[j + QK5_1/2] = (float)q1 * d + m;
        }
    }
}

/* ======================================================================== */
/* quantize activations: f32 -> act type                                     */
/* ======================================================================== */

static void quant_f32(const float *src, void *dst, int64_t n) {
    memcpy(dst, src, (size_t)n * sizeof(float));
}

static void quant_f16(const float *src, void *dst, int64_t n) {
    pyrt_fp16 *y = (pyrt_fp16 *)dst;
    for (int64_t i = 0; i < n; i++) y[i] = pyrt_fp32_to_fp16(src[i]);
}

static void quant_bf16(const float *src, void *dst, int64_t n) {
    uint16_t *y = (uint16_t *)dst;
    for (int64_t i = 0; i < n; i++) y[i] = pyrt_fp32_to_bf16(src[i]);
}

/* One 32-block to int8 with d = amax/127; returns d (float) and sum(q). */
static inline float quant_block_q8(const float *x, int8_t *q, int *sum) {
    float amax = 0.0f;
    for (int j = 0; j < 32; j++) {
        const float a = fabsf(x[j]);
        amax = amax > a ? amax : a;
    }
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    int s = 0;
    for (int j = 0; j < 32; j++) {
        q[j] = (int8_t)roundf(x[j] * id);   /* half away from zero, as ggml's ref */
        s += q[j];
    }
    *sum = s;
    return d;
}

static void quant_q8_0(const float *src, void *dst, int64_t n) {
    block_q8_0 *y = (block_q8_0 *)dst;                 /* [n/32] */
    for (int64_t b = 0; b < n / QK8_0; b++) {
        int sum;
        const float d = quant_block_q8(src + b * QK8_0, y[b].qs, &sum);
        y[b].d = pyrt_fp32_to_fp16(d);
    }
}

static void quant_q8_1(const float *src, void *dst, int64_t n) {
    block_q8_1 *y = (block_q8_1 *)dst;                 /* [n/32] */
    for (int64_t b = 0; b < n / QK8_1; b++) {
        int sum;
        const float d = quant_block_q8(src + b * QK8_1, y[b].qs, &sum);
        y[b].d = pyrt_fp32_to_fp16(d);
        y[b].s = pyrt_fp32_to_fp16((float)sum * d);
    }
}

/* ======================================================================== */
/* vec_dot: weight row . activation row                                      */
/* ======================================================================== */

static void dot_f32(int64_t n, float *s, const void *w, const void *a) {
    const float *x = (const float *)w, *y = (const float *)a;
    float sum = 0.0f;
    for (int64_t i = 0; i < n; i++) sum += x[i] * y[i];
    *s = sum;
}

static float dot_f16_f32acc(int64_t n, const pyrt_fp16 *x, const pyrt_fp16 *y) {
    float sum = 0.0f;
    for (int64_t i = 0; i < n; i++) sum += pyrt_fp16_to_fp32(x[i]) * pyrt_fp16_to_fp32(y[i]);
    return sum;
}

static void dot_f16(int64_t n, float *s, const void *w, const void *a) {
    *s = dot_f16_f32acc(n, (const pyrt_fp16 *)w, (const pyrt_fp16 *)a);
}

static void dot_bf16(int64_t n, float *s, const void *w, const void *a) {
    const uint16_t *x = (const uint16_t *)w, *y = (const uint16_t *)a;
    float sum = 0.0f;
    for (int64_t i = 0; i < n; i++) sum += pyrt_bf16_to_fp32(x[i]) * pyrt_bf16_to_fp32(y[i]);
    *s = sum;
}

static void dot_q8_0(int64_t n, float *s, const void *w, const void *a) {
    const block_q8_0 *x = (const block_q8_0 *)w, *y = (const block_q8_0 *)a;   /* [n/32] */
    float sum = 0.0f;
    for (int64_t b = 0; b < n / QK8_0; b++) {
        int sumi = 0;
        for (int j = 0; j < QK8_0; j++) sumi += x[b].qs[j] * y[b].qs[j];
        sum += (float)sumi * (FP16(x[b].d) * FP16(y[b].d));
    }
    *s = sum;
}

static void dot_q4_0(int64_t n, float *s, const void *w, const void *a) {
    const block_q4_0 *x = (const block_q4_0 *)w;      /* [n/32] */
    const block_q8_0 *y = (const block_q8_0 *)a;      /* [n/32] */
    float sum = 0.0f;
    for (int64_t b = 0; b < n / QK4_0; b++) {
        int sumi = 0;
        for (int j = 0; j < QK4_0 / 2; j++) {
            sumi += ((x[b].qs[j] & 0x0F) - 8) * y[b].qs[j];
            sumi += ((x[b].qs[j] >> 4) - 8) * y[b].qs[j + QK4_0 / 2];
        }
        sum += (float)sumi * FP16(x[b].d) * FP16(y[b].d);
    }
    *s = sum;
}

static void dot_q4_1(int64_t n, float *s, const void *w, const void *a) {
    const block_q4_1 *x = (const block_q4_1 *)w;      /* [n/32] */
    const block_q8_1 *y = (const block_q8_1 *)a;      /* [n/32] */
    float sum = 0.0f;
    for (int64_t b = 0; b < n / QK4_1; b++) {
        int sumi = 0;
        for (int j = 0; j < QK4_1 / 2; j++) {
            sumi += (x[b].qs[j] & 0x0F) * y[b].qs[j];
            sumi += (x[b].qs[j] >> 4) * y[b].qs[j + QK4_1 / 2];
        }
        sum += (FP16(x[b].d) * FP16(y[b].d)) * (float)sumi + FP16(x[b].m) * FP16(y[b].s);
    }
    *s = sum;
}

static void dot_q5_0(int64_t n, float *s, const void *w, const void *a) {
    const block_q5_0 *x = (const block_q5_0 *)w;      /* [n/32] */
    const block_q8_0 *y = (const block_q8_0 *)a;      /* [n/32] */
    float sum = 0.0f;
    for (int64_t b = 0; b < n / QK5_0; b++) {
        const uint32_t qh = load_qh(x[b].qh);
        int sumi = 0;
        for (int j = 0; j < QK5_0 / 2; j++) {
            const int q0 = ((x[b].qs[j] & 0x0F) | (int)(((qh >> j) & 1u) << 4)) - 16;
            const int q1 = ((x[b].qs[j] >> 4)   | (int)(((qh >> (j + 16)) & 1u) << 4)) - 16;
            sumi += q0 * y[b].qs[j] + q1 * y[b].qs[j + QK5_0 / 2];
        }
        sum += (FP16(x[b].d) * FP16(y[b].d)) * (float)sumi;
    }
    *s = sum;
}

static void dot_q5_1(int64_t n, float *s, const void *w, const void *a) {
    const block_q5_1 *x = (const block_q5_1 *)w;      /* [n/32] */
    const block_q8_1 *y = (const block_q8_1 *)a;      /* [n/32] */
    float sum = 0.0f;
    for (int64_t b = 0; b < n / QK5_1; b++) {
        const uint32_t qh = load_qh(x[b].qh);
        int sumi = 0;
        for (int j = 0; j < QK5_1 / 2; j++) {
            const int q0 = (x[b].qs[j] & 0x0F) | (int)(((qh >> j) & 1u) << 4);
            const int q1 = (x[b].qs[j] >> 4)   | (int)(((qh >> (j + 16)) & 1u) << 4);
            sumi += q0 * y[b].qs[j] + q1 * y[b].qs[j + QK5_1 / 2];
        }
        sum += (FP16(x[b].d) * FP16(y[b].d)) * (float)sumi + FP16(x[b].m) * FP16(y[b].s);
    }
    *s = sum;
}

/* ======================================================================== */
/* F16 helpers (KV cache, attention)                                         */
/* ======================================================================== */

static void fp32_to_fp16_row(const float *x, pyrt_fp16 *y, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] = pyrt_fp32_to_fp16(x[i]);
}

static void fp16_to_fp32_row(const pyrt_fp16 *x, float *y, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] = pyrt_fp16_to_fp32(x[i]);
}

static void mad_f16(int64_t n, float *y, const pyrt_fp16 *x, float v) {
    for (int64_t i = 0; i < n; i++) y[i] += pyrt_fp16_to_fp32(x[i]) * v;
}

/* ======================================================================== */

void pyrt_fill_quants_scalar(pyrt_kernels *k) {
    memset(k, 0, sizeof *k);
    k->name = "scalar";

    k->type[PYRT_TYPE_F32].dequantize  = dequant_f32;
    k->type[PYRT_TYPE_F16].dequantize  = dequant_f16;
    k->type[PYRT_TYPE_BF16].dequantize = dequant_bf16;
    k->type[PYRT_TYPE_Q8_0].dequantize = dequant_q8_0;
    k->type[PYRT_TYPE_Q4_0].dequantize = dequant_q4_0;
    k->type[PYRT_TYPE_Q4_1].dequantize = dequant_q4_1;
    k->type[PYRT_TYPE_Q5_0].dequantize = dequant_q5_0;
    k->type[PYRT_TYPE_Q5_1].dequantize = dequant_q5_1;

    k->type[PYRT_TYPE_F32].quantize_act  = quant_f32;
    k->type[PYRT_TYPE_F16].quantize_act  = quant_f16;
    k->type[PYRT_TYPE_BF16].quantize_act = quant_bf16;
    k->type[PYRT_TYPE_Q8_0].quantize_act = quant_q8_0;
    k->type[PYRT_TYPE_Q8_1].quantize_act = quant_q8_1;

    k->type[PYRT_TYPE_F32].vec_dot  = dot_f32;
    k->type[PYRT_TYPE_F16].vec_dot  = dot_f16;
    k->type[PYRT_TYPE_BF16].vec_dot = dot_bf16;
    k->type[PYRT_TYPE_Q8_0].vec_dot = dot_q8_0;
    k->type[PYRT_TYPE_Q4_0].vec_dot = dot_q4_0;
    k->type[PYRT_TYPE_Q4_1].vec_dot = dot_q4_1;
    k->type[PYRT_TYPE_Q5_0].vec_dot = dot_q5_0;
    k->type[PYRT_TYPE_Q5_1].vec_dot = dot_q5_1;

    k->fp32_to_fp16 = fp32_to_fp16_row;
    k->fp16_to_fp32 = fp16_to_fp32_row;
    k->dot_f16      = dot_f16_f32acc;
    k->mad_f16      = mad_f16;

    pyrt_fill_kquants_scalar(k);
}
