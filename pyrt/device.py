"""Where a model runs: parse a `device=` string, report what this build and
machine offer, and place a loaded Model on the CPU or a CUDA GPU.

    "cpu"     the CPU (default; the reference path)
    "cuda"    CUDA device 0;  "cuda:N": device N
    "auto"    CUDA device 0 when this build has the CUDA backend, a GPU is
              present and the GPU has kernels for every weight type of the
              model; the CPU otherwise. The reason is kept in
              Placement.reason (Llama.device_reason), never guessed silently.

Asking for "cuda" on a build without the backend, on a machine without a
usable GPU, or for a model with weight types the GPU cannot run raises
UnsupportedError saying which and what to do; malformed strings raise
ValueError. Everything is checked here before any C call that uses it.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

from ._native import UnsupportedError, check, ffi, last_error, lib
from .gguf_file import type_name

__all__ = ["parse_device", "check_requested", "cuda_compiled", "cuda_device_count", "cuda_device_name",
           "backend_info", "unsupported_types", "cuda_support_line", "Placement", "place_model", "BUILD_HINT"]

BUILD_HINT = 'reinstall pyrt with the CUDA backend: CMAKE_ARGS="-DPYRT_CUDA=ON" pip install . (needs nvcc on PATH)'
_DEVICE_RE = re.compile(r"(cpu|cuda|auto)(?::(\d{1,4}))?")
_MAX_INDEX = 1024


def parse_device(spec) -> tuple[str, int]:
    """"cpu" | "cuda" | "cuda:N" | "auto" -> (kind, index); ValueError otherwise."""
    if spec is None:
        return "cpu", 0
    if not isinstance(spec, str):
        raise ValueError(f"device must be a string ('cpu', 'cuda', 'cuda:N' or 'auto'), "
                         f"got {type(spec).__name__}")
    m = _DEVICE_RE.fullmatch(spec.strip().lower())
    if m is None or (m.group(2) is not None and m.group(1) != "cuda"):
        raise ValueError(f"device {spec!r} is not one of 'cpu', 'cuda', 'cuda:N' (N >= 0) or 'auto'")
    index = int(m.group(2) or 0)
    if index >= _MAX_INDEX:
        raise ValueError(f"device {spec!r}: CUDA device index {index} is out of range")
    return m.group(1), index


def cuda_compiled() -> bool:
    """True if this library was built with the CUDA backend (-DPYRT_CUDA=ON)."""
    return bool(lib.pyrt_backend_compiled(lib.PYRT_BACKEND_CUDA))


def cuda_device_count() -> int:
    """Usable CUDA devices (0 without the backend, a GPU or a recent enough driver)."""
    return int(lib.pyrt_backend_device_count(lib.PYRT_BACKEND_CUDA))


def _device_name(backend: int, index: int) -> str:
    buf = ffi.new("char[256]")
    check(lib.pyrt_backend_device_name(backend, index, buf, len(buf)), "device name")
    return ffi.string(buf).decode("utf-8", "replace")


def cuda_device_name(index: int = 0) -> str:
    n = cuda_device_count()
    if not 0 <= index < n:
        raise ValueError(f"CUDA device {index} does not exist ({n} found)")
    return _device_name(lib.PYRT_BACKEND_CUDA, index)


def backend_info() -> dict:
    """What this build and machine offer, for `pyrt devices` and bug reports."""
    n = cuda_device_count()
    return {
        "cpu": _device_name(lib.PYRT_BACKEND_CPU, 0),
        "cuda_compiled": cuda_compiled(),
        "cuda_devices": [cuda_device_name(i) for i in range(n)],
    }


def _cuda_unavailable(index: int) -> str | None:
    """Why CUDA device `index` cannot be used, or None if it can."""
    if not cuda_compiled():
        return "this pyrt build has no CUDA backend"
    n = cuda_device_count()
    if n == 0:
        return ("pyrt was built with CUDA, but no usable GPU was found (no device, no driver, or a "
                "driver older than the CUDA runtime pyrt was built with)")
    if index >= n:
        return f"CUDA device {index} does not exist ({n} found: cuda:0..cuda:{n - 1})"
    return None


def unsupported_types(tensors, hparams) -> str | None:
    """The weight types among `tensors` (a validated model's GGUF tensors)
    without CUDA kernels, named with a tensor each, or None when the GPU can
    run all of them. Vectors (norms) are converted to F32 by the C model, so
    only matrices count."""
    from .model import expected_tensors
    shapes = expected_tensors(hparams)
    missing: Counter = Counter()
    example: dict[str, str] = {}
    for t in tensors:
        if t.name not in shapes or len(shapes[t.name][0]) < 2:
            continue
        if not lib.pyrt_backend_type_supported(lib.PYRT_BACKEND_CUDA, t.type):
            tn = type_name(t.type)
            missing[tn] += 1
            example.setdefault(tn, t.name)
    if not missing:
        return None
    return "the CUDA backend has no kernels for " + ", ".join(
        f"{tn} ({c} tensor{'s' if c > 1 else ''}, e.g. {example[tn]!r})" for tn, c in missing.most_common())


def cuda_support_line(tensors, hparams) -> str:
    """One line for `pyrt info`: could this model run on a GPU here?"""
    if not cuda_compiled():
        return f"not built in ({BUILD_HINT})"
    missing = unsupported_types(tensors, hparams)
    kernels = f"but {missing}" if missing else "with kernels for every weight type of this model"
    return f"built in, {cuda_device_count()} usable device(s), {kernels}"


@dataclass(frozen=True)
class Placement:
    """Where a model was placed: `device` is "cpu" or "cuda:N"."""
    device: str
    backend: int
    index: int
    reason: str


def check_requested(spec) -> tuple[str, int]:
    """Parse `spec` and fail fast (before a model is loaded) when it names a
    CUDA device this build or machine cannot provide."""
    kind, index = parse_device(spec)
    if kind == "cuda":
        why = _cuda_unavailable(index)
        if why:
            hint = (f"{BUILD_HINT}, or use device='cpu'" if not cuda_compiled()
                    else "use device='cpu' (or 'auto' to fall back to it)")
            raise UnsupportedError(f"device={spec!r}: {why}; {hint}")
    return kind, index


def place_model(model, spec) -> Placement:
    """Resolve `spec` for a loaded Model and copy its weights to the GPU when
    the answer is CUDA (pyrt_model_offload). Raises for an explicit "cuda"
    that cannot be honoured; "auto" falls back to the CPU and says why."""
    kind, index = check_requested(spec)
    if kind == "cpu":
        return Placement("cpu", lib.PYRT_BACKEND_CPU, 0, "requested")
    why = _cuda_unavailable(index) or unsupported_types(model.gguf.tensors.values(), model.hparams)
    if why:
        if kind == "cuda":
            raise UnsupportedError(f"device={spec!r}: {why}; use device='cpu' (or 'auto' to fall back to it)")
        return Placement("cpu", lib.PYRT_BACKEND_CPU, 0, f"auto: CPU, because {why}")
    st = lib.pyrt_model_offload(model._handle, lib.PYRT_BACKEND_CUDA, index)
    if st != lib.PYRT_OK and kind == "auto" and st in (lib.PYRT_ERR_UNSUPPORTED, lib.PYRT_ERR_OOM):
        return Placement("cpu", lib.PYRT_BACKEND_CPU, 0, f"auto: CPU, because the GPU upload failed: {last_error()}")
    check(st, f"device={spec!r}")
    return Placement(f"cuda:{index}", lib.PYRT_BACKEND_CUDA, index,
                     "requested" if kind == "cuda" else "auto: CUDA backend and GPU available")
