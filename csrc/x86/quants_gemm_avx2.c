/* x86/quants_gemm_avx2.c — register-tiled matmul kernels for the 32-element block types
 * (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) against Q8_0/Q8_1 activations.
 *
 * Each output y[t][r] is computed with exactly the arithmetic of the single
 * row kernels in x86/quants_avx2.c (and so of llama.cpp): one 8-lane float
 * accumulator per (row, token), fma(d_w*d_a, float(lane sums of block b), acc)
 * for b in order, horizontal sum at the end, plus the scalar min-term chain for
 * Q4_1/Q5_1. The integer lane sums are exact, so any way of forming them
 * gives the same floats; what the kernels change is how much work is shared:
 *   - batches: rows and tokens in panels, each weight block unpacked once per
 *     panel, each activation block's offset correction and each tile's
 *     d_w*d_a products formed once, then RM x RN tiles whose inner loop is
 *     one integer dot, one conversion and one FMA per (row, token, block),
 *     over ranges of at most KC_BLK blocks (the accumulators carried from one
 *     range to the next in memory), so that a range's operands stay in L1;
 *   - generation (one token): GV rows per pass streaming the weights once,
 *     with software prefetch; 2..GEMV_TOK tokens (a per-token verification
 *     batch, several sequences' decode steps): 2 rows per pass, each block
 *     unpacked once for all the tokens (GEMV_PAIRS_NT); more
 *     tokens: the panels, the next one prefetched while the tiles run.
 *
 * The _r8 / _l8 variants reproduce llama.cpp's repacked Q4_0 order instead
 * (exact integer block sum, then one scalar-equivalent FMA per block), for
 * weights with rows % 8 == 0. */
#if defined(__x86_64__)
#include <immintrin.h>
#include <math.h>
#include <string.h>
#include "kernels.h"
#include "simd_avx2.h"

#if defined(PYRT_GEMM_VNNI)
#define GEMM_FN(name) name##_vnni
#define FILL_FN pyrt_fill_quants_gemm_avxvnni
#else
#define GEMM_FN(name) name
#define FILL_FN pyrt_fill_quants_gemm_avx2
#endif

#define RM 2           /* rows per tile   */
#define RN 4           /* tokens per tile (GEMM_TILE forms 4 scale products at once) */
#define GV 8           /* rows per tile when there is a single token (generation) */
#define GEMV_TOK 4     /* batches of up to this many tokens take the GEMV tiles, every token
                        * over a row group while it is in L1; larger ones the panel tiles */
#define PANEL_R 16     /* rows whose scales are cached per panel  */
#define PANEL_T 64     /* tokens whose scales are cached per panel */
#define MAX_NB PYRT_GEMM_MAX_NB
#define KC_BLK 24      /* blocks per range of the batched tiles (see DEFINE_GEMM) */

#define f16 fp16_1
#define hsum8 hsum_ps
#define nibbles unpack_nibbles
#define bit4 qh_to_bit4

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

/* ---- per-type weight unpacking (32 bytes in element order): unsigned codes
 * for Q4_1/Q5_1 (the 4- and 5-bit signed types are offset, see U_Q4_0 /
 * U_Q5_0 below), signed bytes for Q8_0 (|w| + sign form, see dot_ub) */
#define W_Q4_1(x) nibbles((x)->qs)
#define W_Q5_1(x) _mm256_or_si256(nibbles((x)->qs), bit4((x)->qh))
#define W_Q8_0(x) _mm256_loadu_si256((const __m256i *)(x)->qs)

/* the same for a row pair in nibble_pair's layout (lo: elements 0..15 of
 * rows A, B; hi: 16..31), for the generation tile GEMV_PAIRS */
static inline void bit4_pair(const uint8_t *qha, const uint8_t *qhb, __m256i *lo, __m256i *hi) {
    uint32_t a, b;
    memcpy(&a, qha, 4);
    memcpy(&b, qhb, 4);
    /* both qh words in every 64-bit lane; byte k of lo/hi takes its bit from
     * byte (A: 0-1 / 2-3, B: 4-5 / 6-7) of that word */
    const __m256i x = _mm256_set1_epi64x((long long)((uint64_t)a | (uint64_t)b << 32));
    const __m256i bits = _mm256_set1_epi64x((long long)0x8040201008040201ULL), b4 = _mm256_set1_epi8(0x10);
    const __m256i sl = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,
                                        4, 4, 4, 4, 4, 4, 4, 4, 5, 5, 5, 5, 5, 5, 5, 5);
    const __m256i sh = _mm256_add_epi8(sl, _mm256_set1_epi8(2));
    const __m256i vl = _mm256_and_si256(_mm256_shuffle_epi8(x, sl), bits);
    const __m256i vh = _mm256_and_si256(_mm256_shuffle_epi8(x, sh), bits);
    *lo = _mm256_or_si256(*lo, _mm256_and_si256(_mm256_cmpeq_epi8(vl, bits), b4));
    *hi = _mm256_or_si256(*hi, _mm256_and_si256(_mm256_cmpeq_epi8(vh, bits), b4));
}
/* [qa[0..15] | qb[0..15]] for the GEMV tiles' pairs, whose row A is never a
 * matrix's last row nor row B its first: two 32-byte loads (A's bytes and the
 * 16 after them, B's and the 16 before), one blend, instead of a 16-byte load
 * and a vinserti128 from memory (one a cycle on Zen 3) */
static inline __m256i pair_rows16(const void *qa, const void *qb) {
    return _mm256_blend_epi32(_mm256_loadu_si256((const __m256i *)qa),
                              _mm256_loadu_si256((const __m256i *)((const char *)qb - 16)), 0xF0);
}
/* nibble_pair for the GEMV tiles' pairs (pair_rows16) */
static inline void nibble_pair_rows(const uint8_t *qa, const uint8_t *qb, __m256i *lo, __m256i *hi) {
    const __m256i t = pair_rows16(qa, qb);
    const __m256i m = _mm256_set1_epi8(0x0F);
    *lo = _mm256_and_si256(t, m);
    *hi = _mm256_and_si256(_mm256_srli_epi16(t, 4), m);
}
#define PW_Q4_1(xa, xb, lo, hi) nibble_pair_rows((xa)->qs, (xb)->qs, &(lo), &(hi))
#define PW_Q5_1(xa, xb, lo, hi) (PW_Q4_1(xa, xb, lo, hi), bit4_pair((xa)->qh, (xb)->qh, &(lo), &(hi)))
#define PW_Q4_0 PW_Q4_1
#define PW_Q5_0 PW_Q5_1
/* Q8_0 pairs: lo = [A bytes 0..15 | B bytes 0..15], hi = bytes 16..31 of both (pair_rows16),
 * in U_Q8_0's form (signed; offset by 128 under AVX-VNNI) */
static inline void q8_pair_rows(const int8_t *qa, const int8_t *qb, __m256i *lo, __m256i *hi) {
    *lo = pair_rows16(qa, qb);
    *hi = pair_rows16(qa + 16, qb + 16);
#if defined(PYRT_GEMM_VNNI)
    *lo = _mm256_xor_si256(*lo, _mm256_set1_epi8((char)0x80));
    *hi = _mm256_xor_si256(*hi, _mm256_set1_epi8((char)0x80));
#endif
}
#define PW_Q8_0(xa, xb, lo, hi) q8_pair_rows((xa)->qs, (xb)->qs, &(lo), &(hi))

/* ---- the batched tiles (several tokens) ----
 *
 * Per (row, token, block) the integer block dot, its conversion and ggml's
 * fma(d_w*d_a, float(lane sums), acc) are the only work left in the tile
 * loop; everything shared is prepared once per panel:
 *   - the rows' blocks unpacked to 32 bytes each (ub), in the form the dot
 *     takes: unsigned u = w + OFF, whose offset is taken back by starting
 *     the dot from -OFF * (the activation's lane sums) (cb, per token and
 *     block: int32 lanes for vpdpbusd, int16 pair sums for vpmaddubsw);
 *     Q8_0 without VNNI keeps ggml's sign trick (w + 128 would saturate
 *     vpmaddubsw), OFF 0 types (Q4_1, Q5_1) need no correction;
 *   - the per-block products d_w*d_a of the tile (sc), 8 at a time, the same
 *     floats ggml forms one scalar product at a time.
 * The integer lanes are exact sums, so every float operation is the row
 * kernel's. The Q4_1/Q5_1 min terms are a separate chain per (row, token),
 * added to the tiles' sums (gemm_min_terms): ggml's result is hsum(acc) + summs. */
#if defined(PYRT_GEMM_VNNI)
#define OFF_Q8_0 128
#define U_Q8_0(x) _mm256_xor_si256(W_Q8_0(x), _mm256_set1_epi8((char)0x80))
#else
#define OFF_Q8_0 (-1)   /* sign trick: ub holds the signed weights */
#define U_Q8_0(x) W_Q8_0(x)
#endif
#define OFF_Q4_0 8
#define U_Q4_0(x) nibbles((x)->qs)
#define OFF_Q5_0 16
#define U_Q5_0(x) _mm256_or_si256(nibbles((x)->qs), bit4((x)->qh))
#define OFF_Q4_1 0
#define U_Q4_1(x) W_Q4_1(x)
#define OFF_Q5_1 0
#define U_Q5_1(x) W_Q5_1(x)

#define UB_BLOCKS 2048  /* unpacked weight blocks per row panel (64 KB) */
/* activation blocks per token panel (256 KB each: qs, corrections): at least RN tokens of
 * 14336-column rows (Llama-3.1-8B's ffn_down; with 2048 those got 3 tokens a panel and ran
 * one token per tile: Q8_0 4096 x 14336 x 256 tokens took 2.4x as long as 14336 x 4096) */
#define CB_BLOCKS 8192

/* the start of a block dot: -OFF * (lane sums of a) */
static inline __m256i dot_corr(__m256i a, int off) {
    const __m256i o = _mm256_set1_epi8((char)off);
#if defined(PYRT_GEMM_VNNI)
    return _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), o, a));
#else
    return _mm256_sub_epi16(_mm256_setzero_si256(), _mm256_maddubs_epi16(o, a));
#endif
}

/* int32 lanes of w . a, w given as ub holds it (see above), corr = the
 * block's dot_corr (unused for off <= 0) */
static inline __m256i dot_ub(__m256i u, __m256i uabs, __m256i a, __m256i corr, int off) {
#if defined(PYRT_GEMM_VNNI)
    (void)uabs;
    return _mm256_dpbusd_avx_epi32(off > 0 ? corr : _mm256_setzero_si256(), u, a);
#else
    const __m256i ones = _mm256_set1_epi16(1);
    if (off < 0) return _mm256_madd_epi16(_mm256_maddubs_epi16(uabs, _mm256_sign_epi8(a, u)), ones);
    const __m256i s = _mm256_maddubs_epi16(u, a);
    return _mm256_madd_epi16(off > 0 ? _mm256_add_epi16(s, corr) : s, ones);
#endif
}

/* keep v in a register (the compiler would rather fold the load into each use) */
#define IN_REG(v) __asm__("" : "+x"(v))

/* hsum8 of 8 accumulators at once: lane k of the result is hsum8(v_k) bit
 * for bit (the same pairs added in the same order), in lane order
 * [v0 v2 v4 v6 | v1 v3 v5 v7] */
static inline __m256 hsum8x8(__m256 v0, __m256 v1, __m256 v2, __m256 v3, __m256 v4, __m256 v5, __m256 v6, __m256 v7) {
    /* x_k[i] = a_i + a_(i+4), two accumulators per vector: [x_k | x_(k+1)] */
    const __m256 x01 = _mm256_add_ps(_mm256_permute2f128_ps(v0, v1, 0x20), _mm256_permute2f128_ps(v0, v1, 0x31));
    const __m256 x23 = _mm256_add_ps(_mm256_permute2f128_ps(v2, v3, 0x20), _mm256_permute2f128_ps(v2, v3, 0x31));
    const __m256 x45 = _mm256_add_ps(_mm256_permute2f128_ps(v4, v5, 0x20), _mm256_permute2f128_ps(v4, v5, 0x31));
    const __m256 x67 = _mm256_add_ps(_mm256_permute2f128_ps(v6, v7, 0x20), _mm256_permute2f128_ps(v6, v7, 0x31));
    /* y_k[i] = x_k[i] + x_k[i+2] (i < 2): [y0 y2 | y1 y3] */
    const __m256 y0123 = _mm256_add_ps(_mm256_shuffle_ps(x01, x23, _MM_SHUFFLE(1, 0, 1, 0)),
                                       _mm256_shuffle_ps(x01, x23, _MM_SHUFFLE(3, 2, 3, 2)));
    const __m256 y4567 = _mm256_add_ps(_mm256_shuffle_ps(x45, x67, _MM_SHUFFLE(1, 0, 1, 0)),
                                       _mm256_shuffle_ps(x45, x67, _MM_SHUFFLE(3, 2, 3, 2)));
    /* y_k[0] + y_k[1] */
    return _mm256_add_ps(_mm256_shuffle_ps(y0123, y4567, _MM_SHUFFLE(2, 0, 2, 0)),
                         _mm256_shuffle_ps(y0123, y4567, _MM_SHUFFLE(3, 1, 3, 1)));
}

/* lane k (0..3) of each 128-bit half of v in all 4 of that half's lanes
 * (vpermilps: an in-lane shuffle; the switch folds away for a constant k, and
 * keeps the immediate an immediate in unoptimized builds) */
static inline __m256 lane_bcast(__m256 v, int k) {
    switch (k & 3) {
    case 0: return _mm256_permute_ps(v, 0x00);
    case 1: return _mm256_permute_ps(v, 0x55);
    case 2: return _mm256_permute_ps(v, 0xAA);
    default: return _mm256_permute_ps(v, 0xFF);
    }
}

/* Row pairs in nibble_pair's layout: pair k's accumulators lo = [A lanes 0-3 |
 * B lanes 0-3], hi = lanes 4-7 (np <= 4 pairs). lo + hi is hsum8's first step
 * (a_i + a_(i+4)) for both rows; then its two in-lane steps for all pairs at
 * once: lanes [A_0 .. A_3 | B_0 .. B_3], each bit for bit hsum8 of its row
 * (pairs past the caller's: zeros, HSUM8_PAIRS). */
static inline __m256 hsum8_pairs(__m256 lo0, __m256 hi0, __m256 lo1, __m256 hi1,
                                 __m256 lo2, __m256 hi2, __m256 lo3, __m256 hi3) {
    const __m256 x[4] = { _mm256_add_ps(lo0, hi0), _mm256_add_ps(lo1, hi1),
                          _mm256_add_ps(lo2, hi2), _mm256_add_ps(lo3, hi3) };
    const __m256 y01 = _mm256_add_ps(_mm256_shuffle_ps(x[0], x[1], _MM_SHUFFLE(1, 0, 1, 0)),
                                     _mm256_shuffle_ps(x[0], x[1], _MM_SHUFFLE(3, 2, 3, 2)));
    const __m256 y23 = _mm256_add_ps(_mm256_shuffle_ps(x[2], x[3], _MM_SHUFFLE(1, 0, 1, 0)),
                                     _mm256_shuffle_ps(x[2], x[3], _MM_SHUFFLE(3, 2, 3, 2)));
    return _mm256_add_ps(_mm256_shuffle_ps(y01, y23, _MM_SHUFFLE(2, 0, 2, 0)),
                         _mm256_shuffle_ps(y01, y23, _MM_SHUFFLE(3, 1, 3, 1)));
}

/* a pair's codes as dot_ub's uabs: |w| for the sign trick (OFF < 0), else as they are */
#define PAIR_ABS(v, OFF) ((OFF) < 0 ? _mm256_sign_epi8((v), (v)) : (v))
#define PAIR_ACC(v, k, n) ((k) < (n) ? (v)[(k) < (n) ? (k) : 0] : _mm256_setzero_ps())
#define HSUM8_PAIRS(lo, hi, n)                                                                    \
    hsum8_pairs(PAIR_ACC(lo, 0, n), PAIR_ACC(hi, 0, n), PAIR_ACC(lo, 1, n), PAIR_ACC(hi, 1, n),   \
                PAIR_ACC(lo, 2, n), PAIR_ACC(hi, 2, n), PAIR_ACC(lo, 3, n), PAIR_ACC(hi, 3, n))

/* two adjacent floats, as the low half of a vector */
static inline __m128 load2(const float *p) { return _mm_castsi128_ps(_mm_loadl_epi64((const __m128i *)p)); }

/* Rows r0.. (rm) x tokens t0.. (rn) of the current panels, which are block
 * major (ub: [b][pr], aq/cb/ad: [b][pt]) so that a tile reads each block's
 * operands at fixed offsets from one pointer per array. */
#define GEMM_TILE(OFF, HAS_MIN, rm, rn)                                                                    \
    do {                                                                                          \
        for (int64_t b = kb0; b < kb1; b++) {                                                     \
            const __m128 a4 = _mm_loadu_ps(&ad[b * pt + t0 - tb]);                                \
            const float *w4 = &ws[(b * pr + r0 - rb) * 4];                                        \
            float *s8 = &sc[(b - kb0) * RM * RN];                                                 \
            if (rm == 2)                                                                          \
                _mm256_store_ps(s8, _mm256_mul_ps(_mm256_load_ps(w4), _mm256_set_m128(a4, a4)));  \
            else                                                                                  \
                for (int i = 0; i < rm; i++)                                                      \
                    _mm_store_ps(s8 + i * RN, _mm_mul_ps(_mm_load_ps(w4 + 4 * i), a4));          \
        }                                                                                         \
        /* a block range after the first continues the tile's accumulators (ka) */               \
        __m256 acc[RM][RN];                                                                       \
        __m256 *const kap = ka + (r0 - rb) * PANEL_T + (t0 - tb);                                 \
        for (int i = 0; i < rm; i++)                                                              \
            for (int j = 0; j < rn; j++) acc[i][j] = kb0 ? kap[i * PANEL_T + j] : _mm256_setzero_ps(); \
        const __m256i *ubp = ub + kb0 * pr + (r0 - rb), *aqp = aq + kb0 * pq + (t0 - tb), *cbp = cb + kb0 * pq + (t0 - tb); \
        const float *scp = sc;                                                                    \
        for (int64_t b = kb0; b < kb1; b++, ubp += pr, aqp += pq, cbp += pq, scp += RM * RN) {    \
            if (pf < pf_end) { _mm_prefetch(pf, _MM_HINT_T0); pf += pf_step; }                    \
            __m256i u[RM], uabs[RM];                                                              \
            for (int i = 0; i < rm; i++) {                                                        \
                u[i] = _mm256_load_si256(ubp + i);                                                \
                uabs[i] = OFF < 0 ? _mm256_sign_epi8(u[i], u[i]) : u[i];                          \
            }                                                                                     \
            /* each row's four products in both halves of one vector, (row, token)'s spread   \
             * by an in-lane shuffle: 2 loads a block instead of 8 broadcasts (Zen 3: GEMMs of  \
             * 512 tokens 3-10 % faster); the offset types read each token's correction as a   \
             * memory operand, which leaves the registers for it. Q8_0 (|w| in two more         \
             * registers) keeps the broadcasts: the two vectors made GCC spill an accumulator. */ \
            __m256 s_r[2] = { _mm256_setzero_ps(), _mm256_setzero_ps() };                          \
            if (OFF >= 0)                                                                         \
                for (int i = 0; i < rm; i++) s_r[i] = _mm256_broadcast_ps((const __m128 *)(scp + i * RN)); \
            for (int j = 0; j < rn; j++) {                                                        \
                __m256i aj = _mm256_load_si256(aqp + j);                                          \
                __m256i cj = OFF > 0 ? _mm256_load_si256(cbp + j) : _mm256_setzero_si256();       \
                if (rm > 1) IN_REG(aj);                                                           \
                for (int i = 0; i < rm; i++) {                                                    \
                    const __m256 p = _mm256_cvtepi32_ps(dot_ub(u[i], uabs[i], aj, cj, OFF));      \
                    const __m256 sij = OFF >= 0 ? lane_bcast(s_r[i], j) : _mm256_broadcast_ss(scp + i * RN + j); \
                    acc[i][j] = _mm256_fmadd_ps(sij, p, acc[i][j]);                               \
                }                                                                                 \
            }                                                                                     \
        }                                                                                         \
        if (kb1 < nb) {                                                                           \
            for (int i = 0; i < rm; i++)                                                          \
                for (int j = 0; j < rn; j++) kap[i * PANEL_T + j] = acc[i][j];                    \
        } else if (rm == RM && rn == RN) {                                                        \
            /* lanes [row r0: tokens t0..t0+3 | row r0+1: the same] */                            \
            const __m256 h = hsum8x8(acc[0][0], acc[1][0], acc[0][1], acc[1][1],                  \
                                     acc[0][2], acc[1][2], acc[0][3], acc[1][3]);                 \
            const __m128 hr0 = _mm256_castps256_ps128(h), hr1 = _mm256_extractf128_ps(h, 1);     \
            __m128 p01 = _mm_unpacklo_ps(hr0, hr1), p23 = _mm_unpackhi_ps(hr0, hr1);             \
            if (HAS_MIN) {                                                                        \
                const float *m = &mo[(t0 - tb) * pr + r0 - rb];                                   \
                p01 = _mm_add_ps(p01, _mm_loadh_pi(load2(m), (const __m64 *)(m + pr)));           \
                p23 = _mm_add_ps(p23, _mm_loadh_pi(load2(m + 2 * pr), (const __m64 *)(m + 3 * pr))); \
            }                                                                                     \
            _mm_storel_pi((__m64 *)&y[t0 * ldy + r0], p01);                                       \
            _mm_storeh_pi((__m64 *)&y[(t0 + 1) * ldy + r0], p01);                                 \
            _mm_storel_pi((__m64 *)&y[(t0 + 2) * ldy + r0], p23);                                 \
            _mm_storeh_pi((__m64 *)&y[(t0 + 3) * ldy + r0], p23);                                 \
        } else {                                                                                  \
            for (int i = 0; i < rm; i++)                                                          \
                for (int j = 0; j < rn; j++)                                                      \
                    y[(t0 + j) * ldy + r0 + i] = HAS_MIN ? hsum8(acc[i][j]) + mo[(t0 - tb + j) * pr + r0 - rb + i] \
                                                         : hsum8(acc[i][j]);                      \
        }                                                                                         \
    } while (0)

/* The generation tile: GV rows rs apart,
 * pair k = rows (A, A + 2) with A = (k & 1) + 4 (k >> 1): (0,2) (1,3) (4,6)
 * (5,7). A pair shares each integer dot (nibble_pair's layout): accumulator
 * lo holds [A lanes 0-3 | B lanes 0-3], hi lanes 4-7. Weights are unsigned
 * (w + OFF), the offset taken back by the dot's start value (dot_corr of the
 * block's activation halves, once per block for all rows), or Q8_0's signed
 * codes in the sign trick (OFF < 0, PAIR_ABS). The rows' first 4 bytes ([d m];
 * Q4_0/Q5_0/Q8_0: d and 2 code bytes) come in as one 8-dword vector;
 * converted per 4 rows and shuffled to D = [d0 d1 d4 d5 | d2 d3 d6 d7] (and M
 * likewise), so pair k's scales are lane k of each half of D * d_a, spread by
 * an in-lane shuffle, and the min chains fmaf(m_r, s_b, summs_r) are one FMA
 * on M. The horizontal sums: acc_lo + acc_hi is hsum8's first step for both
 * rows of a pair, then its in-lane steps for all pairs at once, leaving the
 * rows in M's lane order. Per row the operations are exactly its row kernel's
 * (x86/quants_avx2.c): the same integer lanes, float products, FMAs and sums. */
#define GEMV_PAIRS(WT, AT, WLOAD, OFF, HAS_MIN)                                                    \
    do {                                                                                          \
        enum { NP = GV / 2 };                                                                     \
        __m256 acc_lo[4], acc_hi[4], sm = _mm256_setzero_ps();                                    \
        for (int k = 0; k < 4; k++) acc_lo[k] = acc_hi[k] = _mm256_setzero_ps();                  \
        const AT *ar = (const AT *)((const char *)a + t0 * a_row);                                \
        const WT *xr[GV];                                                                         \
        for (int i = 0; i < GV; i++) xr[i] = (const WT *)((const char *)w + (r0 + i * rs) * w_row); \
        for (int64_t b = 0; b < nb; b++) {                                                        \
            const __m256i a_lo = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)ar[b].qs)); \
            const __m256i a_hi = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(ar[b].qs + 16))); \
            const __m256i c_lo = OFF > 0 ? dot_corr(a_lo, OFF) : _mm256_setzero_si256();          \
            const __m256i c_hi = OFF > 0 ? dot_corr(a_hi, OFF) : _mm256_setzero_si256();          \
            int32_t dm[GV];                                                                       \
            for (int i = 0; i < GV; i++) {                                                        \
                _mm_prefetch((const char *)&xr[i][b] + PF_DIST, _MM_HINT_T0);                     \
                dm[i] = pyrt_load_i32(&xr[i][b]);                                                 \
            }                                                                                     \
            const __m256 f_lo = _mm256_cvtph_ps(_mm_setr_epi32(dm[0], dm[1], dm[2], dm[3]));      \
            const __m256 f_hi = _mm256_cvtph_ps(_mm_setr_epi32(dm[4], dm[5], dm[6], dm[7]));      \
            const __m256 sc = _mm256_mul_ps(_mm256_shuffle_ps(f_lo, f_hi, _MM_SHUFFLE(2, 0, 2, 0)), \
                                            _mm256_broadcast_ss(&ga[b]));                         \
            if (HAS_MIN)                                                                          \
                sm = _mm256_fmadd_ps(_mm256_shuffle_ps(f_lo, f_hi, _MM_SHUFFLE(3, 1, 3, 1)),     \
                                     _mm256_broadcast_ss(&gs[b]), sm);                            \
            for (int k = 0; k < NP; k++) {                                                        \
                const int ia = (k & 1) + 4 * (k >> 1);                                            \
                const __m256 sq = lane_bcast(sc, k);                                               \
                __m256i lo, hi;                                                                   \
                P##WLOAD(&xr[ia][b], &xr[ia + 2][b], lo, hi);                                     \
                const __m256i lo_a = PAIR_ABS(lo, OFF), hi_a = PAIR_ABS(hi, OFF);                 \
                acc_lo[k] = _mm256_fmadd_ps(sq, _mm256_cvtepi32_ps(dot_ub(lo, lo_a, a_lo, c_lo, OFF)), acc_lo[k]); \
                acc_hi[k] = _mm256_fmadd_ps(sq, _mm256_cvtepi32_ps(dot_ub(hi, hi_a, a_hi, c_hi, OFF)), acc_hi[k]); \
            }                                                                                     \
        }                                                                                         \
        __m256 tot = HSUM8_PAIRS(acc_lo, acc_hi, NP);                                             \
        if (HAS_MIN) tot = _mm256_add_ps(tot, sm);                                                \
        float out[8];                                                                             \
        _mm256_storeu_ps(out, tot);                                                               \
        /* lanes [A_0 A_1 A_2 A_3 | B_0 B_1 B_2 B_3] = rows [0 1 4 5 | 2 3 6 7] */                \
        for (int k = 0; k < NP; k++) {                                                            \
            const int ia = (k & 1) + 4 * (k >> 1);                                                \
            y[t0 * ldy + r0 + ia * rs] = out[k];                                                  \
            y[t0 * ldy + r0 + (ia + 2) * rs] = out[4 + k];                                        \
        }                                                                                         \
    } while (0)

/* The few-token tiles (2..GEMV_TOK tokens: a per-token verification batch,
 * several sequences' decode steps) keep every (row, token) accumulator in a
 * register: one row pair per
 * pass, all the tokens on each block while it is loaded (with 4 rows x 4
 * tokens the 16 accumulators did not fit the 16 registers and GCC kept most
 * of them on the stack). What a token's blocks need besides the weights is
 * prepared once per call (few_tok, the thread's scratch) in the form the
 * tiles take as plain memory operands (a broadcast from memory costs a
 * shuffle on the vector pipes on Zen 3, one per token, block and pass):
 *   - lohi[b][t]: token t's block b halves, each in both 128-bit lanes
 *     (nibble_pair's layout), and corr[b][t] their dot_corr (offset
 *     types);
 *   - d8[b] / s8[b] (types with mins): the tokens' block scales / sums, lanes
 *     [t0..t3 | t0..t3], so one multiply by a pair's scales gives
 *     every token's d_w*d_a, spread by lane_bcast. */
typedef struct {
    __m256i lohi[MAX_NB][GEMV_TOK][2];
    __m256i corr[MAX_NB][GEMV_TOK][2];
    _Alignas(32) float s8[MAX_NB][8];
    _Alignas(32) float d8[MAX_NB][8];
} few_tok;

/* GEMV_PAIRS for NT tokens (t0..): rows r0 and r0 + rs as nibble_pair's pair,
 * unpacked once per block for all the tokens. The rows' first 4 bytes give
 * [d_A m_A d_B m_B]; per (row, token) the float steps are GEMV_PAIRS':
 * acc = fma(d_w*d_a, float(lanes), acc) per block, the min chain
 * fmaf(m_w, s_a, summs) (lane (row, token) of one vector), hsum + summs. */
#define GEMV_PAIRS_NT(WT, WLOAD, OFF, HAS_MIN, NT)                                               \
    do {                                                                                          \
        __m256 acc_lo[NT], acc_hi[NT], sm = _mm256_setzero_ps();                                  \
        for (int j = 0; j < NT; j++) acc_lo[j] = acc_hi[j] = _mm256_setzero_ps();                 \
        const WT *xa = (const WT *)((const char *)w + r0 * w_row);                                \
        const WT *xb = (const WT *)((const char *)w + (r0 + rs) * w_row);                         \
        for (int64_t b = 0; b < nb; b++) {                                                        \
            _mm_prefetch((const char *)&xa[b] + PF_DIST, _MM_HINT_T0);                            \
            _mm_prefetch((const char *)&xb[b] + PF_DIST, _MM_HINT_T0);                            \
            /* [d_A m_A d_A m_A | d_B m_B d_B m_B]: in-lane shuffles, no vpermps (2 uops on Zen 3) */ \
            const __m256 dm = _mm256_cvtph_ps(_mm_shuffle_epi32(_mm_unpacklo_epi32(              \
                _mm_cvtsi32_si128(pyrt_load_i32(&xa[b])), _mm_cvtsi32_si128(pyrt_load_i32(&xb[b]))), 0x50)); \
            /* [d_A d_a(t) for t = 0..3 | d_B d_a(t)]: token t's products by an in-lane shuffle */ \
            const __m256 dd = _mm256_mul_ps(_mm256_permute_ps(dm, 0x00), _mm256_load_ps(F->d8[b])); \
            if (HAS_MIN)                                                                          \
                sm = _mm256_fmadd_ps(_mm256_permute_ps(dm, 0x55), _mm256_load_ps(F->s8[b]), sm);  \
            __m256i lo, hi;                                                                       \
            P##WLOAD(&xa[b], &xb[b], lo, hi);                                                     \
            const __m256i lo_a = PAIR_ABS(lo, OFF), hi_a = PAIR_ABS(hi, OFF);                     \
            const __m256i (*fa)[2] = F->lohi[b], (*fc)[2] = F->corr[b];                           \
            for (int j = 0; j < NT; j++) {                                                        \
                const __m256 sq = lane_bcast(dd, (t0 + j));                                        \
                acc_lo[j] = _mm256_fmadd_ps(sq, _mm256_cvtepi32_ps(dot_ub(lo, lo_a, fa[t0 + j][0], fc[t0 + j][0], OFF)), acc_lo[j]); \
                acc_hi[j] = _mm256_fmadd_ps(sq, _mm256_cvtepi32_ps(dot_ub(hi, hi_a, fa[t0 + j][1], fc[t0 + j][1], OFF)), acc_hi[j]); \
            }                                                                                     \
        }                                                                                         \
        /* row A's and row B's sums for all the tokens: [A t0..t3 | B t0..t3], the min     \
         * chains' lanes */                                                                       \
        __m256 tot = HSUM8_PAIRS(acc_lo, acc_hi, NT);                                             \
        if (HAS_MIN) tot = _mm256_add_ps(tot, sm);                                                \
        float out[8];                                                                             \
        _mm256_storeu_ps(out, tot);                                                               \
        for (int j = 0; j < NT; j++) {                                                            \
            float *yt = y + (t0 + j) * ldy + r0;                                                  \
            yt[0] = out[j];                                                                       \
            yt[rs] = out[4 + j];                                                                  \
        }                                                                                         \
    } while (0)

/* NR rows' min-term chains for up to 8 tokens (lanes below nt), stored to y */
static inline __attribute__((always_inline)) void min_rows(int64_t nb, const float *wm, const float *asT,
                                                           int64_t lds, int nt, const int NR, float *y, int64_t ldy) {
    const __m256i keep = _mm256_cmpgt_epi32(_mm256_set1_epi32(nt), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    __m256 v[8];
#pragma GCC unroll 8
    for (int i = 0; i < NR; i++) v[i] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const __m256 at = _mm256_maskload_ps(&asT[b * lds], keep);
#pragma GCC unroll 8
        for (int i = 0; i < NR; i++) v[i] = _mm256_fmadd_ps(_mm256_broadcast_ss(&wm[i * nb + b]), at, v[i]);
    }
#pragma GCC unroll 8
    for (int i = 0; i < NR; i++) {
        float out[8];
        _mm256_storeu_ps(out, v[i]);
        for (int k = 0; k < nt; k++) y[k * ldy + i] = out[k];
    }
}

/* y[t][r] = sum_b m_rb * s_tb, as ggml's scalar FMA chain, 8 tokens per vector
 * (wm: [rows][nb] mins, asT: [nb][lds] activation sums); 8 rows at a time,
 * independent chains hiding the FMA latency. The tiles add these to their
 * sums (ggml: hsum(acc) + summs) from a small panel buffer y, which keeps the
 * stores off the output's strided lines. */
static void gemm_min_terms(int64_t nb, const float *wm, int64_t n_r, const float *asT, int64_t lds,
                           int64_t n_t, float *y, int64_t ldy) {
    for (int64_t t = 0; t < n_t; t += 8) {
        const int nt = n_t - t < 8 ? (int)(n_t - t) : 8;
        int64_t r = 0;
        for (; r + 8 <= n_r; r += 8) min_rows(nb, wm + r * nb, asT + t, lds, nt, 8, y + t * ldy + r, ldy);
        for (; r < n_r; r++) min_rows(nb, wm + r * nb, asT + t, lds, nt, 1, y + t * ldy + r, ldy);
    }
}

/* The panels of a batched call (~0.7 MB): the thread's scratch buffer (pyrt_thread_scratch,
 * kernels.h), not the stack, which a caller's thread may have little of. */
typedef struct {
    __m256i ub[UB_BLOCKS], aq[CB_BLOCKS], cb[CB_BLOCKS];
    _Alignas(32) float ws[4 * UB_BLOCKS];
    _Alignas(32) float ad[CB_BLOCKS + RN];
    _Alignas(32) float sc[RM * RN * KC_BLK];     /* a tile's products over one block range */
    __m256 ka[PANEL_R * PANEL_T];
    float wm[UB_BLOCKS], asT[CB_BLOCKS], mo[PANEL_T * PANEL_R];
} gemm_panels;

/* the row dots of the table being filled (FILL_FN), for a call without panels */
static pyrt_vec_dot_fn g_row_dot[PYRT_TYPE_COUNT];

/* rows [r_first, n_rows) x n_tok tokens by the row dots (same arithmetic): a
 * tiled kernel's way out when its scratch buffer cannot be had */
static void row_dots(int ty, int64_t n, const void *w, int64_t w_row, int64_t r_first, int64_t n_rows,
                     const void *a, int64_t a_row, int64_t n_tok, float *y, int64_t ldy) {
    for (int64_t r = r_first; r < n_rows; r++)
        for (int64_t t = 0; t < n_tok; t++)
            g_row_dot[ty](n, &y[t * ldy + r], (const char *)w + r * w_row, (const char *)a + t * a_row);
}

/* y[t*ldy + r] for r < n_rows, t < n_tok; rows of w and a are w_row / a_row
 * bytes apart. One token: GEMV tiles of GV rows streaming the weights once,
 * the remainder rows through the batched tiles; 2..GEMV_TOK tokens:
 * GEMV_PAIRS_NT, a row pair per pass, all tokens in one pass. More: rows in panels of
 * at most PANEL_R (unpacked once per token panel), tokens in panels of at
 * most PANEL_T (scales, corrections), both bounded by the buffers. */
#define DEFINE_GEMM(NAME, TY, WT, AT, UNPACK, OFF, HAS_MIN, GWLOAD)                          \
    static void NAME(int64_t n, const void *w, int64_t w_row, int64_t n_rows,                    \
                     const void *a, int64_t a_row, int64_t n_tok, float *y, int64_t ldy) {      \
        const int64_t nb = n / 32;                                                                \
        int64_t r_first = 0;                                                                      \
        if (n_tok > GEMV_TOK && n_tok <= 2 * GEMV_TOK) {                                          \
            /* up to 8 tokens (a speculative verification of up to 7 drafted tokens): the     \
             * GEMV tiles on the first GEMV_TOK, then the rest (the panels' setup cost more) */  \
            NAME(n, w, w_row, n_rows, a, a_row, GEMV_TOK, y, ldy);                                \
            NAME(n, w, w_row, n_rows, (const char *)a + GEMV_TOK * a_row, a_row, n_tok - GEMV_TOK, \
                 y + GEMV_TOK * ldy, ldy);                                                        \
            return;                                                                               \
        }                                                                                         \
        if (n_tok <= GEMV_TOK) { /* generation, few tokens: stream the rows once */             \
            float gat[GEMV_TOK][MAX_NB], gst[GEMV_TOK][HAS_MIN ? MAX_NB : 1];                     \
            for (int64_t t = 0; t < n_tok; t++) {                                                 \
                const AT *ab = (const AT *)((const char *)a + t * a_row);                         \
                for (int64_t b = 0; b < nb; b++) {                                                \
                    gat[t][b] = f16(ab[b].d);                                                     \
                    if (HAS_MIN) gst[t][b] = f16(SUM_OF(&ab[b]));                                 \
                }                                                                                 \
            }                                                                                     \
            /* several tokens: their per-call tables (few_tok; out of memory: the row dots) */ \
            few_tok *const F = n_tok > 1 ? pyrt_thread_scratch(sizeof(few_tok)) : NULL;           \
            if (n_tok > 1 && !F) {                                                                \
                row_dots(TY, n, w, w_row, 0, n_rows, a, a_row, n_tok, y, ldy);                    \
                return;                                                                           \
            }                                                                                     \
            for (int64_t b = 0; n_tok > 1 && b < nb; b++) {                                       \
                for (int64_t t = 0; t < GEMV_TOK; t++) {                                          \
                    if (HAS_MIN) F->s8[b][t] = F->s8[b][4 + t] = t < n_tok ? gst[t][b] : 0.0f;    \
                    F->d8[b][t] = F->d8[b][4 + t] = t < n_tok ? gat[t][b] : 0.0f;                 \
                    if (t >= n_tok) continue;                                                     \
                    const AT *ab = (const AT *)((const char *)a + t * a_row);                     \
                    const __m256i q = _mm256_loadu_si256((const __m256i *)ab[b].qs);              \
                    __m256i *h = F->lohi[b][t], *c = F->corr[b][t];                               \
                    h[0] = _mm256_permute2x128_si256(q, q, 0x00);                                 \
                    h[1] = _mm256_permute2x128_si256(q, q, 0x11);                                 \
                    if (OFF > 0) {                                                                \
                        c[0] = dot_corr(h[0], OFF);                                               \
                        c[1] = dot_corr(h[1], OFF);                                               \
                    }                                                                             \
                }                                                                                 \
            }                                                                                     \
            /* GV rows rs apart (GEMV_STREAMS); with several tokens a pair, so             \
             * that all the tokens' accumulators stay in the 16 registers */                     \
            const int64_t ng = n_tok == 1 ? GV : 2, rs = n_rows / ng, t0 = 0;                     \
            for (int64_t r0 = 0; r0 < rs; r0++) {                                                 \
                if (n_tok == 1) {                                                                 \
                    const float *ga = gat[0], *gs = gst[0];                                       \
                    (void)gs;                                                                     \
                    GEMV_PAIRS(WT, AT, GWLOAD, OFF, HAS_MIN);                                     \
                } else if (n_tok == 2) {                                                          \
                    GEMV_PAIRS_NT(WT, GWLOAD, OFF, HAS_MIN, 2);                                   \
                } else if (n_tok == 3) {                                                          \
                    GEMV_PAIRS_NT(WT, GWLOAD, OFF, HAS_MIN, 3);                                   \
                } else {                                                                          \
                    GEMV_PAIRS_NT(WT, GWLOAD, OFF, HAS_MIN, 4);                                   \
                }                                                                                 \
            }                                                                                     \
            if (rs * ng == n_rows) return;                                                        \
            r_first = rs * ng;                                                                    \
        }                                                                                         \
        gemm_panels *const S = pyrt_thread_scratch(sizeof(gemm_panels));                         \
        if (!S) {   /* out of memory: the row dots, the same arithmetic */                       \
            row_dots(TY, n, w, w_row, r_first, n_rows, a, a_row, n_tok, y, ldy);                  \
            return;                                                                               \
        }                                                                                         \
        float *const ws = S->ws, *const wm = S->wm, *const ad = S->ad, *const asT = S->asT;       \
        float *const sc = S->sc, *const mo = S->mo;                                               \
        __m256i *const ub = S->ub, *const aq = S->aq, *const cb = S->cb;                          \
        (void)wm; (void)asT; (void)cb; (void)mo;                                                  \
        int64_t pr = UB_BLOCKS / nb < PANEL_R ? UB_BLOCKS / nb : PANEL_R;                         \
        int64_t pt = CB_BLOCKS / nb - 1 < PANEL_T ? CB_BLOCKS / nb - 1 : PANEL_T;                 \
        if (pr >= RM) pr -= pr % RM;                                                              \
        if (pt >= RN) pt -= pt % RN;  /* (rows of ~16K columns leave room for < RN tokens) */     \
        const int64_t pq = pt + 1;  /* aq, cb: an odd block stride, against cache-set conflicts */ \
        /* blocks per range: at most KC_BLK, in equal ranges */                                  \
        const int64_t n_kc = (nb + KC_BLK - 1) / KC_BLK, kc = (nb + n_kc - 1) / n_kc;             \
        __m256 *const ka = S->ka;                                                                 \
        for (int64_t tb = 0; tb < n_tok; tb += pt) {                                              \
            const int64_t te = tb + pt < n_tok ? tb + pt : n_tok;                                 \
            for (int64_t t = tb; t < te; t++) {                                                   \
                const AT *abt = (const AT *)((const char *)a + t * a_row);                        \
                for (int64_t b = 0; b < nb; b++) {                                                \
                    const __m256i q = _mm256_loadu_si256((const __m256i *)abt[b].qs);             \
                    aq[b * pq + t - tb] = q;                                                      \
                    ad[b * pt + t - tb] = f16(abt[b].d);                                          \
                    if (HAS_MIN) asT[b * pt + t - tb] = f16(SUM_OF(&abt[b]));                     \
                    if (OFF > 0) cb[b * pq + t - tb] = dot_corr(q, OFF);                          \
                }                                                                                 \
            }                                                                                     \
            for (int64_t t = te; t < tb + pt; t++)    /* read by tail tiles' 4-wide loads */      \
                for (int64_t b = 0; b < nb; b++) ad[b * pt + t - tb] = 0.0f;                      \
            for (int j = 0; j < RN; j++) ad[nb * pt + j] = 0.0f;                                  \
            for (int64_t rb = r_first; rb < n_rows; rb += pr) {                                   \
                const int64_t re = rb + pr < n_rows ? rb + pr : n_rows;                           \
                for (int64_t r = rb; r < re; r++) {                                               \
                    const WT *wr = (const WT *)((const char *)w + r * w_row);                     \
                    for (int64_t b = 0; b < nb; b++) {                                            \
                        _mm_store_ps(&ws[(b * pr + r - rb) * 4], _mm_set1_ps(f16(wr[b].d)));      \
                        if (HAS_MIN) wm[(r - rb) * nb + b] = f16(MIN_OF(&wr[b]));                 \
                        ub[b * pr + r - rb] = UNPACK(&wr[b]);                                     \
                    }                                                                             \
                }                                                                                 \
                if (HAS_MIN) gemm_min_terms(nb, wm, re - rb, asT, pt, te - tb, mo, pr);           \
                /* the next panel's rows (adjacent in memory) are prefetched a line at a time   \
                 * through the tiles' block loops, so the weights stream in while these run   \
                 * (few tokens only: a large batch reuses each panel long enough) */             \
                const char *pf = (const char *)w + re * w_row;                                    \
                const char *pf_end = n_tok > 8 ? pf : (const char *)w + (re + pr < n_rows ? re + pr : n_rows) * w_row; \
                const int64_t n_iter = nb * ((re - rb + RM - 1) / RM) * ((te - tb) / RN + (te - tb) % RN); \
                const int64_t pf_step = pf < pf_end ? (((pf_end - pf) / n_iter) | 63) + 1 : 64; \
                /* block ranges outer, so that the row panel's share (kc blocks of its rows)   \
                 * stays in L1 while every token tile runs over it, and a token tile's share     \
                 * while every row tile does (long rows: Q8_0 2048 x 8192 x 512 tokens took      \
                 * 3.45 cycles a (row, token, block) over the whole rows, 2.58 at 640 columns) */ \
                for (int64_t kb0 = 0; kb0 < nb; kb0 += kc) {                                      \
                    const int64_t kb1 = kb0 + kc < nb ? kb0 + kc : nb;                            \
                    int64_t t0 = tb;                                                              \
                    for (; t0 + RN <= te; t0 += RN) {                                             \
                        int64_t r0 = rb;                                                          \
                        for (; r0 + RM <= re; r0 += RM) GEMM_TILE(OFF, HAS_MIN, RM, RN);           \
                        for (; r0 < re; r0++) GEMM_TILE(OFF, HAS_MIN, 1, RN);                      \
                    }                                                                             \
                    for (; t0 < te; t0++) {                                                       \
                        int64_t r0 = rb;                                                          \
                        for (; r0 + RM <= re; r0 += RM) GEMM_TILE(OFF, HAS_MIN, RM, 1);            \
                        for (; r0 < re; r0++) GEMM_TILE(OFF, HAS_MIN, 1, 1);                       \
                    }                                                                             \
                }                                                                                 \
            }                                                                                     \
        }                                                                                         \
    }

#define MIN_OF(wb) ((wb)->m)
#define SUM_OF(ab) ((ab)->s)
DEFINE_GEMM(GEMM_FN(gemm_q4_1), PYRT_TYPE_Q4_1, block_q4_1, block_q8_1, U_Q4_1, OFF_Q4_1, 1, W_Q4_1)
DEFINE_GEMM(GEMM_FN(gemm_q5_1), PYRT_TYPE_Q5_1, block_q5_1, block_q8_1, U_Q5_1, OFF_Q5_1, 1, W_Q5_1)
#undef MIN_OF
#undef SUM_OF
#define MIN_OF(wb) ((pyrt_fp16)0)
#define SUM_OF(ab) ((pyrt_fp16)0)
DEFINE_GEMM(GEMM_FN(gemm_q4_0), PYRT_TYPE_Q4_0, block_q4_0, block_q8_0, U_Q4_0, OFF_Q4_0, 0, W_Q4_0)
DEFINE_GEMM(GEMM_FN(gemm_q5_0), PYRT_TYPE_Q5_0, block_q5_0, block_q8_0, U_Q5_0, OFF_Q5_0, 0, W_Q5_0)
DEFINE_GEMM(GEMM_FN(gemm_q8_0), PYRT_TYPE_Q8_0, block_q8_0, block_q8_0, U_Q8_0, OFF_Q8_0, 0, W_Q8_0)
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
                                                               float *y, int64_t ldy, int nr, int nt, int stream) {
    __m256 acc[4];
    for (int j = 0; j < NT; j++) acc[j] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        __m256i wlo[4], whi[4];
        for (int p = 0; p < 4; p++) {
            if (stream) {       /* generation streams the weights once */
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

/* ---- the same order with one weight row per lane (batches) ----
 *
 * 8 rows x 4 tokens: a lane holds one (row, token); step g of a block
 * multiplies the 8 rows' bytes 4g..4g+3 (one dword per lane, from a
 * transposed panel made once per call) by the token's bytes 4g..4g+3
 * broadcast, so each lane collects the block's exact (q - 8) . a total with no
 * horizontal reduction (AVX-VNNI: vpdpbusd from -8 * (activation sum); else
 * vpmaddubsw pairs, whose 8 steps stay below 8 * 2 * 15 * 128 < 2^15, summed
 * in int16, one vpmaddwd, then the correction). Then the repacked order's
 * float steps, one (row, token) per lane. */
#define L8_TOK 64          /* tokens whose sums and scales are prepared at once */

/* rows r0..r0+7 (clamped to n_rows) of each block -> wt[b][g], 8 dwords of
 * unsigned codes (elements 4g..4g+3 of each row), and their scales dw[b][8] */
static void l8_panel(const void *w, int64_t w_row, int64_t r0, int64_t n_rows, int64_t nb, __m256i *wt, float *dw) {
    const block_q4_0 *wr[8];
    for (int i = 0; i < 8; i++)
        wr[i] = (const block_q4_0 *)((const char *)w + (r0 + i < n_rows ? r0 + i : n_rows - 1) * w_row);
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    for (int64_t b = 0; b < nb; b++) {
        __m256i z[4];   /* z[i]'s 128-bit lane L: row 4L + i's 16 code bytes */
        for (int i = 0; i < 4; i++)
            z[i] = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)wr[i][b].qs)),
                                           _mm_loadu_si128((const __m128i *)wr[4 + i][b].qs), 1);
        /* 4x4 dword transpose within each lane: t[k] dword 4L + i = row 4L + i's dword k */
        const __m256i u0 = _mm256_unpacklo_epi32(z[0], z[1]), u1 = _mm256_unpackhi_epi32(z[0], z[1]);
        const __m256i u2 = _mm256_unpacklo_epi32(z[2], z[3]), u3 = _mm256_unpackhi_epi32(z[2], z[3]);
        const __m256i t[4] = { _mm256_unpacklo_epi64(u0, u2), _mm256_unpackhi_epi64(u0, u2),
                               _mm256_unpacklo_epi64(u1, u3), _mm256_unpackhi_epi64(u1, u3) };
        for (int k = 0; k < 4; k++) {
            wt[b * 8 + k] = _mm256_and_si256(t[k], m4);                            /* elements 4k.. */
            wt[b * 8 + 4 + k] = _mm256_and_si256(_mm256_srli_epi16(t[k], 4), m4);  /* 16 + 4k.. */
        }
        _mm256_store_ps(dw + 8 * b, _mm256_cvtph_ps(_mm_setr_epi16(
            (short)wr[0][b].d, (short)wr[1][b].d, (short)wr[2][b].d, (short)wr[3][b].d,
            (short)wr[4][b].d, (short)wr[5][b].d, (short)wr[6][b].d, (short)wr[7][b].d)));
    }
}

/* NT tokens at[] (prepared corrections cs / scales ds, [token][nb]) against a panel */
static inline __attribute__((always_inline)) void l8_tile(int64_t nb, const __m256i *wt, const float *dw,
                                                          const block_q8_0 *const at[], const int32_t *cs,
                                                          const float *ds, const int NT, __m256 acc[]) {
    for (int j = 0; j < NT; j++) acc[j] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const __m256i *wb = wt + 8 * b;
        const __m256 d = _mm256_load_ps(dw + 8 * b);
        for (int j = 0; j < NT; j++) {
            const int8_t *q = at[j][b].qs;
#if defined(PYRT_GEMM_VNNI)
            /* two chains of four steps, joined (integer sums: exact in any order) */
            __m256i s0 = _mm256_set1_epi32(cs[j * nb + b]), s1 = _mm256_setzero_si256();
            for (int g = 0; g < 4; g++) {
                s0 = _mm256_dpbusd_avx_epi32(s0, wb[g], _mm256_set1_epi32(pyrt_load_i32(q + 4 * g)));
                s1 = _mm256_dpbusd_avx_epi32(s1, wb[4 + g], _mm256_set1_epi32(pyrt_load_i32(q + 16 + 4 * g)));
            }
            const __m256i s = _mm256_add_epi32(s0, s1);
#else
            __m256i h0 = _mm256_maddubs_epi16(wb[0], _mm256_set1_epi32(pyrt_load_i32(q)));
            __m256i h1 = _mm256_maddubs_epi16(wb[4], _mm256_set1_epi32(pyrt_load_i32(q + 16)));
            for (int g = 1; g < 4; g++) {
                h0 = _mm256_add_epi16(h0, _mm256_maddubs_epi16(wb[g], _mm256_set1_epi32(pyrt_load_i32(q + 4 * g))));
                h1 = _mm256_add_epi16(h1, _mm256_maddubs_epi16(wb[4 + g], _mm256_set1_epi32(pyrt_load_i32(q + 16 + 4 * g))));
            }
            const __m256i s = _mm256_add_epi32(_mm256_madd_epi16(_mm256_add_epi16(h0, h1), _mm256_set1_epi16(1)),
                                               _mm256_set1_epi32(cs[j * nb + b]));
#endif
            const __m256 sc = _mm256_mul_ps(d, _mm256_set1_ps(ds[j * nb + b]));
            acc[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), sc, acc[j]);
        }
    }
}

/* the row panel and the tokens' sums and scales for rows of up to PYRT_GEMM_MAX_COLS: ~0.4 MB,
 * the thread's scratch buffer (on the stack they were sized for 4096 columns, and wider rows
 * took tile_q4_0_r8 at ~1.6x the time) */
typedef struct {
    __m256i wt[8 * MAX_NB];
    _Alignas(32) float dw[8 * MAX_NB];
    float ds[L8_TOK * MAX_NB];
    int32_t cs[L8_TOK * MAX_NB];
} l8_panels;

static void GEMM_FN(gemm_q4_0_l8)(l8_panels *P, int64_t n, const void *w, int64_t w_row, int64_t n_rows,
                                  const void *a, int64_t a_row, int64_t n_tok, float *y, int64_t ldy) {
    const int64_t nb = n / 32;
    __m256i *const wt = P->wt;
    float *const dw = P->dw, *const ds = P->ds;
    int32_t *const cs = P->cs;
    for (int64_t tb = 0; tb < n_tok; tb += L8_TOK) {
        const int64_t nt_all = n_tok - tb < L8_TOK ? n_tok - tb : L8_TOK;
        q8_0_corr_scales((const char *)a + tb * a_row, a_row, nt_all, nb, cs, ds);
        for (int64_t r0 = 0; r0 < n_rows; r0 += 8) {
            const int nr = n_rows - r0 < 8 ? (int)(n_rows - r0) : 8;
            l8_panel(w, w_row, r0, n_rows, nb, wt, dw);
            for (int64_t t0 = 0; t0 < nt_all;) {
                const int NT = nt_all - t0 >= 4 ? 4 : 1;
                const block_q8_0 *at[4];
                for (int j = 0; j < NT; j++) at[j] = (const block_q8_0 *)((const char *)a + (tb + t0 + j) * a_row);
                __m256 acc[4];
                if (NT == 4) l8_tile(nb, wt, dw, at, cs + t0 * nb, ds + t0 * nb, 4, acc);
                else l8_tile(nb, wt, dw, at, cs + t0 * nb, ds + t0 * nb, 1, acc);
                for (int j = 0; j < NT; j++) {
                    float *yt = y + (tb + t0 + j) * ldy + r0;
                    if (nr == 8) {
                        _mm256_storeu_ps(yt, acc[j]);
                    } else {
                        float out[8];
                        _mm256_storeu_ps(out, acc[j]);
                        for (int i = 0; i < nr; i++) yt[i] = out[i];
                    }
                }
                t0 += NT;
            }
        }
    }
}

static void GEMM_FN(gemm_q4_0_r8)(int64_t n, const void *w, int64_t w_row, int64_t n_rows,
                         const void *a, int64_t a_row, int64_t n_tok, float *y, int64_t ldy) {
    const int64_t nb = n / 32;
    /* the lane tiles are cheaper per token from 3 on (without a buffer, out of
     * memory: the tiles below, the same arithmetic) */
    l8_panels *const P = n_tok > 2 && nb <= MAX_NB ? pyrt_thread_scratch(sizeof(l8_panels)) : NULL;
    if (P) {
        GEMM_FN(gemm_q4_0_l8)(P, n, w, w_row, n_rows, a, a_row, n_tok, y, ldy);
        return;
    }
    int64_t r_first = 0;
    if (n_tok <= 2) {   /* generation, 2 tokens: 8 rows rs apart at a time (GEMV_STREAMS) */
        const int64_t rs = n_rows / 8;
        const block_q8_0 *at[2] = { (const block_q8_0 *)a, (const block_q8_0 *)((const char *)a + a_row) };
        for (int64_t g = 0; g < rs; g++) {
            const block_q4_0 *wr[8];
            for (int i = 0; i < 8; i++) wr[i] = (const block_q4_0 *)((const char *)w + (g + i * rs) * w_row);
            float out[2][8];
            if (n_tok == 2) tile_q4_0_r8(nb, wr, at, 2, out[0], 8, 8, 2, 1);
            else tile_q4_0_r8(nb, wr, at, 1, out[0], 8, 8, 1, 1);
            for (int j = 0; j < n_tok; j++)
                for (int i = 0; i < 8; i++) y[j * ldy + g + i * rs] = out[j][i];
        }
        r_first = 8 * rs;
    }
    for (int64_t r0 = r_first; r0 < n_rows; r0 += 8) {
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
            if (NT == 4) tile_q4_0_r8(nb, wr, at, 4, yt, ldy, nr, 4, 0);
            else if (NT == 2) tile_q4_0_r8(nb, wr, at, 2, yt, ldy, nr, 2, 0);
            else tile_q4_0_r8(nb, wr, at, 1, yt, ldy, nr, 1, 0);
            t0 += NT;
        }
    }
}

void FILL_FN(pyrt_kernels *k) {
    for (int t = 0; t < PYRT_TYPE_COUNT; t++) g_row_dot[t] = k->type[t].vec_dot;
    k->type[PYRT_TYPE_Q4_0].gemm = GEMM_FN(gemm_q4_0);
    k->type[PYRT_TYPE_Q4_1].gemm = GEMM_FN(gemm_q4_1);
    k->type[PYRT_TYPE_Q5_0].gemm = GEMM_FN(gemm_q5_0);
    k->type[PYRT_TYPE_Q5_1].gemm = GEMM_FN(gemm_q5_1);
    k->type[PYRT_TYPE_Q8_0].gemm = GEMM_FN(gemm_q8_0);
    k->type[PYRT_TYPE_Q4_0].gemm_r8 = GEMM_FN(gemm_q4_0_r8);
}
#endif
