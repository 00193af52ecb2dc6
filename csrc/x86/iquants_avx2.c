/* x86/iquants_avx2.c — AVX2 kernels for IQ4_NL (x Q8_0) and IQ4_XS (x Q8_K),
 * same signatures as generic/iquants.c. Compiled with -mavx2 -mfma -mf16c and
 * without FMA contraction: every fused multiply-add below is spelled out,
 * where llama.cpp's x86 build has one.
 *
 * The 4-bit indices become int8 levels with one byte shuffle through the level
 * table; levels x activations go through the sign trick (|w| * (a * sign(w)),
 * maddubs, madd), so each 32-element vector yields 8 int32 lanes, lane l
 * summing elements 4l..4l+3 of the vector (low nibbles = elements 0..15 in
 * the low half, high nibbles = 16..31 in the high half). |level| <= 127 and
 * |activation| <= 127, so no int16 pair saturates: every lane is exact.
 *
 * llama.cpp has these matmul paths for the two types on an AVX2 CPU, and the
 * table below reproduces each one's floating-point order:
 *
 *   IQ4_NL  vec_dot (quants.c), one token and rows % 8 != 0: blocks in pairs,
 *           acc1 = fma(d_a*d_w, float(lanes of block 2i), acc1), acc2 likewise
 *           for block 2i+1, hsum(acc1 + acc2), an odd last block added as
 *           fma(d, float(isum), sum) in scalar.
 *           vec_dot_tiled, batches of >= 2 tokens and rows % 8 != 0: the
 *           llamafile GEMM (llamafile/sgemm.cpp, tinyBLAS_Q0_AVX), one
 *           accumulator, acc = fma(d_w*d_a, float(lanes), acc), one hsum.
 *           vec_dot_r8, rows % 8 == 0 (any batch): weights repacked into
 *           8-row interleaved blocks at load (repack.cpp, the Q4_0 template
 *           with the level table), acc = fma(float(isum), d_w*d_a, acc) per
 *           block; its GEMM for groups of 4 tokens has the same per-row order,
 *           so vec_dot_r8x4 stays NULL (as for Q4_0).
 *   IQ4_XS  vec_dot (quants.c), batches of < 8 tokens: per super-block the
 *           lanes summed over the 8 sub-blocks with their scales (ls - 32)
 *           applied as integers, acc = fma(d_w*d_a, float(lanes), acc), hsum.
 *           vec_dot_tiled, batches of >= 8 tokens (ggml-cpu/tiled): the exact
 *           super-block sum S, r = d_w*float(S), acc = fma(r, d_a, acc).
 *           No repacked form exists for IQ4_XS. */
#if defined(__x86_64__)
#include <immintrin.h>
#include <math.h>
#include <string.h>
#include "kernels.h"
#include "simd_avx2.h"

static const int8_t kvalues[16] __attribute__((aligned(16))) = PYRT_KVALUES_IQ4NL;

/* 16 packed index bytes -> 32 int8 levels in element order */
static inline __m256i levels32(const uint8_t *qs) {
    const __m128i lut = _mm_load_si128((const __m128i *)kvalues);
    const __m128i m4 = _mm_set1_epi8(0x0f);
    const __m128i b = _mm_loadu_si128((const __m128i *)qs);
    const __m128i lo = _mm_shuffle_epi8(lut, _mm_and_si128(b, m4));
    const __m128i hi = _mm_shuffle_epi8(lut, _mm_and_si128(_mm_srli_epi16(b, 4), m4));
    return _mm256_set_m128i(hi, lo);
}

/* int16 pairs of levels w times activations a (sign trick, exact) */
static inline __m256i pairs16(__m256i w, __m256i a) {
    return _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(a, w));
}

/* int32 lanes of one IQ4_NL block times its Q8_0 block */
static inline __m256i lanes_iq4_nl(const block_iq4_nl *x, const block_q8_0 *y) {
    return _mm256_madd_epi16(pairs16(levels32(x->qs), _mm256_loadu_si256((const __m256i *)y->qs)),
                             _mm256_set1_epi16(1));
}

/* int32 lanes of one IQ4_XS super-block times its Q8_K block, scales applied */
static inline __m256i lanes_iq4_xs(const block_iq4_xs *x, const block_q8_K *y) {
    __m256i s1 = _mm256_setzero_si256(), s2 = _mm256_setzero_si256();
    uint16_t sh = x->scales_h;
    for (int sb = 0; sb < QK_K / 32; sb += 2) {
        const int16_t ls1 = (int16_t)(((x->scales_l[sb / 2] & 0xf) | ((sh << 4) & 0x30)) - 32);
        const int16_t ls2 = (int16_t)(((x->scales_l[sb / 2] >> 4) | ((sh << 2) & 0x30)) - 32);
        sh >>= 4;
        const __m256i p1 = pairs16(levels32(x->qs + 16 * sb), _mm256_loadu_si256((const __m256i *)(y->qs + 32 * sb)));
        const __m256i p2 = pairs16(levels32(x->qs + 16 * sb + 16),
                                   _mm256_loadu_si256((const __m256i *)(y->qs + 32 * sb + 32)));
        s1 = _mm256_add_epi32(_mm256_madd_epi16(p1, _mm256_set1_epi16(ls1)), s1);
        s2 = _mm256_add_epi32(_mm256_madd_epi16(p2, _mm256_set1_epi16(ls2)), s2);
    }
    return _mm256_add_epi32(s1, s2);
}

/* ======================================================================== */
/* IQ4_NL                                                                    */
/* ======================================================================== */

static void dot_iq4_nl(int64_t n, float *s, const void *w, const void *a) {
    const block_iq4_nl *x = (const block_iq4_nl *)w;   /* [n/32] */
    const block_q8_0 *y = (const block_q8_0 *)a;       /* [n/32] */
    const int64_t nb = n / QK4_NL;
    __m256 acc1 = _mm256_setzero_ps(), acc2 = _mm256_setzero_ps();
    int64_t b = 0;
    for (; b + 1 < nb; b += 2) {
        acc1 = _mm256_fmadd_ps(_mm256_set1_ps(fp16_1(y[b].d) * fp16_1(x[b].d)),
                               _mm256_cvtepi32_ps(lanes_iq4_nl(&x[b], &y[b])), acc1);
        acc2 = _mm256_fmadd_ps(_mm256_set1_ps(fp16_1(y[b + 1].d) * fp16_1(x[b + 1].d)),
                               _mm256_cvtepi32_ps(lanes_iq4_nl(&x[b + 1], &y[b + 1])), acc2);
    }
    float sum = hsum_ps(_mm256_add_ps(acc1, acc2));
    /* llama.cpp: sumf += d * (sumi1 + sumi2), contracted to one FMA by its compiler */
    for (; b < nb; b++)
        sum = fmaf(fp16_1(y[b].d) * fp16_1(x[b].d), (float)hsum_epi32(lanes_iq4_nl(&x[b], &y[b])), sum);
    *s = sum;
}

static void tiled_iq4_nl(int64_t n, float *s, const void *w, const void *a) {
    const block_iq4_nl *x = (const block_iq4_nl *)w;   /* [n/32] */
    const block_q8_0 *y = (const block_q8_0 *)a;       /* [n/32] */
    __m256 acc = _mm256_setzero_ps();
    for (int64_t b = 0; b < n / QK4_NL; b++)
        acc = _mm256_fmadd_ps(_mm256_set1_ps(fp16_1(x[b].d) * fp16_1(y[b].d)),
                              _mm256_cvtepi32_ps(lanes_iq4_nl(&x[b], &y[b])), acc);
    *s = hsum_ps(acc);
}

static void rep8_iq4_nl(int64_t n, float *s, const void *w, const void *a) {
    const block_iq4_nl *x = (const block_iq4_nl *)w;   /* [n/32] */
    const block_q8_0 *y = (const block_q8_0 *)a;       /* [n/32] */
    float acc = 0.0f;
    for (int64_t b = 0; b < n / QK4_NL; b++)
        acc = fmaf((float)hsum_epi32(lanes_iq4_nl(&x[b], &y[b])), fp16_1(x[b].d) * fp16_1(y[b].d), acc);
    *s = acc;
}

/* ======================================================================== */
/* IQ4_XS                                                                    */
/* ======================================================================== */

static void dot_iq4_xs(int64_t n, float *s, const void *w, const void *a) {
    const block_iq4_xs *x = (const block_iq4_xs *)w;   /* [n/256] */
    const block_q8_K *y = (const block_q8_K *)a;       /* [n/256] */
    __m256 acc = _mm256_setzero_ps();
    for (int64_t b = 0; b < n / QK_K; b++)
        acc = _mm256_fmadd_ps(_mm256_set1_ps(fp16_1(x[b].d) * y[b].d),
                              _mm256_cvtepi32_ps(lanes_iq4_xs(&x[b], &y[b])), acc);
    *s = hsum_ps(acc);
}

static void tiled_iq4_xs(int64_t n, float *s, const void *w, const void *a) {
    const block_iq4_xs *x = (const block_iq4_xs *)w;   /* [n/256] */
    const block_q8_K *y = (const block_q8_K *)a;       /* [n/256] */
    float acc = 0.0f;
    for (int64_t b = 0; b < n / QK_K; b++) {
        const float r = fp16_1(x[b].d) * (float)hsum_epi32(lanes_iq4_xs(&x[b], &y[b]));
        acc = fmaf(r, y[b].d, acc);
    }
    *s = acc;
}

/* ======================================================================== */
/* dequantize: the same products as the reference, 8 at a time              */
/* ======================================================================== */

/* 32 int8 levels times d -> dst[0..32) */
static inline void store_levels(float *dst, __m256i q8, __m256 d) {
    const __m128i lo = _mm256_castsi256_si128(q8), hi = _mm256_extracti128_si256(q8, 1);
    _mm256_storeu_ps(dst,      _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(lo)), d));
    _mm256_storeu_ps(dst + 8,  _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(lo, 8))), d));
    _mm256_storeu_ps(dst + 16, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(hi)), d));
    _mm256_storeu_ps(dst + 24, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(hi, 8))), d));
}

static void dequant_iq4_nl(const void *src, float *dst, int64_t n) {
    const block_iq4_nl *x = (const block_iq4_nl *)src;
    for (int64_t b = 0; b < n / QK4_NL; b++)
        store_levels(dst + 32 * b, levels32(x[b].qs), _mm256_set1_ps(fp16_1(x[b].d)));
}

static void dequant_iq4_xs(const void *src, float *dst, int64_t n) {
    const block_iq4_xs *x = (const block_iq4_xs *)src;
    for (int64_t b = 0; b < n / QK_K; b++) {
        const float d = fp16_1(x[b].d);
        for (int sb = 0; sb < QK_K / 32; sb++) {
            const int ls = ((x[b].scales_l[sb / 2] >> 4 * (sb % 2)) & 0xf) | (((x[b].scales_h >> 2 * sb) & 3) << 4);
            store_levels(dst + QK_K * b + 32 * sb, levels32(x[b].qs + 16 * sb), _mm256_set1_ps(d * (float)(ls - 32)));
        }
    }
}

/* ======================================================================== */

void pyrt_fill_iquants_avx2(pyrt_kernels *k) {
    k->type[PYRT_TYPE_IQ4_NL].dequantize = dequant_iq4_nl;
    k->type[PYRT_TYPE_IQ4_XS].dequantize = dequant_iq4_xs;

    k->type[PYRT_TYPE_IQ4_NL].vec_dot = dot_iq4_nl;
    k->type[PYRT_TYPE_IQ4_NL].vec_dot_tiled = tiled_iq4_nl;
    k->type[PYRT_TYPE_IQ4_NL].tiled_min_tok = 2;     /* llamafile_sgemm: n >= 2 */
    k->type[PYRT_TYPE_IQ4_NL].vec_dot_r8 = rep8_iq4_nl;

    k->type[PYRT_TYPE_IQ4_XS].vec_dot = dot_iq4_xs;
    k->type[PYRT_TYPE_IQ4_XS].vec_dot_tiled = tiled_iq4_xs;
}

#endif /* __x86_64__ */
