/* backend.c — backend queries (CPU, CUDA) and the CUDA shims: moving a
 * model's weights to the device and making a context there. The CUDA side
 * (csrc/cuda/) runs the whole forward pass; without -DPYRT_CUDA=ON its entry
 * points report "built without CUDA", so no file here needs an #ifdef. */
#include <stdio.h>
#include <stdlib.h>

#include "model.h"

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
    /* the CUDA forward has the llama/gemma3 block only: no biases, rope
     * factors or output bias yet */
    int extra = m->output_b || m->rope_freqs || m->rope_long || m->rope_short ||
                (hp->rope_attn_factor != 0.0f && hp->rope_attn_factor != 1.0f);
    for (int il = 0; il < hp->n_layer; il++) extra |= m->layers[il].bq || m->layers[il].bk || m->layers[il].bv;
    if (extra || (hp->arch != PYRT_ARCH_LLAMA && hp->arch != PYRT_ARCH_GEMMA3))
        return pyrt_set_error(PYRT_ERR_UNSUPPORTED, "offload: the CUDA backend does not run the '%s' "
                              "architecture or its biases / rope factors yet", m->arch->name);
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

int ctx_create_cuda(const pyrt_model *m, int32_t n_ctx, int32_t n_batch, int32_t device, pyrt_ctx **out) {
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
    c->type_k = c->type_v = PYRT_TYPE_F16;      /* the device cache is F16 */
    c->k_row_bytes = c->v_row_bytes = ctx_kv_bytes(PYRT_TYPE_F16, c->kv_dim);
    c->k_head_bytes = c->v_head_bytes = ctx_kv_bytes(PYRT_TYPE_F16, m->hp.head_dim);
    c->backend = PYRT_BACKEND_CUDA;
    if (!ctx_alloc_seqs(c, 1)) {
        pyrt_ctx_free(c);
        return pyrt_set_error(PYRT_ERR_OOM, "ctx_create: out of memory");
    }
    const int st = pyrt_cuda_ctx_create(m->cuda, n_ctx, n_batch, &c->cuda);
    if (st) { pyrt_ctx_free(c); return st; }
    *out = c;
    return PYRT_OK;
}

