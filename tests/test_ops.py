"""Forward-pass ops of the kernel table (rope, SwiGLU, attention head) and the
repacked-order Q4_0 dot product, each variant against a float64 numpy
reference (docs/ARCHITECTURE.md, 'Correctness')."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from gguf import GGMLQuantizationType as T
from gguf import quants

from kernel_table import ATTN_ACC_MIN, ATTN_SPLIT_PHASES, X86_VARIANTS, kffi, kptr, needs_avx2, table
from pyrt._native import lib

NMSE_ELEMENTWISE = 1e-7      # rope, swiglu
NMSE_ATTENTION = 5e-4        # attention (q and probabilities rounded to f16, as llama.cpp does)
DOT_RTOL = 1e-5

VARIANTS = [lib.PYRT_KERNELS_SCALAR] + (
    [lib.PYRT_KERNELS_AVX2] if lib.pyrt_kernels_available(lib.PYRT_KERNELS_AVX2) else [])


def nmse(got, ref):
    ref = np.asarray(ref, np.float64)
    return float(np.sum((np.asarray(got, np.float64) - ref) ** 2) / max(np.sum(ref ** 2), 1e-300))


def rope_ref(x, n_rot, mode, pos, base, scale, ff=None):
    x = x.astype(np.float64).copy()
    i = np.arange(n_rot // 2)
    theta = pos * scale * base ** (-2.0 * i / n_rot)
    if ff is not None:
        theta = theta / ff
    c, s = np.cos(theta), np.sin(theta)
    if mode == lib.PYRT_ROPE_NEOX:
        a, b = i, i + n_rot // 2
    else:
        a, b = 2 * i, 2 * i + 1
    x0, x1 = x[a].copy(), x[b].copy()
    x[a] = x0 * c - x1 * s
    x[b] = x0 * s + x1 * c
    return x


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("mode", [lib.PYRT_ROPE_NORMAL, lib.PYRT_ROPE_NEOX])
@pytest.mark.parametrize("head_dim,n_rot", [(64, 64), (128, 64), (256, 256), (80, 32)])
def test_rope(variant, mode, head_dim, n_rot):
    k = table(variant)
    rng = np.random.default_rng(head_dim + n_rot + mode)
    for pos in (0, 1, 7, 513, 4000):
        x = rng.standard_normal(head_dim).astype(np.float32)
        got = x.copy()
        k.rope(kptr(got, "float *"), n_rot, mode, float(pos), 10000.0, 1.0, kffi.NULL, 1.0)
        ref = rope_ref(x, n_rot, mode, pos, 10000.0, 1.0)
        assert nmse(got, ref) <= NMSE_ELEMENTWISE * 10, (pos, nmse(got, ref))  # cos of large angles in f32
        np.testing.assert_array_equal(got[n_rot:], x[n_rot:])     # untouched tail
        # Llama 3 rope scaling: theta_i divided by per-pair frequency factors
        ff = rng.uniform(1.0, 8.0, n_rot // 2).astype(np.float32)
        got = x.copy()
        k.rope(kptr(got, "float *"), n_rot, mode, float(pos), 10000.0, 1.0, kptr(ff, "float *"), 1.0)
        ref = rope_ref(x, n_rot, mode, pos, 10000.0, 1.0, ff.astype(np.float64))
        assert nmse(got, ref) <= NMSE_ELEMENTWISE * 10, (pos, nmse(got, ref))
        # rope attn_factor (phi3 LongRoPE): the rotated pairs scaled, the tail untouched
        got = x.copy()
        k.rope(kptr(got, "float *"), n_rot, mode, float(pos), 10000.0, 1.0, kptr(ff, "float *"), 1.19)
        assert nmse(got[:n_rot], 1.19 * ref[:n_rot]) <= NMSE_ELEMENTWISE * 10, pos
        np.testing.assert_array_equal(got[n_rot:], x[n_rot:])


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("mode", [lib.PYRT_ROPE_NORMAL, lib.PYRT_ROPE_NEOX])
@pytest.mark.parametrize("head_dim,n_rot", [(64, 64), (128, 64), (256, 256), (80, 32), (1024, 1024)])
def test_rope_cache_is_rope(variant, mode, head_dim, n_rot):
    """The forward pass rotates a token's heads with one table of cosines and
    sines (rope_cache, then rope_cs per head): bit for bit what rope gives each
    head, with frequency factors, attn_factor and a scaled position too."""
    k = table(variant)
    rng = np.random.default_rng(head_dim + 3 * n_rot + mode)
    ff = rng.uniform(1.0, 8.0, n_rot // 2).astype(np.float32)
    for pos, base, scale, fac, ms in ((0, 10000.0, 1.0, None, 1.0), (7, 10000.0, 1.0, None, 1.0),
                                      (513, 500000.0, 1.0, ff, 1.0), (4000, 1e6, 0.25, None, 1.0),
                                      (99, 10000.0, 1.0, ff, 1.19)):
        fptr = kptr(fac, "float *") if fac is not None else kffi.NULL
        cs = np.full(n_rot + 8, np.nan, np.float32)          # n_rot floats written, no more
        k.rope_cache(kptr(cs, "float *"), n_rot, float(pos), base, scale, fptr, ms)
        assert np.isnan(cs[n_rot:]).all() and not np.isnan(cs[:n_rot]).any()
        for _head in range(3):
            x = rng.standard_normal(head_dim).astype(np.float32)
            want, got = x.copy(), x.copy()
            k.rope(kptr(want, "float *"), n_rot, mode, float(pos), base, scale, fptr, ms)
            k.rope_cs(kptr(got, "float *"), n_rot, mode, kptr(cs, "float *"))
            np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("n", [1, 7, 8, 33, 1536])
def test_swiglu(variant, n):
    k = table(variant)
    rng = np.random.default_rng(n)
    g = (rng.standard_normal(n) * 4).astype(np.float32)
    if n >= 8:
        g[:3] = [-100.0, 100.0, 0.0]      # saturation and zero
    u = rng.standard_normal(n).astype(np.float32)
    got = g.copy()
    k.swiglu(kptr(got, "float *"), kptr(u, "float *"), n)
    gd = g.astype(np.float64)
    ref = gd / (1 + np.exp(-gd)) * u
    assert np.all(np.isfinite(got))
    assert nmse(got, ref) <= NMSE_ELEMENTWISE


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("n", [1, 7, 8, 9, 64, 1000])
def test_geglu_is_ggml_table_gelu(variant, n):
    """g = gelu(g) * u with ggml's fp16 GELU table: the value looked up at
    fp16(g) (round to nearest even), 0 at or below -10, g itself at or above
    10. Exact for every variant (the vector one rounds and gathers in lanes)."""
    k = table(variant)
    rng = np.random.default_rng(n + 77)
    g = (rng.standard_normal(n) * 4).astype(np.float32)
    edge = np.array([-10.0, 10.0, -10.000001, 9.999999, 0.0, -0.0, 1e-6, -3e-8, 6e-5, 65504.0, -1e30],
                    np.float32)
    g[:min(n, edge.size)] = edge[:min(n, edge.size)]
    u = rng.standard_normal(n).astype(np.float32)
    got = g.copy()
    k.geglu(kptr(got, "float *"), kptr(u, "float *"), n)
    a, s = np.float32(0.044715), np.float32(0.79788456080286535587989211986876)
    with np.errstate(over="ignore", invalid="ignore"):
        x = g.astype(np.float16).astype(np.float32)      # the table's index value
        inner = (a * x).astype(np.float64) * x + 1.0
        gel = (np.float32(0.5) * x * (np.float32(1.0) + np.tanh((s * x).astype(np.float64) * inner))).astype(np.float16)
        want = np.where(g <= -10, np.float32(0), np.where(g >= 10, g * u, gel.astype(np.float32) * u)).astype(np.float32)
    # tanh in float64 vs the C tanhf can differ in the last bit before the fp16 rounding:
    # compare against the scalar reference exactly, and against the formula to one fp16 ulp
    ref = g.copy()
    table(lib.PYRT_KERNELS_SCALAR).geglu(kptr(ref, "float *"), kptr(u, "float *"), n)
    np.testing.assert_array_equal(got.view(np.uint32), ref.view(np.uint32))
    np.testing.assert_allclose(got, want, rtol=2e-3, atol=1e-6)


def attention_ref(q, K, V, first, last, scale):
    q16 = q.astype(np.float16).astype(np.float64)
    s = K[first:last + 1].astype(np.float64) @ q16 * scale
    p = np.exp(s - s.max())
    p /= p.sum()
    p = p.astype(np.float32).astype(np.float16).astype(np.float64)
    return p @ V[first:last + 1].astype(np.float64)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("batched", [0, 1])
@pytest.mark.parametrize("head_dim", [64, 256, 40])
@pytest.mark.parametrize("first,last", [(0, 0), (0, 1), (0, 37), (5, 300), (0, 1023)])
def test_attention_head(variant, batched, head_dim, first, last):
    k = table(variant)
    rng = np.random.default_rng(head_dim * 1000 + last)
    n_ctx, stride = 1024, head_dim * 3          # 3 kv heads interleaved per row, use the middle one
    cache_k = rng.standard_normal((n_ctx, stride)).astype(np.float16)
    cache_v = rng.standard_normal((n_ctx, stride)).astype(np.float16)
    q = (rng.standard_normal(head_dim) * 2).astype(np.float32)
    out = np.zeros(head_dim, np.float32)
    scores = np.zeros(n_ctx + 32, np.float32)
    probs = np.zeros(n_ctx + 32, np.uint16)
    q16 = np.zeros(head_dim, np.uint16)
    acc = np.zeros(32 * head_dim, np.float32)
    scale = 1.0 / np.sqrt(head_dim)
    args = kffi.new("pyrt_attn_args *")
    args.out = kptr(out, "float *")
    args.q = kptr(q, "float *")
    args.k = kffi.cast("uint16_t *", cache_k.ctypes.data) + head_dim
    args.v = kffi.cast("uint16_t *", cache_v.ctypes.data) + head_dim
    args.stride, args.head_dim, args.first, args.last = stride, head_dim, first, last
    args.batched, args.scale = batched, scale
    args.scores, args.probs16 = kptr(scores, "float *"), kptr(probs, "uint16_t *")
    args.q16, args.acc = kptr(q16, "uint16_t *"), kptr(acc, "float *")
    k.attn_head(args)
    ref = attention_ref(q, cache_k[:, head_dim:2 * head_dim], cache_v[:, head_dim:2 * head_dim],
                        first, last, scale)
    assert nmse(out, ref) <= NMSE_ATTENTION, nmse(out, ref)


@pytest.mark.skipif(not lib.pyrt_kernels_available(lib.PYRT_KERNELS_AVX2), reason="no AVX2 on this CPU")
@pytest.mark.parametrize("n", [32, 576, 1536, 32 * 37])
def test_q4_0_repacked_order_dot(n):
    """The AVX2 Q4_0 dot in llama.cpp's repacked (8-row) order: same value as
    the float64 dot of the dequantized operands, up to float rounding."""
    k = table(lib.PYRT_KERNELS_AVX2)
    assert k.type[lib.PYRT_TYPE_Q4_0].vec_dot_r8 != kffi.NULL
    rng = np.random.default_rng(n)
    w = quants.quantize(rng.standard_normal(n).astype(np.float32), T.Q4_0)
    x = rng.standard_normal(n).astype(np.float32)
    a = np.zeros(n // 32 * 34, np.uint8)
    from pyrt._native import check, ffi
    check(lib.pyrt_quantize_act(lib.PYRT_KERNELS_AVX2, lib.PYRT_TYPE_Q8_0, ffi.cast("float *", x.ctypes.data),
                                ffi.cast("void *", a.ctypes.data), n))
    s = np.zeros(1, np.float32)
    k.type[lib.PYRT_TYPE_Q4_0].vec_dot_r8(n, kptr(s, "float *"), kptr(w, "void *"), kptr(a, "void *"))
    wd = quants.dequantize(w, T.Q4_0).astype(np.float64).ravel()
    ad = quants.dequantize(a, T.Q8_0).astype(np.float64).ravel()
    ref = wd @ ad
    assert abs(float(s[0]) - ref) <= DOT_RTOL * np.abs(wd * ad).sum()


GEMM_TYPES = ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"]
@pytest.mark.parametrize("variant", X86_VARIANTS)
@pytest.mark.parametrize("tname", GEMM_TYPES)
@pytest.mark.parametrize("rows,cols,n_tok", [(1, 32, 1), (3, 64, 1), (5, 576, 1), (37, 768, 1), (64, 576, 1),
                                             (8, 96, 1), (13, 64, 1), (47, 96, 1), (2, 32, 2), (7, 96, 3),
                                             (8, 576, 5), (37, 1536, 33), (40, 64, 70), (35, 64, 17),
                                             # wider than the tiles' scale caches (PYRT_GEMM_MAX_COLS):
                                             # the row dots take over
                                             (8, 16416, 3), (3, 16416, 1),
                                             # at and just under that width: token panels of 1-3
                                             (5, 16384, 9), (3, 13120, 6),
                                             # 8-row tiles x 1/2/4-token tails (two threads split 24 and 40 mid-tile)
                                             (8, 64, 2), (16, 96, 3), (24, 64, 4), (40, 96, 6), (8, 32, 7),
                                             (16, 64, 8), (24, 96, 9), (40, 64, 1), (72, 160, 1),
                                             # one token: 8 rows rs apart per GEMV group, then the rest
                                             (203, 96, 1), (256, 64, 1)])
def test_tiled_gemm_is_bit_identical_to_the_row_kernels(variant, tname, rows, cols, n_tok):
    """pyrt_matmul's tiled kernels (AVX2 and, where the CPU has it, the
    AVX-512 ones) must compute exactly what the AVX2 single-row dot computes
    for every (row, token), on every tile remainder, since the model's
    fidelity to llama.cpp rests on that arithmetic."""
    from pyrt._native import check, ffi
    k = table(lib.PYRT_KERNELS_AVX2)
    ty = int(getattr(lib, f"PYRT_TYPE_{tname}"))
    rng = np.random.default_rng(rows * 1000 + cols + n_tok)
    w = quants.quantize(rng.standard_normal((rows, cols)).astype(np.float32), getattr(T, tname))
    if tname == "Q8_0":     # -128, which no quantizer writes but a file may hold (the offset dots' edge)
        w.reshape(-1, 34)[::3, 2 + rows % 32] = 0x80
    x = rng.standard_normal((n_tok, cols)).astype(np.float32)
    y = np.zeros((n_tok, rows), np.float32)
    check(lib.pyrt_matmul(variant, ty, ffi.cast("void *", w.ctypes.data), rows, cols,
                          ffi.cast("float *", x.ctypes.data), n_tok, ffi.cast("float *", y.ctypes.data), 2))
    at = lib.pyrt_type_act_type(ty)
    a_row = cols // 32 * int(lib.pyrt_type_block_bytes(at))
    acts = np.zeros((n_tok, a_row), np.uint8)
    for t in range(n_tok):
        check(lib.pyrt_quantize_act(lib.PYRT_KERNELS_AVX2, at, ffi.cast("float *", x[t].ctypes.data),
                                    ffi.cast("void *", acts[t].ctypes.data), cols))
    dot = k.type[ty].vec_dot_r8 if (rows % 8 == 0 and k.type[ty].vec_dot_r8 != kffi.NULL) else k.type[ty].vec_dot
    dot = kffi.cast("pyrt_vec_dot_fn", dot)
    ref = np.zeros_like(y)
    s = np.zeros(1, np.float32)
    w_row = w.reshape(rows, -1)
    for t in range(n_tok):
        for r in range(rows):
            dot(cols, kptr(s, "float *"), kptr(np.ascontiguousarray(w_row[r]), "void *"), kptr(acts[t], "void *"))
            ref[t, r] = s[0]
    np.testing.assert_array_equal(y.view(np.uint32), ref.view(np.uint32))


@needs_avx2
def test_tiled_gemm_without_vnni_is_bit_identical_too():
    """The AVX2 tiles have a second build for CPUs without AVX-VNNI (vpmaddubsw
    dots, int16 offset corrections, ggml's sign trick for Q8_0); the kernel
    table is chosen once per process, so that build runs in a subprocess."""
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", __file__,
                        "-k", "tiled_gemm_is_bit_identical_to_the_row_kernels"],
                       env={**os.environ, "PYRT_NO_VNNI": "1"}, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert " passed" in r.stdout


def _attn_args(k, cache_k, cache_v, hd, stride, kv_off, n_ctx, n_q, scale, batched):
    """A pyrt_attn_args with fresh scratch for n_q queries; returns (args, keepalive)."""
    scratch = [np.zeros(n_q * (n_ctx + 32), np.float32), np.zeros(n_ctx + 32, np.uint16),
               np.zeros(hd, np.uint16), np.zeros(max(32 * hd, n_q * (hd + 264), ATTN_ACC_MIN), np.float32)]
    a = kffi.new("pyrt_attn_args *")
    a.k = kffi.cast("uint16_t *", cache_k.ctypes.data) + kv_off
    a.v = kffi.cast("uint16_t *", cache_v.ctypes.data) + kv_off
    a.stride, a.head_dim, a.batched, a.scale = stride, hd, batched, scale
    a.scores, a.probs16 = kptr(scratch[0], "float *"), kptr(scratch[1], "uint16_t *")
    a.q16, a.acc = kptr(scratch[2], "uint16_t *"), kptr(scratch[3], "float *")
    return a, scratch


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("batched", [1, 0])
@pytest.mark.parametrize("head_dim", [64, 256, 40, 72])
@pytest.mark.parametrize("gqa", [1, 3, 4])
@pytest.mark.parametrize("n_tok,last,window", [(1, 0, 0), (2, 0, 0), (3, 1, 0), (5, 37, 0), (8, 299, 0),
                                               (7, 250, 100), (3, 1000, 61), (6, 5, 3), (4, 13, 8)])
def test_attention_group_is_bit_identical_to_single_queries(variant, batched, head_dim, gqa, n_tok, last, window):
    """A group call (gqa heads x n_tok tokens sharing a kv head, as the forward
    pass makes them) gives each query exactly the one-query result, including
    sliding windows and the positions around the 8-aligned blocks."""
    k = table(variant)
    rng = np.random.default_rng(head_dim * 7 + gqa * 1000 + last + n_tok)
    n_ctx, n_kv = 1024 + 8, 2
    stride = head_dim * n_kv
    cache_k = rng.standard_normal((n_ctx, stride)).astype(np.float16)
    cache_v = rng.standard_normal((n_ctx, stride)).astype(np.float16)
    cache_v[last % 5::7, :3] = 0                          # some exact zeros and sign mixes
    if n_tok == 4:                                        # inf/NaN values where probabilities may be 0
        cache_v[3, head_dim + 5], cache_v[9, head_dim + 70 % head_dim] = np.inf, np.nan
    qd = head_dim * gqa * n_kv
    q = (rng.standard_normal((n_tok, qd)) * 3).astype(np.float32)
    q[0, :head_dim] *= 8                                  # peaked: many probabilities round to 0
    scale = 1.0 / np.sqrt(head_dim)
    hk = 1
    nq = n_tok * gqa
    got = np.full((n_tok, qd), np.nan, np.float32)
    a, keep = _attn_args(k, cache_k, cache_v, head_dim, stride, hk * head_dim, n_ctx, nq, scale, batched)
    a.q = kptr(q, "float *") + hk * gqa * head_dim
    a.out = kptr(got, "float *") + hk * gqa * head_dim
    a.n_tok, a.n_head, a.q_stride, a.window, a.first, a.last = n_tok, gqa, qd, window, 0, last
    k.attn_head(a)
    for t in range(n_tok):
        pos = last + t
        first = max(0, pos - window + 1) if window else 0
        for g in range(gqa):
            h = hk * gqa + g
            want = np.zeros(head_dim, np.float32)
            b, keep1 = _attn_args(k, cache_k, cache_v, head_dim, stride, hk * head_dim, n_ctx, 1, scale, batched)
            b.q = kptr(q[t], "float *") + h * head_dim
            b.out = kptr(want, "float *")
            b.first, b.last = first, pos
            k.attn_head(b)
            assert np.array_equal(got[t, h * head_dim:(h + 1) * head_dim].view(np.uint32), want.view(np.uint32)), (t, g)
    untouched = np.ones(qd, bool)
    untouched[hk * gqa * head_dim:(hk + 1) * gqa * head_dim] = False
    assert np.all(np.isnan(got[:, untouched]))


@pytest.mark.parametrize("variant", X86_VARIANTS)
@pytest.mark.parametrize("head_dim", [64, 256, 96])
@pytest.mark.parametrize("gqa,n_kv", [(3, 3), (4, 1), (1, 2), (8, 2), (1, 7)])
@pytest.mark.parametrize("last,window,softcap", [(700, 0, 0.0), (530, 0, 30.0), (900, 512, 0.0), (13, 0, 0.0)])
@pytest.mark.parametrize("nth", [1, 2, 3, 32])
def test_attention_split_between_threads_is_bit_identical_to_single_queries(variant, head_dim, gqa, n_kv, last,
                                                                            window, softcap, nth):
    """attn_heads_split (one token's attention cut into nth parts: the
    positions, then the queries, then the dims or, with one query a kv head,
    the value slots, then the slots' outputs, kernels.h) gives every query
    exactly its one-query attn_head result, from score and slot scratch that
    earlier calls left dirty; windows, soft-capping, uneven shares."""
    k = table(variant)
    assert k.attn_heads_split != kffi.NULL
    rng = np.random.default_rng(head_dim * 31 + gqa * 7 + n_kv * 1000 + last + nth)
    n_ctx = 1024 + 8
    stride = head_dim * n_kv
    cache_k = rng.standard_normal((n_ctx, stride)).astype(np.float16)
    cache_v = rng.standard_normal((n_ctx, stride)).astype(np.float16)
    cache_v[last % 5::7, :3] = 0
    nq = n_kv * gqa
    q = (rng.standard_normal(nq * head_dim) * 3).astype(np.float32)
    q[:head_dim] *= 8                                         # peaked: probabilities that round to 0
    scale = 1.0 / np.sqrt(head_dim)
    got = np.full(nq * head_dim, np.nan, np.float32)
    scores = np.full(nq * (n_ctx + 32), 0.25, np.float32)    # one buffer for all the threads
    slots = np.full(nq * (32 * head_dim + 16), 0.75, np.float32)   # likewise
    threads = []
    for _ in range(nth):
        a, keep = _attn_args(k, cache_k, cache_v, head_dim, stride, 0, n_ctx, nq, scale, 0)
        keep.append(np.full(nq * (32 * head_dim + 16), 0.5, np.float32))   # PYRT_ATTN_HEADS_ACC
        a.acc = kptr(keep[-1], "float *")
        a.scores = kptr(scores, "float *")
        a.q, a.out = kptr(q, "float *"), kptr(got, "float *")
        a.n_tok, a.n_head, a.n_kv, a.q_stride, a.window, a.first, a.last = 1, gqa, n_kv, nq * head_dim, window, 0, last
        a.softcap = softcap
        a.slots = kptr(slots, "float *")
        threads.append((a, keep))
    for phase in range(ATTN_SPLIT_PHASES):                    # a barrier between phases
        for ith, (a, _) in enumerate(threads):
            k.attn_heads_split(a, phase, ith, nth)
    first = max(0, last - window + 1) if window else 0
    for qh in range(nq):
        h = qh // gqa
        want = np.zeros(head_dim, np.float32)
        b, keep1 = _attn_args(k, cache_k, cache_v, head_dim, stride, h * head_dim, n_ctx, 1, scale, 0)
        b.q = kptr(q, "float *") + qh * head_dim
        b.out = kptr(want, "float *")
        b.first, b.last, b.softcap = first, last, softcap
        k.attn_head(b)
        assert np.array_equal(got[qh * head_dim:(qh + 1) * head_dim].view(np.uint32), want.view(np.uint32)), qh


@pytest.mark.parametrize("variant", X86_VARIANTS)
@pytest.mark.parametrize("head_dim", [64, 128, 96, 40])
@pytest.mark.parametrize("gqa,n_kv", [(1, 16), (1, 5), (3, 3), (4, 2), (4, 1), (8, 3)])
@pytest.mark.parametrize("last,window", [(0, 0), (6, 0), (37, 0), (300, 0), (250, 100), (13, 8)])
def test_attention_over_several_kv_heads_is_bit_identical_to_single_queries(variant, head_dim, gqa, n_kv, last,
                                                                           window):
    """attn_heads (one token, n_kv consecutive kv heads in one pass over the
    cache rows, as the forward pass hands a thread its share of a decode
    step) gives every query exactly its one-query attn_head result, for
    head sizes the pass takes and those it hands back to attn_head (40), MHA
    and GQA, windows; queries of other kv heads are left alone."""
    k = table(variant)
    assert k.attn_heads != kffi.NULL
    rng = np.random.default_rng(head_dim * 31 + gqa * 7 + n_kv * 1000 + last)
    n_ctx, n_kv_all, hk = 512 + 8, n_kv + 2, 1                 # kv heads hk .. hk+n_kv-1 of n_kv_all
    stride = head_dim * n_kv_all
    cache_k = rng.standard_normal((n_ctx, stride)).astype(np.float16)
    cache_v = rng.standard_normal((n_ctx, stride)).astype(np.float16)
    cache_v[last % 5::7, :3] = 0
    qd = head_dim * gqa * n_kv_all
    q = (rng.standard_normal(qd) * 3).astype(np.float32)
    q[hk * gqa * head_dim:(hk * gqa + 1) * head_dim] *= 8      # peaked: probabilities that round to 0
    scale = 1.0 / np.sqrt(head_dim)
    nq = n_kv * gqa
    got = np.full(qd, np.nan, np.float32)
    a, keep = _attn_args(k, cache_k, cache_v, head_dim, stride, hk * head_dim, n_ctx, nq, scale, 0)
    keep[0][:] = 0.25                     # scores scratch as a previous call leaves it, not zeros
    keep.append(np.zeros(nq * (32 * head_dim + 16), np.float32))   # kernels.h: PYRT_ATTN_HEADS_ACC
    a.acc = kptr(keep[-1], "float *")
    a.q = kptr(q, "float *") + hk * gqa * head_dim
    a.out = kptr(got, "float *") + hk * gqa * head_dim
    a.n_tok, a.n_head, a.n_kv, a.q_stride, a.window, a.first, a.last = 1, gqa, n_kv, qd, window, 0, last
    k.attn_heads(a)
    first = max(0, last - window + 1) if window else 0
    for h in range(hk, hk + n_kv):
        for g in range(gqa):
            qh = h * gqa + g
            want = np.zeros(head_dim, np.float32)
            b, keep1 = _attn_args(k, cache_k, cache_v, head_dim, stride, h * head_dim, n_ctx, 1, scale, 0)
            b.q = kptr(q, "float *") + qh * head_dim
            b.out = kptr(want, "float *")
            b.first, b.last = first, last
            k.attn_head(b)
            assert np.array_equal(got[qh * head_dim:(qh + 1) * head_dim].view(np.uint32), want.view(np.uint32)), (h, g)
    untouched = np.ones(qd, bool)
    untouched[hk * gqa * head_dim:(hk + n_kv) * gqa * head_dim] = False
    assert np.all(np.isnan(got[untouched]))
