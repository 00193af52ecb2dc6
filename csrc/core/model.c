/* model.c — a model's hyper-parameters and its weights, bound by GGUF tensor
 * name: pyrt_model_create checks the hparams, pyrt_model_set_tensor binds one
 * tensor (name, type, shape, byte count), pyrt_model_finalize checks that the
 * architecture's every tensor is there. The per-layer tensors are one table
 * (layer_tensors below), each row gated by the architecture trait that reads
 * it (core/arch.h). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"

#define MAX_LAYERS 1024

/* ---- model creation --------------------------------------------------------- */

int pyrt_model_create(const pyrt_hparams *hp, pyrt_model **out) {
    if (!hp || !out) return pyrt_set_error(PYRT_ERR_INVALID_ARG, "model_create: NULL argument");
    *out = NULL;
#define HP_CHECK(cond, ...) if (!(cond)) return pyrt_set_error(PYRT_ERR_INVALID_ARG, __VA_ARGS__)
    const pyrt_arch *arch = pyrt_arch_get(hp->arch);
    HP_CHECK(arch != NULL, "unknown arch id %d", hp->arch);
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
    HP_CHECK(isfinite(hp->attn_softcap) && hp->attn_softcap >= 0 && isfinite(hp->final_softcap) && hp->final_softcap >= 0,
             "soft-capping values %g, %g invalid", hp->attn_softcap, hp->final_softcap);
    HP_CHECK(hp->n_ctx_orig >= 0, "n_ctx_orig %d invalid", hp->n_ctx_orig);
    HP_CHECK(isfinite(hp->rope_attn_factor) && hp->rope_attn_factor >= 0 && hp->rope_attn_factor <= 100,
             "rope_attn_factor %g invalid", hp->rope_attn_factor);
    HP_CHECK(hp->n_expert >= 0 && hp->n_expert <= 512, "n_expert %d out of range", hp->n_expert);
    if (hp->n_expert > 0) {
        HP_CHECK(hp->n_expert_used >= 1 && hp->n_expert_used <= hp->n_expert && hp->n_expert_used <= 64, "n_expert_used %d must be in [1, n_expert %d]", hp->n_expert_used, hp->n_expert);
        HP_CHECK(hp->n_ff_exp > 0 && hp->n_ff_exp <= (1 << 20), "n_ff_exp %d out of range", hp->n_ff_exp);
        HP_CHECK(hp->n_embd % 8 == 0, "MoE router: n_embd %d must be a multiple of 8", hp->n_embd);
    }
    if (hp->sliding_window > 0)
        HP_CHECK(isfinite(hp->rope_freq_base_swa) && hp->rope_freq_base_swa > 0, "rope_freq_base_swa %g invalid", hp->rope_freq_base_swa);
#undef HP_CHECK
    pyrt_model *m = calloc(1, sizeof *m);
    if (!m) return pyrt_set_error(PYRT_ERR_OOM, "model_create: out of memory");
    m->hp = *hp;
    m->arch = arch;
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

/* ---- the tensors of a layer -------------------------------------------------- */

enum { D_ONE, D_EMBD, D_Q, D_KV, D_FF, D_HEAD, D_QKV, D_FF_UP, D_EXPERT, D_FF_EXP };  /* a shape dimension */
enum { ALL_ARCHS, QK_NORM, POST_NORMS, SPLIT_GATE, DENSE, MOE };  /* which trait reads the tensor */
enum { REQUIRED, OPTIONAL, QKV_PART };  /* QKV_PART: required unless attn_qkv is there */

typedef struct {
    const char *name;        /* after "blk.N."                                    */
    size_t      off;         /* its slot in layer_weights                          */
    uint8_t     vec;         /* 1: F32 vector [ne0]; 0: matmul weight [ne1 rows of ne0] */
    uint8_t     ne0, ne1;    /* D_* (ne1 unused for vectors)                        */
    uint8_t     ne2;         /* D_ONE, or D_EXPERT for the experts' stacked weights */
    uint8_t     trait;       /* ALL_ARCHS or the arch trait that uses it           */
    uint8_t     need;        /* REQUIRED, OPTIONAL or QKV_PART                     */
} layer_tensor;

#define VEC(nm, field, a, tr, nd)  { nm, offsetof(layer_weights, field), 1, a, 0, D_ONE, tr, nd }
#define MAT(nm, field, a, b, tr, nd) { nm, offsetof(layer_weights, field), 0, a, b, D_ONE, tr, nd }
#define EXPS(nm, field, a, b)        { nm, offsetof(layer_weights, field), 0, a, b, D_EXPERT, MOE, REQUIRED }
static const layer_tensor layer_tensors[] = {
    VEC("attn_norm.weight", attn_norm, D_EMBD, ALL_ARCHS, REQUIRED),
    MAT("attn_q.weight", wq, D_EMBD, D_Q, ALL_ARCHS, QKV_PART),
    MAT("attn_k.weight", wk, D_EMBD, D_KV, ALL_ARCHS, QKV_PART),
    MAT("attn_v.weight", wv, D_EMBD, D_KV, ALL_ARCHS, QKV_PART),
    MAT("attn_qkv.weight", wqkv, D_EMBD, D_QKV, ALL_ARCHS, OPTIONAL),
    VEC("attn_q.bias", bq, D_Q, ALL_ARCHS, OPTIONAL),
    VEC("attn_k.bias", bk, D_KV, ALL_ARCHS, OPTIONAL),
    VEC("attn_v.bias", bv, D_KV, ALL_ARCHS, OPTIONAL),
    MAT("attn_output.weight", wo, D_Q, D_EMBD, ALL_ARCHS, REQUIRED),
    VEC("ffn_norm.weight", ffn_norm, D_EMBD, ALL_ARCHS, REQUIRED),
    MAT("ffn_gate.weight", w_gate, D_EMBD, D_FF, SPLIT_GATE, REQUIRED),
    MAT("ffn_up.weight", w_up, D_EMBD, D_FF_UP, DENSE, REQUIRED),
    MAT("ffn_down.weight", w_down, D_FF, D_EMBD, DENSE, REQUIRED),
    MAT("ffn_gate_inp.weight", gate_inp, D_EMBD, D_EXPERT, MOE, REQUIRED),
    EXPS("ffn_gate_exps.weight", gate_exps, D_EMBD, D_FF_EXP),
    EXPS("ffn_up_exps.weight", up_exps, D_EMBD, D_FF_EXP),
    EXPS("ffn_down_exps.weight", down_exps, D_FF_EXP, D_EMBD),
    VEC("attn_q_norm.weight", q_norm, D_HEAD, QK_NORM, REQUIRED),
    VEC("attn_k_norm.weight", k_norm, D_HEAD, QK_NORM, REQUIRED),
    VEC("post_attention_norm.weight", post_attn_norm, D_EMBD, POST_NORMS, REQUIRED),
    VEC("post_ffw_norm.weight", post_ffn_norm, D_EMBD, POST_NORMS, REQUIRED),
};
#undef VEC
#undef MAT
#undef EXPS
enum { N_LAYER_TENSORS = sizeof layer_tensors / sizeof layer_tensors[0] };

static int arch_uses(const pyrt_model *m, int trait) {
    const pyrt_arch *a = m->arch;
    switch (trait) {
    case QK_NORM:    return a->qk_norm;
    case POST_NORMS: return a->post_norms;
    case SPLIT_GATE: return !a->gate_up_fused && m->hp.n_expert == 0;
    case DENSE:      return m->hp.n_expert == 0;
    case MOE:        return m->hp.n_expert > 0;
    default:         return 1;
    }
}

static int64_t dim(const pyrt_model *m, int d) {
    const pyrt_hparams *hp = &m->hp;
    const int64_t q = (int64_t)hp->n_head * hp->head_dim, kv = (int64_t)hp->n_head_kv * hp->head_dim;
    switch (d) {
    case D_Q:     return q;
    case D_KV:    return kv;
    case D_QKV:   return q + 2 * kv;
    case D_FF:    return hp->n_ff;
    case D_FF_UP: return m->arch->gate_up_fused ? 2 * (int64_t)hp->n_ff : hp->n_ff;
    case D_HEAD:  return hp->head_dim;
    case D_EXPERT: return hp->n_expert;
    case D_FF_EXP: return hp->n_ff_exp;
    case D_ONE:   return 1;
    default:      return hp->n_embd;
    }
}

/* Which slot a name fills, and the shape it must have. */
typedef struct {
    pyrt_weight *w;          /* matmul weight slot, or NULL   */
    const float **vec;       /* 1-D f32 slot, or NULL         */
    int64_t ne0, ne1, ne2;   /* expected shape (ne1 = 1 for vectors) */
} slot;

static int find_slot(pyrt_model *m, const char *name, slot *s) {
    const pyrt_hparams *hp = &m->hp;
    const int64_t E = hp->n_embd;
    memset(s, 0, sizeof *s);
    s->ne2 = 1;
    if (!strcmp(name, "token_embd.weight")) { s->w = &m->tok_embd; s->ne0 = E; s->ne1 = hp->n_vocab; return 1; }
    if (!strcmp(name, "output.weight"))     { s->w = &m->output; s->ne0 = E; s->ne1 = hp->n_vocab; return 1; }
    if (!strcmp(name, "output_norm.weight")) { s->vec = &m->out_norm; s->ne0 = E; s->ne1 = 1; return 1; }
    if (!strcmp(name, "output.bias"))       { s->vec = &m->output_b; s->ne0 = hp->n_vocab; s->ne1 = 1; return 1; }
    if (!strcmp(name, "rope_freqs.weight")) { s->vec = &m->rope_freqs; s->ne0 = hp->n_rot / 2; s->ne1 = 1; return 1; }
    if (!strcmp(name, "rope_factors_long.weight"))  { s->vec = &m->rope_long;  s->ne0 = hp->n_rot / 2; s->ne1 = 1; return 1; }
    if (!strcmp(name, "rope_factors_short.weight")) { s->vec = &m->rope_short; s->ne0 = hp->n_rot / 2; s->ne1 = 1; return 1; }
    int il = -1, off = 0;
    if (sscanf(name, "blk.%d.%n", &il, &off) != 1 || off == 0 || il < 0 || il >= hp->n_layer) return 0;
    char *L = (char *)&m->layers[il];
    for (int i = 0; i < N_LAYER_TENSORS; i++) {
        const layer_tensor *t = &layer_tensors[i];
        if (strcmp(name + off, t->name) || !arch_uses(m, t->trait)) continue;
        if (t->vec) s->vec = (const float **)(L + t->off);
        else s->w = (pyrt_weight *)(L + t->off);
        s->ne0 = dim(m, t->ne0);
        s->ne1 = t->vec ? 1 : dim(m, t->ne1);
        s->ne2 = dim(m, t->ne2);
        return 1;
    }
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
    if (shape[0] != s.ne0 || shape[1] != s.ne1 || shape[2] != s.ne2 || shape[3] != 1)
        return pyrt_set_error(PYRT_ERR_INVALID_ARG,
            "tensor '%s' has shape [%lld, %lld, %lld, %lld], expected [%lld, %lld, %lld]", name,
            (long long)shape[0], (long long)shape[1], (long long)shape[2], (long long)shape[3],
            (long long)s.ne0, (long long)s.ne1, (long long)s.ne2);
    const int32_t bs = pyrt_type_block_size(type);
    if (bs == 0) return pyrt_set_error(PYRT_ERR_UNSUPPORTED, "tensor '%s': unsupported type %d", name, type);
    if (shape[0] % bs) return pyrt_set_error(PYRT_ERR_INVALID_ARG, "tensor '%s': row length %lld not a multiple of block %d", name, (long long)shape[0], bs);
    const int64_t row_bytes = shape[0] / bs * pyrt_type_block_bytes(type);
    const int64_t n_rows = shape[1] * shape[2];
    if (nbytes != row_bytes * n_rows)
        return pyrt_set_error(PYRT_ERR_INVALID_ARG, "tensor '%s': %lld bytes, expected %lld", name, (long long)nbytes, (long long)(row_bytes * n_rows));
    if (s.vec) {
        if (type != PYRT_TYPE_F32) return pyrt_set_error(PYRT_ERR_UNSUPPORTED, "tensor '%s': norm weights must be F32 (type %d)", name, type);
        *s.vec = data;
        return PYRT_OK;
    }
    const pyrt_kernels *k = pyrt_kernels_current();
    const int is_embd = s.w == &m->tok_embd;
    if (strstr(name, ".ffn_gate_inp.weight") && type != PYRT_TYPE_F32)
        return pyrt_set_error(PYRT_ERR_UNSUPPORTED, "tensor '%s': MoE router weights must be F32 (type %d)", name, type);
    if (is_embd ? !k->type[type].dequantize : !pyrt_type_supported(type))
        return pyrt_set_error(PYRT_ERR_UNSUPPORTED, "tensor '%s': type %d has no kernels in pyrt yet", name, type);
    s.w->data = data;
    s.w->type = type;
    s.w->cols = shape[0];
    s.w->rows = n_rows;
    s.w->row_bytes = row_bytes;
    if (s.w == &m->output) m->has_output = 1;
    return PYRT_OK;
}

int pyrt_model_finalize(pyrt_model *m) {
    if (!m) return pyrt_set_error(PYRT_ERR_INVALID_ARG, "finalize: NULL model");
    const pyrt_hparams *hp = &m->hp;
    if (!m->tok_embd.data) return pyrt_set_error(PYRT_ERR_INVALID_ARG, "missing tensor token_embd.weight");
    if (!m->out_norm) return pyrt_set_error(PYRT_ERR_INVALID_ARG, "missing tensor output_norm.weight");
    for (int il = 0; il < hp->n_layer; il++) {
        const char *L = (const char *)&m->layers[il];
        for (int i = 0; i < N_LAYER_TENSORS; i++) {
            const layer_tensor *t = &layer_tensors[i];
            if (!arch_uses(m, t->trait) || t->need == OPTIONAL) continue;
            const void *p = t->vec ? (const void *)*(const float *const *)(L + t->off)
                                   : ((const pyrt_weight *)(L + t->off))->data;
            if (t->need == QKV_PART && m->layers[il].wqkv.data) {
                if (p) return pyrt_set_error(PYRT_ERR_INVALID_ARG, "blk.%d has both attn_qkv.weight and %s", il, t->name);
                continue;
            }
            if (!p) return pyrt_set_error(PYRT_ERR_INVALID_ARG, "missing tensor blk.%d.%s", il, t->name);
        }
        layer_weights *lw = &m->layers[il];
        if (lw->wqkv.data) {               /* fused q/k/v: row views of one weight */
            const int64_t q = dim(m, D_Q), kv = dim(m, D_KV);
            const pyrt_weight *f = &lw->wqkv;
            lw->wq = *f; lw->wq.rows = q;
            lw->wk = *f; lw->wk.rows = kv; lw->wk.data = (const char *)f->data + q * f->row_bytes;
            lw->wv = *f; lw->wv.rows = kv; lw->wv.data = (const char *)f->data + (q + kv) * f->row_bytes;
        }
        if (m->arch->gate_up_fused && hp->n_expert == 0) {      /* ffn_up = [gate; up]: two row views */
            const int64_t ff = hp->n_ff;
            lw->w_gate = lw->w_up; lw->w_gate.rows = ff;
            lw->w_up.rows = ff; lw->w_up.data = (const char *)lw->w_up.data + ff * lw->w_up.row_bytes;
        }
    }
    if (!m->has_output) {
        if (!pyrt_type_supported(m->tok_embd.type))
            return pyrt_set_error(PYRT_ERR_UNSUPPORTED, "tied output: token_embd type %d has no matmul kernel", m->tok_embd.type);
        m->output = m->tok_embd;
    }
    m->finalized = 1;
    return PYRT_OK;
}

