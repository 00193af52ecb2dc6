"""A batch computed in single-token arithmetic (PYRT_NUMERICS_PER_TOKEN: speculative
verification, several sequences' decode tokens in one forward call) must give every token
exactly what decoding it alone gives, while the kernels read the weights once for the batch
(csrc/core/matmul.c MM_FEW_TOK, the GEMV tiles of csrc/x86/).

- kernels: pyrt_matmul_shape(k tokens, n_shape=-1) against k one-token pyrt_matmul calls, bit
  for bit, for every weight type with a matmul, every kernel table this machine runs (and the
  AVX2 tiles without AVX-VNNI, in a subprocess), k = 1..9, row counts with and without a
  multiple of 8 and the GEMV groups' remainders, one and two threads;
- models: decode(k tokens, LOGITS_ALL, PER_TOKEN) rows == k one-token decodes, SmolLM2 and
  Gemma-3 (skipped where the files are not there).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from gguf import GGMLQuantizationType as T
from gguf import quants

from kernel_table import AVX2, AVX512, HAVE_AVX2, HAVE_AVX512, SCALAR
from pyrt._native import check, ffi, lib, ptr

VARIANTS = [pytest.param(SCALAR, id="scalar"),
            pytest.param(AVX2, id="avx2", marks=pytest.mark.skipif(not HAVE_AVX2, reason="no AVX2 table")),
            pytest.param(AVX512, id="avx512", marks=pytest.mark.skipif(not HAVE_AVX512, reason="no AVX-512 table"))]
if lib.pyrt_kernels_available(lib.PYRT_KERNELS_NEON):
    VARIANTS.append(pytest.param(lib.PYRT_KERNELS_NEON, id="neon"))

BLOCK32 = [T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0, T.IQ4_NL]
KQUANT = [T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K, T.IQ4_XS]
_KBLOCK = {T.Q2_K: (84, (80, 82)), T.Q3_K: (110, (108,)), T.Q4_K: (144, (0, 2)), T.Q5_K: (176, (0, 2)),
           T.Q6_K: (210, (208,)), T.IQ4_XS: (136, (0,)), T.IQ4_NL: (18, (0,))}
QK = {t: 32 if t in BLOCK32 else 256 for t in BLOCK32 + KQUANT}


def weights(t, rows: int, cols: int, rng) -> np.ndarray:
    if t in _KBLOCK:    # random codes and sub-block scales, small finite fp16 (super-)block scales
        bb, offs = _KBLOCK[t]
        nb = rows * cols // QK[t]
        raw = rng.integers(0, 256, (nb, bb), dtype=np.uint8)
        for off in offs:
            d = rng.choice([-1.0, 1.0], nb) * np.exp2(rng.uniform(-12, -6, nb))
            raw[:, off:off + 2] = d.astype(np.float16).view(np.uint8).reshape(nb, 2)
        return raw.reshape(-1)
    w = quants.quantize(rng.standard_normal((rows, cols)).astype(np.float32), t).reshape(-1)
    if t == T.Q8_0:     # -128: no quantizer writes it, a file may hold it (the offset dots' edge)
        w.reshape(-1, 34)[::3, 2 + rows % 32] = 0x80
    return w


def matmul(variant, t, w, rows, cols, x, n_shape, n_threads):
    x = np.ascontiguousarray(x, np.float32)
    y = np.full((x.shape[0], rows), np.nan, np.float32)
    check(lib.pyrt_matmul_shape(variant, int(t), ptr(w), rows, cols, ptr(x, "float *"), x.shape[0], n_shape,
                                ptr(y, "float *"), n_threads), "matmul")
    return y


# rows: multiples of 8 (Q4_0/Q4_K take the repacked order) and not; GEMV groups of 8 rows
# rs = rows/8 apart plus a remainder; two threads split mid-group
SHAPES = [(8, 1), (13, 2), (24, 1), (40, 3), (203, 2), (256, 1)]


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("t", BLOCK32 + KQUANT, ids=lambda t: t.name)
def test_per_token_batch_equals_single_token_matmuls(variant, t):
    if not lib.pyrt_type_supported(int(t)):
        pytest.skip(f"{t.name}: no matmul")
    rng = np.random.default_rng(int(t) * 7 + variant)
    for rows, blocks in SHAPES:
        cols = blocks * QK[t] * (1 if QK[t] == 256 else 3)
        w = weights(t, rows, cols, rng)
        x = rng.standard_normal((9, cols)).astype(np.float32)
        for n_threads in (1, 2):
            singles = np.concatenate([matmul(variant, t, w, rows, cols, x[i:i + 1], 0, n_threads)
                                      for i in range(9)])
            for k in range(1, 10):
                batch = matmul(variant, t, w, rows, cols, x[:k], -1, n_threads)
                np.testing.assert_array_equal(
                    batch.view(np.uint32), singles[:k].view(np.uint32),
                    err_msg=f"{t.name} rows={rows} cols={cols} k={k} threads={n_threads}")


@pytest.mark.skipif(not HAVE_AVX2, reason="no AVX2 table")
def test_per_token_batch_without_vnni_too():
    """The x86 tiles have a second build for CPUs without AVX-VNNI; the table is chosen
    once per process, so that build runs in a subprocess."""
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", __file__,
                        "-k", "per_token_batch_equals_single_token_matmuls and not scalar"],
                       env={**os.environ, "PYRT_NO_VNNI": "1"}, capture_output=True, text=True,
                       cwd=Path(__file__).resolve().parent.parent)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert " passed" in r.stdout


@pytest.mark.skipif(not HAVE_AVX512, reason="no AVX-512 table")
@pytest.mark.parametrize("t", [T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0], ids=lambda t: t.name)
def test_avx512_batches_with_long_rows_match_avx2(t):
    """Long rows shrink the AVX-512 panel tiles' token panels (their activation panel holds
    T_BLOCKS blocks): still the AVX2 kernels' results bit for bit, past one token panel."""
    rng = np.random.default_rng(int(t) + 4096)
    for rows, cols, n_tok in ((37, 4096, 70), (20, 8192, 33), (9, 16384, 12)):
        w = weights(t, rows, cols, rng)
        x = rng.standard_normal((n_tok, cols)).astype(np.float32)
        want = matmul(AVX2, t, w, rows, cols, x, 0, 2)
        np.testing.assert_array_equal(matmul(AVX512, t, w, rows, cols, x, 0, 2).view(np.uint32),
                                      want.view(np.uint32), err_msg=f"{rows}x{cols}, {n_tok} tokens")


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("t", [T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0], ids=lambda t: t.name)
def test_batches_with_rows_up_to_16384_equal_one_token_matmuls(variant, t):
    """The x86 tiles size their panels for rows of up to 16384 columns (14336: Llama-3.1-8B's
    ffn_down): wide rows, more tokens than a panel holds, rows in and out of groups of 8 and
    16. These types' batches keep the single-token order (IQ4_NL's do not), so every token's
    row equals its one-token matmul (the GEMV code) bit for bit."""
    rng = np.random.default_rng(int(t) + 14336)
    for rows, cols, n_tok in ((16, 14336, 21), (24, 8192, 40), (9, 16384, 6), (13, 4608, 70)):
        w = weights(t, rows, cols, rng)
        x = rng.standard_normal((n_tok, cols)).astype(np.float32)
        singles = np.concatenate([matmul(variant, t, w, rows, cols, x[i:i + 1], 0, 1) for i in range(n_tok)])
        np.testing.assert_array_equal(matmul(variant, t, w, rows, cols, x, 0, 2).view(np.uint32),
                                      singles.view(np.uint32), err_msg=f"{rows}x{cols}, {n_tok} tokens")


_SMALL_STACK = r"""
import sys, threading
import numpy as np
sys.path.insert(0, sys.argv[1])
from test_per_token_batch import BLOCK32, KQUANT, VARIANTS, matmul, weights
from pyrt._native import lib
variants = [p.values[0] for p in VARIANTS if not any(m.args and m.args[0] for m in p.marks)]
rng = np.random.default_rng(5)
cases = []
for t in BLOCK32 + KQUANT:
    if lib.pyrt_type_supported(int(t)):
        w = weights(t, 40, 14336 if t in BLOCK32 else 4096, rng)
        x = rng.standard_normal((70, 14336 if t in BLOCK32 else 4096)).astype(np.float32)
        cases.append((t, w, x))
out = {}
def run():
    for v in variants:
        for t, w, x in cases:
            out[(v, t)] = matmul(v, t, w, 40, x.shape[1], x, 0, 1)
threading.stack_size(256 * 1024)
th = threading.Thread(target=run)
th.start()
th.join()
for v in variants:
    for t, w, x in cases:
        assert np.array_equal(out[(v, t)].view(np.uint32), matmul(v, t, w, 40, x.shape[1], x, 0, 1).view(np.uint32)), (v, t)
print("ok", len(out))
"""


def test_batched_matmuls_run_on_a_thread_with_a_small_stack():
    """A caller's thread runs its share of every matmul; the batched tiles' panels (up to
    ~0.8 MB) live in a per-thread heap buffer, so a thread with a 256 KiB stack (macOS's
    secondary threads get 512 KiB, musl's 128 KiB) runs every table's batched kernels, wide
    rows included, with the results of the main thread. In a subprocess: an overflow would
    kill the interpreter."""
    r = subprocess.run([sys.executable, "-c", _SMALL_STACK, str(Path(__file__).resolve().parent)],
                       capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent)
    assert r.returncode == 0, (r.returncode, r.stdout[-2000:], r.stderr[-2000:])
    assert r.stdout.startswith("ok ")


def test_matmul_shape_rejects_a_bad_shape():
    rng = np.random.default_rng(0)
    w = weights(T.Q8_0, 8, 32, rng)
    with pytest.raises(Exception, match="n_shape -2"):
        matmul(SCALAR, T.Q8_0, w, 8, 32, rng.standard_normal((2, 32)), -2, 1)


# ---- models ---------------------------------------------------------------------------------

MODELS = Path.home() / ".cache" / "pyrt" / "models"


@pytest.mark.parametrize("name", ["SmolLM2-135M-Instruct.Q4_1.gguf", "gemma-3-270m-q4_k_m.gguf"])
def test_per_token_decode_batch_equals_separate_decodes(name):
    from pyrt.model import Context, Model
    path = MODELS / name
    if not path.exists():
        pytest.skip(f"{name} not downloaded")
    m = Model(path)
    try:
        ctx = Context(m, 128, 2)
        toks = [int(t) for t in np.random.default_rng(1).integers(100, 2000, 40)]
        n0 = 20
        ctx.decode(toks[:n0], 0, lib.PYRT_OUT_LOGITS_LAST)
        singles = np.stack([np.asarray(ctx.decode([toks[n0 + i]], n0 + i, lib.PYRT_OUT_LOGITS_LAST)).reshape(-1)
                            for i in range(9)])
        for k in range(1, 10):
            batch = np.asarray(ctx.decode(toks[n0:n0 + k], n0, lib.PYRT_OUT_LOGITS_ALL,
                                          lib.PYRT_NUMERICS_PER_TOKEN)).reshape(k, -1)
            np.testing.assert_array_equal(batch.view(np.uint32), singles[:k].view(np.uint32), err_msg=f"k={k}")
        # the default numerics compute a batch in its own shape: on Gemma-3 (K-quant tiles)
        # that differs, so the comparison above can fail
        if name.startswith("gemma"):
            shaped = np.asarray(ctx.decode(toks[n0:n0 + 9], n0, lib.PYRT_OUT_LOGITS_ALL)).reshape(9, -1)
            assert not np.array_equal(shaped, singles)
        ctx.close()
    finally:
        m.close()
