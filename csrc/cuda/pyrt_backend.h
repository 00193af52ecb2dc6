/* pyrt_backend.h — PROPOSED addition to the C ABI (csrc/pyrt.h) for compute
 * backends. Nothing includes this file yet: the block between the markers is
 * meant to be pasted into pyrt.h's cdef section (it is cdef-clean: plain
 * declarations, no preprocessor lines), and model.c implements it through
 * csrc/cuda/pyrt_cuda.h (stubs when built without CUDA). The existing calls
 * keep their meaning: pyrt_ctx_create(...) == pyrt_ctx_create_ex with
 * backend = PYRT_BACKEND_CPU; pyrt_decode/truncate/abort/state_* work on
 * either kind of context.
 *
 * Python side (pyrt/_native.py, pyrt/model.py, pyrt/api.py):
 *   pyrt.backends() -> [("cpu", ...), ("cuda:0", "NVIDIA H100 ...")]
 *   Llama(model, device="cuda" | "cuda:1" | "cpu" | "auto")
 *   "auto" takes CUDA only when pyrt_backend_available(CUDA) and every weight
 *   type is supported there; "cuda" that cannot be honoured raises
 *   UnsupportedError with pyrt_last_error()'s text (never falls back silently). */
#ifndef PYRT_BACKEND_H
#define PYRT_BACKEND_H

#include "../pyrt.h"

#ifdef __cplusplus
extern "C" {
#endif

/* PYRT_BACKEND_CDEF_BEGIN */

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
    int32_t reserved[7];      /* zero                                        */
} pyrt_ctx_params;

/* A context (KV cache + scratch) on the given backend. The model must have
 * been offloaded to (backend, device) unless backend is CPU. */
int     pyrt_ctx_create_ex(const pyrt_model *m, const pyrt_ctx_params *p, pyrt_ctx **out);
int32_t pyrt_ctx_backend(const pyrt_ctx *c);

/* PYRT_BACKEND_CDEF_END */

#ifdef __cplusplus
}
#endif
#endif /* PYRT_BACKEND_H */
