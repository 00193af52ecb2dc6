"""Test-only cffi view of csrc/kernels.h's dispatch table, for kernels that
pyrt.h does not expose (F16 helpers, forward-pass ops). The struct
declarations are read from kernels.h itself, so the view cannot drift from
the C layout."""
from __future__ import annotations

import re
from pathlib import Path

import cffi
import numpy as np
import pytest

from pyrt._native import _find_library, ffi, lib

# ---- kernel variants as pytest parameters, shared by the kernel test modules ----
SCALAR = lib.PYRT_KERNELS_SCALAR
AVX2 = lib.PYRT_KERNELS_AVX2
AVX512 = lib.PYRT_KERNELS_AVX512   # the AVX2 table with AVX-512 GEMM tiles (same results)
HAVE_AVX2 = bool(lib.pyrt_kernels_available(AVX2))
HAVE_AVX512 = bool(lib.pyrt_kernels_available(AVX512))
needs_avx2 = pytest.mark.skipif(not HAVE_AVX2, reason="AVX2/FMA/F16C kernels not available")
# scalar reference + AVX2
VARIANTS = [
    pytest.param(SCALAR, id="scalar"),
    pytest.param(AVX2, id="avx2", marks=pytest.mark.skipif(
        not HAVE_AVX2, reason="AVX2/FMA/F16C kernels not available on this CPU/build")),
]
# the matmul tables that must reproduce llama.cpp's AVX2 results bit for bit
X86_VARIANTS = [
    pytest.param(AVX2, id="avx2", marks=needs_avx2),
    pytest.param(AVX512, id="avx512", marks=pytest.mark.skipif(
        not HAVE_AVX512, reason="no AVX-512 on this CPU/build")),
]

_HEADER = Path(__file__).resolve().parent.parent / "csrc" / "kernels.h"


def _struct(text: str, name: str) -> str:
    m = re.search(r"typedef struct \{(?:[^{}]*)\} " + name + ";", text, re.S)
    assert m, f"{name} not found in kernels.h"
    return m.group(0)


def _cdef() -> str:
    text = re.sub(r"/\*.*?\*/", "", _HEADER.read_text(), flags=re.S)
    body = "\n".join(_struct(text, s) for s in ("pyrt_attn_args", "pyrt_type_kernels", "pyrt_kernels"))
    body = body.replace("PYRT_TYPE_COUNT", str(int(lib.PYRT_TYPE_COUNT))).replace("pyrt_fp16", "uint16_t")
    typedefs = """
typedef void  (*pyrt_dequant_fn)(const void *src, float *dst, int64_t n);
typedef void  (*pyrt_quant_fn)(const float *src, void *dst, int64_t n);
typedef void  (*pyrt_vec_dot_fn)(int64_t n, float *s, const void *w, const void *a);
typedef void  (*pyrt_gemm_fn)(int64_t n, const void *w, int64_t w_row_bytes, int64_t n_rows,
                              const void *a, int64_t a_row_bytes, int64_t n_tok, float *y, int64_t ldy);
"""
    return typedefs + body + "\nconst pyrt_kernels *pyrt_kernels_get(int32_t variant);\n"


# kernels.h: the least size of pyrt_attn_args.acc, in floats
ATTN_ACC_MIN = int(re.search(r"#define PYRT_ATTN_ACC_MIN (\d+)", _HEADER.read_text()).group(1))
# kernels.h: the phases of attn_heads_split
ATTN_SPLIT_PHASES = int(re.search(r"#define PYRT_ATTN_SPLIT_PHASES (\d+)", _HEADER.read_text()).group(1))

kffi = cffi.FFI()
kffi.cdef(_cdef())
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


def attn_fa_call(k, dots, tk, tv, Kq, Vq, q, out, hd, first, last, scale, softcap=0.0,
                 n_tok=0, n_head=0, q_stride=0, window=0):
    """One kernels.h attn_head_fa call on table `k` (`dots`: the table whose q
    quantizer, K dot and V dequantizer the call uses) over K/V rows Kq/Vq of
    types tk/tv (ggml ids), writing `out`; n_tok x n_head queries when given."""
    nq = max(n_tok, 1) * max(n_head, 1)
    acc = np.zeros(max(32 * hd, nq * (hd + 264), ATTN_ACC_MIN), np.float32)
    a = kffi.new("pyrt_attn_args *")
    a.out, a.q, a.acc = kptr(out, "float *"), kptr(q, "float *"), kptr(acc, "float *")
    a.kq, a.vq = kptr(Kq, "void *"), kptr(Vq, "void *")
    a.k_bytes, a.v_bytes = Kq.shape[1], Vq.shape[1]
    a.type_k, a.type_v = tk, tv
    a.head_dim, a.first, a.last, a.scale, a.softcap = hd, first, last, scale, softcap
    a.n_tok, a.n_head, a.q_stride, a.window = n_tok, n_head, q_stride, window
    a.q_to_dot = dots.type[1 if tk == 1 else 8].quantize_act     # q as F16 for an F16 K, else Q8_0
    a.k_dot = dots.type[tk].vec_dot
    a.v_to_f32 = dots.type[tv].dequantize
    k.attn_head_fa(a)
