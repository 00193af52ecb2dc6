"""K-quant kernels (csrc/generic/kquants.c, csrc/x86/kquants_avx2.c): Q2_K..Q6_K weights and their Q8_K
activations, every variant, against independent oracles:

- dequantization: exact against gguf.quants, on random bit patterns;
- Q8_K activations: byte-exact against a numpy port of ggml's quantize_row_q8_K_ref (which is also
  what llama.cpp's x86 build runs), ties of +max/-max and zero blocks included;
- dot products: against float64 (the exact integer sums scaled in float64: tight), and against
  the real-valued product (NMSE);
- the AVX2 matmul paths (single-row dot, tiled batch GEMM, repacked Q4_K GEMV/GEMM): bit for bit
  against digests of llama.cpp's own output on the same inputs (GOLDEN below), because the model
  is chaotic under 8-bit activation quantization and only identical arithmetic keeps it on
  llama.cpp's trajectory.
Runtime: ~2 s.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import numpy as np
import pytest
from gguf import GGMLQuantizationType as T
from gguf import quants

from kernel_table import AVX2, AVX512, HAVE_AVX2, SCALAR, VARIANTS, X86_VARIANTS, needs_avx2
from pyrt._native import check, ffi, lib, ptr

K_TYPES = [T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K]
QK_K = 256
Q8K_BYTES = 292
SIZES = [256, 512, 256 * 3, 256 * 9, 4096]      # 1, 2, odd and many super-blocks

# |kernel - exact| / sum |terms| (code and min parts apart): f32 rounding and accumulation only
DOT_EXACT_RTOL = 4e-6
# NMSE of the kernel's dot vs the float64 dot of dequantized weights and f32 activations
DOT_NMSE_TOL = 5e-4


# byte offsets of the fp16 super-block scales (d, and dmin where there is one)
_SCALE_OFFS = {T.Q2_K: (80, 82), T.Q3_K: (108,), T.Q4_K: (0, 2), T.Q5_K: (0, 2), T.Q6_K: (208,)}
_BLOCK_BYTES = {T.Q2_K: 84, T.Q3_K: 110, T.Q4_K: 144, T.Q5_K: 176, T.Q6_K: 210}


# ---- inputs ----------------------------------------------------------------------------------

def random_kblocks(t, n: int, rng) -> np.ndarray:
    """Random raw K-quant weights: every bit pattern of codes and sub-block scales, finite fp16
    super-block scales of both signs (some zero, some subnormal)."""
    nb = n // QK_K
    raw = rng.integers(0, 256, (nb, _BLOCK_BYTES[t]), dtype=np.uint8)
    for off in _SCALE_OFFS[t]:
        d = rng.choice([-1.0, 1.0], nb) * np.exp2(rng.uniform(-16, -4, nb))
        d[rng.random(nb) < 0.05] = 0.0
        d[rng.random(nb) < 0.05] = 3e-6
        raw[:, off:off + 2] = d.astype(np.float16).view(np.uint8).reshape(nb, 2)
    return raw.reshape(-1)


def random_acts(n: int, rng, kind: int) -> np.ndarray:
    if kind == 0:
        x = rng.standard_normal(n)
    elif kind == 1:      # wide dynamic range
        x = rng.standard_normal(n) * np.exp(rng.uniform(-6, 6, n))
    elif kind == 2:      # small integers: ties of +max and -max, exact .5 products
        x = rng.integers(-4, 5, n).astype(np.float64)
    else:                # a zero super-block and a single-spike one
        x = rng.standard_normal(n)
        x[:QK_K] = 0.0
        if n >= 2 * QK_K:
            x[QK_K:2 * QK_K] = 0.0
            x[QK_K + 7] = -3.0
    return x.astype(np.float32)


# ---- C wrappers --------------------------------------------------------------------------------

def c_dequantize(variant, t, raw, n):
    out = np.full(n, np.nan, np.float32)
    check(lib.pyrt_dequantize(variant, int(t), ptr(raw), ptr(out, "float *"), n), "dequantize")
    return out


def c_q8k(variant, x):
    x = np.ascontiguousarray(x, np.float32)
    nb = x.size // QK_K
    out = np.zeros(nb * Q8K_BYTES + 64, np.uint8)       # guard bytes stay zero
    check(lib.pyrt_quantize_act(variant, lib.PYRT_TYPE_Q8_K, ptr(x, "float *"), ptr(out), x.size), "q8_K")
    assert not out[nb * Q8K_BYTES:].any(), "quantize_act wrote past the end of its row"
    return out[:nb * Q8K_BYTES]


def c_vec_dot(variant, t, w, a, n):
    s = ffi.new("float *", np.nan)
    check(lib.pyrt_vec_dot(variant, int(t), n, ptr(w), ptr(a), s), "vec_dot")
    return float(s[0])


def c_matmul(variant, t, w, rows, cols, x, n_threads=2):
    x = np.ascontiguousarray(x, np.float32)
    y = np.full((x.shape[0], rows), np.nan, np.float32)
    check(lib.pyrt_matmul(variant, int(t), ptr(w), rows, cols, ptr(x, "float *"), x.shape[0],
                          ptr(y, "float *"), n_threads), "matmul")
    return y


# ---- numpy oracles -----------------------------------------------------------------------------

def ref_q8k(x: np.ndarray) -> np.ndarray:
    """ggml's quantize_row_q8_K_ref in numpy: the first element of largest magnitude maps to
    -127, q = round-half-even(x * (-127/max)) (float32 product), d = 1/iscale, bsums of 16."""
    F = np.float32
    blocks = x.astype(F).reshape(-1, QK_K)
    out = np.zeros((blocks.shape[0], Q8K_BYTES), np.uint8)
    for b, v in enumerate(blocks):
        a = np.abs(v)
        if a.max() == 0:
            continue
        mx = v[int(np.argmax(a))]               # argmax: the first maximum, like ggml's '>'
        iscale = F(-127.0) / mx
        q = np.minimum(np.rint((iscale * v).astype(F)), 127).astype(np.int8)
        out[b, 0:4] = np.array([F(1.0) / iscale], F).view(np.uint8)
        out[b, 4:260] = q.view(np.uint8)
        out[b, 260:292] = q.astype(np.int16).reshape(16, 16).sum(1).astype(np.int16).view(np.uint8)
    return out.reshape(-1)


def split_q8k(a: np.ndarray):
    b = a.reshape(-1, Q8K_BYTES)
    return b[:, 0:4].copy().view(np.float32)[:, 0], b[:, 4:260].view(np.int8)


def exact_terms(t, w, a, n):
    """(value, error scale) of the dot in float64: the value from the dequantized weights
    (gguf.quants, exact) and the Q8_K activations is what the kernels compute up to f32 rounding
    of the scale products and the accumulation; the error scale sums the magnitudes of the code
    part and the min part separately, as the kernels add them up separately (they cancel)."""
    d, q = split_q8k(a)
    qa = q.astype(np.float64) * d[:, None].astype(np.float64)           # [nb, 256]

    def dot_abs(raw):
        wf = quants.dequantize(raw, t).astype(np.float64).reshape(-1, QK_K)
        return float((wf * qa).sum()), float(np.abs(wf * qa).sum())

    value, scale = dot_abs(w)
    if len(_SCALE_OFFS[t]) == 2:                 # d*sc*q and dmin*m terms, each on its own
        blocks = w.reshape(-1, _BLOCK_BYTES[t]).copy()
        d_off, m_off = _SCALE_OFFS[t]
        no_min, no_code = blocks.copy(), blocks.copy()
        no_min[:, m_off:m_off + 2] = 0
        no_code[:, d_off:d_off + 2] = 0
        scale = dot_abs(no_min.reshape(-1))[1] + dot_abs(no_code.reshape(-1))[1]
    return value, scale + 1e-30


def realistic_kweights(t, rows, cols, rng):
    """Weights as llama-quantize would make them from Gaussian rows (pyrt.quantize's port of
    ggml's reference K-quant quantizers; Q2_K/Q3_K: random codes, as pyrt writes neither)."""
    if t in (T.Q2_K, T.Q3_K):
        return random_kblocks(t, rows * cols, rng)
    from pyrt.quantize import quantize_rows
    return quantize_rows(rng.standard_normal((rows, cols)).astype(np.float32) * 0.05, t).reshape(-1)


# ---- dequantization ----------------------------------------------------------------------------

@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("t", K_TYPES, ids=lambda t: t.name)
@pytest.mark.parametrize("n", SIZES)
def test_dequantize_exact(variant, t, n):
    rng = np.random.default_rng(n + int(t))
    raw = random_kblocks(t, n, rng)
    got = c_dequantize(variant, t, raw, n)
    want = quants.dequantize(raw, t).reshape(-1)
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))


def test_type_traits():
    for t in K_TYPES:
        assert lib.pyrt_type_block_size(int(t)) == QK_K
        assert lib.pyrt_type_block_bytes(int(t)) == _BLOCK_BYTES[t]
        assert lib.pyrt_type_act_type(int(t)) == lib.PYRT_TYPE_Q8_K
        assert lib.pyrt_type_supported(int(t))
    assert lib.pyrt_type_block_bytes(lib.PYRT_TYPE_Q8_K) == Q8K_BYTES
    assert lib.pyrt_type_act_type(lib.PYRT_TYPE_Q8_K) == -1      # never a weight


# ---- Q8_K activations --------------------------------------------------------------------------

@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("kind", [0, 1, 2, 3])
def test_q8k_matches_ggml_reference(variant, kind):
    rng = np.random.default_rng(100 + kind)
    for n in (256, 768, 2048):
        x = random_acts(n, rng, kind)
        np.testing.assert_array_equal(c_q8k(variant, x), ref_q8k(x))


def test_q8k_values():
    x = np.linspace(-2.0, 1.0, 512).astype(np.float32)
    a = c_q8k(SCALAR, x)
    d, q = split_q8k(a)
    assert q[0, 0] == -127                  # the element of largest magnitude maps to -127
    back = (q.astype(np.float64) * d[:, None].astype(np.float64)).reshape(-1)
    assert np.max(np.abs(back - x)) <= np.abs(d).max() * 0.5 + 1e-7
    bs = a.reshape(-1, Q8K_BYTES)[:, 260:].copy().view(np.int16)
    np.testing.assert_array_equal(bs, q.astype(np.int32).reshape(-1, 16, 16).sum(2))
    assert not c_q8k(SCALAR, np.zeros(256, np.float32)).any()


# ---- dot products ------------------------------------------------------------------------------

@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("t", K_TYPES, ids=lambda t: t.name)
def test_vec_dot_against_float64(variant, t):
    rng = np.random.default_rng(7 + int(t))
    for i, n in enumerate(SIZES * 3):            # every bit pattern: f32 rounding only
        w = random_kblocks(t, n, rng)
        a = c_q8k(variant, random_acts(n, rng, i % 4))
        value, scale = exact_terms(t, w, a, n)
        got = c_vec_dot(variant, t, w, a, n)
        assert abs(got - value) <= DOT_EXACT_RTOL * scale, (n, got, value)
    errs, refs = [], []                          # real weights: activation quantization error
    for i in range(40):
        n = SIZES[i % len(SIZES)]
        w = realistic_kweights(t, 1, n, rng)
        x = random_acts(n, rng, i % 2)
        want = float(quants.dequantize(w, t).astype(np.float64).reshape(-1) @ x.astype(np.float64))
        errs.append(c_vec_dot(variant, t, w, c_q8k(variant, x), n) - want)
        refs.append(want)
    nmse = float(np.sum(np.square(errs)) / np.sum(np.square(refs)))
    assert nmse < DOT_NMSE_TOL


@needs_avx2
@pytest.mark.parametrize("t", K_TYPES, ids=lambda t: t.name)
@pytest.mark.parametrize("rows,n_tok", [(12, 1), (12, 5), (12, 8), (16, 1), (16, 6), (16, 13), (24, 11)])
def test_matmul_paths_against_float64(t, rows, n_tok):
    """Every matmul path (single-row dot, tiled GEMM for >= 8 tokens, repacked Q4_K for
    rows % 8 == 0, in groups of 4 tokens and a GEMV rest) computes the same product."""
    rng = np.random.default_rng(rows * 100 + n_tok + int(t))
    cols = 768
    w = random_kblocks(t, rows * cols, rng)
    x = np.stack([random_acts(cols, rng, k % 3) for k in range(n_tok)])
    y = c_matmul(AVX2, t, w, rows, cols, x)
    wrows = w.reshape(rows, -1)
    for k in range(n_tok):
        a = c_q8k(AVX2, x[k])
        for r in range(rows):
            value, scale = exact_terms(t, wrows[r], a, cols)
            assert abs(y[k, r] - value) <= DOT_EXACT_RTOL * scale, (k, r)
    assert np.array_equal(c_matmul(AVX2, t, w, rows, cols, x, n_threads=1), y)


# llama.cpp (llama-cpp-python 0.3.36's ggml, built for an AVX2+FMA+F16C x86 CPU like the one the
# references were made on) on golden_case(t, rows, cols, n_tok): sha256 of its float32 results,
# first 16 hex digits. Q4_K with rows % 8 == 0 went through its repacked GEMM/GEMV (the path a
# model load takes), everything else through ggml_mul_mat (vec_dot below 8 tokens, the tiled
# GEMM from 8 on).
GOLDEN = {
    ("Q2_K", 24, 512, 3): "01454dc2dd53fb26",
    ("Q2_K", 24, 512, 9): "60a9d03bfdba7dd6",
    ("Q3_K", 24, 512, 3): "03f5a0079330e1a7",
    ("Q3_K", 24, 512, 9): "5441ca83a67b2af9",
    ("Q4_K", 12, 512, 3): "1be1f0c7eb3a1b1b",
    ("Q4_K", 12, 512, 9): "d30fd6f4ec6260d8",
    ("Q4_K", 16, 512, 1): "7eea16d9416367be",
    ("Q4_K", 16, 512, 6): "bcd54ca2e89b9048",
    ("Q4_K", 16, 512, 13): "49cc56b4533d7e07",
    ("Q5_K", 24, 768, 2): "d59cb4d17643dc11",
    ("Q5_K", 24, 768, 10): "8be44e7aedea84e4",
    ("Q6_K", 24, 768, 5): "9d518972b64efac5",
    ("Q6_K", 24, 768, 16): "12ec30b1c1cd292a",
}


def golden_case(t_name: str, rows: int, cols: int, n_tok: int):
    rng = np.random.default_rng([rows, cols, n_tok, int(T[t_name])])
    w = random_kblocks(T[t_name], rows * cols, rng)
    x = np.stack([random_acts(cols, rng, k % 3) for k in range(n_tok)])
    return w, x


@pytest.mark.parametrize("variant", X86_VARIANTS)
@pytest.mark.parametrize("case", list(GOLDEN), ids=lambda c: f"{c[0]}-{c[1]}x{c[2]}-tok{c[3]}")
def test_matmul_bit_identical_to_llamacpp(variant, case):
    t_name, rows, cols, n_tok = case
    w, x = golden_case(*case)
    y = c_matmul(variant, T[t_name], w, rows, cols, x)
    assert hashlib.sha256(y.tobytes()).hexdigest()[:16] == GOLDEN[case]


@pytest.mark.skipif(not lib.pyrt_kernels_available(AVX512), reason="no AVX-512 on this CPU/build")
@pytest.mark.parametrize("t", K_TYPES, ids=lambda t: t.name)
@pytest.mark.parametrize("rows,cols,n_tok", [(8, 256, 4), (8, 256, 7), (16, 512, 8), (13, 256, 9),
                                             (24, 768, 5), (40, 1536, 33), (7, 512, 70), (32, 256, 64),
                                             (64, 512, 130), (3, 256, 12),
                                             # past the 128-token panels and calls (MM_GEMM_TOKS_K)
                                             (24, 768, 200), (17, 512, 257),
                                             # past 8 super-blocks: the float chains carried across column chunks
                                             (24, 2560, 9), (13, 4352, 10)])
def test_avx512_batched_kernels_match_avx2(t, rows, cols, n_tok):
    """The AVX-512 batched K-quant GEMMs (Q4_K: 16-row panels in lanes, partial
    panels, token groups and column chunks; Q6_K: 4x4 tiles and their remainders) give exactly the AVX2 row kernels' results, whose
    agreement with llama.cpp the golden tests above pin down."""
    rng = np.random.default_rng([rows, cols, n_tok, int(t), 512])
    w = random_kblocks(t, rows * cols, rng)
    x = np.stack([random_acts(cols, rng, k % 4) for k in range(n_tok)])
    want = c_matmul(AVX2, t, w, rows, cols, x)
    np.testing.assert_array_equal(c_matmul(AVX512, t, w, rows, cols, x).view(np.uint32), want.view(np.uint32))
    np.testing.assert_array_equal(c_matmul(AVX512, t, w, rows, cols, x, n_threads=1).view(np.uint32),
                                  want.view(np.uint32))


# The AVX2 table's batched K-quant GEMMs (csrc/x86/kquants_gemm_avx2.c: 2-row x 4-token tiles, with an
# AVX-VNNI build) against the row kernels, which PYRT_NO_KQ_GEMM=1 makes the matmul use for every
# token. Tables are built once per process, so the other settings run in subprocesses.
_TILE_SHAPES = [(t, rows, cols, n_tok)
                for i, t in enumerate(K_TYPES)
                for j, (rows, n_tok) in enumerate([(1, 8), (2, 9), (3, 70), (4, 4), (5, 11), (7, 33), (8, 1),
                                                   (8, 3), (8, 4), (8, 5), (8, 7), (8, 12), (9, 8), (13, 17),
                                                   (16, 66), (16, 6), (24, 13), (31, 64), (32, 65), (40, 70),
                                                   (40, 10), (37, 2), (6, 69), (12, 9)])
                for cols in [(256, 512, 768, 1024, 1280, 1536)[(i + j) % 6]]]
# past 8 super-blocks: the row-per-lane GEMMs carry their float chains across column chunks
_TILE_SHAPES += [(t, rows, cols, n_tok) for t in K_TYPES for rows, cols, n_tok in [(24, 2560, 9), (13, 4352, 10)]]
# past the 128-token panels and calls (core/matmul.c MM_GEMM_TOKS_K)
_TILE_SHAPES += [(t, rows, cols, n_tok) for t in K_TYPES for rows, cols, n_tok in [(16, 512, 140), (9, 256, 260)]]


def _tile_shape_results() -> list[np.ndarray]:
    out = []
    for t, rows, cols, n_tok in _TILE_SHAPES:
        rng = np.random.default_rng([rows, cols, n_tok, int(t), 256])
        w = random_kblocks(t, rows * cols, rng)
        x = np.stack([random_acts(cols, rng, k % 4) for k in range(n_tok)])
        out.append(c_matmul(AVX2, t, w, rows, cols, x, n_threads=1))
        out.append(c_matmul(AVX2, t, w, rows, cols, x, n_threads=3))
    return out


def _tile_shape_results_with(tmp_path, **env) -> list[np.ndarray]:
    f = tmp_path / "out.npz"
    code = (f"import sys, numpy as np; sys.path.insert(0, {os.path.dirname(__file__)!r}); "
            f"import test_kquants as m; np.savez({str(f)!r}, *m._tile_shape_results())")
    subprocess.run([sys.executable, "-c", code], env={**os.environ, **env}, check=True)
    with np.load(f) as z:
        return [z[f"arr_{i}"] for i in range(len(z.files))]


@pytest.mark.skipif(not HAVE_AVX2, reason="no AVX2 on this CPU/build")
def test_avx2_batched_kernels_match_row_kernels(tmp_path):
    """Tile remainders (rows not a multiple of 2/8, token counts not a multiple
    of 4), Q4_K's repacked order (rows % 8 == 0) and the tiled one, with and
    without AVX-VNNI: bit for bit the row kernels' results."""
    want = _tile_shape_results_with(tmp_path, PYRT_NO_KQ_GEMM="1")
    runs = {"default": _tile_shape_results(), "no-vnni": _tile_shape_results_with(tmp_path, PYRT_NO_VNNI="1")}
    for name, got in runs.items():
        assert len(got) == len(want)
        for i, (g, e) in enumerate(zip(got, want)):
            np.testing.assert_array_equal(g.view(np.uint32), e.view(np.uint32),
                                          err_msg=f"{name}: {_TILE_SHAPES[i // 2]}")


# ---- bad input -----------------------------------------------------------------------------------

def test_bad_sizes_are_errors():
    w = np.zeros(4 * _BLOCK_BYTES[T.Q4_K], np.uint8)
    a = np.zeros(4 * Q8K_BYTES, np.uint8)
    s = ffi.new("float *")
    for n in (0, 100, 255, 257, 32 * 9):
        with pytest.raises(ValueError, match="block size"):
            check(lib.pyrt_vec_dot(SCALAR, int(T.Q4_K), n, ptr(w), ptr(a), s), "vec_dot")
        with pytest.raises(ValueError, match="block size"):
            x = np.zeros(max(n, 1), np.float32)
            check(lib.pyrt_quantize_act(SCALAR, lib.PYRT_TYPE_Q8_K, ptr(x, "float *"), ptr(a), n), "q8_K")
