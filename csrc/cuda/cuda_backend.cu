/* cuda_backend.cu — the CUDA backend behind csrc/cuda/pyrt_cuda.h: weights
 * copied to the device once, an F16 KV cache and scratch per context, and the
 * whole decoder forward (any architecture of core/arch.c, as core/forward.c) as a sequence of kernels
 * on the context's stream. The host only launches: one token-id upload per
 * chunk in, logits or embeddings out, one synchronization per call.
 *
 * Errors: every CUDA call is checked; failures become PYRT_ERR_OOM (device
 * memory) or PYRT_ERR_INTERNAL with cudaGetErrorString() in
 * pyrt_last_error(). Nothing aborts the process. A sticky device error
 * (e.g. an illegal address) leaves the context unusable: later calls return
 * PYRT_ERR_INTERNAL. */
#include <math.h>
#include <stdio.h>
#include <algorithm>
#include <stdlib.h>
#include <string.h>
#include <new>
#include <vector>

#include "cuda_ops.cuh"
#include "pyrt_cuda.h"
#include "../core/arch.h"

using namespace pyrt_cuda;

namespace {

int cuda_fail(cudaError_t e, const char *what) {
    cudaGetLastError();   /* clear a non-sticky error so the next call starts clean */
    const int st = (e == cudaErrorMemoryAllocation) ? PYRT_ERR_OOM : PYRT_ERR_INTERNAL;
    return pyrt_set_error(st, "CUDA: %s: %s", what, cudaGetErrorString(e));
}

#define CU_TRY(call, what)                                  \
    do {                                                    \
        const cudaError_t e_ = (call);                      \
        if (e_ != cudaSuccess) return cuda_fail(e_, what);  \
    } while (0)

struct dlayer {
    const float *attn_norm = nullptr, *ffn_norm = nullptr;
    dweight wq, wk, wv, wo, w_gate, w_up, w_down;
    const float *q_norm = nullptr, *k_norm = nullptr, *post_attn_norm = nullptr, *post_ffn_norm = nullptr;
};

int64_t type_row_bytes(int32_t type, int64_t ne0) {
    const int32_t bs = pyrt_type_block_size(type);
    return bs > 0 ? ne0 / bs * pyrt_type_block_bytes(type) : 0;
}

}  // namespace

struct pyrt_cuda_model {
    pyrt_hparams hp;
    int32_t device = 0;
    std::vector<void *> allocs;    /* every device allocation, freed together */
    int64_t bytes = 0;
    dweight tok_embd, output;
    const float *out_norm = nullptr;
    std::vector<dlayer> layers;
};

struct pyrt_cuda_ctx {
    const pyrt_cuda_model *m = nullptr;
    int32_t n_ctx = 0, n_batch = 0;
    int64_t kv_dim = 0;
    cudaStream_t stream = nullptr;
    bool broken = false;           /* a sticky device error happened */
    uint16_t *kc = nullptr, *vc = nullptr;      /* [n_layer][n_ctx][kv_dim] */
    float *x = nullptr, *xn = nullptr, *q = nullptr, *k = nullptr, *v = nullptr, *att = nullptr;
    float *tmp = nullptr, *g = nullptr, *u = nullptr;
    float *logits = nullptr;       /* [OUT_ROWS][n_vocab] */
    float *partial = nullptr;      /* attention split partials */
    int32_t *tokens = nullptr;     /* [n_batch] */
    act_q8 act;                    /* [n_batch][widest] */
    std::vector<void *> allocs;
};

/* logits are computed and copied out in slices of this many rows */
static const int32_t OUT_ROWS = 64;

/* ======================================================================== */
/* devices                                                                   */
/* ======================================================================== */

extern "C" int32_t pyrt_cuda_compiled(void) { return 1; }

extern "C" int32_t pyrt_cuda_device_count(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    return n;
}

extern "C" int pyrt_cuda_device_name(int32_t device, char *buf, size_t len) {
    if (!buf || len == 0) return pyrt_set_error(PYRT_ERR_INVALID_ARG, "device_name: NULL buffer");
    buf[0] = 0;
    const int32_t n = pyrt_cuda_device_count();
    if (device < 0 || device >= n)
        return pyrt_set_error(PYRT_ERR_INVALID_ARG, "CUDA device %d does not exist (%d found)", device, n);
    cudaDeviceProp p;
    CU_TRY(cudaGetDeviceProperties(&p, device), "cudaGetDeviceProperties");
    snprintf(buf, len, "%s (sm_%d%d, %.1f GiB)", p.name, p.major, p.minor,
             (double)p.totalGlobalMem / (1024.0 * 1024.0 * 1024.0));
    return PYRT_OK;
}

extern "C" int32_t pyrt_cuda_type_supported(int32_t type) { return type_supported(type) ? 1 : 0; }

static int select_device(int32_t device) {
    const int32_t n = pyrt_cuda_device_count();
    if (n == 0) return pyrt_set_error(PYRT_ERR_UNSUPPORTED, "CUDA: no usable GPU (no device, or the driver is too old)");
    if (device < 0 || device >= n)
        return pyrt_set_error(PYRT_ERR_INVALID_ARG, "CUDA device %d does not exist (%d found)", device, n);
    CU_TRY(cudaSetDevice(device), "cudaSetDevice");
    return PYRT_OK;
}

/* ======================================================================== */
/* model upload                                                              */
/* ======================================================================== */

extern "C" void pyrt_cuda_model_free(pyrt_cuda_model *m) {
    if (!m) return;
    if (cudaSetDevice(m->device) == cudaSuccess)
        for (void *p : m->allocs) cudaFree(p);
    cudaGetLastError();
    delete m;
}

extern "C" int64_t pyrt_cuda_model_device_bytes(const pyrt_cuda_model *m) { return m ? m->bytes : 0; }

namespace {

/* shapes are core/model.c's to validate; re-check what the kernels rely on */
int check_tensor(const pyrt_cuda_tensor &t, const char *name, int il, int64_t ne0, int64_t ne1, bool matmul) {
    char nm[96];
    if (il >= 0) snprintf(nm, sizeof nm, "blk.%d.%s", il, name);
    else snprintf(nm, sizeof nm, "%s", name);
    if (!t.data) return pyrt_set_error(PYRT_ERR_INVALID_ARG, "CUDA upload: missing tensor %s", nm);
    if (t.ne0 != ne0 || t.ne1 != ne1)
        return pyrt_set_error(PYRT_ERR_INVALID_ARG, "CUDA upload: tensor %s has shape [%lld, %lld], expected [%lld, %lld]",
                              nm, (long long)t.ne0, (long long)t.ne1, (long long)ne0, (long long)ne1);
    if (!matmul) {
        if (t.type != PYRT_TYPE_F32)
            return pyrt_set_error(PYRT_ERR_UNSUPPORTED, "CUDA upload: tensor %s must be F32 (type %d)", nm, t.type);
        return PYRT_OK;
    }
    if (!type_supported(t.type))
        return pyrt_set_error(PYRT_ERR_UNSUPPORTED,
                              "CUDA upload: tensor %s has type %s, which has no CUDA kernels yet (supported: "
                              "f32 f16 bf16 q8_0 q4_0 q4_1 q5_0 q5_1 q2_K q3_K q4_K q5_K q6_K)",
                              nm, pyrt_type_block_size(t.type) ? pyrt_type_traits_table[t.type].name : "unknown");
    if (ne0 % 32 && type_uses_q8(t.type))
        return pyrt_set_error(PYRT_ERR_INVALID_ARG, "CUDA upload: tensor %s row length %lld not a multiple of 32", nm,
                              (long long)ne0);
    return PYRT_OK;
}

int upload_bytes(pyrt_cuda_model *m, const void *host, int64_t nbytes, const void **dev) {
    void *p = nullptr;
    CU_TRY(cudaMalloc(&p, (size_t)nbytes), "cudaMalloc (weights)");
    m->allocs.push_back(p);
    m->bytes += nbytes;
    CU_TRY(cudaMemcpy(p, host, (size_t)nbytes, cudaMemcpyHostToDevice), "cudaMemcpy (weights)");
    *dev = p;
    return PYRT_OK;
}

int upload_vec(pyrt_cuda_model *m, const pyrt_cuda_tensor &t, const float **dev) {
    const void *p = nullptr;
    const int st = upload_bytes(m, t.data, t.ne0 * t.ne1 * (int64_t)sizeof(float), &p);
    *dev = (const float *)p;
    return st;
}

int upload_w(pyrt_cuda_model *m, const pyrt_cuda_tensor &t, dweight *w) {
    w->type = t.type;
    w->cols = t.ne0;
    w->rows = t.ne1;
    w->row_bytes = type_row_bytes(t.type, t.ne0);
    const void *p = nullptr;
    const int st = upload_bytes(m, t.data, w->row_bytes * w->rows, &p);
    w->data = (const uint8_t *)p;
    return st;
}

int upload_all(pyrt_cuda_model *m, const pyrt_cuda_model_desc *d) {
    const pyrt_hparams &hp = d->hp;
    const int64_t E = hp.n_embd, HD = hp.head_dim, QD = (int64_t)hp.n_head * HD, KVD = (int64_t)hp.n_head_kv * HD;
    const pyrt_arch *A = pyrt_arch_get(hp.arch);   /* model validated: never NULL */
    int st;
    /* validate everything before the first allocation */
    if ((st = check_tensor(d->tok_embd, "token_embd.weight", -1, E, hp.n_vocab, true))) return st;
    if ((st = check_tensor(d->out_norm, "output_norm.weight", -1, E, 1, false))) return st;
    if ((st = check_tensor(d->output, "output.weight", -1, E, hp.n_vocab, true))) return st;
    for (int il = 0; il < hp.n_layer; il++) {
        const pyrt_cuda_layer &L = d->layers[il];
        if ((st = check_tensor(L.attn_norm, "attn_norm.weight", il, E, 1, false))) return st;
        if ((st = check_tensor(L.wq, "attn_q.weight", il, E, QD, true))) return st;
        if ((st = check_tensor(L.wk, "attn_k.weight", il, E, KVD, true))) return st;
        if ((st = check_tensor(L.wv, "attn_v.weight", il, E, KVD, true))) return st;
        if ((st = check_tensor(L.wo, "attn_output.weight", il, QD, E, true))) return st;
        if ((st = check_tensor(L.ffn_norm, "ffn_norm.weight", il, E, 1, false))) return st;
        if ((st = check_tensor(L.w_gate, "ffn_gate.weight", il, E, hp.n_ff, true))) return st;
        if ((st = check_tensor(L.w_up, "ffn_up.weight", il, E, hp.n_ff, true))) return st;
        if ((st = check_tensor(L.w_down, "ffn_down.weight", il, hp.n_ff, E, true))) return st;
        if (A->qk_norm) {
            if ((st = check_tensor(L.q_norm, "attn_q_norm.weight", il, HD, 1, false))) return st;
            if ((st = check_tensor(L.k_norm, "attn_k_norm.weight", il, HD, 1, false))) return st;
        }
        if (A->post_norms) {
            if ((st = check_tensor(L.post_attn_norm, "post_attention_norm.weight", il, E, 1, false))) return st;
            if ((st = check_tensor(L.post_ffn_norm, "post_ffw_norm.weight", il, E, 1, false))) return st;
        }
    }
    if (HD > ATTN_MAX_HEAD_DIM || HD % 2)
        return pyrt_set_error(PYRT_ERR_UNSUPPORTED, "CUDA: head_dim %lld not supported (even, <= %d)", (long long)HD,
                              ATTN_MAX_HEAD_DIM);

    if ((st = upload_w(m, d->tok_embd, &m->tok_embd))) return st;
    if ((st = upload_vec(m, d->out_norm, &m->out_norm))) return st;
    if (d->output.data == d->tok_embd.data && d->output.type == d->tok_embd.type) m->output = m->tok_embd;   /* tied */
    else if ((st = upload_w(m, d->output, &m->output))) return st;
    m->layers.resize((size_t)hp.n_layer);
    for (int il = 0; il < hp.n_layer; il++) {
        const pyrt_cuda_layer &L = d->layers[il];
        dlayer &D = m->layers[(size_t)il];
        if ((st = upload_vec(m, L.attn_norm, &D.attn_norm)) || (st = upload_w(m, L.wq, &D.wq)) ||
            (st = upload_w(m, L.wk, &D.wk)) || (st = upload_w(m, L.wv, &D.wv)) || (st = upload_w(m, L.wo, &D.wo)) ||
            (st = upload_vec(m, L.ffn_norm, &D.ffn_norm)) || (st = upload_w(m, L.w_gate, &D.w_gate)) ||
            (st = upload_w(m, L.w_up, &D.w_up)) || (st = upload_w(m, L.w_down, &D.w_down)))
            return st;
        if (A->qk_norm && ((st = upload_vec(m, L.q_norm, &D.q_norm)) || (st = upload_vec(m, L.k_norm, &D.k_norm))))
            return st;
        if (A->post_norms && ((st = upload_vec(m, L.post_attn_norm, &D.post_attn_norm)) ||
                              (st = upload_vec(m, L.post_ffn_norm, &D.post_ffn_norm))))
            return st;
    }
    return PYRT_OK;
}

}  // namespace

extern "C" int pyrt_cuda_model_upload(const pyrt_cuda_model_desc *d, int32_t device, pyrt_cuda_model **out) {
    if (!d || !out || !d->layers) return pyrt_set_error(PYRT_ERR_INVALID_ARG, "CUDA upload: NULL argument");
    *out = nullptr;
    if (d->hp.n_layer <= 0 || d->hp.n_head <= 0 || d->hp.n_head_kv <= 0 || d->hp.n_head % d->hp.n_head_kv ||
        d->hp.head_dim <= 0 || d->hp.n_embd <= 0 || d->hp.n_ff <= 0 || d->hp.n_vocab <= 0 ||
        d->hp.n_rot <= 0 || d->hp.n_rot > d->hp.head_dim)
        return pyrt_set_error(PYRT_ERR_INVALID_ARG, "CUDA upload: invalid hparams");
    int st = select_device(device);
    if (st) return st;
    pyrt_cuda_model *m = new (std::nothrow) pyrt_cuda_model;
    if (!m) return pyrt_set_error(PYRT_ERR_OOM, "CUDA upload: out of host memory");
    m->hp = d->hp;
    m->device = device;
    try {
        st = upload_all(m, d);
    } catch (const std::bad_alloc &) {
        st = pyrt_set_error(PYRT_ERR_OOM, "CUDA upload: out of host memory");
    }
    if (st) {
        pyrt_cuda_model_free(m);
        return st;
    }
    *out = m;
    return PYRT_OK;
}

/* ======================================================================== */
/* context                                                                   */
/* ======================================================================== */

extern "C" void pyrt_cuda_ctx_free(pyrt_cuda_ctx *c) {
    if (!c) return;
    if (cudaSetDevice(c->m->device) == cudaSuccess) {
        if (c->stream) cudaStreamSynchronize(c->stream);
        for (void *p : c->allocs) cudaFree(p);
        if (c->stream) cudaStreamDestroy(c->stream);
    }
    cudaGetLastError();
    delete c;
}

namespace {
template <typename T>
int dalloc(pyrt_cuda_ctx *c, T **p, int64_t count, const char *what) {
    void *v = nullptr;
    const cudaError_t e = cudaMalloc(&v, (size_t)(count > 0 ? count : 1) * sizeof(T));
    if (e != cudaSuccess) {
        cudaGetLastError();
        return pyrt_set_error(PYRT_ERR_OOM, "CUDA: cannot allocate %s (%lld bytes): %s", what,
                              (long long)(count * (int64_t)sizeof(T)), cudaGetErrorString(e));
    }
    c->allocs.push_back(v);
    *p = (T *)v;
    return PYRT_OK;
}
}  // namespace

extern "C" int pyrt_cuda_ctx_create(const pyrt_cuda_model *m, int32_t n_ctx, int32_t n_batch, pyrt_cuda_ctx **out) {
    if (!m || !out) return pyrt_set_error(PYRT_ERR_INVALID_ARG, "CUDA ctx_create: NULL argument");
    *out = nullptr;
    if (n_ctx <= 0 || n_ctx > (1 << 24)) return pyrt_set_error(PYRT_ERR_INVALID_ARG, "n_ctx %d out of range", n_ctx);
    if (n_batch <= 0) n_batch = 512;
    if (n_batch > n_ctx) n_batch = n_ctx;
    int st = select_device(m->device);
    if (st) return st;
    const pyrt_hparams &hp = m->hp;
    pyrt_cuda_ctx *c = new (std::nothrow) pyrt_cuda_ctx;
    if (!c) return pyrt_set_error(PYRT_ERR_OOM, "CUDA ctx_create: out of host memory");
    c->m = m;
    c->n_ctx = n_ctx;
    c->n_batch = n_batch;
    c->kv_dim = (int64_t)hp.n_head_kv * hp.head_dim;
    const int64_t B = n_batch, E = hp.n_embd, QD = (int64_t)hp.n_head * hp.head_dim, FF = hp.n_ff;
    int64_t widest = E > QD ? E : QD;
    if (FF > widest) widest = FF;
    const int64_t kv = (int64_t)hp.n_layer * n_ctx * c->kv_dim;
    const int64_t part = std::max(attn_partial_floats(n_batch, hp.n_head, hp.head_dim, 1),
                                  attn_partial_floats(std::min<int32_t>(n_batch, 8), hp.n_head, hp.head_dim,
                                                      ATTN_MAX_SPLIT));
    cudaError_t e = cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking);
    if (e != cudaSuccess) {
        c->stream = nullptr;
        pyrt_cuda_ctx_free(c);
        return cuda_fail(e, "cudaStreamCreate");
    }
    if ((st = dalloc(c, &c->kc, kv, "K cache")) || (st = dalloc(c, &c->vc, kv, "V cache")) ||
        (st = dalloc(c, &c->x, B * E, "activations")) || (st = dalloc(c, &c->xn, B * E, "activations")) ||
        (st = dalloc(c, &c->tmp, B * E, "activations")) || (st = dalloc(c, &c->q, B * QD, "activations")) ||
        (st = dalloc(c, &c->att, B * QD, "activations")) || (st = dalloc(c, &c->k, B * c->kv_dim, "activations")) ||
        (st = dalloc(c, &c->v, B * c->kv_dim, "activations")) || (st = dalloc(c, &c->g, B * FF, "activations")) ||
        (st = dalloc(c, &c->u, B * FF, "activations")) ||
        (st = dalloc(c, &c->logits, (int64_t)OUT_ROWS * hp.n_vocab, "logits")) ||
        (st = dalloc(c, &c->partial, part, "attention scratch")) || (st = dalloc(c, &c->tokens, B, "token ids")) ||
        (st = dalloc(c, &c->act.qs, B * widest, "quantized activations")) ||
        (st = dalloc(c, &c->act.ds, B * (widest / 32 + 1), "activation scales"))) {
        pyrt_cuda_ctx_free(c);
        return st;
    }
    *out = c;
    return PYRT_OK;
}

/* ======================================================================== */
/* forward                                                                   */
/* ======================================================================== */

namespace {

/* y = W x for n rows of x (stride ldx), quantizing x first when W needs it */
int mm(pyrt_cuda_ctx *c, const dweight &w, const float *x, int64_t ldx, int64_t n, float *y, int64_t ldy,
       bool quantized_already) {
    if (type_uses_q8(w.type) && !quantized_already)
        CU_TRY(quantize_q8(x, ldx, n, w.cols, c->act, c->stream), "quantize activations");
    CU_TRY(matmul(w, x, ldx, c->act, n, y, ldy, c->stream), "matmul");
    return PYRT_OK;
}

/* one chunk of <= n_batch tokens; rows [out_first, out_first+n_out) of the
 * final hidden state go to `out` (logits or embeddings) */
int forward_chunk(pyrt_cuda_ctx *c, const int32_t *tokens, int32_t n, int32_t pos0, int32_t out_kind,
                  int32_t out_first, int32_t n_out, float *out, const volatile int *abort_flag, bool *aborted) {
    const pyrt_cuda_model *m = c->m;
    const pyrt_hparams &hp = m->hp;
    const int64_t E = hp.n_embd, HD = hp.head_dim, KVD = c->kv_dim, QD = (int64_t)hp.n_head * HD, FF = hp.n_ff;
    const pyrt_arch *A = pyrt_arch_get(hp.arch);   /* model validated: never NULL */
    const float attn_scale = hp.attn_scale > 0 ? hp.attn_scale : 1.0f / sqrtf((float)HD);
    cudaStream_t s = c->stream;
    int st;

    CU_TRY(cudaMemcpyAsync(c->tokens, tokens, (size_t)n * sizeof(int32_t), cudaMemcpyHostToDevice, s), "token upload");
    CU_TRY(get_rows(m->tok_embd, c->tokens, n, c->x, hp.embd_scale, s), "embedding");
    CU_TRY(rmsnorm(c->xn, E, c->x, E, m->layers[0].attn_norm, E, n, hp.norm_eps, s), "rmsnorm");

    for (int il = 0; il < hp.n_layer; il++) {
        const dlayer &L = m->layers[(size_t)il];
        const bool swa = hp.sliding_window > 0 && hp.swa_period > 0 && ((il + 1) % hp.swa_period) != 0;
        const float base = swa ? hp.rope_freq_base_swa : hp.rope_freq_base;
        const float fscale = swa ? 1.0f : hp.rope_freq_scale;   /* as core/forward.c: no scaling on SWA layers */
        uint16_t *kc = c->kc + (int64_t)il * c->n_ctx * KVD;
        uint16_t *vc = c->vc + (int64_t)il * c->n_ctx * KVD;

        /* ---- q/k/v projections (xn already holds the attention norm) ---- */
        const bool same_act = type_uses_q8(L.wq.type) || type_uses_q8(L.wk.type) || type_uses_q8(L.wv.type);
        if (same_act) CU_TRY(quantize_q8(c->xn, E, n, E, c->act, s), "quantize activations");
        if ((st = mm(c, L.wq, c->xn, E, n, c->q, QD, same_act)) || (st = mm(c, L.wk, c->xn, E, n, c->k, KVD, same_act)) ||
            (st = mm(c, L.wv, c->xn, E, n, c->v, KVD, same_act)))
            return st;

        /* ---- (qk-norm), rope, k/v into the cache ---- */
        rope_args ra;
        ra.q = c->q; ra.k = c->k; ra.v = c->v; ra.kc = kc; ra.vc = vc;
        ra.q_norm = A->qk_norm ? L.q_norm : nullptr;
        ra.k_norm = A->qk_norm ? L.k_norm : nullptr;
        ra.n_tok = n; ra.pos0 = pos0; ra.n_head = hp.n_head; ra.n_head_kv = hp.n_head_kv;
        ra.head_dim = hp.head_dim; ra.n_rot = hp.n_rot; ra.mode = hp.rope_type;
        ra.theta_scale = powf(base, -2.0f / (float)hp.n_rot);   /* host powf, as generic/ops.c */
        ra.freq_scale = fscale; ra.eps = hp.norm_eps;
        ra.q_scale = A->q_prescale ? attn_scale : 1.0f;   /* in f32 before its f16 rounding */
        CU_TRY(qk_rope_store(ra, s), "rope");

        /* ---- attention over the cache ---- */
        attn_args aa;
        aa.out = c->att; aa.q = c->q; aa.kc = kc; aa.vc = vc; aa.partial = c->partial;
        aa.n_tok = n; aa.pos0 = pos0; aa.n_head = hp.n_head; aa.n_head_kv = hp.n_head_kv; aa.head_dim = hp.head_dim;
        aa.window = swa ? hp.sliding_window : 0;
        aa.n_split = n <= 8 ? attn_pick_split(n, hp.n_head, pos0 + n) : 1;
        aa.scale = A->q_prescale ? 1.0f : attn_scale;
        CU_TRY(attention(aa, s), "attention");

        /* ---- output projection, residual, ffn norm ---- */
        if ((st = mm(c, L.wo, c->att, QD, n, c->tmp, E, false))) return st;
        CU_TRY(residual_norm(c->x, c->tmp, A->post_norms ? L.post_attn_norm : nullptr, c->xn, L.ffn_norm, E, n, hp.norm_eps, s),
               "residual + norm");

        /* ---- feed-forward ---- */
        const bool gu_act = type_uses_q8(L.w_gate.type) || type_uses_q8(L.w_up.type);
        if (gu_act) CU_TRY(quantize_q8(c->xn, E, n, E, c->act, s), "quantize activations");
        if ((st = mm(c, L.w_gate, c->xn, E, n, c->g, FF, gu_act)) || (st = mm(c, L.w_up, c->xn, E, n, c->u, FF, gu_act)))
            return st;
        CU_TRY(glu(c->g, c->u, (int64_t)n * FF, A->ffn_act == PYRT_ACT_GELU ? 1 : 0, s), "gated activation");
        if ((st = mm(c, L.w_down, c->g, FF, n, c->tmp, E, false))) return st;
        const float *next_norm = il + 1 < hp.n_layer ? m->layers[(size_t)il + 1].attn_norm : nullptr;
        CU_TRY(residual_norm(c->x, c->tmp, A->post_norms ? L.post_ffn_norm : nullptr, c->xn, next_norm, E, n, hp.norm_eps, s),
               "residual + norm");

        if (abort_flag && *abort_flag) {
            *aborted = true;
            CU_TRY(cudaStreamSynchronize(s), "synchronize");
            return PYRT_ERR_ABORTED;
        }
    }

    /* ---- final norm and output, in slices of OUT_ROWS rows ---- */
    for (int32_t r0 = 0; r0 < n_out; r0 += OUT_ROWS) {
        const int32_t nr = n_out - r0 < OUT_ROWS ? n_out - r0 : OUT_ROWS;
        const float *src = c->x + (int64_t)(out_first + r0) * E;
        CU_TRY(rmsnorm(c->xn, E, src, E, m->out_norm, E, nr, hp.norm_eps, s), "final norm");
        if (out_kind == PYRT_OUT_EMBD_ALL) {
            CU_TRY(cudaMemcpyAsync(out + (int64_t)r0 * E, c->xn, (size_t)nr * E * sizeof(float), cudaMemcpyDeviceToHost, s),
                   "copy embeddings");
        } else {
            if ((st = mm(c, m->output, c->xn, E, nr, c->logits, hp.n_vocab, false))) return st;
            CU_TRY(cudaMemcpyAsync(out + (int64_t)r0 * hp.n_vocab, c->logits, (size_t)nr * hp.n_vocab * sizeof(float),
                                   cudaMemcpyDeviceToHost, s),
                   "copy logits");
        }
    }
    CU_TRY(cudaStreamSynchronize(s), "synchronize");
    return PYRT_OK;
}

}  // namespace

extern "C" int pyrt_cuda_decode(pyrt_cuda_ctx *c, const int32_t *tokens, int32_t n_tokens, int32_t pos0,
                                int32_t out_kind, float *out, int64_t out_len, const volatile int *abort_flag) {
    if (!c || !tokens) return pyrt_set_error(PYRT_ERR_INVALID_ARG, "CUDA decode: NULL argument");
    if (c->broken) return pyrt_set_error(PYRT_ERR_INTERNAL, "CUDA decode: the context hit a device error earlier");
    const pyrt_hparams &hp = c->m->hp;
    if (n_tokens <= 0 || pos0 < 0)
        return pyrt_set_error(PYRT_ERR_INVALID_ARG, "CUDA decode: n_tokens %d / pos0 %d invalid", n_tokens, pos0);
    if ((int64_t)pos0 + n_tokens > c->n_ctx)
        return pyrt_set_error(PYRT_ERR_CONTEXT_FULL, "CUDA decode: %d tokens at position %d exceed n_ctx %d", n_tokens,
                              pos0, c->n_ctx);
    for (int32_t i = 0; i < n_tokens; i++)
        if (tokens[i] < 0 || tokens[i] >= hp.n_vocab)
            return pyrt_set_error(PYRT_ERR_INVALID_ARG, "CUDA decode: token id %d outside [0, %d)", tokens[i], hp.n_vocab);
    int64_t need = 0;
    switch (out_kind) {
    case PYRT_OUT_NONE: break;
    case PYRT_OUT_LOGITS_LAST: need = hp.n_vocab; break;
    case PYRT_OUT_LOGITS_ALL: need = (int64_t)n_tokens * hp.n_vocab; break;
    case PYRT_OUT_EMBD_ALL: need = (int64_t)n_tokens * hp.n_embd; break;
    default: return pyrt_set_error(PYRT_ERR_INVALID_ARG, "CUDA decode: unknown out_kind %d", out_kind);
    }
    if (need > 0 && (!out || out_len < need))
        return pyrt_set_error(PYRT_ERR_INVALID_ARG, "CUDA decode: output buffer holds %lld floats, need %lld",
                              (long long)out_len, (long long)need);
    int st = select_device(c->m->device);
    if (st) return st;
    for (int32_t done = 0; done < n_tokens;) {
        const int32_t n = n_tokens - done < c->n_batch ? n_tokens - done : c->n_batch;
        const bool last = done + n == n_tokens;
        int32_t first = 0, n_out = 0;
        float *o = nullptr;
        switch (out_kind) {
        case PYRT_OUT_LOGITS_LAST: first = n - 1; n_out = last ? 1 : 0; o = out; break;
        case PYRT_OUT_LOGITS_ALL: n_out = n; o = out + (int64_t)done * hp.n_vocab; break;
        case PYRT_OUT_EMBD_ALL: n_out = n; o = out + (int64_t)done * hp.n_embd; break;
        default: break;
        }
        bool aborted = false;
        st = forward_chunk(c, tokens + done, n, pos0 + done, out_kind, first, n_out, o, abort_flag, &aborted);
        if (aborted) return pyrt_set_error(PYRT_ERR_ABORTED, "decode: aborted");
        if (st) {
            /* a sticky error poisons the context; a plain launch error does not */
            if (cudaPeekAtLastError() != cudaSuccess) c->broken = true;
            return st;
        }
        done += n;
    }
    return PYRT_OK;
}

/* ======================================================================== */
/* KV state                                                                  */
/* ======================================================================== */

static int kv_check(const pyrt_cuda_ctx *c, int32_t il, int32_t n_pos, const void *k, const void *v) {
    if (!c || !k || !v) return pyrt_set_error(PYRT_ERR_INVALID_ARG, "CUDA kv copy: NULL argument");
    if (il < 0 || il >= c->m->hp.n_layer || n_pos < 0 || n_pos > c->n_ctx)
        return pyrt_set_error(PYRT_ERR_INVALID_ARG, "CUDA kv copy: layer %d / %d positions out of range", il, n_pos);
    if (c->broken) return pyrt_set_error(PYRT_ERR_INTERNAL, "CUDA: the context hit a device error earlier");
    return select_device(c->m->device);
}

extern "C" int pyrt_cuda_kv_read(const pyrt_cuda_ctx *c, int32_t il, int32_t n_pos, uint16_t *k, uint16_t *v) {
    int st = kv_check(c, il, n_pos, k, v);
    if (st) return st;
    const size_t bytes = (size_t)n_pos * c->kv_dim * sizeof(uint16_t);
    const int64_t off = (int64_t)il * c->n_ctx * c->kv_dim;
    CU_TRY(cudaMemcpyAsync(k, c->kc + off, bytes, cudaMemcpyDeviceToHost, c->stream), "copy K cache");
    CU_TRY(cudaMemcpyAsync(v, c->vc + off, bytes, cudaMemcpyDeviceToHost, c->stream), "copy V cache");
    CU_TRY(cudaStreamSynchronize(c->stream), "synchronize");
    return PYRT_OK;
}

extern "C" int pyrt_cuda_kv_write(pyrt_cuda_ctx *c, int32_t il, int32_t n_pos, const uint16_t *k, const uint16_t *v) {
    int st = kv_check(c, il, n_pos, k, v);
    if (st) return st;
    const size_t bytes = (size_t)n_pos * c->kv_dim * sizeof(uint16_t);
    const int64_t off = (int64_t)il * c->n_ctx * c->kv_dim;
    CU_TRY(cudaMemcpyAsync(c->kc + off, k, bytes, cudaMemcpyHostToDevice, c->stream), "copy K cache");
    CU_TRY(cudaMemcpyAsync(c->vc + off, v, bytes, cudaMemcpyHostToDevice, c->stream), "copy V cache");
    CU_TRY(cudaStreamSynchronize(c->stream), "synchronize");
    return PYRT_OK;
}
