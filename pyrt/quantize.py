"""`pyrt quantize IN.gguf OUT.gguf --type T`: requantize a GGUF model file.

Types: q8_0, q4_0, q4_1, q5_0, q5_1, f16, and the K-quant files q4_k_m (alias q4_k), q5_k_m
(alias q5_k) and q6_k.

Reads with gguf.GGUFReader (mmap), writes with gguf.GGUFWriter, one tensor at a time: the tensor
table is registered first (GGUFWriter.add_tensor_info), then each tensor's data is produced and
written (write_tensor_data) before the next one is read, so peak memory is about one tensor.

Per-tensor types follow llama.cpp's llama-quantize (src/llama-quant.cpp, as vendored in
llama-cpp-python 0.3.36: llama_tensor_get_type, tensor_type_fallback), restricted to the targets
pyrt offers:
  - only tensors with >= 2 dims whose name ends in "weight" are converted, minus a few that
    llama.cpp never quantizes (norms, MoE router, positional embeddings, ...); the rest
    (1-D norms etc.) are copied byte for byte;
  - the output tensor -- output.weight, or token_embd.weight when there is no output.weight
    (tied embeddings) -- gets Q6_K unless the target is Q8_0, or Q8_0 when its row length is not
    a multiple of the target's block size (or the architecture is falcon);
  - the K mixes raise some tensors, counting tensors in llama.cpp's order (by layer, then by
    name): attn_v (and fused qkv) of the "more bits" layers -- the first and last eighth, and
    every third in between -- get Q6_K, and so do those layers' ffn_down (falcon and 8-expert
    MoE models have their own rules, mirrored too);
  - a row length that does not fit the chosen type falls back as llama.cpp does: Q4_K -> Q5_0,
    Q5_K -> Q5_1, Q6_K -> Q8_0, and a 32-block type that does not fit either -> F16 (SmolLM2's
    576-wide rows make its q4_k_m mostly Q5_0);
  - f16 target: every convertible tensor becomes F16 (no special output rule);
  - a tensor already of its target type is copied unchanged (no requantization round trip).
Numerics: dequantize to f32 with gguf.quants, then quantize with ggml's reference quantizers:
gguf.quants for the 32-element types (byte-identical to ggml's quantize_row_*_ref), and numpy
ports of quantize_row_q4_K/q5_K/q6_K_ref below, operation for operation in float32 (ggml-base
is built without FMA contraction), so tensors come out byte-identical to llama-quantize's.
KV pairs are copied in order with their exact types (string arrays as raw bytes); split keys are
dropped, general.file_type and general.quantization_version are set as llama.cpp sets them.
Tensors keep the source file's order (llama-quantize sorts them by layer and name).
"""
from __future__ import annotations

import os
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

import gguf
from gguf import GGMLQuantizationType as QT
from gguf import GGUFValueType as VT
from gguf import quants

__all__ = [
    "QTYPES", "QUANTIZE_VERSION", "MixContext", "TensorPlan", "choose_tensor_type", "plan",
    "quantize_file", "quantize_rows", "cached_quantize", "main",
]

# Bump when the output of quantize_file for a given input could change (rules, numerics, KV
# handling): cached derived files (cached_quantize, the test fixtures) are keyed by it.
QUANTIZE_VERSION = 2

# target name -> (ggml type for ordinary weights, llama_ftype written to general.file_type)
QTYPES: Dict[str, Tuple[QT, int]] = {
    "q8_0":   (QT.Q8_0, 7),    # LLAMA_FTYPE_MOSTLY_Q8_0
    "q4_0":   (QT.Q4_0, 2),    # LLAMA_FTYPE_MOSTLY_Q4_0
    "q4_1":   (QT.Q4_1, 3),    # LLAMA_FTYPE_MOSTLY_Q4_1
    "q5_0":   (QT.Q5_0, 8),    # LLAMA_FTYPE_MOSTLY_Q5_0
    "q5_1":   (QT.Q5_1, 9),    # LLAMA_FTYPE_MOSTLY_Q5_1
    "q4_k_m": (QT.Q4_K, 15),   # LLAMA_FTYPE_MOSTLY_Q4_K_M
    "q4_k":   (QT.Q4_K, 15),   # llama-quantize's alias for Q4_K_M
    "q5_k_m": (QT.Q5_K, 17),   # LLAMA_FTYPE_MOSTLY_Q5_K_M
    "q5_k":   (QT.Q5_K, 17),   # llama-quantize's alias for Q5_K_M
    "q6_k":   (QT.Q6_K, 18),   # LLAMA_FTYPE_MOSTLY_Q6_K
    "f16":    (QT.F16, 1),     # LLAMA_FTYPE_MOSTLY_F16
}
_FTYPE_Q4_K_M, _FTYPE_Q5_K_M = 15, 17
# llama.cpp's tensor_type_fallback for the 256-block types
_K_FALLBACK = {QT.Q4_K: QT.Q5_0, QT.Q5_K: QT.Q5_1, QT.Q6_K: QT.Q8_0, QT.Q2_K: QT.Q4_0, QT.Q3_K: QT.Q4_0}
GGML_QNT_VERSION = 2
QK_K = 256

# tensor names llama.cpp never quantizes (substring match), from tensor_allows_quantization()
_NEVER_QUANTIZE = (
    "_norm.weight", "ffn_gate_inp.weight", "ffn_gate_tid2eid.weight", "altup", "laurel",
    "per_layer_model_proj", "ssm_conv1d", "shortconv.conv.weight", "indexer.k_proj.weight",
    "indexer.q_proj.weight", "time_mix_first.weight", "time_mix_w0.weight", "time_mix_w1.weight",
    "time_mix_w2.weight", "time_mix_v0.weight", "time_mix_v1.weight", "time_mix_v2.weight",
    "time_mix_a0.weight", "time_mix_a1.weight", "time_mix_a2.weight", "time_mix_g1.weight",
    "time_mix_g2.weight", "time_mix_decay_w1.weight", "time_mix_decay_w2.weight",
    "time_mix_lerp_fused.weight", "attn_rel_b.weight", ".position_embd", "sam.pos_embd",
    "sam.neck.", "sam.net_", ".rel_pos", ".patch_embd", ".patch_merger", "a.rvq.codebook",
    "mm.a.code_embd",
)
_NEVER_QUANTIZE_EXACT = ("position_embd.weight", "token_types.weight")
_TOKEN_EMBD = ("token_embd.weight", "per_layer_token_embd.weight")

_SPLIT_KEYS = ("split.no", "split.count", "split.tensors.count")


def _block_size(t: QT) -> int:
    return gguf.GGML_QUANT_SIZES[t][0]


def _row_bytes(t: QT, ne0: int) -> int:
    block, size = gguf.GGML_QUANT_SIZES[t]
    return ne0 // block * size


def _check_qtype(qtype: str) -> str:
    key = str(qtype).strip().lower()
    if key not in QTYPES:
        raise ValueError(f"unknown quantization type {qtype!r}; choose one of: {', '.join(QTYPES)}")
    return key


def allows_quantization(name: str, n_dims: int) -> bool:
    """llama.cpp's tensor_allows_quantization for the default parameters."""
    if n_dims < 2 or not name.endswith("weight"):
        return False
    if name in _NEVER_QUANTIZE_EXACT:
        return False
    return not any(s in name for s in _NEVER_QUANTIZE)


@dataclass
class MixContext:
    """What llama.cpp's mixture rules know about the model beyond one tensor: the architecture,
    layer and expert counts, and running counters over the tensors in its order (by layer, then
    by name). `plan` fills it; a bare choose_tensor_type call uses the defaults, under which the
    layer-dependent bumps of the K mixes do not apply."""
    arch: str = ""
    n_layer: int = 0
    n_expert: int = 0
    is_70b: bool = False          # llama.cpp's LLM_TYPE_70B (llama with 80 layers and GQA)
    n_attention_wv: int = 0
    i_attention_wv: int = 0
    i_ffn_down: int = 0


def _use_more_bits(i_layer: int, n_layers: int) -> bool:
    if n_layers <= 0:
        return False
    return i_layer < n_layers // 8 or i_layer >= 7 * n_layers // 8 or (i_layer - n_layers // 8) % 3 == 2


def _category(name: str) -> str:
    """llama.cpp's tensor_get_category (substring tests, in its order)."""
    if name == "output.weight":
        return "output"
    if name in _TOKEN_EMBD:
        return "token_embd"
    for key, cat in (("attn_qkv.weight", "attn_v"), ("attn_kv_b.weight", "attn_v"),
                     ("attn_v.weight", "attn_v"), ("attn_k.weight", "attn_k"),
                     ("attn_q.weight", "attn_q"), ("attn_output.weight", "attn_output"),
                     ("ffn_up", "ffn_up"), ("ffn_gate", "ffn_gate"), ("ffn_down", "ffn_down")):
        if key in name:
            return cat
    return "other"


def _layer_of(name: str) -> int:
    if name.startswith("blk."):
        head = name[4:].split(".", 1)[0]
        if head.isdigit():
            return int(head)
    return -1


def _mixture_type(name: str, ne0: int, new: QT, ftype: int, ctx: MixContext, has_output: bool) -> QT:
    """llama_tensor_get_type_impl for the ftypes pyrt writes (the IQ/Q2_K/Q3_K branches of
    llama.cpp are not reachable from here). Updates ctx's counters like llama.cpp's."""
    cat = _category(name)
    if cat == "output" or (not has_output and cat == "token_embd"):
        if ctx.arch == "falcon" or ne0 % _block_size(new) != 0:
            return QT.Q8_0
        return new if new == QT.Q8_0 else QT.Q6_K
    if cat == "attn_v":
        if ftype in (_FTYPE_Q4_K_M, _FTYPE_Q5_K_M) and _use_more_bits(ctx.i_attention_wv, ctx.n_attention_wv):
            new = QT.Q6_K
        if ctx.is_70b and new in (QT.Q3_K, QT.Q4_K):
            new = QT.Q5_K
        if ctx.n_expert == 8:
            new = QT.Q8_0
        ctx.i_attention_wv += 1
    elif cat == "attn_k":
        if ctx.n_expert == 8:
            new = QT.Q8_0
    elif cat == "ffn_down":
        i_layer = ctx.i_ffn_down if ctx.n_expert <= 1 else _layer_of(name)
        if ftype == _FTYPE_Q4_K_M:
            if ctx.arch == "falcon":
                new = QT.Q6_K if i_layer < ctx.n_layer // 16 else \
                    QT.Q5_K if _use_more_bits(i_layer, ctx.n_layer) else QT.Q4_K
            elif _use_more_bits(i_layer, ctx.n_layer):
                new = QT.Q6_K
        elif ftype == _FTYPE_Q5_K_M and _use_more_bits(i_layer, ctx.n_layer):
            new = QT.Q6_K
        ctx.i_ffn_down += 1
    elif cat == "attn_output":
        if ctx.arch != "falcon" and ctx.n_expert == 8 and ftype == _FTYPE_Q4_K_M:
            new = QT.Q5_K
    return new


def _fallback(new: QT, ne0: int) -> Tuple[QT, str]:
    """llama.cpp's tensor_type_fallback: a type whose block does not divide the row length."""
    if ne0 % _block_size(new) == 0:
        return new, ""
    want = new
    if _block_size(new) == QK_K:
        new = _K_FALLBACK[new]
    if ne0 % _block_size(new) != 0:
        new = QT.F16
    return new, f"{want.name} needs ne0 % {_block_size(want)} == 0 (ne0={ne0}): {new.name}, as llama.cpp"


def choose_tensor_type(name: str, ne: Sequence[int], src_type: QT, qtype: str, *,
                       has_output: bool, ctx: Optional[MixContext] = None) -> Tuple[QT, str]:
    """Type of tensor `name` (ggml dims `ne`, ne[0] = row length) in a `qtype` file, and a note
    ("" when nothing noteworthy happened). `has_output`: the model has its own output.weight
    (otherwise token_embd.weight doubles as the output projection). `ctx`: model facts and the
    running counters of the K mixes (see MixContext; `plan` passes the tensors in llama.cpp's
    order)."""
    default, ftype = QTYPES[_check_qtype(qtype)]
    if not allows_quantization(name, len(ne)):
        return src_type, ""
    if default == QT.F16:  # not a quantized type: llama.cpp applies no mixture rules
        return QT.F16, ""
    ne0 = int(ne[0])
    new = _mixture_type(name, ne0, default, ftype, ctx if ctx is not None else MixContext(), has_output)
    return _fallback(new, ne0)


@dataclass(frozen=True)
class TensorPlan:
    name: str
    ne: Tuple[int, ...]     # ggml order: ne[0] is the row length
    src_type: QT
    dst_type: QT
    note: str = ""

    @property
    def convert(self) -> bool:
        return self.src_type != self.dst_type


def _can_dequantize(t: QT) -> bool:
    block, size = gguf.GGML_QUANT_SIZES[t]
    try:
        quants.dequantize(np.zeros((1, size), dtype=np.uint8), t)
        return True
    except (NotImplementedError, ValueError, TypeError):
        return False


def _mix_context(reader: "gguf.GGUFReader") -> MixContext:
    def num(key: str, default: int = 0) -> int:
        f = reader.fields.get(key)
        try:
            v = f.contents() if f is not None else default
        except Exception:
            return default
        if isinstance(v, list):   # per-layer arrays (e.g. head_count_kv): the first entry
            v = v[0] if v else default
        return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else default
    arch_f = reader.fields.get("general.architecture")
    arch = bytes(arch_f.parts[-1]).decode("utf-8", "replace") if arch_f is not None else ""
    n_layer = num(f"{arch}.block_count")
    n_head = num(f"{arch}.attention.head_count")
    n_head_kv = num(f"{arch}.attention.head_count_kv", n_head)
    names = [t.name for t in reader.tensors]
    return MixContext(arch=arch, n_layer=n_layer, n_expert=num(f"{arch}.expert_count"),
                      is_70b=arch == "llama" and n_layer == 80 and n_head != n_head_kv,
                      n_attention_wv=sum(_category(n) == "attn_v" for n in names))


def _plan_reader(reader: "gguf.GGUFReader", qtype: str) -> List[TensorPlan]:
    names = [t.name for t in reader.tensors]
    has_output = "output.weight" in names
    ctx = _mix_context(reader)
    plans: Dict[int, TensorPlan] = {}
    # llama.cpp walks the tensors by layer, then name: its counters see them in that order
    for i in sorted(range(len(names)), key=lambda i: (_layer_of(names[i]), names[i])):
        t = reader.tensors[i]
        ne = tuple(int(x) for x in t.shape)
        dst, note = choose_tensor_type(t.name, ne, QT(t.tensor_type), qtype, has_output=has_output, ctx=ctx)
        plans[i] = TensorPlan(t.name, ne, QT(t.tensor_type), dst, note)
    out = [plans[i] for i in range(len(names))]
    bad = sorted({p.src_type.name for p in out if p.convert and not _can_dequantize(p.src_type)})
    if bad:
        which = [p.name for p in out if p.convert and p.src_type.name in bad]
        raise ValueError(f"cannot convert tensors of type {', '.join(bad)} (e.g. {which[0]!r}); "
                         f"pyrt quantize reads F32, F16, BF16 and the ggml block-quantized types")
    return out


def _open(src: Path) -> "gguf.GGUFReader":
    try:
        reader = gguf.GGUFReader(src, "r")
    except (ValueError, OSError, IndexError, KeyError) as e:
        raise ValueError(f"{src} is not a readable GGUF file: {e}") from e
    if reader.endianess != gguf.GGUFEndian.LITTLE:
        raise ValueError(f"{src} is a big-endian GGUF; pyrt only handles little-endian files")
    return reader


def plan(src: Union[str, os.PathLike], qtype: str) -> List[TensorPlan]:
    """The per-tensor types `quantize_file(src, ..., qtype)` would produce (reads only headers)."""
    return _plan_reader(_open(Path(src)), qtype)


class _Writer(gguf.GGUFWriter):
    """GGUFWriter that can also write empty arrays (it refuses them), since a faithful copy of
    the KV section must keep them."""

    def _pack_val(self, val: Any, vtype: VT, add_vtype: bool, sub_type: Optional[VT] = None) -> bytes:
        if vtype == VT.ARRAY and sub_type is not None and len(val) == 0:
            head = self._pack("I", vtype) if add_vtype else b""
            return head + self._pack("I", sub_type) + self._pack("Q", 0)
        return super()._pack_val(val, vtype, add_vtype, sub_type)


def _field_value(field: Any) -> Tuple[Any, VT, Optional[VT]]:
    """(value, type, array element type) of a GGUFReader field, exactly: strings as raw bytes
    (never decoded, so invalid UTF-8 survives), numbers as Python numbers of the same width."""
    vtype = VT(field.types[0])
    if vtype == VT.STRING:
        return bytes(field.parts[-1]), vtype, None
    if vtype == VT.ARRAY:
        # parts: key length, key bytes, value type, element type, count, elements...
        sub = VT(int(field.parts[3][0]))
        if sub == VT.ARRAY:
            raise ValueError(f"KV {field.name!r}: nested arrays are not supported")
        if sub == VT.STRING:
            return [bytes(field.parts[i]) for i in field.data], vtype, sub
        if not field.data:
            return [], vtype, sub
        vals = np.concatenate([field.parts[i] for i in field.data]).tolist()
        return vals, vtype, sub
    return field.parts[-1].tolist()[0], vtype, None


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
    if rows.ndim != 2 or rows.shape[1] % _block_size(qtype) != 0:
        raise ValueError(f"rows of shape {rows.shape} cannot be quantized to {qtype.name}")
    fn = _QUANTIZERS.get(qtype)
    if fn is not None:
        return fn(rows)
    with np.errstate(over="ignore"):        # scales beyond fp16 become inf, as in ggml
        return quants.quantize(rows, qtype)


def _convert(data: np.ndarray, p: TensorPlan, chunk_elems: int = 1 << 22) -> np.ndarray:
    """Dequantize to f32 and quantize to p.dst_type, a slab of rows at a time."""
    ne0 = p.ne[0]
    nrows = int(np.prod(p.ne[1:], dtype=np.int64)) if len(p.ne) > 1 else 1
    src_rows = data.reshape(nrows, -1)
    if p.dst_type == QT.F16:
        out = np.empty((nrows, ne0), dtype=np.float16)
    else:
        out = np.empty((nrows, _row_bytes(p.dst_type, ne0)), dtype=np.uint8)
    step = max(1, chunk_elems // max(ne0, 1))
    qfn = _QUANTIZERS.get(p.dst_type)
    for r in range(0, nrows, step):
        f32 = quants.dequantize(np.ascontiguousarray(src_rows[r:r + step]), p.src_type)
        f32 = f32.reshape(-1, ne0)
        out[r:r + step] = qfn(f32) if qfn is not None else quants.quantize(f32, p.dst_type)
    return out


ProgressArg = Union[None, bool, Callable[[int, int, str], None]]


def quantize_file(src: Union[str, os.PathLike], dst: Union[str, os.PathLike], qtype: str, *,
                  progress: ProgressArg = None) -> Dict[str, Any]:
    """Write `src` requantized to `qtype` at `dst` (atomically: temp file + rename).

    progress: None/False silent; True a bar on stderr; or a callable(done, total, tensor_name)
    called after each tensor. Returns a summary: per-type tensor counts in and out, tensors
    converted/copied, notes (fallbacks), tensor-data and file byte counts, seconds."""
    qtype = _check_qtype(qtype)
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise FileNotFoundError(f"no such GGUF file: {src}")
    if src.resolve() == dst.resolve() or (dst.exists() and os.path.samefile(src, dst)):
        raise ValueError(f"source and destination are the same file ({src}); write to a new path")
    if dst.is_dir():
        raise ValueError(f"destination {dst} is a directory; give a file name")
    t0 = time.monotonic()
    # validate with pyrt's own hostile-input checks first (gguf.GGUFReader
    # would happily plan from a malformed header)
    from .gguf_file import GGUFError, GGUFFile
    try:
        GGUFFile(src).close()
    except GGUFError as e:
        raise ValueError(f"{src} is not a readable GGUF: {e}") from None
    reader = _open(src)
    plans = _plan_reader(reader, qtype)
    _, ftype = QTYPES[qtype]

    arch_field = reader.fields.get("general.architecture")
    if arch_field is None:
        raise ValueError(f"{src} has no general.architecture; not a model GGUF")
    arch = bytes(arch_field.parts[-1]).decode("utf-8", errors="replace")

    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    writer = _Writer(tmp, arch)
    try:
        # ---- KV section: source order and types; file_type / quantization_version as llama.cpp
        kv: Dict[str, Tuple[Any, VT, Optional[VT]]] = {}
        for key, field in reader.fields.items():
            if key.startswith("GGUF.") or key in _SPLIT_KEYS:
                continue
            kv[key] = _field_value(field)
        kv["general.quantization_version"] = (GGML_QNT_VERSION, VT.UINT32, None)
        kv["general.file_type"] = (ftype, VT.UINT32, None)
        for key, (val, vtype, sub) in kv.items():
            if key == "general.architecture" and vtype == VT.STRING and val == arch.encode():
                continue  # the writer put it first already
            writer.add_key_value(key, val, vtype, sub_type=sub)
        align = reader.alignment if "general.alignment" in reader.fields else gguf.GGUF_DEFAULT_ALIGNMENT
        writer.data_alignment = int(align)

        # ---- tensor table first, then the data tensor by tensor
        sizes_out: List[int] = []
        for t, p in zip(reader.tensors, plans):
            nbytes = int(t.n_bytes) if not p.convert else \
                int(np.prod(p.ne[1:], dtype=np.int64)) * _row_bytes(p.dst_type, p.ne[0])
            sizes_out.append(nbytes)
            writer.add_tensor_info(p.name, tuple(reversed(p.ne)), np.dtype(np.float32), nbytes,
                                   raw_dtype=p.dst_type)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()

        from .registry import ProgressBar
        total_in = sum(int(t.n_bytes) for t in reader.tensors)
        bar = ProgressBar(f"quantizing {src.name} to {qtype}", total_in,
                          enabled=progress is True)
        for i, (t, p) in enumerate(zip(reader.tensors, plans)):
            data = _convert(t.data, p) if p.convert else t.data
            writer.write_tensor_data(data)
            del data
            bar.update(int(t.n_bytes))
            if callable(progress):
                progress(i + 1, len(plans), p.name)
        writer.flush()
        writer.close()
        os.replace(tmp, dst)
    except BaseException:
        writer.close()
        try:
            tmp.unlink()
        except OSError:
            pass
        raise
    seconds = time.monotonic() - t0
    bar.close()
    return {
        "src": str(src), "dst": str(dst), "qtype": qtype, "file_type": ftype,
        "n_tensors": len(plans),
        "types_in": dict(Counter(p.src_type.name for p in plans)),
        "types_out": dict(Counter(p.dst_type.name for p in plans)),
        "converted": sum(p.convert for p in plans),
        "copied": sum(not p.convert for p in plans),
        "notes": {p.name: p.note for p in plans if p.note},
        "bytes_in": total_in, "bytes_out": sum(sizes_out),
        "file_bytes_in": src.stat().st_size, "file_bytes_out": dst.stat().st_size,
        "seconds": round(seconds, 3),
    }


def _code_key() -> str:
    """Short digest of what determines quantize_file's output besides its input: this module's
    source, QUANTIZE_VERSION and the gguf package version (its quants do the numerics)."""
    import hashlib
    try:
        from importlib.metadata import version
        gguf_version = version("gguf")
    except Exception:  # pragma: no cover - metadata missing in odd installs
        gguf_version = "?"
    h = hashlib.sha256(Path(__file__).read_bytes())
    h.update(f"{QUANTIZE_VERSION}/{gguf_version}".encode())
    return h.hexdigest()[:8]


def cached_quantize(src: Union[str, os.PathLike], qtype: str, *, progress: ProgressArg = None) -> Path:
    """`src` quantized to `qtype`, made once and kept under <pyrt cache>/quantized/, keyed by the
    source's sha256, QUANTIZE_VERSION and a digest of this code (a changed quantizer never serves
    a stale file; the superseded file of the same source and type is deleted)."""
    from .registry import cache_root, sha256_file
    qtype = _check_qtype(qtype)
    src = Path(src)
    prefix = f"{src.stem}.{qtype}.{sha256_file(src)[:16]}"
    out_dir = cache_root() / "quantized"
    out = out_dir / f"{prefix}.v{QUANTIZE_VERSION}-{_code_key()}.gguf"
    if out.is_file():
        return out
    out_dir.mkdir(parents=True, exist_ok=True)
    quantize_file(src, out, qtype, progress=progress)
    for old in out_dir.glob(f"{prefix}.v*.gguf"):
        if old != out:
            try:
                old.unlink()
            except OSError:
                pass
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command line: `python -m pyrt.quantize IN OUT --type T` (pyrt.cli may delegate here)."""
    import argparse
    ap = argparse.ArgumentParser(prog="pyrt quantize", description="Requantize a GGUF model file.")
    ap.add_argument("src", help="input GGUF file")
    ap.add_argument("dst", help="output GGUF file")
    ap.add_argument("--type", "-t", dest="qtype", required=True, choices=list(QTYPES),
                    type=str.lower, help="target type")
    args = ap.parse_args(argv)
    try:
        s = quantize_file(args.src, args.dst, args.qtype, progress=True)
    except (ValueError, FileNotFoundError) as e:
        print(f"pyrt quantize: error: {e}", file=sys.stderr)
        return 2
    ins = ", ".join(f"{k} {v}" for k, v in sorted(s["types_in"].items()))
    outs = ", ".join(f"{k} {v}" for k, v in sorted(s["types_out"].items()))
    print(f"{s['dst']}: {s['n_tensors']} tensors [{ins}] -> [{outs}], "
          f"{s['file_bytes_in'] / 1e6:.1f} MB -> {s['file_bytes_out'] / 1e6:.1f} MB in {s['seconds']:.1f}s")
    for name, note in s["notes"].items():
        print(f"  {name}: {note}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
