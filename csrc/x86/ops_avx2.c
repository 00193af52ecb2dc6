/* x86/ops_avx2.c — forward-pass ops (rope, SwiGLU, attention) for the AVX2 kernel
 * set, computing exactly the floating-point sequence llama.cpp's x86 CPU
 * backend computes (an AVX2+FMA+F16C build without AVX-512).
 *
 * Why exact: every matmul input is quantized to 8 bits, so the forward pass is
 * chaotic — a 1-ulp difference that flips one rounding decision changes the
 * next layer's quantization noise, and the divergence grows to the full
 * quantization-noise level (measured on SmolLM2: mean |Δ logprob| 0.07, the
 * same as a float-activation path). Matching llama.cpp's reference outputs to
 * 0.01 therefore means matching its arithmetic operation for operation:
 *   - exp is the polynomial approximation ggml uses on AVX2 (from Arm's
 *     optimized-routines expf), silu(x) = x / (1 + exp(-x));
 *   - rope uses the FMA contraction GCC applies to ggml's C++ rotation;
 *   - attention has two shapes, as in llama.cpp: a multi-token batch goes
 *     through its tiled GEMM (one 8-lane accumulator per output, horizontal
 *     sum at the end), a single token through ggml_vec_dot_f16 (four 8-lane
 *     accumulators over 32-element steps, tree reduction, double tail);
 *   - softmax sums exp values in groups of 8 aligned to cache position 0,
 *     each group reduced in float and added to a double total.
 * Compiled with -mavx2 -mfma -mf16c; only reached after cpuid said yes. */
#if defined(__x86_64__)
#include <immintrin.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"
#include "ops.h"
#include "simd_avx2.h"

/* ---- exp and silu ------------------------------------------------------------ */

/* exp(x) = 2^n * (1 + poly(b)), n = round(x / ln2), b = x - n ln2 (two-part
 * ln2); large |n| is handled by splitting the scale to avoid overflow.
 * Outside the fast path (some |n| > 126) the lanes whose result is known
 * exactly are selected instead of computed: n <= -151 gives +0 (the scaled
 * product is below 2^-150), n > 192 gives +inf (as 2^127 * 2^127); the
 * products of the other paths see 1.0 in lanes that do not take them. The
 * results are bit-identical to computing every path in every lane and
 * blending (tests/c/exp_exhaustive.c checks all 2^32 inputs), but no lane
 * computes a denormal that is not its result: on Intel each such product is
 * a microcode assist, which masked (-inf) and very negative softmax lanes
 * used to hit in every group of 8. */
static inline __m256 exp8(__m256 x) {
    const __m256 shift = _mm256_set1_ps(0x1.8p23f);
    const __m256 z = _mm256_fmadd_ps(x, _mm256_set1_ps(0x1.715476p+0f), shift);
    const __m256 n = _mm256_sub_ps(z, shift);
    const __m256 b = _mm256_fnmadd_ps(n, _mm256_set1_ps(0x1.7f7d1cp-20f),
                                      _mm256_fnmadd_ps(n, _mm256_set1_ps(0x1.62e4p-1f), x));
    const __m256i e = _mm256_slli_epi32(_mm256_castps_si256(z), 23);
    const __m256 one = _mm256_set1_ps(1);
    const __m256 k = _mm256_castsi256_ps(_mm256_add_epi32(e, _mm256_castps_si256(one)));
    const __m256 absn = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), n);
    const __m256 big = _mm256_cmp_ps(absn, _mm256_set1_ps(126), _CMP_GT_OQ);
    const __m256 u = _mm256_mul_ps(b, b);
    const __m256 hi = _mm256_fmadd_ps(_mm256_set1_ps(0x1.0e4020p-7f), b, _mm256_set1_ps(0x1.573e2ep-5f));
    const __m256 lo = _mm256_fmadd_ps(_mm256_set1_ps(0x1.555e66p-3f), b, _mm256_set1_ps(0x1.fffdb6p-2f));
    const __m256 j = _mm256_fmadd_ps(_mm256_fmadd_ps(hi, u, lo), u,
                                     _mm256_mul_ps(_mm256_set1_ps(0x1.ffffecp-1f), b));
    if (!_mm256_movemask_ps(big))
        return _mm256_fmadd_ps(j, k, k);
    const __m256i g = _mm256_and_si256(_mm256_castps_si256(_mm256_cmp_ps(n, _mm256_setzero_ps(), _CMP_LE_OQ)),
                                       _mm256_set1_epi32((int)0x82000000u));
    const __m256 zero = _mm256_cmp_ps(n, _mm256_set1_ps(-151), _CMP_LE_OQ);
    const __m256 inf = _mm256_cmp_ps(n, _mm256_set1_ps(192), _CMP_GT_OQ);
    const __m256 mid = _mm256_andnot_ps(_mm256_or_ps(zero, inf), big);     /* 126 < |n|, -151 < n <= 192 */
    const __m256 s1 = _mm256_blendv_ps(one, _mm256_castsi256_ps(_mm256_add_epi32(g, _mm256_set1_epi32(0x7f000000))), mid);
    const __m256 s2 = _mm256_blendv_ps(one, _mm256_castsi256_ps(_mm256_sub_epi32(e, g)), mid);
    const __m256 kn = _mm256_blendv_ps(k, one, big);
    const __m256 scaled = _mm256_mul_ps(_mm256_fmadd_ps(s2, j, s2), s1);
    const __m256 normal = _mm256_fmadd_ps(kn, j, kn);
    const __m256 r = _mm256_andnot_ps(zero, _mm256_blendv_ps(normal, scaled, mid));
    return _mm256_blendv_ps(r, _mm256_set1_ps(INFINITY), inf);
}

static inline __m256 silu8(__m256 x) {
    const __m256 e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), x));
    return _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0f), e));
}

static void swiglu_avx2(float *g, const float *u, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(g + i, _mm256_mul_ps(silu8(_mm256_loadu_ps(g + i)), _mm256_loadu_ps(u + i)));
    for (; i < n; i++) g[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

/* ---- rope -------------------------------------------------------------------- */

/* op_rope_fused: x0's products fused, as GCC contracts ggml's rotation on x86 */
static void rope_avx2(float *x, int32_t n_rot, int32_t mode, float pos, float freq_base, float freq_scale,
                      const float *ff, float mscale) {
    op_rope_fused(x, n_rot, mode, pos, freq_base, freq_scale, ff, mscale, 0);
}
static void rope_cs_avx2(float *x, int32_t n_rot, int32_t mode, const float *cs) {
    op_rope_cs_fused(x, n_rot, mode, cs, 0);
}

/* ---- reductions ---------------------------------------------------------------- */

#define hsum8 hsum_ps   /* the tiled GEMM's horizontal sum (simd_avx2.h) */

/* ggml_vec_dot_f16's reduction of its four accumulators. */
static inline float reduce4(__m256 s0, __m256 s1, __m256 s2, __m256 s3) {
    s0 = _mm256_add_ps(s0, s2);
    s1 = _mm256_add_ps(s1, s3);
    s0 = _mm256_add_ps(s0, s1);
    const __m128 t0 = _mm_add_ps(_mm256_castps256_ps128(s0), _mm256_extractf128_ps(s0, 1));
    const __m128 t1 = _mm_hadd_ps(t0, t0);
    return _mm_cvtss_f32(_mm_hadd_ps(t1, t1));
}

static inline __m256 ld16(const pyrt_fp16 *p) { return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p)); }

/* q . k for one cache row, batched shape (one accumulator, lanes d mod 8) */
static inline float dot_kq_batched(const pyrt_fp16 *k, const float *q, int32_t n) {
    __m256 acc = _mm256_setzero_ps();
    for (int32_t d = 0; d < n; d += 8) acc = _mm256_fmadd_ps(ld16(k + d), _mm256_loadu_ps(q + d), acc);
    return hsum8(acc);
}

/* q . k, single-token shape (ggml_vec_dot_f16) */
static inline float dot_kq_single(const pyrt_fp16 *k, const float *q, int32_t n) {
    const int32_t np = n & ~31;
    __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    for (int32_t d = 0; d < np; d += 32) {
        s0 = _mm256_fmadd_ps(ld16(k + d), _mm256_loadu_ps(q + d), s0);
        s1 = _mm256_fmadd_ps(ld16(k + d + 8), _mm256_loadu_ps(q + d + 8), s1);
        s2 = _mm256_fmadd_ps(ld16(k + d + 16), _mm256_loadu_ps(q + d + 16), s2);
        s3 = _mm256_fmadd_ps(ld16(k + d + 24), _mm256_loadu_ps(q + d + 24), s3);
    }
    double sum = reduce4(s0, s1, s2, s3);
    for (int32_t d = np; d < n; d++)
        sum += (double)(_cvtsh_ss(k[d]) * q[d]);
    return (float)sum;
}

/* ---- attention ----------------------------------------------------------------- */

/* Cache rows come from memory in token generation (the weights streamed
 * since the last token evicted them): fetch rows well ahead, as DRAM latency
 * is many rows' work (a prefetch past the end of the cache is harmless: it
 * never faults). SmolLM2, 4 sequences at depth 2000, one thread, Zen 5: a
 * decode step 38 ms with 8 rows ahead, 28 with 32. */
#define PF_AHEAD 32
static inline void prefetch_row(const pyrt_fp16 *p, int32_t n) {
    for (int32_t d = 0; d < n; d += 32) _mm_prefetch((const char *)(p + d), _MM_HINT_T0);
}
static inline void prefetch_row_l2(const pyrt_fp16 *p, int32_t n) {
    for (int32_t d = 0; d < n; d += 32) _mm_prefetch((const char *)(p + d), _MM_HINT_T1);
}

/* Softmax of one query's scores sc[first..last] (max mx), in place: sc[j]
 * becomes p_j, the probability rounded to f16 as llama.cpp stores it, as an
 * f32 (positions of the 8-groups around [first, last] 0). */
static void softmax_probs(float *sc, int32_t first, int32_t last, float mx) {
    /* exp in groups of 8 aligned at position 0 (masked positions are 0) */
    const int32_t g0 = first & ~7, g1 = (last + 8) & ~7;
    for (int32_t j = g0; j < first; j++) sc[j] = -INFINITY;
    for (int32_t j = last + 1; j < g1; j++) sc[j] = -INFINITY;
    double sum = 0.0;
    const __m256 vmax = _mm256_set1_ps(mx);
    for (int32_t j = g0; j < g1; j += 8) {
        __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(sc + j), vmax));
        /* exp8(-inf) is 0 already; make it explicit for masked lanes */
        e = _mm256_and_ps(e, _mm256_cmp_ps(_mm256_loadu_ps(sc + j), _mm256_set1_ps(-INFINITY), _CMP_NEQ_OQ));
        _mm256_storeu_ps(sc + j, e);
        sum += (double)hsum8(e);
    }
    const float inv = (float)(1.0 / sum);
    for (int32_t j = g0; j < g1; j += 8)
        _mm256_storeu_ps(sc + j, _mm256_cvtph_ps(_mm256_cvtps_ph(_mm256_mul_ps(_mm256_loadu_ps(sc + j),
                                                                               _mm256_set1_ps(inv)), 0)));
}

/* floats of one query's 32 value slots of n dims: one line more than 32 * n,
 * so that the slots of consecutive queries (32 * n * 4 bytes, a multiple of
 * 4 KiB for n = 32, 64, ...) do not alias in the store buffer's 4 KiB address
 * check (a guard: on a Zen 5 host it made no measurable difference) */
#define SLOTS(n) (32 * (size_t)(n) + 16)

/* The 32-slot reduction of the single-token order (ggml_vec_dot_f16's four
 * 8-lane accumulators over j mod 32, then reduce4), for 8 dims at a time:
 * s[l * ld] is slot l's vector */
static inline __m256 reduce_slots32(const float *s, int64_t ld) {
#define S(i) _mm256_loadu_ps(s + (int64_t)(i) * ld)
    __m256 y[8];
    for (int l = 0; l < 8; l++) y[l] = _mm256_add_ps(_mm256_add_ps(S(l), S(16 + l)), _mm256_add_ps(S(8 + l), S(24 + l)));
#undef S
    const __m256 t0 = _mm256_add_ps(y[0], y[4]), t1 = _mm256_add_ps(y[1], y[5]);
    const __m256 t2 = _mm256_add_ps(y[2], y[6]), t3 = _mm256_add_ps(y[3], y[7]);
    return _mm256_add_ps(_mm256_add_ps(t0, t1), _mm256_add_ps(t2, t3));
}

/* Softmax of one query's scores sc[first..last] (max mx) and its output
 * sum_j p_j v_j, as llama.cpp computes them for the query's shape (batched:
 * 8 value slots, else 32); sc is clobbered. */
static void softmax_pv_one(const pyrt_attn_args *a, float *sc, float mx, int batched) {
    const int32_t hd = a->head_dim, first = a->first, last = a->last;
    const int64_t st = a->stride;
    softmax_probs(sc, first, last, mx);

    /* out[d] = sum_j p_j v_j[d], accumulated in llama.cpp's lane structure:
     * batched: 8 slots (j mod 8); single token: 32 slots (j mod 32). Each slot
     * holds a vector over d, so this runs 8 dims per instruction. */
    const int nslot = batched ? 8 : 32;
    float *acc = a->acc;
    memset(acc, 0, sizeof(float) * (size_t)nslot * hd);
    for (int32_t j = first; j <= last; j++) {
        const float p = sc[j];
        if (p == 0.0f) continue;            /* adds exactly +0 */
        const pyrt_fp16 *vj = a->v + (int64_t)j * st;
        prefetch_row(vj + PF_AHEAD * st, hd);
        float *slot = acc + (size_t)(j & (nslot - 1)) * hd;   /* nslot: 8 or 32 */
        const __m256 pv = _mm256_set1_ps(p);
        int32_t d = 0;
        for (; d + 8 <= hd; d += 8)
            _mm256_storeu_ps(slot + d, _mm256_fmadd_ps(ld16(vj + d), pv, _mm256_loadu_ps(slot + d)));
        for (; d < hd; d++) slot[d] = fmaf(_cvtsh_ss(vj[d]), p, slot[d]);
    }
    int32_t d = 0;
    if (!batched)
        for (; d + 8 <= hd; d += 8) _mm256_storeu_ps(a->out + d, reduce_slots32(acc + d, hd));
    for (; d < hd; d++) {
        float r;
        if (batched) {
            const float *s = acc + d;
#define S(i) s[(size_t)(i) * hd]
            r = ((S(0) + S(4)) + (S(2) + S(6))) + ((S(1) + S(5)) + (S(3) + S(7)));
        } else {
            const float *s = acc + d;
            float y[8];
            for (int l = 0; l < 8; l++) y[l] = (S(l) + S(16 + l)) + (S(8 + l) + S(24 + l));
#undef S
            const float t0 = y[0] + y[4], t1 = y[1] + y[5], t2 = y[2] + y[6], t3 = y[3] + y[7];
            r = (t0 + t1) + (t2 + t3);
        }
        a->out[d] = r;
    }
}

/* slots[q][j mod 32][0 .. B) += p_qj * v[0 .. B) for the nh queries of one
 * kv head (slots of query q SLOTS(L) floats apart, positions L apart) */
static inline __attribute__((always_inline)) void pv_block(const pyrt_fp16 *v, const float *sc, int64_t R,
                                                           int32_t j, int32_t q0, int32_t nh, float *acc,
                                                           int32_t L, const int32_t B) {
    __m256 x[8];   /* B <= 64 */
    for (int32_t c = 0; c < B / 8; c++) x[c] = ld16(v + 8 * c);
    for (int32_t q = q0; q < q0 + nh; q++) {
        const float p = sc[(int64_t)q * R + j];
        if (p == 0.0f) continue;            /* adds exactly +0 */
        float *slot = acc + (size_t)q * SLOTS(L) + (size_t)(j & 31) * L;
        const __m256 pv = _mm256_set1_ps(p);
        for (int32_t c = 0; c < B / 8; c++)
            _mm256_storeu_ps(slot + 8 * c, _mm256_fmadd_ps(x[c], pv, _mm256_loadu_ps(slot + 8 * c)));
    }
}

/* pv_block for positions j and j + 32, which share slot j mod 32: each slot
 * vector loaded and stored once for both FMAs, in position order (v2: row
 * j + 32's segment); B <= 32 */
static inline __attribute__((always_inline)) void pv_block2(const pyrt_fp16 *v, const pyrt_fp16 *v2, const float *sc,
                                                            int64_t R, int32_t j, int32_t q0, int32_t nh, float *acc,
                                                            int32_t L, const int32_t B) {
    __m256 x[4], y[4];
    for (int32_t c = 0; c < B / 8; c++) {
        x[c] = ld16(v + 8 * c);
        y[c] = ld16(v2 + 8 * c);
    }
    for (int32_t q = q0; q < q0 + nh; q++) {
        const float p = sc[(int64_t)q * R + j], p2 = sc[(int64_t)q * R + j + 32];
        float *slot = acc + (size_t)q * SLOTS(L) + (size_t)(j & 31) * L;
        const __m256 pv = _mm256_set1_ps(p), pv2 = _mm256_set1_ps(p2);
        if (p != 0.0f && p2 != 0.0f) {
            for (int32_t c = 0; c < B / 8; c++)
                _mm256_storeu_ps(slot + 8 * c, _mm256_fmadd_ps(y[c], pv2, _mm256_fmadd_ps(x[c], pv,
                                                                                          _mm256_loadu_ps(slot + 8 * c))));
        } else if (p != 0.0f) {             /* a zero probability adds exactly +0: skipped */
            for (int32_t c = 0; c < B / 8; c++)
                _mm256_storeu_ps(slot + 8 * c, _mm256_fmadd_ps(x[c], pv, _mm256_loadu_ps(slot + 8 * c)));
        } else if (p2 != 0.0f) {
            for (int32_t c = 0; c < B / 8; c++)
                _mm256_storeu_ps(slot + 8 * c, _mm256_fmadd_ps(y[c], pv2, _mm256_loadu_ps(slot + 8 * c)));
        }
    }
}

/* one position (v2 == NULL) or the pair j, j + 32 of pv_slots' heads, dims in blocks of B */
static inline __attribute__((always_inline)) void pv_row(const pyrt_fp16 *vj, const pyrt_fp16 *vj2, const float *sc,
                                                         int64_t R, int32_t j, int32_t nkv, int32_t nh, int32_t hd,
                                                         float *acc, int32_t L, const int32_t B) {
    for (int32_t h = 0; h < nkv; h++)
        for (int32_t c0 = 0; c0 < L; c0 += B) {
            const pyrt_fp16 *v = vj + (int64_t)h * hd + c0;
            if (vj2) pv_block2(v, vj2 + (int64_t)h * hd + c0, sc, R, j, h * nh, nh, acc + c0, L, B);
            else pv_block(v, sc, R, j, h * nh, nh, acc + c0, L, B);
        }
}

/* The value slots [s0, s1) of the nkv * nh queries of one token over the
 * same positions (kv head h's queries h*nh .., their probabilities in score
 * rows sc + q*R from softmax_probs), dims [d0, d0 + L) of each head: slot
 * j mod 32 of softmax_pv_one's single-token order, each an FMA chain over
 * increasing j, of the positions j whose slot is in the range (runs of
 * s1 - s0 consecutive rows). Each V row segment is converted once for all its
 * head's queries; pf > 0: rows prefetched about pf ahead (whole runs of the
 * heads; with a part of the slots, in the next run). The blocks of 32
 * positions go in pairs, a slot's positions j and j + 32 in one step
 * (pv_block2). L: a multiple of 8, worked in blocks of 32, 16 or 8 dims.
 * Slots: query q's at a->acc + q * SLOTS(L), slot l's L floats l * L
 * further. */
static void pv_slots(const pyrt_attn_args *a, const float *sc, int64_t R, int32_t nkv, int32_t nh,
                     int32_t d0, int32_t L, int32_t s0, int32_t s1, int32_t pf) {
    const int32_t hd = a->head_dim, first = a->first, last = a->last, B = L % 32 == 0 ? 32 : L % 16 == 0 ? 16 : 8;
    const int32_t pd = s1 - s0 == 32 ? pf : 32 * ((pf + 31) / 32);   /* rows ahead within this range's runs */
    const int64_t st = a->stride;
    float *acc = a->acc;
    for (int32_t q = 0; q < nkv * nh; q++)
        memset(acc + (size_t)q * SLOTS(L) + (size_t)s0 * L, 0, sizeof(float) * (size_t)(s1 - s0) * L);
    /* blocks of 32 positions in pairs: a slot's positions j and j + 32 together */
    for (int32_t jb = first & ~31; jb <= last; jb += 64)
        for (int32_t s = s0; s < s1; s++) {
            const int32_t j = jb + s, j2 = j + 32;
            const int in1 = j >= first && j <= last, in2 = j2 <= last;   /* j2 >= jb + 32 > first */
            const pyrt_fp16 *vj = a->v + (int64_t)j * st + d0, *vj2 = vj + 32 * st;
            if (pf > 0 && (in1 || in2)) {
                prefetch_row(vj + (int64_t)pd * st, nkv * hd);
                prefetch_row(vj2 + (int64_t)pd * st, nkv * hd);
            }
            if (in1 && in2) {
                switch (B) {
                    case 32: pv_row(vj, vj2, sc, R, j, nkv, nh, hd, acc, L, 32); break;
                    case 16: pv_row(vj, vj2, sc, R, j, nkv, nh, hd, acc, L, 16); break;
                    default: pv_row(vj, vj2, sc, R, j, nkv, nh, hd, acc, L, 8); break;
                }
            } else if (in1 || in2) {
                const int32_t jj = in1 ? j : j2;
                const pyrt_fp16 *vv = in1 ? vj : vj2;
                switch (B) {
                    case 32: pv_row(vv, NULL, sc, R, jj, nkv, nh, hd, acc, L, 32); break;
                    case 16: pv_row(vv, NULL, sc, R, jj, nkv, nh, hd, acc, L, 16); break;
                    default: pv_row(vv, NULL, sc, R, jj, nkv, nh, hd, acc, L, 8); break;
                }
            }
        }
}

/* the outputs of queries [q0, q1), dims [d0, d0 + L) of each head, from
 * their 32 slots (pv_slots' layout) */
static void pv_reduce(const pyrt_attn_args *a, int32_t q0, int32_t q1, int32_t d0, int32_t L) {
    for (int32_t q = q0; q < q1; q++)
        for (int32_t d = 0; d < L; d += 8)
            _mm256_storeu_ps(a->out + (int64_t)q * a->head_dim + d0 + d,
                             reduce_slots32(a->acc + (size_t)q * SLOTS(L) + d, L));
}

/* The outputs of the nkv * nh queries of one token over the same positions,
 * dims [d0, d0 + L) of each head, each query in softmax_pv_one's
 * single-token order: all 32 slots (pv_slots), then reduce_slots32.
 * Slots: nkv * nh * SLOTS(L) floats of a->acc. */
static void pv_pass(const pyrt_attn_args *a, const float *sc, int64_t R, int32_t nkv, int32_t nh,
                    int32_t d0, int32_t L, int32_t pf) {
    pv_slots(a, sc, R, nkv, nh, d0, L, 0, 32, pf);
    pv_reduce(a, 0, nkv * nh, d0, L);
}

/* nh queries of one kv head: dims a slice at a time, so that their slots
 * (nh * SLOTS(slice) floats, at most PYRT_ATTN_ACC_MIN) stay in L1 */
static void pv_group_single(const pyrt_attn_args *a, const float *sc, int64_t R, int32_t nh) {
    const int32_t hd = a->head_dim;
    int32_t DC = hd % 64 == 0 ? 64 : 32;   /* hd % 32 == 0 here */
    while (DC > 8 && (int64_t)nh * SLOTS(DC) > PYRT_ATTN_ACC_MIN) DC /= 2;
    for (int32_t d0 = 0; d0 < hd; d0 += DC) pv_pass(a, sc, R, 1, nh, d0, DC, 0);
}

/* One query (the reference shape for the group kernel below). */
static void attn_one_avx2(const pyrt_attn_args *a) {
    const int32_t hd = a->head_dim, first = a->first, last = a->last;
    const int64_t st = a->stride;
    /* tiled GEMM needs head_dim % 8 == 0; llama.cpp falls back to vec_dot too */
    const int batched = a->batched && hd % 8 == 0;
    float *sc = a->scores;                 /* indexed by absolute position */

    /* q rounded to f16, kept as f32 in acc (free until the V pass) */
    float *qf = a->acc;
    for (int32_t d = 0; d < hd; d++) qf[d] = _cvtsh_ss(pyrt_fp32_to_fp16(a->q[d]));

    /* scores, scaled; max over the visible positions */
    float mx = -INFINITY;
    for (int32_t j = first; j <= last; j++) {
        const pyrt_fp16 *kj = a->k + (int64_t)j * st;
        prefetch_row(kj + PF_AHEAD * st, hd);
        prefetch_row_l2(a->v + (int64_t)j * st, hd);   /* for the value pass */
        const float s = pyrt_softcap((batched ? dot_kq_batched(kj, qf, hd) : dot_kq_single(kj, qf, hd)) * a->scale,
                                     a->softcap);
        sc[j] = s;
        if (s > mx) mx = s;
    }
    softmax_pv_one(a, sc, mx, batched);
}

/* ---- single-token numerics, the query heads of one kv head (one token) ---------
 * Each query's scores are attn_one_avx2's (dot_kq_single: four accumulators,
 * reduce4), with each K row converted once per pair of queries and the
 * horizontal reductions of 8 positions done together; softmax and values per
 * query as there. (SmolLM2, 3 heads a kv head, 4 sequences at depth ~220, 1
 * thread, Zen 4: decode step 16.0-16.2 vs 16.35-16.7 CPU ms.) */
#define GS_MAXH 16

/* reduce4's horizontal part of u[0..7] (each (s0+s2)+(s1+s3)): lane i is
 * position i's ((x0+x4)+(x1+x5))+((x2+x6)+(x3+x7)), paired as there */
static inline __m256 reduce4_x8(const __m256 u[8]) {
#define LOHI(a, b) _mm256_add_ps(_mm256_permute2f128_ps(a, b, 0x20), _mm256_permute2f128_ps(a, b, 0x31))
    const __m256 x01 = LOHI(u[0], u[1]), x23 = LOHI(u[2], u[3]), x45 = LOHI(u[4], u[5]), x67 = LOHI(u[6], u[7]);
#undef LOHI
    /* lanes: positions 0 2 4 6 | 1 3 5 7 */
    const __m256 h = _mm256_hadd_ps(_mm256_hadd_ps(x01, x23), _mm256_hadd_ps(x45, x67));
    return _mm256_permutevar8x32_ps(h, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

/* scale * q.k of queries qa (K rows from ka) and qb (from kb) at positions
 * j0 .. j0+n-1, as attn_group_single_avx2's tiles (SAME: ka == kb, one
 * conversion of each K row for both) */
static inline __attribute__((always_inline)) void score_pair8(const pyrt_fp16 *ka, const pyrt_fp16 *kb, int64_t st,
                                                              const float *qa, const float *qb, int32_t hd, int32_t n,
                                                              const int SAME, __m256 u[2][8]) {
    for (int32_t i = 0; i < 8; i++) {
        if (i >= n) {
            u[0][i] = u[1][i] = _mm256_setzero_ps();
            continue;
        }
        const pyrt_fp16 *ra = ka + (int64_t)i * st, *rb = kb + (int64_t)i * st;
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
        for (int32_t d = 0; d < hd; d += 32) {
            const __m256 k0 = ld16(ra + d), k1 = ld16(ra + d + 8), k2 = ld16(ra + d + 16), k3 = ld16(ra + d + 24);
            a0 = _mm256_fmadd_ps(k0, _mm256_loadu_ps(qa + d), a0);
            a1 = _mm256_fmadd_ps(k1, _mm256_loadu_ps(qa + d + 8), a1);
            a2 = _mm256_fmadd_ps(k2, _mm256_loadu_ps(qa + d + 16), a2);
            a3 = _mm256_fmadd_ps(k3, _mm256_loadu_ps(qa + d + 24), a3);
            const __m256 m0 = SAME ? k0 : ld16(rb + d), m1 = SAME ? k1 : ld16(rb + d + 8);
            const __m256 m2 = SAME ? k2 : ld16(rb + d + 16), m3 = SAME ? k3 : ld16(rb + d + 24);
            b0 = _mm256_fmadd_ps(m0, _mm256_loadu_ps(qb + d), b0);
            b1 = _mm256_fmadd_ps(m1, _mm256_loadu_ps(qb + d + 8), b1);
            b2 = _mm256_fmadd_ps(m2, _mm256_loadu_ps(qb + d + 16), b2);
            b3 = _mm256_fmadd_ps(m3, _mm256_loadu_ps(qb + d + 24), b3);
        }
        u[0][i] = _mm256_add_ps(_mm256_add_ps(a0, a2), _mm256_add_ps(a1, a3));
        u[1][i] = _mm256_add_ps(_mm256_add_ps(b0, b2), _mm256_add_ps(b1, b3));
    }
}

/* nq consecutive queries of hd dims rounded to f16 (kept as f32) into qf,
 * and their running maxima started */
static inline void round_queries(const float *q, float *qf, int32_t nq, int32_t hd, float *mx) {
    for (int64_t i = 0; i < (int64_t)nq * hd; i++) qf[i] = _cvtsh_ss(pyrt_fp32_to_fp16(q[i]));
    for (int32_t i = 0; i < nq; i++) mx[i] = -INFINITY;
}

/* the scaled (softcapped) scores of queries q, q+1 (just q unless TWO) at
 * positions j0 .. j0+n-1 from score_pair8's sums, into their score rows (R
 * apart), and the queries' running maxima */
static inline void store_scores8(const pyrt_attn_args *a, __m256 u[2][8], int two, int64_t R, int32_t q,
                                 int32_t j0, int32_t n, float *mx) {
    for (int h = 0; h <= two; h++) {
        float t[8], *sc = a->scores + (int64_t)(q + h) * R;
        const __m256 v = _mm256_mul_ps(reduce4_x8(u[h]), _mm256_set1_ps(a->scale));
        if (n == 8 && a->softcap == 0.0f) {   /* a whole tile, no softcap: in vector form */
            _mm256_storeu_ps(sc + j0, v);
            /* NaN lanes keep the maximum (max_ps's second operand), as the scalar test skips them */
            mx[q + h] = hmax_ps(_mm256_max_ps(v, _mm256_set1_ps(mx[q + h])));
            continue;
        }
        _mm256_storeu_ps(t, v);
        for (int32_t i = 0; i < n; i++) {
            const float s = pyrt_softcap(t[i], a->softcap);
            sc[j0 + i] = s;
            if (s > mx[q + h]) mx[q + h] = s;
        }
    }
}

/* n_head (2..GS_MAXH) queries of one token, single-token shape, head_dim % 32 == 0 */
static void attn_group_single_avx2(const pyrt_attn_args *a) {
    const int32_t nh = a->n_head, hd = a->head_dim;
    const pyrt_attn_args o0 = pyrt_attn_query(a, 0, 0);
    const int32_t first = o0.first, last = o0.last;
    const int64_t st = a->stride, R = ((int64_t)last + 8) & ~(int64_t)7;   /* score row of query g: g*R */
    float *qf = a->acc;                                  /* [nh][hd]: q rounded to f16, as f32 */
    float mx[GS_MAXH];
    round_queries(a->q, qf, nh, hd, mx);
    for (int32_t j0 = first; j0 <= last; j0 += 8) {
        const int32_t n = last - j0 + 1 < 8 ? last - j0 + 1 : 8;
        for (int32_t i = 0; i < n; i++) {   /* K ahead; V for the value pass below */
            prefetch_row(a->k + (int64_t)(j0 + i + PF_AHEAD) * st, hd);
            prefetch_row_l2(a->v + (int64_t)(j0 + i) * st, hd);
        }
        for (int32_t g = 0; g < nh; g += 2) {            /* queries g, g+1 (g alone if last) */
            const int two = g + 1 < nh;
            __m256 u[2][8];
            score_pair8(a->k + (int64_t)j0 * st, a->k + (int64_t)j0 * st, st, qf + (int64_t)g * hd,
                        qf + (int64_t)(g + two) * hd, hd, n, 1, u);
            store_scores8(a, u, two, R, g, j0, n, mx);
        }
    }
    for (int32_t g = 0; g < nh; g++) softmax_probs(a->scores + (int64_t)g * R, first, last, mx[g]);
    pv_group_single(&o0, a->scores, R, nh);                /* acc (qf) is free from here */
}

/* ---- single-token numerics, several consecutive kv heads (one token) ------------
 * A thread's share of a token's heads in one pass over the cache: per position
 * the K (then V) segment of all its kv heads is one contiguous run of the
 * cache row, where one head's segment alone is a short piece of a row
 * kv_dim * 2 bytes long, so that a long context reads DRAM in long runs (and
 * the prefetches cover whole runs). Each query's arithmetic is exactly
 * attn_one_avx2's: scores as attn_group_single_avx2 (query pairs, 8
 * positions reduced together), softmax_probs, then the 32 value slots of
 * every query (L2-resident: nq * SLOTS(head_dim) floats), each an FMA chain
 * over increasing j, reduced by reduce_slots32. */
#define AH_MAXQ 64
#define AH_PF_BYTES 16384   /* runs prefetched ahead, in bytes (8 to 64 rows) */
static void attn_head_avx2(const pyrt_attn_args *a);

/* cache rows to prefetch ahead for runs of nkv heads: about AH_PF_BYTES, 8 to 64 rows */
static int32_t heads_pf(int32_t nkv, int32_t hd) {
    const int32_t pf = AH_PF_BYTES / (nkv * hd * 2);
    return pf < 8 ? 8 : pf > 64 ? 64 : pf;
}

/* the scores of the nkv * nh queries (qf: [nq][hd], rounded) at positions
 * [j_lo, j_hi] into their rows (R apart), and their running maxima mx */
static void heads_scores(const pyrt_attn_args *a, const float *qf, int32_t nkv, int32_t nh, int32_t j_lo,
                         int32_t j_hi, int64_t R, int32_t pf, float *mx) {
    const int32_t hd = a->head_dim, nq = nkv * nh, seg = nkv * hd;   /* elements of a row's run */
    const int64_t st = a->stride;
    const int32_t lpr = (seg + 31) / 32, npair = (nq + 1) / 2;   /* cache lines of a run; query pairs */
    for (int32_t j0 = j_lo; j0 <= j_hi; j0 += 8) {
        const int32_t n = j_hi - j0 + 1 < 8 ? j_hi - j0 + 1 : 8;
        int32_t l = 0;                                   /* lines of the runs pf rows ahead, spread over the pairs */
        for (int32_t q = 0; q < nq; q += 2) {            /* queries q, q+1 (q alone if last) */
            for (const int32_t le = (int32_t)((int64_t)n * lpr * (q / 2 + 1) / npair); l < le; l++)
                _mm_prefetch((const char *)(a->k + (int64_t)(j0 + pf + l / lpr) * st + (l % lpr) * 32), _MM_HINT_T0);
            const int two = q + 1 < nq;
            const int32_t qb = q + two;
            const pyrt_fp16 *ka = a->k + (int64_t)j0 * st + (int64_t)(q / nh) * hd;
            const pyrt_fp16 *kb = a->k + (int64_t)j0 * st + (int64_t)(qb / nh) * hd;
            __m256 u[2][8];
            if (ka == kb) score_pair8(ka, ka, st, qf + (int64_t)q * hd, qf + (int64_t)qb * hd, hd, n, 1, u);
            else          score_pair8(ka, kb, st, qf + (int64_t)q * hd, qf + (int64_t)qb * hd, hd, n, 0, u);
            store_scores8(a, u, two, R, q, j0, n, mx);
        }
    }
}

/* the largest of sc[first..last], NaN skipped (as store_scores8's running
 * maximum; a +-0 maximum gives the same differences either way) */
static float row_max(const float *sc, int32_t first, int32_t last) {
    __m256 vm = _mm256_set1_ps(-INFINITY);
    int32_t j = first;
    for (; j + 7 <= last; j += 8) vm = _mm256_max_ps(_mm256_loadu_ps(sc + j), vm);
    float mx = hmax_ps(vm);
    for (; j <= last; j++) if (sc[j] > mx) mx = sc[j];
    return mx;
}

static void attn_heads_avx2(const pyrt_attn_args *a) {
    const int32_t nkv = a->n_kv > 1 ? a->n_kv : 1, nh = a->n_head > 1 ? a->n_head : 1, nq = nkv * nh;
    const int32_t hd = a->head_dim;
    if (nkv == 1 || a->batched || a->n_tok > 1 || hd % 32 != 0 || nq > AH_MAXQ) {
        for (int32_t h = 0; h < nkv; h++) {          /* one kv head at a time */
            pyrt_attn_args o = *a;
            o.k += (int64_t)h * hd;
            o.v += (int64_t)h * hd;
            o.q += (int64_t)h * nh * hd;
            o.out += (int64_t)h * nh * hd;
            o.n_kv = 1;
            attn_head_avx2(&o);
        }
        return;
    }
    const pyrt_attn_args o0 = pyrt_attn_query(a, 0, 0);
    const int32_t first = o0.first, last = o0.last;
    const int64_t R = ((int64_t)last + 8) & ~(int64_t)7;   /* score row of query q: q*R */
    const int32_t pf = heads_pf(nkv, hd);
    float *qf = a->acc;                                  /* [nq][hd]: q rounded to f16, as f32 */
    float mx[AH_MAXQ];
    round_queries(a->q, qf, nq, hd, mx);
    heads_scores(a, qf, nkv, nh, first, last, R, pf, mx);
    for (int32_t q = 0; q < nq; q++) softmax_probs(a->scores + (int64_t)q * R, first, last, mx[q]);
    pv_pass(&o0, a->scores, R, nkv, nh, 0, hd, pf);       /* o0: first within the window; acc (qf) is free from here */
}

/* attn_heads_avx2's work for one token over a long context, shared by the
 * threads, in four phases that the caller separates with barriers; each
 * phase is cut into n equal parts, and a call computes part i (a thread may
 * take several):
 *   0: the scores of every query at part i's positions, whole cache rows
 *      (score rows R apart in a->scores, shared by the parts);
 *   1: softmax of part i's queries (the row's maximum, then softmax_probs);
 *   2: the values. With several queries a kv head: part i's dims of every
 *      head, a head at a time (its queries share each converted V segment,
 *      and their slots stay in L1), into the outputs; slots in a->acc. With
 *      one: part i's value slots (j mod 32 in [32i/n, 32(i+1)/n), n <= 32)
 *      of every query and dim into a->slots, so that each part reads whole
 *      cache rows (by heads or dims, each part reads a strided piece of every
 *      row, and each core's prefetchers fetched the rest of the rows too);
 *   3: with one query a kv head, the outputs of part i's queries from their
 *      slots (pv_reduce).
 * Each query's arithmetic is attn_heads_avx2's: every score, probability and
 * slot is computed once, by one call, in the same order. */
static void attn_heads_split_avx2(const pyrt_attn_args *a, int phase, int part, int n_part) {
    const int32_t nkv = a->n_kv > 1 ? a->n_kv : 1, nh = a->n_head > 1 ? a->n_head : 1, nq = nkv * nh;
    const int32_t hd = a->head_dim;
    const pyrt_attn_args o0 = pyrt_attn_query(a, 0, 0);
    const int32_t first = o0.first, last = o0.last;
    const int64_t R = ((int64_t)last + 8) & ~(int64_t)7;
    const int32_t pf = heads_pf(nkv, hd);
    if (phase == 0) {   /* positions in runs of 8 from first */
        const int32_t n8 = (last - first + 8) / 8;
        const int32_t j0 = first + 8 * (int32_t)((int64_t)n8 * part / n_part);
        const int32_t j1 = first + 8 * (int32_t)((int64_t)n8 * (part + 1) / n_part) - 1;
        if (j0 > last || j1 < j0) return;
        float *qf = a->acc, mx[AH_MAXQ];
        round_queries(a->q, qf, nq, hd, mx);
        heads_scores(a, qf, nkv, nh, j0, j1 < last ? j1 : last, R, pf, mx);
    } else if (phase == 1) {
        for (int32_t q = nq * part / n_part; q < nq * (part + 1) / n_part; q++) {
            float *row = a->scores + (int64_t)q * R;
            softmax_probs(row, first, last, row_max(row, first, last));
        }
    } else if (phase == 2 && nh > 1) {   /* dims in runs of 8, passes of at most 64, a head at a time */
        const int32_t n8 = hd / 8;
        for (int32_t d = 8 * (n8 * part / n_part), d1 = 8 * (n8 * (part + 1) / n_part); d < d1; d += 64)
            for (int32_t h = 0; h < nkv; h++) {
                pyrt_attn_args oh = o0;
                oh.v += (int64_t)h * hd;
                oh.out += (int64_t)h * nh * hd;
                pv_pass(&oh, a->scores + (int64_t)h * nh * R, R, 1, nh, d, d1 - d < 64 ? d1 - d : 64, pf);
            }
    } else if (phase == 2) {            /* slots */
        pyrt_attn_args os = o0;
        os.acc = a->slots;
        const int32_t s0 = 32 * part / n_part, s1 = 32 * (part + 1) / n_part;
        if (s1 > s0) pv_slots(&os, a->scores, R, nkv, nh, 0, hd, s0, s1, pf);
    } else if (phase == 3 && nh == 1) {
        pyrt_attn_args os = o0;
        os.acc = a->slots;
        pv_reduce(&os, nq * part / n_part, nq * (part + 1) / n_part, 0, hd);
    }
}

/* ---- attention for a group of queries sharing a kv head (batched shape) ---------
 * Each query gets exactly attn_one_avx2's arithmetic; what changes is which
 * loads are shared and how many independent chains are in flight:
 *   - q is rounded to f16 once per query, kept as f32;
 *   - scores come in tiles of 4 positions x 2 queries (each K row converted
 *     once per tile), the 8 dot products summed horizontally together;
 *   - V is converted to f32 once per tile of positions x 32 dims for all
 *     queries, and two queries x 32 dims of one slot (j mod 8) run in
 *     registers, each slot still an FMA chain over increasing j. */

/* The horizontal sums of v0..v7 as one vector, each paired exactly as hsum_ps:
 * ((x0+x4)+(x2+x6))+((x1+x5)+(x3+x7)). */
static inline __m256 hsum_ps_x8(__m256 v0, __m256 v1, __m256 v2, __m256 v3,
                                __m256 v4, __m256 v5, __m256 v6, __m256 v7) {
#define LOHI(a, b) _mm256_add_ps(_mm256_permute2f128_ps(a, b, 0x20), _mm256_permute2f128_ps(a, b, 0x31))
    const __m256 y04 = LOHI(v0, v4), y15 = LOHI(v1, v5), y26 = LOHI(v2, v6), y37 = LOHI(v3, v7);
#undef LOHI
    const __m256 x = _mm256_add_ps(_mm256_shuffle_ps(y04, y15, 0x44), _mm256_shuffle_ps(y04, y15, 0xEE));
    const __m256 y = _mm256_add_ps(_mm256_shuffle_ps(y26, y37, 0x44), _mm256_shuffle_ps(y26, y37, 0xEE));
    return _mm256_hadd_ps(x, y);
}

/* scale * q.k for queries qa, qb (f32 values of f16) at the 4 cache rows from
 * k: ra[0..4) for qa, rb[0..4) for qb (dot_kq_batched's sequence each). */
static inline void score_tile_4x2(const pyrt_fp16 *k, int64_t st, const float *qa, const float *qb,
                                  int32_t hd, __m256 scale, float *ra, float *rb) {
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
    for (int32_t d = 0; d < hd; d += 8) {
        const __m256 va = _mm256_loadu_ps(qa + d), vb = _mm256_loadu_ps(qb + d);
        __m256 kr = ld16(k + d);
        a0 = _mm256_fmadd_ps(kr, va, a0); b0 = _mm256_fmadd_ps(kr, vb, b0);
        kr = ld16(k + st + d);
        a1 = _mm256_fmadd_ps(kr, va, a1); b1 = _mm256_fmadd_ps(kr, vb, b1);
        kr = ld16(k + 2 * st + d);
        a2 = _mm256_fmadd_ps(kr, va, a2); b2 = _mm256_fmadd_ps(kr, vb, b2);
        kr = ld16(k + 3 * st + d);
        a3 = _mm256_fmadd_ps(kr, va, a3); b3 = _mm256_fmadd_ps(kr, vb, b3);
    }
    const __m256 s = _mm256_mul_ps(hsum_ps_x8(a0, a1, a2, a3, b0, b1, b2, b3), scale);
    _mm_storeu_ps(ra, _mm256_castps256_ps128(s));
    _mm_storeu_ps(rb, _mm256_extractf128_ps(s, 1));
}

/* sc[i*R + j] = scale * q_i.k_j for queries i < nq (qf: [nq][hd]), j in [lo, hi] */
static __attribute__((noinline)) void attn_scores(float *sc, int64_t R, const pyrt_fp16 *k, int64_t st, const float *qf,
                        int32_t nq, int32_t hd, int32_t lo, int32_t hi, float scale) {
    const __m256 vscale = _mm256_set1_ps(scale);
    int32_t j = lo;
    for (; j + 3 <= hi; j += 4) {
        const pyrt_fp16 *kj = k + (int64_t)j * st;
        for (int32_t i = 0; i < nq; i += 2) {
            const int32_t i2 = i + 1 < nq ? i + 1 : i;
            score_tile_4x2(kj, st, qf + (int64_t)i * hd, qf + (int64_t)i2 * hd, hd, vscale,
                           sc + (int64_t)i * R + j, sc + (int64_t)i2 * R + j);
        }
    }
    for (; j <= hi; j++)
        for (int32_t i = 0; i < nq; i++)
            sc[(int64_t)i * R + j] = dot_kq_batched(k + (int64_t)j * st, qf + (int64_t)i * hd, hd) * scale;
}

/* Softmax of the nr rows at row0 + r*R (by absolute position), all over
 * [first, last], each as attn_one_avx2, leaving the f16-rounded
 * probabilities as f32 in [base, end) (0 outside [first, last]). Rows are
 * done together so their serial double sums overlap. */
#define SM_ROWS 4
/* n (1..SM_ROWS) rows from row0; inlined with a constant n so the sums stay in registers */
static inline __attribute__((always_inline)) void softmax_rows_n(float *row0, int64_t R, const int32_t n,
                                                                 int32_t first, int32_t last, int32_t base, int32_t end) {
    const int32_t g0 = first & ~7, g1 = (last + 8) & ~7;
    float *rows[SM_ROWS];
    __m256 vmax[SM_ROWS];
    double sum[SM_ROWS];
    for (int32_t r = 0; r < n; r++) {
        float *row = rows[r] = row0 + (int64_t)r * R;
        for (int32_t j = g0; j < first; j++) row[j] = -INFINITY;
        for (int32_t j = last + 1; j < g1; j++) row[j] = -INFINITY;
        /* max: NaN scores are skipped, as the scalar `s > mx`; a +-0
         * maximum gives the same differences either way */
        __m256 vm = _mm256_set1_ps(-INFINITY);
        for (int32_t j = g0; j < g1; j += 8) vm = _mm256_max_ps(_mm256_loadu_ps(row + j), vm);
        vmax[r] = _mm256_set1_ps(hmax_ps(vm));
        sum[r] = 0.0;
    }
    for (int32_t j = g0; j < g1; j += 8)
        for (int32_t r = 0; r < n; r++) {
            const __m256 x = _mm256_loadu_ps(rows[r] + j);
            __m256 e = exp8(_mm256_sub_ps(x, vmax[r]));
            e = _mm256_and_ps(e, _mm256_cmp_ps(x, _mm256_set1_ps(-INFINITY), _CMP_NEQ_OQ));
            _mm256_storeu_ps(rows[r] + j, e);
            sum[r] += (double)hsum8(e);
        }
    for (int32_t r = 0; r < n; r++) {
        float *row = rows[r];
        const __m256 inv = _mm256_set1_ps((float)(1.0 / sum[r]));
        for (int32_t j = g0; j < g1; j += 8)
            _mm256_storeu_ps(row + j, _mm256_cvtph_ps(_mm256_cvtps_ph(_mm256_mul_ps(_mm256_loadu_ps(row + j), inv), 0)));
        memset(row + base, 0, sizeof(float) * (size_t)(g0 - base));
        memset(row + g1, 0, sizeof(float) * (size_t)(end - g1));
    }
}

static __attribute__((noinline)) void softmax_rows(float *row0, int64_t R, int32_t nr, int32_t first, int32_t last,
                                                   int32_t base, int32_t end) {
    for (int32_t r0 = 0; r0 < nr; r0 += SM_ROWS) {
        float *rows = row0 + (int64_t)r0 * R;
        switch (nr - r0 < SM_ROWS ? nr - r0 : SM_ROWS) {
        case 1: softmax_rows_n(rows, R, 1, first, last, base, end); break;
        case 2: softmax_rows_n(rows, R, 2, first, last, base, end); break;
        case 3: softmax_rows_n(rows, R, 3, first, last, base, end); break;
        default: softmax_rows_n(rows, R, SM_ROWS, first, last, base, end); break;
        }
    }
}

#define PV_D 32     /* dims per V tile (4 chunks of 8)  */
#define PV_S 128    /* positions per V tile (16 KiB f32; 256 filled L1 with the probability
                     * rows and slots: 5-8 % slower on Zen 3 at head_dim 64-256) */

/* The 8 slots of queries a and b (sla/slb: [8][PV_D]) over the tile's positions
 * [p0, p1) (p0 % 8 == 0) from vf [p1 - p0][PV_D], probabilities pa/pb. */
static inline void pv_tile_pair(float *sla, float *slb, const float *pa, const float *pb,
                                const float *vf, int32_t p0, int32_t p1) {
    for (int32_t k = 0; k < 8; k++) {
        float *sa = sla + k * PV_D, *sb = slb + k * PV_D;
        __m256 a0 = _mm256_load_ps(sa), a1 = _mm256_load_ps(sa + 8), a2 = _mm256_load_ps(sa + 16), a3 = _mm256_load_ps(sa + 24);
        __m256 b0 = _mm256_load_ps(sb), b1 = _mm256_load_ps(sb + 8), b2 = _mm256_load_ps(sb + 16), b3 = _mm256_load_ps(sb + 24);
        for (int32_t j = p0 + k; j < p1; j += 8) {
            const float *v = vf + (int64_t)(j - p0) * PV_D;
            __m256 v0 = _mm256_load_ps(v), v1 = _mm256_load_ps(v + 8), v2 = _mm256_load_ps(v + 16), v3 = _mm256_load_ps(v + 24);
            /* one load per value for both queries (GCC would fold each into both FMAs) */
            __asm__("" : "+x"(v0), "+x"(v1), "+x"(v2), "+x"(v3));
            const __m256 x = _mm256_broadcast_ss(pa + j), y = _mm256_broadcast_ss(pb + j);
            a0 = _mm256_fmadd_ps(v0, x, a0); b0 = _mm256_fmadd_ps(v0, y, b0);
            a1 = _mm256_fmadd_ps(v1, x, a1); b1 = _mm256_fmadd_ps(v1, y, b1);
            a2 = _mm256_fmadd_ps(v2, x, a2); b2 = _mm256_fmadd_ps(v2, y, b2);
            a3 = _mm256_fmadd_ps(v3, x, a3); b3 = _mm256_fmadd_ps(v3, y, b3);
        }
        _mm256_store_ps(sa, a0); _mm256_store_ps(sa + 8, a1); _mm256_store_ps(sa + 16, a2); _mm256_store_ps(sa + 24, a3);
        _mm256_store_ps(sb, b0); _mm256_store_ps(sb + 8, b1); _mm256_store_ps(sb + 16, b2); _mm256_store_ps(sb + 24, b3);
    }
}

/* The same for one query and any dn (multiple of 8), skipping zero
 * probabilities as attn_one_avx2 does (sl: [8][PV_D]). */
static inline void pv_tile_one(float *sl, const float *p, const float *vf, int32_t dn, int32_t p0, int32_t p1) {
    for (int32_t c = 0; c < dn; c += 8)
        for (int32_t j = p0; j < p1; j++)
            if (p[j] != 0.0f) {
                float *s = sl + (j & 7) * PV_D + c;
                _mm256_store_ps(s, _mm256_fmadd_ps(_mm256_load_ps(vf + (int64_t)(j - p0) * PV_D + c),
                                                   _mm256_set1_ps(p[j]), _mm256_load_ps(s)));
            }
}

/* vf[j][0..dn) = v[j*st + 0..dn) as f32 for j < n; returns a vector with a
 * NaN lane if any value is inf or NaN */
static inline __m256 v_tile_f32(float *vf, const pyrt_fp16 *v, int64_t st, int32_t n, int32_t dn) {
    __m256 nonfinite = _mm256_setzero_ps();
    for (int32_t j = 0; j < n; j++)
        for (int32_t c = 0; c < dn; c += 8) {
            const __m256 x = ld16(v + (int64_t)j * st + c);
            nonfinite = _mm256_or_ps(nonfinite, _mm256_sub_ps(x, x));
            _mm256_store_ps(vf + (int64_t)j * PV_D + c, x);
        }
    return nonfinite;
}

/* out_i = sum_j p_ij v_j for all queries of a group (probability rows over
 * [base, end), zero outside each query's range), in 8 slots (j mod 8) per
 * dimension combined in the batched order. slots: [nq][8][PV_D]. */
static __attribute__((noinline)) void attn_pv_group(const pyrt_attn_args *a, const float *sc, int64_t R, int32_t base, int32_t end,
                          float *slots, float *vf) {
    const int32_t nh = a->n_head > 1 ? a->n_head : 1, nq = (a->n_tok > 1 ? a->n_tok : 1) * nh;
    const int32_t hd = a->head_dim, hi = a->last + nq / nh - 1;
    const int64_t st = a->stride;
    for (int32_t d0 = 0; d0 < hd; d0 += PV_D) {
        const int32_t dn = hd - d0 < PV_D ? hd - d0 : PV_D;
        memset(slots, 0, sizeof(float) * (size_t)nq * 8 * PV_D);
        for (int32_t p0 = base; p0 < end; p0 += PV_S) {
            const int32_t p1 = end - p0 < PV_S ? end : p0 + PV_S;
            /* V tile to f32; rows past every query's last are zero */
            const int32_t jv = p1 <= hi ? p1 : hi + 1;
            const __m256 nonfinite = dn == PV_D ? v_tile_f32(vf, a->v + (int64_t)p0 * st + d0, st, jv - p0, PV_D)
                                                : v_tile_f32(vf, a->v + (int64_t)p0 * st + d0, st, jv - p0, dn);
            if (jv < p1) memset(vf + (int64_t)(jv - p0) * PV_D, 0, sizeof(float) * (size_t)(p1 - jv) * PV_D);
            /* A zero probability adds exactly nothing to a slot, so the pair
             * kernel need not skip it: slots start at +0 and never become -0
             * (products of nonzero f16 values are multiples of 2^-48, so no
             * nonzero sum rounds to zero), unless the value is inf or NaN. */
            const int finite = !_mm256_movemask_ps(_mm256_cmp_ps(nonfinite, nonfinite, _CMP_UNORD_Q));
            if (finite && dn == PV_D)
                for (int32_t i = 0; i < nq; i += 2) {
                    const int32_t i2 = i + 1 < nq ? i + 1 : i;    /* an odd one pairs with itself */
                    pv_tile_pair(slots + (size_t)i * 8 * PV_D, slots + (size_t)i2 * 8 * PV_D,
                                 sc + (int64_t)i * R, sc + (int64_t)i2 * R, vf, p0, p1);
                }
            else
                for (int32_t i = 0; i < nq; i++)
                    pv_tile_one(slots + (size_t)i * 8 * PV_D, sc + (int64_t)i * R, vf, dn, p0, p1);
        }
        for (int32_t i = 0; i < nq; i++) {
            const float *sl = slots + (size_t)i * 8 * PV_D;
            float *out = a->out + (int64_t)(i / nh) * a->q_stride + (int64_t)(i % nh) * hd + d0;
            for (int32_t c = 0; c < dn; c += 8) {
#define S(k) _mm256_load_ps(sl + (k) * PV_D + c)
                const __m256 r = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(S(0), S(4)), _mm256_add_ps(S(2), S(6))),
                                               _mm256_add_ps(_mm256_add_ps(S(1), S(5)), _mm256_add_ps(S(3), S(7))));
#undef S
                _mm256_storeu_ps(out + c, r);
            }
        }
    }
}

static void attn_head_avx2(const pyrt_attn_args *a) {
    const int32_t nt = a->n_tok > 1 ? a->n_tok : 1, nh = a->n_head > 1 ? a->n_head : 1, nq = nt * nh;
    const int32_t hd = a->head_dim;
    if (nq == 1 || !a->batched || hd % 8 != 0) {
        if (nt == 1 && nh > 1 && nh <= GS_MAXH && !a->batched && hd % 32 == 0) {
            attn_group_single_avx2(a);
            return;
        }
        for (int32_t t = 0; t < nt; t++)
            for (int32_t g = 0; g < nh; g++) {
                const pyrt_attn_args o = pyrt_attn_query(a, t, g);
                attn_one_avx2(&o);
            }
        return;
    }
    /* positions [lo, hi] cover every query; score rows of R from base */
    const int32_t lo = pyrt_attn_query(a, 0, 0).first, hi = a->last + nt - 1;
    const int32_t base = lo & ~7, R = ((hi + 8) & ~7) - base;
    float *qf = a->acc;                           /* [nq][hd]: q rounded to f16, as f32 */
    float *slots = (float *)(((uintptr_t)(qf + (int64_t)nq * hd) + 31) & ~(uintptr_t)31);   /* [nq][8][PV_D] */
    float vf[PV_S * PV_D] __attribute__((aligned(32)));
    for (int32_t i = 0; i < nq; i++) {
        const float *q = a->q + (int64_t)(i / nh) * a->q_stride + (int64_t)(i % nh) * hd;
        float *dst = qf + (int64_t)i * hd;
        for (int32_t d = 0; d < hd; d += 8) {
            const __m256 x = _mm256_loadu_ps(q + d);
            if (_mm256_movemask_ps(_mm256_cmp_ps(x, x, _CMP_UNORD_Q)))     /* NaN payloads: as the scalar */
                for (int32_t e = d; e < d + 8; e++) dst[e] = _cvtsh_ss(pyrt_fp32_to_fp16(q[e]));
            else
                _mm256_storeu_ps(dst + d, _mm256_cvtph_ps(_mm256_cvtps_ph(x, 0)));
        }
    }
    float *sc = a->scores - base;                 /* row i at sc + i*R, by absolute position */
    attn_scores(sc, R, a->k, a->stride, qf, nq, hd, lo, hi, a->scale);
    for (int32_t t = 0; t < nt; t++) {
        const pyrt_attn_args o = pyrt_attn_query(a, t, 0);
        if (a->softcap != 0.0f)
            for (int32_t g = 0; g < nh; g++)
                for (int32_t j = o.first; j <= o.last; j++) {
                    float *s = sc + (int64_t)(t * nh + g) * R + j;
                    *s = pyrt_softcap(*s, a->softcap);
                }
        softmax_rows(sc + (int64_t)t * nh * R, R, nh, o.first, o.last, base, base + R);
    }
    attn_pv_group(a, sc, R, base, base + R, slots, vf);
}

/* ---- attention over a quantized cache (attn_head_fa) -----------------------------
 * generic/ops.c's attention_fa_one (llama.cpp's flash-attention order, which
 * its AVX2 build runs with the same element-wise steps in 8 lanes) with the
 * element-wise steps vectorized: each lane rounds exactly as the scalar step
 * does. A Q8_0 / Q4_0 V row is scaled straight from its blocks (q*d is exact
 * in f32, so it equals the dequantized row the scalar kernel reads). */

/* block i of a Q8_0 / Q4_0 V row as 4 x 8 floats q * d (exact in f32: the
 * dequantized values; Q4_0's low nibbles are values 0..15, high 16..31) */
static inline __attribute__((always_inline)) void v_block_f32(const uint8_t *v, int32_t tv, int32_t i, __m256 x[4]) {
    if (tv == PYRT_TYPE_Q8_0) {
        const block_q8_0 *b = (const block_q8_0 *)v + i;
        const __m256 dd = _mm256_set1_ps(pyrt_fp16_to_fp32(b->d));
        for (int c = 0; c < 4; c++) {
            const __m256i q = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(b->qs + 8 * c)));
            x[c] = _mm256_mul_ps(_mm256_cvtepi32_ps(q), dd);
        }
    } else {
        const block_q4_0 *b = (const block_q4_0 *)v + i;
        const __m128i m4 = _mm_set1_epi8(0x0F), off = _mm_set1_epi8(8);
        const __m256 dd = _mm256_set1_ps(pyrt_fp16_to_fp32(b->d));
        const __m128i raw = _mm_loadu_si128((const __m128i *)b->qs);
        const __m128i lo = _mm_sub_epi8(_mm_and_si128(raw, m4), off);
        const __m128i hi = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(raw, 4), m4), off);
        const __m128i parts[4] = { lo, _mm_srli_si128(lo, 8), hi, _mm_srli_si128(hi, 8) };
        for (int c = 0; c < 4; c++)
            x[c] = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(parts[c])), dd);
    }
}

/* vkq[0..hd) += v * vs for one V row of type tv */
static inline void fa_mad_v(float *vkq, pyrt_fp16 *vkq16, const uint8_t *v, int32_t tv, int32_t hd, float vs) {
    const __m256 vv = _mm256_set1_ps(vs);
    if (tv == PYRT_TYPE_F16) {
        const pyrt_fp16 *x = (const pyrt_fp16 *)v;
        for (int32_t d = 0; d < hd; d += 8) {
            const __m256 y = _mm256_fmadd_ps(ld16(x + d), vv, ld16(vkq16 + d));
            _mm_storeu_si128((__m128i *)(vkq16 + d), _mm256_cvtps_ph(y, 0));
        }
    } else {                                         /* Q8_0 / Q4_0: 32 values a block */
        for (int32_t i = 0; i < hd / 32; i++) {
            __m256 x[4];
            v_block_f32(v, tv, i, x);
            float *y = vkq + i * 32;
            for (int c = 0; c < 4; c++)
                _mm256_storeu_ps(y + 8 * c, _mm256_fmadd_ps(x[c], vv, _mm256_loadu_ps(y + 8 * c)));
        }
    }
}

static void attn_fa_one_avx2(const pyrt_attn_args *a) {
    const int32_t hd = a->head_dim, tv = a->type_v;
    float *vkq = a->acc;                                       /* scratch as generic/ops.c */
    pyrt_fp16 *vkq16 = (pyrt_fp16 *)(a->acc + 2 * (int64_t)hd);
    void *qq = a->acc + 3 * (int64_t)hd;
    const float scale = a->softcap != 0.0f ? a->scale / a->softcap : a->scale;
    const uint8_t *kq = a->kq, *vq = a->vq;
    /* an F16 K: llama.cpp's K.q is ggml_vec_dot_f16 (dot_kq_single) over q
     * rounded to f16, kept here as f32 values */
    const int k16 = a->type_k == PYRT_TYPE_F16;
    float *qf = a->acc + (int64_t)hd;      /* free: V rows are read from their blocks */
    if (k16) for (int32_t d = 0; d < hd; d++) qf[d] = _cvtsh_ss(pyrt_fp32_to_fp16(a->q[d]));
    else     a->q_to_dot(a->q, qq, hd);
    if (tv == PYRT_TYPE_F16) memset(vkq16, 0, sizeof(pyrt_fp16) * (size_t)hd);
    else                     memset(vkq, 0, sizeof(float) * (size_t)hd);
    float S = 0.0f, M = -INFINITY;
    for (int32_t j = a->first; j <= a->last; j++) {
        const uint8_t *kj = kq + (int64_t)j * a->k_bytes, *vj = vq + (int64_t)j * a->v_bytes;
        _mm_prefetch((const char *)(kj + PF_AHEAD * a->k_bytes), _MM_HINT_T0);
        _mm_prefetch((const char *)(vj + PF_AHEAD * a->v_bytes), _MM_HINT_T0);
        float s;
        if (k16) s = dot_kq_single((const pyrt_fp16 *)kj, qf, hd);
        else     a->k_dot(hd, &s, kj, qq);
        s = s * scale;
        if (a->softcap != 0.0f) s = a->softcap * tanhf(s);
        const float Mold = M;
        float ms = 1.0f, vs = 1.0f;
        if (s > M) {
            M = s;
            ms = expf(Mold - M);
            const __m256 vm = _mm256_set1_ps(ms);
            if (tv == PYRT_TYPE_F16)
                for (int32_t d = 0; d < hd; d += 8)
                    _mm_storeu_si128((__m128i *)(vkq16 + d), _mm256_cvtps_ph(_mm256_mul_ps(ld16(vkq16 + d), vm), 0));
            else
                for (int32_t d = 0; d < hd; d += 8) _mm256_storeu_ps(vkq + d, _mm256_mul_ps(_mm256_loadu_ps(vkq + d), vm));
        } else {
            vs = expf(s - M);
        }
        fa_mad_v(vkq, vkq16, vj, tv, hd, vs);
        S = fmaf(S, ms, vs);                 /* as generic/ops.c's fa_sum */
    }
    if (tv == PYRT_TYPE_F16)
        for (int32_t d = 0; d < hd; d += 8) _mm256_storeu_ps(vkq + d, ld16(vkq16 + d));
    const __m256 inv = _mm256_set1_ps(S == 0.0f ? 0.0f : 1.0f / S);
    for (int32_t d = 0; d < hd; d += 8) _mm256_storeu_ps(a->out + d, _mm256_mul_ps(_mm256_loadu_ps(vkq + d), inv));
}

/* ---- expf in 8 lanes, bit for bit libm's ------------------------------------------
 * The online softmax above calls expf once per position. expf8 computes the
 * same function as glibc's expf (from Arm's optimized-routines, used since
 * glibc 2.28; its FMA build, which x86-64 glibc selects on CPUs with FMA):
 * in double, x*32/ln2 = k + r (each product fused), 2^(k/32) from a 32-entry table of 2^(i/32) with
 * the exponent added, a degree-3 polynomial in r (each step one FMA), the
 * product rounded once to float; +0 below log(2^-150), +inf above
 * log(2^128), x + x for NaN. It is used only if it agrees with this process's
 * expf: pyrt_fill_ops_avx2 compares them on 2^19 inputs spread over the
 * range attention uses (x <= 0) and the special values, and otherwise the
 * kernels call expf per lane. tests/c/exp_exhaustive.c compares all 2^31
 * inputs x <= -0 and every NaN. */
static uint64_t expf_tab[32];     /* bits of 2^(i/32) minus i << 47 */
static int expf8_ok;              /* 1: expf8 == expf (set by pyrt_fill_ops_avx2) */
static __m256i expf_tab_lo[4], expf_tab_hi[4];   /* the table's low / high 32 bits, 8 entries a vector */

/* x * 32/ln2 = kd + r: kd by the shift, both products fused, as GCC contracts
 * the C of glibc's FMA build; ki: kd's bits (k in the low bits) */
static inline __m256d expf4_reduce(__m128 x, __m256i *ki) {
    const __m256d xd = _mm256_cvtps_pd(x), shift = _mm256_set1_pd(0x1.8p+52);
    const __m256d invln2n = _mm256_set1_pd(0x1.71547652b82fep+0 * 32);
    const __m256d kd0 = _mm256_fmadd_pd(xd, invln2n, shift);
    *ki = _mm256_castpd_si256(kd0);
    return _mm256_fmsub_pd(xd, invln2n, _mm256_sub_pd(kd0, shift));
}

/* 2^(r/32) * s rounded to float, s = the table entry with k's exponent added */
static inline __m128 expf4_finish(__m256d r, __m256i ki, __m256i tab) {
    const __m256d s = _mm256_castsi256_pd(_mm256_add_epi64(tab, _mm256_slli_epi64(ki, 47)));
    const __m256d p = _mm256_fmadd_pd(_mm256_set1_pd(0x1.c6af84b912394p-5 / 32 / 32 / 32), r,
                                      _mm256_set1_pd(0x1.ebfce50fac4f3p-3 / 32 / 32));
    const __m256d r2 = _mm256_mul_pd(r, r);
    const __m256d y = _mm256_fmadd_pd(p, r2, _mm256_fmadd_pd(_mm256_set1_pd(0x1.62e42ff0c52d6p-1 / 32), r,
                                                              _mm256_set1_pd(1.0)));
    return _mm256_cvtpd_ps(_mm256_mul_pd(y, s));
}

/* t[i & 31] for 8 dword indices: 4 in-register permutes, blends on bits 3 and 4 */
static inline __m256i expf_lookup(const __m256i *t, __m256i i) {
    const __m256 b3 = _mm256_castsi256_ps(_mm256_slli_epi32(i, 28)), b4 = _mm256_castsi256_ps(_mm256_slli_epi32(i, 27));
    const __m256 r0 = _mm256_castsi256_ps(_mm256_permutevar8x32_epi32(t[0], i));
    const __m256 r1 = _mm256_castsi256_ps(_mm256_permutevar8x32_epi32(t[1], i));
    const __m256 r2 = _mm256_castsi256_ps(_mm256_permutevar8x32_epi32(t[2], i));
    const __m256 r3 = _mm256_castsi256_ps(_mm256_permutevar8x32_epi32(t[3], i));
    return _mm256_castps_si256(_mm256_blendv_ps(_mm256_blendv_ps(r0, r1, b3), _mm256_blendv_ps(r2, r3, b3), b4));
}

static inline __m256 expf8(__m256 x) {
    const __m256 under = _mm256_cmp_ps(x, _mm256_set1_ps(-0x1.9fe368p6f), _CMP_LT_OQ);   /* and -inf */
    const __m256 over = _mm256_cmp_ps(x, _mm256_set1_ps(0x1.62e42ep6f), _CMP_GT_OQ);
    const __m256 nan = _mm256_cmp_ps(x, x, _CMP_UNORD_Q);
    /* lanes with a fixed result compute exp(0), so nothing underflows */
    const __m256 xc = _mm256_andnot_ps(_mm256_or_ps(_mm256_or_ps(under, over), nan), x);
    __m256i k0, k1;
    const __m256d r0 = expf4_reduce(_mm256_castps256_ps128(xc), &k0), r1 = expf4_reduce(_mm256_extractf128_ps(xc, 1), &k1);
    /* the 8 indices (low dwords of k0, k1) as dwords, then the table halves */
    const __m256i even = _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6);
    const __m256i idx = _mm256_permute2x128_si256(_mm256_permutevar8x32_epi32(k0, even),
                                                  _mm256_permutevar8x32_epi32(k1, even), 0x20);
    const __m256i lo = expf_lookup(expf_tab_lo, idx), hi = expf_lookup(expf_tab_hi, idx);
    const __m256i e0 = _mm256_unpacklo_epi32(lo, hi), e1 = _mm256_unpackhi_epi32(lo, hi);
    /* unpack interleaves within 128-bit halves: entries 0,1,4,5 / 2,3,6,7 */
    const __m256i t0 = _mm256_permute2x128_si256(e0, e1, 0x20), t1 = _mm256_permute2x128_si256(e0, e1, 0x31);
    __m256 y = _mm256_set_m128(expf4_finish(r1, k1, t1), expf4_finish(r0, k0, t0));
    y = _mm256_andnot_ps(under, y);
    y = _mm256_blendv_ps(y, _mm256_set1_ps(INFINITY), over);
    return _mm256_blendv_ps(y, _mm256_add_ps(x, x), nan);
}

static void expf8_init(void) {
    static volatile int done;
    if (done) return;
    for (int i = 0; i < 32; i++) {
        const double v = (double)exp2l(i / 32.0L);
        uint64_t u;
        memcpy(&u, &v, sizeof u);
        expf_tab[i] = u - ((uint64_t)i << 47);
    }
    for (int v = 0; v < 4; v++) {
        uint32_t l8[8], h8[8];
        for (int e = 0; e < 8; e++) { l8[e] = (uint32_t)expf_tab[8 * v + e]; h8[e] = (uint32_t)(expf_tab[8 * v + e] >> 32); }
        expf_tab_lo[v] = _mm256_loadu_si256((const __m256i *)l8);
        expf_tab_hi[v] = _mm256_loadu_si256((const __m256i *)h8);
    }
    int ok = 1;
    float x[8], y[8];
    /* x <= -0 in steps of 4096 bit patterns (all exponents, 2^19 values), then
     * specials: +-0, +-inf, NaNs, the overflow/underflow bounds, small positives */
    for (uint64_t p = 0x80000000u; p < 0x100000000ull && ok; p += 8 * 4096) {
        for (int l = 0; l < 8; l++) { const uint32_t u = (uint32_t)(p + (uint64_t)l * 4096 + (p >> 13 & 4095)); memcpy(&x[l], &u, 4); }
        _mm256_storeu_ps(y, expf8(_mm256_loadu_ps(x)));
        for (int l = 0; l < 8; l++) { const float w = expf(x[l]); ok &= !memcmp(&w, &y[l], 4); }
    }
    static const uint32_t sp[16] = { 0, 0x80000000u, 0x7f800000u, 0xff800000u, 0x7fc00000u, 0xffc00000u, 0x7f800001u,
                                     0xffa00001u, 0x42b17217u, 0x42b17218u, 0xc2cff1b4u, 0xc2cff1b5u, 0x3f800000u,
                                     0x00000001u, 0x80000001u, 0xc2aeac50u };
    for (int b = 0; b < 16 && ok; b += 8) {
        memcpy(x, sp + b, sizeof x);
        _mm256_storeu_ps(y, expf8(_mm256_loadu_ps(x)));
        for (int l = 0; l < 8; l++) { const float w = expf(x[l]); ok &= !memcmp(&w, &y[l], 4); }
    }
    /* tests/test_attn_fa.py runs the kernels once with libm's expf per lane */
    if (getenv("PYRT_TEST_LIBM_EXPF")) ok = 0;
    expf8_ok = ok;
    done = 1;
}

/* expf of 8 lanes: expf8 where it is libm's, else libm per lane */
static inline __m256 expf8_libm(__m256 x) {
    if (expf8_ok) return expf8(x);
    float v[8];
    _mm256_storeu_ps(v, x);
    for (int l = 0; l < 8; l++) v[l] = expf(v[l]);
    return _mm256_loadu_ps(v);
}

/* ---- quantized-cache attention for up to 8 queries at once ------------------------
 * Each query gets exactly attn_fa_one_avx2's arithmetic (generic/ops.c's
 * order); the queries are the 8 lanes of the per-position steps, and each K
 * and V row is read once for all of them:
 *   - K.q for 8 queries: the K block is unpacked once, each query's integer
 *     lane sums are exact (the same int32 lanes as the table's vec_dot),
 *     scaled and accumulated per block by the same FMA, and the 8
 *     horizontal sums are done together in hsum_ps's pairing: the K dot of
 *     the x86 tables (x86/quants_avx2.c dot_q8_0 / dot_q4_0) bit for bit;
 *   - the online max, the one expf per position (expf8_libm), the running
 *     sum S = fma(S, ms, vs) run in lanes, each lane its query's scalar step;
 *   - the V row is converted to f32 once (exact) and added to each query's
 *     accumulator in that query's order (rescale by ms first on a new max).
 * Lanes of positions a query does not see keep their state unchanged. */
#define FA_Q 8

static inline __m256i fa_k_q8(const block_q8_0 *x, const block_q8_0 *y) {
    const __m256i w = _mm256_loadu_si256((const __m256i *)x->qs), a = _mm256_loadu_si256((const __m256i *)y->qs);
    return _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(a, w)), _mm256_set1_epi16(1));
}

/* K_j.q_l for the queries l < nl (qq[l]: q in Q8_0 blocks) as lanes (0 in lanes >= nl) */
static inline __attribute__((always_inline)) __m256 fa_scores8(const uint8_t *kj, int32_t tk, const block_q8_0 *const *qq,
                                                               int32_t nb, const int nl) {
    __m256 acc[FA_Q];
    for (int l = 0; l < FA_Q; l++) acc[l] = _mm256_setzero_ps();
    if (tk == PYRT_TYPE_Q8_0) {
        const block_q8_0 *x = (const block_q8_0 *)kj;
        for (int32_t b = 0; b < nb; b++) {
            const __m256i w = _mm256_loadu_si256((const __m256i *)x[b].qs);
            const __m256i aw = _mm256_sign_epi8(w, w);
            const float dk = pyrt_fp16_to_fp32(x[b].d);
            for (int l = 0; l < nl; l++) {
                const __m256i a = _mm256_loadu_si256((const __m256i *)qq[l][b].qs);
                const __m256i p = _mm256_madd_epi16(_mm256_maddubs_epi16(aw, _mm256_sign_epi8(a, w)), _mm256_set1_epi16(1));
                acc[l] = _mm256_fmadd_ps(_mm256_set1_ps(dk * pyrt_fp16_to_fp32(qq[l][b].d)), _mm256_cvtepi32_ps(p), acc[l]);
            }
        }
    } else {                                                  /* Q4_0: (nibble - 8) . a */
        const block_q4_0 *x = (const block_q4_0 *)kj;
        const __m256i off = _mm256_set1_epi8(8);
        for (int32_t b = 0; b < nb; b++) {
            const __m256i u = unpack_nibbles(x[b].qs);
            const float dk = pyrt_fp16_to_fp32(x[b].d);
            for (int l = 0; l < nl; l++) {
                const __m256i a = _mm256_loadu_si256((const __m256i *)qq[l][b].qs);
                const __m256i p16 = _mm256_sub_epi16(_mm256_maddubs_epi16(u, a), _mm256_maddubs_epi16(off, a));
                const __m256i p = _mm256_madd_epi16(p16, _mm256_set1_epi16(1));
                acc[l] = _mm256_fmadd_ps(_mm256_set1_ps(dk * pyrt_fp16_to_fp32(qq[l][b].d)), _mm256_cvtepi32_ps(p), acc[l]);
            }
        }
    }
    if (nl == 1) return _mm256_set_ps(0, 0, 0, 0, 0, 0, 0, hsum_ps(acc[0]));
    return hsum_ps_x8(acc[0], acc[1], acc[2], acc[3], acc[4], acc[5], acc[6], acc[7]);
}

/* one V row of type tv as f32 (exactly the dequantized values) */
static inline void fa_v_f32(float *y, const uint8_t *v, int32_t tv, int32_t hd) {
    for (int32_t i = 0; i < hd / 32; i++) {
        __m256 x[4];
        v_block_f32(v, tv, i, x);
        for (int c = 0; c < 4; c++) _mm256_storeu_ps(y + i * 32 + 8 * c, x[c]);
    }
}

/* lane l's accumulator y[0..hd) over the tile's positions jj < n: on a new
 * maximum y *= ms first, then y = fma(v_j, vs, y), skipping positions the
 * query does not see; 32 dims in registers at a time */
static inline void fa_pv_lane(float *y, const float *vt, const float *msv, const float *vsv, const uint8_t *valid,
                              const uint8_t *newmax, int32_t n, int32_t hd, int l, int fast) {
    for (int32_t d0 = 0; d0 < hd; d0 += 32) {
        __m256 a0 = _mm256_loadu_ps(y + d0), a1 = _mm256_loadu_ps(y + d0 + 8);
        __m256 a2 = _mm256_loadu_ps(y + d0 + 16), a3 = _mm256_loadu_ps(y + d0 + 24);
        if (fast)                                   /* every position seen, no new maximum */
            for (int32_t jj = 0; jj < n; jj++) {
                const float *v = vt + (int64_t)jj * hd + d0;
                const __m256 vs = _mm256_broadcast_ss(vsv + jj * FA_Q + l);
                a0 = _mm256_fmadd_ps(_mm256_loadu_ps(v), vs, a0);
                a1 = _mm256_fmadd_ps(_mm256_loadu_ps(v + 8), vs, a1);
                a2 = _mm256_fmadd_ps(_mm256_loadu_ps(v + 16), vs, a2);
                a3 = _mm256_fmadd_ps(_mm256_loadu_ps(v + 24), vs, a3);
            }
        else
            for (int32_t jj = 0; jj < n; jj++) {
                if (!(valid[jj] >> l & 1)) continue;
                if (newmax[jj] >> l & 1) {
                    const __m256 ms = _mm256_broadcast_ss(msv + jj * FA_Q + l);
                    a0 = _mm256_mul_ps(a0, ms); a1 = _mm256_mul_ps(a1, ms);
                    a2 = _mm256_mul_ps(a2, ms); a3 = _mm256_mul_ps(a3, ms);
                }
                const float *v = vt + (int64_t)jj * hd + d0;
                const __m256 vs = _mm256_broadcast_ss(vsv + jj * FA_Q + l);
                a0 = _mm256_fmadd_ps(_mm256_loadu_ps(v), vs, a0);
                a1 = _mm256_fmadd_ps(_mm256_loadu_ps(v + 8), vs, a1);
                a2 = _mm256_fmadd_ps(_mm256_loadu_ps(v + 16), vs, a2);
                a3 = _mm256_fmadd_ps(_mm256_loadu_ps(v + 24), vs, a3);
            }
        _mm256_storeu_ps(y + d0, a0); _mm256_storeu_ps(y + d0 + 8, a1);
        _mm256_storeu_ps(y + d0 + 16, a2); _mm256_storeu_ps(y + d0 + 24, a3);
    }
}

/* fa_pv_lane's fast case for lanes l and l + 1 together (one V load for both) */
static inline void fa_pv_pair(float *y, float *z, const float *vt, const float *vsv, int32_t n, int32_t hd, int l) {
    for (int32_t d0 = 0; d0 < hd; d0 += 32) {
        __m256 a0 = _mm256_loadu_ps(y + d0), a1 = _mm256_loadu_ps(y + d0 + 8);
        __m256 a2 = _mm256_loadu_ps(y + d0 + 16), a3 = _mm256_loadu_ps(y + d0 + 24);
        __m256 b0 = _mm256_loadu_ps(z + d0), b1 = _mm256_loadu_ps(z + d0 + 8);
        __m256 b2 = _mm256_loadu_ps(z + d0 + 16), b3 = _mm256_loadu_ps(z + d0 + 24);
        for (int32_t jj = 0; jj < n; jj++) {
            const float *v = vt + (int64_t)jj * hd + d0;
            __m256 v0 = _mm256_loadu_ps(v), v1 = _mm256_loadu_ps(v + 8), v2 = _mm256_loadu_ps(v + 16), v3 = _mm256_loadu_ps(v + 24);
            __asm__("" : "+x"(v0), "+x"(v1), "+x"(v2), "+x"(v3));    /* one load per value for both */
            const __m256 x = _mm256_broadcast_ss(vsv + jj * FA_Q + l), w = _mm256_broadcast_ss(vsv + jj * FA_Q + l + 1);
            a0 = _mm256_fmadd_ps(v0, x, a0); b0 = _mm256_fmadd_ps(v0, w, b0);
            a1 = _mm256_fmadd_ps(v1, x, a1); b1 = _mm256_fmadd_ps(v1, w, b1);
            a2 = _mm256_fmadd_ps(v2, x, a2); b2 = _mm256_fmadd_ps(v2, w, b2);
            a3 = _mm256_fmadd_ps(v3, x, a3); b3 = _mm256_fmadd_ps(v3, w, b3);
        }
        _mm256_storeu_ps(y + d0, a0); _mm256_storeu_ps(y + d0 + 8, a1);
        _mm256_storeu_ps(y + d0 + 16, a2); _mm256_storeu_ps(y + d0 + 24, a3);
        _mm256_storeu_ps(z + d0, b0); _mm256_storeu_ps(z + d0 + 8, b1);
        _mm256_storeu_ps(z + d0 + 16, b2); _mm256_storeu_ps(z + d0 + 24, b3);
    }
}

/* queries i0 .. i0+qn-1 of the group (i = t*n_head + g), qn <= FA_Q;
 * K and V quantized (Q8_0 / Q4_0), head_dim % 32 == 0. Positions go in
 * tiles: first the scores, softmax steps and f32 V rows of the tile for all
 * lanes, then each query's accumulator over the tile. */
static inline __attribute__((always_inline)) void attn_fa_group(const pyrt_attn_args *a, int32_t i0, const int qn) {
    const int32_t hd = a->head_dim, nh = a->n_head > 1 ? a->n_head : 1, nb = hd / 32;
    const int32_t tk = a->type_k, tv = a->type_v;
    /* scratch (kernels.h: max(32*hd, n_q*(hd+264)) floats) */
    const int64_t nq = (int64_t)(a->n_tok > 1 ? a->n_tok : 1) * nh;
    const int64_t avail = 32 * (int64_t)hd > nq * (hd + 264) ? 32 * (int64_t)hd : nq * (hd + 264);
    float *vkq = a->acc;                                          /* [qn][hd]    */
    block_q8_0 *qbuf = (block_q8_0 *)(vkq + (int64_t)qn * hd);    /* [qn][nb]    */
    float *msv = vkq + (int64_t)qn * hd + (qn * nb * (int64_t)sizeof(block_q8_0) + 3) / 4;
    const int64_t room = avail - (msv - vkq);
    int32_t PT = (int32_t)((room - 8) / (hd + 2 * FA_Q + 1));      /* per position: V row, ms, vs, masks */
    if (PT > 32) PT = 32;
    float *vsv = msv + PT * FA_Q;                                 /* [PT][FA_Q]  */
    float *vt = vsv + PT * FA_Q;                                  /* [PT][hd]    */
    uint8_t *valid = (uint8_t *)(vt + (int64_t)PT * hd), *newmx = valid + PT;
    const block_q8_0 *qq[FA_Q];
    float *out[FA_Q];
    int32_t fst[FA_Q], lst[FA_Q], lo = INT32_MAX, hi = -1;
    for (int l = 0; l < FA_Q; l++) {
        if (l < qn) {
            const int32_t i = i0 + l;
            const pyrt_attn_args o = pyrt_attn_query(a, i / nh, i % nh);
            a->q_to_dot(o.q, qbuf + (int64_t)l * nb, hd);
            qq[l] = qbuf + (int64_t)l * nb;
            out[l] = o.out;
            fst[l] = o.first;
            lst[l] = o.last;
            if (o.first < lo) lo = o.first;
            if (o.last > hi) hi = o.last;
        } else {                                                  /* an empty lane */
            qq[l] = qbuf;
            out[l] = NULL;
            fst[l] = INT32_MAX;
            lst[l] = -1;
        }
    }
    memset(vkq, 0, sizeof(float) * (size_t)qn * hd);
    const __m256i vfst = _mm256_loadu_si256((const __m256i *)fst), vlst = _mm256_loadu_si256((const __m256i *)lst);
    const float scale = a->softcap != 0.0f ? a->scale / a->softcap : a->scale;
    const __m256 vscale = _mm256_set1_ps(scale), one = _mm256_set1_ps(1.0f);
    __m256 M = _mm256_set1_ps(-INFINITY), S = _mm256_setzero_ps();
    const int lpp = qn > 4 ? 8 : qn > 2 ? 4 : qn > 1 ? 2 : 1;    /* lanes of a position in the expf calls */
    for (int32_t j0 = lo; j0 <= hi; j0 += PT) {
        const int32_t n = hi + 1 - j0 < PT ? hi + 1 - j0 : PT;
        int all = 0xFF, anynew = 0;
        __m256 vldv[32], nmv[32];
        float arg[32 * FA_Q + 8];
        for (int32_t jj = 0; jj < n; jj++) {
            const int32_t j = j0 + jj;
            const uint8_t *kj = (const uint8_t *)a->kq + (int64_t)j * a->k_bytes;
            const uint8_t *vj = (const uint8_t *)a->vq + (int64_t)j * a->v_bytes;
            _mm_prefetch((const char *)(kj + PF_AHEAD * a->k_bytes), _MM_HINT_T0);
            _mm_prefetch((const char *)(vj + PF_AHEAD * a->v_bytes), _MM_HINT_T0);
            __m256 s = _mm256_mul_ps(fa_scores8(kj, tk, qq, nb, qn), vscale);
            if (a->softcap != 0.0f) {
                float sv[FA_Q];
                _mm256_storeu_ps(sv, s);
                for (int l = 0; l < FA_Q; l++) sv[l] = a->softcap * tanhf(sv[l]);
                s = _mm256_loadu_ps(sv);
            }
            const __m256i vj8 = _mm256_set1_epi32(j);
            const __m256 vld = _mm256_castsi256_ps(_mm256_andnot_si256(
                _mm256_or_si256(_mm256_cmpgt_epi32(vfst, vj8), _mm256_cmpgt_epi32(vj8, vlst)), _mm256_set1_epi32(-1)));
            const __m256 nm = _mm256_and_ps(vld, _mm256_cmp_ps(s, M, _CMP_GT_OQ));
            /* new maximum: ms = expf(Mold - s), vs = 1; else ms = 1, vs = expf(s - M):
             * the argument now, the expf below for the whole tile */
            _mm256_storeu_ps(arg + jj * lpp, _mm256_blendv_ps(_mm256_sub_ps(s, M), _mm256_sub_ps(M, s), nm));
            M = _mm256_blendv_ps(M, s, nm);
            vldv[jj] = vld;
            nmv[jj] = nm;
            valid[jj] = (uint8_t)_mm256_movemask_ps(vld);
            newmx[jj] = (uint8_t)_mm256_movemask_ps(nm);
            all &= valid[jj];
            anynew |= newmx[jj];
            if (valid[jj]) fa_v_f32(vt + (int64_t)jj * hd, vj, tv, hd);
        }
        /* expf of the tile's arguments, packed lpp lanes a position (each
         * store above overwrote the previous one's unused lanes), 8 at a
         * time; then ms, vs and the running sums in position order */
        for (int32_t c = 0; c < n * lpp; c += 8) _mm256_storeu_ps(arg + c, expf8_libm(_mm256_loadu_ps(arg + c)));
        for (int32_t jj = 0; jj < n; jj++) {
            const __m256 e = _mm256_loadu_ps(arg + jj * lpp), nm = nmv[jj];   /* lanes >= lpp: unused */
            const __m256 ms = _mm256_blendv_ps(one, e, nm), vs = _mm256_blendv_ps(e, one, nm);
            S = _mm256_blendv_ps(S, _mm256_fmadd_ps(S, ms, vs), vldv[jj]);
            _mm256_storeu_ps(msv + jj * FA_Q, ms);
            _mm256_storeu_ps(vsv + jj * FA_Q, vs);
        }
        const int fast = all & ~anynew;          /* lanes that see every position, no new maximum */
        for (int l = 0; l < qn; l++) {
            if (l + 1 < qn && (fast >> l & 3) == 3) {
                fa_pv_pair(vkq + (int64_t)l * hd, vkq + (int64_t)(l + 1) * hd, vt, vsv, n, hd, l);
                l++;
            } else
                fa_pv_lane(vkq + (int64_t)l * hd, vt, msv, vsv, valid, newmx, n, hd, l, fast >> l & 1);
        }
    }
    float Sv[FA_Q];
    _mm256_storeu_ps(Sv, S);
    for (int l = 0; l < qn; l++) {
        const __m256 inv = _mm256_set1_ps(Sv[l] == 0.0f ? 0.0f : 1.0f / Sv[l]);
        const float *y = vkq + (int64_t)l * hd;
        for (int32_t d = 0; d < hd; d += 8) _mm256_storeu_ps(out[l] + d, _mm256_mul_ps(_mm256_loadu_ps(y + d), inv));
    }
}

static __attribute__((noinline)) void attn_fa_group_avx2(const pyrt_attn_args *a, int32_t i0, int32_t qn) {
    switch (qn) {
    case 1: attn_fa_group(a, i0, 1); break;
    case 2: attn_fa_group(a, i0, 2); break;
    case 3: attn_fa_group(a, i0, 3); break;
    case 4: attn_fa_group(a, i0, 4); break;
    case 5: attn_fa_group(a, i0, 5); break;
    case 6: attn_fa_group(a, i0, 6); break;
    case 7: attn_fa_group(a, i0, 7); break;
    default: attn_fa_group(a, i0, 8); break;
    }
}

static void attn_head_fa_avx2(const pyrt_attn_args *a) {
    const int32_t nt = a->n_tok > 1 ? a->n_tok : 1, nh = a->n_head > 1 ? a->n_head : 1, nq = nt * nh;
    const int quant = (a->type_k == PYRT_TYPE_Q8_0 || a->type_k == PYRT_TYPE_Q4_0) &&
                      (a->type_v == PYRT_TYPE_Q8_0 || a->type_v == PYRT_TYPE_Q4_0) && a->head_dim % 32 == 0;
    if (quant && nq > 1) {       /* one query alone: attn_fa_one_avx2 is faster */
        /* chunks of at most FA_Q queries, as equal as possible */
        const int32_t nc = (nq + FA_Q - 1) / FA_Q;
        for (int32_t c = 0, i0 = 0; c < nc; c++) {
            const int32_t qn = (nq - i0) / (nc - c);
            attn_fa_group_avx2(a, i0, qn);
            i0 += qn;
        }
        return;
    }
    for (int32_t t = 0; t < nt; t++)
        for (int32_t g = 0; g < nh; g++) {
            const pyrt_attn_args o = pyrt_attn_query(a, t, g);
            attn_fa_one_avx2(&o);
        }
}

/* op_geglu with 8 lanes: the fp16 rounding of g by vcvtps2ph (round to
 * nearest even, as pyrt_fp32_to_fp16), the table entries by one gather, the
 * same clamps at +-10 and the same product. */
static void geglu_avx2(float *g, const float *u, int64_t n) {
    const uint16_t *tab = pyrt_gelu_table();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 v = _mm256_loadu_ps(g + i), uv = _mm256_loadu_ps(u + i);
        const __m256i idx = _mm256_cvtepu16_epi32(_mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT));
        const __m256i t = _mm256_and_si256(_mm256_i32gather_epi32((const int *)tab, idx, 2), _mm256_set1_epi32(0xFFFF));
        const __m128i t16 = _mm_packus_epi32(_mm256_castsi256_si128(t), _mm256_extracti128_si256(t, 1));
        __m256 r = _mm256_mul_ps(_mm256_cvtph_ps(t16), uv);
        r = _mm256_blendv_ps(r, _mm256_mul_ps(v, uv), _mm256_cmp_ps(v, _mm256_set1_ps(10.0f), _CMP_GE_OQ));
        r = _mm256_andnot_ps(_mm256_cmp_ps(v, _mm256_set1_ps(-10.0f), _CMP_LE_OQ), r);
        _mm256_storeu_ps(g + i, r);
    }
    if (i < n) op_geglu(g + i, u + i, n - i);
}

/* op_softmax as ggml's AVX2 ggml_vec_soft_max_f32: exp of 8 lanes at a time
 * (the same exp8 as attention), each group's lanes summed in hsum order and
 * added to a double; the tail with expf; then scaled by (float)(1/sum). */
static void softmax_avx2(float *x, int64_t n) {
    float mx = -INFINITY;
    for (int64_t i = 0; i < n; i++) if (x[i] > mx) mx = x[i];
    double sum = 0.0;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), _mm256_set1_ps(mx)));
        _mm256_storeu_ps(x + i, e);
        sum += (double)hsum_ps(e);
    }
    for (; i < n; i++) { const float e = expf(x[i] - mx); x[i] = e; sum += (double)e; }
    const float inv = (float)(1.0 / sum);
    for (i = 0; i < n; i++) x[i] *= inv;
}

/* op_dot_f32_8's lanes in one register; hsum_ps sums them in its order */
static float dot_f32_8_avx2(const float *w, const float *x, int64_t n) {
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < n; i += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(w + i), _mm256_loadu_ps(x + i), acc);
    return hsum_ps(acc);
}

void pyrt_fill_ops_avx2(pyrt_kernels *k) {
    k->softmax = softmax_avx2;
    k->dot_f32_8 = dot_f32_8_avx2;
    k->geglu = geglu_avx2;
    k->rope = rope_avx2;
    k->rope_cs = rope_cs_avx2;
    k->swiglu = swiglu_avx2;
    k->attn_head = attn_head_avx2;
    k->attn_heads = attn_heads_avx2;
    k->attn_heads_split = attn_heads_split_avx2;
    k->attn_head_fa = attn_head_fa_avx2;
    expf8_init();
}
#endif
