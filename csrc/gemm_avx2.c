/* gemm_avx2.c — register-tiled matmul kernels for the 32-element block types
 * (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) against Q8_0/Q8_1 activations.
 *
 * Each output y[t][r] is computed with exactly the arithmetic of the single
 * row kernels in kernels_avx2.c (and so of llama.cpp): one 8-lane float
 * accumulator per (row, token), fma(d_w*d_a, float(lane sums of block b), acc)
 * for b in order, horizontal sum at the end, plus the scalar min-term chain for
 * Q4_1/Q5_1. Tiling only changes which loads are shared: an RM x RN tile loads
 * and unpacks each weight block once for RN tokens and each activation block
 * once for RM rows, and keeps RM*RN independent FMA chains in flight (the
 * single-row kernel is latency-bound on its one chain).
 *
 * The _r8 variants reproduce llama.cpp's repacked Q4_0 order instead (exact
 * integer block sum, then one scalar-equivalent FMA per block), for weights
 * with rows % 8 == 0. */
#if defined(__x86_64__)
#include <immintrin.h>
#include <math.h>
#include <string.h>
#include "kernels.h"
#include "simd_avx2.h"

#if defined(PYRT_GEMM_VNNI)
#define GEMM_FN(name) name##_vnni
#else
#define GEMM_FN(name) name
#endif

#define RM 2           /* rows per tile   */
#define RN 3           /* tokens per tile */
#define GV 8           /* rows per tile when there is a single token (generation) */
#define PANEL_R 16     /* rows whose scales are cached per panel  */
#define PANEL_T 32     /* tokens whose scales are cached per panel */
#define RMAX 4
#define MAX_NB PYRT_GEMM_MAX_NB

#define f16 fp16_1
#define hsum8 hsum_ps
#define nibbles unpack_nibbles
#define bit4 qh_to_bit4

/* int32 lanes (lane j = bytes 4j..4j+3) of unsigned w . signed a; AVX-VNNI
 * does it in one instruction with the same (exact) integer result */
static inline __m256i lanes_us(__m256i w, __m256i a) {
#if defined(PYRT_GEMM_VNNI)
    return _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), w, a);
#else
    return _mm256_madd_epi16(_mm256_maddubs_epi16(w, a), _mm256_set1_epi16(1));
#endif
}

/* Two rows' 4-bit blocks side by side, unsigned (0..15): lo = [elements
 * 0..15 of row A | of row B], hi = elements 16..31 of both. Dotted with an
 * activation block whose halves are broadcast to both 128-bit lanes, int32
 * lanes 0-3 of the result belong to row A and 4-7 to row B, so two rows'
 * exact block totals need half the reduction of two separate 8-lane dots. */
static inline void nibble_pair(const uint8_t *qa, const uint8_t *qb, __m256i *lo, __m256i *hi) {
    const __m256i t = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)qa)),
                                              _mm_loadu_si128((const __m128i *)qb), 1);
    const __m256i m = _mm256_set1_epi8(0x0F);
    *lo = _mm256_and_si256(t, m);
    *hi = _mm256_and_si256(_mm256_srli_epi16(t, 4), m);
}

/* ---- per-type weight unpacking: produce either unsigned bytes (then
 * lanes_us(w, a)) or signed bytes in |w| + sign form (lanes_us(|w|, sign(a, w))) */
#define W_Q4_1(x) nibbles((x)->qs)
#define W_Q5_1(x) _mm256_or_si256(nibbles((x)->qs), bit4((x)->qh))
#define W_Q4_0(x) _mm256_sub_epi8(nibbles((x)->qs), _mm256_set1_epi8(8))
#define W_Q5_0(x) _mm256_sub_epi8(_mm256_or_si256(nibbles((x)->qs), bit4((x)->qh)), _mm256_set1_epi8(16))
#define W_Q8_0(x) _mm256_loadu_si256((const __m256i *)(x)->qs)

/* the same for a row pair in nibble_pair's layout (lo: elements 0..15 of
 * rows A, B; hi: 16..31), for the generation tile GEMV_PAIRS */
static inline void bit4_pair(const uint8_t *qha, const uint8_t *qhb, __m256i *lo, __m256i *hi) {
    uint32_t a, b;
    memcpy(&a, qha, 4);
    memcpy(&b, qhb, 4);
    const uint32_t l = (a & 0xFFFFu) | (b << 16), h = (a >> 16) | (b & 0xFFFF0000u);
    *lo = _mm256_or_si256(*lo, bit4((const uint8_t *)&l));
    *hi = _mm256_or_si256(*hi, bit4((const uint8_t *)&h));
}
#define PW_Q4_1(xa, xb, lo, hi) nibble_pair((xa)->qs, (xb)->qs, &(lo), &(hi))
#define PW_Q5_1(xa, xb, lo, hi) (PW_Q4_1(xa, xb, lo, hi), bit4_pair((xa)->qh, (xb)->qh, &(lo), &(hi)))

/* Tile kernel body for rows r0.. (rm of them) x tokens t0.. (rn). Scales come
 * from the float cache ws (rows) and as (tokens), filled per panel: the
 * per-block product d_w*d_a is broadcast(d_w) * broadcast(d_a), the same float
 * ggml computes as a scalar product. SIGNED weights use the sign trick
 * (|w| . sign(a, w)). The Q4_1/Q5_1 min terms are a separate chain per
 * (row, token), added afterwards (gemm_add_mins): ggml's result is
 * hsum(acc) + summs either way, and the tile keeps all registers for acc. */
#define GEMM_TILE(WT, AT, WLOAD, SIGNED, rm, rn)                                                  \
    do {                                                                                          \
        __m256 acc[RMAX][RN];                                                                     \
        for (int i = 0; i < rm; i++)                                                              \
            for (int j = 0; j < rn; j++) acc[i][j] = _mm256_setzero_ps();                         \
        for (int64_t b = 0; b < nb; b++) {                                                        \
            for (int i = 0; i < rm; i++) {                                                        \
                const WT *wb = (const WT *)((const char *)w + (r0 + i) * w_row) + b;              \
                const __m256i wv = WLOAD(wb);                                                     \
                const __m256i wabs = SIGNED ? _mm256_sign_epi8(wv, wv) : wv;                      \
                const __m256 dwv = _mm256_broadcast_ss(&ws[(r0 - rb + i) * nb + b]);              \
                for (int j = 0; j < rn; j++) {                                                    \
                    const __m256i aj = _mm256_loadu_si256(                                        \
                        (const __m256i *)(((const AT *)((const char *)a + (t0 + j) * a_row) + b)->qs)); \
                    const __m256 p = _mm256_cvtepi32_ps(                                          \
                        lanes_us(wabs, SIGNED ? _mm256_sign_epi8(aj, wv) : aj));                   \
                    const __m256 sc = _mm256_mul_ps(dwv, _mm256_broadcast_ss(&as[b * PANEL_T + t0 - tb + j])); \
                    acc[i][j] = _mm256_fmadd_ps(sc, p, acc[i][j]);                                \
                }                                                                                 \
            }                                                                                     \
        }                                                                                         \
        for (int i = 0; i < rm; i++)                                                              \
            for (int j = 0; j < rn; j++)                                                          \
                y[(t0 + j) * ldy + r0 + i] = hsum8(acc[i][j]);                                    \
    } while (0)

/* 8 rows' fp16 fields (FIELD of block b) as one float vector, without going
 * through memory (8 small stores + a wide load stall on store forwarding) */
#define HALF8(wb, FIELD)                                                                          \
    _mm256_cvtph_ps(_mm_setr_epi16((short)FIELD(wb[0]), (short)FIELD(wb[1]), (short)FIELD(wb[2]), \
                                   (short)FIELD(wb[3]), (short)FIELD(wb[4]), (short)FIELD(wb[5]), \
                                   (short)FIELD(wb[6]), (short)FIELD(wb[7])))
#define D_OF(wb) ((wb)->d)

/* Single-token tile (generation): rows r0..r0+GV-1, each block touched once
 * as it streams in from memory. Per block the 8 rows' d_w*d_a are one vector
 * multiply (lane i = the scalar product row i's kernel computes), broadcast
 * per row by a lane permute, and the 8 min-term chains are one 8-lane FMA
 * chain (lane i: fmaf(m_i, s_b, summs_i)). Same arithmetic as GEMM_TILE. */
#define GEMV_TILE(WT, AT, WLOAD, SIGNED, HAS_MIN)                                                 \
    do {                                                                                          \
        __m256 acc[GV], summs = _mm256_setzero_ps();                                              \
        for (int i = 0; i < GV; i++) acc[i] = _mm256_setzero_ps();                                \
        const AT *ar = (const AT *)((const char *)a + t0 * a_row);                                \
        for (int64_t b = 0; b < nb; b++) {                                                        \
            const __m256i av = _mm256_loadu_si256((const __m256i *)ar[b].qs);                     \
            const WT *wb[GV];                                                                     \
            for (int i = 0; i < GV; i++) {                                                        \
                wb[i] = (const WT *)((const char *)w + (r0 + i) * w_row) + b;                     \
                _mm_prefetch((const char *)wb[i] + PF_DIST, _MM_HINT_T0);                         \
            }                                                                                     \
            const __m256 sc = _mm256_mul_ps(HALF8(wb, D_OF), _mm256_broadcast_ss(&as[b * PANEL_T])); \
            for (int i = 0; i < GV; i++) {                                                        \
                const __m256i wv = WLOAD(wb[i]);                                                  \
                const __m256i wabs = SIGNED ? _mm256_sign_epi8(wv, wv) : wv;                      \
                const __m256 p = _mm256_cvtepi32_ps(lanes_us(wabs, SIGNED ? _mm256_sign_epi8(av, wv) : av)); \
                acc[i] = _mm256_fmadd_ps(_mm256_permutevar8x32_ps(sc, _mm256_set1_epi32(i)), p, acc[i]); \
            }                                                                                     \
            if (HAS_MIN)                                                                          \
                summs = _mm256_fmadd_ps(HALF8(wb, MIN_OF), _mm256_broadcast_ss(&asT[b * PANEL_T]), summs); \
        }                                                                                         \
        float sm[GV];                                                                             \
        _mm256_storeu_ps(sm, summs);                                                              \
        for (int i = 0; i < GV; i++)                                                              \
            y[t0 * ldy + r0 + i] = HAS_MIN ? hsum8(acc[i]) + sm[i] : hsum8(acc[i]);               \
    } while (0)

/* The generation tile for the unsigned types with a min (Q4_1, Q5_1): rows
 * (2q, 2q+1) share each integer dot (nibble_pair's layout), so accumulator
 * pair q holds [row 2q lanes 0-3 | row 2q+1 lanes 0-3] (lo) and lanes 4-7
 * (hi); the lanes are put back in order for the horizontal sum. d and m of
 * the 8 rows come in as one 8-dword vector ([d0 m0 d1 m1 ..]): lane 2r of
 * its product with d_a is row r's d_w*d_a, lane 2r+1 of the FMA chain with
 * s_b is row r's min chain fmaf(m_r, s_b, summs_r). Per lane the operations
 * are exactly GEMV_TILE's. */
#define GEMV_PAIRS(WT, AT, WLOAD, SIGNED, HAS_MIN)                                                \
    do {                                                                                          \
        __m256 acc[GV], sm_lo = _mm256_setzero_ps(), sm_hi = _mm256_setzero_ps();                \
        for (int i = 0; i < GV; i++) acc[i] = _mm256_setzero_ps();                                \
        const AT *ar = (const AT *)((const char *)a + t0 * a_row);                                \
        for (int64_t b = 0; b < nb; b++) {                                                        \
            const __m256i a_lo = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)ar[b].qs)); \
            const __m256i a_hi = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(ar[b].qs + 16))); \
            const WT *wb[GV];                                                                     \
            int32_t dm[GV];                                                                       \
            for (int i = 0; i < GV; i++) {                                                        \
                wb[i] = (const WT *)((const char *)w + (r0 + i) * w_row) + b;                     \
                _mm_prefetch((const char *)wb[i] + PF_DIST, _MM_HINT_T0);                         \
                memcpy(&dm[i], wb[i], 4);                                                         \
            }                                                                                     \
            const __m256i dmv = _mm256_setr_epi32(dm[0], dm[1], dm[2], dm[3], dm[4], dm[5], dm[6], dm[7]); \
            const __m256 dm_lo = _mm256_cvtph_ps(_mm256_castsi256_si128(dmv));                    \
            const __m256 dm_hi = _mm256_cvtph_ps(_mm256_extracti128_si256(dmv, 1));               \
            const __m256 da = _mm256_broadcast_ss(&as[b * PANEL_T]);                              \
            const __m256 sc_lo = _mm256_mul_ps(dm_lo, da), sc_hi = _mm256_mul_ps(dm_hi, da);      \
            for (int q = 0; q < GV / 2; q++) {                                                    \
                const __m256 sq = _mm256_permutevar8x32_ps(q < 2 ? sc_lo : sc_hi,                 \
                    _mm256_setr_epi32(4 * (q % 2), 4 * (q % 2), 4 * (q % 2), 4 * (q % 2),         \
                                      4 * (q % 2) + 2, 4 * (q % 2) + 2, 4 * (q % 2) + 2, 4 * (q % 2) + 2)); \
                __m256i lo, hi;                                                                   \
                P##WLOAD(wb[2 * q], wb[2 * q + 1], lo, hi);                                       \
                acc[2 * q] = _mm256_fmadd_ps(sq, _mm256_cvtepi32_ps(lanes_us(lo, a_lo)), acc[2 * q]); \
                acc[2 * q + 1] = _mm256_fmadd_ps(sq, _mm256_cvtepi32_ps(lanes_us(hi, a_hi)), acc[2 * q + 1]); \
            }                                                                                     \
            const __m256 s = _mm256_broadcast_ss(&asT[b * PANEL_T]);                              \
            sm_lo = _mm256_fmadd_ps(dm_lo, s, sm_lo);                                             \
            sm_hi = _mm256_fmadd_ps(dm_hi, s, sm_hi);                                             \
        }                                                                                         \
        float sm[2 * GV];                                                                         \
        _mm256_storeu_ps(sm, sm_lo);                                                              \
        _mm256_storeu_ps(sm + GV, sm_hi);                                                         \
        for (int q = 0; q < GV / 2; q++) {                                                        \
            const __m256 ra = _mm256_permute2f128_ps(acc[2 * q], acc[2 * q + 1], 0x20);          \
            const __m256 rb2 = _mm256_permute2f128_ps(acc[2 * q], acc[2 * q + 1], 0x31);         \
            y[t0 * ldy + r0 + 2 * q] = hsum8(ra) + sm[4 * q + 1];                                 \
            y[t0 * ldy + r0 + 2 * q + 1] = hsum8(rb2) + sm[4 * q + 3];                            \
        }                                                                                         \
    } while (0)

/* y[t][r] += sum_b m_rb * s_tb, as ggml's scalar FMA chain, 8 tokens per vector
 * (wm: [rows][nb] mins, asT: [nb][PANEL_T] activation sums) */
__attribute__((unused)) static void gemm_add_mins(int64_t nb, const float *wm, int64_t n_r, const float *asT, int64_t n_t,
                          float *y, int64_t ldy) {
    int64_t r = 0;
    /* 4 rows at a time: independent chains hide the FMA latency */
    for (; r + 4 <= n_r; r += 4) {
        int64_t t = 0;
        for (; t + 8 <= n_t; t += 8) {
            __m256 v[4] = { _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps() };
            for (int64_t b = 0; b < nb; b++) {
                const __m256 at = _mm256_loadu_ps(&asT[b * PANEL_T + t]);
                for (int i = 0; i < 4; i++)
                    v[i] = _mm256_fmadd_ps(_mm256_broadcast_ss(&wm[(r + i) * nb + b]), at, v[i]);
            }
            for (int i = 0; i < 4; i++) {
                float out[8];
                _mm256_storeu_ps(out, v[i]);
                for (int k = 0; k < 8; k++) y[(t + k) * ldy + r + i] += out[k];
            }
        }
        for (; t < n_t; t++)
            for (int i = 0; i < 4; i++) {
                float v = 0.0f;
                for (int64_t b = 0; b < nb; b++) v = fmaf(wm[(r + i) * nb + b], asT[b * PANEL_T + t], v);
                y[t * ldy + r + i] += v;
            }
    }
    for (; r < n_r; r++) {
        int64_t t = 0;
        for (; t + 8 <= n_t; t += 8) {
            __m256 v = _mm256_setzero_ps();
            for (int64_t b = 0; b < nb; b++)
                v = _mm256_fmadd_ps(_mm256_broadcast_ss(&wm[r * nb + b]), _mm256_loadu_ps(&asT[b * PANEL_T + t]), v);
            float out[8];
            _mm256_storeu_ps(out, v);
            for (int k = 0; k < 8; k++) y[(t + k) * ldy + r] += out[k];
        }
        for (; t < n_t; t++) {
            float v = 0.0f;
            for (int64_t b = 0; b < nb; b++) v = fmaf(wm[r * nb + b], asT[b * PANEL_T + t], v);
            y[t * ldy + r] += v;
        }
    }
}

/* y[t*ldy + r] for r < n_rows, t < n_tok; rows of w and a are w_row / a_row
 * bytes apart. Rows are processed in panels of PANEL_R, tokens in chunks of
 * PANEL_T, with their fp16 scales converted to float once per panel. */
#define DEFINE_GEMM(NAME, WT, AT, WLOAD, SIGNED, HAS_MIN, GEMV)                                      \
    static void NAME(int64_t n, const void *w, int64_t w_row, int64_t n_rows,                    \
                     const void *a, int64_t a_row, int64_t n_tok, float *y, int64_t ldy) {      \
        const int64_t nb = n / 32;                                                                \
        float ws[PANEL_R * MAX_NB], wm[HAS_MIN ? PANEL_R * MAX_NB : 1];                           \
        float as[PANEL_T * MAX_NB], asT[HAS_MIN ? PANEL_T * MAX_NB : 1];                          \
        (void)wm; (void)asT;                                                                      \
        for (int64_t tb = 0; tb < n_tok; tb += PANEL_T) {                                         \
            const int64_t te = tb + PANEL_T < n_tok ? tb + PANEL_T : n_tok;                       \
            for (int64_t t = tb; t < te; t++) {                                                   \
                const AT *ab = (const AT *)((const char *)a + t * a_row);                         \
                for (int64_t b = 0; b < nb; b++) {                                                \
                    as[b * PANEL_T + t - tb] = f16(ab[b].d);                                      \
                    if (HAS_MIN) asT[b * PANEL_T + t - tb] = f16(SUM_OF(&ab[b]));                 \
                }                                                                                 \
            }                                                                                     \
            if (te - tb == 1) {     /* one token: stream the rows once, no panel caches */       \
                const int64_t t0 = tb;                                                            \
                int64_t r0 = 0;                                                                   \
                for (; r0 + GV <= n_rows; r0 += GV) GEMV(WT, AT, WLOAD, SIGNED, HAS_MIN);        \
                for (; r0 < n_rows; r0++) {                                                       \
                    const int64_t rb = r0;   /* the scale caches hold this one row */            \
                    for (int64_t b = 0; b < nb; b++) {                                            \
                        const WT *wr = (const WT *)((const char *)w + r0 * w_row);                \
                        ws[b] = f16(wr[b].d);                                                     \
                        if (HAS_MIN) wm[b] = f16(MIN_OF(&wr[b]));                                 \
                    }                                                                             \
                    GEMM_TILE(WT, AT, WLOAD, SIGNED, 1, 1);                                       \
                    if (HAS_MIN) gemm_add_mins(nb, wm, 1, asT, 1, y + t0 * ldy + r0, ldy);        \
                }                                                                                 \
                continue;                                                                         \
            }                                                                                     \
            for (int64_t rb = 0; rb < n_rows; rb += PANEL_R) {                                    \
                const int64_t re = rb + PANEL_R < n_rows ? rb + PANEL_R : n_rows;                 \
                for (int64_t r = rb; r < re; r++) {                                               \
                    const WT *wr = (const WT *)((const char *)w + r * w_row);                     \
                    for (int64_t b = 0; b < nb; b++) {                                            \
                        ws[(r - rb) * nb + b] = f16(wr[b].d);                                     \
                        if (HAS_MIN) wm[(r - rb) * nb + b] = f16(MIN_OF(&wr[b]));                 \
                    }                                                                             \
                }                                                                                 \
                int64_t r0 = rb;                                                                  \
                for (; r0 + RM <= re; r0 += RM) {                                                 \
                    int64_t t0 = tb;                                                              \
                    for (; t0 + RN <= te; t0 += RN) GEMM_TILE(WT, AT, WLOAD, SIGNED, RM, RN);     \
                    for (; t0 < te; t0++) GEMM_TILE(WT, AT, WLOAD, SIGNED, RM, 1);                \
                }                                                                                 \
                for (; r0 < re; r0++) {                                                           \
                    int64_t t0 = tb;                                                              \
                    for (; t0 + RN <= te; t0 += RN) GEMM_TILE(WT, AT, WLOAD, SIGNED, 1, RN);      \
                    for (; t0 < te; t0++) GEMM_TILE(WT, AT, WLOAD, SIGNED, 1, 1);                 \
                }                                                                                 \
                if (HAS_MIN) gemm_add_mins(nb, wm, re - rb, asT, te - tb, y + tb * ldy + rb, ldy); \
            }                                                                                     \
        }                                                                                         \
    }

#define MIN_OF(wb) ((wb)->m)
#define SUM_OF(ab) ((ab)->s)
DEFINE_GEMM(GEMM_FN(gemm_q4_1), block_q4_1, block_q8_1, W_Q4_1, 0, 1, GEMV_PAIRS)
DEFINE_GEMM(GEMM_FN(gemm_q5_1), block_q5_1, block_q8_1, W_Q5_1, 0, 1, GEMV_PAIRS)
#undef MIN_OF
#undef SUM_OF
#define MIN_OF(wb) ((pyrt_fp16)0)
#define SUM_OF(ab) ((pyrt_fp16)0)
DEFINE_GEMM(GEMM_FN(gemm_q4_0), block_q4_0, block_q8_0, W_Q4_0, 1, 0, GEMV_TILE)
DEFINE_GEMM(GEMM_FN(gemm_q5_0), block_q5_0, block_q8_0, W_Q5_0, 1, 0, GEMV_TILE)
DEFINE_GEMM(GEMM_FN(gemm_q8_0), block_q8_0, block_q8_0, W_Q8_0, 1, 0, GEMV_TILE)
#undef MIN_OF
#undef SUM_OF

/* ---- llama.cpp's repacked Q4_0 order: acc = fma(float(isum_b), d_w*d_a, acc) ---- */

/* one Q8_0 activation block, prepared once per (token, block): its halves
 * broadcast, and the nibble offset's correction -8 * (the lane's 8 bytes)
 * (int32 lanes under VNNI, where it seeds the accumulator; int16 otherwise) */
typedef struct { __m256i lo, hi, corr; } act_r8;

static inline act_r8 act_r8_load(const block_q8_0 *ab) {
    act_r8 r;
    r.lo = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)ab->qs));
    r.hi = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(ab->qs + 16)));
    const __m256i eight = _mm256_set1_epi8(8);
#if defined(PYRT_GEMM_VNNI)
    const __m256i c = _mm256_dpbusd_avx_epi32(_mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), eight, r.lo), eight, r.hi);
    r.corr = _mm256_sub_epi32(_mm256_setzero_si256(), c);
#else
    const __m256i c = _mm256_add_epi16(_mm256_maddubs_epi16(eight, r.lo), _mm256_maddubs_epi16(eight, r.hi));
    r.corr = _mm256_sub_epi16(_mm256_setzero_si256(), c);
#endif
    return r;
}

/* int32 lanes of (nibble - 8) . a for a row pair (lanes 0-3 row A, 4-7 row B):
 * every int16 partial stays below 2^15 in magnitude, so no saturation */
static inline __m256i dot_pair(__m256i wlo, __m256i whi, const act_r8 *a) {
#if defined(PYRT_GEMM_VNNI)
    return _mm256_dpbusd_avx_epi32(_mm256_dpbusd_avx_epi32(a->corr, wlo, a->lo), whi, a->hi);
#else
    const __m256i s = _mm256_add_epi16(_mm256_maddubs_epi16(wlo, a->lo), _mm256_maddubs_epi16(whi, a->hi));
    return _mm256_madd_epi16(_mm256_add_epi16(s, a->corr), _mm256_set1_epi16(1));
#endif
}

/* 8 rows x NT tokens (rows and tokens clamped by the caller; only nr x nt
 * stored). Pair p = rows (p, p+4), so the two-level hadd of the 4 pair dots
 * leaves row i's exact block total in lane i; lane i then runs row i's chain
 * acc = fma(float(total), d_w * d_a, acc), the repacked order's scalar op. */
static inline __attribute__((always_inline)) void tile_q4_0_r8(int64_t nb, const block_q4_0 *const wr[8],
                                                               const block_q8_0 *const at[], const int NT,
                                                               float *y, int64_t ldy, int nr, int nt) {
    __m256 acc[4];
    for (int j = 0; j < NT; j++) acc[j] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        __m256i wlo[4], whi[4];
        for (int p = 0; p < 4; p++) {
            if (NT == 1) {      /* generation streams the weights once */
                _mm_prefetch((const char *)&wr[p][b] + PF_DIST, _MM_HINT_T0);
                _mm_prefetch((const char *)&wr[p + 4][b] + PF_DIST, _MM_HINT_T0);
            }
            nibble_pair(wr[p][b].qs, wr[p + 4][b].qs, &wlo[p], &whi[p]);
        }
        /* the 8 scales straight into a vector (no store-forwarding stall) */
        const __m256 dw = _mm256_cvtph_ps(_mm_setr_epi16(
            (short)wr[0][b].d, (short)wr[1][b].d, (short)wr[2][b].d, (short)wr[3][b].d,
            (short)wr[4][b].d, (short)wr[5][b].d, (short)wr[6][b].d, (short)wr[7][b].d));
        for (int j = 0; j < NT; j++) {
            const act_r8 a = act_r8_load(&at[j][b]);
            __m256i v[4];
            for (int p = 0; p < 4; p++) v[p] = dot_pair(wlo[p], whi[p], &a);
            const __m256i tot = _mm256_hadd_epi32(_mm256_hadd_epi32(v[0], v[1]), _mm256_hadd_epi32(v[2], v[3]));
            const __m256 sc = _mm256_mul_ps(dw, _mm256_set1_ps(f16(at[j][b].d)));
            acc[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(tot), sc, acc[j]);
        }
    }
    for (int j = 0; j < nt; j++) {
        if (nr == 8) {
            _mm256_storeu_ps(y + j * ldy, acc[j]);
        } else {
            float out[8];
            _mm256_storeu_ps(out, acc[j]);
            for (int i = 0; i < nr; i++) y[j * ldy + i] = out[i];
        }
    }
}

static void GEMM_FN(gemm_q4_0_r8)(int64_t n, const void *w, int64_t w_row, int64_t n_rows,
                         const void *a, int64_t a_row, int64_t n_tok, float *y, int64_t ldy) {
    const int64_t nb = n / 32;
    for (int64_t r0 = 0; r0 < n_rows; r0 += 8) {
        const int nr = n_rows - r0 < 8 ? (int)(n_rows - r0) : 8;
        const block_q4_0 *wr[8];
        for (int i = 0; i < 8; i++)
            wr[i] = (const block_q4_0 *)((const char *)w + (r0 + (i < nr ? i : nr - 1)) * w_row);
        int64_t t0 = 0;
        while (t0 < n_tok) {
            const int64_t left = n_tok - t0;
            const int NT = left >= 4 ? 4 : left >= 2 ? 2 : 1;
            const block_q8_0 *at[4];
            for (int j = 0; j < NT; j++) at[j] = (const block_q8_0 *)((const char *)a + (t0 + j) * a_row);
            float *yt = y + t0 * ldy + r0;
            if (NT == 4) tile_q4_0_r8(nb, wr, at, 4, yt, ldy, nr, 4);
            else if (NT == 2) tile_q4_0_r8(nb, wr, at, 2, yt, ldy, nr, 2);
            else tile_q4_0_r8(nb, wr, at, 1, yt, ldy, nr, 1);
            t0 += NT;
        }
    }
}

void GEMM_FN(pyrt_gemm_fill_avx2)(pyrt_kernels *k) {
    k->gemm[PYRT_TYPE_Q4_0] = GEMM_FN(gemm_q4_0);
    k->gemm[PYRT_TYPE_Q4_1] = GEMM_FN(gemm_q4_1);
    k->gemm[PYRT_TYPE_Q5_0] = GEMM_FN(gemm_q5_0);
    k->gemm[PYRT_TYPE_Q5_1] = GEMM_FN(gemm_q5_1);
    k->gemm[PYRT_TYPE_Q8_0] = GEMM_FN(gemm_q8_0);
    k->gemm_r8[PYRT_TYPE_Q4_0] = GEMM_FN(gemm_q4_0_r8);
}
#endif
