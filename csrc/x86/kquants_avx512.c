/* x86/kquants_avx512.c — single-token (and few-token) K-quant matmuls in
 * 512-bit registers, for the avx512 table: bit-identical to the GEMV kernels
 * of x86/kquants_avx2.c / x86/kquants_gemm_avx2.c and so to the row kernels
 * (rep8_q4_K, dot_q6_K), every row in its row kernel's exact float sequence.
 * Only the integer sums are computed differently, and they are exact.
 *
 *   Q4_K, rep8 order (gemv_r8): 16 rows per pass, 8 pairs of adjacent rows
 *     n_rows/8 apart (16 streams far apart read DRAM at half the rate of 8 on
 *     a Zen 5 host with 2048-column rows: 17 vs 33 GB/s, one thread), one row per
 *     lane of the float chains. Per row and super-block the 256 codes are two
 *     64-byte loads; low / high nibbles meet activations rearranged once per
 *     token and super-block ([sub-block 4k | 4k+2] and [4k+1 | 4k+3]), one
 *     vpdpbusd per 128 codes, two of them packed to int16 and one vpmaddwd by
 *     the sub-block scales (taken by vpshufb from the 16 scale/min bytes). A
 *     reduction tree turns the 16 rows' vectors into one vector of their exact
 *     S1 totals (S2 likewise, 4 rows per vpmaddwd), then
 *       acc = fma(S1, d_w*d_a, acc), acc_m = fma(S2, dmin_w*d_a, acc_m),
 *     the result acc - acc_m: rep8_q4_K's chain in each lane.
 *   Q6_K, vec_dot order (gemm): 8 rows n_rows/8 apart per pass, two rows per
 *     vector in the float chains (dot_q6_K's 8 lanes per row). Per row and
 *     half super-block one 64-byte load of the low bits against 64 contiguous
 *     activation bytes; the integer lane l of dot_q6_K (elements with
 *     e % 32 in 4l..4l+3) is the sum of dwords l and l + 8 here.
 *
 * Both take each row's blocks with a software prefetch ahead (see
 * x86/kquants_avx2.c): Q6_K a fixed distance, Q4_K whole row pairs, so that
 * each prefetch lands on its own row's block in a later group of its stream
 * (a fixed 4096 bytes falls on the pair's other row, already being read, when
 * rows are longer than that: Q4_K 2048 x 8192, 1 thread, 16 -> 20 GB/s on a
 * Zen 4 host). The last n_rows % 16 (n_rows % 8) rows run
 * as one more group with the last row repeated, its extra results not stored. */
#if defined(__x86_64__)
#include <immintrin.h>
#include <stdlib.h>
#include <string.h>
#include "kernels.h"
#include "simd_avx2.h"

#ifndef KQ_PF_DIST
#define KQ_PF_DIST 4096   /* DRAM-bound 65536x4096 Q4_K, 1 thread: 22 GB/s at 2048, 25 at 4096 */
#endif

static inline __m512i ld512(const void *p) { return _mm512_loadu_si512(p); }
static inline __m256i ld256(const void *p) { return _mm256_loadu_si256((const __m256i *)p); }

/* ======================================================================== */
/* Q4_K, rep8 order                                                          */
/* ======================================================================== */

#define R4 16   /* rows per group */

/* reduction tree (exact integer sums), 128-bit lanes:
 *   red2(a, b)   = [a0+a2, a1+a3, b0+b2, b1+b3]
 *   red4(t, u)   = [t0+t1, t2+t3, u0+u1, u2+u3]     (t, u from red2: one row per lane)
 *   red_fin(u[4]): dword 4L+m = the total of u[m]'s lane L */
static inline __m512i red2(__m512i a, __m512i b) {
    return _mm512_add_epi32(_mm512_shuffle_i32x4(a, b, _MM_SHUFFLE(1, 0, 1, 0)),
                            _mm512_shuffle_i32x4(a, b, _MM_SHUFFLE(3, 2, 3, 2)));
}
static inline __m512i red4(__m512i t, __m512i u) {
    return _mm512_add_epi32(_mm512_shuffle_i32x4(t, u, _MM_SHUFFLE(2, 0, 2, 0)),
                            _mm512_shuffle_i32x4(t, u, _MM_SHUFFLE(3, 1, 3, 1)));
}
static inline __m512i red_fin(const __m512i u[4]) {
    const __m512i s01 = _mm512_add_epi32(_mm512_unpacklo_epi32(u[0], u[1]), _mm512_unpackhi_epi32(u[0], u[1]));
    const __m512i s23 = _mm512_add_epi32(_mm512_unpacklo_epi32(u[2], u[3]), _mm512_unpackhi_epi32(u[2], u[3]));
    return _mm512_add_epi32(_mm512_unpacklo_epi64(s01, s23), _mm512_unpackhi_epi64(s01, s23));
}
/* slot s of the tree (u[s / 4], lane s % 4) ends in dword 4 (s % 4) + s / 4:
 * slot s takes row ROW_OF_SLOT(s), so that dword r is row r */
#define ROW_OF_SLOT(s) (4 * ((s) % 4) + (s) / 4)

/* vpshufb selectors of the sub-block scales for the packed pair dots of 64
 * codes k (k = 0, 1): 128-bit lane L, words 0-3 scale 4k + 2 (L / 2), words
 * 4-7 scale 4k + 2 (L / 2) + 1, as zero-extended words */
static inline __m512i scale_sel(int k) {
    _Alignas(64) uint8_t b[64];
    for (int L = 0; L < 4; L++)
        for (int w = 0; w < 8; w++) {
            b[16 * L + 2 * w] = (uint8_t)(4 * k + 2 * (L / 2) + (w >= 4));
            b[16 * L + 2 * w + 1] = 0x80;
        }
    return _mm512_load_si512(b);
}

static inline __attribute__((always_inline)) void gemv_r8_q4_K_group(int64_t nsb, const block_q4_K *const xr[R4],
                                                                     const block_q8_K *const yt[], const int NT,
                                                                     float *yo, int64_t ldy, const int64_t row[R4],
                                                                     int n_out, int64_t pf) {
    const __m512i m4 = _mm512_set1_epi8(0x0F);
    const __m512i sel0 = scale_sel(0), sel1 = scale_sel(1);
    __m512 acc[4], acc_m[4];
    for (int j = 0; j < NT; j++) acc[j] = acc_m[j] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nsb; b++) {
        /* per token: activations in the codes' order, block-pair sums */
        __m512i alo[4][2], ahi[4][2], bp[4];
        for (int j = 0; j < NT; j++) {
            const int8_t *q = yt[j][b].qs;
            for (int k = 0; k < 2; k++) {
                alo[j][k] = _mm512_inserti64x4(_mm512_castsi256_si512(ld256(q + 128 * k)), ld256(q + 128 * k + 64), 1);
                ahi[j][k] = _mm512_inserti64x4(_mm512_castsi256_si512(ld256(q + 128 * k + 32)), ld256(q + 128 * k + 96), 1);
            }
            const __m256i bs = ld256(yt[j][b].bsums);
            bp[j] = _mm512_broadcast_i32x4(_mm_hadd_epi16(_mm256_castsi256_si128(bs), _mm256_extracti128_si256(bs, 1)));
        }
        __m512i u1[4][4];   /* [token][quad]: S1 of 4 slots, one per 128-bit lane */
        __m512i mnq[4];     /* [quad]: the mins (m_0..m_7 words) of 4 slots, one per 128-bit lane */
        _Alignas(64) uint32_t dd[R4];
        for (int m = 0; m < 4; m++) {
            __m512i v[4][4];
            __m128i mn[4];
            for (int s2 = 0; s2 < 4; s2++) {
                const int s = 4 * m + s2;
                const block_q4_K *x = &xr[ROW_OF_SLOT(s)][b];
                PREFETCH_BLOCK_AHEAD(x, sizeof(block_q4_K), pf);
                const __m128i sm = scales_mins_k4v(x->scales);
                const __m512i smz = _mm512_broadcast_i32x4(sm);
                const __m512i sc0 = _mm512_shuffle_epi8(smz, sel0), sc1 = _mm512_shuffle_epi8(smz, sel1);
                const __m512i z0 = ld512(x->qs), z1 = ld512(x->qs + 64);
                const __m512i lo0 = _mm512_and_si512(z0, m4), hi0 = _mm512_and_si512(_mm512_srli_epi16(z0, 4), m4);
                const __m512i lo1 = _mm512_and_si512(z1, m4), hi1 = _mm512_and_si512(_mm512_srli_epi16(z1, 4), m4);
                for (int j = 0; j < NT; j++) {
                    /* |dword| <= 4 * 15 * 127: the packs do not saturate */
                    const __m512i p0 = _mm512_packs_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), lo0, alo[j][0]),
                                                          _mm512_dpbusd_epi32(_mm512_setzero_si512(), hi0, ahi[j][0]));
                    const __m512i p1 = _mm512_packs_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), lo1, alo[j][1]),
                                                          _mm512_dpbusd_epi32(_mm512_setzero_si512(), hi1, ahi[j][1]));
                    v[j][s2] = _mm512_add_epi32(_mm512_madd_epi16(p0, sc0), _mm512_madd_epi16(p1, sc1));
                }
                mn[s2] = _mm_cvtepu8_epi16(_mm_srli_si128(sm, 8));
                memcpy(&dd[ROW_OF_SLOT(s)], &x->d, 4);   /* d | dmin << 16 */
            }
            for (int j = 0; j < NT; j++) u1[j][m] = red4(red2(v[j][0], v[j][1]), red2(v[j][2], v[j][3]));
            mnq[m] = _mm512_inserti32x4(_mm512_inserti32x4(_mm512_inserti32x4(_mm512_castsi128_si512(mn[0]), mn[1], 1),
                                                           mn[2], 2), mn[3], 3);
        }
        const __m512i dv = _mm512_load_si512(dd);
        const __m512 dw = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(dv));
        const __m512 dm = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(dv, 16)));
        for (int j = 0; j < NT; j++) {
            __m512i u2[4];
            for (int m = 0; m < 4; m++) u2[m] = _mm512_madd_epi16(mnq[m], bp[j]);
            const __m512i s1 = red_fin(u1[j]), s2 = red_fin(u2);
            const __m512 da = _mm512_set1_ps(yt[j][b].d);
            acc[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s1), _mm512_mul_ps(dw, da), acc[j]);
            acc_m[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s2), _mm512_mul_ps(dm, da), acc_m[j]);
        }
    }
    for (int j = 0; j < NT; j++) {
        _Alignas(64) float out[R4];
        _mm512_store_ps(out, _mm512_sub_ps(acc[j], acc_m[j]));
        for (int i = 0; i < n_out; i++) yo[j * ldy + row[i]] = out[i];
    }
}

static void gemv_r8_q4_K(int64_t n, const void *w, int64_t w_row, int64_t n_rows,
                         const void *a, int64_t a_row, int64_t n_tok, float *yo, int64_t ldy) {
    const int64_t nsb = n / QK_K, rs = n_rows / R4, rest = n_rows - R4 * rs;
    /* at least KQ_PF_DIST ahead, in whole groups of a stream (row pairs) */
    const int64_t pf = (KQ_PF_DIST + 2 * w_row - 1) / (2 * w_row) * (2 * w_row);
    for (int64_t g = 0; g < rs + (rest > 0); g++) {
        int64_t row[R4];
        /* 8 streams of two adjacent rows: row pair g of the 8 ranges of 2 rs rows */
        for (int i = 0; i < R4; i++) row[i] = g < rs ? (i / 2) * 2 * rs + 2 * g + i % 2 : R4 * rs + (i < rest ? i : rest - 1);
        const block_q4_K *xr[R4];
        for (int i = 0; i < R4; i++) xr[i] = (const block_q4_K *)((const char *)w + row[i] * w_row);
        const int n_out = g < rs ? R4 : (int)rest;
        KQ_TOKEN_PASSES(gemv_r8_q4_K_group, nsb, xr, a, a_row, n_tok, yo, ldy, row, n_out, pf);
    }
}

/* ======================================================================== */
/* Q6_K, vec_dot order                                                       */
/* ======================================================================== */

#define R6 8    /* rows per group, two per vector */

static inline __attribute__((always_inline)) void gemv_q6_K_group(int64_t nsb, const block_q6_K *const xr[R6],
                                                                  const block_q8_K *const yt[], const int NT,
                                                                  float *yo, int64_t ldy, const int64_t row[R6],
                                                                  int n_out) {
    const __m512i m15 = _mm512_set1_epi8(15), m3 = _mm512_set1_epi8(3);
    /* 16-bit shift counts of the two high bits: [q0 | q1] bits (0,1) | (2,3), [q2 | q3] (4,5) | (6,7) */
    const __m512i sh01 = _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_set1_epi16(2), 1);
    const __m512i sh23 = _mm512_inserti64x4(_mm512_set1_epi16(4), _mm256_set1_epi16(6), 1);
    /* vpermw indices of the int16 scales: 128-bit lane L of [q0 | q1] of half h has sub-block 8h + L */
    __m512i si[2][2];
    for (int h = 0; h < 2; h++)
        for (int c = 0; c < 2; c++) {
            _Alignas(64) int16_t ix[32];
            for (int e = 0; e < 32; e++) ix[e] = (int16_t)(8 * h + 4 * c + e / 8);
            si[h][c] = _mm512_load_si512(ix);
        }
    __m512 acc[4][R6 / 2];
    for (int j = 0; j < NT; j++)
        for (int p = 0; p < R6 / 2; p++) acc[j][p] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nsb; b++) {
        __m512i bs2[4];
        for (int j = 0; j < NT; j++) bs2[j] = _mm512_broadcast_i64x4(ld256(yt[j][b].bsums));
        const __m256 dw = _mm256_cvtph_ps(_mm_setr_epi16(
            (short)xr[0][b].d, (short)xr[1][b].d, (short)xr[2][b].d, (short)xr[3][b].d,
            (short)xr[4][b].d, (short)xr[5][b].d, (short)xr[6][b].d, (short)xr[7][b].d));
        for (int p = 0; p < R6 / 2; p++) {
            __m512i z[2][4];      /* [row of the pair][token] */
            __m256i sc16[2];
            for (int r = 0; r < 2; r++) {
                const block_q6_K *x = &xr[2 * p + r][b];
                PREFETCH_BLOCK_AHEAD(x, sizeof(block_q6_K), KQ_PF_DIST);
                sc16[r] = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)x->scales));
                const __m512i scz = _mm512_castsi256_si512(sc16[r]);
                for (int j = 0; j < NT; j++) z[r][j] = _mm512_setzero_si512();
                for (int h = 0; h < 2; h++) {
                    const __m512i l = ld512(x->ql + 64 * h);
                    const __m512i hb = _mm512_broadcast_i64x4(ld256(x->qh + 32 * h));
                    const __m512i q01 = _mm512_or_si512(_mm512_and_si512(l, m15),
                        _mm512_slli_epi16(_mm512_and_si512(_mm512_srlv_epi16(hb, sh01), m3), 4));
                    const __m512i q23 = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(l, 4), m15),
                        _mm512_slli_epi16(_mm512_and_si512(_mm512_srlv_epi16(hb, sh23), m3), 4));
                    const __m512i s01 = _mm512_permutexvar_epi16(si[h][0], scz);
                    const __m512i s23 = _mm512_permutexvar_epi16(si[h][1], scz);
                    for (int j = 0; j < NT; j++) {
                        const int8_t *aq = yt[j][b].qs + 128 * h;
                        /* codes 0..63 times -127..127: a vpmaddubsw pair stays below 2^15 */
                        z[r][j] = _mm512_add_epi32(z[r][j], _mm512_madd_epi16(_mm512_maddubs_epi16(q01, ld512(aq)), s01));
                        z[r][j] = _mm512_add_epi32(z[r][j], _mm512_madd_epi16(_mm512_maddubs_epi16(q23, ld512(aq + 64)), s23));
                    }
                }
            }
            const __m512i scp = _mm512_inserti64x4(_mm512_castsi256_si512(sc16[0]), sc16[1], 1);
            /* [d_w of row 2p x8 | row 2p+1 x8] */
            const __m512 dwp = _mm512_permutexvar_ps(
                _mm512_inserti64x4(_mm512_set1_epi32(2 * p), _mm256_set1_epi32(2 * p + 1), 1), _mm512_castps256_ps512(dw));
            for (int j = 0; j < NT; j++) {
                /* [row 2p's 8 lanes | row 2p+1's], the -32 offset taken out as in lanes_q6_K_nt */
                __m512i c = _mm512_add_epi32(_mm512_shuffle_i32x4(z[0][j], z[1][j], _MM_SHUFFLE(1, 0, 1, 0)),
                                             _mm512_shuffle_i32x4(z[0][j], z[1][j], _MM_SHUFFLE(3, 2, 3, 2)));
                c = _mm512_sub_epi32(c, _mm512_slli_epi32(_mm512_madd_epi16(bs2[j], scp), 5));
                const __m512 d = _mm512_mul_ps(_mm512_set1_ps(yt[j][b].d), dwp);
                acc[j][p] = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(c), acc[j][p]);
            }
        }
    }
    for (int j = 0; j < NT; j++) {
        float out[R6];
        for (int p = 0; p < R6 / 2; p++) {
            out[2 * p] = hsum_ps(_mm512_castps512_ps256(acc[j][p]));
            out[2 * p + 1] = hsum_ps(_mm512_extractf32x8_ps(acc[j][p], 1));
        }
        for (int i = 0; i < n_out; i++) yo[j * ldy + row[i]] = out[i];
    }
}

static void gemv_q6_K(int64_t n, const void *w, int64_t w_row, int64_t n_rows,
                      const void *a, int64_t a_row, int64_t n_tok, float *yo, int64_t ldy) {
    const int64_t nsb = n / QK_K, rs = n_rows / R6, rest = n_rows - R6 * rs;
    for (int64_t g = 0; g < rs + (rest > 0); g++) {
        int64_t row[R6];
        for (int i = 0; i < R6; i++) row[i] = g < rs ? g + i * rs : R6 * rs + (i < rest ? i : rest - 1);
        const block_q6_K *xr[R6];
        for (int i = 0; i < R6; i++) xr[i] = (const block_q6_K *)((const char *)w + row[i] * w_row);
        const int n_out = g < rs ? R6 : (int)rest;
        KQ_TOKEN_PASSES(gemv_q6_K_group, nsb, xr, a, a_row, n_tok, yo, ldy, row, n_out);
    }
}

/* called by pyrt_fill_kquants_gemm_avx512 (x86/kquants_gemm_avx512.c), over the AVX2 table's GEMVs */
void pyrt_fill_kquants_gemv_avx512(pyrt_kernels *k);
void pyrt_fill_kquants_gemv_avx512(pyrt_kernels *k) {
    if (getenv("PYRT_NO_KQ_GEMM")) return;   /* tests: the row kernels for every token */
    k->type[PYRT_TYPE_Q4_K].gemm_r8 = gemv_r8_q4_K;
    k->type[PYRT_TYPE_Q6_K].gemm = gemv_q6_K;
}
#endif /* __x86_64__ */
