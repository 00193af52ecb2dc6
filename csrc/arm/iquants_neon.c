/* arm/iquants_neon.c — AArch64 NEON kernels for IQ4_NL (x Q8_0) and IQ4_XS
 * (x Q8_K), same signatures as generic/iquants.c, baseline and SDOT sets
 * chosen as in arm/quants_neon.c (pyrt_neon_cpu_has_dotprod()).
 *
 * The 4-bit indices become int8 levels with one table lookup (vqtbl1q_s8);
 * each 32-element block's integer sum with the activations is exact (baseline:
 * vmull_s8 + pairwise widening adds; SDOT: vdotq_s32), and the float part is
 * the reference's expression (generic/iquants.c), contracted to FMAs as ggml's
 * NEON build compiles it. llama.cpp repacks IQ4_NL on Arm CPUs with dotprod,
 * so, as for the other NEON kernels, bit-exactness with its Arm build is not
 * a goal: the tests hold these to the scalar reference's tolerances.
 * Dequantization is bit-exact with the reference (same products). */
#if defined(__aarch64__)
#include <arm_neon.h>
#include <string.h>
#include "kernels.h"

#if defined(PYRT_NEON_NO_DOTPROD)
#define PYRT_HAVE_DOTPROD_CODE 0
#elif defined(__clang__)
#define PYRT_HAVE_DOTPROD_CODE 1
#define PYRT_TARGET_DOTPROD __attribute__((target("dotprod")))
#else
#define PYRT_HAVE_DOTPROD_CODE 1
#define PYRT_TARGET_DOTPROD __attribute__((target("arch=armv8.2-a+dotprod")))
#endif

int pyrt_neon_cpu_has_dotprod(void);   /* arm/quants_neon.c */

static const int8_t kvalues[16] = PYRT_KVALUES_IQ4NL;

static inline float fp16_1(pyrt_fp16 h) {
    __fp16 f;
    memcpy(&f, &h, sizeof f);
    return (float)f;
}

/* 16 packed index bytes -> levels of elements 0..15 (*lo) and 16..31 (*hi) */
static inline void levels32(const uint8_t *qs, int8x16_t *lo, int8x16_t *hi) {
    const int8x16_t lut = vld1q_s8(kvalues);
    const uint8x16_t b = vld1q_u8(qs);
    *lo = vqtbl1q_s8(lut, vandq_u8(b, vdupq_n_u8(0x0f)));
    *hi = vqtbl1q_s8(lut, vshrq_n_u8(b, 4));
}

/* exact sum of 32 levels times 32 int8 activations */
static inline int32_t isum32_base(const uint8_t *qs, const int8_t *q) {
    int8x16_t lo, hi;
    levels32(qs, &lo, &hi);
    const int8x16_t a0 = vld1q_s8(q), a1 = vld1q_s8(q + 16);
    int32x4_t acc = vdupq_n_s32(0);
    acc = vpadalq_s16(acc, vmull_s8(vget_low_s8(lo), vget_low_s8(a0)));
    acc = vpadalq_s16(acc, vmull_s8(vget_high_s8(lo), vget_high_s8(a0)));
    acc = vpadalq_s16(acc, vmull_s8(vget_low_s8(hi), vget_low_s8(a1)));
    acc = vpadalq_s16(acc, vmull_s8(vget_high_s8(hi), vget_high_s8(a1)));
    return vaddvq_s32(acc);
}

#if PYRT_HAVE_DOTPROD_CODE
PYRT_TARGET_DOTPROD
static inline int32_t isum32_sdot(const uint8_t *qs, const int8_t *q) {
    int8x16_t lo, hi;
    levels32(qs, &lo, &hi);
    int32x4_t acc = vdotq_s32(vdupq_n_s32(0), lo, vld1q_s8(q));
    acc = vdotq_s32(acc, hi, vld1q_s8(q + 16));
    return vaddvq_s32(acc);
}
#endif

/* The float part is generic/iquants.c's; ISUM picks the integer kernel. */
#define DOT_IQ4_NL(NAME, ISUM, ATTR)                                                 \
    ATTR static void NAME(int64_t n, float *s, const void *w, const void *a) {       \
        const block_iq4_nl *x = (const block_iq4_nl *)w;   /* [n/32] */              \
        const block_q8_0 *y = (const block_q8_0 *)a;       /* [n/32] */              \
        float sumf = 0.0f;                                                           \
        for (int64_t b = 0; b < n / QK4_NL; b++)                                     \
            sumf += fp16_1(y[b].d) * fp16_1(x[b].d) * (float)ISUM(x[b].qs, y[b].qs); \
        *s = sumf;                                                                   \
    }

#define DOT_IQ4_XS(NAME, ISUM, ATTR)                                                          \
    ATTR static void NAME(int64_t n, float *s, const void *w, const void *a) {                \
        const block_iq4_xs *x = (const block_iq4_xs *)w;   /* [n/256] */                      \
        const block_q8_K *y = (const block_q8_K *)a;       /* [n/256] */                      \
        float sumf = 0.0f;                                                                    \
        for (int64_t b = 0; b < n / QK_K; b++) {                                              \
            const float d4d8 = fp16_1(x[b].d) * y[b].d;                                       \
            for (int sb = 0; sb < QK_K / 32; sb++) {                                          \
                const int ls = ((x[b].scales_l[sb / 2] >> 4 * (sb % 2)) & 0xf) |              \
                               (((x[b].scales_h >> 2 * sb) & 3) << 4);                        \
                const float dl = d4d8 * (float)(ls - 32);                                     \
                sumf += dl * (float)ISUM(x[b].qs + 16 * sb, y[b].qs + 32 * sb);               \
            }                                                                                 \
        }                                                                                     \
        *s = sumf;                                                                            \
    }

DOT_IQ4_NL(dot_iq4_nl_base, isum32_base, )
DOT_IQ4_XS(dot_iq4_xs_base, isum32_base, )
#if PYRT_HAVE_DOTPROD_CODE
DOT_IQ4_NL(dot_iq4_nl_sdot, isum32_sdot, PYRT_TARGET_DOTPROD)
DOT_IQ4_XS(dot_iq4_xs_sdot, isum32_sdot, PYRT_TARGET_DOTPROD)
#endif

/* 32 levels times d -> dst[0..32) (each product exact or rounded once, as the reference) */
static inline void store_levels(float *dst, const uint8_t *qs, float d) {
    int8x16_t h[2];
    levels32(qs, &h[0], &h[1]);
    for (int k = 0; k < 2; k++) {
        const int16x8_t w0 = vmovl_s8(vget_low_s8(h[k])), w1 = vmovl_s8(vget_high_s8(h[k]));
        vst1q_f32(dst + 16 * k,      vmulq_n_f32(vcvtq_f32_s32(vmovl_s16(vget_low_s16(w0))), d));
        vst1q_f32(dst + 16 * k + 4,  vmulq_n_f32(vcvtq_f32_s32(vmovl_s16(vget_high_s16(w0))), d));
        vst1q_f32(dst + 16 * k + 8,  vmulq_n_f32(vcvtq_f32_s32(vmovl_s16(vget_low_s16(w1))), d));
        vst1q_f32(dst + 16 * k + 12, vmulq_n_f32(vcvtq_f32_s32(vmovl_s16(vget_high_s16(w1))), d));
    }
}

static void dequant_iq4_nl(const void *src, float *dst, int64_t n) {
    const block_iq4_nl *x = (const block_iq4_nl *)src;
    for (int64_t b = 0; b < n / QK4_NL; b++) store_levels(dst + 32 * b, x[b].qs, fp16_1(x[b].d));
}

static void dequant_iq4_xs(const void *src, float *dst, int64_t n) {
    const block_iq4_xs *x = (const block_iq4_xs *)src;
    for (int64_t b = 0; b < n / QK_K; b++) {
        const float d = fp16_1(x[b].d);
        for (int sb = 0; sb < QK_K / 32; sb++) {
            const int ls = ((x[b].scales_l[sb / 2] >> 4 * (sb % 2)) & 0xf) | (((x[b].scales_h >> 2 * sb) & 3) << 4);
            store_levels(dst + QK_K * b + 32 * sb, x[b].qs + 16 * sb, d * (float)(ls - 32));
        }
    }
}

/* Adds the IQ4 entries to a table (clears nothing); use_dotprod as in
 * pyrt_fill_quants_neon_ex. Tests fill both sets. */
void pyrt_fill_iquants_neon_ex(pyrt_kernels *k, int use_dotprod) {
    k->type[PYRT_TYPE_IQ4_NL].dequantize = dequant_iq4_nl;
    k->type[PYRT_TYPE_IQ4_XS].dequantize = dequant_iq4_xs;
    k->type[PYRT_TYPE_IQ4_NL].vec_dot = dot_iq4_nl_base;
    k->type[PYRT_TYPE_IQ4_XS].vec_dot = dot_iq4_xs_base;
#if PYRT_HAVE_DOTPROD_CODE
    if (use_dotprod) {
        k->type[PYRT_TYPE_IQ4_NL].vec_dot = dot_iq4_nl_sdot;
        k->type[PYRT_TYPE_IQ4_XS].vec_dot = dot_iq4_xs_sdot;
    }
#else
    (void)use_dotprod;
#endif
}

void pyrt_fill_iquants_neon(pyrt_kernels *k) {
    pyrt_fill_iquants_neon_ex(k, pyrt_neon_cpu_has_dotprod());
}

#endif /* __aarch64__ */
