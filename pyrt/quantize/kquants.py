"""numpy ports of ggml's K-quant and IQ4 reference quantizers, and `quantize_rows`.

quantize_row_q2_K_ref, quantize_row_q3_K_ref, quantize_row_q4_K_ref, quantize_row_q5_K_ref,
quantize_row_q6_K_ref, and quantize_iq4_nl / quantize_iq4_xs without an importance matrix (their
ntry = 7 search, which is what ggml_quantize_chunk and so llama-quantize run; ggml's
quantize_row_iq4_nl_ref would search with ntry = -1) (ggml-quants.c, as vendored in
llama-cpp-python 0.3.36), operation for operation in float32 (ggml-base is built
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


def _make_qkx2_quants(x, w, nmax, rmin, rdelta, nstep, use_mad=False):
    """make_qkx2_quants: x, w [m, n] float32 -> (L uint8 [m,n], scale [m], the_min [m]); the
    error is w * diff^2, or w * |diff| with use_mad (Q2_K)"""
    err = np.abs if use_mad else (lambda d: (d * d).astype(F))
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
    best = _seqsum(w * err(diff))
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
        cur = _seqsum(w * err(d2))
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


def _pack_2bit(L):
    """[nb, 256] values 0..3 -> qs [nb, 64]: byte j/4 + l of each 128-half holds L[j+l], L[j+l+32],
    L[j+l+64], L[j+l+96] in bits 0-1, 2-3, 4-5, 6-7"""
    nb = L.shape[0]
    L = L.reshape(nb, 2, 4, 32).astype(np.int32)
    qs = L[:, :, 0] | (L[:, :, 1] << 2) | (L[:, :, 2] << 4) | (L[:, :, 3] << 6)
    return qs.reshape(nb, 64).astype(np.uint8)


def _running_max(v):
    """ggml's `if (v[j] > m) m = v[j]` from m = 0 over the last axis"""
    m = np.zeros(v.shape[0], F)
    for j in range(v.shape[1]):
        m = np.where(v[:, j] > m, v[:, j], m)
    return m


def _quantize_q2_K(x: np.ndarray) -> np.ndarray:
    """quantize_row_q2_K_ref: f32 [nb*256] -> block_q2_K bytes [nb, 84]"""
    x = np.ascontiguousarray(x, F).reshape(-1, QK_K); nb = x.shape[0]
    xs = x.reshape(nb * 16, 16)
    L, scales, mins = _make_qkx2_quants(xs, np.abs(xs), 3, -0.5, 0.1, 15, use_mad=True)
    L = L.reshape(nb, 16, 16).astype(np.int32); scales = scales.reshape(nb, 16); mins = mins.reshape(nb, 16)
    max_scale = _running_max(scales); max_min = _running_max(mins)
    has_s = max_scale > 0; has_m = max_min > 0
    q4scale = F(15)
    iscale = np.where(has_s, q4scale / max_scale, F(0)).astype(F)
    sc = np.where(has_s[:, None], _nearest_int(iscale[:, None] * scales) & 0xFF, 0)
    d = np.where(has_s, (max_scale / q4scale).astype(F), F(0)).astype(np.float16)
    imin = np.where(has_m, q4scale / max_min, F(0)).astype(F)
    sc = np.where(has_m[:, None], (sc | (_nearest_int(imin[:, None] * mins) << 4)) & 0xFF, sc)
    dmin = np.where(has_m, (max_min / q4scale).astype(F), F(0)).astype(np.float16)
    dl = (d.astype(F)[:, None] * (sc & 0xF).astype(F)).astype(F)
    ml = (dmin.astype(F)[:, None] * (sc >> 4).astype(F)).astype(F)
    q = np.clip(_nearest_int(((x.reshape(nb, 16, 16) + ml[:, :, None]).astype(F) / dl[:, :, None]).astype(F)), 0, 3)
    L = np.where((dl != 0)[:, :, None], q, L).reshape(nb, QK_K)
    return np.concatenate([sc.astype(np.uint8), _pack_2bit(L), d.view(np.uint8).reshape(nb, 2),
                           dmin.view(np.uint8).reshape(nb, 2)], axis=1)


def _make_q3_quants_rmse(x, nmax):
    """make_q3_quants(n, nmax, x, L, do_rmse=true): x [m, n] -> (L [m, n] 0..2nmax-1, scale [m]).
    The greedy per-element refinement is sequential within a group, so it runs element by
    element over all groups at once (groups that made no change in a pass stop, as in ggml)."""
    m, n = x.shape
    xt = np.ascontiguousarray(x.T)                     # [n, m]: one element of every group
    amax = np.zeros(m, F); mx = np.zeros(m, F)
    for i in range(n):
        a = np.abs(xt[i]); upd = a > amax
        amax = np.where(upd, a, amax); mx = np.where(upd, xt[i], mx)
    zero = amax < F(1e-15)
    iscale = (F(-nmax) / mx).astype(F)
    l = np.clip(_nearest_int(iscale[None, :] * xt), -nmax, nmax - 1)      # [n, m]
    w = (xt * xt).astype(F)
    wx = (w * xt).astype(F)
    lf = l.astype(F)
    sumlx = np.cumsum((wx * lf).astype(F), axis=0, dtype=F)[-1]
    suml2 = np.cumsum(((w * lf).astype(F) * lf).astype(F), axis=0, dtype=F)[-1]
    active = ~zero
    for _ in range(5):
        changed = np.zeros(m, bool)
        for i in range(n):
            li = l[i]; Li = li.astype(F)
            slx = (sumlx - (wx[i] * Li).astype(F)).astype(F)
            sl2 = (suml2 - ((w[i] * Li).astype(F) * Li).astype(F)).astype(F)
            new_l = np.clip(_nearest_int(((xt[i] * sl2).astype(F) / slx).astype(F)), -nmax, nmax - 1)
            nl = new_l.astype(F)
            slx_n = (slx + (wx[i] * nl).astype(F)).astype(F)
            sl2_n = (sl2 + ((w[i] * nl).astype(F) * nl).astype(F)).astype(F)
            acc = active & (slx > 0) & (new_l != li) & (sl2_n > 0) & \
                (((slx_n * slx_n).astype(F) * suml2).astype(F) > ((sumlx * sumlx).astype(F) * sl2_n).astype(F))
            l[i] = np.where(acc, new_l, li)
            sumlx = np.where(acc, slx_n, sumlx); suml2 = np.where(acc, sl2_n, suml2)
            changed |= acc
        active &= changed
        if not active.any():
            break
    L = np.where(zero[None, :], 0, l + nmax).T
    scale = np.where(suml2 > 0, (sumlx / suml2).astype(F), F(0))
    return L, np.where(zero, F(0), scale).astype(F)


def _quantize_q3_K(x: np.ndarray) -> np.ndarray:
    """quantize_row_q3_K_ref: f32 [nb*256] -> block_q3_K bytes [nb, 110]"""
    x = np.ascontiguousarray(x, F).reshape(-1, QK_K); nb = x.shape[0]
    L, scales = _make_q3_quants_rmse(x.reshape(nb * 16, 16), 4)
    L = L.reshape(nb, 16, 16); scales = scales.reshape(nb, 16)
    amax = np.zeros(nb, F); max_scale = np.zeros(nb, F)
    for j in range(16):
        a = np.abs(scales[:, j]); upd = a > amax
        amax = np.where(upd, a, amax); max_scale = np.where(upd, scales[:, j], max_scale)
    nz = max_scale != 0
    iscale = np.where(nz, F(-32) / max_scale, F(0)).astype(F)
    l = _nearest_int(iscale[:, None] * scales) & 0xFF
    l = np.where(l >= 128, l - 256, l)                  # stored in an int8_t first
    l = np.clip(l, -32, 31) + 32
    l = np.where(nz[:, None], l, 0)
    sc = np.zeros((nb, 12), np.int32)
    sc[:, 0:8] = (l[:, 0:8] & 0xF) | ((l[:, 8:16] & 0xF) << 4)
    for j in range(16):
        sc[:, 8 + j % 4] |= (l[:, j] >> 4) << (2 * (j // 4))
    with np.errstate(divide='ignore'):
        d = np.where(nz, (F(1) / iscale).astype(F), F(0)).astype(np.float16)
    # the 6-bit scales as ggml reads them back (all -32 in a zero block, whose d is 0)
    sc_back = np.where(nz[:, None], l, 0) - 32
    dl = (d.astype(F)[:, None] * sc_back.astype(F)).astype(F)
    q = np.clip(_nearest_int((x.reshape(nb, 16, 16) / dl[:, :, None]).astype(F)), -4, 3) + 4
    L = np.where((dl != 0)[:, :, None], q, L).reshape(nb, QK_K)
    high = L > 3
    hb = high.reshape(nb, 8, 32).astype(np.int32)
    hmask = np.zeros((nb, 32), np.int32)
    for k in range(8):
        hmask |= hb[:, k] << k
    L = np.where(high, L - 4, L)
    return np.concatenate([hmask.astype(np.uint8), _pack_2bit(L), sc.astype(np.uint8),
                           d.view(np.uint8).reshape(nb, 2)], axis=1)


# kvalues_iq4nl (ggml-common.h): the IQ4_NL / IQ4_XS code book
_IQ4_VALUES = np.array([-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113], F)


def _iq4_tables():
    """Lookup tables equivalent to best_index_int8(16, kvalues_iq4nl, v), bit for bit.

    For v in [f, f + 1) (f an integer in [-128, 127]) ggml's search lands between the codes
    lo = values[mu - 1] and hi = values[mu] (mu = the first code above f, kept in [1, 15]) and
    picks lo iff float32(v - lo) < float32(hi - v). That test is monotone in v, so it holds
    exactly below one float32 threshold per bin, found here by bisection over the float32 values
    of the bin (+inf where it holds in the whole bin). Returns (thr [256], pick [512, 2]): the
    threshold of bin f + 128, and at 2 * (f + 128) + (v < thr) the code's (index, value)."""
    vals = _IQ4_VALUES

    def key(v):       # float32 -> int whose order is the floats' order
        b = int(np.float32(v).view(np.int32))
        return b if b >= 0 else -(b & 0x7FFFFFFF)

    def val(k):
        b = k if k >= 0 else ((-k) | 0x80000000)
        return np.uint32(b).view(np.float32)

    thr = np.empty(256, F); pick = np.empty((512, 2), F)
    for f in range(-128, 128):
        mu = min(max(int(np.searchsorted(vals, F(f), side='right')), 1), 15)
        lo, hi = vals[mu - 1], vals[mu]

        def below(v):
            return F(v - lo) < F(hi - v)
        k_lo, k_hi = key(F(f)), key(np.nextafter(F(f + 1), F(-np.inf)))
        if not below(val(k_lo)):
            t = F(f)
        elif below(val(k_hi)):
            t = F(np.inf)
        else:
            while k_hi - k_lo > 1:         # below(val(k_lo)) and not below(val(k_hi))
                mid = (k_lo + k_hi) // 2
                if below(val(mid)):
                    k_lo = mid
                else:
                    k_hi = mid
            t = val(k_hi)
        thr[f + 128] = t
        pick[2 * (f + 128)] = (mu, hi)
        pick[2 * (f + 128) + 1] = (mu - 1, lo)
    return thr, np.ascontiguousarray(pick[:, 0]).astype(np.intp), np.ascontiguousarray(pick[:, 1])


_IQ4_THR, _IQ4_PICK_INDEX, _IQ4_PICK_VALUE = _iq4_tables()


def _best_index_iq4(v, with_value=False):
    """best_index_int8(16, kvalues_iq4nl, v) elementwise (the nearest code, compared in float32
    as ggml does; NaN gives 15 and +-inf the end codes, as in ggml); with_value: the code's value
    instead of its index."""
    f = np.floor(v)
    np.fmin(f, F(127), out=f)               # NaN -> 127 (v < thr is false there: code 15)
    np.fmax(f, F(-128), out=f)
    k = f.astype(np.intp)
    k += 128
    sel = np.take(_IQ4_THR, k)
    np.less(v, sel, out=sel)                # 1.0 where v takes the lower code
    k *= 2
    k += sel.astype(np.intp)
    return np.take(_IQ4_PICK_VALUE if with_value else _IQ4_PICK_INDEX, k)


def _iq4_block_scales(xt, ntry=7):
    """quantize_row_iq4_nl_impl's per-block search without an importance matrix (weights x^2),
    ntry = 7 as quantize_iq4_nl / quantize_iq4_xs call it: xt [32, m] (block j in column j, so
    that the sums over a block, np.add.reduce over axis 0, run strictly in order) -> scale [m]"""
    m = xt.shape[1]
    w = (xt * xt).astype(F)
    amax = np.zeros(m, F); mx = np.zeros(m, F)
    for j in range(xt.shape[0]):
        a = np.abs(xt[j]); upd = a > amax
        amax = np.where(upd, a, amax); mx = np.where(upd, xt[j], mx)
    zero = amax < F(1e-15)

    def sums(idv):
        q = _best_index_iq4((idv[None, :] * xt).astype(F), with_value=True)
        wq = (w * q).astype(F)
        return np.add.reduce((wq * xt).astype(F), axis=0), np.add.reduce((wq * q).astype(F), axis=0)

    d = ((-mx) / _IQ4_VALUES[0]).astype(F)            # -max / values[0] (ntry > 0)
    sumqx, sumq2 = sums((F(1) / d).astype(F))
    d = np.where(sumq2 > 0, (sumqx / sumq2).astype(F), F(0)).astype(F)
    best = (d * sumqx).astype(F)
    for itry in range(-ntry, ntry + 1):
        sumqx, sumq2 = sums((F(itry + int(_IQ4_VALUES[0])) / mx).astype(F))
        upd = (sumq2 > 0) & ((sumqx * sumqx).astype(F) > (best * sumq2).astype(F))
        nd = (sumqx / sumq2).astype(F)
        d = np.where(upd, nd, d); best = np.where(upd, (nd * sumqx).astype(F), best)
    return np.where(zero, F(0), d).astype(F)


def _pack_4bit(L):
    """[nb, 32k] codes -> [nb, 16k]: byte 16i + j holds L[32i + j] | L[32i + 16 + j] << 4"""
    nb = L.shape[0]
    L = L.reshape(nb, -1, 2, 16).astype(np.int32)
    return (L[:, :, 0] | (L[:, :, 1] << 4)).reshape(nb, -1).astype(np.uint8)


def _quantize_iq4_nl(x: np.ndarray) -> np.ndarray:
    """quantize_iq4_nl without imatrix (what ggml_quantize_chunk, so llama-quantize, runs; ntry 7):
    f32 [nb*32] -> block_iq4_nl bytes [nb, 18]"""
    x = np.ascontiguousarray(x, F).reshape(-1, 32); nb = x.shape[0]
    s = _iq4_block_scales(np.ascontiguousarray(x.T))
    dh = s.astype(np.float16)
    idv = np.where(s != 0, (F(1) / s).astype(F), F(0)).astype(F)
    L = _best_index_iq4((idv[:, None] * x).astype(F))
    return np.concatenate([dh.view(np.uint8).reshape(nb, 2), _pack_4bit(L)], axis=1)


def _quantize_iq4_xs(x: np.ndarray) -> np.ndarray:
    """quantize_iq4_xs without imatrix (= quantize_row_iq4_xs_ref): f32 [nb*256] -> block_iq4_xs
    bytes [nb, 136]"""
    x = np.ascontiguousarray(x, F).reshape(-1, QK_K); nb = x.shape[0]
    s = _iq4_block_scales(np.ascontiguousarray(x.reshape(nb * 8, 32).T)).reshape(nb, 8)
    amax = np.zeros(nb, F); max_scale = np.zeros(nb, F)
    for ib in range(8):
        a = np.abs(s[:, ib]); upd = a > amax
        amax = np.where(upd, a, amax); max_scale = np.where(upd, s[:, ib], max_scale)
    d = ((-max_scale) / F(32)).astype(F)              # -0.0 for an all-zero block, as in ggml
    dh = d.astype(np.float16)
    idv = np.where(d != 0, (F(1) / d).astype(F), F(0)).astype(F)
    l = np.clip(_nearest_int(idv[:, None] * s), -32, 31)
    dl = (d[:, None] * l.astype(F)).astype(F)
    idl = np.where(dl != 0, (F(1) / dl).astype(F), F(0)).astype(F)
    L = _best_index_iq4((idl[:, :, None] * x.reshape(nb, 8, 32)).astype(F)).reshape(nb, QK_K)
    l = l + 32
    scales_l = ((l[:, 0::2] & 0xF) | ((l[:, 1::2] & 0xF) << 4)).astype(np.uint8)
    scales_h = np.zeros(nb, np.int64)
    for ib in range(8):
        scales_h |= (l[:, ib] >> 4).astype(np.int64) << (2 * ib)
    return np.concatenate([dh.view(np.uint8).reshape(nb, 2),
                           scales_h.astype('<u2').view(np.uint8).reshape(nb, 2), scales_l,
                           _pack_4bit(L)], axis=1)


# elements per call of a block quantizer: its float32 temporaries then stay in the CPU caches
# (the blocks are independent, so slabs of whole super-blocks give the same bytes)
_SLAB = 1 << 15


def _rows_to_blocks(fn: Callable[[np.ndarray], np.ndarray], slab: int = _SLAB) -> Callable[[np.ndarray], np.ndarray]:
    def run(rows: np.ndarray) -> np.ndarray:
        flat = rows.reshape(-1)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            if flat.size <= slab:
                return fn(flat).reshape(rows.shape[0], -1)
            return np.concatenate([fn(flat[i:i + slab]) for i in range(0, flat.size, slab)],
                                  axis=0).reshape(rows.shape[0], -1)
    return run


_QUANTIZERS: Dict[QT, Callable[[np.ndarray], np.ndarray]] = {
    QT.Q4_K: _rows_to_blocks(_quantize_q4_K),
    QT.Q5_K: _rows_to_blocks(_quantize_q5_K),
    QT.Q6_K: _rows_to_blocks(_quantize_q6_K),
    QT.Q2_K: _rows_to_blocks(_quantize_q2_K),
    QT.Q3_K: _rows_to_blocks(_quantize_q3_K, 1 << 18),   # many small steps: larger slabs
    QT.IQ4_NL: _rows_to_blocks(_quantize_iq4_nl),
    QT.IQ4_XS: _rows_to_blocks(_quantize_iq4_xs),
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
