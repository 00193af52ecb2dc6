/* x86/kquants_gemm_avx512.c — batched K-quant matmuls for CPUs with AVX-512 (F, BW,
 * VL, DQ, VNNI), bit-identical to the per-(row, token) kernels of
 * x86/kquants_avx2.c in the two batched orders llama.cpp uses on x86:
 *
 *   tiled  (Q4_K, Q5_K, Q6_K; batches of >= 8 tokens): per super-block the exact
 *          integers S1 (scaled codes) and S2 (mins x block sums), then
 *          r = d_w*S1 [- dmin_w*S2], acc = fma(r, d_a, acc)
 *   r8x4   (Q4_K with rows % 8 == 0, the tokens of a batch in groups of 4):
 *          per pair of sub-blocks acc = fma(S1_p, d_w*d_a, acc),
 *          acc_m = fma(S2_p, dmin_w*d_a, acc_m); result acc - acc_m
 *
 * Only the integer sums are computed differently (they do not depend on
 * order): the rows sit in the 16 lanes of a vector, one row per lane, so a
 * row's sub-block dot builds up in its lane and no horizontal reduction is
 * needed; the float steps then run with one (row, token) per lane, each lane
 * doing exactly the scalar operations of the row kernel. */
#if defined(__x86_64__)
#include <immintrin.h>
#include <stddef.h>
#include <string.h>
#include "kernels.h"
#include "simd_avx2.h"

static inline __m512i load512(const void *p) { return _mm512_loadu_si512(p); }

/* the 64 codes of Q4_K sub-blocks 2p (low nibbles) and 2p+1 (high nibbles) */
static inline __m512i codes_q4_K(const block_q4_K *x, int p) {
    const __m512i z = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(x->qs + 32 * p)));
    return _mm512_and_si512(_mm512_mask_srli_epi16(z, 0xFFFF0000u, z, 4), _mm512_set1_epi8(0x0F));
}

/* ---- Q4_K: rows in lanes ----------------------------------------------------
 *
 * A panel of 16 rows is unpacked once per call into row-per-lane order: per
 * super-block, vector k holds codes 4k..4k+3 of every row (a 16 x 16 dword
 * transpose per 64 codes), and the sub-block scales, the (min, min) word pairs
 * and d, dmin are one row per lane as well. Each activation dword of a token
 * is broadcast into vpdpbusd, so every row's sub-block dot D_j builds up in its
 * own lane over 8 steps, with no horizontal reductions:
 *   S1_p = s_2p * D_2p + s_2p+1 * D_2p+1   (vpmulld: |D| <= 32*15*128 is past int16)
 *   S2_p = m_2p * bp_2p + m_2p+1 * bp_2p+1 (one vpmaddwd against the token's
 *          block-pair sums broadcast as a word pair)
 * and the float steps of either order then run per (row, token) lane. */
#define KL 16        /* rows per panel: one per lane */
#define K_SB 8       /* super-blocks per column chunk (the float order runs on across chunks) */
#define K_TG 4       /* tokens per group */
#define K_TP 128     /* tokens per token panel (core/matmul.c MM_GEMM_TOKS_K) */

typedef struct {
    __m512i w[64];   /* dword k: codes 4k..4k+3 of each row */
    __m512i sc[16];  /* sub-block scales (Q4_K: 8 of 32 codes, Q6_K: 16 of 16) */
    __m512i mn[4];   /* Q4_K: (m_2p, m_2p+1) as 16-bit words */
    __m512 d, dm;
} k_panel;

/* v[r] dword k -> v[k] dword r */
static inline void transpose16(__m512i v[16]) {
    __m512i t[16], u[16];
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_epi32(v[2 * i], v[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_epi32(v[2 * i], v[2 * i + 1]);
    }
    /* u[4i+m], 128-bit lane L: dword 4L+m of rows 4i..4i+3 */
    for (int i = 0; i < 4; i++) {
        u[4 * i] = _mm512_unpacklo_epi64(t[4 * i], t[4 * i + 2]);
        u[4 * i + 1] = _mm512_unpackhi_epi64(t[4 * i], t[4 * i + 2]);
        u[4 * i + 2] = _mm512_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
        u[4 * i + 3] = _mm512_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
    }
    for (int m = 0; m < 4; m++) {
        const __m512i e0 = _mm512_shuffle_i32x4(u[m], u[4 + m], _MM_SHUFFLE(1, 0, 1, 0));
        const __m512i e1 = _mm512_shuffle_i32x4(u[m], u[4 + m], _MM_SHUFFLE(3, 2, 3, 2));
        const __m512i f0 = _mm512_shuffle_i32x4(u[8 + m], u[12 + m], _MM_SHUFFLE(1, 0, 1, 0));
        const __m512i f1 = _mm512_shuffle_i32x4(u[8 + m], u[12 + m], _MM_SHUFFLE(3, 2, 3, 2));
        v[m] = _mm512_shuffle_i32x4(e0, f0, _MM_SHUFFLE(2, 0, 2, 0));
        v[4 + m] = _mm512_shuffle_i32x4(e0, f0, _MM_SHUFFLE(3, 1, 3, 1));
        v[8 + m] = _mm512_shuffle_i32x4(e1, f1, _MM_SHUFFLE(2, 0, 2, 0));
        v[12 + m] = _mm512_shuffle_i32x4(e1, f1, _MM_SHUFFLE(3, 1, 3, 1));
    }
}

/* super-blocks b0 .. b0+nsb-1 of rows r0 .. r0+nr-1 (missing rows repeat the last).
 * The 16 rows' block headers (d, dmin, the 12 packed scale bytes) are
 * transposed into one dword per row (4 rows per vpermd, then a 4 x 4 swap of
 * 128-bit lanes) and their scales and mins unpacked for all rows at once
 * (scales_mins_k4_uv's steps on vectors); the codes are transposed as raw bytes,
 * 128 codes per transpose16, and split into nibbles afterwards. */
static inline __attribute__((always_inline)) void pack_k45(k_panel *pk, const void *w, int64_t w_row, int64_t r0, int nr,
                                                           int64_t b0, int nsb, const int five) {
    const __m512i by4 = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    const __m512i m4 = _mm512_set1_epi8(0x0F), ff = _mm512_set1_epi32(0xFF);
    const __m512i m1 = _mm512_set1_epi32(0x3f3f3f3f), m2 = _mm512_set1_epi32(0x0f0f0f0f),
                  m3 = _mm512_set1_epi32(0x03030303);
    /* vpshufb: dword d <- bytes (b, b + 1) of dword d as two words (the (min, min) pairs) */
    const __m512i pair0 = _mm512_set1_epi32((int)0x80018000), pair1 = _mm512_set1_epi32((int)0x80038002);
    const __m512i lane_off = _mm512_set4_epi32(0x0C0C0C0C, 0x08080808, 0x04040404, 0);
    const __m512i sel0 = _mm512_or_si512(pair0, lane_off), sel1 = _mm512_or_si512(pair1, lane_off);
    /* Q4_K and Q5_K blocks open with the same 16 bytes (d, dmin, 12 scale bytes); Q5_K's
     * 32 bytes of fifth bits come before its codes */
    const size_t bsize = five ? sizeof(block_q5_K) : sizeof(block_q4_K);
    const size_t qs_off = five ? offsetof(block_q5_K, qs) : offsetof(block_q4_K, qs);
    const __m512i one = _mm512_set1_epi8(1);
    for (int s = 0; s < nsb; s++) {
        const uint8_t *x[KL];
        for (int r = 0; r < KL; r++)
            x[r] = (const uint8_t *)w + (r0 + (r < nr ? r : nr - 1)) * w_row + (b0 + s) * (int64_t)bsize;
        __m512i P[4];
        for (int a = 0; a < 4; a++) {
            __m512i z = _mm512_castsi128_si512(_mm_loadu_si128((const __m128i *)x[4 * a]));
            z = _mm512_inserti32x4(z, _mm_loadu_si128((const __m128i *)x[4 * a + 1]), 1);
            z = _mm512_inserti32x4(z, _mm_loadu_si128((const __m128i *)x[4 * a + 2]), 2);
            z = _mm512_inserti32x4(z, _mm_loadu_si128((const __m128i *)x[4 * a + 3]), 3);
            P[a] = _mm512_permutexvar_epi32(by4, z);   /* 128-bit lane k: header dword k of rows 4a..4a+3 */
        }
        const __m512i t0 = _mm512_shuffle_i32x4(P[0], P[1], _MM_SHUFFLE(1, 0, 1, 0));
        const __m512i t1 = _mm512_shuffle_i32x4(P[0], P[1], _MM_SHUFFLE(3, 2, 3, 2));
        const __m512i t2 = _mm512_shuffle_i32x4(P[2], P[3], _MM_SHUFFLE(1, 0, 1, 0));
        const __m512i t3 = _mm512_shuffle_i32x4(P[2], P[3], _MM_SHUFFLE(3, 2, 3, 2));
        /* dword r of h[k]: header dword k of row r */
        const __m512i h0 = _mm512_shuffle_i32x4(t0, t2, _MM_SHUFFLE(2, 0, 2, 0));
        const __m512i u0 = _mm512_shuffle_i32x4(t0, t2, _MM_SHUFFLE(3, 1, 3, 1));
        const __m512i u1 = _mm512_shuffle_i32x4(t1, t3, _MM_SHUFFLE(2, 0, 2, 0));
        const __m512i u2 = _mm512_shuffle_i32x4(t1, t3, _MM_SHUFFLE(3, 1, 3, 1));
        /* scales_mins_k4_uv, per row: scales 0..3, 4..7, mins 0..3, 4..7 as bytes of a dword */
        const __m512i sv[2] = {
            _mm512_and_si512(u0, m1),
            _mm512_or_si512(_mm512_and_si512(u2, m2), _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(u0, 6), m3), 4)),
        };
        const __m512i mv[2] = {
            _mm512_and_si512(u1, m1),
            _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi32(u2, 4), m2),
                            _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(u1, 6), m3), 4)),
        };
        for (int j = 0; j < 8; j++) pk[s].sc[j] = _mm512_and_si512(_mm512_srli_epi32(sv[j / 4], 8 * (j % 4)), ff);
        for (int p = 0; p < 4; p++) pk[s].mn[p] = _mm512_shuffle_epi8(mv[p / 2], p % 2 ? sel1 : sel0);
        pk[s].d = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(h0));
        pk[s].dm = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(h0, 16)));
        __m512i h[KL];     /* Q5_K: h[c] dword r = fifth-bit bytes 4c..4c+3 of row r (c < 8) */
        if (five) {
            for (int r = 0; r < KL; r++) h[r] = _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(x[r] + 16)));
            transpose16(h);
        }
        for (int k = 0; k < 2; k++) {
            __m512i v[KL];
            for (int r = 0; r < KL; r++) v[r] = load512(x[r] + qs_off + 64 * k);
            transpose16(v);   /* v[c] dword r: bytes 4c..4c+3 of row r's 64 */
            for (int c = 0; c < 16; c++) {
                const int p = 2 * k + c / 8;
                __m512i lo = _mm512_and_si512(v[c], m4), hi = _mm512_and_si512(_mm512_srli_epi16(v[c], 4), m4);
                if (five) {   /* element l of sub-block j: bit j of qh[l] -> 16 */
                    const __m512i hb = h[c % 8];
                    lo = _mm512_or_si512(lo, _mm512_slli_epi16(_mm512_and_si512(_mm512_srli_epi16(hb, 2 * p), one), 4));
                    hi = _mm512_or_si512(hi, _mm512_slli_epi16(_mm512_and_si512(_mm512_srli_epi16(hb, 2 * p + 1), one), 4));
                }
                pk[s].w[16 * p + c % 8] = lo;
                pk[s].w[16 * p + 8 + c % 8] = hi;
            }
        }
    }
}
static void pack_q4_K(k_panel *pk, const void *w, int64_t w_row, int64_t r0, int nr, int64_t b0, int nsb) {
    pack_k45(pk, w, w_row, r0, nr, b0, nsb, 0);
}
/* Q5_K: Q4_K's panel with each code's fifth bit added (codes 0..31; vpdpbusd sums in int32) */
static void pack_q5_K(k_panel *pk, const void *w, int64_t w_row, int64_t r0, int nr, int64_t b0, int nsb) {
    pack_k45(pk, w, w_row, r0, nr, b0, nsb, 1);
}

/* rt tokens (activation rows q[t], at the chunk's first super-block) against
 * a packed panel of nsb super-blocks; acc/accm carry the float chains */
static inline __attribute__((always_inline)) void k4_group(const k_panel *pk, int nsb, const block_q8_K *const q0[K_TG],
                                                           const int rt, const int r8x4, __m512 acc[K_TG], __m512 accm[K_TG]) {
    for (int s = 0; s < nsb; s++) {
        const k_panel *P = &pk[s];
        const block_q8_K *q[K_TG];
        __m512 dd[K_TG], dm[K_TG];
        __m512i s1[K_TG], s2[K_TG];
        for (int t = 0; t < rt; t++) {
            q[t] = q0[t] + s;
            const __m512 da = _mm512_set1_ps(q[t]->d);
            dd[t] = _mm512_mul_ps(P->d, da);
            dm[t] = _mm512_mul_ps(P->dm, da);
            s1[t] = s2[t] = _mm512_setzero_si512();
        }
        for (int p = 0; p < 4; p++) {
            __m512i d0[K_TG], d1[K_TG];
            for (int t = 0; t < rt; t++) d0[t] = d1[t] = _mm512_setzero_si512();
#pragma GCC unroll 8
            for (int k = 0; k < 8; k++) {
                const __m512i w0 = _mm512_load_si512(&P->w[16 * p + k]), w1 = _mm512_load_si512(&P->w[16 * p + 8 + k]);
                for (int t = 0; t < rt; t++) {
                    d0[t] = _mm512_dpbusd_epi32(d0[t], w0, _mm512_set1_epi32(pyrt_load_i32(q[t]->qs + 64 * p + 4 * k)));
                    d1[t] = _mm512_dpbusd_epi32(d1[t], w1, _mm512_set1_epi32(pyrt_load_i32(q[t]->qs + 64 * p + 32 + 4 * k)));
                }
            }
            for (int t = 0; t < rt; t++) {
                const int16_t *bs = q[t]->bsums + 4 * p;
                const int32_t bp = (int32_t)(uint16_t)(bs[0] + bs[1]) | (int32_t)((uint32_t)(uint16_t)(bs[2] + bs[3]) << 16);
                const __m512i S1 = _mm512_add_epi32(_mm512_mullo_epi32(d0[t], P->sc[2 * p]),
                                                    _mm512_mullo_epi32(d1[t], P->sc[2 * p + 1]));
                const __m512i S2 = _mm512_madd_epi16(P->mn[p], _mm512_set1_epi32(bp));
                if (r8x4) {
                    acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(S1), dd[t], acc[t]);
                    accm[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(S2), dm[t], accm[t]);
                } else {
                    s1[t] = _mm512_add_epi32(s1[t], S1);
                    s2[t] = _mm512_add_epi32(s2[t], S2);
                }
            }
        }
        if (!r8x4)
            for (int t = 0; t < rt; t++) {
                const __m512 rr = _mm512_mul_ps(P->d, _mm512_cvtepi32_ps(s1[t]));
                acc[t] = _mm512_fmadd_ps(_mm512_fnmadd_ps(P->dm, _mm512_cvtepi32_ps(s2[t]), rr),
                                         _mm512_set1_ps(q[t]->d), acc[t]);
            }
    }
}

/* ---- Q6_K (tiled order) ---------------------------------------------------- */

/* the 64 codes (q + 32, 0..63) of Q6_K elements 64g .. 64g+63 */
static inline __m512i codes_q6_K(const block_q6_K *x, int g) {
    const int h = g / 2, hi = g % 2;
    const __m512i m15 = _mm512_set1_epi8(15), m3 = _mm512_set1_epi8(3);
    /* per-16-bit-word shift counts for the two high bits: elements 0..31 / 32..63
     * of a 64-element group use bits (0,1)/(2,3) (g even) or (4,5)/(6,7) (g odd) */
    const __m512i sh = hi ? _mm512_inserti64x4(_mm512_set1_epi16(4), _mm256_set1_epi16(6), 1)
                          : _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_set1_epi16(2), 1);
    const __m512i lq = load512(x->ql + 64 * h);
    const __m512i hb = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(x->qh + 32 * h)));
    const __m512i lo = hi ? _mm512_and_si512(_mm512_srli_epi16(lq, 4), m15) : _mm512_and_si512(lq, m15);
    return _mm512_or_si512(lo, _mm512_slli_epi16(_mm512_and_si512(_mm512_srlv_epi16(hb, sh), m3), 4));
}

static void pack_q6_K(k_panel *pk, const void *w, int64_t w_row, int64_t r0, int nr, int64_t b0, int nsb) {
    for (int s = 0; s < nsb; s++) {
        const block_q6_K *x[KL];
        _Alignas(64) int32_t sc[16][KL];
        _Alignas(64) float d[KL];
        for (int r = 0; r < KL; r++) {
            x[r] = (const block_q6_K *)((const char *)w + (r0 + (r < nr ? r : nr - 1)) * w_row) + b0 + s;
            for (int j = 0; j < 16; j++) sc[j][r] = x[r]->scales[j];
            d[r] = _cvtsh_ss(x[r]->d);
        }
        for (int g = 0; g < 4; g++) {
            __m512i v[KL];
            for (int r = 0; r < KL; r++) v[r] = codes_q6_K(x[r], g);
            transpose16(v);
            for (int k = 0; k < 16; k++) pk[s].w[16 * g + k] = v[k];
        }
        for (int j = 0; j < 16; j++) pk[s].sc[j] = _mm512_load_si512(sc[j]);
        pk[s].d = _mm512_load_ps(d);
    }
}

/* Q6_K, tiled order: D_j = sum of (code - 32) * a over sub-block j (16
 * elements: 4 vpdpbusd from -32 * bsums[j]), S1 = sum_j scale_j * D_j,
 * acc = fma(d_w * S1, d_a, acc) */
static inline __attribute__((always_inline)) void k6_group(const k_panel *pk, int nsb, const block_q8_K *const q0[K_TG],
                                                           const int rt, __m512 acc[K_TG]) {
    for (int s = 0; s < nsb; s++) {
        const k_panel *P = &pk[s];
        const block_q8_K *q[K_TG];
        __m512i s1[K_TG];
        for (int t = 0; t < rt; t++) {
            q[t] = q0[t] + s;
            s1[t] = _mm512_setzero_si512();
        }
#pragma GCC unroll 16
        for (int j = 0; j < 16; j++) {
            __m512i dj[K_TG];
            for (int t = 0; t < rt; t++) dj[t] = _mm512_set1_epi32(-32 * q[t]->bsums[j]);
#pragma GCC unroll 4
            for (int k = 0; k < 4; k++) {
                const __m512i wk = _mm512_load_si512(&P->w[4 * j + k]);
                for (int t = 0; t < rt; t++)
                    dj[t] = _mm512_dpbusd_epi32(dj[t], wk, _mm512_set1_epi32(pyrt_load_i32(q[t]->qs + 16 * j + 4 * k)));
            }
            for (int t = 0; t < rt; t++) s1[t] = _mm512_add_epi32(s1[t], _mm512_mullo_epi32(dj[t], P->sc[j]));
        }
        for (int t = 0; t < rt; t++)
            acc[t] = _mm512_fmadd_ps(_mm512_mul_ps(P->d, _mm512_cvtepi32_ps(s1[t])), _mm512_set1_ps(q[t]->d), acc[t]);
    }
}

#define k5_group k4_group   /* vpdpbusd sums in int32: 5-bit codes need nothing else */
#define KF __m512
#define KF_ALIGN 64
#define KF_ZERO() _mm512_setzero_ps()
#define KF_SUB(a, b) _mm512_sub_ps(a, b)
#define KF_STORE(p, nr, v) _mm512_mask_storeu_ps(p, (__mmask16)((1u << (nr)) - 1), v)
#include "kquants_gemm_lanes.inc"

void pyrt_fill_kquants_gemv_avx512(pyrt_kernels *k);   /* x86/kquants_avx512.c */

void pyrt_fill_kquants_gemm_avx512(pyrt_kernels *k) {
    pyrt_fill_kquants_gemv_avx512(k);
    k->type[PYRT_TYPE_Q4_K].gemm_tiled = gemm_tiled_q4_K;
    k->type[PYRT_TYPE_Q5_K].gemm_tiled = gemm_tiled_q5_K;
    k->type[PYRT_TYPE_Q6_K].gemm_tiled = gemm_tiled_q6_K;
    k->type[PYRT_TYPE_Q4_K].gemm_r8x4 = gemm_r8x4_q4_K;
}
#endif
