/* kernels.h — kernel signatures and the kernel table: the one interface
 * between csrc/core/ and the kernel folders (generic/, x86/, arm/).
 *
 * Every variant (scalar reference, AVX2, AVX-512, NEON) fills the same table;
 * a NULL entry means "not implemented in this variant" and dispatch falls back
 * to the scalar entry, except for the matmul orders, which are each ISA's own
 * choice (see merge_type in core/dispatch.c). Sizes: n counts weights/elements
 * and is a multiple of the type's block size. */
#ifndef PYRT_KERNELS_H
#define PYRT_KERNELS_H

#include <math.h>
#include <stdint.h>
#include "pyrt.h"
#include "quant.h"

typedef void  (*pyrt_dequant_fn)(const void *src, float *dst, int64_t n);
typedef void  (*pyrt_quant_fn)(const float *src, void *dst, int64_t n);
/* *s = dot(w[0..n), a[0..n)), w in the weight type, a in its activation type */
typedef void  (*pyrt_vec_dot_fn)(int64_t n, float *s, const void *w, const void *a);
/* y[t*ldy + r] = dot(w row r, a row t) for r < n_rows, t < n_tok, with exactly
 * the arithmetic of the matching vec_dot (register-tiled for speed). */
typedef void  (*pyrt_gemm_fn)(int64_t n, const void *w, int64_t w_row_bytes, int64_t n_rows,
                              const void *a, int64_t a_row_bytes, int64_t n_tok, float *y, int64_t ldy);
/* GEMV_STREAMS: with one token the x86 gemm kernels take the 8 (or 4) rows of a
 * register tile rs = n_rows / 8 apart (rows g, g + rs, g + 2 rs, ...), not
 * adjacent, so each is a long sequential stream through memory (the rest,
 * n_rows % 8, goes through the ordinary tiles), and the driver hands them a
 * matmul chunk's whole row range at once (core/matmul.c). Adjacent short
 * rows (Gemma's 640-column output matrix: 680 bytes a row) interleaved block
 * by block defeat the hardware prefetcher on some hosts: measured on an EPYC
 * VM, 8 such streams read 9-13 GB/s against 30-32 GB/s for 8 streams far
 * apart (one thread);
 * Q8_0 GEMV 262144 x 640, 2 threads, 9.3 -> 5.6 ms. Same arithmetic per row.
 * A few tokens (core/matmul.c MM_FEW_TOK) get the same whole row range; the
 * x86 GEMV tiles then unpack each block once for up to 4 tokens, every
 * token's result exactly its one-token one. */

/* floats of pyrt_attn_args.acc at least: 33 KB, room for the value slots of
 * a group's single-token queries, a slice of dims at a time (x86/ops_avx2.c) */
#define PYRT_ATTN_ACC_MIN 8448
/* floats of a rope_cache table: n_rot <= head_dim <= 1024 (core/model.c checks it) */
#define PYRT_ROPE_CS_MAX 1024
/* floats of acc that attn_heads needs for nq queries of head_dim hd */
#define PYRT_ATTN_HEADS_ACC(nq, hd) ((size_t)(nq) * (32 * (size_t)(hd) + 16))
/* phases of attn_heads_split */
#define PYRT_ATTN_SPLIT_PHASES 4

/* One query head attending to cached positions [first, last] (causal), or a
 * group of queries that share one kv head (n_tok > 1 or n_head > 1): query
 * head g of token t reads q + t*q_stride + g*head_dim, writes out likewise,
 * and sees positions [first_t, last + t] with first_t = max(first, last + t -
 * window + 1) if window > 0, else first. Zero n_tok/n_head count as 1. Every
 * query's result is bit-identical to a one-query call with its own q, out,
 * first and last (tests/test_ops.py checks it). */
typedef struct {
    float           *out;       /* [head_dim] result                               */
    const float     *q;         /* [head_dim] query after rope                     */
    const pyrt_fp16 *k, *v;     /* cache rows of this kv head at position 0        */
    int64_t          stride;    /* elements between consecutive cache rows         */
    int32_t          head_dim;
    int32_t          first;     /* first visible position (sliding window), >= 0   */
    int32_t          last;      /* last visible position (the query's own)         */
    int32_t          batched;   /* 1: part of a multi-token batch, 0: single token */
    float            scale;     /* applied to q.k before softmax                   */
    float           *scores;    /* scratch [n_q * (n_ctx + 32)], n_q = n_tok*n_head */
    pyrt_fp16       *probs16;   /* scratch [n_ctx + 32]                            */
    pyrt_fp16       *q16;       /* scratch [head_dim]                              */
    float           *acc;       /* scratch [max(32*head_dim, n_q*(head_dim+264),
                                 *          PYRT_ATTN_ACC_MIN)]                     */
    int32_t          n_tok;     /* group: consecutive tokens (0 or 1: one)         */
    int32_t          n_head;    /* group: query heads of the kv head (0 or 1: one) */
    int64_t          q_stride;  /* group: floats from one token's q/out to the next */
    int32_t          window;    /* group: sliding window length, 0 = none          */
    int32_t          n_kv;      /* attn_heads: consecutive kv heads (0 or 1: one);
                                 * kv head h's rows at k + h*head_dim (v likewise),
                                 * its queries at q + h*n_head*head_dim (out too)  */
    float            softcap;   /* 0: none; else score = softcap*tanh(score/softcap),
                                 * after the scale (llama.cpp's scale, tanh, scale) */
    float           *slots;     /* attn_heads_split only: value slots shared by the
                                 * threads, n_kv*n_head*(32*head_dim+16) floats  */
    /* attn_head_fa only: a cache whose K or V rows are quantized (Q8_0, Q4_0;
     * the other may be F16). k, v above are unused there. */
    const void      *kq, *vq;   /* cache rows of this kv head at position 0        */
    int64_t          k_bytes, v_bytes;  /* bytes from one cache row to the next    */
    int32_t          type_k, type_v;    /* PYRT_TYPE_F16, _Q8_0 or _Q4_0           */
    pyrt_quant_fn    q_to_dot;  /* q -> the activation type of K's dot (F16, Q8_0) */
    pyrt_vec_dot_fn  k_dot;     /* K row . converted q (K's vec_dot)               */
    pyrt_dequant_fn  v_to_f32;  /* quantized V row -> f32 (exact)                  */
} pyrt_attn_args;

/* The kernels of one tensor type (indexed by its ggml id). A weight type has
 * dequantize and the dot orders; an activation type (Q8_0, Q8_1, Q8_K, F16,
 * F32) has quantize_act. */
typedef struct {
    pyrt_dequant_fn dequantize;     /* this type -> f32                               */
    pyrt_quant_fn   quantize_act;   /* f32 -> this type, as a matmul's activations    */
    pyrt_quant_fn   quantize_row;   /* f32 -> this type as llama.cpp stores a row of it
                                     * (a KV cache row) where that is not quantize_act:
                                     * pyrt_kv_quantizer() below picks                 */
    pyrt_vec_dot_fn vec_dot;        /* weights of this type . its activation type     */
    /* Dot products in the order llama.cpp uses for weights it repacks into
     * 8-row interleaved blocks (on x86: Q4_0 and Q4_K when rows % 8 == 0): each block's
     * exact integer sum is scaled and accumulated by one scalar FMA. NULL:
     * use vec_dot. */
    pyrt_vec_dot_fn vec_dot_r8;
    /* Same weights, for the tokens llama.cpp's repacked GEMM takes: groups of
     * 4 rows of a batch of more than 3 (the n_tok % 4 rest goes through the
     * GEMV, i.e. vec_dot_r8). NULL: vec_dot_r8 for every token. */
    pyrt_vec_dot_fn vec_dot_r8x4;
    /* Dot products in the order of llama.cpp's tiled K-quant GEMM, which it
     * uses on x86 for batches of >= 8 tokens (x86/kquants_avx2.c). NULL: use
     * vec_dot. Choose between the four with pyrt_pick_vec_dot() below. */
    pyrt_vec_dot_fn vec_dot_tiled;
    /* The fewest tokens that take vec_dot_tiled; 0 means 8 (the K-quant
     * GEMM's threshold). IQ4_NL's batched path on x86 is llamafile's GEMM,
     * which takes every batch of 2 or more. */
    int32_t         tiled_min_tok;
    /* Tiled equivalents of vec_dot / vec_dot_r8 (NULL: loop over the dots). */
    pyrt_gemm_fn    gemm;
    pyrt_gemm_fn    gemm_r8;
    /* Tiled equivalents of vec_dot_tiled / vec_dot_r8x4 (NULL: loop over the
     * dots); the driver hands them only the tokens that take that order. */
    pyrt_gemm_fn    gemm_tiled;
    pyrt_gemm_fn    gemm_r8x4;
} pyrt_type_kernels;

/* One kernel table: every ISA variant (generic/, x86/, arm/) fills the same
 * struct; core/dispatch.c merges each variant over the scalar table. */
typedef struct {
    const char       *name;
    pyrt_type_kernels type[PYRT_TYPE_COUNT];

    /* F16 helpers for the KV cache and attention */
    void  (*fp32_to_fp16)(const float *x, pyrt_fp16 *y, int64_t n);
    void  (*fp16_to_fp32)(const pyrt_fp16 *x, float *y, int64_t n);
    float (*dot_f16)(int64_t n, const pyrt_fp16 *x, const pyrt_fp16 *y);  /* f32 accumulate */
    void  (*mad_f16)(int64_t n, float *y, const pyrt_fp16 *x, float v);  /* y += x*v      */

    /* Forward-pass ops. The AVX2 set reproduces llama.cpp's x86 (AVX2+FMA)
     * floating-point sequence exactly, because 8-bit activation quantization
     * makes the model chaotic: one different rounding decision anywhere
     * decorrelates everything after it (see x86/ops_avx2.c). */
    void  (*rope)(float *x, int32_t n_rot, int32_t mode, float pos, float freq_base, float freq_scale,
                   const float *freq_factors,    /* [n_rot/2] divisors of theta, or NULL */
                   float mscale);                /* cos/sin scale (rope attn_factor; 1: none) */
    /* rope in two steps (ops.h, op_rope_cache): a position's table of cosines and
     * sines (cs[PYRT_ROPE_CS_MAX] at most), the same for all variants, then any
     * number of heads rotated with it, with rope's floats */
    void  (*rope_cache)(float *cs, int32_t n_rot, float pos, float freq_base, float freq_scale,
                         const float *freq_factors, float mscale);
    void  (*rope_cs)(float *x, int32_t n_rot, int32_t mode, const float *cs);
    void  (*swiglu)(float *g, const float *u, int64_t n);             /* g = silu(g)*u */
    void  (*geglu)(float *g, const float *u, int64_t n);              /* g = gelu(g)*u (ggml's fp16 table) */
    void  (*attn_head)(const pyrt_attn_args *a);
    /* attn_head for n_kv consecutive kv heads of one token (n_tok <= 1, not
     * batched), each query exactly its attn_head result; scratch for
     * n_kv * n_head queries (scores rows; acc: PYRT_ATTN_HEADS_ACC floats).
     * NULL: one attn_head call per kv head. */
    void  (*attn_heads)(const pyrt_attn_args *a);
    /* attn_heads' work for one token, shared by the threads in
     * PYRT_ATTN_SPLIT_PHASES phases (the caller puts a barrier after each),
     * each cut into n_part parts: phase 0 the scores (parts take positions), 1
     * the softmax (queries), 2 the values (dims, or with one query per kv
     * head, slots j mod 32 into slots: n_part <= 32), 3 the outputs of slots'
     * queries. scores: n_kv * n_head rows of last + 8 floats, one buffer for
     * all parts; acc: PYRT_ATTN_HEADS_ACC floats, the caller's own; head_dim
     * % 32 == 0, at most 64 queries. Each query exactly its attn_head result.
     * NULL: not available. */
    void  (*attn_heads_split)(const pyrt_attn_args *a, int phase, int part, int n_part);
    /* The same queries over a quantized cache, in llama.cpp's flash-attention
     * arithmetic (the path it takes for a quantized V cache): per query, q
     * converted to K's dot type once, s = scale * K_j.q in position order,
     * an online softmax (running max M, sum S, expf) and an f32 accumulator
     * (F16 with F16 V) of v_j * expf(s - M), scaled by 1/S at the end.
     * head_dim a multiple of 32. llama.cpp's Walsh-Hadamard rotation of q, k,
     * v and the output is the caller's (core/forward.c). */
    void  (*attn_head_fa)(const pyrt_attn_args *a);
    void  (*softmax)(float *x, int64_t n);                            /* in place, ggml_soft_max's sequence (MoE router) */
    /* w . x in llama.cpp's F32 tinyBLAS order (the MoE router's matmul): 8 FMA
     * lanes over n (a multiple of 8), then the lanes summed as (l0+l4 + l2+l6) +
     * (l1+l5 + l3+l7) */
    float (*dot_f32_8)(const float *w, const float *x, int64_t n);
} pyrt_kernels;

typedef struct {
    const char *name;
    int32_t block_size;    /* elements per block */
    int64_t block_bytes;
    int32_t act_type;      /* activation type for vec_dot */
} pyrt_type_traits;

extern const pyrt_type_traits pyrt_type_traits_table[PYRT_TYPE_COUNT];

/* Each kernel file FOLDER/NAME.c defines pyrt_fill_NAME(), which sets the
 * entries it implements; core/dispatch.c calls only those the CPU and the OS
 * can run and merges them over the scalar table.
 *   generic/ (every build)  */
void pyrt_fill_quants_scalar(pyrt_kernels *k);        /* 32-element block types; calls the kquants fill */
void pyrt_fill_kquants_scalar(pyrt_kernels *k);       /* Q2_K..Q6_K weights, Q8_K activations         */
void pyrt_fill_ops_scalar(pyrt_kernels *k);           /* f16 helpers, rope, activations, attention     */
void pyrt_fill_iquants_scalar(pyrt_kernels *k);       /* IQ4_NL (x Q8_0) and IQ4_XS (x Q8_K) weights   */
/*   x86/ (x86-64 builds; the VNNI and AVX-512 files where the compiler has those ISAs) */
void pyrt_fill_quants_avx2(pyrt_kernels *k);          /* calls the kquants_avx2 fill                   */
void pyrt_fill_kquants_avx2(pyrt_kernels *k);
void pyrt_fill_ops_avx2(pyrt_kernels *k);
void pyrt_fill_iquants_avx2(pyrt_kernels *k);         /* adds to the table, clears nothing             */
void pyrt_fill_quants_gemm_avx2(pyrt_kernels *k);     /* AVX2 table on CPUs without AVX-VNNI           */
void pyrt_fill_quants_gemm_avxvnni(pyrt_kernels *k);  /* the same tiles with vpdpbusd                  */
void pyrt_fill_kquants_gemm_avx2(pyrt_kernels *k);
void pyrt_fill_kquants_gemm_avxvnni(pyrt_kernels *k);
void pyrt_fill_quants_gemm_avx512(pyrt_kernels *k);   /* AVX-512 table = AVX2 table + these two        */
void pyrt_fill_kquants_gemm_avx512(pyrt_kernels *k);
/*   arm/ (AArch64 builds) */
void pyrt_fill_quants_neon(pyrt_kernels *k);          /* baseline NEON, plus SDOT where the CPU has it */
void pyrt_fill_iquants_neon(pyrt_kernels *k);         /* the same choice; adds to the table            */
void pyrt_fill_ops_neon(pyrt_kernels *k);             /* softmax, SwiGLU, rope, F16-cache attention    */

/* Query (t, g) of an attention group as a one-query call (same scratch). */
/* Logit soft-capping as llama.cpp computes it (gemma2): scale by 1/c, tanh,
 * scale by c, each rounded to f32; c = 0: x unchanged. */
static inline float pyrt_softcap(float x, float c) {
    return c != 0.0f ? tanhf(x * (1.0f / c)) * c : x;
}

static inline pyrt_attn_args pyrt_attn_query(const pyrt_attn_args *a, int32_t t, int32_t g) {
    pyrt_attn_args o = *a;
    const int64_t off = (int64_t)t * a->q_stride + (int64_t)g * a->head_dim;
    o.q = a->q + off;
    o.out = a->out + off;
    o.last = a->last + t;
    if (a->window > 0 && o.last - a->window + 1 > o.first) o.first = o.last - a->window + 1;
    o.n_tok = o.n_head = 1;
    o.window = 0;
    return o;
}

/* A group call as one one-query call per query, token by token, head by head. */
static inline void pyrt_attn_each_query(const pyrt_attn_args *a, void (*one)(const pyrt_attn_args *)) {
    const int32_t nt = a->n_tok > 1 ? a->n_tok : 1, nh = a->n_head > 1 ? a->n_head : 1;
    for (int32_t t = 0; t < nt; t++)
        for (int32_t g = 0; g < nh; g++) {
            const pyrt_attn_args o = pyrt_attn_query(a, t, g);
            one(&o);
        }
}

/* f32 -> a KV cache row of type t (F16 excluded: fp32_to_fp16), as llama.cpp's
 * from_float for t: its activation quantizer for Q8_0, its reference rounding
 * for Q4_0. */
static inline pyrt_quant_fn pyrt_kv_quantizer(const pyrt_kernels *k, int32_t t) {
    return k->type[t].quantize_row ? k->type[t].quantize_row : k->type[t].quantize_act;
}

/* Batches of at least this many tokens take a type's vec_dot_tiled order. */
static inline int64_t pyrt_tiled_min_tok(const pyrt_kernels *k, int32_t type) {
    return k->type[type].tiled_min_tok > 0 ? k->type[type].tiled_min_tok : 8;
}

/* The row dot product for W (type, rows) times activation row t of a batch of
 * n_tok rows, with the arithmetic llama.cpp uses for that shape and row. */
static inline pyrt_vec_dot_fn pyrt_pick_vec_dot(const pyrt_kernels *k, int32_t type, int64_t rows,
                                                int64_t n_tok, int64_t t) {
    if (k->type[type].vec_dot_r8 && rows % 8 == 0) {
        if (k->type[type].vec_dot_r8x4 && n_tok > 3 && t < n_tok - n_tok % 4) return k->type[type].vec_dot_r8x4;
        return k->type[type].vec_dot_r8;
    }
    if (k->type[type].vec_dot_tiled && n_tok >= pyrt_tiled_min_tok(k, type)) return k->type[type].vec_dot_tiled;
    return k->type[type].vec_dot;
}

/* core/threadpool.c: this thread's scratch buffer of at least `bytes` bytes,
 * 64-byte aligned, or NULL (out of memory). For tiles whose panels are too big
 * for a stack: a caller's thread runs a share of every matmul, and its stack
 * can be 512 KB or less. The buffer is the thread's until it exits (freed
 * then); a larger request replaces it, so use one buffer at a time. */
void *pyrt_thread_scratch(size_t bytes);

/* Widest row (elements) the gemm / gemm_r8 tiles take: their per-panel scale
 * caches hold PYRT_GEMM_MAX_COLS / 32 blocks per row (MAX_NB in gemm_*.c). */
#define PYRT_GEMM_MAX_COLS 16384
#define PYRT_GEMM_MAX_NB (PYRT_GEMM_MAX_COLS / 32)

/* core/dispatch.c: a variant's entries merged over a base table (the rules
 * are stated there), the table for a variant (NULL if unavailable), and the
 * active one. */
void pyrt_kernels_merge(pyrt_kernels *dst, const pyrt_kernels *base, const pyrt_kernels *simd);
const pyrt_kernels *pyrt_kernels_get(int32_t variant);
const pyrt_kernels *pyrt_kernels_current(void);

/* core/error.c: set the thread-local message and return status */
int pyrt_set_error(int status, const char *fmt, ...);

#endif
