"""numpy ports of ggml's K-quant reference quantizers, and `quantize_rows`.

quantize_row_q4_K_ref, quantize_row_q5_K_ref and quantize_row_q6_K_ref (ggml-quants.c, as
vendored in llama-cpp-python 0.3.36), operation for operation in float32 (ggml-base is built
without FMA contraction), so tensors come out byte-identical to llama-quantize's. The 32-element
types go through gguf.quants, which is byte-identical to ggml's quantize_row_*_ref.
"""
from __future__ import annotations

from typing import Callable, Dict

import numpy as np

import gguf
from gguf import GGMLQuantizationType as QT
from gguf import quants

__all__ = ["QK_K", "quantize_rows"]

QK_K = 256   # weights per K-quant super-block

# --------------------------------------------------------------------------------------------
# K-quant reference quantizers (ggml-quants.c: quantize_row_q{4,5,6}_K_ref without an importance
# matrix, i.e. what llama-quantize runs), vectorized over sub-blocks, every float32 operation in
# ggml's order: sums strictly left to right (np.cumsum), no fused multiply-adds (ggml-base is
# compiled without them), round-half-even through the magic-number trick.
# --------------------------------------------------------------------------------------------

F = np.float32


def _nearest_int(v):
    """ggml's nearest_int: round-half-even through the float adder and the 1.5 * 2^23 magic
    number, bit for bit (also for |v| >= 2^22, where it is no longer a rounding)."""
    val = (np.asarray(v, F) + F(12582912.0)).astype(F)
    i = val.view(np.int32)
    return (i & 0x007FFFFF) - 0x00400000


def _seqsum(a):
    """sum along the last axis, strictly left to right in float32"""
    return np.cumsum(a, axis=-1, dtype=F)[..., -1]


def _make_qkx2_quants(x, w, nmax, rmin, rdelta, nstep):
    """x, w: [m, n] float32 -> (L uint8 [m,n], scale [m], the_min [m])"""
    m, n = x.shape
    mn = x.min(axis=1); mx = x.max(axis=1)
    sum_w = _seqsum(w); sum_x = _seqsum(w * x)
    mn = np.where(mn > 0, F(0), mn).astype(F)
    flat = mx == mn
    rng_ = (mx - mn).astype(F)
    with np.errstate(divide='ignore', invalid='ignore'):
        iscale = (F(nmax) / rng_).astype(F)
        scale = (F(1) / iscale).astype(F)
    xm = (x - mn[:, None]).astype(F)
    L = np.clip(_nearest_int(iscale[:, None] * xm), 0, nmax)
    Lf = L.astype(F)
    diff = ((scale[:, None] * Lf + mn[:, None]).astype(F) - x).astype(F)
    best = _seqsum(w * (diff * diff))
    cur_min = mn.copy()
    for is_ in range(nstep + 1):
        # the running min (replaced by each better fit) shifts the grid, as in ggml
        rng_ = (mx - cur_min).astype(F)
        xm = (x - cur_min[:, None]).astype(F)
        with np.errstate(divide='ignore', invalid='ignore'):
            isc = ((F(rmin) + F(rdelta) * F(is_) + F(nmax)) / rng_).astype(F)
        La = np.clip(_nearest_int(isc[:, None] * xm), 0, nmax)
        Laf = La.astype(F)
        wl = (w * Laf).astype(F)
        sum_l = _seqsum(wl); sum_l2 = _seqsum(wl * Laf); sum_xl = _seqsum(wl * x)
        D = (sum_w * sum_l2 - sum_l * sum_l).astype(F)
        ok = D > 0
        with np.errstate(divide='ignore', invalid='ignore'):
            ts = ((sum_w * sum_xl - sum_x * sum_l) / D).astype(F)
            tm = ((sum_l2 * sum_x - sum_l * sum_xl) / D).astype(F)
            pos = tm > 0
            tm = np.where(pos, F(0), tm).astype(F)
            ts = np.where(pos, (sum_xl / sum_l2).astype(F), ts).astype(F)
        d2 = ((ts[:, None] * Laf + tm[:, None]).astype(F) - x).astype(F)
        cur = _seqsum(w * (d2 * d2))
        better = ok & (cur < best)
        L = np.where(better[:, None], La, L)
        best = np.where(better, cur, best)
        scale = np.where(better, ts, scale)
        cur_min = np.where(better, tm, cur_min)
    L = np.where(flat[:, None], 0, L)
    scale = np.where(flat, F(0), scale).astype(F)
    return L.astype(np.uint8), scale, (-cur_min).astype(F)


def _q45_K(x, nmax, rmin, nstep):
    nb = x.shape[0]
    xs = x.reshape(nb * 8, 32)
    sum_x2 = _seqsum(xs * xs)
    av_x = np.sqrt((sum_x2 / F(32)).astype(F)).astype(F)
    w = (av_x[:, None] + np.abs(xs)).astype(F)
    L, scales, mins = _make_qkx2_quants(xs, w, nmax, rmin, 0.1, nstep)
    L = L.reshape(nb, 8, 32); scales = scales.reshape(nb, 8); mins = mins.reshape(nb, 8)
    # sequential running max with '>' starting from 0
    max_scale = np.zeros(nb, F); max_min = np.zeros(nb, F)
    for j in range(8):
        max_scale = np.where(scales[:, j] > max_scale, scales[:, j], max_scale)
        max_min = np.where(mins[:, j] > max_min, mins[:, j], max_min)
    with np.errstate(divide='ignore'):
        inv_scale = np.where(max_scale > 0, F(63) / max_scale, F(0)).astype(F)
        inv_min = np.where(max_min > 0, F(63) / max_min, F(0)).astype(F)
    ls = np.minimum(_nearest_int(inv_scale[:, None] * scales) & 0xFF, 63)
    lm = np.minimum(_nearest_int(inv_min[:, None] * mins) & 0xFF, 63)
    sc12 = np.zeros((nb, 12), np.int32)
    sc12[:, 0:4] = ls[:, 0:4]; sc12[:, 4:8] = lm[:, 0:4]
    sc12[:, 8:12] = (ls[:, 4:8] & 0xF) | ((lm[:, 4:8] & 0xF) << 4)
    sc12[:, 0:4] |= (ls[:, 4:8] >> 4) << 6
    sc12[:, 4:8] |= (lm[:, 4:8] >> 4) << 6
    d = (max_scale / F(63)).astype(np.float16)
    dmin = (max_min / F(63)).astype(np.float16)
    dF = d.astype(F); dminF = dmin.astype(F)
    dl = (dF[:, None] * ls.astype(F)).astype(F)
    ml = (dminF[:, None] * lm.astype(F)).astype(F)
    with np.errstate(divide='ignore', invalid='ignore'):
        q = np.clip(_nearest_int(((x.reshape(nb, 8, 32) + ml[:, :, None]).astype(F) / dl[:, :, None]).astype(F)), 0, nmax)
    L = np.where((dl != 0)[:, :, None], q, L)
    return d, dmin, sc12.astype(np.uint8), L.reshape(nb, QK_K)


def _quantize_q4_K(x: np.ndarray) -> np.ndarray:
    """quantize_row_q4_K_ref: f32 [nb*256] -> block_q4_K bytes [nb, 144]"""
    x = np.ascontiguousarray(x, F).reshape(-1, QK_K); nb = x.shape[0]
    d, dmin, sc, L = _q45_K(x, 15, -1.0, 20)
    L = L.reshape(nb, 4, 2, 32).astype(np.uint8)
    qs = (L[:, :, 0, :] | (L[:, :, 1, :] << 4)).reshape(nb, 128)
    return np.concatenate([d.view(np.uint8).reshape(nb, 2), dmin.view(np.uint8).reshape(nb, 2), sc, qs], axis=1)


def _quantize_q5_K(x: np.ndarray) -> np.ndarray:
    """quantize_row_q5_K_ref: f32 [nb*256] -> block_q5_K bytes [nb, 176]"""
    x = np.ascontiguousarray(x, F).reshape(-1, QK_K); nb = x.shape[0]
    d, dmin, sc, L = _q45_K(x, 31, -0.5, 15)
    L = L.reshape(nb, 4, 2, 32).astype(np.int32)
    hi = L >> 4; lo = L & 0xF
    qs = (lo[:, :, 0, :] | (lo[:, :, 1, :] << 4)).reshape(nb, 128).astype(np.uint8)
    qh = np.zeros((nb, 32), np.int32)
    for n in range(4):
        qh |= hi[:, n, 0, :] << (2 * n)
        qh |= hi[:, n, 1, :] << (2 * n + 1)
    return np.concatenate([d.view(np.uint8).reshape(nb, 2), dmin.view(np.uint8).reshape(nb, 2), sc, qh.astype(np.uint8), qs], axis=1)


def _make_qx_quants_rmse1(x, nmax):
    """make_qx_quants(n, nmax, x, L, rmse_type=1, qw=NULL): x [m, n] -> (L [m,n] 0..2nmax-1, scale [m])"""
    m, n = x.shape
    ax = np.abs(x)
    amax = np.zeros(m, F); mx = np.zeros(m, F)
    for i in range(n):
        upd = ax[:, i] > amax
        amax = np.where(upd, ax[:, i], amax); mx = np.where(upd, x[:, i], mx)
    zero = amax < F(1e-15)
    w = (x * x).astype(F)
    with np.errstate(divide='ignore', invalid='ignore'):
        iscale = (F(-nmax) / mx).astype(F)
    def run(isc):
        l = np.clip(_nearest_int(isc[:, None] * x), -nmax, nmax - 1)
        lf = l.astype(F)
        sumlx = _seqsum(((w * x).astype(F) * lf).astype(F))
        suml2 = _seqsum(((w * lf).astype(F) * lf).astype(F))
        return l, sumlx, suml2
    l, sumlx, suml2 = run(iscale)
    L = l + nmax
    with np.errstate(divide='ignore', invalid='ignore'):
        scale = np.where(suml2 != 0, (sumlx / suml2).astype(F), F(0)).astype(F)
    best = (scale * sumlx).astype(F)
    for is_ in range(-9, 10):
        if is_ == 0: continue
        with np.errstate(divide='ignore', invalid='ignore'):
            isc = (-(F(nmax) + F(0.1) * F(is_)) / mx).astype(F)
        l2, sumlx, suml2 = run(isc)
        upd = (suml2 > 0) & ((sumlx * sumlx).astype(F) > (best * suml2).astype(F))
        L = np.where(upd[:, None], l2 + nmax, L)
        with np.errstate(divide='ignore', invalid='ignore'):
            ns = (sumlx / suml2).astype(F)
        scale = np.where(upd, ns, scale); best = np.where(upd, (ns * sumlx).astype(F), best)
    L = np.where(zero[:, None], 0, L); scale = np.where(zero, F(0), scale)
    return L, scale.astype(F)


def _quantize_q6_K(x: np.ndarray) -> np.ndarray:
    """quantize_row_q6_K_ref: f32 [nb*256] -> block_q6_K bytes [nb, 210]"""
    x = np.ascontiguousarray(x, F).reshape(-1, QK_K); nb = x.shape[0]
    L, scales = _make_qx_quants_rmse1(x.reshape(nb * 16, 16), 32)
    L = L.reshape(nb, 16, 16); scales = scales.reshape(nb, 16)
    max_abs = np.zeros(nb, F); max_scale = np.zeros(nb, F)
    for ib in range(16):
        a = np.abs(scales[:, ib]); upd = a > max_abs
        max_abs = np.where(upd, a, max_abs); max_scale = np.where(upd, scales[:, ib], max_scale)
    zero = max_abs < F(1e-15)
    with np.errstate(divide='ignore', invalid='ignore'):
        iscale = (F(-128) / max_scale).astype(F)
        d = (F(1) / iscale).astype(np.float16)
    sc = np.minimum(127, _nearest_int(iscale[:, None] * scales))
    sc8 = sc.astype(np.int8)
    dl = (d.astype(F)[:, None] * sc8.astype(F)).astype(F)
    with np.errstate(divide='ignore', invalid='ignore'):
        q = np.clip(_nearest_int((x.reshape(nb, 16, 16) / dl[:, :, None]).astype(F)), -32, 31) + 32
    L = np.where((dl != 0)[:, :, None], q, L).reshape(nb, 2, 4, 32)
    ql = np.zeros((nb, 2, 64), np.int32); qh = np.zeros((nb, 2, 32), np.int32)
    ql[:, :, 0:32] = (L[:, :, 0] & 0xF) | ((L[:, :, 2] & 0xF) << 4)
    ql[:, :, 32:64] = (L[:, :, 1] & 0xF) | ((L[:, :, 3] & 0xF) << 4)
    qh[:] = (L[:, :, 0] >> 4) | ((L[:, :, 1] >> 4) << 2) | ((L[:, :, 2] >> 4) << 4) | ((L[:, :, 3] >> 4) << 6)
    out = np.concatenate([ql.reshape(nb, 128).astype(np.uint8), qh.reshape(nb, 64).astype(np.uint8),
                          sc8.view(np.uint8), d.view(np.uint8).reshape(nb, 2)], axis=1)
    out[zero] = 0
    return out


def _rows_to_blocks(fn: Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
    def run(rows: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            return fn(rows.reshape(-1)).reshape(rows.shape[0], -1)
    return run


_QUANTIZERS: Dict[QT, Callable[[np.ndarray], np.ndarray]] = {
    QT.Q4_K: _rows_to_blocks(_quantize_q4_K),
    QT.Q5_K: _rows_to_blocks(_quantize_q5_K),
    QT.Q6_K: _rows_to_blocks(_quantize_q6_K),
}


def quantize_rows(rows: np.ndarray, qtype: QT) -> np.ndarray:
    """f32 rows [n, ne0] -> the bytes ggml's reference quantizer writes for `qtype` [n, row bytes]
    (K-quants here, the 32-element types through gguf.quants, which match ggml exactly)."""
    rows = np.ascontiguousarray(rows, dtype=np.float32)
    if rows.ndim != 2 or rows.shape[1] % gguf.GGML_QUANT_SIZES[qtype][0] != 0:
        raise ValueError(f"rows of shape {rows.shape} cannot be quantized to {qtype.name}")
    fn = _QUANTIZERS.get(qtype)
    if fn is not None:
        return fn(rows)
    with np.errstate(over="ignore"):        # scales beyond fp16 become inf, as in ggml
        return quants.quantize(rows, qtype)
