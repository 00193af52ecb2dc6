/* x86/quants_avx2.c — AVX2 + FMA + F16C kernels, same signatures as
 * generic/quants.c. Only this file is compiled with -mavx2 -mfma -mf16c;
 * core/dispatch.c calls pyrt_fill_quants_avx2() only after cpuid said yes.
 *
 * Integer dot products: per 32-block, bytes are multiplied with
 * _mm256_maddubs_epi16 (unsigned x signed -> pairs of int16), summed to int32
 * with _mm256_madd_epi16, converted to float and accumulated with one FMA by
 * the product of the two fp16 block scales. Scales of 4 blocks are converted
 * with one F16C instruction. Unsigned weights (Q4_1, Q5_1) go straight into
 * maddubs; offset weights (Q4_0: q-8, Q5_0: q-16) use maddubs(q, a) minus
 * maddubs(offset, a); signed Q8_0 uses the sign trick |w| * (a * sign(w)).
 *
 * Activation quantization mirrors ggml's AVX2 path: id = 127/amax and
 * round-to-nearest-even (the scalar reference rounds half away from zero). */
#if defined(__x86_64__)
#include <immintrin.h>
#include <math.h>
#include <string.h>
#include "kernels.h"
#include "simd_avx2.h"

/* ---- helpers ------------------------------------------------------------- */

static inline __m256i load32(const int8_t *p) { return _mm256_loadu_si256((const __m256i *)p); }

/* int32 lanes of unsigned(u) . signed(s) over a 32-byte block */
static inline __m256i dot_us(__m256i u, __m256i s) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
}

/* same, with u interpreted as u - off (off 8 or 16): maddubs(u,s) - maddubs(off,s).
 * |int16 pairs| <= 2*31*127, no saturation */
static inline __m256i dot_us_off(__m256i u, __m256i s, __m256i off) {
    const __m256i p = _mm256_sub_epi16(_mm256_maddubs_epi16(u, s), _mm256_maddubs_epi16(off, s));
    return _mm256_madd_epi16(p, _mm256_set1_epi16(1));
}

/* signed x signed via the sign trick; activations are in [-127, 127] */
static inline __m256i dot_ss(__m256i w, __m256i a) {
    return dot_us(_mm256_sign_epi8(w, w), _mm256_sign_epi8(a, w));
}

/* 4 products dw[i]*da[i] from 8 fp16 values in one F16C conversion */
static inline __m128 scale4(pyrt_fp16 w0, pyrt_fp16 w1, pyrt_fp16 w2, pyrt_fp16 w3,
                            pyrt_fp16 a0, pyrt_fp16 a1, pyrt_fp16 a2, pyrt_fp16 a3) {
    const __m256 f = _mm256_cvtph_ps(_mm_setr_epi16((short)w0, (short)w1, (short)w2, (short)w3,
                                                    (short)a0, (short)a1, (short)a2, (short)a3));
    return _mm_mul_ps(_mm256_castps256_ps128(f), _mm256_extractf128_ps(f, 1));
}

static inline __m256 bcast(__m128 d4, int k) {
    return _mm256_permutevar8x32_ps(_mm256_castps128_ps256(d4), _mm256_set1_epi32(k));
}

/* ======================================================================== */
/* vec_dot, quantized                                                        */
/* ======================================================================== */

/* One shape for all five, in ggml's exact floating-point order: one 8-lane
 * accumulator, acc = fma(d_w*d_a, float(lane sums of block b), acc) for b in
 * order, then a horizontal sum; the min terms (Q4_1/Q5_1) accumulate in a
 * scalar with fmaf, as ggml's `summs += m*s` compiles with FMA contraction.
 * Matching the order bit for bit matters: the next layer quantizes these
 * results to 8 bits, and a single flipped rounding decorrelates the rest of
 * the forward pass from llama.cpp's (measured: mean |Δ logprob| 0.07 -> see
 * tests/test_fidelity.py). BLOCK_I32(x, y) yields the int32x8 lane sums of
 * one block pair (lane j sums bytes 4j..4j+3, as maddubs+madd and VNNI do). */
#define DOT_Q_BODY(WT, AT, BLOCK_I32, MIN_STEP)                                              \
    const WT *x = (const WT *)w;                                                              \
    const AT *y = (const AT *)a;                                                              \
    const int64_t nb = n / 32;                                                                \
    __m256 acc = _mm256_setzero_ps();                                                         \
    float summs = 0.0f;                                                                       \
    for (int64_t b = 0; b < nb; b++) {                                                        \
        const __m256 p = _mm256_cvtepi32_ps(BLOCK_I32(&x[b], &y[b]));                         \
        acc = _mm256_fmadd_ps(_mm256_set1_ps(fp16_1(x[b].d) * fp16_1(y[b].d)), p, acc);       \
        summs = MIN_STEP(x[b], y[b], summs);                                                  \
    }                                                                                         \
    *s = hsum_ps(acc) + summs;

#define NO_MIN(xb, yb, acc) (acc)
#define MIN_FMA(xb, yb, acc) _mm_cvtss_f32(_mm_fmadd_ss(_mm_set_ss(fp16_1((xb).m)),            \
                                                        _mm_set_ss(fp16_1((yb).s)), _mm_set_ss(acc)))

static inline __m256i blk_q8_0(const block_q8_0 *x, const block_q8_0 *y) {
    return dot_ss(load32(x->qs), load32(y->qs));
}
static inline __m256i blk_q4_0(const block_q4_0 *x, const block_q8_0 *y) {
    return dot_us_off(unpack_nibbles(x->qs), load32(y->qs), _mm256_set1_epi8(8));
}
static inline __m256i blk_q4_1(const block_q4_1 *x, const block_q8_1 *y) {
    return dot_us(unpack_nibbles(x->qs), load32(y->qs));
}
static inline __m256i blk_q5_0(const block_q5_0 *x, const block_q8_0 *y) {
    const __m256i q = _mm256_or_si256(unpack_nibbles(x->qs), qh_to_bit4(x->qh));
    return dot_us_off(q, load32(y->qs), _mm256_set1_epi8(16));
}
static inline __m256i blk_q5_1(const block_q5_1 *x, const block_q8_1 *y) {
    const __m256i q = _mm256_or_si256(unpack_nibbles(x->qs), qh_to_bit4(x->qh));
    return dot_us(q, load32(y->qs));
}

static void dot_q8_0(int64_t n, float *s, const void *w, const void *a) {
    DOT_Q_BODY(block_q8_0, block_q8_0, blk_q8_0, NO_MIN)
}
static void dot_q4_0(int64_t n, float *s, const void *w, const void *a) {
    DOT_Q_BODY(block_q4_0, block_q8_0, blk_q4_0, NO_MIN)
}
static void dot_q4_1(int64_t n, float *s, const void *w, const void *a) {
    DOT_Q_BODY(block_q4_1, block_q8_1, blk_q4_1, MIN_FMA)
}
/* llama.cpp repacks Q4_0 weights with rows % 8 == 0 into 8-row interleaved
 * blocks on AVX2 (ggml-cpu/repack.cpp) and accumulates per block:
 * acc = fma(float(integer block sum), d_w * d_a, acc). */
static void dot_q4_0_r8(int64_t n, float *s, const void *w, const void *a) {
    const block_q4_0 *x = (const block_q4_0 *)w;
    const block_q8_0 *y = (const block_q8_0 *)a;
    float acc = 0.0f;
    for (int64_t b = 0; b < n / 32; b++)
        acc = fmaf((float)hsum_epi32(blk_q4_0(&x[b], &y[b])), fp16_1(x[b].d) * fp16_1(y[b].d), acc);
    *s = acc;
}

static void dot_q5_0(int64_t n, float *s, const void *w, const void *a) {
    DOT_Q_BODY(block_q5_0, block_q8_0, blk_q5_0, NO_MIN)
}
static void dot_q5_1(int64_t n, float *s, const void *w, const void *a) {
    DOT_Q_BODY(block_q5_1, block_q8_1, blk_q5_1, MIN_FMA)
}

/* ======================================================================== */
/* vec_dot, float types (f32 accumulation, 32 elements per iteration)        */
/* ======================================================================== */

static inline __m256 ld_f16(const pyrt_fp16 *p) { return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p)); }
static inline __m256 ld_bf16(const uint16_t *p) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p)), 16));
}

#define DOT_F_BODY(T, LOAD, SCALAR)                                                     \
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();                          \
    __m256 a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();                          \
    int64_t i = 0;                                                                      \
    for (; i + 32 <= n; i += 32) {                                                      \
        a0 = _mm256_fmadd_ps(LOAD(x + i),      LOAD(y + i),      a0);                   \
        a1 = _mm256_fmadd_ps(LOAD(x + i + 8),  LOAD(y + i + 8),  a1);                   \
        a2 = _mm256_fmadd_ps(LOAD(x + i + 16), LOAD(y + i + 16), a2);                   \
        a3 = _mm256_fmadd_ps(LOAD(x + i + 24), LOAD(y + i + 24), a3);                   \
    }                                                                                   \
    for (; i + 8 <= n; i += 8) a0 = _mm256_fmadd_ps(LOAD(x + i), LOAD(y + i), a0);      \
    float r = hsum_ps(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));     \
    for (; i < n; i++) r += SCALAR(x[i]) * SCALAR(y[i]);

static inline float id_f32(float v) { return v; }

static void dot_f32(int64_t n, float *s, const void *w, const void *a) {
    const float *x = (const float *)w, *y = (const float *)a;
    DOT_F_BODY(float, _mm256_loadu_ps, id_f32)
    *s = r;
}

static float dot_f16_f32acc(int64_t n, const pyrt_fp16 *x, const pyrt_fp16 *y) {
    DOT_F_BODY(pyrt_fp16, ld_f16, fp16_1)
    return r;
}

static void dot_f16(int64_t n, float *s, const void *w, const void *a) {
    *s = dot_f16_f32acc(n, (const pyrt_fp16 *)w, (const pyrt_fp16 *)a);
}

static void dot_bf16(int64_t n, float *s, const void *w, const void *a) {
    const uint16_t *x = (const uint16_t *)w, *y = (const uint16_t *)a;
    DOT_F_BODY(uint16_t, ld_bf16, pyrt_bf16_to_fp32)
    *s = r;
}

/* ======================================================================== */
/* dequantize                                                                */
/* ======================================================================== */

/* 32 int8 values -> 4 x 8 floats times d (one rounding, as the reference) */
static inline void store_scaled(float *dst, __m256i q8, __m256 d) {
    const __m128i lo = _mm256_castsi256_si128(q8), hi = _mm256_extracti128_si256(q8, 1);
    _mm256_storeu_ps(dst,      _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(lo)), d));
    _mm256_storeu_ps(dst + 8,  _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(lo, 8))), d));
    _mm256_storeu_ps(dst + 16, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(hi)), d));
    _mm256_storeu_ps(dst + 24, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(hi, 8))), d));
}

/* same, q*d + m. d*q is exact in f32 (11-bit fp16 mantissa x 5-bit q), so an
 * FMA rounds exactly like gguf.quants' separate multiply and add. */
static inline void store_scaled_min(float *dst, __m256i q8, __m256 d, __m256 m) {
    const __m128i h[2] = { _mm256_castsi256_si128(q8), _mm256_extracti128_si256(q8, 1) };
    for (int k = 0; k < 4; k++) {
        const __m128i part = (k & 1) ? _mm_srli_si128(h[k >> 1], 8) : h[k >> 1];
        _mm256_storeu_ps(dst + 8 * k, _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(part)), d, m));
    }
}

static void dequant_q8_0(const void *src, float *dst, int64_t n) {
    const block_q8_0 *x = (const block_q8_0 *)src;
    for (int64_t b = 0; b < n / 32; b++)
        store_scaled(dst + 32 * b, load32(x[b].qs), _mm256_set1_ps(fp16_1(x[b].d)));
}

static void dequant_q4_0(const void *src, float *dst, int64_t n) {
    const block_q4_0 *x = (const block_q4_0 *)src;
    for (int64_t b = 0; b < n / 32; b++) {
        const __m256i q = _mm256_sub_epi8(unpack_nibbles(x[b].qs), _mm256_set1_epi8(8));
        store_scaled(dst + 32 * b, q, _mm256_set1_ps(fp16_1(x[b].d)));
    }
}

static void dequant_q5_0(const void *src, float *dst, int64_t n) {
    const block_q5_0 *x = (const block_q5_0 *)src;
    for (int64_t b = 0; b < n / 32; b++) {
        const __m256i q = _mm256_sub_epi8(_mm256_or_si256(unpack_nibbles(x[b].qs), qh_to_bit4(x[b].qh)),
                                          _mm256_set1_epi8(16));
        store_scaled(dst + 32 * b, q, _mm256_set1_ps(fp16_1(x[b].d)));
    }
}

static void dequant_q4_1(const void *src, float *dst, int64_t n) {
    const block_q4_1 *x = (const block_q4_1 *)src;
    for (int64_t b = 0; b < n / 32; b++)
        store_scaled_min(dst + 32 * b, unpack_nibbles(x[b].qs),
                         _mm256_set1_ps(fp16_1(x[b].d)), _mm256_set1_ps(fp16_1(x[b].m)));
}

static void dequant_q5_1(const void *src, float *dst, int64_t n) {
    const block_q5_1 *x = (const block_q5_1 *)src;
    for (int64_t b = 0; b < n / 32; b++)
        store_scaled_min(dst + 32 * b, _mm256_or_si256(unpack_nibbles(x[b].qs), qh_to_bit4(x[b].qh)),
                         _mm256_set1_ps(fp16_1(x[b].d)), _mm256_set1_ps(fp16_1(x[b].m)));
}

static void fp16_to_fp32_row(const pyrt_fp16 *x, float *y, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, ld_f16(x + i));
    for (; i < n; i++) y[i] = fp16_1(x[i]);
}

static void dequant_f16(const void *src, float *dst, int64_t n) {
    fp16_to_fp32_row((const pyrt_fp16 *)src, dst, n);
}

static void dequant_bf16(const void *src, float *dst, int64_t n) {
    const uint16_t *x = (const uint16_t *)src;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, ld_bf16(x + i));
    for (; i < n; i++) dst[i] = pyrt_bf16_to_fp32(x[i]);
}

/* ======================================================================== */
/* quantize activations                                                      */
/* ======================================================================== */

/* One 32-block as ggml's AVX2 quantize_row_q8_0/q8_1: returns d = amax/127,
 * stores q = nearest-even(x * 127/amax), and the int32 lanes summing to sum(q). */
static inline float quant_block_q8(const float *x, int8_t *q, __m256i *lanes) {
    __m256 v0 = _mm256_loadu_ps(x), v1 = _mm256_loadu_ps(x + 8);
    __m256 v2 = _mm256_loadu_ps(x + 16), v3 = _mm256_loadu_ps(x + 24);
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 m = _mm256_max_ps(_mm256_andnot_ps(sign, v0), _mm256_andnot_ps(sign, v1));
    m = _mm256_max_ps(m, _mm256_max_ps(_mm256_andnot_ps(sign, v2), _mm256_andnot_ps(sign, v3)));
    const float amax = hmax_ps(m);

    const float d = amax / 127.0f;
    const __m256 id = _mm256_set1_ps(amax != 0.0f ? 127.0f / amax : 0.0f);
    const int rm = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
    __m256i i0 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v0, id), rm));
    __m256i i1 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v1, id), rm));
    __m256i i2 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v2, id), rm));
    __m256i i3 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v3, id), rm));
    *lanes = _mm256_add_epi32(_mm256_add_epi32(i0, i1), _mm256_add_epi32(i2, i3));

    /* packs work per 128-bit lane: element order becomes 0-3 8-11 16-19 24-27
     * 4-7 12-15 20-23 28-31 (in dwords), undone by one dword permute */
    i0 = _mm256_packs_epi32(i0, i1);
    i2 = _mm256_packs_epi32(i2, i3);
    i0 = _mm256_packs_epi16(i0, i2);
    i0 = _mm256_permutevar8x32_epi32(i0, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256((__m256i *)q, i0);
    return d;
}

static void quant_q8_0(const float *src, void *dst, int64_t n) {
    block_q8_0 *y = (block_q8_0 *)dst;
    for (int64_t b = 0; b < n / 32; b++) {
        __m256i lanes;
        const float d = quant_block_q8(src + 32 * b, y[b].qs, &lanes);
        y[b].d = _cvtss_sh(d, 0);
    }
}

static void quant_q8_1(const float *src, void *dst, int64_t n) {
    block_q8_1 *y = (block_q8_1 *)dst;
    for (int64_t b = 0; b < n / 32; b++) {
        __m256i lanes;
        const float d = quant_block_q8(src + 32 * b, y[b].qs, &lanes);
        y[b].d = _cvtss_sh(d, 0);
        y[b].s = _cvtss_sh(d * (float)hsum_epi32(lanes), 0);
    }
}

static void fp32_to_fp16_row(const float *x, pyrt_fp16 *y, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(y + i), _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < n; i++) y[i] = _cvtss_sh(x[i], 0);
}

static void quant_f16(const float *src, void *dst, int64_t n) {
    fp32_to_fp16_row(src, (pyrt_fp16 *)dst, n);
}

/* f32 -> bf16, round to nearest even, NaN -> quiet NaN (as quant.h) */
static void quant_bf16(const float *src, void *dst, int64_t n) {
    uint16_t *y = (uint16_t *)dst;
    int64_t i = 0;
    const __m256i abs_mask = _mm256_set1_epi32(0x7fffffff), inf = _mm256_set1_epi32(0x7f800000);
    const __m256i bias = _mm256_set1_epi32(0x7fff), one = _mm256_set1_epi32(1), qbit = _mm256_set1_epi32(64 << 16);
    for (; i + 8 <= n; i += 8) {
        const __m256i u = _mm256_castps_si256(_mm256_loadu_ps(src + i));
        const __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(u, abs_mask), inf);
        const __m256i r = _mm256_add_epi32(u, _mm256_add_epi32(bias, _mm256_and_si256(_mm256_srli_epi32(u, 16), one)));
        const __m256i v = _mm256_srli_epi32(_mm256_blendv_epi8(r, _mm256_or_si256(u, qbit), nan), 16);
        /* 8 x u32 (< 65536) -> 8 x u16 */
        const __m128i p = _mm_packus_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
        _mm_storeu_si128((__m128i *)(y + i), p);
    }
    for (; i < n; i++) y[i] = pyrt_fp32_to_bf16(src[i]);
}

/* ======================================================================== */
/* F16 helpers                                                               */
/* ======================================================================== */

static void mad_f16(int64_t n, float *y, const pyrt_fp16 *x, float v) {
    const __m256 vv = _mm256_set1_ps(v);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        _mm256_storeu_ps(y + i,     _mm256_fmadd_ps(ld_f16(x + i),     vv, _mm256_loadu_ps(y + i)));
        _mm256_storeu_ps(y + i + 8, _mm256_fmadd_ps(ld_f16(x + i + 8), vv, _mm256_loadu_ps(y + i + 8)));
    }
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_fmadd_ps(ld_f16(x + i), vv, _mm256_loadu_ps(y + i)));
    for (; i < n; i++) y[i] += fp16_1(x[i]) * v;
}

/* ======================================================================== */

void pyrt_fill_quants_avx2(pyrt_kernels *k) {
    memset(k, 0, sizeof *k);
    k->name = "avx2";

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

    k->type[PYRT_TYPE_F32].vec_dot  = dot_f32;
    k->type[PYRT_TYPE_F16].vec_dot  = dot_f16;
    k->type[PYRT_TYPE_Q4_0].vec_dot_r8 = dot_q4_0_r8;
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

    pyrt_fill_kquants_avx2(k);
}

#endif /* __x86_64__ */
