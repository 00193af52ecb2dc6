/* exp_exhaustive.c — exhaustive checks of the exp functions in
 * csrc/x86/ops_avx2.c (tests/test_attn_fa.py builds and runs it):
 *   exp8:  every float bit pattern, each both in the fast path (a group of 8
 *          consecutive patterns) and forced through the slow path (a -inf
 *          lane beside it), bit for bit against the previous exp8, kept
 *          below as exp8_ref (the version that computed every path in every
 *          lane);
 *   expf8: every float with the sign bit set (x <= -0, -inf, negative NaNs:
 *          the inputs attention's online softmax gives expf) and every
 *          positive NaN, bit for bit against libm's expf.
 * Built with the library's flags for ops_avx2.c, including it, linked with
 * build/libpyrt.so for the symbols that file refers to. Prints the first
 * mismatches and "exp8 ok" / "expf8 ok"; exits 1 on any mismatch. */
#include <stdio.h>
#include <stdlib.h>
#include "x86/ops_avx2.c"

static inline __m256 exp8_ref(__m256 x) {
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

static long bad;

static void cmp8(const char *what, __m256i in, __m256 got, __m256 want) {
    const __m256i d = _mm256_cmpeq_epi32(_mm256_castps_si256(got), _mm256_castps_si256(want));
    if (_mm256_movemask_epi8(d) == -1) return;
    uint32_t xi[8], g[8], w[8];
    _mm256_storeu_si256((__m256i *)xi, in);
    _mm256_storeu_si256((__m256i *)g, _mm256_castps_si256(got));
    _mm256_storeu_si256((__m256i *)w, _mm256_castps_si256(want));
    for (int l = 0; l < 8; l++)
        if (g[l] != w[l] && bad++ < 20)
            printf("%s mismatch: x=0x%08x got 0x%08x want 0x%08x\n", what, xi[l], g[l], w[l]);
}

static int check_exp8(void) {
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256 ninf = _mm256_set1_ps(-INFINITY);
    for (uint64_t p = 0; p < (1ull << 32); p += 8) {
        const __m256i xi = _mm256_add_epi32(_mm256_set1_epi32((int)(uint32_t)p), lane);
        const __m256 x = _mm256_castsi256_ps(xi);
        cmp8("exp8", xi, exp8(x), exp8_ref(x));
        /* slow path for lanes 0..6, then for lane 7 (moved to lane 0) */
        const __m256 xa = _mm256_blend_ps(x, ninf, 0x80);
        cmp8("exp8 slow", _mm256_castps_si256(xa), exp8(xa), exp8_ref(xa));
        const __m256 xb = _mm256_blend_ps(_mm256_permutevar8x32_ps(x, _mm256_set1_epi32(7)), ninf, 0xFE);
        cmp8("exp8 slow", _mm256_castps_si256(xb), exp8(xb), exp8_ref(xb));
    }
    return bad == 0;
}

static int check_expf8(void) {
    const long before = bad;
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    float w[8];
    /* [0x80000000, 2^32): every x <= -0, -inf, negative NaNs; then positive NaNs */
    for (int part = 0; part < 2; part++) {
        const uint64_t p0 = part ? 0x7f800000u : 0x80000000u, p1 = part ? 0x80000000u : 0x100000000ull;
        for (uint64_t p = p0; p < p1; p += 8) {
            const __m256i xi = _mm256_add_epi32(_mm256_set1_epi32((int)(uint32_t)p), lane);
            const __m256 x = _mm256_castsi256_ps(xi);
            float xs[8];
            _mm256_storeu_ps(xs, x);
            for (int l = 0; l < 8; l++) w[l] = expf(xs[l]);
            cmp8("expf8", xi, expf8(x), _mm256_loadu_ps(w));
        }
    }
    return bad == before;
}

int main(int argc, char **argv) {
    const char *what = argc > 1 ? argv[1] : "all";
    int ok = 1;
    if (!strcmp(what, "exp8") || !strcmp(what, "all")) {
        ok &= check_exp8();
        printf(bad ? "exp8 FAILED (%ld)\n" : "exp8 ok\n", bad);
    }
    if (!strcmp(what, "expf8") || !strcmp(what, "all")) {
        expf8_init();
        const long before = bad;
        ok &= check_expf8();
        if (bad > before) printf("expf8 FAILED (%ld; the runtime check said %d)\n", bad - before, expf8_ok);
        else              printf("expf8 ok (the runtime check said %d)\n", expf8_ok);
    }
    return ok ? 0 : 1;
}
