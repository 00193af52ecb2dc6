/* x86/quants_gemm_avx512.c — x86/quants_gemm_avx2.c's tiled kernels for CPUs with AVX-512 (F, BW,
 * VL, VNNI), bit-identical to them and so to llama.cpp's AVX2 arithmetic.
 *
 * Two weight rows share one 512-bit register: in the generation tiles lanes
 * 0-7 carry row r's 8-lane accumulator and lanes 8-15 row r+1's; in the
 * batched tiles the two are interleaved by lane (see there). Every float
 * operation (the d_w*d_a product, the int->float conversion, the FMA into the
 * accumulator, the final horizontal sum in ggml's order) is the same per lane
 * as in the 8-lane AVX2 kernel, so the results are equal bit for bit while
 * each instruction does the work of two.
 *
 * The integer block dot is one vpdpbusd per (row pair, token). vpdpbusd wants
 * unsigned weights, so signed weights are offset (q4_0: nibble = w + 8, q5_0:
 * w + 16, q8_0: w ^ 0x80 = w + 128) and the accumulator starts at
 * -offset * (sum of the lane's four activation bytes): each int32 lane ends
 * up holding exactly sum(w * a) over its four bytes, the integer ggml's
 * sign-trick vpmaddubsw + vpmaddwd produces.
 *
 * Up to GEMV_TOK tokens take the generation tiles (GEMV8: 8 rows far apart,
 * each block unpacked once for every token), and for the types with min terms
 * (Q4_1, Q5_1) up to GEMV_SPLIT, GEMV_TOK tokens a pass; Q4_1 with one token
 * takes the AVX2 tile instead except on Zen 5 (see gemm512_q4_1_or_gemv). */
#if defined(__x86_64__)
#include <immintrin.h>
#include <math.h>
#include <string.h>
#include <cpuid.h>
#include "kernels.h"
#include "simd_avx2.h"

#define RP 4           /* row pairs per tile  */
#define RN 4           /* tokens per tile     */
#define GV 4           /* row pairs per tile when there is a single token */
/* Batches of up to GEMV_TOK tokens take the GEMV tiles (8 rows far apart,
 * every token's dot on each block as it streams in); larger ones the panel
 * tiles below, which unpack a row panel once for all tokens (cheaper per
 * token from 4 tokens on, measured on a Xeon with AVX-512 VNNI) and
 * prefetch the next panel while they run. */
#define GEMV_TOK 4
/* Q4_1/Q5_1 batches of up to GEMV_SPLIT tokens take GEMV_TOK-token passes of
 * the GEMV tiles (5..8: 4, then the rest): cheaper than their panel tiles with
 * the min-term pass (Q4_1 1536 x 576, 1 thread: 8 tokens 4.7 vs 5.0 one-token
 * times, 5 tokens 3.4 vs 4.0); for Q8_0/Q5_0 the panel tiles stay cheaper. */
#define GEMV_SPLIT 8
#define PANEL_P 8      /* row pairs per row panel  */
#define PANEL_T 64     /* tokens per token panel   */

/* keep v in a register (the compiler would rather fold the load into each use) */
#define IN_REG(v) __asm__("" : "+v"(v))
#define MAX_NB PYRT_GEMM_MAX_NB

/* unsigned weight bytes of one block, and the offset subtracted from them */
#define U_Q8_0(x) _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(x)->qs), _mm256_set1_epi8((char)0x80))

static inline __m512i pair512(__m256i lo, __m256i hi) {
    return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
}

/* the 64 codes of two 4-bit blocks (rows r, r+1): [lo0 hi0 | lo1 hi1]; each
 * row's 16 bytes broadcast to both 128-bit lanes of its half by the load
 * itself, the high nibbles shifted down in the upper lane of each half */
static inline __m512i nibbles2(const uint8_t *qs0, const uint8_t *qs1) {
    const __m512i z = _mm512_inserti64x4(
        _mm512_castsi256_si512(_mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)qs0))),
        _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)qs1)), 1);
    return _mm512_and_si512(_mm512_mask_srli_epi16(z, 0xFF00FF00u, z, 4), _mm512_set1_epi8(0x0F));
}

/* 0x10 where bit j of the two blocks' 32-bit qh is set */
static inline __m512i bit4x2(const uint8_t *qh0, const uint8_t *qh1) {
    uint32_t a, b;
    memcpy(&a, qh0, 4);
    memcpy(&b, qh1, 4);
    return _mm512_maskz_mov_epi8((__mmask64)a | ((__mmask64)b << 32), _mm512_set1_epi8(0x10));
}

#define U2_Q4_0(x0, x1) nibbles2((x0)->qs, (x1)->qs)
#define U2_Q4_1(x0, x1) nibbles2((x0)->qs, (x1)->qs)
#define U2_Q5_0(x0, x1) _mm512_or_si512(nibbles2((x0)->qs, (x1)->qs), bit4x2((x0)->qh, (x1)->qh))
#define U2_Q5_1(x0, x1) U2_Q5_0(x0, x1)
#define U2_Q8_0(x0, x1) pair512(U_Q8_0(x0), U_Q8_0(x1))

/* activation block broadcast to both halves, and the lanes' offset correction */
static inline __m512i act512(const int8_t *qs) {
    return _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)qs));
}
static inline __m512i corr512(__m512i a, int off) {
    if (!off) return _mm512_setzero_si512();
    const __m512i s = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_set1_epi8((char)off), a);
    return _mm512_sub_epi32(_mm512_setzero_si512(), s);
}

/* lanes 0-7 <- v[i], lanes 8-15 <- v[j] */
static inline __m512 spread2(__m256 v, int i, int j) {
    const __m512i idx = _mm512_set_epi32(j, j, j, j, j, j, j, j, i, i, i, i, i, i, i, i);
    return _mm512_permutexvar_ps(idx, _mm512_castps256_ps512(v));
}

static inline void store_pair(float *y0, float *y1, __m512 acc) {
    *y0 = hsum_ps(_mm512_castps512_ps256(acc));
    if (y1) *y1 = hsum_ps(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(acc), 1)));
}

/* NR rows' min-term chains for one group of tokens (mask m), added to y */
static inline __attribute__((always_inline)) void mins_rows(int64_t nb, const float *wm, int64_t ldw,
                                                            const float *asT, int64_t lds, __mmask16 m, int nt,
                                                            const int NR, float *y, int64_t ldy) {
    __m512 v[8];
#pragma GCC unroll 8
    for (int i = 0; i < NR; i++) v[i] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const __m512 at = _mm512_maskz_loadu_ps(m, &asT[b * lds]);
#pragma GCC unroll 8
        for (int i = 0; i < NR; i++) v[i] = _mm512_fmadd_ps(_mm512_set1_ps(wm[b * ldw + i]), at, v[i]);
    }
#pragma GCC unroll 8
    for (int i = 0; i < NR; i++) {
        float out[16];
        _mm512_storeu_ps(out, v[i]);
        for (int k = 0; k < nt; k++) y[k * ldy + i] = out[k];
    }
}

/* mo[t][r] = sum_b m_rb * s_tb as ggml's scalar FMA chain, 16 tokens per
 * vector lane (wm: [nb][ldw] mins, asT: [nb][lds] activation sums; the last
 * token group masked); 8 rows at a time, independent chains hiding the FMA
 * latency. The tiles add mo to their sums (ggml: hsum(acc) + summs); going
 * through a small buffer keeps these stores off y's strided lines. */
static void min_terms(int64_t nb, const float *wm, int64_t ldw, int64_t n_r, const float *asT, int64_t lds,
                      int64_t n_t, float *y, int64_t ldy) {
    for (int64_t t = 0; t < n_t; t += 16) {
        const int nt = n_t - t < 16 ? (int)(n_t - t) : 16;
        const __mmask16 m = (__mmask16)((1u << nt) - 1);
        int64_t r = 0;
        for (; r + 8 <= n_r; r += 8) mins_rows(nb, wm + r, ldw, asT + t, lds, m, nt, 8, y + t * ldy + r, ldy);
        for (; r < n_r; r++) mins_rows(nb, wm + r, ldw, asT + t, lds, m, nt, 1, y + t * ldy + r, ldy);
    }
}

/* ---- the batched tiles (several tokens) ----
 *
 * As in x86/quants_gemm_avx2.c, rows and tokens go in panels whose shared work is done
 * once: each row pair's blocks unpacked, each token's activation blocks and
 * offset corrections laid out, the d_w*d_a products formed 16 at a time.
 * Here a row pair's two 8-lane accumulators are interleaved by 32-bit lane
 * (lane 2k: row A's lane k, 2k+1: row B's), so the pair's two scale products
 * for a token are one 8-byte broadcast [sA sB sA sB ..] straight from memory
 * into the FMA, and the tile loop is one vpdpbusd, one conversion and one FMA
 * per (row pair, token, block):
 *   - ub: the pair's unsigned weight codes, dword k of row A at 2k, of B at 2k+1;
 *   - aq: the activation block with every dword doubled; its -OFF correction
 *     (the dot's start; OFF 0 types need none) is formed in the tile, once
 *     per (token, block) for the tile's RP pairs: loaded from a panel of its
 *     own it doubled the tile's L1 footprint, and the tiles ran 17-20 %
 *     slower (Q8_0 2048 x 2048, 256 tokens, 1 thread, Zen 5: 9.6-9.8 ms
 *     against 7.9-8.1);
 *   - sc: per tile and block, [token][row] products d_w*d_a.
 * The lanes are put back in order ([A's 8 | B's 8]) before ggml's horizontal
 * sums. */
#define P_BLOCKS 2048  /* row-pair blocks per row panel (128 KB) */
/* A token panel holds T_BLOCKS / blocks-per-row - 1 tokens (at most PANEL_T), and each row
 * panel is unpacked once per token panel. Both panels must hold RP pairs / RN tokens of the
 * longest rows (14336 columns: Llama-3.1-8B's ffn_down), or the tiles fall back to one pair:
 * Q8_0 4096 x 14336, 256 tokens, 1 thread, Zen 5: 305 ms with 1024 / 4096 (one pair and
 * 8 tokens a panel), 168 with 2048 / 4096, 140 with 2048 / 8192; 2048 x 8192 45 -> 37 ms;
 * a 2048-wide row got 12 tokens a panel with 1024 / 4096. */
#define T_BLOCKS 8192  /* token blocks per token panel (512 KB: aq) */

/* The panels of a batched call, ~0.8 MB: more than every caller's stack can spare (the
 * caller's thread runs a share of each matmul; a thread's stack can be 512 KB or less), so
 * they are the thread's scratch buffer (pyrt_thread_scratch, kernels.h). */
typedef struct {
    __m512i ub[P_BLOCKS], aq[T_BLOCKS];
    _Alignas(64) float sc[RN * 8 * MAX_NB];
    float ws[2 * P_BLOCKS + 8 * MAX_NB], ad[T_BLOCKS];
    float wm[2 * P_BLOCKS], asT[T_BLOCKS];
    float mo[2 * PANEL_P * PANEL_T];
} gemm_panels;

/* Without panels (out of memory) a call takes the AVX2 table's gemm for its type (set by
 * pyrt_fill_quants_gemm_avx512): the same arithmetic; without a buffer either, it runs the
 * row dots. */
static pyrt_gemm_fn g_avx2_gemm[PYRT_TYPE_COUNT];

static inline __m512i interleave_pair(__m512i ab) {
    return _mm512_permutexvar_epi32(_mm512_setr_epi32(0, 8, 1, 9, 2, 10, 3, 11, 4, 12, 5, 13, 6, 14, 7, 15), ab);
}
static inline __m512i double_dwords(const int8_t *qs) {
    return _mm512_permutexvar_epi32(_mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7),
                                    _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)qs)));
}
/* ggml's horizontal sums ((a0+a4)+(a2+a6)) + ((a1+a5)+(a3+a7)) of both rows
 * of an interleaved accumulator at once, plus the min terms m (HAS_MIN), to
 * y0[0] and, if both, y0[1] */
static inline void store_ipair(float *y0, int both, __m512 v, const float *m) {
    const __m256 x = _mm256_add_ps(_mm512_castps512_ps256(v), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    if (m) s = _mm_add_ps(s, _mm_castsi128_ps(_mm_loadl_epi64((const __m128i *)m)));
    if (both) _mm_storel_pi((__m64 *)y0, s);
    else _mm_store_ss(y0, s);
}

/* pairs p0.. (rp) x tokens t0.. (rn) of the current panels (ub: [b][pair],
 * aq: [b][token], stride pq; ws: [b][row], stride wst; ad: [b][token]) */
#define TILE(OFF, HAS_MIN, rp, rn)                                                                 \
    do {                                                                                           \
        for (int64_t b = 0; b < nb; b++) {                                                         \
            const __m256 w8 = _mm256_loadu_ps(&ws[b * wst + 2 * (p0 - pb)]);                       \
            for (int j = 0; j < rn; j++)                                                           \
                _mm256_store_ps(&sc[(b * RN + j) * 8],                                             \
                                _mm256_mul_ps(w8, _mm256_broadcast_ss(&ad[b * pt + t0 - tb + j]))); \
        }                                                                                          \
        __m512 acc[RP][RN];                                                                        \
        for (int p = 0; p < rp; p++)                                                               \
            for (int j = 0; j < rn; j++) acc[p][j] = _mm512_setzero_ps();                          \
        const __m512i *ubp = ub + (p0 - pb), *aqp = aq + (t0 - tb);                                  \
        const float *scp = sc;                                                                     \
        for (int64_t b = 0; b < nb; b++, ubp += pr, aqp += pq, scp += RN * 8) {                   \
            if (pf < pf_end) { _mm_prefetch(pf, _MM_HINT_T0); pf += pf_step; }                     \
            __m512i u[RP];                                                                         \
            for (int p = 0; p < rp; p++) u[p] = _mm512_load_si512(ubp + p);                        \
            for (int j = 0; j < rn; j++) {                                                         \
                __m512i aj = _mm512_load_si512(aqp + j);                                           \
                __m512i cj = corr512(aj, OFF);                                                     \
                if (rp > 1) IN_REG(aj);                                                            \
                if (rp > 1 && OFF > 0) IN_REG(cj);                                                 \
                for (int p = 0; p < rp; p++) {                                                     \
                    double s2; memcpy(&s2, scp + j * 8 + 2 * p, 8);                                \
                    const __m512 s = _mm512_castpd_ps(_mm512_set1_pd(s2));                         \
                    acc[p][j] = _mm512_fmadd_ps(s, _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(cj, u[p], aj)), acc[p][j]); \
                }                                                                                  \
            }                                                                                      \
        }                                                                                          \
        for (int p = 0; p < rp; p++) {                                                             \
            const int64_t ra = r_first + 2 * (p0 + p);                                             \
            for (int j = 0; j < rn; j++)                                                           \
                store_ipair(&y[(t0 + j) * ldy + ra], ra + 1 < n_rows, acc[p][j],                   \
                            HAS_MIN ? &mo[(t0 - tb + j) * 2 * pr + 2 * (p0 + p - pb)] : NULL);     \
        }                                                                                          \
    } while (0)


/* the first dword of 8 blocks (d, then m for Q4_1/Q5_1) as 16 floats: lane
 * 2i = block i's d, lane 2i+1 its m (for the other types: the converted first
 * two code bytes, never used) */
static inline __m512 dm16(const void *const p[8]) {
    __m128i v[4];
    for (int i = 0; i < 4; i++)
        v[i] = _mm_unpacklo_epi32(_mm_cvtsi32_si128(pyrt_load_i32(p[2 * i])), _mm_cvtsi32_si128(pyrt_load_i32(p[2 * i + 1])));
    const __m256i x = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_unpacklo_epi64(v[0], v[1])),
                                              _mm_unpacklo_epi64(v[2], v[3]), 1);
    return _mm512_cvtph_ps(x);
}

/* The GEMV tiles' results go through a small buffer, OB_R consecutive r0
 * per (token, row stream), written out a line at a time: the 8 x NT outputs
 * of one r0 are rs floats apart (and tokens ldy apart), which for row counts
 * like a vocabulary's (rs * 4 bytes a multiple of 4096) all fall in one L1
 * set; stored one by one, more of them than the set has ways evicted each
 * other every step (measured: 4 tokens over 49152 x 576 Q4_1 took 3.3x one
 * token, 1.7x with the buffer). */
#define OB_R 16
static inline void flush_rows(const float *ob, int64_t rb, int64_t n, int64_t nt, int64_t rs, float *y, int64_t ldy) {
    for (int64_t j = 0; j < nt; j++)
        for (int i = 0; i < 8; i++)
            memcpy(&y[j * ldy + rb + i * rs], &ob[(j * 8 + i) * OB_R], (size_t)n * sizeof(float));
}

/* NT tokens (t0..), 2*GV rows r0 + i*rs: each block of the 8 rows is read
 * and unpacked once, its 8 scales converted and spread to the row pairs
 * ([d_A x8 | d_B x8]) once, then every token's dot runs on it: per (row
 * pair, token) the float steps of the one-token kernel (lanes: d_w*d_a, the
 * integer block dot converted, the FMA into the row's accumulator), so each
 * token's results are exactly its one-token ones. The min terms are one
 * vector chain per token (lane 2r+1: fmaf(m_r, s_b, summs_r)). ga / gs: the
 * tokens' block scales / sums as floats, [token][block]. */
#define GEMV8(WT, AT, UNPACK, OFF, HAS_MIN, NT)                                                    \
    do {                                                                                           \
        __m512 acc[NT][GV], summs[NT];                                                             \
        for (int j = 0; j < NT; j++) {                                                             \
            for (int p = 0; p < GV; p++) acc[j][p] = _mm512_setzero_ps();                          \
            summs[j] = _mm512_setzero_ps();                                                        \
        }                                                                                          \
        const AT *ar[NT];                                                                          \
        for (int j = 0; j < NT; j++) ar[j] = (const AT *)((const char *)a + (t0 + j) * a_row);    \
        const WT *wr[8];                                                                           \
        for (int i = 0; i < 8; i++) wr[i] = (const WT *)((const char *)w + (r0 + i * rs) * w_row); \
        for (int64_t b = 0; b < nb; b++) {                                                         \
            const void *wb[8];                                                                     \
            for (int i = 0; i < 8; i++) {                                                          \
                wb[i] = &wr[i][b];                                                                 \
                _mm_prefetch((const char *)wb[i] + PF_DIST, _MM_HINT_T0);                          \
            }                                                                                      \
            const __m512 dm = dm16(wb);                                                            \
            __m512i wv[GV];                                                                        \
            __m512 dp[GV];                                                                         \
            for (int p = 0; p < GV; p++) {                                                         \
                wv[p] = U2##UNPACK(&wr[2 * p][b], &wr[2 * p + 1][b]);                              \
                dp[p] = _mm512_permutexvar_ps(_mm512_set_epi32(4 * p + 2, 4 * p + 2, 4 * p + 2, 4 * p + 2, \
                    4 * p + 2, 4 * p + 2, 4 * p + 2, 4 * p + 2, 4 * p, 4 * p, 4 * p, 4 * p, 4 * p, 4 * p, 4 * p, 4 * p), dm); \
            }                                                                                      \
            for (int j = 0; j < NT; j++) {                                                         \
                const __m512i av = act512(ar[j][b].qs), cv = corr512(av, OFF);                     \
                const __m512 da = _mm512_set1_ps(ga[j * MAX_NB + b]);                       \
                for (int p = 0; p < GV; p++) {                                                     \
                    const __m512 pj = _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(cv, wv[p], av));      \
                    acc[j][p] = _mm512_fmadd_ps(_mm512_mul_ps(dp[p], da), pj, acc[j][p]);          \
                }                                                                                  \
                if (HAS_MIN)                                                                       \
                    summs[j] = _mm512_fmadd_ps(dm, _mm512_set1_ps(gs[j * MAX_NB + b]), summs[j]); \
            }                                                                                      \
        }                                                                                          \
        for (int j = 0; j < NT; j++) {                                                             \
            float sm[16];                                                                          \
            _mm512_storeu_ps(sm, summs[j]);                                                        \
            for (int p = 0; p < GV; p++) {                                                         \
                float *y0 = &ob[((j * 8) + 2 * p) * OB_R + (r0 & (OB_R - 1))], *y1 = y0 + OB_R;     \
                store_pair(y0, y1, acc[j][p]);                                                     \
                if (HAS_MIN) { *y0 += sm[4 * p + 1]; *y1 += sm[4 * p + 3]; }                       \
            }                                                                                      \
        }                                                                                          \
    } while (0)

#define DEFINE_GEMM(NAME, TY, WT, AT, UNPACK, OFF, HAS_MIN, GEMV1)                                          \
    static void NAME(int64_t n, const void *w, int64_t w_row, int64_t n_rows,                     \
                     const void *a, int64_t a_row, int64_t n_tok, float *y, int64_t ldy) {       \
        const int64_t nb = n / 32;                                                                 \
        int64_t r_first = 0;                                                                       \
        if (GEMV1 && n_tok <= (HAS_MIN ? GEMV_SPLIT : GEMV_TOK)) { /* 8 rows rs apart (GEMV_STREAMS) */ \
            float ga[GEMV_TOK * MAX_NB], gs[HAS_MIN ? GEMV_TOK * MAX_NB : 1];                      \
            _Alignas(64) float ob[GEMV_TOK * 8 * OB_R];                                            \
            (void)gs;                                                                              \
            const int64_t rs = n_rows / (2 * GV);                                                  \
            /* a pass over the rows per GEMV_TOK tokens (5..8: 4, then the rest) */              \
            for (int64_t tg = 0; tg < n_tok; tg += GEMV_TOK) {                                     \
                const int64_t ng = n_tok - tg < GEMV_TOK ? n_tok - tg : GEMV_TOK;                  \
                for (int64_t t = 0; t < ng; t++) {                                                 \
                    const AT *ab = (const AT *)((const char *)a + (tg + t) * a_row);               \
                    for (int64_t b = 0; b < nb; b++) {                                             \
                        ga[t * MAX_NB + b] = fp16_1(ab[b].d);                                      \
                        if (HAS_MIN) gs[t * MAX_NB + b] = fp16_1(SUM_OF(&ab[b]));                  \
                    }                                                                              \
                }                                                                                  \
                for (int64_t r0 = 0; r0 < rs; r0++) {                                              \
                    switch (ng) {   /* one pass over the rows for the group's tokens */        \
                    case 4: { const int64_t t0 = tg; GEMV8(WT, AT, UNPACK, OFF, HAS_MIN, 4); break; } \
                    case 3: { const int64_t t0 = tg; GEMV8(WT, AT, UNPACK, OFF, HAS_MIN, 3); break; } \
                    case 2: { const int64_t t0 = tg; GEMV8(WT, AT, UNPACK, OFF, HAS_MIN, 2); break; } \
                    default: { const int64_t t0 = tg; GEMV8(WT, AT, UNPACK, OFF, HAS_MIN, 1); break; } \
                    }                                                                              \
                    if ((r0 & (OB_R - 1)) == OB_R - 1 || r0 == rs - 1)                             \
                        flush_rows(ob, r0 & ~(int64_t)(OB_R - 1), r0 % OB_R + 1, ng, rs, y + tg * ldy, ldy); \
                }                                                                                  \
            }                                                                                      \
            r_first = rs * 2 * GV;                                                                 \
            if (r_first == n_rows) return;                                                         \
        }                                                                                          \
        const int64_t n_pairs = (n_rows - r_first + 1) / 2;                                        \
        int64_t pr = P_BLOCKS / nb < PANEL_P ? P_BLOCKS / nb : PANEL_P;                            \
        int64_t pt = T_BLOCKS / nb - 1 < PANEL_T ? T_BLOCKS / nb - 1 : PANEL_T;                    \
        if (pr >= RP) pr -= pr % RP;                                                               \
        if (pt >= RN) pt -= pt % RN;                                                               \
        const int64_t pq = pt + 1;   /* aq: an odd block stride, against cache-set conflicts */     \
        const int64_t wst = 2 * pr + 8; /* ws: room for a tile's 8-wide load past the panel */    \
        gemm_panels *const S = pyrt_thread_scratch(sizeof(gemm_panels));                          \
        if (!S) {                                                                                  \
            g_avx2_gemm[TY](n, (const char *)w + r_first * w_row, w_row, n_rows - r_first, a, a_row, \
                            n_tok, y + r_first, ldy);                                              \
            return;                                                                                \
        }                                                                                          \
        __m512i *const ub = S->ub, *const aq = S->aq;                                              \
        float *const sc = S->sc, *const ws = S->ws, *const ad = S->ad;                             \
        float *const wm = S->wm, *const asT = S->asT, *const mo = S->mo;                           \
        (void)wm; (void)asT; (void)mo;                                                             \
        for (int64_t tb = 0; tb < n_tok; tb += pt) {                                               \
            const int64_t te = tb + pt < n_tok ? tb + pt : n_tok;                                  \
            for (int64_t t = tb; t < te; t++) {                                                    \
                const AT *abt = (const AT *)((const char *)a + t * a_row);                         \
                for (int64_t b = 0; b < nb; b++) {                                                 \
                    const __m512i q = double_dwords(abt[b].qs);                                    \
                    aq[b * pq + t - tb] = q;                                                       \
                    ad[b * pt + t - tb] = fp16_1(abt[b].d);                                        \
                    if (HAS_MIN) asT[b * pt + t - tb] = fp16_1(SUM_OF(&abt[b]));                   \
                }                                                                                  \
            }                                                                                      \
            for (int64_t pb = 0; pb < n_pairs; pb += pr) {                                         \
                const int64_t pe = pb + pr < n_pairs ? pb + pr : n_pairs;                          \
                for (int64_t b = 0; b < nb; b++)                                                   \
                    for (int64_t i = 2 * (pe - pb); i < wst; i++) ws[b * wst + i] = 0.0f;          \
                for (int64_t p = pb; p < pe; p++) {                                                \
                    const int64_t ra = r_first + 2 * p, rb1 = ra + 1 < n_rows ? ra + 1 : ra;      \
                    const WT *w0 = (const WT *)((const char *)w + ra * w_row);                     \
                    const WT *w1 = (const WT *)((const char *)w + rb1 * w_row);                    \
                    for (int64_t b = 0; b < nb; b++) {                                             \
                        ub[b * pr + p - pb] = interleave_pair(U2##UNPACK(&w0[b], &w1[b]));         \
                        ws[b * wst + 2 * (p - pb)] = fp16_1(w0[b].d);                              \
                        ws[b * wst + 2 * (p - pb) + 1] = fp16_1(w1[b].d);                          \
                        if (HAS_MIN) {                                                             \
                            wm[b * 2 * pr + 2 * (p - pb)] = fp16_1(MIN_OF(&w0[b]));                \
                            wm[b * 2 * pr + 2 * (p - pb) + 1] = fp16_1(MIN_OF(&w1[b]));            \
                        }                                                                          \
                    }                                                                              \
                }                                                                                  \
                if (HAS_MIN)                                                                       \
                    min_terms(nb, wm, 2 * pr, 2 * (pe - pb), asT, pt, te - tb, mo, 2 * pr);        \
                /* the next panel's rows (adjacent in memory) are prefetched a line at a time    \
                 * through the tiles' block loops, so the weights stream in while these tiles  \
                 * run (few tokens only: a large batch reuses each panel long enough) */           \
                const char *pf = (const char *)w + (r_first + 2 * pe) * w_row;                    \
                const char *pf_end = n_tok > 8 ? pf : (const char *)w + (r_first + 2 * (pe + pr) < n_rows ? r_first + 2 * (pe + pr) : n_rows) * w_row; \
                const int64_t n_iter = nb * ((pe - pb + RP - 1) / RP) * ((te - tb) / RN + (te - tb) % RN); \
                const int64_t pf_step = pf < pf_end ? (((pf_end - pf) / n_iter) | 63) + 1 : 64;  \
                int64_t t0 = tb;                                                                   \
                for (; t0 + RN <= te; t0 += RN) {                                                  \
                    int64_t p0 = pb;                                                               \
                    for (; p0 + RP <= pe; p0 += RP) TILE(OFF, HAS_MIN, RP, RN);                    \
                    for (; p0 < pe; p0++) TILE(OFF, HAS_MIN, 1, RN);                               \
                }                                                                                  \
                for (; t0 < te; t0++) {                                                            \
                    int64_t p0 = pb;                                                               \
                    for (; p0 + RP <= pe; p0 += RP) TILE(OFF, HAS_MIN, RP, 1);                     \
                    for (; p0 < pe; p0++) TILE(OFF, HAS_MIN, 1, 1);                                \
                }                                                                                  \
            }                                                                                      \
        }                                                                                          \
    }

#define MIN_OF(wb) ((wb)->m)
#define SUM_OF(ab) ((ab)->s)
DEFINE_GEMM(gemm512_q4_1, PYRT_TYPE_Q4_1, block_q4_1, block_q8_1, _Q4_1, 0, 1, 1)
DEFINE_GEMM(gemm512_q5_1, PYRT_TYPE_Q5_1, block_q5_1, block_q8_1, _Q5_1, 0, 1, 1)
#undef MIN_OF
#undef SUM_OF
#define MIN_OF(wb) ((pyrt_fp16)0)
#define SUM_OF(ab) ((pyrt_fp16)0)
DEFINE_GEMM(gemm512_q4_0, PYRT_TYPE_Q4_0, block_q4_0, block_q8_0, _Q4_0, 8, 0, 1)
DEFINE_GEMM(gemm512_q5_0, PYRT_TYPE_Q5_0, block_q5_0, block_q8_0, _Q5_0, 16, 0, 1)
DEFINE_GEMM(gemm512_q8_0, PYRT_TYPE_Q8_0, block_q8_0, block_q8_0, _Q8_0, 128, 0, 1)
#undef MIN_OF
#undef SUM_OF

/* ---- llama.cpp's repacked Q4_0 order (x86/quants_gemm_avx2.c's gemm_q4_0_r8): per
 * (row, token) acc = fma(float(exact block sum), d_w * d_a, acc) ---- */

/* v[4k+m] holds two 8-lane groups (halves h); lane 4*(2k+h)+m of the result
 * is the exact total of v[4k+m]'s half h. Every lane is a sum of four
 * (q - 8) * a products, |lane| <= 4 * 8 * 128, so the first two levels can go
 * through int16 (vpackssdw is exact below 2^15, and the sums stay below
 * 2^14): pack two vectors, add neighbours with vpmaddwd. */
static inline __m512i totals_halves8(const __m512i v[8]) {
    const __m512i ones = _mm512_set1_epi16(1);
    __m512i t[4], u[2];
    /* t[i], per 128-bit lane: [a0+a1, a2+a3, b0+b1, b2+b3] (a = v[2i], b = v[2i+1]) */
    for (int i = 0; i < 4; i++) t[i] = _mm512_madd_epi16(_mm512_packs_epi32(v[2 * i], v[2 * i + 1]), ones);
    /* u[k], per 128-bit lane L: the lane-L totals of v[4k], v[4k+1], v[4k+2], v[4k+3] */
    for (int i = 0; i < 2; i++) u[i] = _mm512_madd_epi16(_mm512_packs_epi32(t[2 * i], t[2 * i + 1]), ones);
    return _mm512_add_epi32(_mm512_shuffle_i32x4(u[0], u[1], _MM_SHUFFLE(2, 0, 2, 0)),
                            _mm512_shuffle_i32x4(u[0], u[1], _MM_SHUFFLE(3, 1, 3, 1)));
}

/* the d of 8 rows' block b, as floats */
static inline __m256 scales8_q4_0(const block_q4_0 *const wr[8], int64_t b) {
    return _mm256_cvtph_ps(_mm_setr_epi16((short)wr[0][b].d, (short)wr[1][b].d, (short)wr[2][b].d, (short)wr[3][b].d,
                                          (short)wr[4][b].d, (short)wr[5][b].d, (short)wr[6][b].d, (short)wr[7][b].d));
}

/* lane l of a totals_halves8 result over 4 row pairs: row 2*(l%4) + (l/4)%2 */
#define ROW_OF_LANE _mm512_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7, 0, 2, 4, 6, 1, 3, 5, 7)

static inline __m512i act_q8_0(const block_q8_0 *ab, __m512i *corr) {
    const __m512i av = act512(ab->qs);
    *corr = corr512(av, 8);
    return av;
}

/* 8 rows x 4 tokens: lanes (row, token) of two 16-lane accumulators */
static void tile_q4_0_r8(int64_t nb, const block_q4_0 *const wr[8], const float *dw8, const block_q8_0 *const at[4],
                         float *y, int64_t ldy, int nr, int nt) {
    __m512 acc[2] = { _mm512_setzero_ps(), _mm512_setzero_ps() };
    const __m512i rows = ROW_OF_LANE;
    const __m512i tok[2] = { _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1),
                             _mm512_setr_epi32(2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3) };
    for (int64_t b = 0; b < nb; b++) {
        __m512i av[4], cv[4], wv[4];
        float da[4];
        for (int t = 0; t < 4; t++) {
            av[t] = act_q8_0(&at[t][b], &cv[t]);
            da[t] = fp16_1(at[t][b].d);
        }
        for (int m = 0; m < 4; m++) wv[m] = nibbles2(wr[2 * m][b].qs, wr[2 * m + 1][b].qs);
        const __m512 dw = _mm512_permutexvar_ps(rows, _mm512_castps256_ps512(_mm256_loadu_ps(dw8 + 8 * b)));
        const __m512 da4 = _mm512_castps128_ps512(_mm_loadu_ps(da));
        for (int h = 0; h < 2; h++) {            /* tokens 2h, 2h+1 */
            __m512i l[8];
            for (int k = 0; k < 2; k++)
                for (int m = 0; m < 4; m++)
                    l[4 * k + m] = _mm512_dpbusd_epi32(cv[2 * h + k], wv[m], av[2 * h + k]);
            const __m512 sc = _mm512_mul_ps(dw, _mm512_permutexvar_ps(tok[h], da4));
            acc[h] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(totals_halves8(l)), sc, acc[h]);
        }
    }
    for (int h = 0; h < 2; h++) {
        float out[16];
        _mm512_storeu_ps(out, acc[h]);
        for (int l = 0; l < 16; l++) {
            const int r = 2 * (l % 4) + (l / 4) % 2, t = 2 * h + l / 8;
            if (r < nr && t < nt) y[t * ldy + r] = out[l];
        }
    }
}

/* ---- the same order with one weight row per lane (batches) ----
 *
 * 16 rows x NT tokens: a lane holds one (row, token) and vpdpbusd sums the
 * whole block into it, four bytes per step: step g multiplies the 16 rows'
 * bytes 4g..4g+3 (one dword per lane, a transposed panel made once per
 * call) by the token's bytes 4g..4g+3 (a broadcast memory operand). The
 * accumulator starts at -8 * (the block's activation sum), so the lane ends
 * at the exact (q - 8) . a total with no horizontal reduction; then the
 * float steps of the repacked order, one (row, token) per lane. */
#define L16_TOK 64         /* tokens whose sums and scales are prepared at once */

/* rows r0..r0+15 (clamped to n_rows) of each block -> wt[b][g], 16 dwords of
 * unsigned codes (elements 4g..4g+3 of each row), and their scales dw[b][16] */
static void l16_panel(const void *w, int64_t w_row, int64_t r0, int64_t n_rows, int64_t nb,
                      __m512i *wt, float *dw) {
    const block_q4_0 *wr[16];
    for (int i = 0; i < 16; i++)
        wr[i] = (const block_q4_0 *)((const char *)w + (r0 + i < n_rows ? r0 + i : n_rows - 1) * w_row);
    const __m512i m4 = _mm512_set1_epi8(0x0F);
    for (int64_t b = 0; b < nb; b++) {
        /* z[i]'s 128-bit lane L: row 4L + i's 16 code bytes */
        __m512i z[4];
        for (int i = 0; i < 4; i++) {
            __m512i v = _mm512_castsi128_si512(_mm_loadu_si128((const __m128i *)wr[i][b].qs));
            v = _mm512_inserti32x4(v, _mm_loadu_si128((const __m128i *)wr[4 + i][b].qs), 1);
            v = _mm512_inserti32x4(v, _mm_loadu_si128((const __m128i *)wr[8 + i][b].qs), 2);
            z[i] = _mm512_inserti32x4(v, _mm_loadu_si128((const __m128i *)wr[12 + i][b].qs), 3);
        }
        /* 4x4 dword transpose within each 128-bit lane: t[k] dword 4L + i = row 4L + i's dword k */
        const __m512i u0 = _mm512_unpacklo_epi32(z[0], z[1]), u1 = _mm512_unpackhi_epi32(z[0], z[1]);
        const __m512i u2 = _mm512_unpacklo_epi32(z[2], z[3]), u3 = _mm512_unpackhi_epi32(z[2], z[3]);
        const __m512i t[4] = { _mm512_unpacklo_epi64(u0, u2), _mm512_unpackhi_epi64(u0, u2),
                               _mm512_unpacklo_epi64(u1, u3), _mm512_unpackhi_epi64(u1, u3) };
        for (int k = 0; k < 4; k++) {
            wt[b * 8 + k] = _mm512_and_si512(t[k], m4);                            /* elements 4k.. */
            wt[b * 8 + 4 + k] = _mm512_and_si512(_mm512_srli_epi16(t[k], 4), m4);  /* 16 + 4k.. */
        }
        uint16_t h[16];
        for (int i = 0; i < 16; i++) h[i] = wr[i][b].d;
        _mm512_store_ps(dw + 16 * b, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)h)));
    }
}

/* NT tokens at[] (prepared sums cs / scales ds, [token][nb]) against a panel */
static inline __attribute__((always_inline)) void l16_tile(int64_t nb, const __m512i *wt, const float *dw,
                                                           const block_q8_0 *const at[], const int32_t *cs,
                                                           const float *ds, const int NT, __m512 acc[]) {
    for (int j = 0; j < NT; j++) acc[j] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const __m512i *wb = wt + 8 * b;
        const __m512 d = _mm512_load_ps(dw + 16 * b);
        for (int j = 0; j < NT; j++) {
            const int8_t *q = at[j][b].qs;
            /* two chains of four steps, joined (integer sums: exact in any order) */
            __m512i s0 = _mm512_set1_epi32(cs[j * nb + b]), s1 = _mm512_setzero_si512();
            for (int g = 0; g < 4; g++) {
                s0 = _mm512_dpbusd_epi32(s0, wb[g], _mm512_set1_epi32(pyrt_load_i32(q + 4 * g)));
                s1 = _mm512_dpbusd_epi32(s1, wb[4 + g], _mm512_set1_epi32(pyrt_load_i32(q + 16 + 4 * g)));
            }
            const __m512 sc = _mm512_mul_ps(d, _mm512_set1_ps(ds[j * nb + b]));
            acc[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(s0, s1)), sc, acc[j]);
        }
    }
}

/* the row panel and the tokens' sums and scales for rows of up to PYRT_GEMM_MAX_COLS: ~0.5 MB,
 * the thread's scratch buffer (on the stack they were sized for 4096 columns, and wider rows,
 * ffn_down, took tile_q4_0_r8: Q4_0 4096 x 14336 x 256 tokens, 1 thread, Zen 5, 106 -> 59 ms) */
typedef struct {
    __m512i wt[8 * MAX_NB];
    _Alignas(64) float dw[16 * MAX_NB], ds[L16_TOK * MAX_NB];
    int32_t cs[L16_TOK * MAX_NB];
} l16_panels;

static void gemm512_q4_0_l16(l16_panels *P, int64_t n, const void *w, int64_t w_row, int64_t n_rows,
                             const void *a, int64_t a_row, int64_t n_tok, float *y, int64_t ldy) {
    const int64_t nb = n / 32;
    __m512i *const wt = P->wt;
    float *const dw = P->dw, *const ds = P->ds;
    int32_t *const cs = P->cs;
    for (int64_t tb = 0; tb < n_tok; tb += L16_TOK) {
        const int64_t nt_all = n_tok - tb < L16_TOK ? n_tok - tb : L16_TOK;
        q8_0_corr_scales((const char *)a + tb * a_row, a_row, nt_all, nb, cs, ds);
        for (int64_t r0 = 0; r0 < n_rows; r0 += 16) {
            const int nr = n_rows - r0 < 16 ? (int)(n_rows - r0) : 16;
            const __mmask16 keep = (__mmask16)((1u << nr) - 1);
            l16_panel(w, w_row, r0, n_rows, nb, wt, dw);
            for (int64_t t0 = 0; t0 < nt_all;) {
                const int NT = nt_all - t0 >= 4 ? 4 : 1;
                const block_q8_0 *at[4];
                for (int j = 0; j < NT; j++) at[j] = (const block_q8_0 *)((const char *)a + (tb + t0 + j) * a_row);
                __m512 acc[4];
                if (NT == 4) l16_tile(nb, wt, dw, at, cs + t0 * nb, ds + t0 * nb, 4, acc);
                else l16_tile(nb, wt, dw, at, cs + t0 * nb, ds + t0 * nb, 1, acc);
                for (int j = 0; j < NT; j++) _mm512_mask_storeu_ps(y + (tb + t0 + j) * ldy + r0, keep, acc[j]);
                t0 += NT;
            }
        }
    }
}

/* One token of Q4_0 (repacked order) and Q4_1 goes through the AVX2 table's
 * GEMV (same arithmetic, bit-identical): measured on Zen 4, which splits
 * 512-bit operations in two, it streams these 4-bit rows faster than the
 * 512-bit versions (L3-resident 16384 x 576, 1 thread: Q4_0 0.27 vs 0.36 ms,
 * Q4_1 0.35 vs 0.40 ms; tg128 2 threads +8-13 %), while the 512-bit ones win
 * for Q8_0/Q5_0/Q5_1. On Zen 5 (full-width 512-bit units) the 512-bit Q4_1 GEMV
 * is the faster one (L3-resident 768 x 576, 1 thread: 6.6 vs 9.3 us; 49152 x 576:
 * 461 vs 625 us; SmolLM2 Q4_1 decode, 1 thread: 4.0 vs 4.6 ms CPU per token), so
 * AMD family 1Ah and later keep it; Intel cores are not measured and keep the AVX2
 * one. Set once by pyrt_fill_quants_gemm_avx512 from the AVX2 table it starts
 * from, which always has both. */
static pyrt_gemm_fn g_gemv_q4_0_r8, g_gemv_q4_1;

/* AMD family 1Ah (Zen 5) or later */
static int amd_zen5_or_later(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid(0, &a, &b, &c, &d) || b != 0x68747541u /* "Auth" */) return 0;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return 0;
    const unsigned fam = (a >> 8) & 0xF;
    return (fam == 0xF ? fam + ((a >> 20) & 0xFF) : fam) >= 0x1A;
}

static void gemm512_q4_1_or_gemv(int64_t n, const void *w, int64_t w_row, int64_t n_rows,
                                 const void *a, int64_t a_row, int64_t n_tok, float *y, int64_t ldy) {
    (n_tok == 1 ? g_gemv_q4_1 : gemm512_q4_1)(n, w, w_row, n_rows, a, a_row, n_tok, y, ldy);
}

static void gemm512_q4_0_r8(int64_t n, const void *w, int64_t w_row, int64_t n_rows,
                            const void *a, int64_t a_row, int64_t n_tok, float *y, int64_t ldy) {
    const int64_t nb = n / 32;
    if (n_tok <= 2) {   /* the AVX2 GEMV streams: 8 rows far apart, both tokens in one pass */
        g_gemv_q4_0_r8(n, w, w_row, n_rows, a, a_row, n_tok, y, ldy);
        return;
    }
    l16_panels *const P = nb <= MAX_NB ? pyrt_thread_scratch(sizeof(l16_panels)) : NULL;
    if (P) {   /* (without a buffer, out of memory: the tiles below, the same arithmetic) */
        gemm512_q4_0_l16(P, n, w, w_row, n_rows, a, a_row, n_tok, y, ldy);
        return;
    }
    for (int64_t r0 = 0; r0 < n_rows; r0 += 8) {
        const int nr = n_rows - r0 < 8 ? (int)(n_rows - r0) : 8;
        const block_q4_0 *wr[8];
        for (int i = 0; i < 8; i++)
            wr[i] = (const block_q4_0 *)((const char *)w + (r0 + (i < nr ? i : nr - 1)) * w_row);
        /* the 8 rows' block scales, converted once for all token tiles */
        float dw8[8 * MAX_NB];
        for (int64_t b = 0; b < nb; b++) _mm256_storeu_ps(dw8 + 8 * b, scales8_q4_0(wr, b));
        for (int64_t t0 = 0; t0 < n_tok; t0 += 4) {
            const int nt = n_tok - t0 < 4 ? (int)(n_tok - t0) : 4;
            const block_q8_0 *at[4];
            for (int t = 0; t < 4; t++)
                at[t] = (const block_q8_0 *)((const char *)a + (t0 + (t < nt ? t : nt - 1)) * a_row);
            tile_q4_0_r8(nb, wr, dw8, at, y + t0 * ldy + r0, ldy, nr, nt);
        }
    }
}

void pyrt_fill_quants_gemm_avx512(pyrt_kernels *k) {
    for (int t = 0; t < PYRT_TYPE_COUNT; t++) g_avx2_gemm[t] = k->type[t].gemm;
    g_gemv_q4_0_r8 = k->type[PYRT_TYPE_Q4_0].gemm_r8;   /* k starts as the AVX2 table */
    g_gemv_q4_1 = amd_zen5_or_later() ? gemm512_q4_1 : k->type[PYRT_TYPE_Q4_1].gemm;
    k->type[PYRT_TYPE_Q4_0].gemm_r8 = gemm512_q4_0_r8;
    k->type[PYRT_TYPE_Q4_0].gemm = gemm512_q4_0;
    k->type[PYRT_TYPE_Q4_1].gemm = gemm512_q4_1_or_gemv;
    k->type[PYRT_TYPE_Q5_0].gemm = gemm512_q5_0;
    k->type[PYRT_TYPE_Q5_1].gemm = gemm512_q5_1;
    k->type[PYRT_TYPE_Q8_0].gemm = gemm512_q8_0;
}
#endif
