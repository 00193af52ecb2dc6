/*
 * pyrt.h — the C ABI of pyrt's native core.
 *
 * This header is the contract between C and Python: pyrt/_native.py feeds the
 * block between PYRT_CDEF_BEGIN and PYRT_CDEF_END to cffi's cdef() verbatim, so
 * that block holds only plain C declarations (no macros, no preprocessor lines).
 *
 * Conventions
 *   - Every fallible function returns a status code (PYRT_OK == 0); details of
 *     the last failure on this thread are in pyrt_last_error().
 *   - The library never aborts the process and never prints.
 *   - Shapes follow GGUF/ggml order: ne[0] is the contiguous (row) length.
 *   - Weight pointers stay owned by the caller (usually an mmap) and must
 *     outlive the model handle.
 */
#ifndef PYRT_H
#define PYRT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* PYRT_CDEF_BEGIN */

/* ---- status codes -------------------------------------------------------- */
enum {
    PYRT_OK                = 0,
    PYRT_ERR_INVALID_ARG   = 1,   /* bad argument / shape / type combination */
    PYRT_ERR_OOM           = 2,   /* allocation failed                        */
    PYRT_ERR_UNSUPPORTED   = 3,   /* type / arch / kernel not available       */
    PYRT_ERR_CONTEXT_FULL  = 4,   /* positions beyond n_ctx                   */
    PYRT_ERR_ABORTED       = 5,   /* pyrt_ctx_abort() was called              */
    PYRT_ERR_INTERNAL      = 6
};

const char *pyrt_status_string(int status);
const char *pyrt_last_error(void);          /* thread-local, never NULL */
const char *pyrt_version(void);

/* ---- tensor types (ids are ggml's, as stored in GGUF) -------------------- */
enum {
    PYRT_TYPE_F32  = 0,
    PYRT_TYPE_F16  = 1,
    PYRT_TYPE_Q4_0 = 2,
    PYRT_TYPE_Q4_1 = 3,
    PYRT_TYPE_Q5_0 = 6,
    PYRT_TYPE_Q5_1 = 7,
    PYRT_TYPE_Q8_0 = 8,
    PYRT_TYPE_Q8_1 = 9,
    PYRT_TYPE_Q2_K = 10,
    PYRT_TYPE_Q3_K = 11,
    PYRT_TYPE_Q4_K = 12,
    PYRT_TYPE_Q5_K = 13,
    PYRT_TYPE_Q6_K = 14,
    PYRT_TYPE_Q8_K = 15,
    PYRT_TYPE_IQ4_NL = 20,
    PYRT_TYPE_IQ4_XS = 23,
    PYRT_TYPE_BF16 = 30,
    PYRT_TYPE_COUNT = 40
};

/* Block geometry; 0 for an unknown/unsupported type. */
int32_t pyrt_type_block_size(int32_t type);        /* weights per block   */
int64_t pyrt_type_block_bytes(int32_t type);       /* bytes per block     */
int32_t pyrt_type_supported(int32_t type);         /* 1 if matmul-capable */
int32_t pyrt_type_act_type(int32_t type);          /* activation type used in dot products */

/* ---- kernel variants / dispatch ----------------------------------------- */
enum {
    PYRT_KERNELS_AUTO   = -1,
    PYRT_KERNELS_SCALAR = 0,
    PYRT_KERNELS_AVX2   = 1,
    PYRT_KERNELS_NEON   = 2,
    PYRT_KERNELS_AVX512 = 3     /* the AVX2 set + AVX-512 GEMM tiles; same results */
};
int32_t     pyrt_kernels_available(int32_t variant);  /* 1 if this CPU + build can run it */
int32_t     pyrt_kernels_active(void);                /* variant in use                   */
int         pyrt_kernels_select(int32_t variant);     /* AUTO re-runs detection (honours PYRT_KERNELS) */
const char *pyrt_kernels_name(int32_t variant);

/* Kernel entry points for tests and tools; `variant` picks the kernel set.
 * n is a multiple of the block size of `type`. */
int pyrt_dequantize(int32_t variant, int32_t type, const void *src, float *dst, int64_t n);
/* Quantize an activation row to act_type (Q8_0, Q8_1, Q8_K, F16, F32). */
int pyrt_quantize_act(int32_t variant, int32_t act_type, const float *src, void *dst, int64_t n);
/* Dot of one weight row (wtype) with one activation row already quantized to
 * pyrt_type_act_type(wtype). */
int pyrt_vec_dot(int32_t variant, int32_t wtype, int64_t n, const void *w, const void *act, float *out);
/* y[t*rows + r] = dot(W row r, x row t) for W of shape (rows, cols) in wtype,
 * x of shape (n_tok, cols) f32; activations quantized like the model does. */
int pyrt_matmul(int32_t variant, int32_t wtype, const void *w, int64_t rows, int64_t cols,
                const float *x, int64_t n_tok, float *y, int32_t n_threads);
/* The same in the arithmetic of an n_shape-token batch (pyrt_ctx_set_numerics:
 * 0 = its own size, -1 = PYRT_NUMERICS_PER_TOKEN, every token as if alone). */
int pyrt_matmul_shape(int32_t variant, int32_t wtype, const void *w, int64_t rows, int64_t cols,
                      const float *x, int64_t n_tok, int32_t n_shape, float *y, int32_t n_threads);

/* ---- model ---------------------------------------------------------------- */
enum {
    PYRT_ARCH_LLAMA  = 0,     /* also Mistral, Llama 3.x (rope_freqs.weight) */
    PYRT_ARCH_GEMMA3 = 1,
    PYRT_ARCH_QWEN2  = 2,
    PYRT_ARCH_QWEN3  = 3,
    PYRT_ARCH_PHI3   = 4,
    PYRT_ARCH_GEMMA2 = 5,
    PYRT_ARCH_QWEN3MOE = 6
};
enum {
    PYRT_ROPE_NORMAL = 0,     /* pairs (2i, 2i+1)        */
    PYRT_ROPE_NEOX   = 2      /* pairs (i, i + n_rot/2)  */
};

typedef struct {
    int32_t arch;             /* PYRT_ARCH_*                               */
    int32_t n_vocab;
    int32_t n_embd;           /* model width                               */
    int32_t n_layer;
    int32_t n_head;
    int32_t n_head_kv;
    int32_t head_dim;         /* per-head size of q/k/v                    */
    int32_t n_ff;
    int32_t n_rot;            /* rotated dims per head (<= head_dim)       */
    int32_t rope_type;        /* PYRT_ROPE_*                               */
    float   rope_freq_base;
    float   rope_freq_scale;  /* linear scaling: pos * scale               */
    float   rope_freq_base_swa;  /* gemma3 sliding-window layers           */
    float   norm_eps;
    int32_t n_ctx_train;
    int32_t sliding_window;   /* 0: none                                   */
    int32_t swa_period;       /* every swa_period-th layer is global (gemma3: 6) */
    float   attn_scale;       /* 0: 1/sqrt(head_dim)                       */
    float   embd_scale;       /* 0: none; gemma: sqrt(n_embd)              */
    float   attn_softcap;     /* 0: none; else scores = c*tanh(scores/c) (gemma2) */
    float   final_softcap;    /* 0: none; else logits = c*tanh(logits/c) (gemma2) */
    int32_t n_expert;         /* 0: dense FFN; else mixture of experts     */
    int32_t n_expert_used;    /* experts per token (top-k of the router)   */
    int32_t n_ff_exp;         /* width of one expert's FFN                 */
    int32_t n_ctx_orig;       /* rope.scaling.original_context_length: phi3's long factors
                                 apply above it; 0: n_ctx_train                    */
    float   rope_attn_factor; /* rope.scaling.attn_factor: cos/sin scale; 0: 1     */
    int32_t reserved[1];
} pyrt_hparams;

typedef struct pyrt_model pyrt_model;

int  pyrt_model_create(const pyrt_hparams *hp, pyrt_model **out);
/* Register a weight by its GGUF name (e.g. "blk.3.attn_q.weight"). ne[] has
 * n_dims valid entries; nbytes must equal the size the type and shape imply. */
int  pyrt_model_set_tensor(pyrt_model *m, const char *name, int32_t type,
                           int32_t n_dims, const int64_t *ne, const void *data, int64_t nbytes);
/* Check that every required tensor is present with the right shape. */
int  pyrt_model_finalize(pyrt_model *m);
void pyrt_model_free(pyrt_model *m);

/* ---- context: KV cache (F16) + scratch + thread pool --------------------- */
typedef struct pyrt_ctx pyrt_ctx;

enum {
    PYRT_OUT_NONE        = 0, /* only fill the KV cache                      */
    PYRT_OUT_LOGITS_LAST = 1, /* out: n_vocab floats                         */
    PYRT_OUT_LOGITS_ALL  = 2, /* out: n_tokens * n_vocab floats              */
    PYRT_OUT_EMBD_ALL    = 3  /* out: n_tokens * n_embd floats (final norm)  */
};

/* n_threads <= 0: use the number of online CPUs. n_batch: tokens per internal
 * chunk (scratch size); larger decode calls are split into chunks. */
int  pyrt_ctx_create(const pyrt_model *m, int32_t n_ctx, int32_t n_threads, int32_t n_batch,
                     pyrt_ctx **out);
void pyrt_ctx_free(pyrt_ctx *c);
int32_t pyrt_ctx_n_ctx(const pyrt_ctx *c);
int32_t pyrt_ctx_n_past(const pyrt_ctx *c);     /* valid cache positions [0, n_past) */
int32_t pyrt_ctx_n_threads(const pyrt_ctx *c);
/* Forget cache positions >= n_keep (n_keep <= n_past). */
int  pyrt_ctx_truncate(pyrt_ctx *c, int32_t n_keep);
/* Ask a running pyrt_decode to stop (safe from another thread / signal
 * handler); it returns PYRT_ERR_ABORTED and the cache is rolled back to pos0. */
void pyrt_ctx_abort(pyrt_ctx *c);

/* llama.cpp's arithmetic depends on how many tokens a batch holds (attention
 * and some matmuls use other summation orders for batches); pyrt reproduces
 * each shape. By default (0) each chunk is computed in the shape of its own
 * size, as llama.cpp does. n_shape > 0 computes every chunk in the shape of an
 * n_shape-token batch: re-evaluating the last token of a cached prompt with
 * n_shape = prompt length gives the logits of evaluating the whole prompt from
 * an empty cache. PYRT_NUMERICS_PER_TOKEN computes every token of a batch as
 * if it had been decoded alone, one call per token (the logits a speculative
 * verifier must see), still reading each weight once per batch. */
enum { PYRT_NUMERICS_PER_TOKEN = -1 };
int  pyrt_ctx_set_numerics(pyrt_ctx *c, int32_t n_shape);

/* Evaluate tokens at positions pos0 .. pos0+n_tokens-1; requires pos0 <= n_past
 * (positions >= pos0 are overwritten). out_len is the number of floats in out. */
int  pyrt_decode(pyrt_ctx *c, const int32_t *tokens, int32_t n_tokens, int32_t pos0,
                 int32_t out_kind, float *out, int64_t out_len);

/* ---- several sequences in one context (continuous batching) -------------
 * A context made with n_seq > 1 (pyrt_ctx_params.n_seq) holds n_seq
 * independent sequences, each with its own n_ctx cache positions and n_past.
 * pyrt_ctx_n_past/truncate/state_* and pyrt_decode work on sequence 0. One
 * pyrt_decode_batch call evaluates new tokens of several sequences together:
 * every weight matmul is shared, attention stays within each sequence. Each
 * sequence's part is computed in the arithmetic it would get decoded alone
 * (its n_shape as pyrt_ctx_set_numerics, 0: its own size), so a sequence's
 * logits do not depend on what else is in the batch. */
#define PYRT_MAX_SEQ 256

typedef struct {
    int32_t seq;              /* [0, n_seq); each at most once per batch      */
    int32_t pos0;             /* <= the sequence's n_past; later positions are overwritten */
    int32_t n_tokens;         /* >= 1; the batch's sum <= n_batch             */
    int32_t out_kind;         /* PYRT_OUT_NONE, _LOGITS_LAST or _LOGITS_ALL   */
    int32_t n_shape;          /* numerics of this part (pyrt_ctx_set_numerics) */
} pyrt_batch_seq;

int32_t pyrt_ctx_n_seq(const pyrt_ctx *c);
int32_t pyrt_ctx_seq_n_past(const pyrt_ctx *c, int32_t seq);
int  pyrt_ctx_seq_truncate(pyrt_ctx *c, int32_t seq, int32_t n_keep);
/* Sequence dst's first n positions become a copy of src's (n <= src's n_past);
 * dst's n_past becomes n. For sharing a prompt prefix between sequences. */
int  pyrt_ctx_seq_copy(pyrt_ctx *c, int32_t src, int32_t dst, int32_t n);
/* tokens: the parts' tokens back to back, in the order of segs. out: the
 * parts' logits rows back to back (LAST: 1 row, ALL: n_tokens rows). On error
 * or abort no sequence's n_past moves past its part's pos0. */
int  pyrt_decode_batch(pyrt_ctx *c, const int32_t *tokens, const pyrt_batch_seq *segs, int32_t n_segs,
                       float *out, int64_t out_len);

/* Serialized KV state (positions [0, n_past)), for save/load and prefix reuse. */
int64_t pyrt_ctx_state_size(const pyrt_ctx *c);
int  pyrt_ctx_state_get(const pyrt_ctx *c, void *buf, int64_t len);
int  pyrt_ctx_state_set(pyrt_ctx *c, const void *buf, int64_t len);

/* ---- sampling ------------------------------------------------------------- */
typedef struct {
    float    temperature;       /* <= 0: greedy (argmax after penalties/bias) */
    int32_t  top_k;             /* <= 0: off                                  */
    float    top_p;             /* >= 1: off                                  */
    float    min_p;             /* <= 0: off                                  */
    float    typical_p;         /* >= 1: off                                  */
    float    repeat_penalty;    /* 1: off (llama.cpp semantics)               */
    float    frequency_penalty; /* 0: off                                     */
    float    presence_penalty;  /* 0: off                                     */
    int32_t  penalty_last_n;    /* window of recent tokens for penalties      */
    uint64_t seed;
    /* appended: zero = off, so a zeroed struct keeps the chain above */
    int32_t  mirostat;          /* 0: off; 1: Mirostat, 2: Mirostat 2.0 (replace top-k..min-p, XTC) */
    float    mirostat_tau;      /* target surprise (bits)                     */
    float    mirostat_eta;      /* learning rate                              */
    float    dry_multiplier;    /* 0: DRY off                                 */
    float    dry_base;          /* < 1: DRY off                               */
    int32_t  dry_allowed_length;
    int32_t  dry_penalty_last_n;/* 0: DRY off; -1: whole history (capped)     */
    float    xtc_probability;   /* 0: XTC off                                 */
    float    xtc_threshold;     /* > 0.5: XTC off                             */
} pyrt_sampler_params;

typedef struct pyrt_sampler pyrt_sampler;

int  pyrt_sampler_create(const pyrt_sampler_params *p, int32_t n_vocab, pyrt_sampler **out);
void pyrt_sampler_free(pyrt_sampler *s);
int  pyrt_sampler_reset(pyrt_sampler *s, uint64_t seed);   /* clears history, reseeds */
int  pyrt_sampler_accept(pyrt_sampler *s, int32_t token);  /* add to penalty history  */
/* Additive logit bias; replaces any previous bias. n may be 0. */
int  pyrt_sampler_set_bias(pyrt_sampler *s, const int32_t *ids, const float *bias, int32_t n);
/* Sample from n_vocab logits (not modified). */
int  pyrt_sampler_sample(pyrt_sampler *s, const float *logits, int32_t *out_token);
/* DRY sequence breakers as token sequences: n sequences concatenated in toks,
 * lens[i] >= 1 tokens each (the head token, then the tail a longer breaker
 * string continues with, at most 32); replaces any previous set. n may be 0. */
int  pyrt_sampler_set_dry_breakers(pyrt_sampler *s, const int32_t *toks, const int32_t *lens, int32_t n);
/* Mirostat's current mu (NaN when Mirostat is off), for tests and inspection. */
float pyrt_sampler_mirostat_mu(const pyrt_sampler *s);

/* ---- compute backends ---------------------------------------------------- */
enum {
    PYRT_BACKEND_CPU  = 0,
    PYRT_BACKEND_CUDA = 1
};

/* 1 if the backend is compiled in and has at least one usable device. */
int32_t pyrt_backend_available(int32_t backend);
/* Devices of a backend (CPU: 1; CUDA: 0 when built without it or no GPU). */
int32_t pyrt_backend_device_count(int32_t backend);
/* Human-readable device description into buf (len bytes, NUL-terminated). */
int     pyrt_backend_device_name(int32_t backend, int32_t device, char *buf, int32_t len);
/* 1 if the backend is compiled into this library (CUDA: built with
 * -DPYRT_CUDA=ON), whether or not a device is present; CPU: always 1. */
int32_t pyrt_backend_compiled(int32_t backend);
/* 1 if the backend has kernels (matmul, embedding rows) for weights of this
 * type; 0 for a backend that is not compiled in. */
int32_t pyrt_backend_type_supported(int32_t backend, int32_t type);

/* Copy the weights of a finalized model to a device, once. Required before
 * creating a context on that backend; the host weights stay mapped (the CPU
 * path and the tied-embedding lookup keep working). Idempotent for the same
 * device; a different device -> INVALID_ARG. Returns UNSUPPORTED naming the
 * first tensor whose type has no kernels on that backend, OOM when the device
 * is full. */
int     pyrt_model_offload(pyrt_model *m, int32_t backend, int32_t device);
/* Device memory held by the offloaded weights (0 when not offloaded). */
int64_t pyrt_model_device_bytes(const pyrt_model *m, int32_t backend);

typedef struct {
    int32_t n_ctx;
    int32_t n_threads;        /* CPU: worker threads (<= 0: online CPUs); CUDA: ignored */
    int32_t n_batch;          /* tokens per internal chunk                   */
    int32_t backend;          /* PYRT_BACKEND_*                              */
    int32_t device;           /* device index within the backend             */
    int32_t n_seq;            /* sequences, each with n_ctx positions (0: 1; CPU only for > 1) */
    /* KV cache types, as llama.cpp's type_k / type_v: PYRT_TYPE_F16,
     * PYRT_TYPE_Q8_0 or PYRT_TYPE_Q4_0 (the quantized ones: CPU only, head_dim
     * a multiple of 32). 0 (PYRT_TYPE_F32, never a cache type here) means
     * F16, so zeroed params keep the F16 cache. */
    int32_t type_k;
    int32_t type_v;
    int32_t reserved[4];      /* zero                                        */
} pyrt_ctx_params;

/* A context (KV cache + scratch) on the given backend. The model must have
 * been offloaded to (backend, device) unless backend is CPU. */
int     pyrt_ctx_create_ex(const pyrt_model *m, const pyrt_ctx_params *p, pyrt_ctx **out);
int32_t pyrt_ctx_backend(const pyrt_ctx *c);
/* The KV cache's types (PYRT_TYPE_*) and its size in bytes (all layers,
 * sequences and positions, K and V). */
int32_t pyrt_ctx_type_k(const pyrt_ctx *c);
int32_t pyrt_ctx_type_v(const pyrt_ctx *c);
int64_t pyrt_ctx_kv_bytes(const pyrt_ctx *c);

/* ---- grammar matching (core/grammar.c) ----------------------------------
 * A grammar is a packed rule table made by pyrt/grammar/gbnf.py: int32 words,
 * each rule's alternatives back to back, elements
 *   PYRT_GR_REF id | PYRT_GR_CHARS n lo0 hi0 .. | PYRT_GR_NCHARS n lo0 hi0 ..
 * separated by PYRT_GR_ALT 0 and closed by PYRT_GR_END 0 (starts[r]: rule r's
 * first word). A matcher holds the set of parse stacks after the text so far
 * (and an incomplete UTF-8 sequence carried across tokens). A vocabulary
 * (pyrt_gvocab) holds every token's bytes once, sorted, so masking walks the
 * shared prefixes once. Limits: PYRT_GR_MAX_STACKS parse stacks per step,
 * PYRT_GR_MAX_DEPTH elements per stack and a work budget per character; beyond
 * them a call fails with UNSUPPORTED ("grammar too ambiguous/deep"). */
enum {
    PYRT_GR_END = 0, PYRT_GR_ALT = 1, PYRT_GR_REF = 2, PYRT_GR_CHARS = 3, PYRT_GR_NCHARS = 4
};
enum {
    PYRT_GR_MAX_STACKS = 32768,
    PYRT_GR_MAX_DEPTH  = 4096,
    PYRT_GVOCAB_EOG    = 1          /* token flag: ends generation, no text */
};
typedef struct pyrt_grammar  pyrt_grammar;
typedef struct pyrt_gvocab   pyrt_gvocab;
typedef struct pyrt_gmatcher pyrt_gmatcher;

/* Copies and validates the table; INVALID_ARG names the first bad word. */
int  pyrt_grammar_create(const int32_t *words, int32_t n_words, const int32_t *starts,
                         int32_t n_rules, int32_t root, pyrt_grammar **out);
void pyrt_grammar_free(pyrt_grammar *g);
/* bytes: all tokens' bytes back to back; offsets: [n_vocab + 1]; flags:
 * [n_vocab] PYRT_GVOCAB_* bits. Copied. */
int  pyrt_gvocab_create(const uint8_t *bytes, const int64_t *offsets, const uint8_t *flags,
                        int32_t n_vocab, pyrt_gvocab **out);
void pyrt_gvocab_free(pyrt_gvocab *v);
/* The matcher refers to g and v (v may be NULL: text only); both must
 * outlive it. */
int  pyrt_gmatcher_create(const pyrt_grammar *g, const pyrt_gvocab *v, pyrt_gmatcher **out);
void pyrt_gmatcher_free(pyrt_gmatcher *m);
int  pyrt_gmatcher_reset(pyrt_gmatcher *m);
/* Feed bytes: *ok = 1 and the state advances, or *ok = 0 and it is unchanged. */
int  pyrt_gmatcher_accept_bytes(pyrt_gmatcher *m, const uint8_t *bytes, int64_t n, int32_t *ok);
/* Same for a token's bytes; an EOG token is accepted (state unchanged) only
 * when the text so far is complete; a token without bytes never is. */
int  pyrt_gmatcher_accept_token(pyrt_gmatcher *m, int32_t token, int32_t *ok);
/* allowed[n_vocab] = 1 for every token accept_token would take now. */
int  pyrt_gmatcher_mask(pyrt_gmatcher *m, uint8_t *allowed, int32_t *n_allowed);
/* complete: the text so far is a whole sentence of the grammar; can_continue:
 * some non-empty continuation is still possible. */
int  pyrt_gmatcher_state(const pyrt_gmatcher *m, int32_t *complete, int32_t *can_continue);

/* PYRT_CDEF_END */

#ifdef __cplusplus
}
#endif
#endif /* PYRT_H */
