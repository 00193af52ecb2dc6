/* quant.h — GGUF block layouts (pinned with static_assert) and fp16/bf16 helpers. */
#ifndef PYRT_QUANT_H
#define PYRT_QUANT_H

#include <stdint.h>
#include <string.h>
#include <assert.h>

typedef uint16_t pyrt_fp16;   /* IEEE half, raw bits */

#define QK4_0 32
#define QK4_1 32
#define QK5_0 32
#define QK5_1 32
#define QK8_0 32
#define QK8_1 32
#define QK_K  256
#define K_SCALE_SIZE 12
#define QK4_NL 32

typedef struct { pyrt_fp16 d; uint8_t qs[QK4_0 / 2]; } block_q4_0;
typedef struct { pyrt_fp16 d, m; uint8_t qs[QK4_1 / 2]; } block_q4_1;
typedef struct { pyrt_fp16 d; uint8_t qh[4]; uint8_t qs[QK5_0 / 2]; } block_q5_0;
typedef struct { pyrt_fp16 d, m; uint8_t qh[4]; uint8_t qs[QK5_1 / 2]; } block_q5_1;
typedef struct { pyrt_fp16 d; int8_t qs[QK8_0]; } block_q8_0;
typedef struct { pyrt_fp16 d, s; int8_t qs[QK8_1]; } block_q8_1;   /* s = d * sum(qs) */
typedef struct { uint8_t scales[QK_K / 16]; uint8_t qs[QK_K / 4]; pyrt_fp16 d, dmin; } block_q2_K;
typedef struct { uint8_t hmask[QK_K / 8]; uint8_t qs[QK_K / 4]; uint8_t scales[12]; pyrt_fp16 d; } block_q3_K;
typedef struct { pyrt_fp16 d, dmin; uint8_t scales[K_SCALE_SIZE]; uint8_t qs[QK_K / 2]; } block_q4_K;
typedef struct { pyrt_fp16 d, dmin; uint8_t scales[K_SCALE_SIZE]; uint8_t qh[QK_K / 8]; uint8_t qs[QK_K / 2]; } block_q5_K;
typedef struct { uint8_t ql[QK_K / 2]; uint8_t qh[QK_K / 4]; int8_t scales[QK_K / 16]; pyrt_fp16 d; } block_q6_K;
typedef struct { float d; int8_t qs[QK_K]; int16_t bsums[QK_K / 16]; } block_q8_K;
/* IQ4_NL: 4-bit indices into PYRT_KVALUES_IQ4NL, element order as Q4_0 */
typedef struct { pyrt_fp16 d; uint8_t qs[QK4_NL / 2]; } block_iq4_nl;
/* IQ4_XS: sub-block s (32 elements) has the 6-bit scale
 * (scales_l[s/2] >> 4*(s%2) & 15) | ((scales_h >> 2*s & 3) << 4), minus 32;
 * its codes are qs[16*s .. 16*s+15], element order as IQ4_NL */
typedef struct { pyrt_fp16 d; uint16_t scales_h; uint8_t scales_l[QK_K / 64]; uint8_t qs[QK_K / 2]; } block_iq4_xs;

static_assert(sizeof(block_q4_0) == 18, "q4_0 size");
static_assert(sizeof(block_q4_1) == 20, "q4_1 size");
static_assert(sizeof(block_q5_0) == 22, "q5_0 size");
static_assert(sizeof(block_q5_1) == 24, "q5_1 size");
static_assert(sizeof(block_q8_0) == 34, "q8_0 size");
static_assert(sizeof(block_q8_1) == 36, "q8_1 size");
static_assert(sizeof(block_q2_K) == 84, "q2_K size");
static_assert(sizeof(block_q3_K) == 110, "q3_K size");
static_assert(sizeof(block_q4_K) == 144, "q4_K size");
static_assert(sizeof(block_q5_K) == 176, "q5_K size");
static_assert(sizeof(block_q6_K) == 210, "q6_K size");
static_assert(sizeof(block_q8_K) == 292, "q8_K size");
static_assert(sizeof(block_iq4_nl) == 18, "iq4_nl size");
static_assert(sizeof(block_iq4_xs) == 136, "iq4_xs size");

/* ggml's kvalues_iq4nl: the 16 non-linear levels of IQ4_NL and IQ4_XS. A
 * macro, so each kernel file holds its own copy (SIMD loads want it aligned). */
#define PYRT_KVALUES_IQ4NL { -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113 }

/* ---- fp16 <-> fp32, exact IEEE semantics, round-to-nearest-even ---------- */
static inline float pyrt_fp32_from_bits(uint32_t w) { float f; memcpy(&f, &w, 4); return f; }
static inline uint32_t pyrt_fp32_to_bits(float f) { uint32_t w; memcpy(&w, &f, 4); return w; }
/* a 32-bit load from any address (block_q8_0.qs sits at offset 2: a plain int32_t read is misaligned) */
static inline int32_t pyrt_load_i32(const void *p) { int32_t v; memcpy(&v, p, 4); return v; }

static inline float pyrt_fp16_to_fp32(pyrt_fp16 h) {
    const uint32_t w = (uint32_t)h << 16;
    const uint32_t sign = w & 0x80000000u;
    const uint32_t two_w = w + w;
    const uint32_t exp_offset = 0xE0u << 23;
    const float exp_scale = pyrt_fp32_from_bits(0x7800000u);   /* 2^-112 */
    const float normalized = pyrt_fp32_from_bits((two_w >> 4) + exp_offset) * exp_scale;
    const uint32_t magic_mask = 126u << 23;
    const float magic_bias = 0.5f;
    const float denormalized = pyrt_fp32_from_bits((two_w >> 17) | magic_mask) - magic_bias;
    const uint32_t denorm_cutoff = 1u << 27;
    const uint32_t result = sign | (two_w < denorm_cutoff ? pyrt_fp32_to_bits(denormalized)
                                                          : pyrt_fp32_to_bits(normalized));
    return pyrt_fp32_from_bits(result);
}

static inline pyrt_fp16 pyrt_fp32_to_fp16(float f) {
    const float scale_to_inf = pyrt_fp32_from_bits(0x77800000u);   /* 2^112  */
    const float scale_to_zero = pyrt_fp32_from_bits(0x08800000u);  /* 2^-110 */
    float base = (f < 0 ? -f : f) * scale_to_inf * scale_to_zero;
    const uint32_t w = pyrt_fp32_to_bits(f);
    const uint32_t shl1_w = w + w;
    const uint32_t sign = w & 0x80000000u;
    uint32_t bias = shl1_w & 0xFF000000u;
    if (bias < 0x71000000u) bias = 0x71000000u;
    base = pyrt_fp32_from_bits((bias >> 1) + 0x07800000u) + base;
    const uint32_t bits = pyrt_fp32_to_bits(base);
    const uint32_t exp_bits = (bits >> 13) & 0x00007C00u;
    const uint32_t mantissa_bits = bits & 0x00000FFFu;
    const uint32_t nonsign = exp_bits + mantissa_bits;
    return (pyrt_fp16)((sign >> 16) | (shl1_w > 0xFF000000u ? 0x7E00u : nonsign));
}

static inline float pyrt_bf16_to_fp32(uint16_t h) { return pyrt_fp32_from_bits((uint32_t)h << 16); }
static inline uint16_t pyrt_fp32_to_bf16(float f) {
    uint32_t u = pyrt_fp32_to_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 64);  /* quiet NaN */
    return (uint16_t)((u + (0x7fffu + ((u >> 16) & 1))) >> 16);
}

#endif
