/* test_kernels.c — standalone kernel test: every entry of a SIMD kernel table
 * (NEON on aarch64, both the baseline and the dot-product instruction sets
 * the CPU can run; AVX2 on x86-64) against the scalar reference kernels and
 * against float64 emulation, with the named tolerances of
 * tests/test_kernels.py (docs/ARCHITECTURE.md, 'Correctness'). It needs no
 * Python, so it runs under qemu-aarch64 in CI. .ci/jobs/neon.sh builds it: the
 * library's object files from a CMake build (each kernel file with its own
 * ISA flags), linked with this file (-Icsrc, -DPYRT_HAVE_NEON_KERNELS=1 on
 * aarch64), once cross-compiled for aarch64 and once natively on x86-64.
 * Prints one line per failure (up to a limit) and a closing "N passed,
 * M failed"; exits 1 on any failure, 0 otherwise. -v lists every check. */
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <stddef.h>
#include <string.h>
#include "kernels.h"

#if defined(__aarch64__) && defined(PYRT_HAVE_NEON_KERNELS)
/* arm/quants_neon.c, outside the ABI: detection and both instruction sets */
int  pyrt_neon_cpu_has_dotprod(void);
void pyrt_fill_quants_neon_ex(pyrt_kernels *k, int use_dotprod);
void pyrt_fill_iquants_neon_ex(pyrt_kernels *k, int use_dotprod);   /* arm/iquants_neon.c */
#define TEST_NEON 1
#else
#define TEST_NEON 0
#endif

/* ---- named tolerances (tests/test_kernels.py) ------------------------------ */
#define DOT_EXACT_RTOL            1e-5   /* vs float64 emulation of the integer kernel, / sum|terms| */
#define DOT_NMSE_TOL              5e-4   /* vs float64 dot with the real f32 activations            */
#define DOT_VARIANT_RTOL          2e-3   /* SIMD (own activations) vs scalar                         */
#define DOT_VARIANT_RTOL_SAME_ACT 1e-5   /* SIMD vs scalar on the same activation bytes              */
#define F16_DOT_RTOL              1e-5
#define F16_MAD_ATOL_ULP          1
#define ACT_Q_MAX_DIFF            1      /* int8 activations: .5 ties may round the other way        */

static const int64_t SIZES[] = { 32, 64, 96, 288, 576, 1536, 32 * 37, 4096 + 32 };
static const int64_t K_SIZES[] = { 256, 512, 768, 1536, 256 * 7, 4096 + 256 };   /* K-quants: 256-blocks */
static const int64_t ODD_SIZES[] = { 1, 7, 8, 15, 33, 100, 1001 };   /* float types: block size 1 */
#define N_SIZES ((int)(sizeof SIZES / sizeof SIZES[0]))
#define N_K_SIZES ((int)(sizeof K_SIZES / sizeof K_SIZES[0]))
#define N_ODD ((int)(sizeof ODD_SIZES / sizeof ODD_SIZES[0]))
#define MAXN (4096 + 256)

static const int WEIGHT_TYPES[] = { PYRT_TYPE_F32, PYRT_TYPE_F16, PYRT_TYPE_BF16, PYRT_TYPE_Q8_0,
                                    PYRT_TYPE_Q4_0, PYRT_TYPE_Q4_1, PYRT_TYPE_Q5_0, PYRT_TYPE_Q5_1,
                                    PYRT_TYPE_Q2_K, PYRT_TYPE_Q3_K, PYRT_TYPE_Q4_K, PYRT_TYPE_Q5_K,
                                    PYRT_TYPE_Q6_K, PYRT_TYPE_IQ4_NL, PYRT_TYPE_IQ4_XS };

/* 256-element super-blocks with Q8_K activations: the K-quants and IQ4_XS */
static int is_kquant(int t) { return pyrt_type_traits_table[t].block_size == QK_K; }
/* the size list of a type: 256-multiples for K-quants */
static const int64_t *sizes_of(int t, int *count) {
    *count = is_kquant(t) ? N_K_SIZES : N_SIZES;
    return is_kquant(t) ? K_SIZES : SIZES;
}
#define N_WTYPES ((int)(sizeof WEIGHT_TYPES / sizeof WEIGHT_TYPES[0]))

/* ---- bookkeeping -------------------------------------------------------------- */
static int g_passed, g_failed, g_verbose;
static const char *g_table = "";

static void check(int ok, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (ok) {
        g_passed++;
        if (g_verbose) printf("ok   [%s] %s\n", g_table, msg);
    } else {
        g_failed++;
        if (g_failed <= 50) printf("FAIL [%s] %s\n", g_table, msg);
    }
}

static const char *tname(int t) { return pyrt_type_traits_table[t].name; }
static int64_t row_bytes(int t, int64_t n) {
    return n / pyrt_type_traits_table[t].block_size * pyrt_type_traits_table[t].block_bytes;
}

/* ---- deterministic random numbers (splitmix64) --------------------------------- */
static uint64_t g_rng;
static void seed(uint64_t s) { g_rng = s * 0x9E3779B97F4A7C15ULL + 12345; }
static uint64_t next_u64(void) {
    uint64_t z = (g_rng += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}
static double uniform(void) { return (double)(next_u64() >> 11) * (1.0 / 9007199254740992.0); }
static double gauss(void) {
    const double u = uniform() + 1e-300, v = uniform();
    return sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v);
}

static float fp16f(pyrt_fp16 h) { return pyrt_fp16_to_fp32(h); }
static uint32_t bits32(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static float ulp(float f) { f = fabsf(f); return nextafterf(f, INFINITY) - f; }

/* Finite fp16 block scales of both signs, some zero, some subnormal in fp16. */
static pyrt_fp16 rand_scale(double lo, double hi) {
    const double r = uniform();
    if (r < 0.05) return pyrt_fp32_to_fp16(0.0f);
    const double sign = uniform() < 0.5 ? -1.0 : 1.0;
    if (r < 0.10) return pyrt_fp32_to_fp16((float)(sign * 3e-6));
    return pyrt_fp32_to_fp16((float)(sign * exp2(lo + (hi - lo) * uniform())));
}

/* Random valid weight row: every bit pattern of qs/qh, sane scales. */
static void random_weights(int t, int64_t n, uint8_t *raw, double lo, double hi) {
    if (t == PYRT_TYPE_F32) {
        for (int64_t i = 0; i < n; i++) ((float *)raw)[i] = (float)gauss();
        return;
    }
    if (t == PYRT_TYPE_F16 || t == PYRT_TYPE_BF16) {
        for (int64_t i = 0; i < n; i++)
            ((uint16_t *)raw)[i] = t == PYRT_TYPE_F16 ? pyrt_fp32_to_fp16((float)gauss())
                                                      : pyrt_fp32_to_bf16((float)gauss());
        return;
    }
    const int64_t bb = pyrt_type_traits_table[t].block_bytes, nb = n / pyrt_type_traits_table[t].block_size;
    for (int64_t i = 0; i < nb * bb; i++) raw[i] = (uint8_t)next_u64();
    /* byte offsets of the fp16 scales (d, and dmin / m where the type has one) */
    size_t off[2] = { 0, 2 };
    int n_scales = (t == PYRT_TYPE_Q4_1 || t == PYRT_TYPE_Q5_1) ? 2 : 1;
    switch (t) {
    case PYRT_TYPE_Q2_K: off[0] = offsetof(block_q2_K, d); off[1] = offsetof(block_q2_K, dmin); n_scales = 2; break;
    case PYRT_TYPE_Q3_K: off[0] = offsetof(block_q3_K, d); break;
    case PYRT_TYPE_Q4_K: off[0] = offsetof(block_q4_K, d); off[1] = offsetof(block_q4_K, dmin); n_scales = 2; break;
    case PYRT_TYPE_Q5_K: off[0] = offsetof(block_q5_K, d); off[1] = offsetof(block_q5_K, dmin); n_scales = 2; break;
    case PYRT_TYPE_Q6_K: off[0] = offsetof(block_q6_K, d); break;
    default: break;
    }
    /* K-quant sub-block scales multiply d: keep the products in range */
    const double shift = is_kquant(t) ? -6 : 0;
    for (int64_t b = 0; b < nb; b++)
        for (int k = 0; k < n_scales; k++) {
            const pyrt_fp16 h = rand_scale(lo + shift, hi + shift);
            memcpy(raw + b * bb + off[k], &h, 2);
        }
}

/* Activation row: gaussian times a random magnitude, 1% outliers, one
 * all-zero block (d = 0). */
static void act_input(int64_t n, float *x) {
    const double mag = 0.01 + 30 * uniform();
    for (int64_t i = 0; i < n; i++) {
        x[i] = (float)(gauss() * mag);
        if (uniform() < 0.01) x[i] *= 20;
    }
    if (n >= 64) memset(x + 32, 0, 32 * sizeof(float));
}

/* amax = 127 gives d = 1 and id = 1 in every variant: each x*id is an exact
 * .5 tie (x[0] = 127 itself is not) */
static void tie_block(float *x) {
    for (int j = 0; j < 32; j++) x[j] = (float)(j - 16) + 0.5f;
    x[0] = 127.0f;
}

/* ---- float64 emulation of the integer dot (independent of the kernels) ----------- */
/* element j of quantized weight block `blk` as its integer value (offset applied) */
static int weight_q(int t, const uint8_t *blk, int j) {
    switch (t) {
    case PYRT_TYPE_Q8_0: return ((const block_q8_0 *)blk)->qs[j];
    case PYRT_TYPE_Q4_0: {
        const uint8_t v = ((const block_q4_0 *)blk)->qs[j % 16];
        return (j < 16 ? v & 15 : v >> 4) - 8;
    }
    case PYRT_TYPE_IQ4_NL: {
        static const int8_t kv[16] = { -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113 };
        const uint8_t v = ((const block_iq4_nl *)blk)->qs[j % 16];
        return kv[j < 16 ? v & 15 : v >> 4];
    }
    case PYRT_TYPE_Q4_1: {
        const uint8_t v = ((const block_q4_1 *)blk)->qs[j % 16];
        return j < 16 ? v & 15 : v >> 4;
    }
    case PYRT_TYPE_Q5_0: case PYRT_TYPE_Q5_1: {
        const uint8_t *qh = t == PYRT_TYPE_Q5_0 ? ((const block_q5_0 *)blk)->qh : ((const block_q5_1 *)blk)->qh;
        const uint8_t *qs = t == PYRT_TYPE_Q5_0 ? ((const block_q5_0 *)blk)->qs : ((const block_q5_1 *)blk)->qs;
        const int nib = j < 16 ? qs[j] & 15 : qs[j - 16] >> 4;
        const int q = nib | (((qh[j / 8] >> (j % 8)) & 1) << 4);
        return t == PYRT_TYPE_Q5_0 ? q - 16 : q;
    }
    }
    return 0;
}

static double float_elem(int t, const void *row, int64_t i) {
    if (t == PYRT_TYPE_F32) return ((const float *)row)[i];
    if (t == PYRT_TYPE_F16) return fp16f(((const pyrt_fp16 *)row)[i]);
    return pyrt_bf16_to_fp32(((const uint16_t *)row)[i]);
}

static float g_wf[MAXN];

/* float64 value of what vec_dot computes; *scale = sum of |terms|. K-quants:
 * the scalar dequantization (exact vs gguf.quants, tests/test_kernels.py)
 * times the Q8_K values d*q; its own roundings are ~1e-7 of the scale. */
static double emulate_dot(int t, const uint8_t *w, const uint8_t *a, int64_t n, double *scale) {
    double sum = 0, sc = 0;
    if (is_kquant(t)) {
        pyrt_kernels_get(PYRT_KERNELS_SCALAR)->type[t].dequantize(w, g_wf, n);
        for (int64_t i = 0; i < n; i++) {
            const block_q8_K *y = (const block_q8_K *)a + i / QK_K;
            const double p = (double)g_wf[i] * ((double)y->d * y->qs[i % QK_K]);
            sum += p;
            sc += fabs(p);
        }
        *scale = sc;
        return sum;
    }
    if (t == PYRT_TYPE_F32 || t == PYRT_TYPE_F16 || t == PYRT_TYPE_BF16) {
        for (int64_t i = 0; i < n; i++) {
            const double p = float_elem(t, w, i) * float_elem(t, a, i);
            sum += p;
            sc += fabs(p);
        }
        *scale = sc;
        return sum;
    }
    const int64_t wb = pyrt_type_traits_table[t].block_bytes;
    const int q81 = pyrt_type_traits_table[t].act_type == PYRT_TYPE_Q8_1;
    for (int64_t b = 0; b < n / 32; b++) {
        const uint8_t *blk = w + b * wb;
        pyrt_fp16 dw, mw = 0;
        memcpy(&dw, blk, 2);
        if (q81) memcpy(&mw, blk + 2, 2);
        double da, sa = 0;
        const int8_t *qa;
        if (q81) {
            const block_q8_1 *y = (const block_q8_1 *)a + b;
            da = fp16f(y->d); sa = fp16f(y->s); qa = y->qs;
        } else {
            const block_q8_0 *y = (const block_q8_0 *)a + b;
            da = fp16f(y->d); qa = y->qs;
        }
        long sumi = 0;
        for (int j = 0; j < 32; j++) sumi += (long)weight_q(t, blk, j) * qa[j];
        const double term = (double)fp16f(dw) * da * (double)sumi;
        const double mins = q81 ? (double)fp16f(mw) * sa : 0.0;
        sum += term + mins;
        sc += fabs(term) + fabs(mins);
    }
    *scale = sc;
    return sum;
}

/* ---- buffers -------------------------------------------------------------------- */
#define GUARD 64
static uint8_t  wbuf[MAXN * 4 + GUARD];
static uint8_t  abuf_s[MAXN * 4 + GUARD], abuf_v[MAXN * 4 + GUARD];
static float    xbuf[MAXN + GUARD], fs[MAXN + GUARD], fv[MAXN + GUARD];

/* ======================================================================== */
/* tests                                                                     */
/* ======================================================================== */

static void test_dequantize(const pyrt_kernels *S, const pyrt_kernels *V) {
    for (int ti = 0; ti < N_WTYPES; ti++) {
        const int t = WEIGHT_TYPES[ti];
        if (V->type[t].dequantize == S->type[t].dequantize) continue;   /* the scalar kernel itself */
        int ns;
        const int64_t *sizes = sizes_of(t, &ns);
        for (int si = 0; si < ns; si++) {
            const int64_t n = sizes[si];
            seed(1000 + (uint64_t)n + 7 * (uint64_t)t);
            random_weights(t, n, wbuf, -14, -2);
            memset(fs, 0xA5, sizeof fs);
            memset(fv, 0xA5, sizeof fv);
            S->type[t].dequantize(wbuf, fs, n);
            V->type[t].dequantize(wbuf, fv, n);
            int64_t bad = -1;
            for (int64_t i = 0; i < n && bad < 0; i++)
                if (bits32(fs[i]) != bits32(fv[i])) bad = i;
            int guard_ok = 1;
            for (int i = 0; i < GUARD; i++) guard_ok &= bits32(fv[n + i]) == 0xA5A5A5A5u;
            check(bad < 0 && guard_ok, "dequantize %s n=%lld bit-exact%s%s", tname(t), (long long)n,
                  bad >= 0 ? ": differs at " : "", guard_ok ? "" : " (wrote past the end)");
            if (bad >= 0) printf("      i=%lld scalar=%.9g simd=%.9g\n", (long long)bad, fs[bad], fv[bad]);
        }
    }
}

static void test_dequantize_all_f16_bf16(const pyrt_kernels *S, const pyrt_kernels *V) {
    static uint16_t bits[65536];
    static float a[65536], b[65536];
    for (int i = 0; i < 65536; i++) bits[i] = (uint16_t)i;
    const int types[2] = { PYRT_TYPE_F16, PYRT_TYPE_BF16 };
    for (int k = 0; k < 2; k++) {
        S->type[types[k]].dequantize(bits, a, 65536);
        V->type[types[k]].dequantize(bits, b, 65536);
        int bad = -1;
        for (int i = 0; i < 65536 && bad < 0; i++) {
            const int same = bits32(a[i]) == bits32(b[i]);
            /* F16: any NaN for a NaN; BF16 is a pure shift, payloads survive */
            if (!(same || (types[k] == PYRT_TYPE_F16 && isnan(a[i]) && isnan(b[i])))) bad = i;
        }
        check(bad < 0, "dequantize %s all 65536 bit patterns (first bad: %d)", tname(types[k]), bad);
    }
}

static void test_quantize_act_q8(const pyrt_kernels *S, const pyrt_kernels *V) {
    const int types[2] = { PYRT_TYPE_Q8_0, PYRT_TYPE_Q8_1 };
    for (int k = 0; k < 2; k++) {
        const int at = types[k];
        for (int si = 0; si < N_SIZES; si++) {
            const int64_t n = SIZES[si], nb = n / 32, rb = row_bytes(at, n);
            seed((uint64_t)n + (uint64_t)at);
            act_input(n, xbuf);
            tie_block(xbuf + n - 32);
            memset(abuf_s, 0, sizeof abuf_s);
            memset(abuf_v, 0, sizeof abuf_v);
            S->type[at].quantize_act(xbuf, abuf_s, n);
            V->type[at].quantize_act(xbuf, abuf_v, n);
            int guard_ok = 1;
            for (int i = 0; i < GUARD; i++) guard_ok &= abuf_v[rb + i] == 0;
            int d_ok = 1, q_ok = 1, s_ok = 1, tie_ok = 1;
            for (int64_t b = 0; b < nb; b++) {
                pyrt_fp16 ds, dv, ss = 0, sv = 0;
                const int8_t *qs, *qv;
                if (at == PYRT_TYPE_Q8_0) {
                    const block_q8_0 *ys = (const block_q8_0 *)abuf_s + b, *yv = (const block_q8_0 *)abuf_v + b;
                    ds = ys->d; dv = yv->d; qs = ys->qs; qv = yv->qs;
                } else {
                    const block_q8_1 *ys = (const block_q8_1 *)abuf_s + b, *yv = (const block_q8_1 *)abuf_v + b;
                    ds = ys->d; dv = yv->d; qs = ys->qs; qv = yv->qs; ss = ys->s; sv = yv->s;
                }
                d_ok &= ds == dv;   /* d = amax/127 in every variant */
                int same = 1, sumv = 0;
                for (int j = 0; j < 32; j++) {
                    q_ok &= abs(qs[j] - qv[j]) <= ACT_Q_MAX_DIFF;
                    same &= qs[j] == qv[j];
                    sumv += qv[j];
                }
                if (at == PYRT_TYPE_Q8_1) {
                    /* s = fp16(d_float * sum(q)) of its own q; equal to the
                     * reference's where the q agree */
                    float amax = 0;
                    for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(xbuf[b * 32 + j]));
                    s_ok &= sv == pyrt_fp32_to_fp16((amax / 127.0f) * (float)sumv);
                    if (same) s_ok &= sv == ss;
                }
                if (b == nb - 1) {
                    /* SIMD paths round ties to even (ggml's NEON and AVX2 do);
                     * the reference rounds half away from zero */
                    for (int j = 0; j < 32; j++) {
                        tie_ok &= qv[j] == (int8_t)rintf(xbuf[b * 32 + j]);
                        tie_ok &= qs[j] == (int8_t)roundf(xbuf[b * 32 + j]);
                    }
                }
            }
            check(d_ok && q_ok && s_ok && tie_ok && guard_ok,
                  "quantize_act %s n=%lld (d %s, |dq|<=1 %s, s %s, ties %s, guard %s)", tname(at), (long long)n,
                  d_ok ? "ok" : "BAD", q_ok ? "ok" : "BAD", s_ok ? "ok" : "BAD", tie_ok ? "ok" : "BAD",
                  guard_ok ? "ok" : "BAD");
        }
    }
}

/* Q8_K: the SIMD variants implement the reference's algorithm exactly */
static void test_quantize_act_q8_K(const pyrt_kernels *S, const pyrt_kernels *V) {
    if (V->type[PYRT_TYPE_Q8_K].quantize_act == S->type[PYRT_TYPE_Q8_K].quantize_act) return;
    for (int si = 0; si < N_K_SIZES; si++) {
        const int64_t n = K_SIZES[si], rb = row_bytes(PYRT_TYPE_Q8_K, n);
        seed((uint64_t)n + 15);
        act_input(n, xbuf);
        if (n >= 512) {                      /* equal magnitudes, opposite signs: the first wins */
            xbuf[256 + 5] = -40.0f;
            xbuf[256 + 9] = 40.0f;
            for (int j = 0; j < 256; j++)
                if (j != 5 && j != 9) xbuf[256 + j] = fminf(fmaxf(xbuf[256 + j], -39.0f), 39.0f);
        }
        if (n >= 768) for (int j = 0; j < 256; j++) xbuf[512 + j] = (float)(j % 7) - 3.0f + 0.5f;   /* ties */
        memset(abuf_s, 0, sizeof abuf_s);
        memset(abuf_v, 0, sizeof abuf_v);
        S->type[PYRT_TYPE_Q8_K].quantize_act(xbuf, abuf_s, n);
        V->type[PYRT_TYPE_Q8_K].quantize_act(xbuf, abuf_v, n);
        int guard_ok = 1;
        for (int i = 0; i < GUARD; i++) guard_ok &= abuf_v[rb + i] == 0;
        check(memcmp(abuf_s, abuf_v, (size_t)rb) == 0 && guard_ok, "quantize_act q8_K n=%lld bit-exact (zero "
              "block, first-max ties, .5 ties)", (long long)n);
    }
}

static void test_quantize_act_float(const pyrt_kernels *S, const pyrt_kernels *V) {
    /* bit patterns: bf16 ties to even both ways, a tie that rounds to inf, a
     * NaN whose top half reads as inf (must stay NaN) */
    static const uint32_t special_bits[] = { 0x3F808000u, 0x3F818000u, 0xBF818000u, 0x7F7F8000u, 0x7F800001u,
                                             0xFF800001u, 0x00018000u };
    float special[] = { INFINITY, -INFINITY, NAN, 0.0f, -0.0f, 65504.0f, 65520.0f, 1e6f, 6e-8f, 3e-8f,
                        2.9e-8f, 1e-5f, -1e-7f, 1e-40f, 3.0e38f, 0, 0, 0, 0, 0, 0, 0 };
    const int n_special = (int)(sizeof special / sizeof special[0]);
    for (int i = 0; i < 7; i++) memcpy(&special[15 + i], &special_bits[i], 4);
    const int types[3] = { PYRT_TYPE_F16, PYRT_TYPE_BF16, PYRT_TYPE_F32 };
    for (int si = 0; si < N_SIZES + N_ODD; si++) {
        const int64_t n = si < N_SIZES ? SIZES[si] : ODD_SIZES[si - N_SIZES];
        seed((uint64_t)n);
        for (int64_t i = 0; i < n; i++) xbuf[i] = (float)(gauss() * 100);
        for (int i = 0; i < n_special && i < n; i++) xbuf[i] = special[i];
        for (int k = 0; k < 3; k++) {
            const int t = types[k];
            const int64_t rb = row_bytes(t, n);
            memset(abuf_s, 0, sizeof abuf_s);
            memset(abuf_v, 0, sizeof abuf_v);
            S->type[t].quantize_act(xbuf, abuf_s, n);
            V->type[t].quantize_act(xbuf, abuf_v, n);
            int ok = 1;
            for (int i = 0; i < GUARD; i++) ok &= abuf_v[rb + i] == 0;
            if (t == PYRT_TYPE_F16) {
                for (int64_t i = 0; i < n; i++) {
                    const uint16_t hs = ((uint16_t *)abuf_s)[i], hv = ((uint16_t *)abuf_v)[i];
                    ok &= isnan(xbuf[i]) ? isnan(fp16f(hv)) : hs == hv;
                }
            } else {
                ok &= memcmp(abuf_s, abuf_v, (size_t)rb) == 0;
            }
            check(ok, "quantize_act %s n=%lld exact (specials, tail)", tname(t), (long long)n);
        }
    }
}

static void test_vec_dot(const pyrt_kernels *S, const pyrt_kernels *V) {
    for (int ti = 0; ti < N_WTYPES; ti++) {
        const int t = WEIGHT_TYPES[ti], at = pyrt_type_traits_table[t].act_type;
        if (V->type[t].vec_dot == S->type[t].vec_dot && V->type[at].quantize_act == S->type[at].quantize_act) continue;
        int ns;
        const int64_t *sizes = sizes_of(t, &ns);
        for (int si = 0; si < ns; si++) {
            const int64_t n = sizes[si];
            seed(2000 + (uint64_t)n + 13 * (uint64_t)t);
            for (int trial = 0; trial < 3; trial++) {
                if (trial == 0) random_weights(t, n, wbuf, -14, -2);
                else random_weights(t, n, wbuf, -10, -3);
                act_input(n, xbuf);
                S->type[at].quantize_act(xbuf, abuf_s, n);
                V->type[at].quantize_act(xbuf, abuf_v, n);
                double scale_s, scale_v;
                const double ref_s = emulate_dot(t, wbuf, abuf_s, n, &scale_s);
                const double ref_v = emulate_dot(t, wbuf, abuf_v, n, &scale_v);
                float ss = NAN, vs = NAN, vv = NAN;
                S->type[t].vec_dot(n, &ss, wbuf, abuf_s);
                V->type[t].vec_dot(n, &vs, wbuf, abuf_s);
                V->type[t].vec_dot(n, &vv, wbuf, abuf_v);
                const int ok_ref = fabs(ss - ref_s) <= DOT_EXACT_RTOL * scale_s + 1e-30;
                const int ok_exact = fabs(vs - ref_s) <= DOT_EXACT_RTOL * scale_s + 1e-30 &&
                                     fabs(vv - ref_v) <= DOT_EXACT_RTOL * scale_v + 1e-30;
                const int ok_same = fabs((double)vs - ss) <= DOT_VARIANT_RTOL_SAME_ACT * scale_s + 1e-30;
                const int ok_own = fabs((double)vv - ss) <= DOT_VARIANT_RTOL * scale_s + 1e-30;
                const int finite = isfinite(ss) && isfinite(vs) && isfinite(vv);
                check(ok_ref && ok_exact && ok_same && ok_own && finite,
                      "vec_dot %s n=%lld trial %d: emu %.9g scalar %.9g simd %.9g simd(own act) %.9g scale %.3g",
                      tname(t), (long long)n, trial, ref_s, ss, vs, vv, scale_s);
            }
        }
    }
}

static void test_vec_dot_float_odd(const pyrt_kernels *S, const pyrt_kernels *V) {
    const int types[3] = { PYRT_TYPE_F32, PYRT_TYPE_F16, PYRT_TYPE_BF16 };
    for (int k = 0; k < 3; k++) {
        const int t = types[k];
        for (int si = 0; si < N_ODD; si++) {
            const int64_t n = ODD_SIZES[si];
            seed((uint64_t)n + 100 * (uint64_t)t);
            random_weights(t, n, wbuf, 0, 0);
            for (int64_t i = 0; i < n; i++) xbuf[i] = (float)gauss();
            V->type[t].quantize_act(xbuf, abuf_v, n);
            double scale;
            const double ref = emulate_dot(t, wbuf, abuf_v, n, &scale);
            float ss = NAN, vs = NAN;
            S->type[t].vec_dot(n, &ss, wbuf, abuf_v);
            V->type[t].vec_dot(n, &vs, wbuf, abuf_v);
            check(fabs(vs - ref) <= DOT_EXACT_RTOL * scale && fabs(ss - ref) <= DOT_EXACT_RTOL * scale,
                  "vec_dot %s odd n=%lld: emu %.9g scalar %.9g simd %.9g", tname(t), (long long)n, ref, ss, vs);
        }
    }
}

/* The weights a model holds (dequantized) against the real f32 activations:
 * the only error left is activation quantization and f32 accumulation. */
static void test_vec_dot_nmse(const pyrt_kernels *S, const pyrt_kernels *V) {
    for (int ti = 0; ti < N_WTYPES; ti++) {
        const int t = WEIGHT_TYPES[ti], at = pyrt_type_traits_table[t].act_type;
        if (V->type[t].vec_dot == S->type[t].vec_dot && V->type[at].quantize_act == S->type[at].quantize_act) continue;
        seed(77 + (uint64_t)t);
        double err = 0, energy = 0;
        int ns;
        const int64_t *sizes = sizes_of(t, &ns);
        for (int si = 0; si < ns; si++) {
            const int64_t n = sizes[si];
            for (int rep = 0; rep < 8; rep++) {
                random_weights(t, n, wbuf, -10, -3);
                act_input(n, xbuf);
                /* Q8_K has one scale per 256: a x20 outlier costs every other
                 * element of its super-block 4 bits, which is the activation
                 * type's property, not the kernel's; K-quants get gaussians */
                if (is_kquant(t)) for (int64_t i = 0; i < n; i++) xbuf[i] = (float)gauss();
                S->type[t].dequantize(wbuf, fs, n);
                V->type[at].quantize_act(xbuf, abuf_v, n);
                float got = NAN;
                V->type[t].vec_dot(n, &got, wbuf, abuf_v);
                double ref = 0;
                for (int64_t i = 0; i < n; i++) ref += (double)fs[i] * (double)xbuf[i];
                err += (got - ref) * (got - ref);
                energy += ref * ref;
            }
        }
        const double nmse = err / energy;
        check(nmse <= DOT_NMSE_TOL, "vec_dot %s NMSE vs real values %.3g <= %g", tname(t), nmse, DOT_NMSE_TOL);
    }
}

static void test_f16_helpers(const pyrt_kernels *S, const pyrt_kernels *V) {
    static uint16_t bits[65536], hs[4 * 65536 + 16], hv[4 * 65536 + 16];
    static float a[65536], b[65536], x[4 * 65536 + 16];
    for (int i = 0; i < 65536; i++) bits[i] = (uint16_t)i;
    S->fp16_to_fp32(bits, a, 65536);
    V->fp16_to_fp32(bits, b, 65536);
    int bad = -1;
    for (int i = 0; i < 65536 && bad < 0; i++)
        if (!(bits32(a[i]) == bits32(b[i]) || (isnan(a[i]) && isnan(b[i])))) bad = i;
    check(bad < 0, "fp16_to_fp32 all bit patterns (first bad: %d)", bad);

    /* every finite fp16 value, its f32 neighbours, the midpoints (ties), specials */
    int64_t m = 0;
    float prev = -INFINITY;
    for (int i = 0; i < 65536; i++) {
        const uint16_t h = (uint16_t)(i < 32768 ? 0xFFFF - i : i - 32768);   /* ascending: -max .. +max */
        const float f = fp16f(h);
        if (!isfinite(f)) continue;
        x[m++] = f;
        x[m++] = nextafterf(f, INFINITY);
        x[m++] = nextafterf(f, -INFINITY);
        if (isfinite(prev) && prev < f) x[m++] = (float)((double)prev / 2 + (double)f / 2);
        prev = f;
    }
    const float special[] = { INFINITY, -INFINITY, NAN, 65519.99f, 65520.0f, 1e30f, 1e-30f };
    for (int i = 0; i < 7; i++) x[m++] = special[i];
    for (int rep = 0; rep < 2; rep++) {
        const int64_t n = rep ? m - 3 : m;   /* odd length: the scalar tail */
        memset(hv, 0xEE, sizeof hv);
        S->fp32_to_fp16(x, hs, n);
        V->fp32_to_fp16(x, hv, n);
        int64_t bad2 = -1;
        for (int64_t i = 0; i < n && bad2 < 0; i++)
            if (!(isnan(x[i]) ? isnan(fp16f(hv[i])) : hs[i] == hv[i])) bad2 = i;
        check(bad2 < 0 && hv[n] == 0xEEEE, "fp32_to_fp16 n=%lld exact round-to-nearest-even (first bad: %lld)",
              (long long)n, (long long)bad2);
    }

    static const int64_t ns[] = { 1, 7, 8, 31, 64, 100, 576, 1536, 4128 };
    for (int k = 0; k < (int)(sizeof ns / sizeof ns[0]); k++) {
        const int64_t n = ns[k];
        seed((uint64_t)n + 555);
        uint16_t *xh = hs, *yh = hv;
        for (int64_t i = 0; i < n; i++) {
            xh[i] = pyrt_fp32_to_fp16((float)gauss());
            yh[i] = pyrt_fp32_to_fp16((float)gauss());
        }
        double ref = 0, sc = 0;
        for (int64_t i = 0; i < n; i++) {
            const double p = (double)fp16f(xh[i]) * fp16f(yh[i]);
            ref += p;
            sc += fabs(p);
        }
        const float got = V->dot_f16(n, xh, yh);
        check(fabs(got - ref) <= F16_DOT_RTOL * sc, "dot_f16 n=%lld: %.9g vs %.9g", (long long)n, got, ref);

        float *acc = a;
        for (int64_t i = 0; i < n; i++) acc[i] = (float)gauss();
        acc[n] = 12345.0f;                   /* sentinel past the end */
        const float v = -0.3f;
        for (int64_t i = 0; i < n; i++) b[i] = acc[i];
        V->mad_f16(n, acc, xh, v);
        int ok = acc[n] == 12345.0f;
        for (int64_t i = 0; i < n; i++) {
            const double xv = (double)fp16f(xh[i]) * v, expect = (double)b[i] + xv;
            const float mag = fmaxf(fabsf(b[i]), fabsf(acc[i])) + fabsf((float)xv);
            ok &= fabs(acc[i] - expect) <= F16_MAD_ATOL_ULP * ulp(mag);
        }
        check(ok, "mad_f16 n=%lld within %d ulp, nothing written past the end", (long long)n, F16_MAD_ATOL_ULP);
    }
}

/* The matmul driver (activation quantization, row split over 2 threads of
 * the pool) with the variant's table, against float64 and the scalar table. */
static void test_matmul(int variant) {
    enum { ROWS = 37, COLS = 768, NTOK = 5 };   /* COLS: a multiple of 256 for the K-quants */
    static float y_v[NTOK * ROWS], y_s[NTOK * ROWS], wf[ROWS * COLS];
    for (int ti = 0; ti < N_WTYPES; ti++) {
        const int t = WEIGHT_TYPES[ti];
        const int64_t rb = row_bytes(t, COLS);
        seed(4000 + (uint64_t)t);
        static uint8_t w[ROWS * COLS * 4];
        for (int r = 0; r < ROWS; r++) {
            random_weights(t, COLS, w + r * rb, -10, -3);
            pyrt_kernels_get(PYRT_KERNELS_SCALAR)->type[t].dequantize(w + r * rb, wf + r * COLS, COLS);
        }
        /* plain gaussian activations: the NMSE bound then has a wide margin
         * (outlier blocks are test_vec_dot_nmse's business) */
        for (int i = 0; i < NTOK * COLS; i++) xbuf[i] = (float)gauss();
        for (int nt = 1; nt <= NTOK; nt += NTOK - 1) {
            const int st_v = pyrt_matmul(variant, t, w, ROWS, COLS, xbuf, nt, y_v, 2);
            const int st_s = pyrt_matmul(PYRT_KERNELS_SCALAR, t, w, ROWS, COLS, xbuf, nt, y_s, 2);
            double err = 0, energy = 0;
            int close = 1;
            for (int tok = 0; tok < nt; tok++)
                for (int r = 0; r < ROWS; r++) {
                    double ref = 0, mag = 0;
                    for (int c = 0; c < COLS; c++) {
                        const double p = (double)wf[r * COLS + c] * xbuf[tok * COLS + c];
                        ref += p;
                        mag += fabs(p);
                    }
                    const double got = y_v[tok * ROWS + r];
                    err += (got - ref) * (got - ref);
                    energy += ref * ref;
                    close &= fabs(got - y_s[tok * ROWS + r]) <= DOT_VARIANT_RTOL * mag + 1e-30;
                }
            check(st_v == PYRT_OK && st_s == PYRT_OK && err / energy <= DOT_NMSE_TOL && close,
                  "pyrt_matmul %s %dx%d, %d token(s), 2 threads: NMSE %.3g, close to scalar: %s",
                  tname(t), ROWS, COLS, nt, err / energy, close ? "yes" : "NO");
        }
    }
}

/* A batch in single-token arithmetic (pyrt_matmul_shape, n_shape -1): each
 * token's results bit for bit those of a one-token call, for 1..8 tokens
 * (the driver hands few tokens the whole row range, the GEMV tiles take
 * several tokens per pass), 2 threads, rows not a multiple of 8. */
static void test_per_token(int variant) {
    enum { ROWS = 203, COLS = 768, NTOK = 8 };
    static float y_b[NTOK * ROWS], y_1[NTOK * ROWS], x[NTOK * COLS];
    static uint8_t w[ROWS * COLS * 4];
    for (int ti = 0; ti < N_WTYPES; ti++) {
        const int t = WEIGHT_TYPES[ti];
        const int64_t rb = row_bytes(t, COLS);
        seed(7000 + (uint64_t)t);
        for (int r = 0; r < ROWS; r++) random_weights(t, COLS, w + r * rb, -10, -3);
        for (int i = 0; i < NTOK * COLS; i++) x[i] = (float)gauss();
        int st = PYRT_OK;
        for (int k = 0; k < NTOK; k++)
            st |= pyrt_matmul(variant, t, w, ROWS, COLS, x + k * COLS, 1, y_1 + k * ROWS, 2);
        int same = st == PYRT_OK;
        for (int nt = 2; nt <= NTOK; nt++) {
            same &= pyrt_matmul_shape(variant, t, w, ROWS, COLS, x, nt, PYRT_NUMERICS_PER_TOKEN, y_b, 2) == PYRT_OK;
            same &= memcmp(y_b, y_1, sizeof(float) * (size_t)(nt * ROWS)) == 0;
        }
        check(same, "pyrt_matmul_shape %s %dx%d, 2..%d tokens per token == one-token calls", tname(t), ROWS, COLS, NTOK);
    }
}

/* Register-tiled products: every output bit-identical to the table's own
 * row kernel on the same bytes (the driver may use either), nothing written
 * outside the n_rows x n_tok block. */
static void test_gemm(const pyrt_kernels *V) {
    static const int64_t ns[] = { 32, 64, 96, 576, 32 * 37, 4096 + 32 };
    static const int64_t rows_l[] = { 1, 2, 3, 5 }, toks_l[] = { 1, 2, 3, 4, 7 };
    enum { MAXR = 5, MAXT = 7, LDY = 9 };
    static uint8_t W[MAXR * (MAXN / 32) * 36], A[MAXT * (MAXN / 32) * 36];
    static float Y[MAXT * LDY];
    for (int ti = 0; ti < N_WTYPES; ti++) {
        const int t = WEIGHT_TYPES[ti], at = pyrt_type_traits_table[t].act_type;
        if (!V->type[t].gemm) continue;
        for (int ni = 0; ni < (int)(sizeof ns / sizeof ns[0]); ni++) {
            const int64_t n = ns[ni], wrb = row_bytes(t, n), arb = row_bytes(at, n);
            seed(6000 + (uint64_t)n + 31 * (uint64_t)t);
            for (int r = 0; r < MAXR; r++) random_weights(t, n, W + r * wrb, -10, -3);
            for (int k = 0; k < MAXT; k++) {
                act_input(n, xbuf);
                V->type[at].quantize_act(xbuf, A + k * arb, n);
            }
            int bad = 0, untouched = 1;
            for (int ri = 0; ri < 4; ri++)
                for (int tj = 0; tj < 5; tj++) {
                    const int64_t nr = rows_l[ri], nt = toks_l[tj];
                    for (int i = 0; i < MAXT * LDY; i++) Y[i] = -12345.0f;
                    V->type[t].gemm(n, W, wrb, nr, A, arb, nt, Y, LDY);
                    for (int64_t k = 0; k < MAXT; k++)
                        for (int64_t r = 0; r < LDY; r++) {
                            const float got = Y[k * LDY + r];
                            if (k < nt && r < nr) {
                                float ref = NAN;
                                V->type[t].vec_dot(n, &ref, W + r * wrb, A + k * arb);
                                bad += bits32(got) != bits32(ref);
                            } else {
                                untouched &= got == -12345.0f;
                            }
                        }
                }
            check(bad == 0 && untouched, "gemm %s n=%lld, 1..5 rows x 1..7 tokens: bit-identical to vec_dot "
                  "(%d differ)%s", tname(t), (long long)n, bad, untouched ? "" : ", wrote outside its block");
        }
    }
}

/* ---- ops: softmax, SwiGLU, rope, attention over an F16 cache -------------------- */
#define OPS_RTOL        1e-5   /* softmax / SwiGLU / rope: another exp or sum order than scalar's */
#define ATTN_NMSE_TOL   5e-4   /* tests/test_ops.py's NMSE_ATTENTION                             */

static double nmse(const float *got, const float *want, int n) {
    double e = 0, w = 0;
    for (int i = 0; i < n; i++) {
        e += ((double)got[i] - want[i]) * ((double)got[i] - want[i]);
        w += (double)want[i] * want[i];
    }
    return w > 0 ? e / w : e;
}

static int close_rel(const float *got, const float *want, int n, double rtol, double atol) {
    for (int i = 0; i < n; i++)
        if (!(fabs((double)got[i] - want[i]) <= atol + rtol * fabs((double)want[i]))) return 0;
    return 1;
}

#define ATTN_CTX 1100
#define ATTN_MAXQ 12
static pyrt_fp16 g_kc[ATTN_CTX * 2 * 128], g_vc[ATTN_CTX * 2 * 128];
static float g_sc[ATTN_MAXQ * (ATTN_CTX + 32)], g_acc[ATTN_MAXQ * (128 + 264) + 32 * 128 + PYRT_ATTN_ACC_MIN];
static pyrt_fp16 g_p16[ATTN_CTX + 32], g_q16[128];

static pyrt_attn_args attn_args(int hd, int batched) {
    pyrt_attn_args a;
    memset(&a, 0, sizeof a);
    a.k = g_kc + hd;                   /* the second of two interleaved kv heads */
    a.v = g_vc + hd;
    a.stride = 2 * hd;
    a.head_dim = hd;
    a.batched = batched;
    a.scale = 1.0f / sqrtf((float)hd);
    a.scores = g_sc;
    a.probs16 = g_p16;
    a.q16 = g_q16;
    a.acc = g_acc;
    return a;
}

static void test_ops(const pyrt_kernels *S, const pyrt_kernels *V) {
    static float x[4099], y[4099], u[4099];
    seed(41);
    for (int n = 8; n <= 4096; n *= 2) {                 /* the router's dot: the same lanes, bit for bit */
        for (int i = 0; i < n; i++) { x[i] = (float)gauss(); y[i] = (float)gauss(); }
        const float a = S->dot_f32_8(x, y, n), b = V->dot_f32_8(x, y, n);
        check(memcmp(&a, &b, sizeof a) == 0, "dot_f32_8 n=%d: %.9g vs %.9g", n, (double)b, (double)a);
    }
    for (int n = 1; n <= 4099; n = n * 3 + 2) {          /* softmax: groups of 4 or 8 and tails */
        for (int i = 0; i < n; i++) x[i] = y[i] = (float)(gauss() * 6.0);
        if (n > 20) x[7] = y[7] = -INFINITY;               /* a masked position */
        S->softmax(x, n);
        V->softmax(y, n);
        check(close_rel(y, x, n, OPS_RTOL, 1e-9), "softmax n=%d", n);
        for (int i = 0; i < n; i++) {
            x[i] = y[i] = (float)(gauss() * (i % 5 == 0 ? 40.0 : 3.0));   /* exp far past +-88 too */
            u[i] = (float)gauss();
        }
        S->swiglu(x, u, n);
        V->swiglu(y, u, n);
        check(close_rel(y, x, n, OPS_RTOL, 1e-30), "swiglu n=%d", n);
    }
    for (int mode = 0; mode <= 2; mode += 2) {           /* PYRT_ROPE_NORMAL, PYRT_ROPE_NEOX */
        for (int i = 0; i < 128; i++) x[i] = y[i] = (float)gauss();
        S->rope(x, 128, mode, 1234.0f, 10000.0f, 1.0f, NULL, 1.0f);
        V->rope(y, 128, mode, 1234.0f, 10000.0f, 1.0f, NULL, 1.0f);
        check(close_rel(y, x, 128, 1e-5, 1e-6), "rope mode %d", mode);
        /* the forward pass's two steps (a token's table, then its heads): the table's own rope
         * bit for bit, with frequency factors and attn_factor */
        float cs[128], ff[64];
        for (int i = 0; i < 64; i++) ff[i] = 1.0f + (float)(i % 7);
        V->rope_cache(cs, 128, 777.0f, 500000.0f, 0.5f, ff, 1.19f);
        for (int i = 0; i < 128; i++) x[i] = y[i] = (float)gauss();
        V->rope(x, 128, mode, 777.0f, 500000.0f, 0.5f, ff, 1.19f);
        V->rope_cs(y, 128, mode, cs);
        check(memcmp(x, y, sizeof(float) * 128) == 0, "rope_cs mode %d != rope", mode);
    }

    static const int HD[] = { 64, 40, 72, 128 };
    static const int RANGE[][2] = { { 0, 0 }, { 0, 1 }, { 0, 37 }, { 5, 300 }, { 3, 1023 } };
    seed(42);
    for (int i = 0; i < ATTN_CTX * 2 * 128; i++) {
        g_kc[i] = pyrt_fp32_to_fp16((float)gauss());
        g_vc[i] = pyrt_fp32_to_fp16((float)gauss());
    }
    static float q[ATTN_MAXQ * 2 * 128], got[ATTN_MAXQ * 2 * 128], want[128], ref[128];
    for (int h = 0; h < 4; h++) {
        const int hd = HD[h];
        for (int batched = 0; batched <= 1; batched++) {
            for (int r = 0; r < 5; r++) {                 /* one query against the scalar kernel */
                for (int d = 0; d < hd; d++) q[d] = (float)(gauss() * 2.0);
                pyrt_attn_args a = attn_args(hd, batched);
                a.q = q;
                a.first = RANGE[r][0];
                a.last = RANGE[r][1];
                a.out = ref;
                S->attn_head(&a);
                a.out = want;
                V->attn_head(&a);
                const double e = nmse(want, ref, hd);
                check(e <= ATTN_NMSE_TOL, "attn_head hd=%d batched=%d [%d, %d]: nmse %.3g", hd, batched,
                      RANGE[r][0], RANGE[r][1], e);
            }
            /* a group (3 heads x 4 tokens, sliding window) is each query's one-query call, bit for bit */
            const int gqa = 3, nt = 4, qd = 2 * gqa * hd, last = 250, window = 100;
            for (int i = 0; i < nt * qd; i++) q[i] = (float)(gauss() * 3.0), got[i] = NAN;
            pyrt_attn_args a = attn_args(hd, batched);
            a.q = q + gqa * hd;
            a.out = got + gqa * hd;
            a.n_tok = nt;
            a.n_head = gqa;
            a.q_stride = qd;
            a.window = window;
            a.last = last;
            V->attn_head(&a);
            int same = 1;
            for (int t = 0; t < nt; t++)
                for (int g = 0; g < gqa; g++) {
                    pyrt_attn_args b = attn_args(hd, batched);
                    b.q = q + t * qd + (gqa + g) * hd;
                    b.out = want;
                    b.last = last + t;
                    b.first = b.last - window + 1;
                    V->attn_head(&b);
                    same &= memcmp(want, got + t * qd + (gqa + g) * hd, sizeof(float) * (size_t)hd) == 0;
                }
            check(same, "attn_head group of %dx%d == one-query calls, hd=%d batched=%d", nt, gqa, hd, batched);
        }
    }
}

/* Every entry of V that exists, against S. */
static void test_table(const char *label, const pyrt_kernels *S, const pyrt_kernels *V) {
    g_table = label;
    int complete = V->fp32_to_fp16 && V->fp16_to_fp32 && V->dot_f16 && V->mad_f16;
    for (int ti = 0; ti < N_WTYPES; ti++)
        complete &= V->type[WEIGHT_TYPES[ti]].dequantize && V->type[WEIGHT_TYPES[ti]].vec_dot;
    const int acts[] = { PYRT_TYPE_F32, PYRT_TYPE_F16, PYRT_TYPE_BF16, PYRT_TYPE_Q8_0, PYRT_TYPE_Q8_1, PYRT_TYPE_Q8_K };
    for (int i = 0; i < 6; i++) complete &= V->type[acts[i]].quantize_act != NULL;
    check(complete, "table has every entry the scalar table has (after fallback)");
    if (!complete) return;
    test_dequantize(S, V);
    test_dequantize_all_f16_bf16(S, V);
    test_quantize_act_q8(S, V);
    test_quantize_act_q8_K(S, V);
    test_quantize_act_float(S, V);
    test_vec_dot(S, V);
    test_vec_dot_float_odd(S, V);
    test_vec_dot_nmse(S, V);
    test_f16_helpers(S, V);
    test_gemm(V);
    test_ops(S, V);
}

#if TEST_NEON
#endif

/* PYRT_KERNELS and pyrt_kernels_select pick the SIMD variant by default. */
static void test_dispatch(int variant) {
    g_table = "dispatch";
    unsetenv("PYRT_KERNELS");
    check(pyrt_kernels_available(variant) == 1, "%s is available", pyrt_kernels_name(variant));
    check(pyrt_kernels_select(PYRT_KERNELS_AUTO) == PYRT_OK && pyrt_kernels_active() == variant,
          "auto selects %s", pyrt_kernels_name(variant));
    setenv("PYRT_KERNELS", "scalar", 1);
    check(pyrt_kernels_select(PYRT_KERNELS_AUTO) == PYRT_OK && pyrt_kernels_active() == PYRT_KERNELS_SCALAR,
          "PYRT_KERNELS=scalar selects scalar");
    setenv("PYRT_KERNELS", pyrt_kernels_name(variant), 1);
    check(pyrt_kernels_select(PYRT_KERNELS_AUTO) == PYRT_OK && pyrt_kernels_active() == variant,
          "PYRT_KERNELS=%s selects it", pyrt_kernels_name(variant));
    unsetenv("PYRT_KERNELS");
    check(pyrt_kernels_current() == pyrt_kernels_get(variant), "current table is the %s table",
          pyrt_kernels_name(variant));
    test_matmul(variant);
    test_per_token(variant);
    g_table = "dispatch";
    /* through the validated entry point */
    static block_q8_0 w[3], a[3];
    memset(w, 0, sizeof w);
    memset(a, 0, sizeof a);
    for (int b = 0; b < 3; b++) {
        w[b].d = a[b].d = pyrt_fp32_to_fp16(1.0f);
        for (int j = 0; j < 32; j++) { w[b].qs[j] = (int8_t)(j - 16); a[b].qs[j] = (int8_t)(b + 1); }
    }
    float out = NAN;
    const int st = pyrt_vec_dot(variant, PYRT_TYPE_Q8_0, 96, w, a, &out);
    check(st == PYRT_OK && out == -16.0f * 6.0f, "pyrt_vec_dot(%s, q8_0) = %g (expect -96)",
          pyrt_kernels_name(variant), out);
    check(pyrt_vec_dot(variant, PYRT_TYPE_Q8_0, 33, w, a, &out) == PYRT_ERR_INVALID_ARG,
          "pyrt_vec_dot rejects n=33 for q8_0");
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "-v") == 0) g_verbose = 1;
    const pyrt_kernels *S = pyrt_kernels_get(PYRT_KERNELS_SCALAR);
    if (!S) { printf("no scalar table\n0 passed, 1 failed\n"); return 1; }
    int tested = 0;

#if TEST_NEON
    const int has_dp = pyrt_neon_cpu_has_dotprod();
    printf("aarch64: CPU dot-product instructions: %s\n", has_dp ? "yes" : "no");
    pyrt_kernels raw, base, sdot;
    memset(&raw, 0, sizeof raw);
    pyrt_fill_quants_neon_ex(&raw, 0);
    pyrt_fill_iquants_neon_ex(&raw, 0);
    pyrt_fill_ops_neon(&raw);
    pyrt_kernels_merge(&base, S, &raw);
    test_table("neon", S, &base);
    tested++;
    if (has_dp) {
        memset(&raw, 0, sizeof raw);
        pyrt_fill_quants_neon_ex(&raw, 1);
        pyrt_fill_iquants_neon_ex(&raw, 1);
        pyrt_fill_ops_neon(&raw);
        pyrt_kernels_merge(&sdot, S, &raw);
        g_table = "neon+dotprod";
        check(sdot.type[PYRT_TYPE_Q8_0].vec_dot != base.type[PYRT_TYPE_Q8_0].vec_dot, "dotprod code is built in");
        test_table("neon+dotprod", S, &sdot);
        tested++;
    }
    const pyrt_kernels *D = pyrt_kernels_get(PYRT_KERNELS_NEON);
    g_table = "dispatch";
    check(D != NULL, "neon table is available");
    if (D) {
        const pyrt_kernels *expect = has_dp ? &sdot : &base;
        int same = 1;
        for (int t = 0; t < PYRT_TYPE_COUNT; t++)
            same &= D->type[t].vec_dot == expect->type[t].vec_dot && D->type[t].dequantize == expect->type[t].dequantize &&
                    D->type[t].quantize_act == expect->type[t].quantize_act && D->type[t].gemm == expect->type[t].gemm;
        same &= D->attn_head == expect->attn_head && D->softmax == expect->softmax;
        check(same, "dispatch picked the %s set", has_dp ? "dotprod" : "baseline");
    }
    test_dispatch(PYRT_KERNELS_NEON);
#elif defined(__x86_64__)
    if (pyrt_kernels_available(PYRT_KERNELS_AVX2)) {
        printf("x86-64: testing the AVX2 table\n");
        const pyrt_kernels *A = pyrt_kernels_get(PYRT_KERNELS_AVX2);
        g_table = "dispatch";
        check(A->softmax != S->softmax && A->dot_f32_8 != S->dot_f32_8 && A->swiglu != S->swiglu && A->rope != S->rope && A->geglu != S->geglu &&
              A->attn_head != S->attn_head && A->attn_head_fa != S->attn_head_fa,
              "the avx2 table keeps its own ops through the merge over the scalar table");
        test_table("avx2", S, A);
        tested++;
        int best = PYRT_KERNELS_AVX2;
        if (pyrt_kernels_available(PYRT_KERNELS_AVX512)) {
            printf("x86-64: testing the AVX-512 table\n");
            test_table("avx512", S, pyrt_kernels_get(PYRT_KERNELS_AVX512));
            tested++;
            test_matmul(PYRT_KERNELS_AVX2);
            test_per_token(PYRT_KERNELS_AVX2);
            best = PYRT_KERNELS_AVX512;
        }
        test_dispatch(best);     /* auto picks the best table */
    } else {
        printf("x86-64: this CPU/build has no AVX2 table; nothing to compare\n");
    }
#else
    printf("no SIMD kernel table for this architecture/build; nothing to compare\n");
#endif
    printf("%d table(s) tested\n%d passed, %d failed\n", tested, g_passed, g_failed);
    return g_failed ? 1 : 0;
}
