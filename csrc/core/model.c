/* core/model.c — llama-family decoder: weights by GGUF name, F16 KV cache, and one
 * whole forward pass per pyrt_decode() call, run SPMD on the thread pool.
 *
 * Per-arch differences are hparam flags (arch == GEMMA3: embedding scale,
 * QK-norm, post-attention/post-FFN norms, GELU gate, sliding-window layers). */
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"
#include "matmul.h"
#include "ops.h"
#include "threadpool.h"
#include "cuda/pyrt_cuda.h"

#define MAX_LAYERS 1024

typedef struct {
    const float *attn_norm;      /* [n_embd]  */
    pyrt_weight wq;              /* [n_embd] -> [n_head*head_dim]    */
    pyrt_weight wk;              /* [n_embd] -> [n_head_kv*head_dim] */
    pyrt_weight wv;              /* [n_embd] -> [n_head_kv*head_dim] */
    pyrt_weight wo;              /* [n_head*head_dim] -> [n_embd]    */
    const float *ffn_norm;       /* [n_embd]  */
    pyrt_weight w_gate, w_up;    /* [n_embd] -> [n_ff] */
    pyrt_weight w_down;          /* [n_ff] -> [n_embd] */
    /* gemma3 */
    const float *q_norm, *k_norm;            /* [head_dim] */
    const float *post_attn_norm, *post_ffn_norm;  /* [n_embd] */
} layer_weights;

struct pyrt_model {
    pyrt_hparams hp;
    pyrt_weight tok_embd;        /* rows n_vocab of n_embd */
    const float *out_norm;       /* [n_embd] */
    pyrt_weight output;          /* rows n_vocab of n_embd (tied: = tok_embd) */
    int has_output;
    layer_weights *layers;       /* [n_layer] */
    int finalized;
    pyrt_cuda_model *cuda;       /* device copy of the weights (pyrt_model_offload) */
    int32_t cuda_device;
};

/* ---- model creation --------------------------------------------------------- */

static int is_gemma3(const pyrt_hparams *hp) { return hp->arch == PYRT_ARCH_GEMMA3; }

int pyrt_model_create(const pyrt_hparams *hp, pyrt_model **out) {
    if (!hp || !out) return pyrt_set_error(PYRT_ERR_INVALID_ARG, "model_create: NULL argument");
    *out = NULL;
#define HP_CHECK(cond, ...) if (!(cond)) return pyrt_set_error(PYRT_ERR_INVALID_ARG, __VA_ARGS__)
    HP_CHECK(hp->arch == PYRT_ARCH_LLAMA || hp->arch == PYRT_ARCH_GEMMA3, "unknown arch id %d", hp->arch);
    HP_CHECK(hp->n_vocab > 0 && hp->n_vocab <= (1 << 22), "n_vocab %d out of range", hp->n_vocab);
    HP_CHECK(hp->n_embd > 0 && hp->n_embd <= 65536, "n_embd %d out of range", hp->n_embd);
    HP_CHECK(hp->n_layer > 0 && hp->n_layer <= MAX_LAYERS, "n_layer %d out of range", hp->n_layer);
    HP_CHECK(hp->n_head > 0 && hp->n_head <= 1024, "n_head %d out of range", hp->n_head);
    HP_CHECK(hp->n_head_kv > 0 && hp->n_head_kv <= hp->n_head && hp->n_head % hp->n_head_kv == 0,
             "n_head_kv %d must divide n_head %d", hp->n_head_kv, hp->n_head);
    HP_CHECK(hp->head_dim > 0 && hp->head_dim <= 1024 && hp->head_dim % 2 == 0, "head_dim %d invalid", hp->head_dim);
    HP_CHECK(hp->n_rot > 0 && hp->n_rot <= hp->head_dim && hp->n_rot % 2 == 0, "n_rot %d invalid", hp->n_rot);
    HP_CHECK(hp->rope_type == PYRT_ROPE_NORMAL || hp->rope_type == PYRT_ROPE_NEOX, "rope_type %d invalid", hp->rope_type);
    HP_CHECK(hp->n_ff > 0 && hp->n_ff <= (1 << 20), "n_ff %d out of range", hp->n_ff);
    HP_CHECK(isfinite(hp->norm_eps) && hp->norm_eps > 0 && hp->norm_eps < 1, "norm_eps %g invalid", hp->norm_eps);
    HP_CHECK(isfinite(hp->rope_freq_base) && hp->rope_freq_base > 0, "rope_freq_base %g invalid", hp->rope_freq_base);
    HP_CHECK(isfinite(hp->rope_freq_scale) && hp->rope_freq_scale > 0, "rope_freq_scale %g invalid", hp->rope_freq_scale);
    HP_CHECK(isfinite(hp->attn_scale) && hp->attn_scale >= 0, "attn_scale %g invalid", hp->attn_scale);
    HP_CHECK(isfinite(hp->embd_scale) && hp->embd_scale >= 0, "embd_scale %g invalid", hp->embd_scale);
    HP_CHECK(hp->sliding_window >= 0 && hp->swa_period >= 0, "sliding window settings invalid");
    if (hp->sliding_window > 0)
        HP_CHECK(isfinite(hp->rope_freq_base_swa) && hp->rope_freq_base_swa > 0, "rope_freq_base_swa %g invalid", hp->rope_freq_base_swa);
#undef HP_CHECK
    pyrt_model *m = calloc(1, sizeof *m);
    if (!m) return pyrt_set_error(PYRT_ERR_OOM, "model_create: out of memory");
    m->hp = *hp;
    m->layers = calloc((size_t)hp->n_layer, sizeof(layer_weights));
    if (!m->layers) { free(m); return pyrt_set_error(PYRT_ERR_OOM, "model_create: out of memory"); }
    *out = m;
    return PYRT_OK;
}

void pyrt_model_free(pyrt_model *m) {
    if (!m) return;
    pyrt_cuda_model_free(m->cuda);
    free(m->layers);
    free(m);
}

/* Which slot a name fills, and the shape it must have. */
typedef struct {
    pyrt_weight *w;          /* matmul weight slot, or NULL   */
    const float **vec;       /* 1-D f32 slot, or NULL         */
    int64_t ne0, ne1;        /* expected shape (ne1 = 1 for vectors) */
} slot;

static int find_slot(pyrt_model *m, const char *name, slot *s) {
    const pyrt_hparams *hp = &m->hp;
    const int64_t E = hp->n_embd, Q = (int64_t)hp->n_head * hp->head_dim;
    const int64_t KV = (int64_t)hp->n_head_kv * hp->head_dim;
    memset(s, 0, sizeof *s);
    if (!strcmp(name, "token_embd.weight")) { s->w = &m->tok_embd; s->ne0 = E; s->ne1 = hp->n_vocab; return 1; }
    if (!strcmp(name, "output.weight"))     { s->w = &m->output; s->ne0 = E; s->ne1 = hp->n_vocab; return 1; }
    if (!strcmp(name, "output_norm.weight")) { s->vec = &m->out_norm; s->ne0 = E; s->ne1 = 1; return 1; }
    int il = -1, off = 0;
    if (sscanf(name, "blk.%d.%n", &il, &off) != 1 || off == 0 || il < 0 || il >= hp->n_layer) return 0;
    layer_weights *L = &m->layers[il];
    const char *r = name + off;
    const int g3 = is_gemma3(hp);
#define W(nm, field, a, b) if (!strcmp(r, nm)) { s->w = &L->field; s->ne0 = a; s->ne1 = b; return 1; }
#define V(nm, field, a)    if (!strcmp(r, nm)) { s->vec = &L->field; s->ne0 = a; s->ne1 = 1; return 1; }
    V("attn_norm.weight", attn_norm, E)
    W("attn_q.weight", wq, E, Q)
    W("attn_k.weight", wk, E, KV)
    W("attn_v.weight", wv, E, KV)
    W("attn_output.weight", wo, Q, E)
    V("ffn_norm.weight", ffn_norm, E)
    W("ffn_gate.weight", w_gate, E, hp->n_ff)
    W("ffn_up.weight", w_up, E, hp->n_ff)
    W("ffn_down.weight", w_down, hp->n_ff, E)
    if (g3) {
        V("attn_q_norm.weight", q_norm, hp->head_dim)
        V("attn_k_norm.weight", k_norm, hp->head_dim)
        V("post_attention_norm.weight", post_attn_norm, E)
        V("post_ffw_norm.weight", post_ffn_norm, E)
    }
#undef W
#undef V
    return 0;
}

int pyrt_model_set_tensor(pyrt_model *m, const char *name, int32_t type,
                          int32_t n_dims, const int64_t *ne, const void *data, int64_t nbytes) {
    if (!m || !name || !ne || !data) return pyrt_set_error(PYRT_ERR_INVALID_ARG, "set_tensor: NULL argument");
    if (m->finalized) return pyrt_set_error(PYRT_ERR_INVALID_ARG, "set_tensor: model already finalized");
    slot s;
    if (!find_slot(m, name, &s))
        return pyrt_set_error(PYRT_ERR_INVALID_ARG, "tensor '%s' is not used by this architecture", name);
    if (n_dims < 1 || n_dims > 4) return pyrt_set_error(PYRT_ERR_INVALID_ARG, "tensor '%s': n_dims %d", name, n_dims);
    int64_t shape[4] = { 1, 1, 1, 1 };
    for (int i = 0; i < n_dims; i++) shape[i] = ne[i];
    if (shape[0] != s.ne0 || shape[1] != s.ne1 || shape[2] != 1 || shape[3] != 1)
        return pyrt_set_error(PYRT_ERR_INVALID_ARG,
            "tensor '%s' has shape [%lld, %lld, %lld, %lld], expected [%lld, %lld]", name,
            (long long)shape[0], (long long)shape[1], (long long)shape[2], (long long)shape[3],
            (long long)s.ne0, (long long)s.ne1);
    const int32_t bs = pyrt_type_block_size(type);
    if (bs == 0) return pyrt_set_error(PYRT_ERR_UNSUPPORTED, "tensor '%s': unsupported type %d", name, type);
    if (shape[0] % bs) return pyrt_set_error(PYRT_ERR_INVALID_ARG, "tensor '%s': row length %lld not a multiple of block %d", name, (long long)shape[0], bs);
    const int64_t row_bytes = shape[0] / bs * pyrt_type_block_bytes(type);
    if (nbytes != row_bytes * shape[1])
        return pyrt_set_error(PYRT_ERR_INVALID_ARG, "tensor '%s': %lld bytes, expected %lld", name, (long long)nbytes, (long long)(row_bytes * shape[1]));
    if (s.vec) {
        if (type != PYRT_TYPE_F32) return pyrt_set_error(PYRT_ERR_UNSUPPORTED, "tensor '%s': norm weights must be F32 (type %d)", name, type);
        *s.vec = data;
        return PYRT_OK;
    }
    const pyrt_kernels *k = pyrt_kernels_current();
    const int is_embd = s.w == &m->tok_embd;
    if (is_embd ? !k->type[type].dequantize : !pyrt_type_supported(type))
        return pyrt_set_error(PYRT_ERR_UNSUPPORTED, "tensor '%s': type %d has no kernels in pyrt yet", name, type);
    s.w->data = data;
    s.w->type = type;
    s.w->cols = shape[0];
    s.w->rows = shape[1];
    s.w->row_bytes = row_bytes;
    if (s.w == &m->output) m->has_output = 1;
    return PYRT_OK;
}

int pyrt_model_finalize(pyrt_model *m) {
    if (!m) return pyrt_set_error(PYRT_ERR_INVALID_ARG, "finalize: NULL model");
    const pyrt_hparams *hp = &m->hp;
#define NEED(ptr, nm, il) if (!(ptr)) return pyrt_set_error(PYRT_ERR_INVALID_ARG, il >= 0 ? "missing tensor blk.%d.%s" : "missing tensor %.0d%s", il, nm)
    NEED(m->tok_embd.data, "token_embd.weight", -1);
    NEED(m->out_norm, "output_norm.weight", -1);
    for (int il = 0; il < hp->n_layer; il++) {
        const layer_weights *L = &m->layers[il];
        NEED(L->attn_norm, "attn_norm.weight", il);
        NEED(L->wq.data, "attn_q.weight", il);
        NEED(L->wk.data, "attn_k.weight", il);
        NEED(L->wv.data, "attn_v.weight", il);
        NEED(L->wo.data, "attn_output.weight", il);
        NEED(L->ffn_norm, "ffn_norm.weight", il);
        NEED(L->w_gate.data, "ffn_gate.weight", il);
        NEED(L->w_up.data, "ffn_up.weight", il);
        NEED(L->w_down.data, "ffn_down.weight", il);
        if (is_gemma3(hp)) {
            NEED(L->q_norm, "attn_q_norm.weight", il);
            NEED(L->k_norm, "attn_k_norm.weight", il);
            NEED(L->post_attn_norm, "post_attention_norm.weight", il);
            NEED(L->post_ffn_norm, "post_ffw_norm.weight", il);
        }
    }
#undef NEED
    if (!m->has_output) {
        if (!pyrt_type_supported(m->tok_embd.type))
            return pyrt_set_error(PYRT_ERR_UNSUPPORTED, "tied output: token_embd type %d has no matmul kernel", m->tok_embd.type);
        m->output = m->tok_embd;
    }
    m->finalized = 1;
    return PYRT_OK;
}

/* ---- context ------------------------------------------------------------------ */

struct pyrt_ctx {
    const pyrt_model *m;
    int32_t n_ctx, n_batch, n_past;
    int64_t kv_dim;
    pyrt_pool *pool;
    pyrt_fp16 *kc, *vc;          /* [n_layer][n_ctx][kv_dim] */
    /* activations, [n_batch][width] */
    float *x, *xn, *q, *k, *v, *att, *tmp, *g, *u;
    void *qbuf[2];               /* quantized activations, 2 act types */
    int32_t attn_tok;            /* tokens per attention group (kernels.h)     */
    float *scores;               /* [n_threads][n_q][n_ctx + 32], n_q = attn_tok * gqa */
    pyrt_fp16 *probs16;          /* [n_threads][n_ctx + 32]   */
    pyrt_fp16 *q16;              /* [n_threads][head_dim]     */
    float *attn_acc;             /* [n_threads][attn_acc_floats()] */
    _Atomic int abort_req;
    int stop_now;
    int32_t backend;             /* PYRT_BACKEND_*                              */
    pyrt_cuda_ctx *cuda;         /* CUDA: KV cache + scratch on the device      */
    int32_t n_shape;             /* 0, or the batch size whose arithmetic to use */
    /* current job */
    const int32_t *tokens;
    int32_t n_tok, pos0, out_first, n_out, out_kind;
    float *out;
};

/* queries per attention group, and its scratch per thread (kernels.h:
 * pyrt_attn_args.scores and .acc) */
static size_t attn_n_q(const pyrt_ctx *c) {
    return (size_t)c->attn_tok * (size_t)(c->m->hp.n_head / c->m->hp.n_head_kv);
}
static size_t attn_scores_floats(const pyrt_ctx *c) { return attn_n_q(c) * ((size_t)c->n_ctx + 32); }
static size_t attn_acc_floats(const pyrt_ctx *c) {
    const size_t n_q = attn_n_q(c), hd = (size_t)c->m->hp.head_dim;
    return 32 * hd > n_q * (hd + 264) ? 32 * hd : n_q * (hd + 264);
}

static void *alloc_aligned(size_t n) {
    void *p = NULL;
    if (n == 0) n = 64;
    if (posix_memalign(&p, 64, n) != 0) return NULL;
    return p;
}

void pyrt_ctx_free(pyrt_ctx *c) {
    if (!c) return;
    pyrt_cuda_ctx_free(c->cuda);
    pool_free(c->pool);
    void *bufs[] = { c->kc, c->vc, c->x, c->xn, c->q, c->k, c->v, c->att, c->tmp, c->g, c->u,
                     c->qbuf[0], c->qbuf[1], c->scores, c->probs16, c->q16, c->attn_acc };
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]);
    free(c);
}

static int ctx_create_cuda(const pyrt_model *m, int32_t n_ctx, int32_t n_batch, int32_t device, pyrt_ctx **out);

int pyrt_ctx_create_ex(const pyrt_model *m, const pyrt_ctx_params *p, pyrt_ctx **out) {
    if (!p) return pyrt_set_error(PYRT_ERR_INVALID_ARG, "ctx_create_ex: NULL params");
    for (int i = 0; i < 7; i++)
        if (p->reserved[i]) return pyrt_set_error(PYRT_ERR_INVALID_ARG, "ctx_create_ex: reserved fields must be zero");
    if (p->backend == PYRT_BACKEND_CPU) {
        if (p->device != 0) return pyrt_set_error(PYRT_ERR_INVALID_ARG, "CPU backend has one device (0), not %d", p->device);
        return pyrt_ctx_create(m, p->n_ctx, p->n_threads, p->n_batch, out);
    }
    if (p->backend == PYRT_BACKEND_CUDA) return ctx_create_cuda(m, p->n_ctx, p->n_batch, p->device, out);
    if (out) *out = NULL;
    return pyrt_set_error(PYRT_ERR_INVALID_ARG, "unknown backend %d", p->backend);
}

int32_t pyrt_ctx_backend(const pyrt_ctx *c) { return c ? c->backend : -1; }

int pyrt_ctx_create(const pyrt_model *m, int32_t n_ctx, int32_t n_threads, int32_t n_batch, pyrt_ctx **out) {
    if (!m || !out) return pyrt_set_error(PYRT_ERR_INVALID_ARG, "ctx_create: NULL argument");
    *out = NULL;
    if (!m->finalized) return pyrt_set_error(PYRT_ERR_INVALID_ARG, "ctx_create: model not finalized");
    if (n_ctx <= 0 || n_ctx > (1 << 24)) return pyrt_set_error(PYRT_ERR_INVALID_ARG, "n_ctx %d out of range", n_ctx);
    if (n_threads <= 0) n_threads = pool_default_threads();
    if (n_threads > 512) return pyrt_set_error(PYRT_ERR_INVALID_ARG, "n_threads %d out of range", n_threads);
    if (n_batch <= 0) n_batch = 512;
    if (n_batch > n_ctx) n_batch = n_ctx;
    const pyrt_hparams *hp = &m->hp;
    pyrt_ctx *c = calloc(1, sizeof *c);
    if (!c) return pyrt_set_error(PYRT_ERR_OOM, "ctx_create: out of memory");
    c->m = m;
    c->n_ctx = n_ctx;
    c->n_batch = n_batch;
    c->kv_dim = (int64_t)hp->n_head_kv * hp->head_dim;
    const int64_t qd = (int64_t)hp->n_head * hp->head_dim;
    const size_t kv_elems = (size_t)hp->n_layer * (size_t)n_ctx * (size_t)c->kv_dim;
    if (kv_elems / (size_t)n_ctx / (size_t)hp->n_layer != (size_t)c->kv_dim || kv_elems > ((size_t)1 << 40)) {
        free(c);
        return pyrt_set_error(PYRT_ERR_OOM, "KV cache of %d positions is too large", n_ctx);
    }
    const size_t B = (size_t)n_batch;
    int64_t widest = hp->n_embd;
    if (qd > widest) widest = qd;
    if (hp->n_ff > widest) widest = hp->n_ff;
    c->kc = alloc_aligned(kv_elems * sizeof(pyrt_fp16));
    c->vc = alloc_aligned(kv_elems * sizeof(pyrt_fp16));
    c->x = alloc_aligned(B * hp->n_embd * sizeof(float));
    c->xn = alloc_aligned(B * hp->n_embd * sizeof(float));
    c->tmp = alloc_aligned(B * hp->n_embd * sizeof(float));
    c->q = alloc_aligned(B * qd * sizeof(float));
    c->att = alloc_aligned(B * qd * sizeof(float));
    c->k = alloc_aligned(B * c->kv_dim * sizeof(float));
    c->v = alloc_aligned(B * c->kv_dim * sizeof(float));
    c->g = alloc_aligned(B * hp->n_ff * sizeof(float));
    c->u = alloc_aligned(B * hp->n_ff * sizeof(float));
    c->qbuf[0] = alloc_aligned(B * (size_t)mm_act_bytes_bound(widest));
    c->qbuf[1] = alloc_aligned(B * (size_t)mm_act_bytes_bound(widest));
    /* attention groups: all query heads of a kv head for attn_tok consecutive
     * tokens, at least 16 queries (an even number: the kernel pairs them; more
     * queries share each converted V tile); one token for very long
     * contexts, where the per-query score rows would take too much memory */
    const int32_t gqa = hp->n_head / hp->n_head_kv;
    c->attn_tok = gqa >= 16 || n_ctx > 65536 ? 1 : (16 + gqa - 1) / gqa;
    if (c->attn_tok > 1 && (c->attn_tok * gqa) % 2) c->attn_tok++;
    c->scores = alloc_aligned((size_t)n_threads * attn_scores_floats(c) * sizeof(float));
    c->probs16 = alloc_aligned((size_t)n_threads * (n_ctx + 32) * sizeof(pyrt_fp16));
    c->q16 = alloc_aligned((size_t)n_threads * hp->head_dim * sizeof(pyrt_fp16));
    c->attn_acc = alloc_aligned((size_t)n_threads * attn_acc_floats(c) * sizeof(float));
    c->pool = pool_create(n_threads);
    if (!c->kc || !c->vc || !c->x || !c->xn || !c->tmp || !c->q || !c->att || !c->k || !c->v ||
        !c->g || !c->u || !c->qbuf[0] || !c->qbuf[1] || !c->scores || !c->probs16 || !c->q16 || !c->attn_acc || !c->pool) {
        pyrt_ctx_free(c);
        return pyrt_set_error(PYRT_ERR_OOM, "ctx_create: cannot allocate buffers for n_ctx=%d", n_ctx);
    }
    *out = c;
    return PYRT_OK;
}

int32_t pyrt_ctx_n_ctx(const pyrt_ctx *c) { return c ? c->n_ctx : 0; }
int32_t pyrt_ctx_n_past(const pyrt_ctx *c) { return c ? c->n_past : 0; }
int32_t pyrt_ctx_n_threads(const pyrt_ctx *c) { return c && c->pool ? pool_size(c->pool) : 0; }

/* ---- backends --------------------------------------------------------------------- */

int32_t pyrt_backend_device_count(int32_t backend) {
    if (backend == PYRT_BACKEND_CPU) return 1;
    if (backend == PYRT_BACKEND_CUDA) return pyrt_cuda_device_count();
    return 0;
}

int32_t pyrt_backend_available(int32_t backend) { return pyrt_backend_device_count(backend) > 0; }

int32_t pyrt_backend_compiled(int32_t backend) {
    return backend == PYRT_BACKEND_CPU || (backend == PYRT_BACKEND_CUDA && pyrt_cuda_compiled());
}

int32_t pyrt_backend_type_supported(int32_t backend, int32_t type) {
    if (backend == PYRT_BACKEND_CPU) return pyrt_type_supported(type);
    if (backend == PYRT_BACKEND_CUDA) return pyrt_cuda_type_supported(type);
    return 0;
}

int pyrt_backend_device_name(int32_t backend, int32_t device, char *buf, int32_t len) {
    if (!buf || len <= 0) return pyrt_set_error(PYRT_ERR_INVALID_ARG, "device_name: empty buffer");
    buf[0] = 0;
    if (backend == PYRT_BACKEND_CPU) {
        if (device != 0) return pyrt_set_error(PYRT_ERR_INVALID_ARG, "CPU backend has one device (0), not %d", device);
        snprintf(buf, (size_t)len, "CPU (%s kernels)", pyrt_kernels_name(pyrt_kernels_active()));
        return PYRT_OK;
    }
    if (backend == PYRT_BACKEND_CUDA) return pyrt_cuda_device_name(device, buf, (size_t)len);
    return pyrt_set_error(PYRT_ERR_INVALID_ARG, "unknown backend %d", backend);
}

static pyrt_cuda_tensor cuda_w(const pyrt_weight *w) {
    pyrt_cuda_tensor t = { w->data, w->type, w->cols, w->rows };
    return t;
}
static pyrt_cuda_tensor cuda_v(const float *v, int64_t n) {
    pyrt_cuda_tensor t = { v, PYRT_TYPE_F32, n, 1 };
    return t;
}

int pyrt_model_offload(pyrt_model *m, int32_t backend, int32_t device) {
    if (!m) return pyrt_set_error(PYRT_ERR_INVALID_ARG, "offload: NULL model");
    if (!m->finalized) return pyrt_set_error(PYRT_ERR_INVALID_ARG, "offload: model not finalized");
    if (backend == PYRT_BACKEND_CPU) return PYRT_OK;
    if (backend != PYRT_BACKEND_CUDA) return pyrt_set_error(PYRT_ERR_INVALID_ARG, "offload: unknown backend %d", backend);
    if (m->cuda)
        return m->cuda_device == device ? PYRT_OK
             : pyrt_set_error(PYRT_ERR_INVALID_ARG, "offload: model already on CUDA device %d", m->cuda_device);
    const pyrt_hparams *hp = &m->hp;
    const int64_t E = hp->n_embd, HD = hp->head_dim;
    pyrt_cuda_layer *L = calloc((size_t)hp->n_layer, sizeof *L);
    if (!L) return pyrt_set_error(PYRT_ERR_OOM, "offload: out of memory");
    for (int il = 0; il < hp->n_layer; il++) {
        const layer_weights *l = &m->layers[il];
        L[il].attn_norm = cuda_v(l->attn_norm, E);
        L[il].wq = cuda_w(&l->wq); L[il].wk = cuda_w(&l->wk); L[il].wv = cuda_w(&l->wv); L[il].wo = cuda_w(&l->wo);
        L[il].ffn_norm = cuda_v(l->ffn_norm, E);
        L[il].w_gate = cuda_w(&l->w_gate); L[il].w_up = cuda_w(&l->w_up); L[il].w_down = cuda_w(&l->w_down);
        L[il].q_norm = cuda_v(l->q_norm, HD); L[il].k_norm = cuda_v(l->k_norm, HD);
        L[il].post_attn_norm = cuda_v(l->post_attn_norm, E); L[il].post_ffn_norm = cuda_v(l->post_ffn_norm, E);
    }
    pyrt_cuda_model_desc d = { *hp, cuda_w(&m->tok_embd), cuda_v(m->out_norm, E), cuda_w(&m->output), L };
    const int st = pyrt_cuda_model_upload(&d, device, &m->cuda);
    free(L);
    if (st == PYRT_OK) m->cuda_device = device;
    return st;
}

int64_t pyrt_model_device_bytes(const pyrt_model *m, int32_t backend) {
    return m && backend == PYRT_BACKEND_CUDA ? pyrt_cuda_model_device_bytes(m->cuda) : 0;
}

static int ctx_create_cuda(const pyrt_model *m, int32_t n_ctx, int32_t n_batch, int32_t device, pyrt_ctx **out) {
    if (!m || !out) return pyrt_set_error(PYRT_ERR_INVALID_ARG, "ctx_create: NULL argument");
    *out = NULL;
    if (!m->finalized) return pyrt_set_error(PYRT_ERR_INVALID_ARG, "ctx_create: model not finalized");
    if (!m->cuda || m->cuda_device != device)
        return pyrt_set_error(PYRT_ERR_INVALID_ARG, "ctx_create: offload the model to CUDA device %d first", device);
    if (n_ctx <= 0 || n_ctx > (1 << 24)) return pyrt_set_error(PYRT_ERR_INVALID_ARG, "n_ctx %d out of range", n_ctx);
    if (n_batch <= 0) n_batch = 512;
    if (n_batch > n_ctx) n_batch = n_ctx;
    pyrt_ctx *c = calloc(1, sizeof *c);
    if (!c) return pyrt_set_error(PYRT_ERR_OOM, "ctx_create: out of memory");
    c->m = m;
    c->n_ctx = n_ctx;
    c->n_batch = n_batch;
    c->kv_dim = (int64_t)m->hp.n_head_kv * m->hp.head_dim;
    c->backend = PYRT_BACKEND_CUDA;
    const int st = pyrt_cuda_ctx_create(m->cuda, n_ctx, n_batch, &c->cuda);
    if (st) { free(c); return st; }
    *out = c;
    return PYRT_OK;
}

int pyrt_ctx_truncate(pyrt_ctx *c, int32_t n_keep) {
    if (!c) return pyrt_set_error(PYRT_ERR_INVALID_ARG, "truncate: NULL ctx");
    if (n_keep < 0 || n_keep > c->n_past)
        return pyrt_set_error(PYRT_ERR_INVALID_ARG, "truncate: n_keep %d not in [0, %d]", n_keep, c->n_past);
    c->n_past = n_keep;
    return PYRT_OK;
}

int pyrt_ctx_set_numerics(pyrt_ctx *c, int32_t n_shape) {
    if (!c) return pyrt_set_error(PYRT_ERR_INVALID_ARG, "set_numerics: NULL ctx");
    if (n_shape < 0) return pyrt_set_error(PYRT_ERR_INVALID_ARG, "set_numerics: n_shape %d < 0", n_shape);
    c->n_shape = n_shape;
    return PYRT_OK;
}

void pyrt_ctx_abort(pyrt_ctx *c) {
    if (c) atomic_store(&c->abort_req, 1);
}

/* ---- forward -------------------------------------------------------------------- */

static void forward_job(void *arg, int ith, int nth) {
    pyrt_ctx *c = arg;
    const pyrt_model *m = c->m;
    const pyrt_hparams *hp = &m->hp;
    const pyrt_kernels *K = pyrt_kernels_current();
    pyrt_pool *P = c->pool;
    const int64_t E = hp->n_embd, HD = hp->head_dim, KVD = c->kv_dim;
    const int64_t QD = (int64_t)hp->n_head * HD, FF = hp->n_ff;
    const int32_t B = c->n_tok, gqa = hp->n_head / hp->n_head_kv;
    const float attn_scale = hp->attn_scale > 0 ? hp->attn_scale : 1.0f / sqrtf((float)HD);
    const int g3 = is_gemma3(hp);
    /* batch shape for llama.cpp-equivalent arithmetic (pyrt_ctx_set_numerics) */
#define SHAPE(n) ((n) == B && c->n_shape > 0 ? (int64_t)c->n_shape : (int64_t)(n))
    pyrt_attn_args attn = {
        .stride = KVD, .head_dim = (int32_t)HD,
        .batched = (c->n_shape > 0 ? c->n_shape : B) > 1,
        .scale = g3 ? 1.0f : attn_scale,   /* gemma3 scales q itself, below */
        .scores = c->scores + (size_t)ith * attn_scores_floats(c),
        .probs16 = c->probs16 + (size_t)ith * (c->n_ctx + 32),
        .q16 = c->q16 + (size_t)ith * HD,
        .acc = c->attn_acc + (size_t)ith * attn_acc_floats(c),
        .n_head = gqa, .q_stride = QD,
    };
    int64_t lo, hi;

    /* ---- token embeddings ---- */
    pool_split(B, ith, nth, &lo, &hi);
    for (int64_t t = lo; t < hi; t++) {
        const pyrt_weight *te = &m->tok_embd;
        K->type[te->type].dequantize((const char *)te->data + (int64_t)c->tokens[t] * te->row_bytes, c->x + t * E, E);
        if (hp->embd_scale > 0) op_scale(c->x + t * E, hp->embd_scale, E);
    }
    pool_barrier(P);

    for (int il = 0; il < hp->n_layer; il++) {
        const layer_weights *L = &m->layers[il];
        const int swa = hp->sliding_window > 0 && hp->swa_period > 0 && ((il + 1) % hp->swa_period) != 0;
        const float base = swa ? hp->rope_freq_base_swa : hp->rope_freq_base;
        const float fscale = swa ? 1.0f : hp->rope_freq_scale;   /* llama.cpp: no scaling on SWA layers */
        pyrt_fp16 *kc = c->kc + (size_t)il * c->n_ctx * KVD;
        pyrt_fp16 *vc = c->vc + (size_t)il * c->n_ctx * KVD;

        /* ---- attention: norm, q/k/v projections ---- */
        pool_split(B, ith, nth, &lo, &hi);
        for (int64_t t = lo; t < hi; t++) op_rmsnorm(c->xn + t * E, c->x + t * E, L->attn_norm, E, hp->norm_eps);
        pool_barrier(P);
        mm_task qkv[3] = { { &L->wq, c->q, QD }, { &L->wk, c->k, KVD }, { &L->wv, c->v, KVD } };
        mm_group(K, P, ith, nth, c->xn, E, B, SHAPE(B), qkv, 3, c->qbuf);

        /* ---- (qk-norm), rope, store k/v into the F16 cache ---- */
        const int64_t n_items = (int64_t)B * (hp->n_head + hp->n_head_kv);
        pool_split(n_items, ith, nth, &lo, &hi);
        for (int64_t it = lo; it < hi; it++) {
            const int64_t t = it / (hp->n_head + hp->n_head_kv);
            const int64_t h = it % (hp->n_head + hp->n_head_kv);
            const float pos = (float)(c->pos0 + t);
            if (h < hp->n_head) {
                float *qh = c->q + t * QD + h * HD;
                if (g3) op_rmsnorm(qh, qh, L->q_norm, HD, hp->norm_eps);
                K->rope(qh, hp->n_rot, hp->rope_type, pos, base, fscale);
                if (g3) op_scale(qh, attn_scale, HD);   /* in f32, before the f16 rounding of q */
            } else {
                const int64_t hk = h - hp->n_head;
                float *kh = c->k + t * KVD + hk * HD;
                if (g3) op_rmsnorm(kh, kh, L->k_norm, HD, hp->norm_eps);
                K->rope(kh, hp->n_rot, hp->rope_type, pos, base, fscale);
                const int64_t row = (int64_t)(c->pos0 + t) * KVD + hk * HD;
                K->fp32_to_fp16(kh, kc + row, HD);
                K->fp32_to_fp16(c->v + t * KVD + hk * HD, vc + row, HD);
            }
        }
        pool_barrier(P);

        /* ---- causal attention over the cache, per group: the gqa query heads
         * of one kv head for attn_tok consecutive tokens. Groups go round-robin
         * so that early (short) and late (long) ones spread over the threads. */
        {
            const int64_t n_kv = hp->n_head_kv, n_blk = (B + c->attn_tok - 1) / c->attn_tok;
            attn.first = 0;
            attn.window = swa ? hp->sliding_window : 0;
            for (int64_t it = ith; it < n_blk * n_kv; it += nth) {
                const int64_t t0 = it / n_kv * c->attn_tok, hk = it % n_kv;
                const int64_t off = t0 * QD + hk * gqa * HD;
                attn.out = c->att + off;
                attn.q = c->q + off;
                attn.k = kc + hk * HD;
                attn.v = vc + hk * HD;
                attn.last = c->pos0 + (int32_t)t0;
                attn.n_tok = (int32_t)(B - t0 < c->attn_tok ? B - t0 : c->attn_tok);
                K->attn_head(&attn);
            }
        }
        pool_barrier(P);

        /* ---- output projection + residual ---- */
        mm_task o[1] = { { &L->wo, c->tmp, E } };
        mm_group(K, P, ith, nth, c->att, QD, B, SHAPE(B), o, 1, c->qbuf);
        pool_split(B, ith, nth, &lo, &hi);
        for (int64_t t = lo; t < hi; t++) {
            float *tt = c->tmp + t * E;
            if (g3) op_rmsnorm(tt, tt, L->post_attn_norm, E, hp->norm_eps);
            op_add(c->x + t * E, tt, E);
            op_rmsnorm(c->xn + t * E, c->x + t * E, L->ffn_norm, E, hp->norm_eps);
        }
        pool_barrier(P);

        /* ---- feed-forward: gate/up, activation, down + residual ---- */
        mm_task gu[2] = { { &L->w_gate, c->g, FF }, { &L->w_up, c->u, FF } };
        mm_group(K, P, ith, nth, c->xn, E, B, SHAPE(B), gu, 2, c->qbuf);
        pool_split((int64_t)B * FF, ith, nth, &lo, &hi);   /* element-wise: split flat */
        if (g3) K->geglu(c->g + lo, c->u + lo, hi - lo);
        else    K->swiglu(c->g + lo, c->u + lo, hi - lo);
        pool_barrier(P);
        mm_task d[1] = { { &L->w_down, c->tmp, E } };
        mm_group(K, P, ith, nth, c->g, FF, B, SHAPE(B), d, 1, c->qbuf);
        pool_split(B, ith, nth, &lo, &hi);
        for (int64_t t = lo; t < hi; t++) {
            float *tt = c->tmp + t * E;
            if (g3) op_rmsnorm(tt, tt, L->post_ffn_norm, E, hp->norm_eps);
            op_add(c->x + t * E, tt, E);
        }
        /* one consistent abort decision for all threads: written before the
         * barrier by thread 0, read after it by everyone */
        if (ith == 0) c->stop_now = atomic_load(&c->abort_req);
        pool_barrier(P);
        if (c->stop_now) return;
    }

    /* ---- final norm and output ---- */
    if (c->n_out == 0) return;
    pool_split(c->n_out, ith, nth, &lo, &hi);
    for (int64_t t = lo; t < hi; t++) {
        const int64_t src = c->out_first + t;
        float *dst = c->out_kind == PYRT_OUT_EMBD_ALL ? c->out + t * E : c->xn + t * E;
        op_rmsnorm(dst, c->x + src * E, m->out_norm, E, hp->norm_eps);
    }
    pool_barrier(P);
    if (c->out_kind == PYRT_OUT_EMBD_ALL) return;
    mm_task lg[1] = { { &m->output, c->out, hp->n_vocab } };
    mm_group(K, P, ith, nth, c->xn, E, c->n_out, SHAPE(c->n_out), lg, 1, c->qbuf);
}

int pyrt_decode(pyrt_ctx *c, const int32_t *tokens, int32_t n_tokens, int32_t pos0,
                int32_t out_kind, float *out, int64_t out_len) {
    if (!c || !tokens) return pyrt_set_error(PYRT_ERR_INVALID_ARG, "decode: NULL argument");
    const pyrt_hparams *hp = &c->m->hp;
    if (n_tokens <= 0) return pyrt_set_error(PYRT_ERR_INVALID_ARG, "decode: n_tokens %d must be >= 1", n_tokens);
    if (pos0 < 0 || pos0 > c->n_past)
        return pyrt_set_error(PYRT_ERR_INVALID_ARG, "decode: pos0 %d must be in [0, n_past=%d]", pos0, c->n_past);
    if ((int64_t)pos0 + n_tokens > c->n_ctx)
        return pyrt_set_error(PYRT_ERR_CONTEXT_FULL, "decode: %d tokens at position %d exceed n_ctx %d",
                              n_tokens, pos0, c->n_ctx);
    for (int32_t i = 0; i < n_tokens; i++)
        if (tokens[i] < 0 || tokens[i] >= hp->n_vocab)
            return pyrt_set_error(PYRT_ERR_INVALID_ARG, "decode: token id %d at index %d outside [0, %d)", tokens[i], i, hp->n_vocab);
    int64_t need = 0;
    switch (out_kind) {
    case PYRT_OUT_NONE: break;
    case PYRT_OUT_LOGITS_LAST: need = hp->n_vocab; break;
    case PYRT_OUT_LOGITS_ALL: need = (int64_t)n_tokens * hp->n_vocab; break;
    case PYRT_OUT_EMBD_ALL: need = (int64_t)n_tokens * hp->n_embd; break;
    default: return pyrt_set_error(PYRT_ERR_INVALID_ARG, "decode: unknown out_kind %d", out_kind);
    }
    if (need > 0 && (!out || out_len < need))
        return pyrt_set_error(PYRT_ERR_INVALID_ARG, "decode: output buffer holds %lld floats, need %lld", (long long)out_len, (long long)need);

    atomic_store(&c->abort_req, 0);
    c->n_past = pos0;
    if (c->cuda) {
        const int st = pyrt_cuda_decode(c->cuda, tokens, n_tokens, pos0, out_kind, out, out_len,
                                        (const volatile int *)&c->abort_req);
        if (st == PYRT_OK) c->n_past = pos0 + n_tokens;
        return st;
    }
    for (int32_t done = 0; done < n_tokens; ) {
        const int32_t n = n_tokens - done < c->n_batch ? n_tokens - done : c->n_batch;
        const int last_chunk = done + n == n_tokens;
        c->tokens = tokens + done;
        c->n_tok = n;
        c->pos0 = pos0 + done;
        c->out_kind = out_kind;
        c->stop_now = 0;
        switch (out_kind) {
        case PYRT_OUT_LOGITS_LAST:
            c->out_first = n - 1; c->n_out = last_chunk ? 1 : 0; c->out = out; break;
        case PYRT_OUT_LOGITS_ALL:
            c->out_first = 0; c->n_out = n; c->out = out + (int64_t)done * hp->n_vocab; break;
        case PYRT_OUT_EMBD_ALL:
            c->out_first = 0; c->n_out = n; c->out = out + (int64_t)done * hp->n_embd; break;
        default:
            c->out_first = 0; c->n_out = 0; c->out = NULL;
        }
        pool_run(c->pool, forward_job, c);
        if (c->stop_now) {
            c->n_past = pos0;
            return pyrt_set_error(PYRT_ERR_ABORTED, "decode: aborted");
        }
        done += n;
        c->n_past = pos0 + done;
    }
    return PYRT_OK;
}

/* ---- state ------------------------------------------------------------------------ */

typedef struct {
    char magic[8];            /* "PYRTKV1\0" */
    int32_t n_layer, n_past;
    int64_t kv_dim;
} state_header;

int64_t pyrt_ctx_state_size(const pyrt_ctx *c) {
    if (!c) return 0;
    return (int64_t)sizeof(state_header) +
           2 * (int64_t)c->m->hp.n_layer * c->n_past * c->kv_dim * (int64_t)sizeof(pyrt_fp16);
}

int pyrt_ctx_state_get(const pyrt_ctx *c, void *buf, int64_t len) {
    if (!c || !buf) return pyrt_set_error(PYRT_ERR_INVALID_ARG, "state_get: NULL argument");
    if (len < pyrt_ctx_state_size(c)) return pyrt_set_error(PYRT_ERR_INVALID_ARG, "state_get: buffer too small");
    state_header h = { "PYRTKV1", c->m->hp.n_layer, c->n_past, c->kv_dim };
    char *p = buf;
    memcpy(p, &h, sizeof h);
    p += sizeof h;
    const size_t layer_bytes = (size_t)c->n_past * c->kv_dim * sizeof(pyrt_fp16);
    for (int il = 0; il < c->m->hp.n_layer; il++) {
        if (c->cuda) {
            const int st = pyrt_cuda_kv_read(c->cuda, il, c->n_past, (uint16_t *)p, (uint16_t *)(p + layer_bytes));
            if (st) return st;
            p += 2 * layer_bytes;
            continue;
        }
        const size_t off = (size_t)il * c->n_ctx * c->kv_dim;
        memcpy(p, c->kc + off, layer_bytes); p += layer_bytes;
        memcpy(p, c->vc + off, layer_bytes); p += layer_bytes;
    }
    return PYRT_OK;
}

int pyrt_ctx_state_set(pyrt_ctx *c, const void *buf, int64_t len) {
    if (!c || !buf) return pyrt_set_error(PYRT_ERR_INVALID_ARG, "state_set: NULL argument");
    state_header h;
    if (len < (int64_t)sizeof h) return pyrt_set_error(PYRT_ERR_INVALID_ARG, "state_set: buffer too small");
    memcpy(&h, buf, sizeof h);
    if (memcmp(h.magic, "PYRTKV1", 8) != 0) return pyrt_set_error(PYRT_ERR_INVALID_ARG, "state_set: bad magic");
    if (h.n_layer != c->m->hp.n_layer || h.kv_dim != c->kv_dim)
        return pyrt_set_error(PYRT_ERR_INVALID_ARG, "state_set: state is for another model");
    if (h.n_past < 0 || h.n_past > c->n_ctx)
        return pyrt_set_error(PYRT_ERR_CONTEXT_FULL, "state_set: %d positions do not fit n_ctx %d", h.n_past, c->n_ctx);
    const size_t layer_bytes = (size_t)h.n_past * c->kv_dim * sizeof(pyrt_fp16);
    if ((uint64_t)len != sizeof h + 2 * (uint64_t)h.n_layer * layer_bytes)
        return pyrt_set_error(PYRT_ERR_INVALID_ARG, "state_set: length %lld does not match header", (long long)len);
    const char *p = (const char *)buf + sizeof h;
    for (int il = 0; il < h.n_layer; il++) {
        if (c->cuda) {
            const int st = pyrt_cuda_kv_write(c->cuda, il, h.n_past, (const uint16_t *)p, (const uint16_t *)(p + layer_bytes));
            if (st) { c->n_past = 0; return st; }   /* partially written: nothing is valid */
            p += 2 * layer_bytes;
            continue;
        }
        const size_t off = (size_t)il * c->n_ctx * c->kv_dim;
        memcpy(c->kc + off, p, layer_bytes); p += layer_bytes;
        memcpy(c->vc + off, p, layer_bytes); p += layer_bytes;
    }
    c->n_past = h.n_past;
    return PYRT_OK;
}
