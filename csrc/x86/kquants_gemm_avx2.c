/* x86/kquants_gemm_avx2.c — batched K-quant matmuls for AVX2 CPUs, bit-identical
 * to the per-(row, token) kernels of x86/kquants_avx2.c in the two batched orders
 * llama.cpp uses on x86 (see x86/kquants_gemm_avx512.c for the same in 512-bit form):
 *
 *   tiled  (Q4_K, Q5_K, Q6_K; batches of >= 8 tokens): per super-block the
 *          exact integers S1 (scaled codes) and S2 (mins x block sums), then
 *          r = d_w*S1 [- dmin_w*S2, one rounding], acc = fma(r, d_a, acc)
 *   r8x4   (Q4_K with rows % 8 == 0, the tokens of a batch in groups of 4):
 *          per pair of sub-blocks acc = fma(S1_p, d_w*d_a, acc),
 *          acc_m = fma(S2_p, dmin_w*d_a, acc_m); result acc - acc_m
 *
 * Both orders run as row-per-lane GEMMs (8 rows per vector, the driver in
 * x86/kquants_gemm_lanes.inc; see "rows in lanes" below), in both builds of
 * this file (plain AVX2, and AVX-VNNI: x86/kquants_gemm_avxvnni.c). The
 * AVX-VNNI build had 2-row x 4-token tiles with a horizontal reduction per
 * tile instead: on an Intel Xeon with AVX-VNNI these lanes took SmolLM2-1.7B-
 * shape pp512 (2 threads) from 42 to 91 t/s for Q4_K_M and Q5_K_M, and Gemma-3
 * from ~720 to ~880. Integer sums do not depend on order, so S1 and S2 are the
 * row kernels' integers; the float steps then run with one (row, token) per
 * lane, each lane doing exactly the scalar operations of the row kernel.
 *
 * The AVX-VNNI build also has the one-token GEMV of Q4_K's repacked order
 * (gemv_r8_q4_K, at the end). */
#if defined(__x86_64__)
#include <immintrin.h>
#include <stdlib.h>
#include <string.h>
#include "kernels.h"
#include "simd_avx2.h"

#if defined(PYRT_KQ_VNNI)
#define FILL_FN pyrt_fill_kquants_gemm_avxvnni
#else
#define FILL_FN pyrt_fill_kquants_gemm_avx2
#endif

static inline __m256i ld32(const void *p) { return _mm256_loadu_si256((const __m256i *)p); }

/* ---- rows in lanes ---------------------------------------------------------
 *
 * x86/kquants_gemm_avx512.c's scheme in 8-lane form: a panel of 8 rows is unpacked once
 * per call into row-per-lane order (per super-block, vector k holds codes
 * 4k..4k+3 of every row: 8 x 8 dword transposes; Q5_K's fifth bits added to its
 * codes), with the scales, mins and d, dmin one row per lane. Each activation
 * dword of a token is broadcast into the byte dot, so a row's sub-block dot
 * builds up in its own lane, with no horizontal reductions:
 *   Q4_K/Q5_K with AVX-VNNI: 8 vpdpbusd per 32-element sub-block give D_j in
 *         int32, one vpmulld by the scale gives s_j * D_j;
 *   Q4_K without: 8 vpmaddubsw steps in int16 (|sum| <= 8 * 2 * 15 * 128 <
 *         2^15), then one vpmaddwd by the (s_j, s_j) word pair; Q5_K's 5-bit
 *         codes take two such sums of 4 steps (4 * 2 * 31 * 128 < 2^15);
 *   S2_p = one vpmaddwd of (m_2p, m_2p+1) by the block-pair sums;
 *   Q6_K: 2 steps per int16 sum (2 * 2 * 63 * 128 < 2^15), two per 16-element
 *         sub-block, each widened by vpmaddwd with (sc_j, sc_j); the -32 offset
 *         of the codes is -32 * sum_j sc_j * bsums_j, vpmaddwd of (sc_2i,
 *         sc_2i+1) word pairs by the token's (bsums_2i, bsums_2i+1).
 * The integers are the row kernels' exactly; the float steps run per (row,
 * token) lane as in the row kernel. Without AVX-VNNI the tokens of a group
 * are the innermost loop: a code vector is loaded once for all of them, so a
 * vpmaddubsw costs one load (the token's dword) instead of two (a Zen 3 core's
 * load ports bound the other order; a 128-token prompt of the SmolLM2-1.7B
 * Q4_K_M shape on one such core: +19-27 %). */
/* code-vector steps per loop iteration in the tokens-innermost kernels (k45_tokens,
 * k6_group): 2 ran fastest on a Zen 3 core; fully unrolled, GCC spills the token sums */
#ifndef K_UNROLL
#define K_UNROLL 2
#endif
#define K_PRAGMA_(x) _Pragma(#x)
#define K_PRAGMA(x) K_PRAGMA_(x)
#define KL 8         /* rows per panel: one per lane */
#define K_SB 8       /* super-blocks per column chunk (the float chains carry across chunks) */
#define K_TG 4       /* tokens per group */
#define K_TP 128     /* tokens per token panel (core/matmul.c MM_GEMM_TOKS_K) */

typedef struct {
    __m256i w[64];   /* dword k: codes 4k..4k+3 of each row */
    __m256i sc[16];  /* (scale_j, scale_j) word pairs (Q4_K: j < 8; with AVX-VNNI, Q4_K/Q5_K's
                      * scale_j as a dword, for vpmulld) */
    __m256i mn[8];   /* Q4_K: (m_2p, m_2p+1), p < 4; Q6_K: (sc_2i, sc_2i+1), i < 8 */
    __m256 d, dm;
} k_panel;

/* v[r] dword k -> v[k] dword r */
static inline void transpose8(__m256i v[8]) {
    __m256i t[8], u[8];
    for (int i = 0; i < 4; i++) {
        t[2 * i] = _mm256_unpacklo_epi32(v[2 * i], v[2 * i + 1]);
        t[2 * i + 1] = _mm256_unpackhi_epi32(v[2 * i], v[2 * i + 1]);
    }
    /* u[4h+m], 128-bit lane L: dword 4L+m of rows 4h..4h+3 */
    for (int h = 0; h < 2; h++) {
        u[4 * h] = _mm256_unpacklo_epi64(t[4 * h], t[4 * h + 2]);
        u[4 * h + 1] = _mm256_unpackhi_epi64(t[4 * h], t[4 * h + 2]);
        u[4 * h + 2] = _mm256_unpacklo_epi64(t[4 * h + 1], t[4 * h + 3]);
        u[4 * h + 3] = _mm256_unpackhi_epi64(t[4 * h + 1], t[4 * h + 3]);
    }
    for (int m = 0; m < 4; m++) {
        v[m] = _mm256_permute2x128_si256(u[m], u[4 + m], 0x20);
        v[4 + m] = _mm256_permute2x128_si256(u[m], u[4 + m], 0x31);
    }
}

/* super-blocks b0 .. b0+nsb-1 of rows r0 .. r0+nr-1 (missing rows repeat the last) */
static inline __attribute__((always_inline)) void pack_k45(k_panel *pk, const void *w, int64_t w_row, int64_t r0, int nr,
                                                           int64_t b0, int nsb, const int five) {
    const __m256i m4 = _mm256_set1_epi8(0x0F), one = _mm256_set1_epi8(1);
    /* Q4_K and Q5_K blocks open alike (d, dmin, 12 scale bytes); Q5_K's 32 bytes of
     * fifth bits come before its codes */
    const int64_t bsize = five ? (int64_t)sizeof(block_q5_K) : (int64_t)sizeof(block_q4_K);
    for (int s = 0; s < nsb; s++) {
        const block_q4_K *x[KL];
        const uint8_t *qs[KL];
        __m256i qh[KL];   /* Q5_K: the 32 fifth-bit bytes of each row's block */
        _Alignas(32) int32_t sc[8][KL], mn[4][KL];
        _Alignas(32) float d[KL], dm[KL];
        for (int r = 0; r < KL; r++) {
            x[r] = (const block_q4_K *)((const char *)w + (r0 + (r < nr ? r : nr - 1)) * w_row + (b0 + s) * bsize);
            qs[r] = five ? ((const block_q5_K *)x[r])->qs : x[r]->qs;
            if (five) qh[r] = ld32(((const block_q5_K *)x[r])->qh);
            uint8_t u[16];
            _mm_storeu_si128((__m128i *)u, scales_mins_k4v(x[r]->scales));
#if defined(PYRT_KQ_VNNI)
            for (int j = 0; j < 8; j++) sc[j][r] = u[j];
#else
            for (int j = 0; j < 8; j++) sc[j][r] = u[j] | (u[j] << 16);
#endif
            for (int p = 0; p < 4; p++) mn[p][r] = u[8 + 2 * p] | (u[9 + 2 * p] << 16);
            d[r] = _cvtsh_ss(x[r]->d);
            dm[r] = _cvtsh_ss(x[r]->dmin);
        }
        for (int j = 0; j < 8; j++) {
            __m256i v[KL];
            for (int r = 0; r < KL; r++) {
                const __m256i bits = ld32(qs[r] + 32 * (j / 2));
                v[r] = _mm256_and_si256(j % 2 ? _mm256_srli_epi16(bits, 4) : bits, m4);
                if (five)     /* element l of sub-block j: bit j of qh[l] -> 16 */
                    v[r] = _mm256_or_si256(v[r], _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh[r], j), one), 4));
            }
            transpose8(v);
            for (int k = 0; k < 8; k++) pk[s].w[8 * j + k] = v[k];
        }
        for (int j = 0; j < 8; j++) pk[s].sc[j] = ld32(sc[j]);
        for (int p = 0; p < 4; p++) pk[s].mn[p] = ld32(mn[p]);
        pk[s].d = _mm256_load_ps(d);
        pk[s].dm = _mm256_load_ps(dm);
    }
}

static void pack_q4_K(k_panel *pk, const void *w, int64_t w_row, int64_t r0, int nr, int64_t b0, int nsb) {
    pack_k45(pk, w, w_row, r0, nr, b0, nsb, 0);
}
static void pack_q5_K(k_panel *pk, const void *w, int64_t w_row, int64_t r0, int nr, int64_t b0, int nsb) {
    pack_k45(pk, w, w_row, r0, nr, b0, nsb, 1);
}

/* the 32 codes (q + 32, 0..63) of Q6_K elements 32c .. 32c+31 */
static inline __m256i codes32_q6_K(const block_q6_K *x, int c) {
    const int h = c / 4, g = c % 4;
    const __m256i m15 = _mm256_set1_epi8(15), m3 = _mm256_set1_epi8(3);
    const __m256i lq = ld32(x->ql + 64 * h + 32 * (g % 2));
    const __m256i lo = g < 2 ? _mm256_and_si256(lq, m15) : _mm256_and_si256(_mm256_srli_epi16(lq, 4), m15);
    const __m256i hb = _mm256_and_si256(_mm256_srli_epi16(ld32(x->qh + 32 * h), 2 * g), m3);
    return _mm256_or_si256(lo, _mm256_slli_epi16(hb, 4));
}

static void pack_q6_K(k_panel *pk, const void *w, int64_t w_row, int64_t r0, int nr, int64_t b0, int nsb) {
    for (int s = 0; s < nsb; s++) {
        const block_q6_K *x[KL];
        _Alignas(32) int32_t sc[16][KL], pr[8][KL];
        _Alignas(32) float d[KL];
        for (int r = 0; r < KL; r++) {
            x[r] = (const block_q6_K *)((const char *)w + (r0 + (r < nr ? r : nr - 1)) * w_row) + b0 + s;
            for (int j = 0; j < 16; j++) sc[j][r] = (uint16_t)x[r]->scales[j] * 0x10001u;
            for (int i = 0; i < 8; i++)
                pr[i][r] = (int32_t)((uint16_t)x[r]->scales[2 * i] | ((uint32_t)(uint16_t)x[r]->scales[2 * i + 1] << 16));
            d[r] = _cvtsh_ss(x[r]->d);
        }
        for (int c = 0; c < 8; c++) {
            __m256i v[KL];
            for (int r = 0; r < KL; r++) v[r] = codes32_q6_K(x[r], c);
            transpose8(v);
            for (int k = 0; k < 8; k++) pk[s].w[8 * c + k] = v[k];
        }
        for (int j = 0; j < 16; j++) pk[s].sc[j] = ld32(sc[j]);
        for (int i = 0; i < 8; i++) pk[s].mn[i] = ld32(pr[i]);
        pk[s].d = _mm256_load_ps(d);
    }
}

/* int16 pair sums of the codes w[0..NK) against the token's bytes q[0..4*NK) */
static inline __attribute__((always_inline)) __m256i l_dot16(const __m256i *w, const int8_t *q, const int NK) {
    __m256i s = _mm256_maddubs_epi16(_mm256_load_si256(&w[0]), _mm256_set1_epi32(pyrt_load_i32(q)));
    for (int k = 1; k < NK; k++)
        s = _mm256_add_epi16(s, _mm256_maddubs_epi16(_mm256_load_si256(&w[k]), _mm256_set1_epi32(pyrt_load_i32(q + 4 * k))));
    return s;
}

#if defined(PYRT_KQ_VNNI)
/* int32 sums of the codes w[0..8) against the token's bytes q[0..32): one sub-block's dot per lane */
static inline __attribute__((always_inline)) __m256i l_dot32(const __m256i *w, const int8_t *q) {
    __m256i s = _mm256_setzero_si256();
    for (int k = 0; k < 8; k++)
        s = _mm256_dpbusd_avx_epi32(s, _mm256_load_si256(&w[k]), _mm256_set1_epi32(pyrt_load_i32(q + 4 * k)));
    return s;
}
#endif

/* rt tokens (activation rows q0[t], at the chunk's first super-block) against
 * a packed Q4_K panel of nsb super-blocks; acc/accm carry the float chains */
static inline __attribute__((always_inline)) void k45_group(const k_panel *pk, int nsb, const block_q8_K *const q0[K_TG],
                                                            const int rt, const int r8x4, const int five,
                                                            __m256 acc[K_TG], __m256 accm[K_TG]) {
    for (int s = 0; s < nsb; s++) {
        const k_panel *P = &pk[s];
        for (int t = 0; t < rt; t++) {
            const block_q8_K *q = q0[t] + s;
            const __m256 da = _mm256_set1_ps(q->d);
            __m256i s1 = _mm256_setzero_si256(), s2 = _mm256_setzero_si256();
            for (int p = 0; p < 4; p++) {
#if defined(PYRT_KQ_VNNI)
                /* the sub-block dots in int32 (vpdpbusd), times the scale */
                const __m256i S1 = _mm256_add_epi32(
                    _mm256_mullo_epi32(l_dot32(&P->w[16 * p], q->qs + 64 * p), P->sc[2 * p]),
                    _mm256_mullo_epi32(l_dot32(&P->w[16 * p + 8], q->qs + 64 * p + 32), P->sc[2 * p + 1]));
                (void)five;
#else
                __m256i S1 = _mm256_add_epi32(_mm256_madd_epi16(l_dot16(&P->w[16 * p], q->qs + 64 * p, five ? 4 : 8), P->sc[2 * p]),
                                              _mm256_madd_epi16(l_dot16(&P->w[16 * p + 8], q->qs + 64 * p + 32, five ? 4 : 8),
                                                                P->sc[2 * p + 1]));
                if (five)     /* 5-bit codes: int16 sums of 4 steps at most (4 * 2 * 31 * 128 < 2^15) */
                    S1 = _mm256_add_epi32(S1, _mm256_add_epi32(
                        _mm256_madd_epi16(l_dot16(&P->w[16 * p + 4], q->qs + 64 * p + 16, 4), P->sc[2 * p]),
                        _mm256_madd_epi16(l_dot16(&P->w[16 * p + 12], q->qs + 64 * p + 48, 4), P->sc[2 * p + 1])));
#endif
                const int16_t *bs = q->bsums + 4 * p;
                const int32_t bp = (int32_t)(uint16_t)(bs[0] + bs[1]) | (int32_t)((uint32_t)(uint16_t)(bs[2] + bs[3]) << 16);
                const __m256i S2 = _mm256_madd_epi16(P->mn[p], _mm256_set1_epi32(bp));
                if (r8x4) {
                    acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(S1), _mm256_mul_ps(P->d, da), acc[t]);
                    accm[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(S2), _mm256_mul_ps(P->dm, da), accm[t]);
                } else {
                    s1 = _mm256_add_epi32(s1, S1);
                    s2 = _mm256_add_epi32(s2, S2);
                }
            }
            if (!r8x4) {
                const __m256 rr = _mm256_mul_ps(P->d, _mm256_cvtepi32_ps(s1));
                acc[t] = _mm256_fmadd_ps(_mm256_fnmadd_ps(P->dm, _mm256_cvtepi32_ps(s2), rr), da, acc[t]);
            }
        }
    }
}

#if defined(PYRT_KQ_VNNI)
#define K45_GROUP k45_group
#else
/* Q4_K/Q5_K without AVX-VNNI: k45_group with the tokens innermost. Each code
 * vector is loaded once for the group's rt tokens (k45_group loads it per
 * token: two loads per vpmaddubsw, which bound it on a Zen 3 core), and a
 * token's four block-pair sums of bsums come from one vphaddw per super-block.
 * The integers are the same exact sums (int16 sums of 8 steps, Q5_K of 4);
 * the float steps per (row, token) lane are k45_group's. */
static inline __attribute__((always_inline)) void k45_tokens(const k_panel *pk, int nsb, const block_q8_K *const q0[K_TG],
                                                             const int rt, const int r8x4, const int five,
                                                             __m256 acc[K_TG], __m256 accm[K_TG]) {
    const int ks = five ? 4 : 8;      /* steps per int16 sum */
    for (int s = 0; s < nsb; s++) {
        const k_panel *P = &pk[s];
        const int8_t *qs[K_TG];
        _Alignas(16) int32_t bp[K_TG][4];   /* (bsums_4p + bsums_4p+1, bsums_4p+2 + bsums_4p+3) word pairs */
        __m256i s1[K_TG], s2[K_TG];
        for (int t = 0; t < rt; t++) {
            const block_q8_K *q = q0[t] + s;
            qs[t] = q->qs;
            _mm_store_si128((__m128i *)bp[t], _mm_hadd_epi16(_mm_loadu_si128((const __m128i *)q->bsums),
                                                             _mm_loadu_si128((const __m128i *)(q->bsums + 8))));
            s1[t] = s2[t] = _mm256_setzero_si256();
        }
        for (int p = 0; p < 4; p++) {
            __m256i S1[K_TG];
            for (int t = 0; t < rt; t++) S1[t] = _mm256_setzero_si256();
            for (int h = 0; h < 2; h++) {
                const __m256i *w = &P->w[16 * p + 8 * h];
                const int off = 64 * p + 32 * h;
                for (int g = 0; g < 8; g += ks) {
                    __m256i d16[K_TG];
                    for (int t = 0; t < rt; t++) d16[t] = _mm256_setzero_si256();
                    K_PRAGMA(GCC unroll K_UNROLL)
                    for (int k = g; k < g + ks; k++) {
                        const __m256i wv = _mm256_load_si256(&w[k]);
                        for (int t = 0; t < rt; t++)
                            d16[t] = _mm256_add_epi16(d16[t], _mm256_maddubs_epi16(
                                wv, _mm256_set1_epi32(pyrt_load_i32(qs[t] + off + 4 * k))));
                    }
                    for (int t = 0; t < rt; t++) {
                        const __m256i m = _mm256_madd_epi16(d16[t], P->sc[2 * p + h]);
                        if (r8x4) S1[t] = _mm256_add_epi32(S1[t], m);
                        else s1[t] = _mm256_add_epi32(s1[t], m);
                    }
                }
            }
            for (int t = 0; t < rt; t++) {
                const __m256i S2 = _mm256_madd_epi16(P->mn[p], _mm256_set1_epi32(bp[t][p]));
                if (r8x4) {
                    const __m256 da = _mm256_set1_ps(q0[t][s].d);
                    acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(S1[t]), _mm256_mul_ps(P->d, da), acc[t]);
                    accm[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(S2), _mm256_mul_ps(P->dm, da), accm[t]);
                } else {
                    s2[t] = _mm256_add_epi32(s2[t], S2);
                }
            }
        }
        if (!r8x4)
            for (int t = 0; t < rt; t++) {
                const __m256 rr = _mm256_mul_ps(P->d, _mm256_cvtepi32_ps(s1[t]));
                acc[t] = _mm256_fmadd_ps(_mm256_fnmadd_ps(P->dm, _mm256_cvtepi32_ps(s2[t]), rr), _mm256_set1_ps(q0[t][s].d),
                                         acc[t]);
            }
    }
}
#define K45_GROUP k45_tokens
#endif
static inline __attribute__((always_inline)) void k4_group(const k_panel *pk, int nsb, const block_q8_K *const q0[K_TG],
                                                           const int rt, const int r8x4, __m256 acc[K_TG], __m256 accm[K_TG]) {
    K45_GROUP(pk, nsb, q0, rt, r8x4, 0, acc, accm);
}
static inline __attribute__((always_inline)) void k5_group(const k_panel *pk, int nsb, const block_q8_K *const q0[K_TG],
                                                           const int rt, const int r8x4, __m256 acc[K_TG], __m256 accm[K_TG]) {
    K45_GROUP(pk, nsb, q0, rt, r8x4, 1, acc, accm);
}

/* Q6_K, tiled order: S1 = sum_j sc_j * (codes . a)_j - 32 * sum_j sc_j * bsums_j,
 * acc = fma(d_w * S1, d_a, acc) */
#if !defined(PYRT_KQ_VNNI)
/* the tokens innermost, as k4_group: each pair of code vectors is loaded once
 * for the group's rt tokens; the same exact integers and float steps */
static inline __attribute__((always_inline)) void k6_group(const k_panel *pk, int nsb, const block_q8_K *const q0[K_TG],
                                                           const int rt, __m256 acc[K_TG]) {
    for (int s = 0; s < nsb; s++) {
        const k_panel *P = &pk[s];
        const block_q8_K *q[K_TG];
        __m256i s1[K_TG];
        for (int t = 0; t < rt; t++) {
            q[t] = q0[t] + s;
            s1[t] = _mm256_setzero_si256();
        }
        K_PRAGMA(GCC unroll K_UNROLL)
        for (int c = 0; c < 32; c++) {     /* 8 codes a step: half c % 2 of sub-block c / 2 */
            const __m256i w0 = _mm256_load_si256(&P->w[2 * c]), w1 = _mm256_load_si256(&P->w[2 * c + 1]);
            const __m256i sc = P->sc[c / 2];
            for (int t = 0; t < rt; t++) {
                const int8_t *qc = q[t]->qs + 8 * c;
                const __m256i d = _mm256_add_epi16(_mm256_maddubs_epi16(w0, _mm256_set1_epi32(pyrt_load_i32(qc))),
                                                   _mm256_maddubs_epi16(w1, _mm256_set1_epi32(pyrt_load_i32(qc + 4))));
                s1[t] = _mm256_add_epi32(s1[t], _mm256_madd_epi16(d, sc));
            }
        }
        for (int t = 0; t < rt; t++) {
            __m256i cs = _mm256_setzero_si256();
            for (int i = 0; i < 8; i++)
                cs = _mm256_add_epi32(cs, _mm256_madd_epi16(P->mn[i], _mm256_set1_epi32(pyrt_load_i32(q[t]->bsums + 2 * i))));
            const __m256i v = _mm256_sub_epi32(s1[t], _mm256_slli_epi32(cs, 5));
            acc[t] = _mm256_fmadd_ps(_mm256_mul_ps(P->d, _mm256_cvtepi32_ps(v)), _mm256_set1_ps(q[t]->d), acc[t]);
        }
    }
}
#else
static inline __attribute__((always_inline)) void k6_group(const k_panel *pk, int nsb, const block_q8_K *const q0[K_TG],
                                                           const int rt, __m256 acc[K_TG]) {
    for (int s = 0; s < nsb; s++) {
        const k_panel *P = &pk[s];
        for (int t = 0; t < rt; t++) {
            const block_q8_K *q = q0[t] + s;
            __m256i s1 = _mm256_setzero_si256(), cs = _mm256_setzero_si256();
            for (int j = 0; j < 16; j++) {
                s1 = _mm256_add_epi32(s1, _mm256_madd_epi16(l_dot16(&P->w[4 * j], q->qs + 16 * j, 2), P->sc[j]));
                s1 = _mm256_add_epi32(s1, _mm256_madd_epi16(l_dot16(&P->w[4 * j + 2], q->qs + 16 * j + 8, 2), P->sc[j]));
            }
            for (int i = 0; i < 8; i++)
                cs = _mm256_add_epi32(cs, _mm256_madd_epi16(P->mn[i], _mm256_set1_epi32(pyrt_load_i32(q->bsums + 2 * i))));
            s1 = _mm256_sub_epi32(s1, _mm256_slli_epi32(cs, 5));
            acc[t] = _mm256_fmadd_ps(_mm256_mul_ps(P->d, _mm256_cvtepi32_ps(s1)), _mm256_set1_ps(q->d), acc[t]);
        }
    }
}
#endif

#define KF __m256
#define KF_ALIGN 32
#define KF_ZERO() _mm256_setzero_ps()
#define KF_SUB(a, b) _mm256_sub_ps(a, b)
#define KF_STORE(p, nr, v) \
    _mm256_maskstore_ps(p, _mm256_cmpgt_epi32(_mm256_set1_epi32(nr), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)), v)
#include "kquants_gemm_lanes.inc"

/* ---- one token, Q4_K rep8 order, AVX-VNNI ------------------------------------
 *
 * x86/kquants_avx2.c's gemv_r8_q4_K (8 rows n_rows/8 apart, one row per
 * lane, exact S1/S2 per super-block, the rep8 fma chains in vector form)
 * with each sub-block pair's S1 from two vpdpbusd packed to int16 and one
 * vpmaddwd by both scales (PAIR_DOT): 10 instead of 12 integer steps per 64
 * codes. The last n_rows % 8 rows run as one more group with the last row
 * repeated (results not stored). */
#if defined(PYRT_KQ_VNNI)
#define NL 8   /* rows per group: one per lane */

/* lane i <- the total of v[i]'s 8 lanes (exact integer sums) */
static inline __m256i lane_totals(const __m256i v[NL]) {
    const __m256i q0 = _mm256_hadd_epi32(_mm256_hadd_epi32(v[0], v[1]), _mm256_hadd_epi32(v[2], v[3]));
    const __m256i q1 = _mm256_hadd_epi32(_mm256_hadd_epi32(v[4], v[5]), _mm256_hadd_epi32(v[6], v[7]));
    /* q0 = [v0lo v1lo v2lo v3lo | v0hi v1hi v2hi v3hi], q1 likewise for v4..v7 */
    return _mm256_add_epi32(_mm256_permute2x128_si256(q0, q1, 0x20), _mm256_permute2x128_si256(q0, q1, 0x31));
}

/* int16 scales s (16 lanes) -> [s[i0] x4, s[i1] x4 | s[j0] x4, s[j1] x4]; i0, i1
 * index the low 128-bit half, j0, j1 the high half (0..7 each) */
#define SCALE_SEL(s, i0, i1, j0, j1) _mm256_shuffle_epi8((s), _mm256_setr_epi8(                 \
    2 * (i0), 2 * (i0) + 1, 2 * (i0), 2 * (i0) + 1, 2 * (i0), 2 * (i0) + 1, 2 * (i0), 2 * (i0) + 1, \
    2 * (i1), 2 * (i1) + 1, 2 * (i1), 2 * (i1) + 1, 2 * (i1), 2 * (i1) + 1, 2 * (i1), 2 * (i1) + 1, \
    2 * (j0), 2 * (j0) + 1, 2 * (j0), 2 * (j0) + 1, 2 * (j0), 2 * (j0) + 1, 2 * (j0), 2 * (j0) + 1, \
    2 * (j1), 2 * (j1) + 1, 2 * (j1), 2 * (j1) + 1, 2 * (j1), 2 * (j1) + 1, 2 * (j1), 2 * (j1) + 1))

/* acc += products of two 32-byte code vectors u0, u1 with activations a0, a1,
 * scaled per 16-byte half: u0's by s[i0] (low) / s[j0] (high), u1's by s[i1] / s[j1] */
#define PAIR_DOT(acc, u0, a0, u1, a1, s, i0, i1, j0, j1) _mm256_add_epi32((acc), _mm256_madd_epi16(           \
    _mm256_packs_epi32(_mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), (u0), (a0)),                            \
                       _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), (u1), (a1))), SCALE_SEL(s, i0, i1, j0, j1)))

/* the 64 codes of sub-blocks 2p (u[0]) and 2p+1 (u[1]) of a Q4_K block */
static inline void codes_q4_K(const void *blk, int p, __m256i u[2]) {
    const block_q4_K *x = blk;
    const __m256i bits = ld32(x->qs + 32 * p), m4 = _mm256_set1_epi8(0x0F);
    u[0] = _mm256_and_si256(bits, m4);
    u[1] = _mm256_and_si256(_mm256_srli_epi16(bits, 4), m4);
}
/* prefetch a fixed distance ahead on each row stream (x86/kquants_avx2.c's) */
#ifndef KQ_PF_DIST
#define KQ_PF_DIST 2048
#endif
#define KQ_PREFETCH_BLOCK(p, BYTES) PREFETCH_BLOCK_AHEAD(p, BYTES, KQ_PF_DIST)

/* NT tokens over one group of 8 rows (xr), results of rows i < n_out to
 * yo[t * ldy + row[i]]: each row's block unpacked (codes, scales, mins) once
 * for all NT tokens, then per token the exact S1/S2 and the rep8 chains */
static inline __attribute__((always_inline)) void gemv_r8_q4_K_group(int64_t nsb, const block_q4_K *const xr[NL],
                                                                     const block_q8_K *const yt[], const int NT,
                                                                     float *yo, int64_t ldy, const int64_t row[NL],
                                                                     int n_out) {
    __m256 acc[4], acc_m[4];
    for (int j = 0; j < NT; j++) acc[j] = acc_m[j] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nsb; b++) {
        __m256i bp[4];
        for (int j = 0; j < NT; j++) {
            const __m256i bs = ld32(yt[j][b].bsums);
            bp[j] = _mm256_broadcastsi128_si256(_mm_hadd_epi16(_mm256_castsi256_si128(bs), _mm256_extracti128_si256(bs, 1)));
        }
        __m256i s1[4][NL];
        __m128i mn[NL];
        uint32_t dd[NL];
        for (int i = 0; i < NL; i++) {
            const block_q4_K *x = &xr[i][b];
            KQ_PREFETCH_BLOCK(x, sizeof(block_q4_K));
            const __m128i sm = scales_mins_k4v(x->scales);
            const __m256i sc = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(sm));
            for (int j = 0; j < NT; j++) s1[j][i] = _mm256_setzero_si256();
            for (int p = 0; p < 4; p++) {
                __m256i c[2];
                codes_q4_K(x, p, c);
                for (int j = 0; j < NT; j++)
                    s1[j][i] = PAIR_DOT(s1[j][i], c[0], ld32(yt[j][b].qs + 64 * p), c[1], ld32(yt[j][b].qs + 64 * p + 32),
                                        sc, 2 * p, 2 * p + 1, 2 * p, 2 * p + 1);
            }
            mn[i] = _mm_cvtepu8_epi16(_mm_srli_si128(sm, 8));
            memcpy(&dd[i], &x->d, 4);            /* d | dmin << 16 */
        }
        const __m256i dv = ld32(dd);
        const __m256i pk = _mm256_permute4x64_epi64(
            _mm256_packus_epi32(_mm256_and_si256(dv, _mm256_set1_epi32(0xFFFF)), _mm256_srli_epi32(dv, 16)), 0xD8);
        const __m256 dw = _mm256_cvtph_ps(_mm256_castsi256_si128(pk));
        const __m256 dm = _mm256_cvtph_ps(_mm256_extracti128_si256(pk, 1));
        for (int j = 0; j < NT; j++) {
            __m256i m[4];
            for (int i = 0; i < 4; i++) m[i] = _mm256_madd_epi16(_mm256_set_m128i(mn[i + 4], mn[i]), bp[j]);
            const __m256i s2 = _mm256_hadd_epi32(_mm256_hadd_epi32(m[0], m[1]), _mm256_hadd_epi32(m[2], m[3]));
            const __m256 da = _mm256_set1_ps(yt[j][b].d);
            acc[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(lane_totals(s1[j])), _mm256_mul_ps(dw, da), acc[j]);
            acc_m[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s2), _mm256_mul_ps(dm, da), acc_m[j]);
        }
    }
    for (int j = 0; j < NT; j++) {
        float out[NL];
        _mm256_storeu_ps(out, _mm256_sub_ps(acc[j], acc_m[j]));
        for (int i = 0; i < n_out; i++) yo[j * ldy + row[i]] = out[i];
    }
}

static void gemv_r8_q4_K(int64_t n, const void *w, int64_t w_row, int64_t n_rows,
                         const void *a, int64_t a_row, int64_t n_tok, float *yo, int64_t ldy) {
    const int64_t nsb = n / QK_K, rs = n_rows / NL, rest = n_rows - NL * rs;
    for (int64_t g = 0; g < rs + (rest > 0); g++) {
        int64_t row[NL];
        for (int i = 0; i < NL; i++) row[i] = g < rs ? g + i * rs : NL * rs + (i < rest ? i : rest - 1);
        const block_q4_K *xr[NL];
        for (int i = 0; i < NL; i++) xr[i] = (const block_q4_K *)((const char *)w + row[i] * w_row);
        const int n_out = g < rs ? NL : (int)rest;
        KQ_TOKEN_PASSES(gemv_r8_q4_K_group, nsb, xr, a, a_row, n_tok, yo, ldy, row, n_out);
    }
}
#endif

void FILL_FN(pyrt_kernels *k) {
    if (getenv("PYRT_NO_KQ_GEMM")) return;   /* tests: the row kernels for every token */
    k->type[PYRT_TYPE_Q4_K].gemm_tiled = gemm_tiled_q4_K;
    k->type[PYRT_TYPE_Q5_K].gemm_tiled = gemm_tiled_q5_K;
    k->type[PYRT_TYPE_Q6_K].gemm_tiled = gemm_tiled_q6_K;
    k->type[PYRT_TYPE_Q4_K].gemm_r8x4 = gemm_r8x4_q4_K;
#if defined(PYRT_KQ_VNNI)
    k->type[PYRT_TYPE_Q4_K].gemm_r8 = gemv_r8_q4_K;   /* over x86/kquants_avx2.c's */
#endif
}
#endif
