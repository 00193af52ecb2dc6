/* x86/kquants_avx2.c — AVX2 K-quant kernels (Q2_K..Q6_K weights, Q8_K
 * activations), same signatures as generic/kquants.c. Compiled with
 * -mavx2 -mfma -mf16c and without FMA contraction: every fused multiply-add
 * below is spelled out, where llama.cpp's x86 build has one.
 *
 * The model is chaotic under 8-bit activation quantization, so these kernels
 * reproduce the floating-point sequence of llama.cpp's x86 AVX2 build (the one
 * the references in tests/data/reference were made with) exactly. llama.cpp
 * has three K-quant matmul paths on such a CPU, chosen per weight and batch:
 *
 *   vec_dot  one weight row x one activation row (quants.c): per super-block an
 *            8-lane int32 vector (lane l sums elements with e%32 in 4l..4l+3,
 *            scales applied as integers), acc = fma(d_w*d_a, float(lanes), acc),
 *            one horizontal sum at the end; the min terms of Q2_K accumulate in
 *            the same vector, those of Q4_K in a 4-lane one, Q5_K's in a scalar.
 *            Used for Q2_K/Q3_K/Q5_K/Q6_K (and Q4_K with rows % 8 != 0) when
 *            the batch has fewer than 8 tokens.
 *   tiled    its K-quant GEMM (ggml-cpu/tiled) for batches of >= 8 tokens:
 *            per super-block the exact integer sums S1 (scaled codes) and S2
 *            (mins x block sums), r = d_w*S1 [- dmin_w*S2, one rounding],
 *            acc = fma(r, d_a, acc).
 *   rep8     Q4_K weights whose row count is a multiple of 8 are repacked at
 *            load into 8-row interleaved blocks (ggml-cpu/repack.cpp) and always
 *            go through its GEMV/GEMM, for every batch size. GEMV: per
 *            super-block acc = fma(float(S1), d_w*d_a, acc), accm = fma(float(S2),
 *            dmin_w*d_a, accm), result acc - accm. GEMM (the tokens of a batch
 *            of > 3 in groups of 4): the same, once per pair of sub-blocks.
 *
 * They fill vec_dot[], vec_dot_tiled[], vec_dot_r8[] and vec_dot_r8x4[]; the
 * matmul driver picks one per weight and token with pyrt_pick_vec_dot()
 * (kernels.h). */
#if defined(__x86_64__)
#include <immintrin.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "kernels.h"
#include "simd_avx2.h"

/* ---- helpers ------------------------------------------------------------- */

/* shared helpers (simd_avx2.h): ggml's hsum_float_8 order, exact int sums */
#define hsum8 hsum_ps
#define hsum_i32x8 hsum_epi32

static inline int32_t hsum_i32x4(__m128i s) {
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
    return _mm_cvtsi128_si32(s);
}

static inline __m256i load32(const void *p) { return _mm256_loadu_si256((const __m256i *)p); }

/* int16 scales for one 32-byte product vector: sc_lo on bytes 0..15, sc_hi on 16..31 */
static inline __m256i scale_pair(int sc_lo, int sc_hi) {
    return _mm256_set_m128i(_mm_set1_epi16((short)sc_hi), _mm_set1_epi16((short)sc_lo));
}

/* lanes += scale * maddubs(u, s); lane l gets bytes 4l..4l+3 */
static inline __m256i mac(__m256i lanes, __m256i u, __m256i s, __m256i scale16) {
    return _mm256_add_epi32(lanes, _mm256_madd_epi16(scale16, _mm256_maddubs_epi16(u, s)));
}

/* Q4_K/Q5_K mins . (bsums pairs): 4 int32 lanes, lane l = sum over j in {2l, 2l+1}
 * of m_j * (bsums[2j] + bsums[2j+1]) */
/* the block's bsums pair sums [bs0+bs1, bs2+bs3, ..., bs14+bs15] as 8 words */
static inline __m128i bsums_pairs(const block_q8_K *y) {
    const __m256i bs = load32(y->bsums);
    return _mm_hadd_epi16(_mm256_castsi256_si128(bs), _mm256_extracti128_si256(bs, 1));
}

static inline __m128i mins_bsums_k4(__m128i scales_mins, const block_q8_K *y) {
    const __m128i bs32 = bsums_pairs(y);
    const __m128i mins16 = _mm_cvtepu8_epi16(_mm_srli_si128(scales_mins, 8));
    return _mm_madd_epi16(mins16, bs32);
}

/* ======================================================================== */
/* per-super-block integer lanes                                             */
/* ======================================================================== */

/* Q2_K: codes times their 4-bit scales (S1 lanes) */
static inline __m256i lanes_q2_K(const block_q2_K *x, const block_q8_K *y) {
    const __m256i m3 = _mm256_set1_epi8(3);
    __m256i sumi = _mm256_setzero_si256();
    for (int h = 0; h < 2; h++) {
        const __m256i bits = load32(x->qs + 32 * h);
        for (int g = 0; g < 4; g++) {
            const __m256i q = _mm256_and_si256(_mm256_srli_epi16(bits, 2 * g), m3);
            const uint8_t *sc = x->scales + 8 * h + 2 * g;
            sumi = mac(sumi, q, load32(y->qs + 128 * h + 32 * g), scale_pair(sc[0] & 0x0F, sc[1] & 0x0F));
        }
    }
    return sumi;
}

/* Q2_K: 4-bit mins times the 16-element block sums (S2 lanes, 8 x int32) */
static inline __m256i mins_q2_K(const block_q2_K *x, const block_q8_K *y) {
    const __m128i sm = _mm_loadu_si128((const __m128i *)x->scales);
    const __m128i mins8 = _mm_and_si128(_mm_srli_epi16(sm, 4), _mm_set1_epi8(0x0F));
    return _mm256_madd_epi16(_mm256_cvtepi8_epi16(mins8), load32(y->bsums));
}

/* Q3_K: signed 3-bit codes times (6-bit scale - 32). The code is split as
 * low2 - 4*(1-hbit) into two unsigned products, subtracted in int16. */
static inline __m256i lanes_q3_K(const block_q3_K *x, const block_q8_K *y) {
    uint32_t aux[3];
    memcpy(aux, x->scales, 12);
    const uint32_t k1 = 0x03030303, k2 = 0x0f0f0f0f;
    const __m128i sc8 = _mm_sub_epi8(_mm_set_epi32(
        (int)(((aux[1] >> 4) & k2) | (((aux[2] >> 6) & k1) << 4)),
        (int)(((aux[0] >> 4) & k2) | (((aux[2] >> 4) & k1) << 4)),
        (int)((aux[1] & k2) | (((aux[2] >> 2) & k1) << 4)),
        (int)((aux[0] & k2) | (((aux[2] >> 0) & k1) << 4))), _mm_set1_epi8(32));
    int8_t sc[16];
    _mm_storeu_si128((__m128i *)sc, sc8);

    const __m256i m3 = _mm256_set1_epi8(3), one = _mm256_set1_epi8(1);
    const __m256i hbits = load32(x->hmask);
    __m256i sumi = _mm256_setzero_si256();
    for (int h = 0; h < 2; h++) {
        const __m256i bits = load32(x->qs + 32 * h);
        for (int g = 0; g < 4; g++) {
            const int bit = 4 * h + g;
            const __m256i lo = _mm256_and_si256(_mm256_srli_epi16(bits, 2 * g), m3);
            /* 4 where the high bit is clear, else 0 */
            const __m256i hi = _mm256_slli_epi16(_mm256_srli_epi16(
                _mm256_andnot_si256(hbits, _mm256_slli_epi16(one, bit)), bit), 2);
            const __m256i a = load32(y->qs + 128 * h + 32 * g);
            const __m256i p = _mm256_sub_epi16(_mm256_maddubs_epi16(lo, a), _mm256_maddubs_epi16(hi, a));
            const int s = 8 * h + 2 * g;
            sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(scale_pair(sc[s], sc[s + 1]), p));
        }
    }
    return sumi;
}

/* Sub-block scale j of a Q4_K/Q5_K block as 16 int16 lanes, taken by one
 * vpshufb from sm2 = the 16 bytes of scales_mins_k4v() in both 128-bit halves
 * (the same values as _mm256_set1_epi16(scale j), without the broadcast from
 * memory: per-sub-block broadcasts made the single-token path shuffle-bound). */
#define SCALE_J(sm2, j) _mm256_shuffle_epi8((sm2), _mm256_set1_epi16((short)(0x8000 | (j))))

/* Q4_K: 4-bit codes times 6-bit scales (S1 lanes) */
static inline __m256i lanes_q4_K(const block_q4_K *x, const block_q8_K *y, __m128i sm) {
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    const __m256i sm2 = _mm256_broadcastsi128_si256(sm);
    __m256i sumi = _mm256_setzero_si256();
    for (int j = 0; j < 4; j++) {
        const __m256i bits = load32(x->qs + 32 * j);
        sumi = mac(sumi, _mm256_and_si256(bits, m4), load32(y->qs + 64 * j), SCALE_J(sm2, 2 * j));
        sumi = mac(sumi, _mm256_and_si256(_mm256_srli_epi16(bits, 4), m4), load32(y->qs + 64 * j + 32),
                   SCALE_J(sm2, 2 * j + 1));
    }
    return sumi;
}

/* Q5_K: 5-bit codes times 6-bit scales (S1 lanes); the fifth bit of sub-block
 * j is bit j of each qh byte, moved to bit 4 by one 16-bit shift (bits of the
 * neighbouring byte land outside the 0x10 mask) */
static inline __m256i lanes_q5_K(const block_q5_K *x, const block_q8_K *y, __m128i sm) {
    const __m256i m4 = _mm256_set1_epi8(0x0F), m16 = _mm256_set1_epi8(0x10);
    const __m256i hbits = load32(x->qh);
    const __m256i sm2 = _mm256_broadcastsi128_si256(sm);
    __m256i sumi = _mm256_setzero_si256();
    for (int j = 0; j < 4; j++) {
        const __m256i bits = load32(x->qs + 32 * j);
        for (int half = 0; half < 2; half++) {
            const int bit = 2 * j + half;
            const __m256i lo = _mm256_and_si256(half ? _mm256_srli_epi16(bits, 4) : bits, m4);
            const __m256i hs = bit < 4 ? _mm256_slli_epi16(hbits, 4 - bit)
                             : bit > 4 ? _mm256_srli_epi16(hbits, bit - 4) : hbits;
            sumi = mac(sumi, _mm256_add_epi8(lo, _mm256_and_si256(hs, m16)), load32(y->qs + 64 * j + 32 * half),
                       SCALE_J(sm2, bit));
        }
    }
    return sumi;
}

/* Q6_K lanes for NT activation blocks y[j] against one weight block: the
 * codes and scale selections built once for all tokens (exact integers;
 * lanes_q6_K below is the one-token case) */
static inline __attribute__((always_inline)) void lanes_q6_K_nt(const block_q6_K *x, const block_q8_K *const y[],
                                                                const int NT, __m256i out[]) {
    const __m256i m15 = _mm256_set1_epi8(15), m3 = _mm256_set1_epi8(3);
    const __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)x->scales));
    for (int j = 0; j < NT; j++) out[j] = _mm256_setzero_si256();
    for (int h = 0; h < 2; h++) {
        const __m256i l0 = load32(x->ql + 64 * h), l1 = load32(x->ql + 64 * h + 32);
        const __m256i hb = load32(x->qh + 32 * h);
        const __m256i q[4] = {
            _mm256_or_si256(_mm256_and_si256(l0, m15), _mm256_slli_epi16(_mm256_and_si256(hb, m3), 4)),
            _mm256_or_si256(_mm256_and_si256(l1, m15),
                            _mm256_slli_epi16(_mm256_and_si256(hb, _mm256_set1_epi8(12)), 2)),
            _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m15),
                            _mm256_and_si256(hb, _mm256_set1_epi8(48))),
            _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m15),
                            _mm256_srli_epi16(_mm256_and_si256(hb, _mm256_set1_epi8((char)0xC0)), 2)),
        };
        const __m256i sh = h ? _mm256_permute2x128_si256(sc16, sc16, 0x11) : _mm256_permute2x128_si256(sc16, sc16, 0x00);
        for (int g = 0; g < 4; g++) {
            const __m256i sel = _mm256_setr_epi8(4 * g, 4 * g + 1, 4 * g, 4 * g + 1, 4 * g, 4 * g + 1, 4 * g, 4 * g + 1,
                                                 4 * g, 4 * g + 1, 4 * g, 4 * g + 1, 4 * g, 4 * g + 1, 4 * g, 4 * g + 1,
                                                 4 * g + 2, 4 * g + 3, 4 * g + 2, 4 * g + 3, 4 * g + 2, 4 * g + 3, 4 * g + 2, 4 * g + 3,
                                                 4 * g + 2, 4 * g + 3, 4 * g + 2, 4 * g + 3, 4 * g + 2, 4 * g + 3, 4 * g + 2, 4 * g + 3);
            const __m256i scg = _mm256_shuffle_epi8(sh, sel);
            for (int j = 0; j < NT; j++) out[j] = mac(out[j], q[g], load32(y[j]->qs + 128 * h + 32 * g), scg);
        }
    }
    for (int j = 0; j < NT; j++)
        out[j] = _mm256_sub_epi32(out[j], _mm256_slli_epi32(_mm256_madd_epi16(load32(y[j]->bsums), sc16), 5));
}

/* Q6_K: signed 6-bit codes times int8 scales (S1 lanes); the -32 offset is
 * taken out with the activation block sums, as 32 * scale * bsum per lane. */
static inline __m256i lanes_q6_K(const block_q6_K *x, const block_q8_K *y) {
    const block_q8_K *const yy[1] = { y };
    __m256i out;
    lanes_q6_K_nt(x, yy, 1, &out);
    return out;
}

/* ======================================================================== */
/* vec_dot: llama.cpp's quants.c order                                       */
/* ======================================================================== */

static void dot_q2_K(int64_t n, float *s, const void *w, const void *a) {
    const block_q2_K *x = (const block_q2_K *)w;      /* [n/256] */
    const block_q8_K *y = (const block_q8_K *)a;      /* [n/256] */
    __m256 acc = _mm256_setzero_ps();
    for (int64_t b = 0; b < n / QK_K; b++) {
        const float d = y[b].d * fp16_1(x[b].d);
        const float dmin = -y[b].d * fp16_1(x[b].dmin);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(dmin), _mm256_cvtepi32_ps(mins_q2_K(&x[b], &y[b])), acc);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(lanes_q2_K(&x[b], &y[b])), acc);
    }
    *s = hsum8(acc);
}

static void dot_q3_K(int64_t n, float *s, const void *w, const void *a) {
    const block_q3_K *x = (const block_q3_K *)w;      /* [n/256] */
    const block_q8_K *y = (const block_q8_K *)a;      /* [n/256] */
    __m256 acc = _mm256_setzero_ps();
    for (int64_t b = 0; b < n / QK_K; b++) {
        const float d = y[b].d * fp16_1(x[b].d);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(lanes_q3_K(&x[b], &y[b])), acc);
    }
    *s = hsum8(acc);
}

static void dot_q4_K(int64_t n, float *s, const void *w, const void *a) {
    const block_q4_K *x = (const block_q4_K *)w;      /* [n/256] */
    const block_q8_K *y = (const block_q8_K *)a;      /* [n/256] */
    __m256 acc = _mm256_setzero_ps();
    __m128 acc_m = _mm_setzero_ps();
    for (int64_t b = 0; b < n / QK_K; b++) {
        const float d = y[b].d * fp16_1(x[b].d);
        const float dmin = -y[b].d * fp16_1(x[b].dmin);
        const __m128i sm = scales_mins_k4v(x[b].scales);
        acc_m = _mm_fmadd_ps(_mm_set1_ps(dmin), _mm_cvtepi32_ps(mins_bsums_k4(sm, &y[b])), acc_m);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(lanes_q4_K(&x[b], &y[b], sm)), acc);
    }
    acc_m = _mm_add_ps(acc_m, _mm_movehl_ps(acc_m, acc_m));
    acc_m = _mm_add_ss(acc_m, _mm_movehdup_ps(acc_m));
    *s = hsum8(acc) + _mm_cvtss_f32(acc_m);
}

static void dot_q5_K(int64_t n, float *s, const void *w, const void *a) {
    const block_q5_K *x = (const block_q5_K *)w;      /* [n/256] */
    const block_q8_K *y = (const block_q8_K *)a;      /* [n/256] */
    __m256 acc = _mm256_setzero_ps();
    float summs = 0.0f;
    for (int64_t b = 0; b < n / QK_K; b++) {
        const float d = y[b].d * fp16_1(x[b].d);
        const float dmin = -y[b].d * fp16_1(x[b].dmin);
        const __m128i sm = scales_mins_k4v(x[b].scales);
        /* llama.cpp: summs += dmin * int, contracted to one FMA by its compiler */
        summs = fmaf(dmin, (float)hsum_i32x4(mins_bsums_k4(sm, &y[b])), summs);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(lanes_q5_K(&x[b], &y[b], sm)), acc);
    }
    *s = hsum8(acc) + summs;
}

static void dot_q6_K(int64_t n, float *s, const void *w, const void *a) {
    const block_q6_K *x = (const block_q6_K *)w;      /* [n/256] */
    const block_q8_K *y = (const block_q8_K *)a;      /* [n/256] */
    __m256 acc = _mm256_setzero_ps();
    for (int64_t b = 0; b < n / QK_K; b++) {
        const float d = y[b].d * fp16_1(x[b].d);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(lanes_q6_K(&x[b], &y[b])), acc);
    }
    *s = hsum8(acc);
}

/* ======================================================================== */
/* tiled: llama.cpp's batched K-quant GEMM order, one row                    */
/* ======================================================================== */

/* one super-block: r = d_w*S1 (rounded), r = r - dmin_w*S2 (one rounding, as
 * its fnmadd), acc = fma(r, d_a, acc) */
static inline float tiled_step_min(float acc, float dw, int32_t s1, float dmin_w, int32_t s2, float da) {
    const float r = dw * (float)s1;
    return fmaf(fmaf(-dmin_w, (float)s2, r), da, acc);
}

static inline float tiled_step(float acc, float dw, int32_t s1, float da) {
    const float r = dw * (float)s1;
    return fmaf(r, da, acc);
}

static void tiled_q2_K(int64_t n, float *s, const void *w, const void *a) {
    const block_q2_K *x = (const block_q2_K *)w;      /* [n/256] */
    const block_q8_K *y = (const block_q8_K *)a;      /* [n/256] */
    float acc = 0.0f;
    for (int64_t b = 0; b < n / QK_K; b++)
        acc = tiled_step_min(acc, fp16_1(x[b].d), hsum_i32x8(lanes_q2_K(&x[b], &y[b])),
                             fp16_1(x[b].dmin), hsum_i32x8(mins_q2_K(&x[b], &y[b])), y[b].d);
    *s = acc;
}

static void tiled_q3_K(int64_t n, float *s, const void *w, const void *a) {
    const block_q3_K *x = (const block_q3_K *)w;      /* [n/256] */
    const block_q8_K *y = (const block_q8_K *)a;      /* [n/256] */
    float acc = 0.0f;
    for (int64_t b = 0; b < n / QK_K; b++)
        acc = tiled_step(acc, fp16_1(x[b].d), hsum_i32x8(lanes_q3_K(&x[b], &y[b])), y[b].d);
    *s = acc;
}

static void tiled_q4_K(int64_t n, float *s, const void *w, const void *a) {
    const block_q4_K *x = (const block_q4_K *)w;      /* [n/256] */
    const block_q8_K *y = (const block_q8_K *)a;      /* [n/256] */
    float acc = 0.0f;
    for (int64_t b = 0; b < n / QK_K; b++) {
        const __m128i sm = scales_mins_k4v(x[b].scales);
        acc = tiled_step_min(acc, fp16_1(x[b].d), hsum_i32x8(lanes_q4_K(&x[b], &y[b], sm)),
                             fp16_1(x[b].dmin), hsum_i32x4(mins_bsums_k4(sm, &y[b])), y[b].d);
    }
    *s = acc;
}

static void tiled_q5_K(int64_t n, float *s, const void *w, const void *a) {
    const block_q5_K *x = (const block_q5_K *)w;      /* [n/256] */
    const block_q8_K *y = (const block_q8_K *)a;      /* [n/256] */
    float acc = 0.0f;
    for (int64_t b = 0; b < n / QK_K; b++) {
        const __m128i sm = scales_mins_k4v(x[b].scales);
        acc = tiled_step_min(acc, fp16_1(x[b].d), hsum_i32x8(lanes_q5_K(&x[b], &y[b], sm)),
                             fp16_1(x[b].dmin), hsum_i32x4(mins_bsums_k4(sm, &y[b])), y[b].d);
    }
    *s = acc;
}

static void tiled_q6_K(int64_t n, float *s, const void *w, const void *a) {
    const block_q6_K *x = (const block_q6_K *)w;      /* [n/256] */
    const block_q8_K *y = (const block_q8_K *)a;      /* [n/256] */
    float acc = 0.0f;
    for (int64_t b = 0; b < n / QK_K; b++)
        acc = tiled_step(acc, fp16_1(x[b].d), hsum_i32x8(lanes_q6_K(&x[b], &y[b])), y[b].d);
    *s = acc;
}

/* ======================================================================== */
/* rep8: llama.cpp's repacked Q4_K (8x8 interleaved) GEMV/GEMM order         */
/* ======================================================================== */

/* integer dot of the 32 codes of each Q4_K sub-block with the activations:
 * dots[j] = sum over sub-block j of q*a (no scales) */
static inline void subdots_q4_K(const block_q4_K *x, const block_q8_K *y, int32_t dots[8]) {
    const __m256i m4 = _mm256_set1_epi8(0x0F), ones = _mm256_set1_epi16(1);
    for (int j = 0; j < 4; j++) {
        const __m256i bits = load32(x->qs + 32 * j);
        dots[2 * j] = hsum_i32x8(_mm256_madd_epi16(ones, _mm256_maddubs_epi16(
            _mm256_and_si256(bits, m4), load32(y->qs + 64 * j))));
        dots[2 * j + 1] = hsum_i32x8(_mm256_madd_epi16(ones, _mm256_maddubs_epi16(
            _mm256_and_si256(_mm256_srli_epi16(bits, 4), m4), load32(y->qs + 64 * j + 32))));
    }
}

/* Tokens of a batch in groups of 4 go through the repacked GEMM, which
 * accumulates in float once per pair of sub-blocks (64 elements) instead of once
 * per super-block; the remaining n_tok % 4 tokens (all of them when n_tok < 4)
 * through the GEMV (rep8_q4_K below). */
static void rep8x4_q4_K(int64_t n, float *s, const void *w, const void *a) {
    const block_q4_K *x = (const block_q4_K *)w;      /* [n/256] */
    const block_q8_K *y = (const block_q8_K *)a;      /* [n/256] */
    float acc = 0.0f, acc_m = 0.0f;
    for (int64_t b = 0; b < n / QK_K; b++) {
        uint8_t sm[16];
        _mm_storeu_si128((__m128i *)sm, scales_mins_k4v(x[b].scales));   /* scales 0..7, mins 8..15 */
        int32_t dots[8];
        subdots_q4_K(&x[b], &y[b], dots);
        const float dd = fp16_1(x[b].d) * y[b].d, dm = fp16_1(x[b].dmin) * y[b].d;
        for (int p = 0; p < 4; p++) {
            const int32_t s1 = sm[2 * p] * dots[2 * p] + sm[2 * p + 1] * dots[2 * p + 1];
            const int32_t s2 = sm[8 + 2 * p] * (y[b].bsums[4 * p] + y[b].bsums[4 * p + 1]) +
                               sm[8 + 2 * p + 1] * (y[b].bsums[4 * p + 2] + y[b].bsums[4 * p + 3]);
            acc   = fmaf((float)s1, dd, acc);
            acc_m = fmaf((float)s2, dm, acc_m);
        }
    }
    *s = acc - acc_m;
}

static void rep8_q4_K(int64_t n, float *s, const void *w, const void *a) {
    const block_q4_K *x = (const block_q4_K *)w;      /* [n/256] */
    const block_q8_K *y = (const block_q8_K *)a;      /* [n/256] */
    float acc = 0.0f, acc_m = 0.0f;
    for (int64_t b = 0; b < n / QK_K; b++) {
        const __m128i sm = scales_mins_k4v(x[b].scales);
        const int32_t s1 = hsum_i32x8(lanes_q4_K(&x[b], &y[b], sm));
        const int32_t s2 = hsum_i32x4(mins_bsums_k4(sm, &y[b]));
        acc   = fmaf((float)s1, fp16_1(x[b].d) * y[b].d, acc);
        acc_m = fmaf((float)s2, fp16_1(x[b].dmin) * y[b].d, acc_m);
    }
    *s = acc - acc_m;
}

/* ======================================================================== */
/* single-token GEMV: vec_dot / rep8 arithmetic, rows in long streams        */
/* ======================================================================== */

/* With one token a matmul reads every weight once, so it is bound by how
 * fast the weights stream in. One row after the other is a single
 * sequential stream, which the hardware prefetcher here did not run at full
 * rate (see GEMV_STREAMS in kernels.h), and the per-row calls each paid a
 * horizontal reduction per super-block in the rep8 order. These kernels take
 * GV rows rs = n_rows / GV apart (g, g + rs, ...) block by block, each row
 * with exactly the float sequence of its row kernel above (same integers,
 * same fmas in the same order, same final reduction); the last n_rows % GV
 * rows go through the row kernels. Several tokens: every token's pass over a
 * row group while the group is in L1, so the weights stream in once. */
#define GV 8

/* Software prefetch a fixed distance ahead on each row stream: the rows of a
 * group are far apart, and each of the 8 streams moves through memory only
 * every 8th block, so the hardware prefetcher alone left these kernels well
 * under the Q4_0/Q8_0 GEMVs' bytes/s on a Zen 5 host (Q6_K 10.8 vs Q4_0 37.8
 * GB/s, one thread). Past a row's end the address falls into the next row of
 * the same stream (g + 1 + i * rs), the one read next. Spelled as inline asm
 * (volatile), so the compiler can neither drop nor move it; a prefetch never
 * faults, even past the matrix.
 * -DKQ_PF_DIST= overrides the distance for experiments. */
#ifndef KQ_PF_DIST
#define KQ_PF_DIST 2048
#endif
/* the cache lines of one block of BYTES bytes, KQ_PF_DIST ahead */
#define KQ_PREFETCH_BLOCK(p, BYTES) PREFETCH_BLOCK_AHEAD(p, BYTES, KQ_PF_DIST)

/* vec_dot order (dot_q4_K/q5_K/q6_K): 8 float lanes per row, hsum8 at the end */
#define GEMV_VEC_DOT(NAME, BT, DOT, ...)                                                             \
    static void NAME(int64_t n, const void *w, int64_t w_row, int64_t n_rows,                      \
                     const void *a, int64_t a_row, int64_t n_tok, float *yo, int64_t ldy) {        \
        const int64_t nsb = n / QK_K, rs = n_rows / GV;                                             \
        for (int64_t g = 0; g < rs; g++) {                                                          \
            const BT *xr[GV];                                                                       \
            for (int i = 0; i < GV; i++) xr[i] = (const BT *)((const char *)w + (g + i * rs) * w_row); \
            for (int64_t t = 0; t < n_tok; t++) {  /* the row group stays in L1 */                  \
                const block_q8_K *y = (const block_q8_K *)((const char *)a + t * a_row);            \
                float *yt = yo + t * ldy;                                                           \
                __VA_ARGS__                                                                         \
            }                                                                                       \
        }                                                                                           \
        for (int64_t t = 0; t < n_tok; t++)                                                         \
            for (int64_t r = GV * rs; r < n_rows; r++)                                              \
                DOT(n, &yo[t * ldy + r], (const char *)w + r * w_row, (const char *)a + t * a_row); \
    }

/* Q6_K: up to 4 tokens per pass over a row group, each block's codes
 * unpacked once for them (lanes_q6_K_nt); per (row, token) dot_q6_K's float
 * steps. The accumulators live in memory when they outgrow the registers:
 * next to the integer work per block that costs little. */
static inline __attribute__((always_inline)) void gemv_q6_K_group(int64_t nsb, const block_q6_K *const xr[GV],
                                                                  const block_q8_K *const yt[], const int NT,
                                                                  float *yo, int64_t ldy, int64_t g, int64_t rs) {
    __m256 acc[4][GV];
    for (int j = 0; j < NT; j++)
        for (int i = 0; i < GV; i++) acc[j][i] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nsb; b++) {
        const block_q8_K *yb[4];
        for (int j = 0; j < NT; j++) yb[j] = &yt[j][b];
        for (int i = 0; i < GV; i++) {
            __m256i l[4];
            KQ_PREFETCH_BLOCK(&xr[i][b], sizeof(block_q6_K));
            lanes_q6_K_nt(&xr[i][b], yb, NT, l);
            for (int j = 0; j < NT; j++) {
                const float d = yb[j]->d * fp16_1(xr[i][b].d);
                acc[j][i] = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(l[j]), acc[j][i]);
            }
        }
    }
    for (int j = 0; j < NT; j++)
        for (int i = 0; i < GV; i++) yo[j * ldy + g + i * rs] = hsum8(acc[j][i]);
}

static void gemv_q6_K(int64_t n, const void *w, int64_t w_row, int64_t n_rows,
                      const void *a, int64_t a_row, int64_t n_tok, float *yo, int64_t ldy) {
    const int64_t nsb = n / QK_K, rs = n_rows / GV;
    for (int64_t g = 0; g < rs; g++) {
        const block_q6_K *xr[GV];
        for (int i = 0; i < GV; i++) xr[i] = (const block_q6_K *)((const char *)w + (g + i * rs) * w_row);
        KQ_TOKEN_PASSES(gemv_q6_K_group, nsb, xr, a, a_row, n_tok, yo, ldy, g, rs);
    }
    for (int64_t t = 0; t < n_tok; t++)
        for (int64_t r = GV * rs; r < n_rows; r++)
            dot_q6_K(n, &yo[t * ldy + r], (const char *)w + r * w_row, (const char *)a + t * a_row);
}

/* the 8 rows' d and dmin (dv lane i = row i's d | dmin << 16, as the block
 * opens) as two float vectors, row i in lane i */
static inline void rows_d_dmin_v(__m256i dv, __m256 *dw, __m256 *dm) {
    /* [d0..d3 dm0..dm3 | d4..d7 dm4..dm7] -> [d0..d7 | dm0..dm7] */
    const __m256i pk = _mm256_permute4x64_epi64(
        _mm256_packus_epi32(_mm256_and_si256(dv, _mm256_set1_epi32(0xFFFF)), _mm256_srli_epi32(dv, 16)), 0xD8);
    *dw = _mm256_cvtph_ps(_mm256_castsi256_si128(pk));
    *dm = _mm256_cvtph_ps(_mm256_extracti128_si256(pk, 1));
}

static inline void rows_d_dmin(const uint32_t dd[GV], __m256 *dw, __m256 *dm) {
    rows_d_dmin_v(_mm256_loadu_si256((const __m256i *)dd), dw, dm);
}

/* the 8 rows' exact S2 (mins . bsums pairs), row i in lane i: mp[i] = the
 * 8 mins of rows i and i+4 as words (one per 128-bit half), bp = the
 * activation block's bsums pairs in both halves; rows i and i+4 share one
 * vpmaddwd, then hadds bring them to row order */
static inline __m256i rows_s2(const __m256i mp[4], __m256i bp) {
    __m256i m[4];
    for (int i = 0; i < 4; i++) m[i] = _mm256_madd_epi16(mp[i], bp);
    return _mm256_hadd_epi32(_mm256_hadd_epi32(m[0], m[1]), _mm256_hadd_epi32(m[2], m[3]));
}

/* rows_s2's mp from each row's 8 mins as words */
static inline void rows_mins_pairs(const __m128i mn[GV], __m256i mp[4]) {
    for (int i = 0; i < 4; i++) mp[i] = _mm256_set_m128i(mn[i + 4], mn[i]);
}

/* dot_q5_K's float steps, the 8 rows' mins chains (summs) in the lanes of one
 * vector: each row's S2 from one transposed reduction (as gemv_r8_q4_K_group's)
 * instead of a horizontal sum per row, the activation's bsums pairs once per
 * block for all rows */
GEMV_VEC_DOT(gemv_q5_K, block_q5_K, dot_q5_K, {
    __m256 acc[GV], summs = _mm256_setzero_ps();
    for (int i = 0; i < GV; i++) acc[i] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nsb; b++) {
        const __m256i bp = _mm256_broadcastsi128_si256(bsums_pairs(&y[b]));
        __m128i mn[GV];
        uint32_t dd[GV];
        _Pragma("GCC unroll 8")   /* every row's chain in a register: 4-6 % faster (Zen 3) */
        for (int i = 0; i < GV; i++) {
            const block_q5_K *x = &xr[i][b];
            KQ_PREFETCH_BLOCK(x, sizeof(block_q5_K));
            const __m128i sm = scales_mins_k4v(x->scales);
            mn[i] = _mm_cvtepu8_epi16(_mm_srli_si128(sm, 8));
            memcpy(&dd[i], &x->d, 4);            /* d | dmin << 16 */
            const float d = y[b].d * fp16_1(x->d);
            acc[i] = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(lanes_q5_K(x, &y[b], sm)), acc[i]);
        }
        __m256 dw, dm;
        rows_d_dmin(dd, &dw, &dm);
        (void)dw;
        __m256i mp[4];
        rows_mins_pairs(mn, mp);
        summs = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_set1_ps(-y[b].d), dm), _mm256_cvtepi32_ps(rows_s2(mp, bp)), summs);
    }
    float sm[GV];
    _mm256_storeu_ps(sm, summs);
    for (int i = 0; i < GV; i++) yt[g + i * rs] = hsum8(acc[i]) + sm[i];
})

GEMV_VEC_DOT(gemv_q4_K, block_q4_K, dot_q4_K, {
    __m256 acc[GV];
    __m128 acc_m[GV];
    for (int i = 0; i < GV; i++) acc[i] = _mm256_setzero_ps(), acc_m[i] = _mm_setzero_ps();
    for (int64_t b = 0; b < nsb; b++)
        _Pragma("GCC unroll 8")
        for (int i = 0; i < GV; i++) {
            const block_q4_K *x = &xr[i][b];
            KQ_PREFETCH_BLOCK(x, sizeof(block_q4_K));
            const float d = y[b].d * fp16_1(x->d);
            const float dmin = -y[b].d * fp16_1(x->dmin);
            const __m128i sm = scales_mins_k4v(x->scales);
            acc_m[i] = _mm_fmadd_ps(_mm_set1_ps(dmin), _mm_cvtepi32_ps(mins_bsums_k4(sm, &y[b])), acc_m[i]);
            acc[i] = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(lanes_q4_K(x, &y[b], sm)), acc[i]);
        }
    for (int i = 0; i < GV; i++) {
        __m128 m = acc_m[i];
        m = _mm_add_ps(m, _mm_movehl_ps(m, m));
        m = _mm_add_ss(m, _mm_movehdup_ps(m));
        yt[g + i * rs] = hsum8(acc[i]) + _mm_cvtss_f32(m);
    }
})

/* rep8 order (rep8_q4_K) for the 8 rows of a group, lane i doing row i's
 * scalar fmaf chains. Rows p and p + 4 share the vectors: for code vector k
 * (bytes 32k..32k+31 of qs), the 64-bit pieces blend(v_p, v_p+4) =
 * [p q0, p+4 q1 | p q2, p+4 q3] meet the activations as they lie, and the
 * other blend with its pieces swapped, [p q1, p+4 q0 | p q3, p+4 q2], meets
 * them swapped likewise (once per token and block, for all rows). The two
 * products then hold the same row in the same words (0-3 row p, 4-7 row
 * p + 4, per 128-bit half) and are added in int16 (at most 4 x 15 x 127 a
 * word) before one vpmaddwd applies both rows' sub-block scales: 12
 * multiplies per row and super-block instead of 16 for one row per vector,
 * and the 4 pair vectors give the 8 rows' exact S1 by 2 hadds instead of a
 * horizontal sum per row. Each block's first 16 bytes, loaded once, give d,
 * dmin and the scales, two rows per 256-bit unpack. Measured on Zen 3 (one
 * thread, matrix in L2): 38.7 -> 32.8 us for 512 x 2048; 2 threads reading
 * a 4096 x 4096 matrix from DRAM: 402 -> 292 us (benchmarks/gemv_loop.c). */
/* vpshufb control: words 0-3 of each half take byte j (zero-extended),
 * words 4-7 byte 8 + j */
#define W4_(b) ((long long)((0x8000ULL | (unsigned)(b)) * 0x0001000100010001ULL))
#define PAIR_SCALES(j) _mm256_setr_epi64x(W4_(j), W4_(8 + (j)), W4_(j), W4_(8 + (j)))

static inline __attribute__((always_inline)) void gemv_r8_q4_K_group(int64_t nsb, const block_q4_K *const xr[GV],
                                                                      const block_q8_K *const yt[], const int NT,
                                                                      float *yo, int64_t ldy, int64_t g, int64_t rs) {
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    __m256 acc[4], acc_m[4];
    for (int j = 0; j < NT; j++) acc[j] = acc_m[j] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nsb; b++) {
        const block_q8_K *q[4];
        __m256i bp[4], asw[4][8];
        for (int j = 0; j < NT; j++) {
            q[j] = &yt[j][b];
            bp[j] = _mm256_broadcastsi128_si256(bsums_pairs(q[j]));   /* in both halves */
            for (int h = 0; h < 8; h++)        /* activation vector h, 64-bit halves swapped */
                asw[j][h] = _mm256_shuffle_epi32(load32(q[j]->qs + 32 * h), _MM_SHUFFLE(1, 0, 3, 2));
        }
        /* pair p: rows p and p + 4, one per 128-bit half of hp/smp/mp */
        __m256i hp[4], smp[4], mp[4];
        for (int p = 0; p < 4; p++) {
            for (int i = p; i < GV; i += 4) KQ_PREFETCH_BLOCK(&xr[i][b], sizeof(block_q4_K));
            /* d | dmin << 16, then the packed scales */
            hp[p] = _mm256_set_m128i(_mm_loadu_si128((const __m128i *)&xr[p + 4][b]),
                                     _mm_loadu_si128((const __m128i *)&xr[p][b]));
            smp[p] = scales_mins_k4_head2(hp[p]);
            mp[p] = _mm256_unpackhi_epi8(smp[p], _mm256_setzero_si256());   /* mins as words */
        }
        __m256i pr[4][4];
        for (int p = 0; p < 4; p++) {
            const uint8_t *c0 = xr[p][b].qs, *c1 = xr[p + 4][b].qs;
            /* bytes j, 8 + j of both halves: sub-block j's scale of row p, of row p + 4 */
            const __m256i sc = _mm256_permute4x64_epi64(smp[p], 0x88);
            __m256i s[4];
            for (int j = 0; j < NT; j++) s[j] = _mm256_setzero_si256();
            for (int k = 0; k < 4; k++) {
                const __m256i v0 = load32(c0 + 32 * k), v1 = load32(c1 + 32 * k);
                const __m256i e = _mm256_blend_epi32(v0, v1, 0xCC);
                const __m256i o = _mm256_shuffle_epi32(_mm256_blend_epi32(v1, v0, 0xCC), _MM_SHUFFLE(1, 0, 3, 2));
                const __m256i el = _mm256_and_si256(e, m4), ol = _mm256_and_si256(o, m4);
                const __m256i eh = _mm256_and_si256(_mm256_srli_epi16(e, 4), m4);
                const __m256i oh = _mm256_and_si256(_mm256_srli_epi16(o, 4), m4);
                /* words 0-3 of each half: row p's scale, 4-7: row p + 4's */
                const __m256i s_lo = _mm256_shuffle_epi8(sc, PAIR_SCALES(2 * k));
                const __m256i s_hi = _mm256_shuffle_epi8(sc, PAIR_SCALES(2 * k + 1));
                for (int j = 0; j < NT; j++) {
                    const __m256i x_lo = _mm256_add_epi16(_mm256_maddubs_epi16(el, load32(q[j]->qs + 64 * k)),
                                                          _mm256_maddubs_epi16(ol, asw[j][2 * k]));
                    const __m256i x_hi = _mm256_add_epi16(_mm256_maddubs_epi16(eh, load32(q[j]->qs + 64 * k + 32)),
                                                          _mm256_maddubs_epi16(oh, asw[j][2 * k + 1]));
                    s[j] = _mm256_add_epi32(s[j], _mm256_add_epi32(_mm256_madd_epi16(x_lo, s_lo),
                                                                   _mm256_madd_epi16(x_hi, s_hi)));
                }
            }
            for (int j = 0; j < NT; j++) pr[j][p] = s[j];
        }
        __m256 dw, dm;
        {   /* dword 0 of each head: rows 0-3 from the low halves, 4-7 from the high */
            const __m256i d01 = _mm256_unpacklo_epi32(hp[0], hp[1]), d23 = _mm256_unpacklo_epi32(hp[2], hp[3]);
            rows_d_dmin_v(_mm256_unpacklo_epi64(d01, d23), &dw, &dm);
        }
        for (int j = 0; j < NT; j++) {
            /* pair p: row p in int32 lanes 0,1,4,5, row p + 4 in 2,3,6,7; the
             * hadds and half sums give rows 0 4 1 5 2 6 3 7, one vpermd row order */
            const __m256i h01 = _mm256_hadd_epi32(pr[j][0], pr[j][1]), h23 = _mm256_hadd_epi32(pr[j][2], pr[j][3]);
            const __m256i s1 = _mm256_permutevar8x32_epi32(
                _mm256_add_epi32(_mm256_permute2x128_si256(h01, h23, 0x20), _mm256_permute2x128_si256(h01, h23, 0x31)),
                _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7));
            const __m256i s2 = rows_s2(mp, bp[j]);
            const __m256 da = _mm256_set1_ps(q[j]->d);
            acc[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s1), _mm256_mul_ps(dw, da), acc[j]);
            acc_m[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s2), _mm256_mul_ps(dm, da), acc_m[j]);
        }
    }
    for (int j = 0; j < NT; j++) {
        float out[GV];
        _mm256_storeu_ps(out, _mm256_sub_ps(acc[j], acc_m[j]));
        for (int i = 0; i < GV; i++) yo[j * ldy + g + i * rs] = out[i];
    }
}

static void gemv_r8_q4_K(int64_t n, const void *w, int64_t w_row, int64_t n_rows,
                         const void *a, int64_t a_row, int64_t n_tok, float *yo, int64_t ldy) {
    const int64_t nsb = n / QK_K, rs = n_rows / GV;
    for (int64_t g = 0; g < rs; g++) {
        const block_q4_K *xr[GV];
        for (int i = 0; i < GV; i++) xr[i] = (const block_q4_K *)((const char *)w + (g + i * rs) * w_row);
        KQ_TOKEN_PASSES(gemv_r8_q4_K_group, nsb, xr, a, a_row, n_tok, yo, ldy, g, rs);
    }
    for (int64_t t = 0; t < n_tok; t++)
        for (int64_t r = GV * rs; r < n_rows; r++)
            rep8_q4_K(n, &yo[t * ldy + r], (const char *)w + r * w_row, (const char *)a + t * a_row);
}

/* ======================================================================== */
/* Q8_K activations: same values as the reference (generic/kquants.c)           */
/* ======================================================================== */

static void quant_q8_K(const float *src, void *dst, int64_t n) {
    block_q8_K *y = (block_q8_K *)dst;                 /* [n/256] */
    const __m256 sign = _mm256_set1_ps(-0.0f);
    for (int64_t b = 0; b < n / QK_K; b++, src += QK_K) {
        /* max |x| (NaN ignored, as the reference's '>' does), then the first
         * element reaching it gives the sign */
        __m256 m = _mm256_setzero_ps();
        for (int j = 0; j < QK_K; j += 8) m = _mm256_max_ps(_mm256_andnot_ps(sign, _mm256_loadu_ps(src + j)), m);
        const float amax = hmax_ps(m);
        if (!(amax > 0.0f)) {
            memset(&y[b], 0, sizeof y[b]);
            continue;
        }
        float max = amax;
        for (int j = 0; j < QK_K; j++)
            if (fabsf(src[j]) == amax) { max = src[j]; break; }
        const float iscale = -127.0f / max;
        const __m256 vs = _mm256_set1_ps(iscale);
        const __m256i top = _mm256_set1_epi32(127);
        const int rm = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
        for (int j = 0; j < QK_K; j += 32) {
            __m256i i[4];
            for (int k = 0; k < 4; k++)
                i[k] = _mm256_min_epi32(_mm256_cvtps_epi32(_mm256_round_ps(
                           _mm256_mul_ps(_mm256_loadu_ps(src + j + 8 * k), vs), rm)), top);
            /* packs work per 128-bit half; one dword permute restores the order */
            const __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(i[0], i[1]), _mm256_packs_epi32(i[2], i[3]));
            _mm256_storeu_si256((__m256i *)(y[b].qs + j),
                                _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
        }
        for (int g = 0; g < QK_K / 16; g++) {
            const __m256i v = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(y[b].qs + 16 * g)));
            y[b].bsums[g] = (int16_t)hsum_i32x8(_mm256_madd_epi16(v, _mm256_set1_epi16(1)));
        }
        y[b].d = 1.0f / iscale;
    }
}

/* ======================================================================== */

void pyrt_fill_kquants_avx2(pyrt_kernels *k) {
    k->type[PYRT_TYPE_Q8_K].quantize_act = quant_q8_K;

    k->type[PYRT_TYPE_Q2_K].vec_dot = dot_q2_K;
    k->type[PYRT_TYPE_Q3_K].vec_dot = dot_q3_K;
    k->type[PYRT_TYPE_Q4_K].vec_dot = dot_q4_K;
    k->type[PYRT_TYPE_Q5_K].vec_dot = dot_q5_K;
    k->type[PYRT_TYPE_Q6_K].vec_dot = dot_q6_K;

    k->type[PYRT_TYPE_Q2_K].vec_dot_tiled = tiled_q2_K;
    k->type[PYRT_TYPE_Q3_K].vec_dot_tiled = tiled_q3_K;
    k->type[PYRT_TYPE_Q4_K].vec_dot_tiled = tiled_q4_K;
    k->type[PYRT_TYPE_Q5_K].vec_dot_tiled = tiled_q5_K;
    k->type[PYRT_TYPE_Q6_K].vec_dot_tiled = tiled_q6_K;

    k->type[PYRT_TYPE_Q4_K].vec_dot_r8 = rep8_q4_K;
    k->type[PYRT_TYPE_Q4_K].vec_dot_r8x4 = rep8x4_q4_K;

    if (getenv("PYRT_NO_KQ_GEMM")) return;   /* tests: the row kernels for every token */
    k->type[PYRT_TYPE_Q4_K].gemm = gemv_q4_K;
    k->type[PYRT_TYPE_Q5_K].gemm = gemv_q5_K;
    k->type[PYRT_TYPE_Q6_K].gemm = gemv_q6_K;
    k->type[PYRT_TYPE_Q4_K].gemm_r8 = gemv_r8_q4_K;
}

#endif /* __x86_64__ */
