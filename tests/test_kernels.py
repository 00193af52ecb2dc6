"""Kernel tests: every variant (scalar reference, AVX2 where this CPU has it)
against independent numpy oracles (gguf.quants, float64 dots), and against each
other. docs/ARCHITECTURE.md, 'Correctness': dequantization is exact, dot products are checked against
what the integer kernel computes (tight) and against the real values (NMSE)."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from gguf import GGMLQuantizationType as T
from gguf import quants
from gguf.constants import GGML_QUANT_SIZES

from kernel_table import AVX2, AVX512, HAVE_AVX2, HAVE_AVX512, SCALAR, VARIANTS, needs_avx2
from pyrt._native import UnsupportedError, check, ffi, lib, ptr

# ---- named tolerances ---------------------------------------------------------
# |got - ref| / sum_b |block term| for a dot against the float64 emulation of the
# same integer kernel (f32 accumulation error only; one wrong element in the
# longest row already costs ~2e-4).
DOT_EXACT_RTOL = 1e-5
# NMSE over many rows of the kernel's dot vs float64 dot(weights, f32 activations):
# what activation quantization may cost (the matmul tolerance of docs/ARCHITECTURE.md, 'Correctness').
DOT_NMSE_TOL = 5e-4
# |avx2 - scalar| / sum_b |block term| (different summation order, and AVX2
# activations may round .5 ties the other way).
DOT_VARIANT_RTOL = 2e-3
DOT_VARIANT_RTOL_SAME_ACT = 1e-5   # both variants fed the same activation bytes
# F16 helpers: f32 accumulation, relative to sum |x_i y_i|
F16_DOT_RTOL = 1e-5
F16_MAD_ATOL_ULP = 1               # y += x*v: FMA vs mul+add, at most 1 ulp of |y|+|x*v|
ACT_Q_MAX_DIFF = 1                 # AVX2 vs reference int8 activations (ties, 127/amax vs 1/d)

SIZES = [32, 64, 96, 288, 576, 1536, 32 * 37, 4096 + 32]
ODD_SIZES = [1, 7, 8, 15, 33, 100, 1001]   # float types have block size 1

WEIGHT_TYPES = [T.F32, T.F16, T.BF16, T.Q8_0, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1]
QUANT_TYPES = [T.Q8_0, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1]
ACT_OF = {T.F32: T.F32, T.F16: T.F16, T.BF16: T.BF16, T.Q8_0: T.Q8_0, T.Q4_0: T.Q8_0,
          T.Q5_0: T.Q8_0, T.Q4_1: T.Q8_1, T.Q5_1: T.Q8_1}


BEST_X86 = AVX512 if HAVE_AVX512 else AVX2


# ---- helpers -------------------------------------------------------------------
def block_size(t) -> int:
    return int(lib.pyrt_type_block_size(int(t)))


def nbytes(t, n: int) -> int:
    return n // block_size(t) * int(lib.pyrt_type_block_bytes(int(t)))


def rand_fp16_scales(rng, count, lo=-14, hi=-2) -> np.ndarray:
    """Finite fp16 scales of both signs, some zero, some subnormal."""
    d = rng.choice([-1.0, 1.0], count) * np.exp2(rng.uniform(lo, hi, count))
    d[rng.random(count) < 0.05] = 0.0
    d[rng.random(count) < 0.05] = 3e-6 * rng.choice([-1.0, 1.0])   # subnormal in fp16
    return d.astype(np.float16)


def random_blocks(t, n: int, rng, lo=-14, hi=-2) -> np.ndarray:
    """Random valid raw weight bytes: every bit pattern of qs/qh, sane scales."""
    if t == T.F32:
        return rng.standard_normal(n).astype(np.float32).view(np.uint8)
    if t == T.F16:
        return rng.standard_normal(n).astype(np.float16).view(np.uint8)
    if t == T.BF16:
        return quants.quantize(rng.standard_normal(n).astype(np.float32), T.BF16).view(np.uint8).reshape(-1)
    nb = n // 32
    bs = int(lib.pyrt_type_block_bytes(int(t)))
    raw = rng.integers(0, 256, (nb, bs), dtype=np.uint8)
    n_scales = 2 if t in (T.Q4_1, T.Q5_1) else 1
    for k in range(n_scales):
        raw[:, 2 * k:2 * k + 2] = rand_fp16_scales(rng, nb, lo, hi).view(np.uint8).reshape(nb, 2)
    return raw.reshape(-1)


def c_dequantize(variant, t, raw: np.ndarray, n: int) -> np.ndarray:
    out = np.full(n, np.nan, np.float32)
    check(lib.pyrt_dequantize(variant, int(t), ptr(raw), ptr(out, "float *"), n), "dequantize")
    return out


def c_quantize_act(variant, t, x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, np.float32)
    out = np.zeros(nbytes(t, x.size) + 64, np.uint8)     # guard bytes stay zero
    check(lib.pyrt_quantize_act(variant, int(t), ptr(x, "float *"), ptr(out), x.size), "quantize_act")
    assert not out[nbytes(t, x.size):].any(), "quantize_act wrote past the end of its row"
    return out[:nbytes(t, x.size)]


def c_vec_dot(variant, wt, w: np.ndarray, a: np.ndarray, n: int) -> float:
    s = ffi.new("float *", np.nan)
    check(lib.pyrt_vec_dot(variant, int(wt), n, ptr(w), ptr(a), s), "vec_dot")
    return float(s[0])


def split_q8(raw: np.ndarray, t):
    """(d f16, s f16 or None, qs int8 [nb, 32]) of a Q8_0 / Q8_1 row."""
    if t == T.Q8_0:
        b = raw.reshape(-1, 34)
        return b[:, 0:2].copy().view(np.float16)[:, 0], None, b[:, 2:].view(np.int8)
    b = raw.reshape(-1, 36)
    return (b[:, 0:2].copy().view(np.float16)[:, 0], b[:, 2:4].copy().view(np.float16)[:, 0],
            b[:, 4:].view(np.int8))


def np_roundf(v: np.ndarray) -> np.ndarray:
    return np.sign(v) * np.floor(np.abs(v) + np.float32(0.5))


def ref_quantize_q8(x: np.ndarray, t) -> np.ndarray:
    """ggml's quantize_row_q8_0_ref / q8_1_ref in numpy (float32 throughout)."""
    if t == T.Q8_0:
        return quants.quantize(x, T.Q8_0).reshape(-1)
    blocks = x.astype(np.float32).reshape(-1, 32)
    d = (np.abs(blocks).max(axis=1, keepdims=True) / np.float32(127)).astype(np.float32)
    with np.errstate(divide="ignore"):
        idv = np.where(d == 0, np.float32(0), np.float32(1) / d).astype(np.float32)
    q = quants.np_roundf(blocks * idv).astype(np.int8)
    s = (q.astype(np.int32).sum(axis=1, keepdims=True).astype(np.float32) * d).astype(np.float16)
    return np.concatenate([d.astype(np.float16).view(np.uint8), s.view(np.uint8), q.view(np.uint8)],
                          axis=1).reshape(-1)


def emulate_dot(wt, w: np.ndarray, a: np.ndarray, n: int):
    """float64 value of what the kernel computes, and sum of |terms| for the error scale."""
    at = ACT_OF[wt]
    if wt in (T.F32, T.F16, T.BF16):
        wf = quants.dequantize(w, wt).reshape(-1).astype(np.float64)
        af = quants.dequantize(a, at).reshape(-1).astype(np.float64)
        return float(wf @ af), float(np.abs(wf * af).sum())
    wq = w.reshape(n // 32, -1)
    dw = wq[:, 0:2].copy().view(np.float16)[:, 0].astype(np.float64)
    # integer weights: dequantize with d=1 (m=0) by patching the scales
    unit = wq.copy()
    unit[:, 0:2] = np.array([1.0], np.float16).view(np.uint8)
    if wt in (T.Q4_1, T.Q5_1):
        unit[:, 2:4] = 0
    qw = quants.dequantize(unit.reshape(-1), wt).reshape(n // 32, 32).astype(np.int64)
    da, sa, qa = split_q8(a, at)
    sumi = (qw * qa.astype(np.int64)).sum(axis=1).astype(np.float64)
    terms = dw * da.astype(np.float64) * sumi
    scale = np.abs(terms).sum()
    if sa is not None:
        mins = wq[:, 2:4].copy().view(np.float16)[:, 0].astype(np.float64) * sa.astype(np.float64)
        terms = terms + mins
        scale += np.abs(mins).sum()
    return float(terms.sum()), float(scale)


def weights_for(wt, n, rng):
    """Realistic weight row: gguf's quantizer on gaussian floats."""
    x = rng.standard_normal(n).astype(np.float32)
    if wt == T.F32:
        return x.view(np.uint8)
    return np.ascontiguousarray(quants.quantize(x, wt)).view(np.uint8).reshape(-1)


# ---- type traits / dispatch ----------------------------------------------------
def test_type_traits_match_gguf():
    for t in [T.F32, T.F16, T.BF16, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0,
              T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K, T.Q8_K]:
        assert (lib.pyrt_type_block_size(int(t)), lib.pyrt_type_block_bytes(int(t))) == GGML_QUANT_SIZES[t], t.name
    # gguf's table still has the old 40-byte Q8_1; ggml's block is d, s (fp16) + 32 int8
    assert (lib.pyrt_type_block_size(int(T.Q8_1)), lib.pyrt_type_block_bytes(int(T.Q8_1))) == (32, 36)
    for bad in (-1, 4, 5, 16, 39, 40, 1000):
        assert lib.pyrt_type_block_size(bad) == 0 and lib.pyrt_type_block_bytes(bad) == 0
        assert lib.pyrt_type_supported(bad) == 0 and lib.pyrt_type_act_type(bad) == -1


def test_act_types_and_supported():
    for wt, at in ACT_OF.items():
        assert lib.pyrt_type_act_type(int(wt)) == int(at), wt.name
        assert lib.pyrt_type_supported(int(wt)) == 1, wt.name
    assert lib.pyrt_type_act_type(int(T.Q4_K)) == int(T.Q8_K)
    for t in (T.Q8_1, T.Q8_K):   # activation-only types are not weights
        assert lib.pyrt_type_supported(int(t)) == 0


def test_kernel_names_and_select():
    assert lib.pyrt_kernels_available(SCALAR) == 1
    assert lib.pyrt_kernels_available(lib.PYRT_KERNELS_AUTO) == 1
    assert lib.pyrt_kernels_available(99) == 0
    for v, name in [(SCALAR, b"scalar"), (AVX2, b"avx2"), (lib.PYRT_KERNELS_NEON, b"neon"),
                    (AVX512, b"avx512"), (lib.PYRT_KERNELS_AUTO, b"auto")]:
        assert ffi.string(lib.pyrt_kernels_name(v)) == name
    before = lib.pyrt_kernels_active()
    try:
        check(lib.pyrt_kernels_select(SCALAR))
        assert lib.pyrt_kernels_active() == SCALAR
        if HAVE_AVX2:
            check(lib.pyrt_kernels_select(AVX2))
            assert lib.pyrt_kernels_active() == AVX2
        else:
            with pytest.raises(UnsupportedError):
                check(lib.pyrt_kernels_select(AVX2))
        with pytest.raises(ValueError):
            check(lib.pyrt_kernels_select(17))
        check(lib.pyrt_kernels_select(lib.PYRT_KERNELS_AUTO))
        env = os.environ.get("PYRT_KERNELS")
        expect = SCALAR if env == "scalar" or not HAVE_AVX2 else AVX2 if env == "avx2" else BEST_X86
        if sys.platform.startswith("linux") and os.uname().machine in ("aarch64", "arm64"):
            pytest.skip("expectation written for x86-64")
        assert lib.pyrt_kernels_active() == expect
    finally:
        check(lib.pyrt_kernels_select(before))


@pytest.mark.parametrize("value,expect", [
    ("scalar", "scalar"), ("avx2", "avx2"), ("avx512", "best"), ("auto", "best"), ("bogus", "best"), ("", "best")])
def test_env_override_read_at_first_use(value, expect):
    code = ("from pyrt._native import lib, ffi;"
            "print(ffi.string(lib.pyrt_kernels_name(lib.pyrt_kernels_active())).decode())")
    env = dict(os.environ, PYRT_KERNELS=value)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout.strip()
    best = (ffi.string(lib.pyrt_kernels_name(BEST_X86)).decode() if HAVE_AVX2
            else out if out == "neon" else "scalar")
    if expect == "avx2" and not HAVE_AVX2:
        expect = "best"
    assert out == (best if expect == "best" else expect)


# ---- dequantize ----------------------------------------------------------------
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("wt", WEIGHT_TYPES, ids=lambda t: t.name)
@pytest.mark.parametrize("n", SIZES)
def test_dequantize_exact(variant, wt, n):
    rng = np.random.default_rng(1000 + n + 7 * int(wt))
    raw = random_blocks(wt, n, rng)
    got = c_dequantize(variant, wt, raw, n)
    ref = quants.dequantize(raw, wt).reshape(-1).astype(np.float32)
    np.testing.assert_array_equal(got.view(np.uint32), ref.view(np.uint32))


@pytest.mark.parametrize("variant", VARIANTS)
def test_dequantize_f16_bf16_all_bit_patterns(variant):
    bits = np.arange(65536, dtype=np.uint16)
    for t in (T.F16, T.BF16):
        got = c_dequantize(variant, t, bits.view(np.uint8), bits.size)
        ref = quants.dequantize(bits.view(np.uint8), t).reshape(-1).astype(np.float32)
        nan = np.isnan(ref)
        np.testing.assert_array_equal(np.isnan(got), nan)
        np.testing.assert_array_equal(got[~nan].view(np.uint32), ref[~nan].view(np.uint32))
        if t == T.BF16:   # a pure shift: NaN payloads survive too
            np.testing.assert_array_equal(got.view(np.uint32), ref.view(np.uint32))


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("wt", QUANT_TYPES, ids=lambda t: t.name)
def test_dequantize_roundtrip_real_weights(variant, wt):
    # blocks made by gguf's own quantizer (the layout a model file has)
    rng = np.random.default_rng(int(wt))
    raw = weights_for(wt, 1536, rng)
    got = c_dequantize(variant, wt, raw, 1536)
    np.testing.assert_array_equal(got, quants.dequantize(raw, wt).reshape(-1))


# ---- quantize activations --------------------------------------------------------
def act_input(n, rng):
    x = rng.standard_normal(n).astype(np.float32) * np.float32(rng.uniform(0.01, 30))
    x[rng.random(n) < 0.01] *= 20                               # outliers
    if n >= 64:
        x[32:64] = 0.0                                          # all-zero block: d = 0
    return x


def tie_block() -> np.ndarray:
    """amax = 127 makes id = 1 in both variants: every x*id is an exact .5 tie."""
    x = (np.arange(32, dtype=np.float32) - 16) + np.float32(0.5)
    x[0] = 127.0
    return x


@pytest.mark.parametrize("at", [T.Q8_0, T.Q8_1], ids=lambda t: t.name)
@pytest.mark.parametrize("n", SIZES)
def test_quantize_act_scalar_matches_ggml_reference(at, n):
    rng = np.random.default_rng(n + int(at))
    x = act_input(n, rng)
    x[-32:] = tie_block()
    got = c_quantize_act(SCALAR, at, x)
    np.testing.assert_array_equal(got, ref_quantize_q8(x, at))


@needs_avx2
@pytest.mark.parametrize("at", [T.Q8_0, T.Q8_1], ids=lambda t: t.name)
@pytest.mark.parametrize("n", SIZES)
def test_quantize_act_avx2_close_to_reference(at, n):
    rng = np.random.default_rng(n + int(at))
    x = act_input(n, rng)
    x[-32:] = tie_block()
    got = c_quantize_act(AVX2, at, x)
    ref = c_quantize_act(SCALAR, at, x)
    dg, sg, qg = split_q8(got, at)
    dr, sr, qr = split_q8(ref, at)
    np.testing.assert_array_equal(dg.view(np.uint16), dr.view(np.uint16))   # d = amax/127 in both
    assert np.abs(qg.astype(int) - qr.astype(int)).max() <= ACT_Q_MAX_DIFF
    # ggml's AVX2 path rounds ties to even: the tie block shows it
    tie = x[-32:] * np.float32(1.0)
    np.testing.assert_array_equal(qg[-1], np.rint(tie).astype(np.int8))
    np.testing.assert_array_equal(qr[-1], np_roundf(tie).astype(np.int8))
    if at == T.Q8_1:
        # s = fp16(d_float * sum(q)) of its own q; equal to the reference where q agree
        d32 = (np.abs(x.reshape(-1, 32)).max(axis=1) / np.float32(127)).astype(np.float32)
        s_self = (qg.astype(np.int32).sum(axis=1).astype(np.float32) * d32).astype(np.float16)
        np.testing.assert_array_equal(sg.view(np.uint16), s_self.view(np.uint16))
        same = (qg == qr).all(axis=1)
        np.testing.assert_array_equal(sg[same].view(np.uint16), sr[same].view(np.uint16))


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("n", SIZES + ODD_SIZES)
def test_quantize_act_float_types(variant, n):
    rng = np.random.default_rng(n)
    x = rng.standard_normal(n).astype(np.float32) * np.float32(100)
    special = np.array([np.inf, -np.inf, np.nan, 0.0, -0.0, 65504, 65520, 1e6, 6e-8, 3e-8, 2.9e-8,
                        1e-5, -1e-7, 1e-40, 3.0e38], np.float32)
    k = min(n, special.size)
    x[:k] = special[:k]
    f16 = c_quantize_act(variant, T.F16, x).view(np.uint16)
    with np.errstate(over="ignore"):
        ref16 = x.astype(np.float16).view(np.uint16)
    nan = np.isnan(x)
    np.testing.assert_array_equal(np.isnan(f16.view(np.float16)), nan)
    np.testing.assert_array_equal(f16[~nan], ref16[~nan])
    bf = c_quantize_act(variant, T.BF16, x)
    np.testing.assert_array_equal(bf, quants.quantize(x, T.BF16).view(np.uint8).reshape(-1))
    f32 = c_quantize_act(variant, T.F32, x)
    np.testing.assert_array_equal(f32, x.view(np.uint8))


# ---- vec_dot ---------------------------------------------------------------------
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("wt", WEIGHT_TYPES, ids=lambda t: t.name)
@pytest.mark.parametrize("n", SIZES)
def test_vec_dot_matches_integer_emulation(variant, wt, n):
    rng = np.random.default_rng(2000 + n + 13 * int(wt))
    for trial in range(3):
        w = random_blocks(wt, n, rng, lo=-10, hi=-3) if trial else weights_for(wt, n, rng)
        a = c_quantize_act(variant, ACT_OF[wt], act_input(n, rng))
        ref, scale = emulate_dot(wt, w, a, n)
        got = c_vec_dot(variant, wt, w, a, n)
        assert abs(got - ref) <= DOT_EXACT_RTOL * scale + 1e-30, (trial, got, ref, scale)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("wt", [T.F32, T.F16, T.BF16], ids=lambda t: t.name)
@pytest.mark.parametrize("n", ODD_SIZES)
def test_vec_dot_float_types_odd_lengths(variant, wt, n):
    rng = np.random.default_rng(n)
    w = weights_for(wt, n, rng)
    a = c_quantize_act(variant, ACT_OF[wt], rng.standard_normal(n).astype(np.float32))
    ref, scale = emulate_dot(wt, w, a, n)
    assert abs(c_vec_dot(variant, wt, w, a, n) - ref) <= DOT_EXACT_RTOL * scale


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("wt", WEIGHT_TYPES, ids=lambda t: t.name)
def test_vec_dot_nmse_vs_real_values(variant, wt):
    """The weights a model holds (dequantized) against the real f32 activations:
    the only error left is activation quantization and f32 accumulation."""
    rng = np.random.default_rng(int(wt))
    err = energy = 0.0
    for n in SIZES:
        for _ in range(8):
            w = weights_for(wt, n, rng)
            x = act_input(n, rng)
            got = c_vec_dot(variant, wt, w, c_quantize_act(variant, ACT_OF[wt], x), n)
            ref = float(quants.dequantize(w, wt).reshape(-1).astype(np.float64) @ x.astype(np.float64))
            err += (got - ref) ** 2
            energy += ref ** 2
    assert err / energy <= DOT_NMSE_TOL, err / energy


@needs_avx2
@pytest.mark.parametrize("wt", WEIGHT_TYPES, ids=lambda t: t.name)
@pytest.mark.parametrize("n", SIZES)
def test_vec_dot_avx2_agrees_with_scalar(wt, n):
    rng = np.random.default_rng(3000 + n + int(wt))
    w = random_blocks(wt, n, rng, lo=-10, hi=-3)
    x = act_input(n, rng)
    a_s = c_quantize_act(SCALAR, ACT_OF[wt], x)
    a_v = c_quantize_act(AVX2, ACT_OF[wt], x)
    _, scale = emulate_dot(wt, w, a_s, n)
    s_s = c_vec_dot(SCALAR, wt, w, a_s, n)
    # same activation bytes: only the summation order differs
    assert abs(c_vec_dot(AVX2, wt, w, a_s, n) - s_s) <= DOT_VARIANT_RTOL_SAME_ACT * scale
    # each variant's own activations (what a model run does)
    assert abs(c_vec_dot(AVX2, wt, w, a_v, n) - s_s) <= DOT_VARIANT_RTOL * scale


# ---- F16 helpers (called through the kernel table) ----------------------------------
from kernel_table import kptr, table  # noqa: E402  (mirror of the kernels.h table)


@pytest.mark.parametrize("variant", VARIANTS)
def test_f16_conversions_exact(variant):
    k = table(variant)
    bits = np.arange(65536, dtype=np.uint16)
    f32 = np.zeros(bits.size, np.float32)
    k.fp16_to_fp32(kptr(bits, "uint16_t *"), kptr(f32, "float *"), bits.size)
    ref = bits.view(np.float16).astype(np.float32)
    nan = np.isnan(ref)
    np.testing.assert_array_equal(np.isnan(f32), nan)
    np.testing.assert_array_equal(f32[~nan].view(np.uint32), ref[~nan].view(np.uint32))
    # every fp16 value plus midpoints (ties) and neighbours, subnormals, overflow
    fin = ref[np.isfinite(ref)]
    x = np.concatenate([fin, np.nextafter(fin, np.float32(np.inf)), np.nextafter(fin, np.float32(-np.inf)),
                        (fin[:-1].astype(np.float64) / 2 + fin[1:].astype(np.float64) / 2).astype(np.float32),
                        np.array([np.inf, -np.inf, np.nan, 65519.99, 65520, 1e30, 1e-30], np.float32)])
    for n in (x.size, x.size - 3):   # odd length exercises the scalar tail
        h = np.zeros(n, np.uint16)
        k.fp32_to_fp16(kptr(x, "float *"), kptr(h, "uint16_t *"), n)
        with np.errstate(over="ignore"):
            r = x[:n].astype(np.float16).view(np.uint16)
        xn = np.isnan(x[:n])
        np.testing.assert_array_equal(np.isnan(h.view(np.float16)), xn)
        np.testing.assert_array_equal(h[~xn], r[~xn])


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("n", [1, 7, 8, 31, 64, 100, 576, 1536, 4128])
def test_dot_and_mad_f16(variant, n):
    k = table(variant)
    rng = np.random.default_rng(n)
    x = rng.standard_normal(n).astype(np.float16)
    y = rng.standard_normal(n).astype(np.float16)
    xd, yd = x.astype(np.float64), y.astype(np.float64)
    got = k.dot_f16(n, kptr(x, "uint16_t *"), kptr(y, "uint16_t *"))
    assert abs(got - xd @ yd) <= F16_DOT_RTOL * np.abs(xd * yd).sum()

    acc = rng.standard_normal(n + 1).astype(np.float32)
    acc[n] = 12345.0                                     # sentinel past the end
    v = np.float32(-0.3)
    expect = acc[:n].astype(np.float64) + xd * np.float64(v)
    k.mad_f16(n, kptr(acc, "float *"), kptr(x, "uint16_t *"), float(v))
    assert acc[n] == np.float32(12345.0)
    ulp = np.spacing(np.abs(acc[:n - 0]).astype(np.float32) + np.abs(xd * v).astype(np.float32))
    assert (np.abs(acc[:n] - expect) <= F16_MAD_ATOL_ULP * ulp).all()


# ---- argument validation ---------------------------------------------------------------
def test_validation_errors_never_crash():
    buf = np.zeros(4096, np.uint8)
    out = np.zeros(1024, np.float32)
    fp = ptr(out, "float *")
    s = ffi.new("float *")
    for v in (SCALAR, lib.PYRT_KERNELS_AUTO) + ((AVX2,) if HAVE_AVX2 else ()):
        # unknown / unsupported types
        for bad in (-1, 4, 5, 40, 1000):
            with pytest.raises(UnsupportedError):
                check(lib.pyrt_dequantize(v, bad, ptr(buf), fp, 32))
            with pytest.raises(UnsupportedError):
                check(lib.pyrt_quantize_act(v, bad, fp, ptr(buf), 32))
            with pytest.raises(UnsupportedError):
                check(lib.pyrt_vec_dot(v, bad, 32, ptr(buf), ptr(buf), s))
        with pytest.raises(UnsupportedError):     # a GGUF type pyrt has no kernels for (IQ2_XXS)
            check(lib.pyrt_vec_dot(v, int(T.IQ2_XXS), 32, ptr(buf), ptr(buf), s))
        with pytest.raises(UnsupportedError):     # Q8_1 is an activation type only
            check(lib.pyrt_vec_dot(v, int(T.Q8_1), 32, ptr(buf), ptr(buf), s))
        with pytest.raises(UnsupportedError):     # Q4_0 is no activation type
            check(lib.pyrt_quantize_act(v, int(T.Q4_0), fp, ptr(buf), 32))
        # n not a positive multiple of the block size
        for n in (0, -32, 16, 33, 48):
            with pytest.raises(ValueError):
                check(lib.pyrt_dequantize(v, int(T.Q4_0), ptr(buf), fp, n))
            with pytest.raises(ValueError):
                check(lib.pyrt_quantize_act(v, int(T.Q8_0), fp, ptr(buf), n))
            with pytest.raises(ValueError):
                check(lib.pyrt_vec_dot(v, int(T.Q5_1), n, ptr(buf), ptr(buf), s))
        for n in (0, -1):
            with pytest.raises(ValueError):
                check(lib.pyrt_vec_dot(v, int(T.F16), n, ptr(buf), ptr(buf), s))
        # NULL pointers
        with pytest.raises(ValueError):
            check(lib.pyrt_dequantize(v, int(T.Q8_0), ffi.NULL, fp, 32))
        with pytest.raises(ValueError):
            check(lib.pyrt_dequantize(v, int(T.Q8_0), ptr(buf), ffi.NULL, 32))
        with pytest.raises(ValueError):
            check(lib.pyrt_quantize_act(v, int(T.Q8_0), ffi.NULL, ptr(buf), 32))
        with pytest.raises(ValueError):
            check(lib.pyrt_vec_dot(v, int(T.Q8_0), 32, ptr(buf), ffi.NULL, s))
        with pytest.raises(ValueError):
            check(lib.pyrt_vec_dot(v, int(T.Q8_0), 32, ptr(buf), ptr(buf), ffi.NULL))
    # bad / unavailable variants
    with pytest.raises(ValueError):
        check(lib.pyrt_dequantize(9, int(T.Q8_0), ptr(buf), fp, 32))
    if not lib.pyrt_kernels_available(lib.PYRT_KERNELS_NEON):
        with pytest.raises(UnsupportedError):
            check(lib.pyrt_vec_dot(lib.PYRT_KERNELS_NEON, int(T.Q8_0), 32, ptr(buf), ptr(buf), s))
    assert not out.any()     # nothing was written by a rejected call
