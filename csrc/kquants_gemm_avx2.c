/* kquants_gemm_avx2.c — batched K-quant matmuls for AVX2 CPUs, bit-identical
 * to the per-(row, token) kernels of kquants_avx2.c in the two batched orders
 * llama.cpp uses on x86 (see kquants_avx512.c for the same in 512-bit form):
 *
 *   tiled  (Q4_K, Q5_K, Q6_K; batches of >= 8 tokens): per super-block the
 *          exact integers S1 (scaled codes) and S2 (mins x block sums), then
 *          r = d_w*S1 [- dmin_w*S2, one rounding], acc = fma(r, d_a, acc)
 *   r8x4   (Q4_K with rows % 8 == 0, the tokens of a batch in groups of 4):
 *          per pair of sub-blocks acc = fma(S1_p, d_w*d_a, acc),
 *          acc_m = fma(S2_p, dmin_w*d_a, acc_m); result acc - acc_m
 *
 * A tile of KR rows x KT tokens (KR*KT = 8) unpacks each weight super-block
 * once for KT tokens and reads each activation block once for KR rows; lane
 * vector c = t*KR + r collects the (row, token) products (vpmaddubsw +
 * vpmaddwd with the scale, or under AVX-VNNI two vpdpbusd packed to int16 and
 * one vpmaddwd with the scales of both sub-blocks), and a transposed reduction
 * turns the 8 lane vectors into one vector of 8 exact totals. Integer sums do
 * not depend on order, so S1 and S2 are the row kernels' integers; the float
 * steps then run with one (row, token) per lane, each lane doing exactly the
 * scalar operations of the row kernel.
 *
 * No int16 overflow: codes are 0..63 and activations -127..127, so a vpmaddubsw
 * pair is at most 2*63*127 and a vpdpbusd lane (4 products) 4*63*128 < 32767. */
#if defined(__x86_64__)
#include <immintrin.h>
#include <stdlib.h>
#include <string.h>
#include "kernels.h"
#include "simd_avx2.h"

#define KR 2            /* rows per tile   */
#define KT 4            /* tokens per tile */
#define NL (KR * KT)    /* lanes = 8       */

#if defined(PYRT_KQ_VNNI)
#define FILL_FN pyrt_kquants_gemm_fill_avx2_vnni
#else
#define FILL_FN pyrt_kquants_gemm_fill_avx2
#endif

static inline __m256i ld32(const void *p) { return _mm256_loadu_si256((const __m256i *)p); }

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
#if defined(PYRT_KQ_VNNI)
#define PAIR_DOT(acc, u0, a0, u1, a1, s, i0, i1, j0, j1) _mm256_add_epi32((acc), _mm256_madd_epi16(           \
    _mm256_packs_epi32(_mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), (u0), (a0)),                            \
                       _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), (u1), (a1))), SCALE_SEL(s, i0, i1, j0, j1)))
#else
#define PAIR_DOT(acc, u0, a0, u1, a1, s, i0, i1, j0, j1) _mm256_add_epi32(_mm256_add_epi32((acc),              \
    _mm256_madd_epi16(_mm256_maddubs_epi16((u0), (a0)), SCALE_SEL(s, i0, i0, j0, j0))),                          \
    _mm256_madd_epi16(_mm256_maddubs_epi16((u1), (a1)), SCALE_SEL(s, i1, i1, j1, j1)))
#endif

/* lane c = t*KR + r of a tile: the row's fp16 value / the token's float */
static inline __m256 per_row_h(const uint16_t h[KR]) {
#if KR == 2
    return _mm256_cvtph_ps(_mm_set1_epi32((int)(h[0] | (uint32_t)h[1] << 16)));
#elif KR == 4
    uint64_t u;
    memcpy(&u, h, 8);
    return _mm256_cvtph_ps(_mm_set1_epi64x((long long)u));
#else
#error "KR must be 2 or 4"
#endif
}
static inline __m256 per_tok(const float d[KT]) {
#if KT == 4
    return _mm256_permutevar8x32_ps(_mm256_castps128_ps256(_mm_loadu_ps(d)), _mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3));
#else
    return _mm256_set_m128(_mm_set1_ps(d[1]), _mm_set1_ps(d[0]));
#endif
}

/* Row and token indices of a (possibly partial) tile: the missing ones repeat
 * the last valid row / token, and their results are not stored. */
#define TILE_INDICES                                                                              \
    int64_t ri[KR], ti[KT];                                                                       \
    for (int r = 0; r < KR; r++) ri[r] = r0 + (r < nr ? r : nr - 1);                              \
    for (int t = 0; t < KT; t++) ti[t] = t0 + (t < nt ? t : nt - 1)

static inline void store_tile(__m256 v, float *y, int64_t ldy, int64_t r0, int64_t t0, int nr, int nt) {
    float out[NL];
    _mm256_storeu_ps(out, v);
    for (int t = 0; t < nt; t++)
        for (int r = 0; r < nr; r++) y[(t0 + t) * ldy + r0 + r] = out[t * KR + r];
}

/* ---- Q4_K / Q5_K --------------------------------------------------------- */

/* the 64 codes of sub-blocks 2p (u[0]) and 2p+1 (u[1]) of a Q4_K / Q5_K block */
static inline void codes_q4_K(const void *blk, int p, __m256i u[2]) {
    const block_q4_K *x = blk;
    const __m256i bits = ld32(x->qs + 32 * p), m4 = _mm256_set1_epi8(0x0F);
    u[0] = _mm256_and_si256(bits, m4);
    u[1] = _mm256_and_si256(_mm256_srli_epi16(bits, 4), m4);
}
static inline void codes_q5_K(const void *blk, int p, __m256i u[2]) {
    const block_q5_K *x = blk;
    const __m256i bits = ld32(x->qs + 32 * p), m4 = _mm256_set1_epi8(0x0F), hb = ld32(x->qh);
    const __m256i b0 = _mm256_set1_epi8((char)(1 << (2 * p))), b1 = _mm256_set1_epi8((char)(2 << (2 * p)));
    u[0] = _mm256_or_si256(_mm256_and_si256(bits, m4),
                           _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(hb, b0), b0), _mm256_set1_epi8(16)));
    u[1] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(bits, 4), m4),
                           _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(hb, b1), b1), _mm256_set1_epi8(16)));
}

/* Q4_K and Q5_K share the header layout (d, dmin, scales[12], qs ...) */
typedef void (*codes_fn)(const void *blk, int p, __m256i u[2]);

/* One tile of Q4_K/Q5_K rows x tokens; r8x4: llama.cpp's repacked-GEMM order,
 * else its tiled order. */
static inline void tile_k4(codes_fn codes, size_t blk_bytes, int r8x4, int64_t n, const void *w, int64_t w_row,
                           const void *a, int64_t a_row, int64_t r0, int nr, int64_t t0, int nt, float *y, int64_t ldy) {
    TILE_INDICES;
    const int64_t nsb = n / QK_K;
    __m256 acc = _mm256_setzero_ps(), acc_m = _mm256_setzero_ps();
    for (int64_t b = 0; b < nsb; b++) {
        const block_q4_K *x[KR];
        const block_q8_K *q[KT];
        __m256i sc[KR];
        __m128i mins[KR], bp[KT];
        uint16_t hd[KR], hm[KR];
        float da[KT];
        for (int r = 0; r < KR; r++) {
            x[r] = (const block_q4_K *)((const char *)w + ri[r] * w_row + b * (int64_t)blk_bytes);
            const __m128i sm = scales_mins_k4(x[r]->scales);
            sc[r] = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(sm));
            mins[r] = _mm_cvtepu8_epi16(_mm_srli_si128(sm, 8));
            hd[r] = x[r]->d;
            hm[r] = x[r]->dmin;
        }
        for (int t = 0; t < KT; t++) {
            q[t] = (const block_q8_K *)((const char *)a + ti[t] * a_row) + b;
            da[t] = q[t]->d;
            /* pair sums of the 16-element block sums: bp[j] = bsums[2j] + bsums[2j+1] */
            const __m256i bs = ld32(q[t]->bsums);
            bp[t] = _mm_hadd_epi16(_mm256_castsi256_si128(bs), _mm256_extracti128_si256(bs, 1));
        }
        /* S2 per pair p of sub-blocks: lane p of mins . bp; transposed to s2p[p] */
        __m256i s2p[4];
        {
            __m256i v[4];
            for (int k = 0; k < 4; k++)
                v[k] = _mm256_set_m128i(_mm_madd_epi16(mins[(k + 4) % KR], bp[(k + 4) / KR]),
                                        _mm_madd_epi16(mins[k % KR], bp[k / KR]));
            const __m256i t0v = _mm256_unpacklo_epi32(v[0], v[1]), t1v = _mm256_unpackhi_epi32(v[0], v[1]);
            const __m256i t2v = _mm256_unpacklo_epi32(v[2], v[3]), t3v = _mm256_unpackhi_epi32(v[2], v[3]);
            s2p[0] = _mm256_unpacklo_epi64(t0v, t2v);
            s2p[1] = _mm256_unpackhi_epi64(t0v, t2v);
            s2p[2] = _mm256_unpacklo_epi64(t1v, t3v);
            s2p[3] = _mm256_unpackhi_epi64(t1v, t3v);
        }
        const __m256 vdw = per_row_h(hd), vdm = per_row_h(hm), vda = per_tok(da);
        __m256i l[NL];
        for (int c = 0; c < NL; c++) l[c] = _mm256_setzero_si256();
        const __m256 dd = _mm256_mul_ps(vdw, vda), dm = _mm256_mul_ps(vdm, vda);
        for (int p = 0; p < 4; p++) {
            for (int r = 0; r < KR; r++) {
                __m256i u[2];
                codes(x[r], p, u);
                for (int t = 0; t < KT; t++)
                    l[t * KR + r] = PAIR_DOT(l[t * KR + r], u[0], ld32(q[t]->qs + 64 * p), u[1],
                                             ld32(q[t]->qs + 64 * p + 32), sc[r], 2 * p, 2 * p + 1, 2 * p, 2 * p + 1);
            }
            if (r8x4) {
                acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(lane_totals(l)), dd, acc);
                acc_m = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s2p[p]), dm, acc_m);
                for (int c = 0; c < NL; c++) l[c] = _mm256_setzero_si256();
            }
        }
        if (!r8x4) {
            const __m256i s1 = lane_totals(l);
            const __m256i s2 = _mm256_add_epi32(_mm256_add_epi32(s2p[0], s2p[1]), _mm256_add_epi32(s2p[2], s2p[3]));
            const __m256 rr = _mm256_mul_ps(vdw, _mm256_cvtepi32_ps(s1));
            acc = _mm256_fmadd_ps(_mm256_fnmadd_ps(vdm, _mm256_cvtepi32_ps(s2), rr), vda, acc);
        }
    }
    store_tile(r8x4 ? _mm256_sub_ps(acc, acc_m) : acc, y, ldy, r0, t0, nr, nt);
}

/* ---- Q6_K (tiled order) -------------------------------------------------- */

static void tile_q6_K(int64_t n, const void *w, int64_t w_row, const void *a, int64_t a_row,
                      int64_t r0, int nr, int64_t t0, int nt, float *y, int64_t ldy) {
    TILE_INDICES;
    const int64_t nsb = n / QK_K;
    const __m256i m15 = _mm256_set1_epi8(15), m3 = _mm256_set1_epi8(3);
    __m256 acc = _mm256_setzero_ps();
    for (int64_t b = 0; b < nsb; b++) {
        const block_q6_K *x[KR];
        const block_q8_K *q[KT];
        __m256i sc16[KR];
        uint16_t hd[KR];
        float da[KT];
        __m256i l[NL];
        for (int r = 0; r < KR; r++) {
            x[r] = (const block_q6_K *)((const char *)w + ri[r] * w_row) + b;
            sc16[r] = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)x[r]->scales));
            hd[r] = x[r]->d;
        }
        for (int t = 0; t < KT; t++) {
            q[t] = (const block_q8_K *)((const char *)a + ti[t] * a_row) + b;
            da[t] = q[t]->d;
        }
        /* the codes are q + 32: each lane starts at -32 * scale * (block sums) */
        for (int t = 0; t < KT; t++) {
            const __m256i bs = ld32(q[t]->bsums);
            for (int r = 0; r < KR; r++)
                l[t * KR + r] = _mm256_sub_epi32(_mm256_setzero_si256(),
                                                 _mm256_slli_epi32(_mm256_madd_epi16(bs, sc16[r]), 5));
        }
        for (int h = 0; h < 2; h++) {
            for (int r = 0; r < KR; r++) {
                /* scales 8h..8h+7 in both 128-bit halves */
                const __m256i s = h ? _mm256_permute2x128_si256(sc16[r], sc16[r], 0x11)
                                    : _mm256_permute2x128_si256(sc16[r], sc16[r], 0x00);
                const __m256i l0 = ld32(x[r]->ql + 64 * h), l1 = ld32(x[r]->ql + 64 * h + 32);
                const __m256i hb = ld32(x[r]->qh + 32 * h);
                const __m256i u0 = _mm256_or_si256(_mm256_and_si256(l0, m15), _mm256_slli_epi16(_mm256_and_si256(hb, m3), 4));
                const __m256i u1 = _mm256_or_si256(_mm256_and_si256(l1, m15),
                                                   _mm256_slli_epi16(_mm256_and_si256(hb, _mm256_set1_epi8(12)), 2));
                const __m256i u2 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m15),
                                                   _mm256_and_si256(hb, _mm256_set1_epi8(48)));
                const __m256i u3 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m15),
                                                   _mm256_srli_epi16(_mm256_and_si256(hb, _mm256_set1_epi8((char)0xC0)), 2));
                for (int t = 0; t < KT; t++) {
                    const uint8_t *aq = (const uint8_t *)q[t]->qs + 128 * h;
                    /* group g (32 elements) has scale 2g on its first 16, 2g+1 on the rest */
                    __m256i v = l[t * KR + r];
                    v = PAIR_DOT(v, u0, ld32(aq), u1, ld32(aq + 32), s, 0, 2, 1, 3);
                    v = PAIR_DOT(v, u2, ld32(aq + 64), u3, ld32(aq + 96), s, 4, 6, 5, 7);
                    l[t * KR + r] = v;
                }
            }
        }
        const __m256 s1 = _mm256_cvtepi32_ps(lane_totals(l));
        acc = _mm256_fmadd_ps(_mm256_mul_ps(per_row_h(hd), s1), per_tok(da), acc);
    }
    store_tile(acc, y, ldy, r0, t0, nr, nt);
}

/* ---- drivers --------------------------------------------------------------- */

#define RUN_TILES(CALL)                                                                  \
    for (int64_t r0 = 0; r0 < n_rows; r0 += KR)                                          \
        for (int64_t t0 = 0; t0 < n_tok; t0 += KT) {                                     \
            const int nr = (int)(n_rows - r0 < KR ? n_rows - r0 : KR);                   \
            const int nt = (int)(n_tok - t0 < KT ? n_tok - t0 : KT);                     \
            CALL;                                                                        \
        }

static void gemm_tiled_q4_K(int64_t n, const void *w, int64_t w_row, int64_t n_rows,
                            const void *a, int64_t a_row, int64_t n_tok, float *y, int64_t ldy) {
    RUN_TILES(tile_k4(codes_q4_K, sizeof(block_q4_K), 0, n, w, w_row, a, a_row, r0, nr, t0, nt, y, ldy));
}
static void gemm_r8x4_q4_K(int64_t n, const void *w, int64_t w_row, int64_t n_rows,
                           const void *a, int64_t a_row, int64_t n_tok, float *y, int64_t ldy) {
    RUN_TILES(tile_k4(codes_q4_K, sizeof(block_q4_K), 1, n, w, w_row, a, a_row, r0, nr, t0, nt, y, ldy));
}
static void gemm_tiled_q5_K(int64_t n, const void *w, int64_t w_row, int64_t n_rows,
                            const void *a, int64_t a_row, int64_t n_tok, float *y, int64_t ldy) {
    RUN_TILES(tile_k4(codes_q5_K, sizeof(block_q5_K), 0, n, w, w_row, a, a_row, r0, nr, t0, nt, y, ldy));
}
static void gemm_tiled_q6_K(int64_t n, const void *w, int64_t w_row, int64_t n_rows,
                            const void *a, int64_t a_row, int64_t n_tok, float *y, int64_t ldy) {
    RUN_TILES(tile_q6_K(n, w, w_row, a, a_row, r0, nr, t0, nt, y, ldy));
}

void FILL_FN(pyrt_kernels *k) {
    if (getenv("PYRT_NO_KQ_GEMM")) return;   /* tests: the row kernels for every token */
    k->gemm_tiled[PYRT_TYPE_Q4_K] = gemm_tiled_q4_K;
    k->gemm_tiled[PYRT_TYPE_Q5_K] = gemm_tiled_q5_K;
    k->gemm_tiled[PYRT_TYPE_Q6_K] = gemm_tiled_q6_K;
    k->gemm_r8x4[PYRT_TYPE_Q4_K] = gemm_r8x4_q4_K;
}
#endif
