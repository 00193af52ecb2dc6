/* arm/quants_neon.c — AArch64 Advanced SIMD kernels, same signatures as
 * generic/quants.c. Baseline NEON (every AArch64 CPU) plus a second set of the
 * quantized dot products that uses the Armv8.2 dot-product instruction
 * (SDOT, vdotq_s32); pyrt_fill_quants_neon() picks that set only when the
 * kernel reports it (Linux: getauxval(AT_HWCAP) & HWCAP_ASIMDDP; macOS:
 * sysctl hw.optional.arm.FEAT_DotProd). The dotprod functions carry a
 * target attribute, so the file builds with the default -march and the
 * library still runs on a Cortex-A53/A57/A72 class CPU.
 *
 * Numerics follow ggml's NEON path (ggml-cpu/arch/arm/quants.c):
 *   - activations: d = amax/127, id = 1/d, q = round-to-nearest-even(x*id)
 *     (vcvtnq; the scalar reference rounds half away from zero, so an exact
 *     .5 tie may differ by one step);
 *   - quantized dots: blocks in pairs, one 4-lane f32 accumulator per parity,
 *     acc += float(int32x4 lane sums) * (d_w*d_a); an odd last block goes to a
 *     scalar tail; min terms (Q4_1/Q5_1) accumulate in scalars. Without
 *     dotprod the lane sums are formed as ggml's fallback does (vmull_s8 on
 *     each half, pairwise widening add), so lane j holds different elements
 *     than SDOT's lane j: the two paths may differ in the last bits.
 *   - K-quants (Q2_K..Q6_K x Q8_K): the exact integer sum of each super-block,
 *     then generic/kquants.c's float expression; Q8_K quantization is the
 *     reference's algorithm, bit for bit.
 * llama.cpp itself repacks Q4_0 (and more) into interleaved rows on Arm CPUs
 * with dotprod/i8mm, so bit-exactness with its Arm build is not a goal here;
 * the tests hold these kernels to the scalar reference's tolerances.
 * Dequantization is bit-exact with the reference (d*q is exact in f32); the
 * K-quant dequantizers are the scalar ones (AVX2 has none either). */
#if defined(__aarch64__)
#include <arm_neon.h>
#include <string.h>
#include "kernels.h"

#if defined(__linux__)
#include <sys/auxv.h>
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1UL << 20)
#endif
#elif defined(__APPLE__)
#include <sys/sysctl.h>
#endif

/* Functions that use SDOT. GCC wants the architecture level as well (its
 * arm_neon.h declares vdotq_s32 under arch=armv8.2-a+dotprod); every CPU with
 * the dot-product extension implements Armv8.2. */
#if defined(PYRT_NEON_NO_DOTPROD)
#define PYRT_HAVE_DOTPROD_CODE 0
#elif defined(__clang__)
#define PYRT_HAVE_DOTPROD_CODE 1
#define PYRT_TARGET_DOTPROD __attribute__((target("dotprod")))
#else
#define PYRT_HAVE_DOTPROD_CODE 1
#define PYRT_TARGET_DOTPROD __attribute__((target("arch=armv8.2-a+dotprod")))
#endif

/* ---- helpers ------------------------------------------------------------- */

static inline float fp16_1(pyrt_fp16 h) {
    __fp16 f;
    memcpy(&f, &h, sizeof f);
    return (float)f;              /* FCVT: exact */
}

static inline pyrt_fp16 fp16_from(float x) {
    const __fp16 f = (__fp16)x;   /* FCVT: round to nearest even, as quant.h */
    pyrt_fp16 h;
    memcpy(&h, &f, sizeof h);
    return h;
}

/* the fp16 at a byte address (block scales) */
static inline float qt_f16(const uint8_t *p) {
    pyrt_fp16 h;
    memcpy(&h, p, 2);
    return fp16_1(h);
}

static inline float32x4_t ld4_f16(const pyrt_fp16 *p) {
    return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(p)));
}

static inline float32x4_t bf16_lo(uint16x8_t v) {
    return vreinterpretq_f32_u32(vshll_n_u16(vget_low_u16(v), 16));
}
static inline float32x4_t bf16_hi(uint16x8_t v) {
    return vreinterpretq_f32_u32(vshll_n_u16(vget_high_u16(v), 16));
}

/* 32 bits of qh -> two 16-byte vectors (elements 0..15, 16..31), 0x10 where
 * bit j is set (ggml uses a 2 KiB lookup table; a bit test is as cheap) */
static inline void qh_to_bit4(const uint8_t qh[4], uint8x16_t *lo, uint8x16_t *hi) {
    static const uint8_t bit_of[16] = { 1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128 };
    const uint8x16_t bits = vld1q_u8(bit_of);
    const uint8x16_t b01 = vcombine_u8(vdup_n_u8(qh[0]), vdup_n_u8(qh[1]));
    const uint8x16_t b23 = vcombine_u8(vdup_n_u8(qh[2]), vdup_n_u8(qh[3]));
    const uint8x16_t x10 = vdupq_n_u8(0x10);
    *lo = vandq_u8(vtstq_u8(b01, bits), x10);
    *hi = vandq_u8(vtstq_u8(b23, bits), x10);
}

/* ---- K-quant scales (as generic/kquants.c) ------------------------------------ */

/* Q4_K/Q5_K: sub-block j (0..7) 6-bit scale and min from the 12 packed bytes */
static inline void scale_min_k4(int j, const uint8_t *q, int32_t *sc, int32_t *m) {
    if (j < 4) {
        *sc = q[j] & 63;
        *m  = q[j + 4] & 63;
    } else {
        *sc = (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4);
        *m  = (q[j + 4] >> 4)   | ((q[j] >> 6) << 4);
    }
}

/* Q3_K: the 16 signed 6-bit scales (already minus 32) */
static inline void scales_q3_K(const uint8_t packed[12], int32_t sc[16]) {
    for (int s = 0; s < 16; s++) {
        const int lo = s < 8 ? packed[s] & 0x0F : packed[s - 8] >> 4;
        const int hi = (packed[8 + s % 4] >> (2 * (s / 4))) & 3;
        sc[s] = (lo | (hi << 4)) - 32;
    }
}

/* 16 bytes -> 4 x int32x4 (elements 0-3, 4-7, 8-11, 12-15) */
static inline void widen_u8x16(uint8x16_t v, int32x4_t out[4]) {
    const uint16x8_t lo = vmovl_u8(vget_low_u8(v)), hi = vmovl_u8(vget_high_u8(v));
    out[0] = vreinterpretq_s32_u32(vmovl_u16(vget_low_u16(lo)));
    out[1] = vreinterpretq_s32_u32(vmovl_u16(vget_high_u16(lo)));
    out[2] = vreinterpretq_s32_u32(vmovl_u16(vget_low_u16(hi)));
    out[3] = vreinterpretq_s32_u32(vmovl_u16(vget_high_u16(hi)));
}
static inline void widen_s8x16(int8x16_t v, int32x4_t out[4]) {
    const int16x8_t lo = vmovl_s8(vget_low_s8(v)), hi = vmovl_s8(vget_high_s8(v));
    out[0] = vmovl_s16(vget_low_s16(lo));
    out[1] = vmovl_s16(vget_high_s16(lo));
    out[2] = vmovl_s16(vget_low_s16(hi));
    out[3] = vmovl_s16(vget_high_s16(hi));
}

/* sum_i u[i] * s[i] over 16 elements (Q2_K mins x block sums) */
static inline int dot_u8x16_s16x16(uint8x16_t u, const int16_t *s) {
    const int16x8_t u0 = vreinterpretq_s16_u16(vmovl_u8(vget_low_u8(u)));
    const int16x8_t u1 = vreinterpretq_s16_u16(vmovl_u8(vget_high_u8(u)));
    const int16x8_t s0 = vld1q_s16(s), s1 = vld1q_s16(s + 8);
    int32x4_t acc = vmull_s16(vget_low_s16(u0), vget_low_s16(s0));
    acc = vmlal_s16(acc, vget_high_s16(u0), vget_high_s16(s0));
    acc = vmlal_s16(acc, vget_low_s16(u1), vget_low_s16(s1));
    acc = vmlal_s16(acc, vget_high_s16(u1), vget_high_s16(s1));
    return vaddvq_s32(acc);
}

/* ======================================================================== */
/* vec_dot, quantized: int32x4 lane sums of a0.b0 + a1.b1 (16 bytes each)    */
/* ======================================================================== */

/* ggml's fallback lane layout: lane j = a[2j]b[2j] + a[2j+1]b[2j+1]
 * + a[8+2j]b[8+2j] + a[9+2j]b[9+2j], for each of the two halves. Every single
 * product fits int16 (|q| <= 127 times |a| <= 128). */
static inline int32x4_t dot16_base(int8x16_t a, int8x16_t b) {
    const int16x8_t p0 = vmull_s8(vget_low_s8(a), vget_low_s8(b));
    const int16x8_t p1 = vmull_s8(vget_high_s8(a), vget_high_s8(b));
    return vaddq_s32(vpaddlq_s16(p0), vpaddlq_s16(p1));
}
static inline int32x4_t dot2_base(int8x16_t a0, int8x16_t b0, int8x16_t a1, int8x16_t b1) {
    return vaddq_s32(dot16_base(a0, b0), dot16_base(a1, b1));
}

/* Each quantized dot is written once (arm/quants_neon_qdot.inc) and instantiated
 * per instruction set: NEON_FN(name) names the instance, NEON_ATTR marks it,
 * NEON_DOT1 / NEON_DOT2 form the lane sums of one / two 16-byte products. */
#define NEON_FN(f) f##_base
#define NEON_ATTR
#define NEON_DOT1 dot16_base
#define NEON_DOT2 dot2_base
#include "quants_neon_qdot.inc"
#undef NEON_FN
#undef NEON_ATTR
#undef NEON_DOT1
#undef NEON_DOT2

#if PYRT_HAVE_DOTPROD_CODE
PYRT_TARGET_DOTPROD
static inline int32x4_t dot16_sdot(int8x16_t a, int8x16_t b) {
    return vdotq_s32(vdupq_n_s32(0), a, b);
}
PYRT_TARGET_DOTPROD
static inline int32x4_t dot2_sdot(int8x16_t a0, int8x16_t b0, int8x16_t a1, int8x16_t b1) {
    return vdotq_s32(vdotq_s32(vdupq_n_s32(0), a0, b0), a1, b1);
}
#define NEON_FN(f) f##_sdot
#define NEON_ATTR PYRT_TARGET_DOTPROD
#define NEON_DOT1 dot16_sdot
#define NEON_DOT2 dot2_sdot
#include "quants_neon_qdot.inc"
#undef NEON_FN
#undef NEON_ATTR
#undef NEON_DOT1
#undef NEON_DOT2
#endif

/* ======================================================================== */
/* vec_dot, float types (f32 accumulation, 16 elements per iteration)        */
/* ======================================================================== */

/* LOAD8(p, lo, hi) loads 8 elements as two float32x4 */
#define DOT_F_BODY(LOAD8, SCALAR)                                                   \
    float32x4_t a0 = vdupq_n_f32(0.0f), a1 = a0, a2 = a0, a3 = a0;                  \
    int64_t i = 0;                                                                  \
    for (; i + 16 <= n; i += 16) {                                                  \
        float32x4_t x0, x1, x2, x3, y0, y1, y2, y3;                                 \
        LOAD8(x + i, x0, x1); LOAD8(x + i + 8, x2, x3);                             \
        LOAD8(y + i, y0, y1); LOAD8(y + i + 8, y2, y3);                             \
        a0 = vfmaq_f32(a0, x0, y0); a1 = vfmaq_f32(a1, x1, y1);                     \
        a2 = vfmaq_f32(a2, x2, y2); a3 = vfmaq_f32(a3, x3, y3);                     \
    }                                                                               \
    for (; i + 8 <= n; i += 8) {                                                    \
        float32x4_t x0, x1, y0, y1;                                                 \
        LOAD8(x + i, x0, x1); LOAD8(y + i, y0, y1);                                 \
        a0 = vfmaq_f32(a0, x0, y0); a1 = vfmaq_f32(a1, x1, y1);                     \
    }                                                                               \
    float r = vaddvq_f32(vaddq_f32(vaddq_f32(a0, a1), vaddq_f32(a2, a3)));          \
    for (; i < n; i++) r += SCALAR(x[i]) * SCALAR(y[i]);

#define LOAD8_F32(p, lo, hi) do { lo = vld1q_f32(p); hi = vld1q_f32((p) + 4); } while (0)
#define LOAD8_F16(p, lo, hi) do { lo = ld4_f16(p); hi = ld4_f16((p) + 4); } while (0)
#define LOAD8_BF16(p, lo, hi) do { const uint16x8_t v_ = vld1q_u16(p);                \
                                   lo = bf16_lo(v_); hi = bf16_hi(v_); } while (0)

static inline float id_f32(float v) { return v; }

static void dot_f32(int64_t n, float *s, const void *w, const void *a) {
    const float *x = (const float *)w, *y = (const float *)a;
    DOT_F_BODY(LOAD8_F32, id_f32)
    *s = r;
}

static float dot_f16_f32acc(int64_t n, const pyrt_fp16 *x, const pyrt_fp16 *y) {
    DOT_F_BODY(LOAD8_F16, fp16_1)
    return r;
}

static void dot_f16(int64_t n, float *s, const void *w, const void *a) {
    *s = dot_f16_f32acc(n, (const pyrt_fp16 *)w, (const pyrt_fp16 *)a);
}

static void dot_bf16(int64_t n, float *s, const void *w, const void *a) {
    const uint16_t *x = (const uint16_t *)w, *y = (const uint16_t *)a;
    DOT_F_BODY(LOAD8_BF16, pyrt_bf16_to_fp32)
    *s = r;
}

/* ======================================================================== */
/* dequantize                                                                */
/* ======================================================================== */

/* 16 int8 -> 16 floats times d (one rounding, as the reference) */
static inline void store16_scaled(float *dst, int8x16_t q, float32x4_t d) {
    const int16x8_t lo = vmovl_s8(vget_low_s8(q)), hi = vmovl_s8(vget_high_s8(q));
    vst1q_f32(dst,      vmulq_f32(vcvtq_f32_s32(vmovl_s16(vget_low_s16(lo))), d));
    vst1q_f32(dst + 4,  vmulq_f32(vcvtq_f32_s32(vmovl_s16(vget_high_s16(lo))), d));
    vst1q_f32(dst + 8,  vmulq_f32(vcvtq_f32_s32(vmovl_s16(vget_low_s16(hi))), d));
    vst1q_f32(dst + 12, vmulq_f32(vcvtq_f32_s32(vmovl_s16(vget_high_s16(hi))), d));
}

/* same, q*d + m for unsigned q. d*q is exact in f32 (11-bit fp16 mantissa x
 * 5-bit q), so one FMA rounds exactly like a multiply and an add. */
static inline void store16_scaled_min(float *dst, uint8x16_t q, float32x4_t d, float32x4_t m) {
    const uint16x8_t lo = vmovl_u8(vget_low_u8(q)), hi = vmovl_u8(vget_high_u8(q));
    vst1q_f32(dst,      vfmaq_f32(m, vcvtq_f32_u32(vmovl_u16(vget_low_u16(lo))), d));
    vst1q_f32(dst + 4,  vfmaq_f32(m, vcvtq_f32_u32(vmovl_u16(vget_high_u16(lo))), d));
    vst1q_f32(dst + 8,  vfmaq_f32(m, vcvtq_f32_u32(vmovl_u16(vget_low_u16(hi))), d));
    vst1q_f32(dst + 12, vfmaq_f32(m, vcvtq_f32_u32(vmovl_u16(vget_high_u16(hi))), d));
}

static void dequant_q8_0(const void *src, float *dst, int64_t n) {
    const block_q8_0 *x = (const block_q8_0 *)src;    /* [n/32] */
    for (int64_t b = 0; b < n / 32; b++) {
        const float32x4_t d = vdupq_n_f32(fp16_1(x[b].d));
        store16_scaled(dst + 32 * b,      vld1q_s8(x[b].qs), d);
        store16_scaled(dst + 32 * b + 16, vld1q_s8(x[b].qs + 16), d);
    }
}

static void dequant_q4_0(const void *src, float *dst, int64_t n) {
    const block_q4_0 *x = (const block_q4_0 *)src;    /* [n/32] */
    const uint8x16_t m4 = vdupq_n_u8(0x0F);
    const int8x16_t s8 = vdupq_n_s8(8);
    for (int64_t b = 0; b < n / 32; b++) {
        const uint8x16_t v = vld1q_u8(x[b].qs);
        const float32x4_t d = vdupq_n_f32(fp16_1(x[b].d));
        store16_scaled(dst + 32 * b,      vsubq_s8(vreinterpretq_s8_u8(vandq_u8(v, m4)), s8), d);
        store16_scaled(dst + 32 * b + 16, vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8(v, 4)), s8), d);
    }
}

static void dequant_q4_1(const void *src, float *dst, int64_t n) {
    const block_q4_1 *x = (const block_q4_1 *)src;    /* [n/32] */
    const uint8x16_t m4 = vdupq_n_u8(0x0F);
    for (int64_t b = 0; b < n / 32; b++) {
        const uint8x16_t v = vld1q_u8(x[b].qs);
        const float32x4_t d = vdupq_n_f32(fp16_1(x[b].d)), m = vdupq_n_f32(fp16_1(x[b].m));
        store16_scaled_min(dst + 32 * b,      vandq_u8(v, m4), d, m);
        store16_scaled_min(dst + 32 * b + 16, vshrq_n_u8(v, 4), d, m);
    }
}

static void dequant_q5_0(const void *src, float *dst, int64_t n) {
    const block_q5_0 *x = (const block_q5_0 *)src;    /* [n/32] */
    const uint8x16_t m4 = vdupq_n_u8(0x0F), s16 = vdupq_n_u8(16);
    for (int64_t b = 0; b < n / 32; b++) {
        uint8x16_t hl, hh;
        qh_to_bit4(x[b].qh, &hl, &hh);
        const uint8x16_t v = vld1q_u8(x[b].qs);
        const float32x4_t d = vdupq_n_f32(fp16_1(x[b].d));
        store16_scaled(dst + 32 * b,      vreinterpretq_s8_u8(vsubq_u8(vorrq_u8(vandq_u8(v, m4), hl), s16)), d);
        store16_scaled(dst + 32 * b + 16, vreinterpretq_s8_u8(vsubq_u8(vorrq_u8(vshrq_n_u8(v, 4), hh), s16)), d);
    }
}

static void dequant_q5_1(const void *src, float *dst, int64_t n) {
    const block_q5_1 *x = (const block_q5_1 *)src;    /* [n/32] */
    const uint8x16_t m4 = vdupq_n_u8(0x0F);
    for (int64_t b = 0; b < n / 32; b++) {
        uint8x16_t hl, hh;
        qh_to_bit4(x[b].qh, &hl, &hh);
        const uint8x16_t v = vld1q_u8(x[b].qs);
        const float32x4_t d = vdupq_n_f32(fp16_1(x[b].d)), m = vdupq_n_f32(fp16_1(x[b].m));
        store16_scaled_min(dst + 32 * b,      vorrq_u8(vandq_u8(v, m4), hl), d, m);
        store16_scaled_min(dst + 32 * b + 16, vorrq_u8(vshrq_n_u8(v, 4), hh), d, m);
    }
}

static void fp16_to_fp32_row(const pyrt_fp16 *x, float *y, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const float16x8_t h = vreinterpretq_f16_u16(vld1q_u16(x + i));
        vst1q_f32(y + i, vcvt_f32_f16(vget_low_f16(h)));
        vst1q_f32(y + i + 4, vcvt_high_f32_f16(h));
    }
    for (; i < n; i++) y[i] = fp16_1(x[i]);
}

static void dequant_f16(const void *src, float *dst, int64_t n) {
    fp16_to_fp32_row((const pyrt_fp16 *)src, dst, n);
}

static void dequant_bf16(const void *src, float *dst, int64_t n) {
    const uint16_t *x = (const uint16_t *)src;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const uint16x8_t v = vld1q_u16(x + i);
        vst1q_f32(dst + i, bf16_lo(v));
        vst1q_f32(dst + i + 4, bf16_hi(v));
    }
    for (; i < n; i++) dst[i] = pyrt_bf16_to_fp32(x[i]);
}

/* ======================================================================== */
/* quantize activations                                                      */
/* ======================================================================== */

/* One 32-block as ggml's NEON quantize_row_q8_0/q8_1: returns d = amax/127,
 * stores q = nearest-even(x * (1/d)), and *sum = sum(q). */
static inline float quant_block_q8(const float *x, int8_t *q, int32_t *sum) {
    float32x4_t v[8];
    for (int j = 0; j < 8; j++) v[j] = vld1q_f32(x + 4 * j);
    float32x4_t m0 = vmaxq_f32(vabsq_f32(v[0]), vabsq_f32(v[1]));
    float32x4_t m1 = vmaxq_f32(vabsq_f32(v[2]), vabsq_f32(v[3]));
    float32x4_t m2 = vmaxq_f32(vabsq_f32(v[4]), vabsq_f32(v[5]));
    float32x4_t m3 = vmaxq_f32(vabsq_f32(v[6]), vabsq_f32(v[7]));
    const float amax = vmaxvq_f32(vmaxq_f32(vmaxq_f32(m0, m1), vmaxq_f32(m2, m3)));

    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    int32x4_t acc = vdupq_n_s32(0);
    int16x8_t h[4];
    for (int j = 0; j < 4; j++) {
        const int32x4_t i0 = vcvtnq_s32_f32(vmulq_n_f32(v[2 * j], id));
        const int32x4_t i1 = vcvtnq_s32_f32(vmulq_n_f32(v[2 * j + 1], id));
        acc = vaddq_s32(acc, vaddq_s32(i0, i1));
        h[j] = vcombine_s16(vqmovn_s32(i0), vqmovn_s32(i1));
    }
    vst1q_s8(q,      vcombine_s8(vqmovn_s16(h[0]), vqmovn_s16(h[1])));
    vst1q_s8(q + 16, vcombine_s8(vqmovn_s16(h[2]), vqmovn_s16(h[3])));
    *sum = vaddvq_s32(acc);
    return d;
}

static void quant_q8_0(const float *src, void *dst, int64_t n) {
    block_q8_0 *y = (block_q8_0 *)dst;                 /* [n/32] */
    for (int64_t b = 0; b < n / 32; b++) {
        int32_t sum;
        y[b].d = fp16_from(quant_block_q8(src + 32 * b, y[b].qs, &sum));
    }
}

static void quant_q8_1(const float *src, void *dst, int64_t n) {
    block_q8_1 *y = (block_q8_1 *)dst;                 /* [n/32] */
    for (int64_t b = 0; b < n / 32; b++) {
        int32_t sum;
        const float d = quant_block_q8(src + 32 * b, y[b].qs, &sum);
        y[b].d = fp16_from(d);
        y[b].s = fp16_from(d * (float)sum);
    }
}

/* As quantize_row_q8_K_ref (generic/kquants.c), bit for bit: the element of
 * largest magnitude (the first on ties) maps to -127, q = nearest-even(x *
 * (-127/max)) (vcvtnq rounds as the reference's magic-number add does for
 * |v| <= 127), bsums = sums of 16, d = 1/iscale. */
static void quant_q8_K(const float *src, void *dst, int64_t n) {
    block_q8_K *y = (block_q8_K *)dst;                 /* [n/256] */
    for (int64_t b = 0; b < n / QK_K; b++, src += QK_K) {
        float32x4_t m = vdupq_n_f32(0.0f);
        /* maxNum ignores NaN, as the reference's `a > amax` does */
        for (int j = 0; j < QK_K; j += 4) m = vmaxnmq_f32(m, vabsq_f32(vld1q_f32(src + j)));
        const float amax = vmaxnmvq_f32(m);
        if (amax == 0.0f) {
            memset(&y[b], 0, sizeof y[b]);
            continue;
        }
        int first = 0;
        while (first < QK_K - 1 && __builtin_fabsf(src[first]) != amax) first++;
        const float iscale = -127.0f / src[first];
        const float32x4_t is = vdupq_n_f32(iscale);
        const int32x4_t top = vdupq_n_s32(127);
        for (int j = 0; j < QK_K; j += 16) {
            int32x4_t v[4];
            for (int k = 0; k < 4; k++) v[k] = vminq_s32(vcvtnq_s32_f32(vmulq_f32(is, vld1q_f32(src + j + 4 * k))), top);
            const int16x8_t h0 = vcombine_s16(vqmovn_s32(v[0]), vqmovn_s32(v[1]));
            const int16x8_t h1 = vcombine_s16(vqmovn_s32(v[2]), vqmovn_s32(v[3]));
            const int8x16_t q = vcombine_s8(vqmovn_s16(h0), vqmovn_s16(h1));
            vst1q_s8(y[b].qs + j, q);
            y[b].bsums[j / 16] = (int16_t)vaddlvq_s8(q);
        }
        y[b].d = 1.0f / iscale;
    }
}

static void fp32_to_fp16_row(const float *x, pyrt_fp16 *y, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const float16x8_t h = vcvt_high_f16_f32(vcvt_f16_f32(vld1q_f32(x + i)), vld1q_f32(x + i + 4));
        vst1q_u16(y + i, vreinterpretq_u16_f16(h));
    }
    for (; i < n; i++) y[i] = fp16_from(x[i]);
}

static void quant_f16(const float *src, void *dst, int64_t n) {
    fp32_to_fp16_row(src, (pyrt_fp16 *)dst, n);
}

/* f32 -> bf16, round to nearest even, NaN -> quiet NaN (as quant.h) */
static void quant_bf16(const float *src, void *dst, int64_t n) {
    uint16_t *y = (uint16_t *)dst;
    const uint32x4_t abs_mask = vdupq_n_u32(0x7fffffffu), inf = vdupq_n_u32(0x7f800000u);
    const uint32x4_t bias = vdupq_n_u32(0x7fffu), one = vdupq_n_u32(1), qbit = vdupq_n_u32(64u << 16);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint16x4_t r[2];
        for (int k = 0; k < 2; k++) {
            const uint32x4_t u = vreinterpretq_u32_f32(vld1q_f32(src + i + 4 * k));
            const uint32x4_t nan = vcgtq_u32(vandq_u32(u, abs_mask), inf);
            const uint32x4_t rn = vaddq_u32(u, vaddq_u32(bias, vandq_u32(vshrq_n_u32(u, 16), one)));
            r[k] = vshrn_n_u32(vbslq_u32(nan, vorrq_u32(u, qbit), rn), 16);
        }
        vst1q_u16(y + i, vcombine_u16(r[0], r[1]));
    }
    for (; i < n; i++) y[i] = pyrt_fp32_to_bf16(src[i]);
}

/* ======================================================================== */
/* F16 helpers                                                               */
/* ======================================================================== */

static void mad_f16(int64_t n, float *y, const pyrt_fp16 *x, float v) {
    const float32x4_t vv = vdupq_n_f32(v);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const float16x8_t h = vreinterpretq_f16_u16(vld1q_u16(x + i));
        vst1q_f32(y + i,     vfmaq_f32(vld1q_f32(y + i),     vcvt_f32_f16(vget_low_f16(h)), vv));
        vst1q_f32(y + i + 4, vfmaq_f32(vld1q_f32(y + i + 4), vcvt_high_f32_f16(h), vv));
    }
    for (; i < n; i++) y[i] += fp16_1(x[i]) * v;
}

/* ======================================================================== */
/* run-time detection and the table                                          */
/* ======================================================================== */

/* 1 if this CPU (as the OS reports it) has the dot-product instructions. */
int pyrt_neon_cpu_has_dotprod(void) {
#if !PYRT_HAVE_DOTPROD_CODE
    return 0;
#elif defined(__linux__)
    return (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0;
#elif defined(__APPLE__)
    int v = 0;
    size_t len = sizeof v;
    if (sysctlbyname("hw.optional.arm.FEAT_DotProd", &v, &len, NULL, 0) != 0) return 0;
    return v != 0;
#elif defined(__ARM_FEATURE_DOTPROD)
    return 1;
#else
    return 0;
#endif
}

/* The table with (use_dotprod = 1) or without SDOT; tests fill both. A
 * request for dotprod on a build without the code gives the baseline set. */
void pyrt_fill_quants_neon_ex(pyrt_kernels *k, int use_dotprod) {
    memset(k, 0, sizeof *k);
    k->name = "neon";

    k->type[PYRT_TYPE_F16].dequantize  = dequant_f16;
    k->type[PYRT_TYPE_BF16].dequantize = dequant_bf16;
    k->type[PYRT_TYPE_Q8_0].dequantize = dequant_q8_0;
    k->type[PYRT_TYPE_Q4_0].dequantize = dequant_q4_0;
    k->type[PYRT_TYPE_Q4_1].dequantize = dequant_q4_1;
    k->type[PYRT_TYPE_Q5_0].dequantize = dequant_q5_0;
    k->type[PYRT_TYPE_Q5_1].dequantize = dequant_q5_1;

    k->type[PYRT_TYPE_F16].quantize_act  = quant_f16;
    k->type[PYRT_TYPE_BF16].quantize_act = quant_bf16;
    k->type[PYRT_TYPE_Q8_0].quantize_act = quant_q8_0;
    k->type[PYRT_TYPE_Q8_1].quantize_act = quant_q8_1;
    k->type[PYRT_TYPE_Q8_K].quantize_act = quant_q8_K;

    k->type[PYRT_TYPE_F32].vec_dot  = dot_f32;
    k->type[PYRT_TYPE_F16].vec_dot  = dot_f16;
    k->type[PYRT_TYPE_BF16].vec_dot = dot_bf16;
    k->type[PYRT_TYPE_Q8_0].vec_dot = dot_q8_0_base;
    k->type[PYRT_TYPE_Q4_0].vec_dot = dot_q4_0_base;
    k->type[PYRT_TYPE_Q4_1].vec_dot = dot_q4_1_base;
    k->type[PYRT_TYPE_Q5_0].vec_dot = dot_q5_0_base;
    k->type[PYRT_TYPE_Q5_1].vec_dot = dot_q5_1_base;
    k->type[PYRT_TYPE_Q8_0].gemm = gemm_q8_0_base;
    k->type[PYRT_TYPE_Q4_0].gemm = gemm_q4_0_base;
    k->type[PYRT_TYPE_Q4_1].gemm = gemm_q4_1_base;
    k->type[PYRT_TYPE_Q5_0].gemm = gemm_q5_0_base;
    k->type[PYRT_TYPE_Q5_1].gemm = gemm_q5_1_base;
    k->type[PYRT_TYPE_Q2_K].vec_dot = dot_q2_K_base;
    k->type[PYRT_TYPE_Q3_K].vec_dot = dot_q3_K_base;
    k->type[PYRT_TYPE_Q4_K].vec_dot = dot_q4_K_base;
    k->type[PYRT_TYPE_Q5_K].vec_dot = dot_q5_K_base;
    k->type[PYRT_TYPE_Q6_K].vec_dot = dot_q6_K_base;
    k->type[PYRT_TYPE_Q4_K].gemm = gemv_q4_K_base;
    k->type[PYRT_TYPE_Q5_K].gemm = gemv_q5_K_base;
    k->type[PYRT_TYPE_Q6_K].gemm = gemv_q6_K_base;
#if PYRT_HAVE_DOTPROD_CODE
    if (use_dotprod) {
        k->name = "neon+dotprod";
        k->type[PYRT_TYPE_Q8_0].vec_dot = dot_q8_0_sdot;
        k->type[PYRT_TYPE_Q4_0].vec_dot = dot_q4_0_sdot;
        k->type[PYRT_TYPE_Q4_1].vec_dot = dot_q4_1_sdot;
        k->type[PYRT_TYPE_Q5_0].vec_dot = dot_q5_0_sdot;
        k->type[PYRT_TYPE_Q5_1].vec_dot = dot_q5_1_sdot;
        k->type[PYRT_TYPE_Q8_0].gemm = gemm_q8_0_sdot;
        k->type[PYRT_TYPE_Q4_0].gemm = gemm_q4_0_sdot;
        k->type[PYRT_TYPE_Q4_1].gemm = gemm_q4_1_sdot;
        k->type[PYRT_TYPE_Q5_0].gemm = gemm_q5_0_sdot;
        k->type[PYRT_TYPE_Q5_1].gemm = gemm_q5_1_sdot;
        k->type[PYRT_TYPE_Q2_K].vec_dot = dot_q2_K_sdot;
        k->type[PYRT_TYPE_Q3_K].vec_dot = dot_q3_K_sdot;
        k->type[PYRT_TYPE_Q4_K].vec_dot = dot_q4_K_sdot;
        k->type[PYRT_TYPE_Q5_K].vec_dot = dot_q5_K_sdot;
        k->type[PYRT_TYPE_Q6_K].vec_dot = dot_q6_K_sdot;
        k->type[PYRT_TYPE_Q4_K].gemm = gemv_q4_K_sdot;
        k->type[PYRT_TYPE_Q5_K].gemm = gemv_q5_K_sdot;
        k->type[PYRT_TYPE_Q6_K].gemm = gemv_q6_K_sdot;
    }
#else
    (void)use_dotprod;
#endif

    k->fp32_to_fp16 = fp32_to_fp16_row;
    k->fp16_to_fp32 = fp16_to_fp32_row;
    k->dot_f16      = dot_f16_f32acc;
    k->mad_f16      = mad_f16;
}

void pyrt_fill_quants_neon(pyrt_kernels *k) {
    pyrt_fill_quants_neon_ex(k, pyrt_neon_cpu_has_dotprod());
}

#endif /* __aarch64__ */
