/* core/dispatch.c — tensor type traits, CPU feature detection, kernel table
 * selection (PYRT_KERNELS override) and the validated kernel entry points
 * used by tests and tools. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include "kernels.h"

#if defined(__x86_64__) && !defined(PYRT_NO_AVX2_KERNELS)
#define PYRT_BUILD_AVX2 1
#else
#define PYRT_BUILD_AVX2 0
#endif
#if defined(__aarch64__) && defined(PYRT_HAVE_NEON_KERNELS)
#define PYRT_BUILD_NEON 1
#else
#define PYRT_BUILD_NEON 0
#endif

/* ======================================================================== */
/* type traits (ids are ggml's). act_type -1: not usable as a weight type.   */
/* Adding a type: one row here + its kernels in generic/ (quants, kquants, iquants).*/
/* ======================================================================== */

const pyrt_type_traits pyrt_type_traits_table[PYRT_TYPE_COUNT] = {
    [PYRT_TYPE_F32]  = { "f32",  1,     4,                  PYRT_TYPE_F32  },
    [PYRT_TYPE_F16]  = { "f16",  1,     2,                  PYRT_TYPE_F16  },
    [PYRT_TYPE_BF16] = { "bf16", 1,     2,                  PYRT_TYPE_BF16 },
    [PYRT_TYPE_Q4_0] = { "q4_0", QK4_0, sizeof(block_q4_0), PYRT_TYPE_Q8_0 },
    [PYRT_TYPE_Q4_1] = { "q4_1", QK4_1, sizeof(block_q4_1), PYRT_TYPE_Q8_1 },
    [PYRT_TYPE_Q5_0] = { "q5_0", QK5_0, sizeof(block_q5_0), PYRT_TYPE_Q8_0 },
    [PYRT_TYPE_Q5_1] = { "q5_1", QK5_1, sizeof(block_q5_1), PYRT_TYPE_Q8_1 },
    [PYRT_TYPE_Q8_0] = { "q8_0", QK8_0, sizeof(block_q8_0), PYRT_TYPE_Q8_0 },
    [PYRT_TYPE_Q8_1] = { "q8_1", QK8_1, sizeof(block_q8_1), -1             },
    [PYRT_TYPE_Q2_K] = { "q2_K", QK_K,  sizeof(block_q2_K), PYRT_TYPE_Q8_K },
    [PYRT_TYPE_Q3_K] = { "q3_K", QK_K,  sizeof(block_q3_K), PYRT_TYPE_Q8_K },
    [PYRT_TYPE_Q4_K] = { "q4_K", QK_K,  sizeof(block_q4_K), PYRT_TYPE_Q8_K },
    [PYRT_TYPE_Q5_K] = { "q5_K", QK_K,  sizeof(block_q5_K), PYRT_TYPE_Q8_K },
    [PYRT_TYPE_Q6_K] = { "q6_K", QK_K,  sizeof(block_q6_K), PYRT_TYPE_Q8_K },
    [PYRT_TYPE_Q8_K] = { "q8_K", QK_K,  sizeof(block_q8_K), -1             },
    [PYRT_TYPE_IQ4_NL] = { "iq4_nl", QK4_NL, sizeof(block_iq4_nl), PYRT_TYPE_Q8_0 },
    [PYRT_TYPE_IQ4_XS] = { "iq4_xs", QK_K,   sizeof(block_iq4_xs), PYRT_TYPE_Q8_K },
};

static int type_known(int32_t type) {
    return type >= 0 && type < PYRT_TYPE_COUNT && pyrt_type_traits_table[type].block_size > 0;
}

int32_t pyrt_type_block_size(int32_t type) {
    return type_known(type) ? pyrt_type_traits_table[type].block_size : 0;
}

int64_t pyrt_type_block_bytes(int32_t type) {
    return type_known(type) ? pyrt_type_traits_table[type].block_bytes : 0;
}

/* -1 for unknown types and for types that are never weights (Q8_1, Q8_K). */
int32_t pyrt_type_act_type(int32_t type) {
    return type_known(type) ? pyrt_type_traits_table[type].act_type : -1;
}

/* ======================================================================== */
/* kernel tables                                                             */
/* ======================================================================== */

enum { N_VARIANTS = 4 };

static pyrt_kernels g_tables[N_VARIANTS];
static int g_available[N_VARIANTS];
static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static volatile int g_active = PYRT_KERNELS_SCALAR;   /* written under g_select_lock */
static pthread_mutex_t g_select_lock = PTHREAD_MUTEX_INITIALIZER;

static int cpu_has_avx2(void) {
#if PYRT_BUILD_AVX2
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
           __builtin_cpu_supports("f16c");
#else
    return 0;
#endif
}

#if PYRT_BUILD_AVX2 && defined(PYRT_HAVE_AVX512)
/* __builtin_cpu_supports also checks that the OS saves the zmm state */
static int cpu_has_avx512(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
           __builtin_cpu_supports("avx512vnni") && !getenv("PYRT_NO_AVX512");
}
#endif

/* What a SIMD variant's entry does where its fill left it NULL: INHERIT takes
 * the scalar table's kernel (same results, slower); OWN stays NULL, because
 * the repacked (r8, r8x4) and tiled dot orders and the register-tiled GEMMs
 * are each ISA's own choice, made to match what llama.cpp's build for that
 * ISA computes for a shape (pyrt_pick_vec_dot in kernels.h). */
#define INHERIT(f) if (v->f) d->f = v->f
#define OWN(f)     d->f = v->f
static void merge_type(pyrt_type_kernels *d, const pyrt_type_kernels *v) {
    INHERIT(dequantize); INHERIT(quantize_act); INHERIT(quantize_row); INHERIT(vec_dot); INHERIT(vec_dot_tiled);
    INHERIT(tiled_min_tok);
    OWN(vec_dot_r8); OWN(vec_dot_r8x4); OWN(gemm); OWN(gemm_r8); OWN(gemm_tiled); OWN(gemm_r8x4);
}

static void merge_ops(pyrt_kernels *d, const pyrt_kernels *v) {
    INHERIT(name);
    INHERIT(fp32_to_fp16); INHERIT(fp16_to_fp32); INHERIT(dot_f16); INHERIT(mad_f16);
    INHERIT(rope); INHERIT(rope_cache); INHERIT(rope_cs); INHERIT(swiglu); INHERIT(geglu); INHERIT(softmax); INHERIT(dot_f32_8); INHERIT(attn_head); INHERIT(attn_heads); INHERIT(attn_heads_split); INHERIT(attn_head_fa);
}
#undef INHERIT
#undef OWN

/* dst = base with a variant's entries (a table its fill set from empty)
 * merged over it. Exported for tests/c/test_kernels.c, which builds the NEON
 * tables of both instruction sets the same way. */
void pyrt_kernels_merge(pyrt_kernels *dst, const pyrt_kernels *base, const pyrt_kernels *simd) {
    *dst = *base;
    for (int t = 0; t < PYRT_TYPE_COUNT; t++) merge_type(&dst->type[t], &simd->type[t]);
    merge_ops(dst, simd);
}

/* A SIMD table starts as a copy of the scalar one; the variant's fill sets
 * what it implements in an empty table, which is then merged over the copy. */
static void overlay(pyrt_kernels *dst, const pyrt_kernels *base, void (*fill)(pyrt_kernels *)) {
    pyrt_kernels simd;
    memset(&simd, 0, sizeof simd);
    fill(&simd);
    pyrt_kernels_merge(dst, base, &simd);
}

static void fill_avx2_all(pyrt_kernels *k) {
#if PYRT_BUILD_AVX2
    pyrt_fill_quants_avx2(k);
    pyrt_fill_iquants_avx2(k);
    pyrt_fill_ops_avx2(k);
#if defined(PYRT_HAVE_AVXVNNI)
    __builtin_cpu_init();
    const int vnni = __builtin_cpu_supports("avxvnni") && !getenv("PYRT_NO_VNNI");
    if (vnni) pyrt_fill_quants_gemm_avxvnni(k);
    else pyrt_fill_quants_gemm_avx2(k);
    if (vnni) pyrt_fill_kquants_gemm_avxvnni(k);
    else pyrt_fill_kquants_gemm_avx2(k);
#else
    pyrt_fill_quants_gemm_avx2(k);
    pyrt_fill_kquants_gemm_avx2(k);
#endif
#else
    (void)k;
#endif
}

#if PYRT_BUILD_NEON
static void fill_neon_all(pyrt_kernels *k) {
    pyrt_fill_quants_neon(k);      /* clears the table first */
    pyrt_fill_iquants_neon(k);
    pyrt_fill_ops_neon(k);
}
#endif

static int best_available(void) {
    if (g_available[PYRT_KERNELS_AVX512]) return PYRT_KERNELS_AVX512;
    if (g_available[PYRT_KERNELS_AVX2]) return PYRT_KERNELS_AVX2;
    if (g_available[PYRT_KERNELS_NEON]) return PYRT_KERNELS_NEON;
    return PYRT_KERNELS_SCALAR;
}

/* PYRT_KERNELS=scalar|avx2|avx512|neon|auto; unknown or unavailable -> best. */
static int variant_from_env(void) {
    const char *e = getenv("PYRT_KERNELS");
    if (e) {
        if (strcmp(e, "scalar") == 0) return PYRT_KERNELS_SCALAR;
        if (strcmp(e, "avx2") == 0 && g_available[PYRT_KERNELS_AVX2]) return PYRT_KERNELS_AVX2;
        if (strcmp(e, "avx512") == 0 && g_available[PYRT_KERNELS_AVX512]) return PYRT_KERNELS_AVX512;
        if (strcmp(e, "neon") == 0 && g_available[PYRT_KERNELS_NEON]) return PYRT_KERNELS_NEON;
    }
    return best_available();
}

static void init_once(void) {
    pyrt_fill_quants_scalar(&g_tables[PYRT_KERNELS_SCALAR]);
    pyrt_fill_iquants_scalar(&g_tables[PYRT_KERNELS_SCALAR]);
    pyrt_fill_ops_scalar(&g_tables[PYRT_KERNELS_SCALAR]);
    g_tables[PYRT_KERNELS_SCALAR].name = "scalar";
    g_available[PYRT_KERNELS_SCALAR] = 1;
#if PYRT_BUILD_AVX2
    if (cpu_has_avx2()) {
        overlay(&g_tables[PYRT_KERNELS_AVX2], &g_tables[PYRT_KERNELS_SCALAR], fill_avx2_all);
        g_tables[PYRT_KERNELS_AVX2].name = "avx2";
        g_available[PYRT_KERNELS_AVX2] = 1;
#if defined(PYRT_HAVE_AVX512)
        /* the AVX2 table with the GEMM tiles in 512-bit registers */
        if (cpu_has_avx512()) {
            g_tables[PYRT_KERNELS_AVX512] = g_tables[PYRT_KERNELS_AVX2];
            pyrt_fill_quants_gemm_avx512(&g_tables[PYRT_KERNELS_AVX512]);
            pyrt_fill_kquants_gemm_avx512(&g_tables[PYRT_KERNELS_AVX512]);
            g_tables[PYRT_KERNELS_AVX512].name = "avx512";
            g_available[PYRT_KERNELS_AVX512] = 1;
        }
#endif
    }
#endif
#if PYRT_BUILD_NEON
    overlay(&g_tables[PYRT_KERNELS_NEON], &g_tables[PYRT_KERNELS_SCALAR], fill_neon_all);
    g_tables[PYRT_KERNELS_NEON].name = "neon";
    g_available[PYRT_KERNELS_NEON] = 1;
#endif
    __atomic_store_n(&g_active, variant_from_env(), __ATOMIC_RELEASE);
}

static inline void ensure_init(void) { pthread_once(&g_once, init_once); }

int32_t pyrt_kernels_available(int32_t variant) {
    ensure_init();
    if (variant == PYRT_KERNELS_AUTO) return 1;
    return variant >= 0 && variant < N_VARIANTS && g_available[variant];
}

int32_t pyrt_kernels_active(void) {
    ensure_init();
    return __atomic_load_n(&g_active, __ATOMIC_ACQUIRE);
}

int pyrt_kernels_select(int32_t variant) {
    ensure_init();
    int v;
    if (variant == PYRT_KERNELS_AUTO) {
        v = variant_from_env();
    } else if (variant >= 0 && variant < N_VARIANTS) {
        if (!g_available[variant])
            return pyrt_set_error(PYRT_ERR_UNSUPPORTED, "kernel variant %s is not available on this CPU/build",
                                  pyrt_kernels_name(variant));
        v = variant;
    } else {
        return pyrt_set_error(PYRT_ERR_INVALID_ARG, "unknown kernel variant %d", (int)variant);
    }
    pthread_mutex_lock(&g_select_lock);
    __atomic_store_n(&g_active, v, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&g_select_lock);
    return PYRT_OK;
}

const char *pyrt_kernels_name(int32_t variant) {
    switch (variant) {
    case PYRT_KERNELS_AUTO:   return "auto";
    case PYRT_KERNELS_SCALAR: return "scalar";
    case PYRT_KERNELS_AVX2:   return "avx2";
    case PYRT_KERNELS_NEON:   return "neon";
    case PYRT_KERNELS_AVX512: return "avx512";
    default:                  return "unknown";
    }
}

const pyrt_kernels *pyrt_kernels_get(int32_t variant) {
    ensure_init();
    if (variant == PYRT_KERNELS_AUTO) variant = pyrt_kernels_active();
    if (variant < 0 || variant >= N_VARIANTS || !g_available[variant]) return NULL;
    return &g_tables[variant];
}

const pyrt_kernels *pyrt_kernels_current(void) {
    return pyrt_kernels_get(pyrt_kernels_active());
}

/* 1 if a weight of this type can go through vec_dot (scalar always has it). */
int32_t pyrt_type_supported(int32_t type) {
    if (!type_known(type)) return 0;
    const int32_t at = pyrt_type_traits_table[type].act_type;
    if (at < 0) return 0;
    const pyrt_kernels *k = pyrt_kernels_get(PYRT_KERNELS_SCALAR);
    return k->type[type].vec_dot != NULL && k->type[at].quantize_act != NULL;
}

/* ======================================================================== */
/* validated entry points for tests and tools                                */
/* ======================================================================== */

static int get_table(int32_t variant, const pyrt_kernels **out) {
    if (variant != PYRT_KERNELS_AUTO && (variant < 0 || variant >= N_VARIANTS))
        return pyrt_set_error(PYRT_ERR_INVALID_ARG, "unknown kernel variant %d", (int)variant);
    *out = pyrt_kernels_get(variant);
    if (!*out)
        return pyrt_set_error(PYRT_ERR_UNSUPPORTED, "kernel variant %s is not available on this CPU/build",
                              pyrt_kernels_name(variant));
    return PYRT_OK;
}

static int check_type_n(int32_t type, int64_t n, const char *what) {
    if (!type_known(type))
        return pyrt_set_error(PYRT_ERR_UNSUPPORTED, "%s: unknown tensor type %d", what, (int)type);
    const int64_t bs = pyrt_type_traits_table[type].block_size;
    if (n <= 0 || n % bs != 0)
        return pyrt_set_error(PYRT_ERR_INVALID_ARG, "%s: n=%lld is not a positive multiple of the %s block size %lld",
                              what, (long long)n, pyrt_type_traits_table[type].name, (long long)bs);
    return PYRT_OK;
}

int pyrt_dequantize(int32_t variant, int32_t type, const void *src, float *dst, int64_t n) {
    const pyrt_kernels *k;
    int st = get_table(variant, &k);
    if (st) return st;
    if ((st = check_type_n(type, n, "dequantize"))) return st;
    if (!src || !dst) return pyrt_set_error(PYRT_ERR_INVALID_ARG, "dequantize: NULL pointer");
    if (!k->type[type].dequantize)
        return pyrt_set_error(PYRT_ERR_UNSUPPORTED, "dequantize: no %s kernel for type %s", k->name,
                              pyrt_type_traits_table[type].name);
    k->type[type].dequantize(src, dst, n);
    return PYRT_OK;
}

int pyrt_quantize_act(int32_t variant, int32_t act_type, const float *src, void *dst, int64_t n) {
    const pyrt_kernels *k;
    int st = get_table(variant, &k);
    if (st) return st;
    if ((st = check_type_n(act_type, n, "quantize_act"))) return st;
    if (!src || !dst) return pyrt_set_error(PYRT_ERR_INVALID_ARG, "quantize_act: NULL pointer");
    if (!k->type[act_type].quantize_act)
        return pyrt_set_error(PYRT_ERR_UNSUPPORTED, "quantize_act: no %s kernel for activation type %s", k->name,
                              pyrt_type_traits_table[act_type].name);
    k->type[act_type].quantize_act(src, dst, n);
    return PYRT_OK;
}

int pyrt_vec_dot(int32_t variant, int32_t wtype, int64_t n, const void *w, const void *act, float *out) {
    const pyrt_kernels *k;
    int st = get_table(variant, &k);
    if (st) return st;
    if ((st = check_type_n(wtype, n, "vec_dot"))) return st;
    if (!w || !act || !out) return pyrt_set_error(PYRT_ERR_INVALID_ARG, "vec_dot: NULL pointer");
    const int32_t at = pyrt_type_traits_table[wtype].act_type;
    if (at < 0 || !k->type[wtype].vec_dot)
        return pyrt_set_error(PYRT_ERR_UNSUPPORTED, "vec_dot: no %s kernel for weight type %s", k->name,
                              pyrt_type_traits_table[wtype].name);
    /* the activation row has the same element count; its block size divides n
     * for every pairing in the traits table */
    if (n % pyrt_type_traits_table[at].block_size != 0)
        return pyrt_set_error(PYRT_ERR_INVALID_ARG, "vec_dot: n=%lld is not a multiple of the %s block size",
                              (long long)n, pyrt_type_traits_table[at].name);
    k->type[wtype].vec_dot(n, out, w, act);
    return PYRT_OK;
}
