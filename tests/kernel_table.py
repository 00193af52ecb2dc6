"""Test-only cffi view of csrc/kernels.h's dispatch table, for kernels that
pyrt.h does not expose (F16 helpers, forward-pass ops). The struct
declarations are read from kernels.h itself, so the view cannot drift from
the C layout."""
from __future__ import annotations

import re
from pathlib import Path

import cffi
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
