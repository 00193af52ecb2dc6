"""Test-only cffi mirror of csrc/kernels.h's dispatch table, for kernels that
pyrt.h does not expose (F16 helpers, forward-pass ops). Keep it in sync with
the struct in kernels.h: fields in the same order."""
from __future__ import annotations

import cffi

from pyrt._native import _find_library, ffi, lib

N = int(lib.PYRT_TYPE_COUNT)
kffi = cffi.FFI()
kffi.cdef(f"""
typedef struct {{
    float *out; const float *q; const uint16_t *k; const uint16_t *v;
    int64_t stride; int32_t head_dim; int32_t first; int32_t last; int32_t batched;
    float scale; float *scores; uint16_t *probs16; uint16_t *q16; float *acc;
}} pyrt_attn_args;
typedef struct {{
    const char *name;
    void *dequantize[{N}];
    void *quantize_act[{N}];
    void *vec_dot[{N}];
    void (*vec_dot_r8[{N}])(int64_t n, float *s, const void *w, const void *a);
    void (*vec_dot_tiled[{N}])(int64_t n, float *s, const void *w, const void *a);
    void (*fp32_to_fp16)(const float *x, uint16_t *y, int64_t n);
    void (*fp16_to_fp32)(const uint16_t *x, float *y, int64_t n);
    float (*dot_f16)(int64_t n, const uint16_t *x, const uint16_t *y);
    void (*mad_f16)(int64_t n, float *y, const uint16_t *x, float v);
    void (*rope)(float *x, int32_t n_rot, int32_t mode, float pos, float freq_base, float freq_scale);
    void (*swiglu)(float *g, const float *u, int64_t n);
    void (*attn_head)(const pyrt_attn_args *a);
}} pyrt_kernels;
const pyrt_kernels *pyrt_kernels_get(int32_t variant);
""")
klib = kffi.dlopen(_find_library())   # the same library pyrt._native loaded


def table(variant: int):
    k = klib.pyrt_kernels_get(variant)
    assert k != kffi.NULL
    assert kffi.string(k.name).decode() == ffi.string(lib.pyrt_kernels_name(variant)).decode()
    for f in ("fp32_to_fp16", "fp16_to_fp32", "dot_f16", "mad_f16", "rope", "swiglu", "attn_head"):
        assert getattr(k, f) != kffi.NULL, f
    return k


def kptr(arr, ctype: str):
    return kffi.cast(ctype, arr.ctypes.data)
