/* context.c — a context: the KV cache [n_layer][n_seq][n_ctx][kv_dim] (F16, or
 * Q8_0 / Q4_0 rows as llama.cpp's type_k / type_v), the
 * activation scratch for n_batch tokens, the per-thread attention scratch
 * and the thread pool that runs the forward pass (core/forward.c). */
#include <stdlib.h>
#include <string.h>
#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "model.h"

/* queries per attention group, and its scratch per thread (kernels.h:
 * pyrt_attn_args.scores and .acc) */
static size_t attn_n_q(const pyrt_ctx *c) {
    return (size_t)c->attn_tok * (size_t)(c->m->hp.n_head / c->m->hp.n_head_kv);
}
size_t ctx_attn_scores_floats(const pyrt_ctx *c) { return attn_n_q(c) * ((size_t)c->n_ctx + 32); }
size_t ctx_attn_acc_floats(const pyrt_ctx *c) {
    const size_t n_q = attn_n_q(c), hd = (size_t)c->m->hp.head_dim;
    size_t n = 32 * hd > n_q * (hd + 264) ? 32 * hd : n_q * (hd + 264);
    if (n < PYRT_ATTN_HEADS_ACC(n_q, hd)) n = PYRT_ATTN_HEADS_ACC(n_q, hd);   /* attn_heads: attn_tok kv heads */
    return n > PYRT_ATTN_ACC_MIN ? n : PYRT_ATTN_ACC_MIN;
}

static void *alloc_aligned(size_t n) {
    void *p = NULL;
    if (n == 0) n = 64;
    if (posix_memalign(&p, 64, n) != 0) return NULL;
    return p;
}

/* The KV cache, in 2 MiB pages where the kernel has transparent huge pages
 * (madvise mode included): attention reads one head's rows a whole cache row
 * apart (kv_dim * 2 bytes, 4 KiB for a 2048-wide F16 row), so with 4 KiB
 * pages each cached position of a long context is a page of its own (no
 * speed change measured on a Zen 5 host, whose TLB coped). Pages are still
 * allocated only when first written. */
#define HUGE_PAGE ((size_t)2 << 20)
static void *alloc_kv(size_t n) {
#ifdef MADV_HUGEPAGE
    if (n >= HUGE_PAGE) {
        void *p = NULL;
        const size_t len = (n + HUGE_PAGE - 1) & ~(HUGE_PAGE - 1);
        if (posix_memalign(&p, HUGE_PAGE, len) != 0) return NULL;
        (void)madvise(p, len, MADV_HUGEPAGE);   /* advice only: 4 KiB pages if refused */
        return p;
    }
#endif
    return alloc_aligned(n);
}

void pyrt_ctx_free(pyrt_ctx *c) {
    if (!c) return;
    pyrt_cuda_ctx_free(c->cuda);
    pool_free(c->pool);
    void *bufs[] = { c->kc, c->vc, c->x, c->xn, c->q, c->k, c->v, c->att, c->tmp, c->g, c->u,
                     c->qbuf[0], c->qbuf[1], c->scores, c->probs16, c->q16, c->attn_acc,
                     c->moe_w, c->moe_id, c->moe_x, c->moe_out,
                     c->n_past, c->parts, c->runs, c->out_runs, c->tok_part, c->out_tok };
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]);
    free(c);
}

static int ctx_create_cpu(const pyrt_model *m, int32_t n_ctx, int32_t n_seq, int32_t n_threads, int32_t n_batch,
                          int32_t type_k, int32_t type_v, pyrt_ctx **out);

int64_t ctx_kv_bytes(int32_t type, int64_t n) {
    switch (type) {
    case PYRT_TYPE_Q8_0: return n / QK8_0 * (int64_t)sizeof(block_q8_0);
    case PYRT_TYPE_Q4_0: return n / QK4_0 * (int64_t)sizeof(block_q4_0);
    default:             return n * (int64_t)sizeof(pyrt_fp16);
    }
}

/* a cache type from the params (0: F16); -1 if it is none of the three */
static int32_t kv_type(int32_t t) {
    if (t == 0) return PYRT_TYPE_F16;
    return t == PYRT_TYPE_F16 || t == PYRT_TYPE_Q8_0 || t == PYRT_TYPE_Q4_0 ? t : -1;
}

int pyrt_ctx_create_ex(const pyrt_model *m, const pyrt_ctx_params *p, pyrt_ctx **out) {
    if (!p) return pyrt_set_error(PYRT_ERR_INVALID_ARG, "ctx_create_ex: NULL params");
    for (int i = 0; i < 4; i++)
        if (p->reserved[i]) return pyrt_set_error(PYRT_ERR_INVALID_ARG, "ctx_create_ex: reserved fields must be zero");
    if (p->n_seq < 0 || p->n_seq > PYRT_MAX_SEQ)
        return pyrt_set_error(PYRT_ERR_INVALID_ARG, "n_seq %d not in [1, %d]", p->n_seq, PYRT_MAX_SEQ);
    const int32_t n_seq = p->n_seq > 0 ? p->n_seq : 1;
    const int32_t type_k = kv_type(p->type_k), type_v = kv_type(p->type_v);
    if (type_k < 0 || type_v < 0) {
        if (out) *out = NULL;
        return pyrt_set_error(PYRT_ERR_INVALID_ARG, "KV cache type %d not one of f16 (%d), q8_0 (%d), q4_0 (%d)",
                              type_k < 0 ? p->type_k : p->type_v, PYRT_TYPE_F16, PYRT_TYPE_Q8_0, PYRT_TYPE_Q4_0);
    }
    if (p->backend == PYRT_BACKEND_CPU) {
        if (p->device != 0) return pyrt_set_error(PYRT_ERR_INVALID_ARG, "CPU backend has one device (0), not %d", p->device);
        return ctx_create_cpu(m, p->n_ctx, n_seq, p->n_threads, p->n_batch, type_k, type_v, out);
    }
    if (p->backend == PYRT_BACKEND_CUDA) {
        if (type_k != PYRT_TYPE_F16 || type_v != PYRT_TYPE_F16) {
            if (out) *out = NULL;
            return pyrt_set_error(PYRT_ERR_UNSUPPORTED, "a quantized KV cache (type_k %s, type_v %s) needs the CPU backend",
                                  pyrt_type_traits_table[type_k].name, pyrt_type_traits_table[type_v].name);
        }
        if (n_seq > 1) {
            if (out) *out = NULL;
            return pyrt_set_error(PYRT_ERR_UNSUPPORTED, "several sequences per context (n_seq %d) need the CPU backend", n_seq);
        }
        return ctx_create_cuda(m, p->n_ctx, p->n_batch, p->device, out);
    }
    if (out) *out = NULL;
    return pyrt_set_error(PYRT_ERR_INVALID_ARG, "unknown backend %d", p->backend);
}

int32_t pyrt_ctx_backend(const pyrt_ctx *c) { return c ? c->backend : -1; }
int32_t pyrt_ctx_type_k(const pyrt_ctx *c) { return c ? c->type_k : -1; }
int32_t pyrt_ctx_type_v(const pyrt_ctx *c) { return c ? c->type_v : -1; }
int64_t pyrt_ctx_kv_bytes(const pyrt_ctx *c) {
    if (!c) return 0;
    return (int64_t)c->m->hp.n_layer * c->n_seq * c->n_ctx * (c->k_row_bytes + c->v_row_bytes);
}

int pyrt_ctx_create(const pyrt_model *m, int32_t n_ctx, int32_t n_threads, int32_t n_batch, pyrt_ctx **out) {
    return ctx_create_cpu(m, n_ctx, 1, n_threads, n_batch, PYRT_TYPE_F16, PYRT_TYPE_F16, out);
}

/* the per-sequence and per-job bookkeeping (also for CUDA contexts, n_seq 1) */
int ctx_alloc_seqs(pyrt_ctx *c, int32_t n_seq) {
    c->n_seq = n_seq;
    c->n_past = calloc((size_t)n_seq, sizeof(int32_t));
    c->parts = calloc((size_t)n_seq, sizeof(fwd_part));
    c->runs = calloc((size_t)n_seq, sizeof(fwd_run));
    c->out_runs = calloc((size_t)n_seq, sizeof(fwd_run));
    c->tok_part = calloc((size_t)c->n_batch, sizeof(int32_t));
    c->out_tok = calloc((size_t)c->n_batch, sizeof(int32_t));
    return c->n_past && c->parts && c->runs && c->out_runs && c->tok_part && c->out_tok;
}

static int ctx_create_cpu(const pyrt_model *m, int32_t n_ctx, int32_t n_seq, int32_t n_threads, int32_t n_batch,
                          int32_t type_k, int32_t type_v, pyrt_ctx **out) {
    if (!m || !out) return pyrt_set_error(PYRT_ERR_INVALID_ARG, "ctx_create: NULL argument");
    *out = NULL;
    if (!m->finalized) return pyrt_set_error(PYRT_ERR_INVALID_ARG, "ctx_create: model not finalized");
    if (n_ctx <= 0 || n_ctx > (1 << 24)) return pyrt_set_error(PYRT_ERR_INVALID_ARG, "n_ctx %d out of range", n_ctx);
    if (n_threads <= 0) n_threads = pool_default_threads();
    if (n_threads > 512) return pyrt_set_error(PYRT_ERR_INVALID_ARG, "n_threads %d out of range", n_threads);
    if (n_batch <= 0) n_batch = 512;
    if (n_batch > n_ctx) n_batch = n_ctx;
    const pyrt_hparams *hp = &m->hp;
    if ((type_k != PYRT_TYPE_F16 || type_v != PYRT_TYPE_F16) && hp->head_dim % 32 != 0)
        return pyrt_set_error(PYRT_ERR_UNSUPPORTED, "a quantized KV cache needs head_dim a multiple of 32, not %d",
                              hp->head_dim);
    pyrt_ctx *c = calloc(1, sizeof *c);
    if (!c) return pyrt_set_error(PYRT_ERR_OOM, "ctx_create: out of memory");
    c->m = m;
    c->n_ctx = n_ctx;
    c->n_batch = n_batch;
    c->kv_dim = (int64_t)hp->n_head_kv * hp->head_dim;
    c->type_k = type_k;
    c->type_v = type_v;
    c->k_row_bytes = ctx_kv_bytes(type_k, c->kv_dim);
    c->v_row_bytes = ctx_kv_bytes(type_v, c->kv_dim);
    c->k_head_bytes = ctx_kv_bytes(type_k, hp->head_dim);
    c->v_head_bytes = ctx_kv_bytes(type_v, hp->head_dim);
    /* llama.cpp's rotation sizes: K the largest power of 2 (>= 64) dividing
     * head_dim, V 64; only for a quantized type and head_dim % 64 == 0 */
    if (type_k != PYRT_TYPE_F16 && hp->head_dim % 64 == 0) {
        c->rot_k = 64;
        while (hp->head_dim % (2 * c->rot_k) == 0) c->rot_k *= 2;
    }
    if (type_v != PYRT_TYPE_F16 && hp->head_dim % 64 == 0) c->rot_v = 64;
    const int64_t qd = (int64_t)hp->n_head * hp->head_dim;
    const size_t kv_elems = (size_t)hp->n_layer * (size_t)n_seq * (size_t)n_ctx * (size_t)c->kv_dim;
    if (kv_elems / (size_t)n_ctx / (size_t)n_seq / (size_t)hp->n_layer != (size_t)c->kv_dim || kv_elems > ((size_t)1 << 40)) {
        free(c);
        return pyrt_set_error(PYRT_ERR_OOM, "KV cache of %d x %d positions is too large", n_seq, n_ctx);
    }
    const size_t B = (size_t)n_batch;
    int64_t widest = hp->n_embd;
    if (qd > widest) widest = qd;
    if (hp->n_ff > widest) widest = hp->n_ff;
    if (hp->n_ff_exp > widest) widest = hp->n_ff_exp;
    const int64_t ffw = hp->n_ff > hp->n_ff_exp ? hp->n_ff : hp->n_ff_exp;   /* g, u rows */
    const size_t kv_rows = kv_elems / (size_t)c->kv_dim;
    c->kc = alloc_kv(kv_rows * (size_t)c->k_row_bytes);
    c->vc = alloc_kv(kv_rows * (size_t)c->v_row_bytes);
    c->x = alloc_aligned(B * hp->n_embd * sizeof(float));
    c->xn = alloc_aligned(B * hp->n_embd * sizeof(float));
    c->tmp = alloc_aligned(B * hp->n_embd * sizeof(float));
    c->q = alloc_aligned(B * qd * sizeof(float));
    c->att = alloc_aligned(B * qd * sizeof(float));
    c->k = alloc_aligned(B * c->kv_dim * sizeof(float));
    c->v = alloc_aligned(B * c->kv_dim * sizeof(float));
    c->g = alloc_aligned(B * ffw * sizeof(float));
    c->u = alloc_aligned(B * ffw * sizeof(float));
    int moe_ok = 1;
    if (hp->n_expert > 0) {
        c->moe_w = alloc_aligned(B * hp->n_expert * sizeof(float));
        c->moe_id = alloc_aligned(B * hp->n_expert_used * sizeof(int32_t));
        c->moe_x = alloc_aligned(B * hp->n_embd * sizeof(float));
        c->moe_out = alloc_aligned(B * hp->n_expert_used * hp->n_embd * sizeof(float));
        moe_ok = c->moe_w && c->moe_id && c->moe_x && c->moe_out;
    }
    c->qbuf[0] = alloc_aligned(B * (size_t)mm_act_bytes_bound(widest));
    c->qbuf[1] = alloc_aligned(B * (size_t)mm_act_bytes_bound(widest));
    /* attention groups: all query heads of a kv head for attn_tok consecutive
     * tokens, at least 16 queries (an even number: the kernel pairs them; more
     * queries share each converted V tile); one token for very long
     * contexts, where the per-query score rows would take too much memory */
    const int32_t gqa = hp->n_head / hp->n_head_kv;
    c->attn_tok = gqa >= 16 || n_ctx > 65536 ? 1 : (16 + gqa - 1) / gqa;
    if (c->attn_tok > 1 && (c->attn_tok * gqa) % 2) c->attn_tok++;
    c->scores = alloc_aligned((size_t)n_threads * ctx_attn_scores_floats(c) * sizeof(float));
    c->probs16 = alloc_aligned((size_t)n_threads * (n_ctx + 32) * sizeof(pyrt_fp16));
    c->q16 = alloc_aligned((size_t)n_threads * hp->head_dim * sizeof(pyrt_fp16));
    c->attn_acc = alloc_aligned((size_t)n_threads * ctx_attn_acc_floats(c) * sizeof(float));
    c->pool = pool_create(n_threads);
    const int seqs_ok = ctx_alloc_seqs(c, n_seq);
    if (!seqs_ok || !c->kc || !c->vc || !c->x || !c->xn || !c->tmp || !c->q || !c->att || !c->k || !c->v ||
        !c->g || !c->u || !c->qbuf[0] || !c->qbuf[1] || !c->scores || !c->probs16 || !c->q16 || !c->attn_acc || !c->pool || !moe_ok) {
        pyrt_ctx_free(c);
        return pyrt_set_error(PYRT_ERR_OOM, "ctx_create: cannot allocate buffers for n_ctx=%d", n_ctx);
    }
    *out = c;
    return PYRT_OK;
}

int32_t pyrt_ctx_n_ctx(const pyrt_ctx *c) { return c ? c->n_ctx : 0; }
int32_t pyrt_ctx_n_past(const pyrt_ctx *c) { return c ? c->n_past[0] : 0; }
int32_t pyrt_ctx_n_threads(const pyrt_ctx *c) { return c && c->pool ? pool_size(c->pool) : 0; }
int32_t pyrt_ctx_n_seq(const pyrt_ctx *c) { return c ? c->n_seq : 0; }

int32_t pyrt_ctx_seq_n_past(const pyrt_ctx *c, int32_t seq) {
    return c && seq >= 0 && seq < c->n_seq ? c->n_past[seq] : 0;
}

int pyrt_ctx_seq_truncate(pyrt_ctx *c, int32_t seq, int32_t n_keep) {
    if (!c) return pyrt_set_error(PYRT_ERR_INVALID_ARG, "truncate: NULL ctx");
    if (seq < 0 || seq >= c->n_seq)
        return pyrt_set_error(PYRT_ERR_INVALID_ARG, "truncate: sequence %d not in [0, %d)", seq, c->n_seq);
    if (n_keep < 0 || n_keep > c->n_past[seq])
        return pyrt_set_error(PYRT_ERR_INVALID_ARG, "truncate: n_keep %d not in [0, %d]", n_keep, c->n_past[seq]);
    c->n_past[seq] = n_keep;
    return PYRT_OK;
}

int pyrt_ctx_truncate(pyrt_ctx *c, int32_t n_keep) { return pyrt_ctx_seq_truncate(c, 0, n_keep); }

int pyrt_ctx_seq_copy(pyrt_ctx *c, int32_t src, int32_t dst, int32_t n) {
    if (!c) return pyrt_set_error(PYRT_ERR_INVALID_ARG, "seq_copy: NULL ctx");
    if (src < 0 || src >= c->n_seq || dst < 0 || dst >= c->n_seq)
        return pyrt_set_error(PYRT_ERR_INVALID_ARG, "seq_copy: sequences %d -> %d not in [0, %d)", src, dst, c->n_seq);
    if (n < 0 || n > c->n_past[src])
        return pyrt_set_error(PYRT_ERR_INVALID_ARG, "seq_copy: %d positions not in [0, %d]", n, c->n_past[src]);
    if (src != dst) {
        const size_t ks = (size_t)c->n_ctx * (size_t)c->k_row_bytes, vs = (size_t)c->n_ctx * (size_t)c->v_row_bytes;
        for (int il = 0; il < c->m->hp.n_layer; il++) {
            const size_t kb = (size_t)il * c->n_seq * ks, vb = (size_t)il * c->n_seq * vs;
            memcpy(c->kc + kb + dst * ks, c->kc + kb + src * ks, (size_t)n * (size_t)c->k_row_bytes);
            memcpy(c->vc + vb + dst * vs, c->vc + vb + src * vs, (size_t)n * (size_t)c->v_row_bytes);
        }
    }
    c->n_past[dst] = n;
    return PYRT_OK;
}

int pyrt_ctx_set_numerics(pyrt_ctx *c, int32_t n_shape) {
    if (!c) return pyrt_set_error(PYRT_ERR_INVALID_ARG, "set_numerics: NULL ctx");
    if (n_shape < PYRT_NUMERICS_PER_TOKEN)
        return pyrt_set_error(PYRT_ERR_INVALID_ARG, "set_numerics: n_shape %d < -1", n_shape);
    c->n_shape = n_shape;
    return PYRT_OK;
}

void pyrt_ctx_abort(pyrt_ctx *c) {
    if (c) atomic_store(&c->abort_req, 1);
}

