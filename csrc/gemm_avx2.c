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
#define RV 4           /* rows per tile when there is a single token (generation) */
#define PANEL_R 16     /* rows whose scales are cached per panel  */
#define PANEL_T 32     /* tokens whose scales are cached per panel */
#define RMAX 4
#define MAX_NB 512     /* blocks per row handled by the scale caches (16384 columns) */
#define PF_DIST 10240  /* software prefetch distance in bytes for streamed weights (see matmul.h) */

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

/* ---- per-type weight unpacking: produce either unsigned bytes (then
 * lanes_us(w, a)) or signed bytes in |w| + sign form (lanes_us(|w|, sign(a, w))) */
#define W_Q4_1(x) nibbles((x)->qs)
#define W_Q5_1(x) _mm256_or_si256(nibbles((x)->qs), bit4((x)->qh))
#define W_Q4_0(x) _mm256_sub_epi8(nibbles((x)->qs), _mm256_set1_epi8(8))
#define W_Q5_0(x) _mm256_sub_epi8(_mm256_or_si256(nibbles((x)->qs), bit4((x)->qh)), _mm256_set1_epi8(16))
#define W_Q8_0(x) _mm256_loadu_si256((const __m256i *)(x)->qs)

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

/* Single-token tile (generation): rows r0..r0+RV-1, the block scales read
 * straight from the weights (each block is touched once, as it streams in
 * from memory), min terms chained inline. Same arithmetic as GEMM_TILE. */
#define GEMV_TILE(WT, AT, WLOAD, SIGNED, HAS_MIN)                                                 \
    do {                                                                                          \
        __m256 acc[RV];                                                                           \
        float summs[RV];                                                                          \
        for (int i = 0; i < RV; i++) { acc[i] = _mm256_setzero_ps(); summs[i] = 0.0f; }          \
        const AT *ar = (const AT *)((const char *)a + t0 * a_row);                                \
        for (int64_t b = 0; b < nb; b++) {                                                        \
            const __m256i av = _mm256_loadu_si256((const __m256i *)ar[b].qs);                     \
            const __m256 dav = _mm256_broadcast_ss(&as[b * PANEL_T]);                             \
            for (int i = 0; i < RV; i++) {                                                        \
                const WT *wb = (const WT *)((const char *)w + (r0 + i) * w_row) + b;              \
                _mm_prefetch((const char *)wb + PF_DIST, _MM_HINT_T0);                         \
                const __m256i wv = WLOAD(wb);                                                     \
                const __m256i wabs = SIGNED ? _mm256_sign_epi8(wv, wv) : wv;                      \
                const __m256 p = _mm256_cvtepi32_ps(lanes_us(wabs, SIGNED ? _mm256_sign_epi8(av, wv) : av)); \
                const float dw = f16(wb->d);                                                      \
                acc[i] = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_set1_ps(dw), dav), p, acc[i]);      \
                if (HAS_MIN) summs[i] = fmaf(f16(MIN_OF(wb)), asT[b * PANEL_T], summs[i]);        \
            }                                                                                     \
        }                                                                                         \
        for (int i = 0; i < RV; i++) y[t0 * ldy + r0 + i] = hsum8(acc[i]) + summs[i];            \
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
#define DEFINE_GEMM(NAME, WT, AT, WLOAD, SIGNED, HAS_MIN)                                        \
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
                for (; r0 + RV <= n_rows; r0 += RV) GEMV_TILE(WT, AT, WLOAD, SIGNED, HAS_MIN);   \
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
DEFINE_GEMM(GEMM_FN(gemm_q4_1), block_q4_1, block_q8_1, W_Q4_1, 0, 1)
DEFINE_GEMM(GEMM_FN(gemm_q5_1), block_q5_1, block_q8_1, W_Q5_1, 0, 1)
#undef MIN_OF
#undef SUM_OF
#define MIN_OF(wb) ((pyrt_fp16)0)
#define SUM_OF(ab) ((pyrt_fp16)0)
DEFINE_GEMM(GEMM_FN(gemm_q4_0), block_q4_0, block_q8_0, W_Q4_0, 1, 0)
DEFINE_GEMM(GEMM_FN(gemm_q5_0), block_q5_0, block_q8_0, W_Q5_0, 1, 0)
DEFINE_GEMM(GEMM_FN(gemm_q8_0), block_q8_0, block_q8_0, W_Q8_0, 1, 0)
#undef MIN_OF
#undef SUM_OF

/* ---- llama.cpp's repacked Q4_0 order: acc = fma(float(isum_b), d_w*d_a, acc) ---- */

/* exact integer totals of 8 lane vectors -> one vector (lane k = total of v[k]) */
static inline __m256i totals8(const __m256i v[8]) {
    const __m256i h01 = _mm256_hadd_epi32(v[0], v[1]), h23 = _mm256_hadd_epi32(v[2], v[3]);
    const __m256i h45 = _mm256_hadd_epi32(v[4], v[5]), h67 = _mm256_hadd_epi32(v[6], v[7]);
    const __m256i q0 = _mm256_hadd_epi32(h01, h23), q1 = _mm256_hadd_epi32(h45, h67);
    /* q0 = [v0lo v1lo v2lo v3lo | v0hi v1hi v2hi v3hi], q1 likewise for v4..v7 */
    const __m256i lo = _mm256_permute2x128_si256(q0, q1, 0x20);
    const __m256i hi = _mm256_permute2x128_si256(q0, q1, 0x31);
    return _mm256_add_epi32(lo, hi);
}

/* one (row, token) in the repacked order, for tile remainders */
static float dot_q4_0_r8_one(int64_t nb, const block_q4_0 *x, const block_q8_0 *y) {
    float acc = 0.0f;
    for (int64_t b = 0; b < nb; b++) {
        const __m256i wv = W_Q4_0(&x[b]);
        const __m256i l = lanes_us(_mm256_sign_epi8(wv, wv),
                                   _mm256_sign_epi8(_mm256_loadu_si256((const __m256i *)y[b].qs), wv));
        __m128i s = _mm_add_epi32(_mm256_castsi256_si128(l), _mm256_extracti128_si256(l, 1));
        s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
        s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
        acc = _mm_cvtss_f32(_mm_fmadd_ss(_mm_set_ss((float)_mm_cvtsi128_si32(s)),
                                         _mm_set_ss(f16(x[b].d) * f16(y[b].d)), _mm_set_ss(acc)));
    }
    return acc;
}

/* 8 rows x one token in the repacked order: lane i carries row i's chain
 * acc_i = fma(float(isum_b), d_w * d_a, acc_i), the same per-lane operations
 * as dot_q4_0_r8_one (generation streams each weight block once). */
static void gemv_q4_0_r8_8(int64_t nb, const void *w, int64_t w_row, const block_q8_0 *ar, float *y, int64_t ystride) {
    __m256 acc = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const __m256i av = _mm256_loadu_si256((const __m256i *)ar[b].qs);
        const __m256 da = _mm256_broadcast_ss(&(float){ f16(ar[b].d) });
        const __m256i off = lanes_us(_mm256_set1_epi8(8), av);
        __m256i l[8];
        const block_q4_0 *wb[8];
        for (int i = 0; i < 8; i++) {
            wb[i] = (const block_q4_0 *)((const char *)w + i * w_row) + b;
            _mm_prefetch((const char *)wb[i] + PF_DIST, _MM_HINT_T0);
            l[i] = _mm256_sub_epi32(lanes_us(nibbles(wb[i]->qs), av), off);
        }
        /* the 8 scales go straight into a vector (8 small stores + one wide
         * load would stall on store forwarding) */
        const __m256 dw = _mm256_cvtph_ps(_mm_setr_epi16(
            (short)wb[0]->d, (short)wb[1]->d, (short)wb[2]->d, (short)wb[3]->d,
            (short)wb[4]->d, (short)wb[5]->d, (short)wb[6]->d, (short)wb[7]->d));
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(totals8(l)), _mm256_mul_ps(dw, da), acc);
    }
    float out[8];
    _mm256_storeu_ps(out, acc);
    for (int i = 0; i < 8; i++) y[i * ystride] = out[i];
}

static void GEMM_FN(gemm_q4_0_r8)(int64_t n, const void *w, int64_t w_row, int64_t n_rows,
                         const void *a, int64_t a_row, int64_t n_tok, float *y, int64_t ldy) {
    const int64_t nb = n / 32;
#define WROW(r) ((const block_q4_0 *)((const char *)w + (r) * w_row))
#define AROW(t) ((const block_q8_0 *)((const char *)a + (t) * a_row))
    int64_t r0 = 0;
    if (n_tok % 2) {     /* the odd token: 8 rows per pass, then the rest as pairs */
        const int64_t t = n_tok - 1;
        for (; r0 + 8 <= n_rows; r0 += 8) gemv_q4_0_r8_8(nb, WROW(r0), w_row, AROW(t), y + t * ldy + r0, 1);
        for (; r0 < n_rows; r0++) y[t * ldy + r0] = dot_q4_0_r8_one(nb, WROW(r0), AROW(t));
        if (--n_tok == 0) return;
        r0 = 0;
    }
    /* 4 rows x 2 tokens = 8 independent chains, one per lane */
    for (; r0 + 4 <= n_rows; r0 += 4) {
        int64_t t0 = 0;
        for (; t0 + 2 <= n_tok; t0 += 2) {
            __m256 acc = _mm256_setzero_ps();
            for (int64_t b = 0; b < nb; b++) {
                const block_q8_0 *a0 = AROW(t0) + b, *a1 = AROW(t0 + 1) + b;
                const __m256i av0 = _mm256_loadu_si256((const __m256i *)a0->qs);
                const __m256i av1 = _mm256_loadu_si256((const __m256i *)a1->qs);
                const float da0 = f16(a0->d), da1 = f16(a1->d);
                const __m256i off0 = lanes_us(_mm256_set1_epi8(8), av0), off1 = lanes_us(_mm256_set1_epi8(8), av1);
                __m256i l[8];
                float sc[8];
                for (int i = 0; i < 4; i++) {
                    const block_q4_0 *wb = WROW(r0 + i) + b;
                    const __m256i q = nibbles(wb->qs);
                    const float dw = f16(wb->d);
                    l[2 * i] = _mm256_sub_epi32(lanes_us(q, av0), off0);
                    l[2 * i + 1] = _mm256_sub_epi32(lanes_us(q, av1), off1);
                    sc[2 * i] = dw * da0;
                    sc[2 * i + 1] = dw * da1;
                }
                acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(totals8(l)), _mm256_loadu_ps(sc), acc);
            }
            float out[8];
            _mm256_storeu_ps(out, acc);
            for (int i = 0; i < 4; i++) {
                y[t0 * ldy + r0 + i] = out[2 * i];
                y[(t0 + 1) * ldy + r0 + i] = out[2 * i + 1];
            }
        }
        for (; t0 < n_tok; t0++)
            for (int i = 0; i < 4; i++) y[t0 * ldy + r0 + i] = dot_q4_0_r8_one(nb, WROW(r0 + i), AROW(t0));
    }
    for (; r0 < n_rows; r0++)
        for (int64_t t = 0; t < n_tok; t++) y[t * ldy + r0] = dot_q4_0_r8_one(nb, WROW(r0), AROW(t));
#undef WROW
#undef AROW
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
