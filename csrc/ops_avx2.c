/* ops_avx2.c — forward-pass ops (rope, SwiGLU, attention) for the AVX2 kernel
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
#include <string.h>

#include "kernels.h"
#include "ops.h"
#include "simd_avx2.h"

/* ---- exp and silu ------------------------------------------------------------ */

/* exp(x) = 2^n * (1 + poly(b)), n = round(x / ln2), b = x - n ln2 (two-part
 * ln2); large |n| is handled by splitting the scale to avoid overflow. */
static inline __m256 exp8(__m256 x) {
    const __m256 shift = _mm256_set1_ps(0x1.8p23f);
    const __m256 z = _mm256_fmadd_ps(x, _mm256_set1_ps(0x1.715476p+0f), shift);
    const __m256 n = _mm256_sub_ps(z, shift);
    const __m256 b = _mm256_fnmadd_ps(n, _mm256_set1_ps(0x1.7f7d1cp-20f),
                                      _mm256_fnmadd_ps(n, _mm256_set1_ps(0x1.62e4p-1f), x));
    const __m256i e = _mm256_slli_epi32(_mm256_castps_si256(z), 23);
    const __m256 k = _mm256_castsi256_ps(_mm256_add_epi32(e, _mm256_castps_si256(_mm256_set1_ps(1))));
    const __m256 absn = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), n);
    const __m256i big = _mm256_castps_si256(_mm256_cmp_ps(absn, _mm256_set1_ps(126), _CMP_GT_OQ));
    const __m256 u = _mm256_mul_ps(b, b);
    const __m256 hi = _mm256_fmadd_ps(_mm256_set1_ps(0x1.0e4020p-7f), b, _mm256_set1_ps(0x1.573e2ep-5f));
    const __m256 lo = _mm256_fmadd_ps(_mm256_set1_ps(0x1.555e66p-3f), b, _mm256_set1_ps(0x1.fffdb6p-2f));
    const __m256 j = _mm256_fmadd_ps(_mm256_fmadd_ps(hi, u, lo), u,
                                     _mm256_mul_ps(_mm256_set1_ps(0x1.ffffecp-1f), b));
    if (!_mm256_movemask_ps(_mm256_castsi256_ps(big)))
        return _mm256_fmadd_ps(j, k, k);
    const __m256i g = _mm256_and_si256(_mm256_castps_si256(_mm256_cmp_ps(n, _mm256_setzero_ps(), _CMP_LE_OQ)),
                                       _mm256_set1_epi32((int)0x82000000u));
    const __m256 s1 = _mm256_castsi256_ps(_mm256_add_epi32(g, _mm256_set1_epi32(0x7f000000)));
    const __m256 s2 = _mm256_castsi256_ps(_mm256_sub_epi32(e, g));
    const __m256 huge = _mm256_cmp_ps(absn, _mm256_set1_ps(192), _CMP_GT_OQ);
    const __m256 scaled = _mm256_mul_ps(_mm256_fmadd_ps(s2, j, s2), s1);
    const __m256 normal = _mm256_fmadd_ps(k, j, k);
    const __m256 mid = _mm256_or_ps(_mm256_and_ps(_mm256_castsi256_ps(big), scaled),
                                    _mm256_andnot_ps(_mm256_castsi256_ps(big), normal));
    return _mm256_or_ps(_mm256_and_ps(huge, _mm256_mul_ps(s1, s1)), _mm256_andnot_ps(huge, mid));
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

/* As op_rope, with the FMA contraction GCC applies to ggml's rotate_pairs
 * (x1's product rounded, x0's fused), written out so no compiler choice is
 * involved. */
static void rope_avx2(float *x, int32_t n_rot, int32_t mode, float pos, float freq_base, float freq_scale) {
    const float theta_scale = powf(freq_base, -2.0f / (float)n_rot);
    float theta = pos;
    const int32_t half = n_rot / 2;
    for (int32_t i = 0; i < half; i++) {
        const float t = freq_scale * theta;
        const float c = cosf(t), s = sinf(t);
        float *a, *b;
        if (mode == PYRT_ROPE_NEOX) { a = &x[i]; b = &x[i + half]; }
        else                        { a = &x[2 * i]; b = &x[2 * i + 1]; }
        const float x0 = *a, x1 = *b;
        *a = fmaf(x0, c, -(x1 * s));
        *b = fmaf(x0, s, x1 * c);
        theta *= theta_scale;
    }
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
static inline float dot_kq_batched(const pyrt_fp16 *k, const pyrt_fp16 *q, int32_t n) {
    __m256 acc = _mm256_setzero_ps();
    for (int32_t d = 0; d < n; d += 8) acc = _mm256_fmadd_ps(ld16(k + d), ld16(q + d), acc);
    return hsum8(acc);
}

/* q . k, single-token shape (ggml_vec_dot_f16) */
static inline float dot_kq_single(const pyrt_fp16 *k, const pyrt_fp16 *q, int32_t n) {
    const int32_t np = n & ~31;
    __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    for (int32_t d = 0; d < np; d += 32) {
        s0 = _mm256_fmadd_ps(ld16(k + d), ld16(q + d), s0);
        s1 = _mm256_fmadd_ps(ld16(k + d + 8), ld16(q + d + 8), s1);
        s2 = _mm256_fmadd_ps(ld16(k + d + 16), ld16(q + d + 16), s2);
        s3 = _mm256_fmadd_ps(ld16(k + d + 24), ld16(q + d + 24), s3);
    }
    double sum = reduce4(s0, s1, s2, s3);
    for (int32_t d = np; d < n; d++)
        sum += (double)(_cvtsh_ss(k[d]) * _cvtsh_ss(q[d]));
    return (float)sum;
}

/* ---- attention ----------------------------------------------------------------- */

static void attn_head_avx2(const pyrt_attn_args *a) {
    const int32_t hd = a->head_dim, first = a->first, last = a->last;
    const int64_t st = a->stride;
    /* tiled GEMM needs head_dim % 8 == 0; llama.cpp falls back to vec_dot too */
    const int batched = a->batched && hd % 8 == 0;
    float *sc = a->scores;                 /* indexed by absolute position */
    pyrt_fp16 *p16 = a->probs16;

    for (int32_t d = 0; d < hd; d++) a->q16[d] = pyrt_fp32_to_fp16(a->q[d]);

    /* scores, scaled; max over the visible positions */
    float mx = -INFINITY;
    for (int32_t j = first; j <= last; j++) {
        const pyrt_fp16 *kj = a->k + (int64_t)j * st;
        const float s = (batched ? dot_kq_batched(kj, a->q16, hd) : dot_kq_single(kj, a->q16, hd)) * a->scale;
        sc[j] = s;
        if (s > mx) mx = s;
    }

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
        _mm_storeu_si128((__m128i *)(p16 + j),
                         _mm256_cvtps_ph(_mm256_mul_ps(_mm256_loadu_ps(sc + j), _mm256_set1_ps(inv)), 0));

    /* out[d] = sum_j p_j v_j[d], accumulated in llama.cpp's lane structure:
     * batched: 8 slots (j mod 8); single token: 32 slots (j mod 32). Each slot
     * holds a vector over d, so this runs 8 dims per instruction. */
    const int nslot = batched ? 8 : 32;
    float *acc = a->acc;
    memset(acc, 0, sizeof(float) * (size_t)nslot * hd);
    for (int32_t j = first; j <= last; j++) {
        const float p = _cvtsh_ss(p16[j]);
        if (p == 0.0f) continue;            /* adds exactly +0 */
        const pyrt_fp16 *vj = a->v + (int64_t)j * st;
        float *slot = acc + (size_t)(j % nslot) * hd;
        const __m256 pv = _mm256_set1_ps(p);
        int32_t d = 0;
        for (; d + 8 <= hd; d += 8)
            _mm256_storeu_ps(slot + d, _mm256_fmadd_ps(ld16(vj + d), pv, _mm256_loadu_ps(slot + d)));
        for (; d < hd; d++) slot[d] = fmaf(_cvtsh_ss(vj[d]), p, slot[d]);
    }
    for (int32_t d = 0; d < hd; d++) {
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

void pyrt_ops_fill_avx2(pyrt_kernels *k) {
    k->rope = rope_avx2;
    k->swiglu = swiglu_avx2;
    k->attn_head = attn_head_avx2;
}
#endif
