/* pyrt_cuda.h — internal C interface between core/ (backend.c, forward.c, state.c) and the optional CUDA
 * backend (the .cu files next to it, built only with -DPYRT_CUDA=ON, which defines
 * PYRT_HAVE_CUDA). Not part of the public ABI: pyrt.h gains the small
 * backend/device API of pyrt.h (pyrt_ctx_create_ex, pyrt_model_offload, ...), and core/backend.c routes a
 * context created for PYRT_BACKEND_CUDA through these functions.
 *
 * Without PYRT_HAVE_CUDA every function below is an inline stub that reports
 * PYRT_ERR_UNSUPPORTED ("built without CUDA"), so core/ needs no #ifdefs.
 *
 * Ownership: the backend copies every weight to the device at model upload;
 * host pointers are not kept. The KV cache lives on the device in the CPU
 * context's layout ([n_layer][n_ctx][n_head_kv*head_dim] F16), so state
 * save/load copies whole rows and a saved state moves freely between a CPU
 * and a CUDA context of the same model.
 * Threading: one context is used by one thread at a time (as a CPU context);
 * different contexts may run concurrently (each has its own stream). */
#ifndef PYRT_CUDA_H
#define PYRT_CUDA_H

#include <stddef.h>
#include <stdint.h>
#include "../pyrt.h"

#ifdef __cplusplus
extern "C" {
#endif

/* One tensor as core/model.c validated it: ne0 = row length, ne1 = rows. */
typedef struct {
    const void *data;        /* host pointer (usually the GGUF mmap); NULL = absent */
    int32_t     type;        /* PYRT_TYPE_*                                        */
    int64_t     ne0, ne1;
} pyrt_cuda_tensor;

typedef struct {
    pyrt_cuda_tensor attn_norm;                /* f32 [n_embd]                      */
    pyrt_cuda_tensor wq, wk, wv, wo;           /* matmul weights                    */
    pyrt_cuda_tensor ffn_norm;                 /* f32 [n_embd]                      */
    pyrt_cuda_tensor w_gate, w_up, w_down;
    pyrt_cuda_tensor q_norm, k_norm;           /* gemma3: f32 [head_dim]            */
    pyrt_cuda_tensor post_attn_norm, post_ffn_norm;   /* gemma3: f32 [n_embd]       */
} pyrt_cuda_layer;

typedef struct {
    pyrt_hparams            hp;
    pyrt_cuda_tensor        tok_embd;          /* [n_vocab rows of n_embd]          */
    pyrt_cuda_tensor        out_norm;          /* f32 [n_embd]                      */
    pyrt_cuda_tensor        output;            /* data == tok_embd.data when tied   */
    const pyrt_cuda_layer  *layers;            /* [hp.n_layer]                      */
} pyrt_cuda_model_desc;

typedef struct pyrt_cuda_model pyrt_cuda_model;
typedef struct pyrt_cuda_ctx   pyrt_cuda_ctx;

#if defined(PYRT_HAVE_CUDA)

/* 1: the backend is compiled in (the stub below returns 0). */
int32_t pyrt_cuda_compiled(void);
/* Number of usable devices; 0 when there is no driver, no device, or the
 * driver is older than the runtime (never an error). */
int32_t pyrt_cuda_device_count(void);
/* "NVIDIA H100 80GB HBM3 (sm_90, 79.1 GiB)" into buf. */
int  pyrt_cuda_device_name(int32_t device, char *buf, size_t len);
/* 1 if the backend has kernels for this weight type (matmul and embedding). */
int32_t pyrt_cuda_type_supported(int32_t type);

/* Copy all weights to `device`. Checks every shape and type against hp and
 * returns UNSUPPORTED naming the first tensor of a type without GPU kernels,
 * OOM when the device is full. */
int  pyrt_cuda_model_upload(const pyrt_cuda_model_desc *d, int32_t device, pyrt_cuda_model **out);
void pyrt_cuda_model_free(pyrt_cuda_model *m);
int64_t pyrt_cuda_model_device_bytes(const pyrt_cuda_model *m);

/* KV cache + scratch on the model's device. n_batch: tokens per chunk. */
int  pyrt_cuda_ctx_create(const pyrt_cuda_model *m, int32_t n_ctx, int32_t n_batch, pyrt_cuda_ctx **out);
void pyrt_cuda_ctx_free(pyrt_cuda_ctx *c);

/* The whole forward for tokens at positions pos0 .. pos0+n_tokens-1 on the
 * device, in chunks of n_batch; same contract and out_kind semantics as
 * pyrt_decode (which validates the arguments before calling this; the
 * backend re-checks counts). *abort_flag (may be NULL) is polled between
 * layers; when set the call returns PYRT_ERR_ABORTED and the caller rolls
 * n_past back to pos0. */
int  pyrt_cuda_decode(pyrt_cuda_ctx *c, const int32_t *tokens, int32_t n_tokens, int32_t pos0,
                      int32_t out_kind, float *out, int64_t out_len, const volatile int *abort_flag);

/* Rows [0, n_pos) of layer il's K and V cache to/from host buffers of
 * n_pos * n_head_kv * head_dim F16 values each (pyrt_ctx_state_get/set). */
int  pyrt_cuda_kv_read(const pyrt_cuda_ctx *c, int32_t il, int32_t n_pos, uint16_t *k, uint16_t *v);
int  pyrt_cuda_kv_write(pyrt_cuda_ctx *c, int32_t il, int32_t n_pos, const uint16_t *k, const uint16_t *v);

#else  /* built without CUDA: stubs */

int pyrt_set_error(int status, const char *fmt, ...);

static inline int32_t pyrt_cuda_compiled(void) { return 0; }
static inline int32_t pyrt_cuda_device_count(void) { return 0; }
static inline int pyrt_cuda_device_name(int32_t device, char *buf, size_t len) {
    (void)device; if (buf && len) buf[0] = 0;
    return pyrt_set_error(PYRT_ERR_UNSUPPORTED, "pyrt was built without CUDA (rebuild with CMAKE_ARGS=-DPYRT_CUDA=ON)");
}
static inline int32_t pyrt_cuda_type_supported(int32_t type) { (void)type; return 0; }
static inline int pyrt_cuda_model_upload(const pyrt_cuda_model_desc *d, int32_t device, pyrt_cuda_model **out) {
    (void)d; (void)device; if (out) *out = NULL;
    return pyrt_set_error(PYRT_ERR_UNSUPPORTED, "pyrt was built without CUDA (rebuild with CMAKE_ARGS=-DPYRT_CUDA=ON)");
}
static inline void pyrt_cuda_model_free(pyrt_cuda_model *m) { (void)m; }
static inline int64_t pyrt_cuda_model_device_bytes(const pyrt_cuda_model *m) { (void)m; return 0; }
static inline int pyrt_cuda_ctx_create(const pyrt_cuda_model *m, int32_t n_ctx, int32_t n_batch, pyrt_cuda_ctx **out) {
    (void)m; (void)n_ctx; (void)n_batch; if (out) *out = NULL;
    return pyrt_set_error(PYRT_ERR_UNSUPPORTED, "pyrt was built without CUDA");
}
static inline void pyrt_cuda_ctx_free(pyrt_cuda_ctx *c) { (void)c; }
static inline int pyrt_cuda_decode(pyrt_cuda_ctx *c, const int32_t *tokens, int32_t n_tokens, int32_t pos0,
                                   int32_t out_kind, float *out, int64_t out_len, const volatile int *abort_flag) {
    (void)c; (void)tokens; (void)n_tokens; (void)pos0; (void)out_kind; (void)out; (void)out_len; (void)abort_flag;
    return pyrt_set_error(PYRT_ERR_UNSUPPORTED, "pyrt was built without CUDA");
}
static inline int pyrt_cuda_kv_read(const pyrt_cuda_ctx *c, int32_t il, int32_t n_pos, uint16_t *k, uint16_t *v) {
    (void)c; (void)il; (void)n_pos; (void)k; (void)v;
    return pyrt_set_error(PYRT_ERR_UNSUPPORTED, "pyrt was built without CUDA");
}
static inline int pyrt_cuda_kv_write(pyrt_cuda_ctx *c, int32_t il, int32_t n_pos, const uint16_t *k, const uint16_t *v) {
    (void)c; (void)il; (void)n_pos; (void)k; (void)v;
    return pyrt_set_error(PYRT_ERR_UNSUPPORTED, "pyrt was built without CUDA");
}

#endif /* PYRT_HAVE_CUDA */

#ifdef __cplusplus
}
#endif
#endif /* PYRT_CUDA_H */
