"""cffi binding of csrc/pyrt.h (ABI mode) and the one place where C status
codes become Python exceptions.

The shared library is looked up, in order: $PYRT_LIB, next to this file
(installed wheels), then ../build/ (a developer's `cmake -B build` tree), then
the library of an installed wheel when `import pyrt` resolved to a source
checkout. `LIB_PATH` says which file was loaded (CI checks that it is the
freshly installed one: .ci/run runs in a copy of the tree without build/).
"""
from __future__ import annotations

import os
from pathlib import Path

import cffi

_HERE = Path(__file__).resolve().parent
_CDEF_BEGIN = "/* PYRT_CDEF_BEGIN */"
_CDEF_END = "/* PYRT_CDEF_END */"


class PyrtError(RuntimeError):
    """An error reported by pyrt's C core."""


class ContextFullError(ValueError):
    """The tokens do not fit into the context window (n_ctx)."""


class AbortedError(PyrtError):
    """A running evaluation was stopped by abort()."""


class UnsupportedError(ValueError):
    """The model uses a feature (type, architecture, kernel) pyrt lacks."""


def _find_header() -> Path:
    for cand in (_HERE / "pyrt.h", _HERE.parent / "csrc" / "pyrt.h"):
        if cand.is_file():
            return cand
    raise ImportError("pyrt: cannot find pyrt.h next to the package or in csrc/")


def _installed_library() -> str | None:
    """The library of an installed pyrt wheel, found through its file list:
    used when `import pyrt` resolves to a source checkout (e.g. tests run
    from the repository root after `pip install .`)."""
    try:
        from importlib.metadata import PackageNotFoundError, distribution
        files = distribution("pyrt").files or []
    except (ImportError, PackageNotFoundError):
        return None
    for f in files:
        if f.name in ("libpyrt.so", "libpyrt.dylib", "pyrt.dll"):
            path = Path(f.locate())
            if path.is_file():
                return str(path)
    return None


def _find_library() -> str:
    env = os.environ.get("PYRT_LIB")
    if env:
        return env
    names = ("libpyrt.so", "libpyrt.dylib", "pyrt.dll")
    for d in (_HERE, _HERE.parent / "build"):
        for n in names:
            if (d / n).is_file():
                return str(d / n)
    installed = _installed_library()
    if installed:
        return installed
    raise ImportError(
        "pyrt: the native library was not found; install the package with "
        "`pip install .` (or build it with `cmake -B build && cmake --build build`)")


def _cdef_text(header: str) -> str:
    start = header.index(_CDEF_BEGIN) + len(_CDEF_BEGIN)
    end = header.index(_CDEF_END)
    return header[start:end]


ffi = cffi.FFI()
ffi.cdef(_cdef_text(_find_header().read_text()))
LIB_PATH = _find_library()
lib = ffi.dlopen(LIB_PATH)

_EXC = {
    lib.PYRT_ERR_INVALID_ARG: ValueError,
    lib.PYRT_ERR_OOM: MemoryError,
    lib.PYRT_ERR_UNSUPPORTED: UnsupportedError,
    lib.PYRT_ERR_CONTEXT_FULL: ContextFullError,
    lib.PYRT_ERR_ABORTED: AbortedError,
    lib.PYRT_ERR_INTERNAL: PyrtError,
}


def last_error() -> str:
    return ffi.string(lib.pyrt_last_error()).decode("utf-8", "replace")


def check(status: int, what: str = "") -> None:
    """Raise the Python exception matching a non-zero C status."""
    if status == lib.PYRT_OK:
        return
    exc = _EXC.get(status, PyrtError)
    detail = last_error() or ffi.string(lib.pyrt_status_string(status)).decode()
    raise exc(f"{what}: {detail}" if what else detail)


def ptr(arr, ctype: str = "void *"):
    """cffi pointer to a numpy array's data (the array must stay alive)."""
    return ffi.cast(ctype, arr.ctypes.data)
