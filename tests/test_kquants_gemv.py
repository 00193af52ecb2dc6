"""Single-token K-quant matmuls (csrc/x86/kquants_avx2.c's GEMV kernels: Q4_K in the vec_dot and the
repacked orders, Q5_K, Q6_K; 8 rows n_rows/8 apart per pass) against the row kernels, which
PYRT_NO_KQ_GEMM=1 makes the matmul use for every token: bit for bit, on every x86 table, for 1, 2 and
3 threads (row ranges that are not multiples of 8), 1 to 5 tokens (a batch of 5: four through the
repacked GEMM, one through the GEMV), row counts with and without a remainder of 8, and rows of one
to many super-blocks. The avx512 table has its own Q4_K / Q6_K GEMVs (x86/kquants_avx512.c), 16 / 8 rows a
pass: the row counts include remainders of 16 and odd counts. Runtime: a few seconds."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from gguf import GGMLQuantizationType as T

from kernel_table import AVX2, AVX512, HAVE_AVX2, HAVE_AVX512
from test_kquants import c_matmul, random_acts, random_kblocks

_SHAPES = [(t, rows, cols, n_tok)
           for t in (T.Q4_K, T.Q5_K, T.Q6_K)
           for rows, cols, n_tok in [(64, 256, 1), (72, 512, 1), (100, 768, 1), (203, 1280, 1), (96, 4096, 1),
                                     (48, 2560, 2), (56, 1024, 3), (40, 512, 5), (17, 256, 1), (8, 256, 1),
                                     # the avx512 table's GEMVs (x86/kquants_avx512.c: Q4_K 16 rows a
                                     # pass, Q6_K 8): rows past the last full group, odd and even
                                     (264, 512, 1), (136, 256, 4), (31, 768, 2), (520, 256, 3), (24, 1024, 1),
                                     (16, 512, 2), (33, 256, 1)]]


def _results() -> list[np.ndarray]:
    variants = [AVX2] + ([AVX512] if HAVE_AVX512 else [])
    out = []
    for t, rows, cols, n_tok in _SHAPES:
        rng = np.random.default_rng([rows, cols, n_tok, int(t), 23])
        w = random_kblocks(t, rows * cols, rng)
        x = np.stack([random_acts(cols, rng, k % 4) for k in range(n_tok)])
        for v in variants:
            for n_threads in (1, 2, 3):
                out.append(c_matmul(v, t, w, rows, cols, x, n_threads=n_threads))
    return out


def _results_with(tmp_path, **env) -> list[np.ndarray]:
    f = tmp_path / "out.npz"
    code = (f"import sys, numpy as np; sys.path.insert(0, {os.path.dirname(__file__)!r}); "
            f"import test_kquants_gemv as m; np.savez({str(f)!r}, *m._results())")
    subprocess.run([sys.executable, "-c", code], env={**os.environ, **env}, check=True)
    with np.load(f) as z:
        return [z[f"arr_{i}"] for i in range(len(z.files))]


@pytest.mark.skipif(not HAVE_AVX2, reason="no AVX2 on this CPU/build")
def test_gemv_matches_row_kernels(tmp_path):
    want = _results_with(tmp_path, PYRT_NO_KQ_GEMM="1")
    runs = {"default": _results(), "no-vnni": _results_with(tmp_path, PYRT_NO_VNNI="1")}
    per_shape = len(want) // len(_SHAPES)
    for name, got in runs.items():
        assert len(got) == len(want)
        for i, (g, e) in enumerate(zip(got, want)):
            assert not np.isnan(e).any()
            np.testing.assert_array_equal(g.view(np.uint32), e.view(np.uint32),
                                          err_msg=f"{name}: {_SHAPES[i // per_shape]}, run {i % per_shape}")
