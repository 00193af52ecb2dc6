"""Attention over a quantized KV cache (kernels.h attn_head_fa) for groups of queries, and the
exp functions of x86/ops_avx2.c.

- Every query of a group call (n_tok tokens x n_head query heads sharing a kv head, sliding
  windows, softcap, extreme scores) gets exactly the scalar kernel's one-query result with the
  same K dot, on every kernel table: the AVX2 kernel takes up to 8 queries at once (each K/V
  row read once for all of them), with the online softmax in lanes.
- tests/c/exp_exhaustive.c: exp8 (softmax/attention's exp) against its previous version over
  all 2^32 inputs, and expf8 (the flash-attention expf) against libm's expf over every x <= -0
  and every NaN.
"""
from __future__ import annotations

import platform
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from kernel_table import AVX2, AVX512, HAVE_AVX2, HAVE_AVX512, SCALAR, attn_fa_call as _call, kffi, kptr, needs_avx2, table
from pyrt._native import LIB_PATH

ROOT = Path(__file__).resolve().parent.parent
F16, Q4_0, Q8_0 = 1, 2, 8
TABLES = [pytest.param(SCALAR, id="scalar"),
          pytest.param(AVX2, id="avx2", marks=needs_avx2),
          pytest.param(AVX512, id="avx512", marks=pytest.mark.skipif(not HAVE_AVX512, reason="no AVX-512"))]


def _rows(k, t: int, x: np.ndarray) -> np.ndarray:
    """rows of x (f32 [n, hd]) as the cache stores them in type t"""
    if t == F16:
        return x.astype(np.float16).view(np.uint8).reshape(x.shape[0], -1)
    nb = 34 if t == Q8_0 else 18
    out = np.zeros((x.shape[0], x.shape[1] // 32 * nb), np.uint8)
    fn = k.type[t].quantize_row if k.type[t].quantize_row != kffi.NULL else k.type[t].quantize_act
    for i in range(x.shape[0]):
        row = np.ascontiguousarray(x[i])
        fn(kptr(row, "float *"), kptr(out[i], "void *"), x.shape[1])
    return out


def _check_group(variant, tk, tv, hd, n_tok, n_head, first, last, window, softcap, kscale=2.0, seed=0):
    k = table(variant)
    # an F16 K is read by ggml_vec_dot_f16's order on x86 (not the scalar table's F16 dot):
    # there each query is checked against its own table's one-query call
    ref = table(SCALAR if tk != F16 else variant)
    rng = np.random.default_rng(seed)
    n = last + n_tok + 1
    Kf = (rng.standard_normal((n, hd)) * kscale).astype(np.float32)
    Vf = rng.standard_normal((n, hd)).astype(np.float32)
    Kq, Vq = _rows(k, tk, Kf), _rows(k, tv, Vf)
    nt, nh = max(n_tok, 1), max(n_head, 1)
    q_stride = nh * hd + 16                       # tokens further apart than the heads
    q = (rng.standard_normal(nt * q_stride) * 3).astype(np.float32)
    got = np.full(nt * q_stride, np.nan, np.float32)
    _call(k, k, tk, tv, Kq, Vq, q, got, hd, first, last, 0.09, softcap, n_tok, n_head, q_stride, window)
    for t in range(nt):
        lt = last + t
        ft = max(first, lt - window + 1) if window > 0 else first
        for g in range(nh):
            off = t * q_stride + g * hd
            qi = np.ascontiguousarray(q[off:off + hd])
            want = np.full(hd, np.nan, np.float32)
            _call(ref, k, tk, tv, Kq, Vq, qi, want, hd, ft, lt, 0.09, softcap)
            assert np.array_equal(got[off:off + hd].view(np.uint32), want.view(np.uint32)), (t, g)


@pytest.mark.parametrize("variant", TABLES)
@pytest.mark.parametrize("tk,tv", [(Q8_0, Q8_0), (Q4_0, Q4_0), (Q8_0, Q4_0), (Q4_0, Q8_0), (Q8_0, F16), (F16, Q4_0)])
@pytest.mark.parametrize("n_tok,n_head", [(0, 0), (1, 3), (6, 3), (16, 1), (3, 5), (2, 9)])
def test_group_is_each_query_alone(variant, tk, tv, n_tok, n_head):
    _check_group(variant, tk, tv, 64, n_tok, n_head, 0, 150, 0, 0.0, seed=n_tok * 7 + n_head + tk + tv)


@pytest.mark.parametrize("variant", TABLES)
@pytest.mark.parametrize("hd,first,last,window,softcap", [
    (128, 0, 0, 0, 0.0), (128, 5, 40, 0, 50.0), (32, 0, 300, 17, 0.0), (256, 3, 90, 40, 30.0), (96, 10, 10, 1, 0.0)])
def test_group_windows_softcap_head_dims(variant, hd, first, last, window, softcap):
    _check_group(variant, Q8_0, Q8_0, hd, 9, 2, first, last, window, softcap, seed=hd + last)
    _check_group(variant, Q4_0, Q4_0, hd, 4, 1, first, last, window, softcap, seed=hd + last + 1)


@pytest.mark.parametrize("variant", TABLES)
@pytest.mark.parametrize("kscale", [300.0, 3e4])
def test_group_extreme_scores(variant, kscale):
    """scores far apart: most probabilities underflow (expf of very negative values, 0 and
    denormal results), new maxima late in the row rescale to zero"""
    _check_group(variant, Q8_0, Q8_0, 64, 5, 3, 0, 200, 0, 0.0, kscale=kscale, seed=3)
    _check_group(variant, Q4_0, Q8_0, 64, 5, 3, 0, 200, 0, 0.0, kscale=kscale, seed=4)


def test_group_nan_query():
    """a NaN in q: every table gives each query its one-query result (NaN rows stay NaN)"""
    for variant in [SCALAR] + ([AVX2] if HAVE_AVX2 else []):
        k, ref = table(variant), table(SCALAR)
        rng = np.random.default_rng(9)
        hd, n = 64, 40
        Kq = _rows(k, Q8_0, rng.standard_normal((n + 4, hd)).astype(np.float32))
        Vq = _rows(k, Q8_0, rng.standard_normal((n + 4, hd)).astype(np.float32))
        q = rng.standard_normal(4 * hd).astype(np.float32)
        q[hd + 5] = np.nan
        got = np.zeros(4 * hd, np.float32)
        _call(k, k, Q8_0, Q8_0, Kq, Vq, q, got, hd, 0, n, 0.125, 0.0, 2, 2, 2 * hd, 0)
        for t in range(2):
            for g in range(2):
                off = t * 2 * hd + g * hd
                want = np.zeros(hd, np.float32)
                _call(ref, k, Q8_0, Q8_0, Kq, Vq, np.ascontiguousarray(q[off:off + hd]), want, hd, 0, n + t, 0.125)
                assert np.array_equal(got[off:off + hd].view(np.uint32), want.view(np.uint32)), (t, g)


def test_libm_fallback_gives_the_same_results():
    """with expf8 refused (as if libm's expf differed), the kernels call expf per lane: the
    group tests above pass the same way"""
    import os
    import sys
    env = dict(os.environ, PYRT_TEST_LIBM_EXPF="1")
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", __file__,
                        "-k", "group_is_each or extreme or windows"],
                       cwd=str(ROOT), env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]


@pytest.fixture(scope="module")
def exp_checker(tmp_path_factory):
    if platform.machine() not in ("x86_64", "AMD64") or not HAVE_AVX2:
        pytest.skip("x86-64 with AVX2 only")
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler")
    exe = tmp_path_factory.mktemp("exp") / "exp_exhaustive"
    lib = Path(LIB_PATH)
    subprocess.run([cc, "-O3", "-mavx2", "-mfma", "-mf16c", "-ffp-contract=fast", "-fno-math-errno",
                    f"-I{ROOT / 'csrc'}", f"-I{ROOT / 'csrc' / 'x86'}", str(ROOT / "tests" / "c" / "exp_exhaustive.c"),
                    "-o", str(exe), str(lib), f"-Wl,-rpath,{lib.parent}", "-lm"], check=True)
    return exe


@pytest.mark.parametrize("what", ["exp8", "expf8"])
def test_exp_exhaustive(exp_checker, what):
    r = subprocess.run([str(exp_checker), what], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"{what} ok" in r.stdout
    if what == "expf8":
        assert "the runtime check said 1" in r.stdout   # the kernels use it on this libm
