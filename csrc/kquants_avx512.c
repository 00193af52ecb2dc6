/* kquants_avx512.c — batched K-quant matmuls for CPUs with AVX-512 (F, BW,
 * VL, DQ, VNNI), bit-identical to the per-(row, token) kernels of
 * kquants_avx2.c in the two batched orders llama.cpp uses on x86:
 *
 *   tiled  (Q4_K, Q6_K; batches of >= 8 tokens): per super-block the exact
 *          integers S1 (scaled codes) and S2 (mins x block sums), then
 *          r = d_w*S1 [- dmin_w*S2], acc = fma(r, d_a, acc)
 *   r8x4   (Q4_K with rows % 8 == 0, the tokens of a batch in groups of 4):
 *          per pair of sub-blocks acc = fma(S1_p, d_w*d_a, acc),
 *          acc_m = fma(S2_p, dmin_w*d_a, acc_m); result acc - acc_m
 *
 * Only the integer sums are computed differently: a tile of 4 rows x 4 tokens
 * unpacks each weight super-block once for 4 tokens and loads each activation
 * block once for 4 rows; one vpdpbusd gives 16 int32 lanes of 4 products, the
 * scales are applied per lane (vpmulld) and a transposed reduction turns the
 * 16 (row, token) lane vectors into one vector of 16 exact totals. Integer
 * sums do not depend on order, so S1 and S2 are the same integers; the float
 * steps then run with one (row, token) per lane, each lane doing exactly the
 * scalar operations of the row kernel. */
#if defined(__x86_64__)
#include <immintrin.h>
#include <string.h>
#include "kernels.h"
#include "simd_avx2.h"

#define KR 4   /* rows per tile   */
#define KT 4   /* tokens per tile */

static inline __m512i load512(const void *p) { return _mm512_loadu_si512(p); }

/* lane i <- the total of v[i]'s 16 lanes (exact integer sums) */
static inline __m512i totals16(const __m512i v[16]) {
    __m512i t[8], u[4];
    for (int i = 0; i < 8; i++)
        t[i] = _mm512_add_epi32(_mm512_unpacklo_epi32(v[2 * i], v[2 * i + 1]),
                                _mm512_unpackhi_epi32(v[2 * i], v[2 * i + 1]));
    for (int i = 0; i < 4; i++)
        u[i] = _mm512_add_epi32(_mm512_unpacklo_epi64(t[2 * i], t[2 * i + 1]),
                                _mm512_unpackhi_epi64(t[2 * i], t[2 * i + 1]));
    /* u[k]: 128-bit lane L holds the lane-L partial totals of v[4k..4k+3] */
    const __m512i y01 = _mm512_add_epi32(_mm512_shuffle_i32x4(u[0], u[1], _MM_SHUFFLE(1, 0, 1, 0)),
                                         _mm512_shuffle_i32x4(u[0], u[1], _MM_SHUFFLE(3, 2, 3, 2)));
    const __m512i y23 = _mm512_add_epi32(_mm512_shuffle_i32x4(u[2], u[3], _MM_SHUFFLE(1, 0, 1, 0)),
                                         _mm512_shuffle_i32x4(u[2], u[3], _MM_SHUFFLE(3, 2, 3, 2)));
    return _mm512_add_epi32(_mm512_shuffle_i32x4(y01, y23, _MM_SHUFFLE(2, 0, 2, 0)),
                            _mm512_shuffle_i32x4(y01, y23, _MM_SHUFFLE(3, 1, 3, 1)));
}

/* lane c = r * KT + t of a tile: the row's / the token's value */
static inline __m512 per_row(const float v[KR]) {
    const __m512i idx = _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
    return _mm512_permutexvar_ps(idx, _mm512_castps128_ps512(_mm_loadu_ps(v)));
}
static inline __m512 per_tok(const float v[KT]) {
    const __m512i idx = _mm512_setr_epi32(0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3);
    return _mm512_permutexvar_ps(idx, _mm512_castps128_ps512(_mm_loadu_ps(v)));
}

/* Q4_K/Q5_K 12-byte scales -> 8 scales and 8 mins as 16 int32 */
static inline __m512i scales_mins32(const uint8_t packed[12]) {
    return _mm512_cvtepu8_epi32(scales_mins_k4(packed));
}

/* the 64 codes of Q4_K sub-blocks 2p (low nibbles) and 2p+1 (high nibbles) */
static inline __m512i codes_q4_K(const block_q4_K *x, int p) {
    const __m512i z = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(x->qs + 32 * p)));
    return _mm512_and_si512(_mm512_mask_srli_epi16(z, 0xFFFF0000u, z, 4), _mm512_set1_epi8(0x0F));
}

/* Row and token indices of a (possibly partial) tile: the missing ones repeat
 * the last valid row / token, and their results are not stored. */
#define TILE_INDICES                                                                              \
    int64_t ri[KR], ti[KT];                                                                       \
    for (int r = 0; r < KR; r++) ri[r] = r0 + (r < nr ? r : nr - 1);                              \
    for (int t = 0; t < KT; t++) ti[t] = t0 + (t < nt ? t : nt - 1)

static inline void store_tile(__m512 v, float *y, int64_t ldy, int64_t r0, int64_t t0, int nr, int nt) {
    float out[KR * KT];
    _mm512_storeu_ps(out, v);
    for (int r = 0; r < nr; r++)
        for (int t = 0; t < nt; t++) y[(t0 + t) * ldy + r0 + r] = out[r * KT + t];
}

/* ---- Q4_K ------------------------------------------------------------------ */

/* One tile of Q4_K rows x tokens; r8x4: llama.cpp's repacked-GEMM order, else
 * its tiled order. */
static void tile_q4_K(int64_t n, const void *w, int64_t w_row, const void *a, int64_t a_row,
                      int64_t r0, int nr, int64_t t0, int nt, float *y, int64_t ldy, int r8x4) {
    TILE_INDICES;
    const int64_t nsb = n / QK_K;
    __m512 acc = _mm512_setzero_ps(), acc_m = _mm512_setzero_ps();
    for (int64_t b = 0; b < nsb; b++) {
        const block_q4_K *x[KR];
        const block_q8_K *q[KT];
        __m512i sm[KR];
        float dw[KR], dmw[KR], da[KT];
        int32_t mins[KR][8], bp[KT][8];
        for (int r = 0; r < KR; r++) {
            x[r] = (const block_q4_K *)((const char *)w + ri[r] * w_row) + b;
            sm[r] = scales_mins32(x[r]->scales);
            _mm256_storeu_si256((__m256i *)mins[r], _mm512_extracti64x4_epi64(sm[r], 1));
            dw[r] = _cvtsh_ss(x[r]->d);
            dmw[r] = _cvtsh_ss(x[r]->dmin);
        }
        for (int t = 0; t < KT; t++) {
            q[t] = (const block_q8_K *)((const char *)a + ti[t] * a_row) + b;
            da[t] = q[t]->d;
            /* pair sums of the 16-element block sums: bp[k] = bsums[2k] + bsums[2k+1] */
            _mm256_storeu_si256((__m256i *)bp[t], _mm256_madd_epi16(
                _mm256_loadu_si256((const __m256i *)q[t]->bsums), _mm256_set1_epi16(1)));
        }
        const __m512i m_lo = _mm512_loadu_si512(mins[0]), m_hi = _mm512_loadu_si512(mins[2]);
        const __m512i b_lo = _mm512_loadu_si512(bp[0]), b_hi = _mm512_loadu_si512(bp[2]);
        const __m512i row8 = _mm512_setr_epi32(0, 0, 0, 0, 8, 8, 8, 8, 16, 16, 16, 16, 24, 24, 24, 24);
        const __m512i tok8 = _mm512_setr_epi32(0, 8, 16, 24, 0, 8, 16, 24, 0, 8, 16, 24, 0, 8, 16, 24);
        __m512i s1 = _mm512_setzero_si512(), s2 = _mm512_setzero_si512();
        __m512 s1f[4], s2f[4];
        for (int p = 0; p < 4; p++) {
            __m512i wv[KR], sc[KR], av[KT], l[16];
            const __m512i pick = _mm512_setr_epi32(2 * p, 2 * p, 2 * p, 2 * p, 2 * p, 2 * p, 2 * p, 2 * p,
                                                   2 * p + 1, 2 * p + 1, 2 * p + 1, 2 * p + 1,
                                                   2 * p + 1, 2 * p + 1, 2 * p + 1, 2 * p + 1);
            for (int r = 0; r < KR; r++) {
                wv[r] = codes_q4_K(x[r], p);
                sc[r] = _mm512_permutexvar_epi32(pick, sm[r]);
            }
            for (int t = 0; t < KT; t++) av[t] = load512(q[t]->qs + 64 * p);
            for (int r = 0; r < KR; r++)
                for (int t = 0; t < KT; t++)
                    l[r * KT + t] = _mm512_mullo_epi32(
                        _mm512_dpbusd_epi32(_mm512_setzero_si512(), wv[r], av[t]), sc[r]);
            const __m512i s1p = totals16(l);
            /* S2_p = m[2p] * bp[2p] + m[2p+1] * bp[2p+1] */
            const __m512i e0 = _mm512_set1_epi32(2 * p), e1 = _mm512_set1_epi32(2 * p + 1);
            const __m512i s2p = _mm512_add_epi32(
                _mm512_mullo_epi32(_mm512_permutex2var_epi32(m_lo, _mm512_add_epi32(row8, e0), m_hi),
                                   _mm512_permutex2var_epi32(b_lo, _mm512_add_epi32(tok8, e0), b_hi)),
                _mm512_mullo_epi32(_mm512_permutex2var_epi32(m_lo, _mm512_add_epi32(row8, e1), m_hi),
                                   _mm512_permutex2var_epi32(b_lo, _mm512_add_epi32(tok8, e1), b_hi)));
            if (r8x4) {
                s1f[p] = _mm512_cvtepi32_ps(s1p);
                s2f[p] = _mm512_cvtepi32_ps(s2p);
            } else {
                s1 = _mm512_add_epi32(s1, s1p);
                s2 = _mm512_add_epi32(s2, s2p);
            }
        }
        const __m512 vdw = per_row(dw), vdm = per_row(dmw), vda = per_tok(da);
        if (r8x4) {
            const __m512 dd = _mm512_mul_ps(vdw, vda), dm = _mm512_mul_ps(vdm, vda);
            for (int p = 0; p < 4; p++) {
                acc = _mm512_fmadd_ps(s1f[p], dd, acc);
                acc_m = _mm512_fmadd_ps(s2f[p], dm, acc_m);
            }
        } else {
            const __m512 rr = _mm512_mul_ps(vdw, _mm512_cvtepi32_ps(s1));
            acc = _mm512_fmadd_ps(_mm512_fnmadd_ps(vdm, _mm512_cvtepi32_ps(s2), rr), vda, acc);
        }
    }
    store_tile(r8x4 ? _mm512_sub_ps(acc, acc_m) : acc, y, ldy, r0, t0, nr, nt);
}

/* ---- Q6_K (tiled order) ---------------------------------------------------- */

static void tile_q6_K(int64_t n, const void *w, int64_t w_row, const void *a, int64_t a_row,
                      int64_t r0, int nr, int64_t t0, int nt, float *y, int64_t ldy, int unused) {
    (void)unused;
    TILE_INDICES;
    const int64_t nsb = n / QK_K;
    const __m512i m15 = _mm512_set1_epi8(15), m3 = _mm512_set1_epi8(3), c32 = _mm512_set1_epi8(32);
    /* per-16-bit-word shift counts for the two high bits: elements 0..31 / 32..63
     * of a 64-element group use bits (0,1)/(2,3) (A) or (4,5)/(6,7) (B) */
    const __m512i shA = _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_set1_epi16(2), 1);
    const __m512i shB = _mm512_inserti64x4(_mm512_set1_epi16(4), _mm256_set1_epi16(6), 1);
    __m512 acc = _mm512_setzero_ps();
    for (int64_t b = 0; b < nsb; b++) {
        const block_q6_K *x[KR];
        const block_q8_K *q[KT];
        float dw[KR], da[KT];
        __m512i l[16];
        for (int c = 0; c < 16; c++) l[c] = _mm512_setzero_si512();
        for (int r = 0; r < KR; r++) {
            x[r] = (const block_q6_K *)((const char *)w + ri[r] * w_row) + b;
            dw[r] = _cvtsh_ss(x[r]->d);
        }
        for (int t = 0; t < KT; t++) {
            q[t] = (const block_q8_K *)((const char *)a + ti[t] * a_row) + b;
            da[t] = q[t]->d;
        }
        for (int g = 0; g < 4; g++) {            /* elements 64g .. 64g+63 */
            const int h = g / 2, hi = g % 2;
            __m512i wv[KR], sc[KR], av[KT], cv[KT];
            /* lane k of group g covers elements 64g + 4k..4k+3: scale 4g + k/4 */
            const __m128i pick = _mm_setr_epi8(4 * g, 4 * g, 4 * g, 4 * g, 4 * g + 1, 4 * g + 1, 4 * g + 1, 4 * g + 1,
                                               4 * g + 2, 4 * g + 2, 4 * g + 2, 4 * g + 2, 4 * g + 3, 4 * g + 3, 4 * g + 3, 4 * g + 3);
            for (int r = 0; r < KR; r++) {
                const __m512i lq = load512(x[r]->ql + 64 * h);
                const __m512i hb = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(x[r]->qh + 32 * h)));
                const __m512i lo = hi ? _mm512_and_si512(_mm512_srli_epi16(lq, 4), m15) : _mm512_and_si512(lq, m15);
                const __m512i top = _mm512_and_si512(_mm512_srlv_epi16(hb, hi ? shB : shA), m3);
                wv[r] = _mm512_or_si512(lo, _mm512_slli_epi16(top, 4));
                sc[r] = _mm512_cvtepi8_epi32(_mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)x[r]->scales), pick));
            }
            for (int t = 0; t < KT; t++) {
                av[t] = load512(q[t]->qs + 64 * g);
                /* codes are q + 32: start each lane at -32 * (its activation sum) */
                cv[t] = _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_dpbusd_epi32(_mm512_setzero_si512(), c32, av[t]));
            }
            for (int r = 0; r < KR; r++)
                for (int t = 0; t < KT; t++)
                    l[r * KT + t] = _mm512_add_epi32(l[r * KT + t], _mm512_mullo_epi32(
                        _mm512_dpbusd_epi32(cv[t], wv[r], av[t]), sc[r]));
        }
        const __m512 s1 = _mm512_cvtepi32_ps(totals16(l));
        acc = _mm512_fmadd_ps(_mm512_mul_ps(per_row(dw), s1), per_tok(da), acc);
    }
    store_tile(acc, y, ldy, r0, t0, nr, nt);
}

typedef void (*tile_fn)(int64_t, const void *, int64_t, const void *, int64_t, int64_t, int, int64_t, int,
                        float *, int64_t, int);

static inline void run_tiles(tile_fn f, int flag, int64_t n, const void *w, int64_t w_row, int64_t n_rows,
                             const void *a, int64_t a_row, int64_t n_tok, float *y, int64_t ldy) {
    for (int64_t r0 = 0; r0 < n_rows; r0 += KR)
        for (int64_t t0 = 0; t0 < n_tok; t0 += KT)
            f(n, w, w_row, a, a_row, r0, (int)(n_rows - r0 < KR ? n_rows - r0 : KR), t0,
              (int)(n_tok - t0 < KT ? n_tok - t0 : KT), y, ldy, flag);
}

static void gemm_tiled_q4_K(int64_t n, const void *w, int64_t w_row, int64_t n_rows,
                            const void *a, int64_t a_row, int64_t n_tok, float *y, int64_t ldy) {
    run_tiles(tile_q4_K, 0, n, w, w_row, n_rows, a, a_row, n_tok, y, ldy);
}
static void gemm_r8x4_q4_K(int64_t n, const void *w, int64_t w_row, int64_t n_rows,
                           const void *a, int64_t a_row, int64_t n_tok, float *y, int64_t ldy) {
    run_tiles(tile_q4_K, 1, n, w, w_row, n_rows, a, a_row, n_tok, y, ldy);
}
static void gemm_tiled_q6_K(int64_t n, const void *w, int64_t w_row, int64_t n_rows,
                            const void *a, int64_t a_row, int64_t n_tok, float *y, int64_t ldy) {
    run_tiles(tile_q6_K, 0, n, w, w_row, n_rows, a, a_row, n_tok, y, ldy);
}

void pyrt_kquants_fill_avx512(pyrt_kernels *k) {
    k->gemm_tiled[PYRT_TYPE_Q4_K] = gemm_tiled_q4_K;
    k->gemm_tiled[PYRT_TYPE_Q6_K] = gemm_tiled_q6_K;
    k->gemm_r8x4[PYRT_TYPE_Q4_K] = gemm_r8x4_q4_K;
}
#endif
