"""The CUDA backend's K-quant block math, verified without a GPU: builds
tests/c/test_cuda_kquants.cpp (which includes csrc/cuda/kquants_block.h, the
__host__ __device__ functions the device kernels call) against the loaded
libpyrt and runs it — bit-exact dequantization and dot products against the
scalar reference. Compiled with the C++ compiler and, where nvcc is on PATH,
also by nvcc (the same header as CUDA source, host pass; the device pass at
least compiles). The device-only branches (loads, dp4a) run only on a GPU
(tests/c/test_cuda.cu)."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from pyrt import _native

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "tests" / "c" / "test_cuda_kquants.cpp"
CSRC = ROOT / "csrc"


def _cxx() -> str | None:
    for cand in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if cand and shutil.which(cand):
            return cand
    return None


def _build_and_run(cmd: list[str], exe: Path) -> str:
    r = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=300)
    assert r.returncode == 0, f"compile failed:\n{' '.join(cmd)}\n{r.stderr[-4000:]}"
    r = subprocess.run([str(exe)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert r.stdout.rstrip().endswith(" 0 failed"), r.stdout
    return r.stdout


def _lib_args() -> list[str]:
    lib = Path(_native._find_library()).resolve()
    return [str(lib), f"-Wl,-rpath,{lib.parent}"]


@pytest.mark.skipif(_cxx() is None, reason="no C++ compiler")
def test_kquant_block_math_cxx(tmp_path):
    exe = tmp_path / "test_cuda_kquants"
    out = _build_and_run([_cxx(), "-O2", "-std=c++17", "-Wall", "-Wextra", "-Werror", "-ffp-contract=off",
                          f"-I{CSRC}", str(SRC), *_lib_args(), "-o", str(exe)], exe)
    assert int(out.split()[-4]) >= 50          # "N passed, 0 failed"


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not on PATH")
def test_kquant_block_math_nvcc_host(tmp_path):
    exe = tmp_path / "test_cuda_kquants_nvcc"
    lib, rpath = _lib_args()
    out = _build_and_run(["nvcc", "-x", "cu", "-std=c++17", "-O2", "-Xcompiler=-ffp-contract=off,-Wall",
                          f"-I{CSRC}", str(SRC), "-Xlinker", lib, "-Xlinker", rpath.removeprefix("-Wl,"), "-o", str(exe)], exe)
    assert int(out.split()[-4]) >= 50
