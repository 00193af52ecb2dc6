"""Which ggml type each tensor gets: llama.cpp's quantization mixes.

Per-tensor types follow llama.cpp's llama-quantize (src/llama-quant.cpp, as vendored in
llama-cpp-python 0.3.36: llama_tensor_get_type, tensor_type_fallback), restricted to the targets
pyrt offers:
  - only tensors with >= 2 dims whose name ends in "weight" are converted, minus a few that
    llama.cpp never quantizes (norms, MoE router, positional embeddings, ...); the rest
    (1-D norms etc.) are copied byte for byte;
  - the output tensor -- output.weight, or token_embd.weight when there is no output.weight
    (tied embeddings) -- gets Q6_K unless the target is Q8_0, or Q8_0 when its row length is not
    a multiple of the target's block size (or the architecture is falcon);
  - the K and IQ4 mixes raise some tensors, counting tensors in llama.cpp's order (by layer,
    then by name): e.g. in q4_k_m/q5_k_m attn_v (and fused qkv) of the "more bits" layers -- the
    first and last eighth, and every third in between -- get Q6_K, and so do those layers'
    ffn_down; q2_k/q3_k_*/q4_k_s/iq4_* have their own attn_v (by GQA ratio or position),
    ffn_down and attn_output rules (falcon and 8-expert MoE models too, mirrored);
  - a row length that does not fit the chosen type falls back as llama.cpp does: Q4_K -> Q5_0,
    Q5_K -> Q5_1, Q6_K -> Q8_0, Q2_K/Q3_K -> Q4_0, IQ4_XS -> IQ4_NL, and a 32-block type that
    does not fit either -> F16 (SmolLM2's 576-wide rows make its q4_k_m mostly Q5_0);
  - f16 target: every convertible tensor becomes F16 (no special output rule);
  - a tensor already of its target type is copied unchanged (no requantization round trip).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import gguf
from gguf import GGMLQuantizationType as QT

from .kquants import QK_K

__all__ = ["QTYPES", "MixContext", "allows_quantization", "choose_tensor_type", "mix_context"]

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
    "q2_k":   (QT.Q2_K, 10),   # LLAMA_FTYPE_MOSTLY_Q2_K
    "q3_k_s": (QT.Q3_K, 11),   # LLAMA_FTYPE_MOSTLY_Q3_K_S
    "q3_k_m": (QT.Q3_K, 12),   # LLAMA_FTYPE_MOSTLY_Q3_K_M
    "q3_k":   (QT.Q3_K, 12),   # llama-quantize's alias for Q3_K_M
    "q3_k_l": (QT.Q3_K, 13),   # LLAMA_FTYPE_MOSTLY_Q3_K_L
    "q4_k_s": (QT.Q4_K, 14),   # LLAMA_FTYPE_MOSTLY_Q4_K_S
    "q5_k_s": (QT.Q5_K, 16),   # LLAMA_FTYPE_MOSTLY_Q5_K_S
    "iq4_nl": (QT.IQ4_NL, 25), # LLAMA_FTYPE_MOSTLY_IQ4_NL
    "iq4_xs": (QT.IQ4_XS, 30), # LLAMA_FTYPE_MOSTLY_IQ4_XS
}
# llama_ftype values the mixture rules test
_FT_Q2_K, _FT_Q3_K_S, _FT_Q3_K_M, _FT_Q3_K_L = 10, 11, 12, 13
_FT_Q4_K_S, _FT_Q4_K_M, _FT_Q5_K_M = 14, 15, 17
_FT_IQ4_NL, _FT_IQ4_XS = 25, 30
_FT_IQ4 = (_FT_IQ4_NL, _FT_IQ4_XS)
# llama.cpp's tensor_type_fallback for the 256-block types
_K_FALLBACK = {QT.Q4_K: QT.Q5_0, QT.Q5_K: QT.Q5_1, QT.Q6_K: QT.Q8_0, QT.Q2_K: QT.Q4_0, QT.Q3_K: QT.Q4_0,
               QT.IQ4_XS: QT.IQ4_NL}

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


def _block_size(t: QT) -> int:
    return gguf.GGML_QUANT_SIZES[t][0]


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
    n_gqa: int = 0                # n_head / n_head_kv of layer 0 (0 when n_head_kv is 0)
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
    """llama_tensor_get_type_impl for the ftypes pyrt writes, without an importance matrix (the
    IQ1/IQ2/IQ3, Q2_K_S and MXFP4 branches of llama.cpp are not reachable from here). Updates
    ctx's counters like llama.cpp's."""
    cat = _category(name)
    if cat == "output" or (not has_output and cat == "token_embd"):
        if ctx.arch == "falcon" or ne0 % _block_size(new) != 0:
            return QT.Q8_0
        return new if new == QT.Q8_0 else QT.Q6_K
    falcon = ctx.arch == "falcon"
    if cat == "attn_v":
        if ftype == _FT_Q2_K:
            new = QT.Q4_K if ctx.n_gqa >= 4 else QT.Q3_K
        elif ftype == _FT_Q3_K_M:
            new = QT.Q5_K if ctx.i_attention_wv < 2 else QT.Q4_K
        elif ftype == _FT_Q3_K_L:
            new = QT.Q5_K
        elif ftype in _FT_IQ4 and ctx.n_gqa >= 4:
            new = QT.Q5_K
        elif ftype in (_FT_Q4_K_M, _FT_Q5_K_M) and _use_more_bits(ctx.i_attention_wv, ctx.n_attention_wv):
            new = QT.Q6_K
        elif ftype == _FT_Q4_K_S and ctx.i_attention_wv < 4:
            new = QT.Q5_K
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
        n_layer = ctx.n_layer
        if ftype == _FT_Q2_K:
            new = QT.Q3_K
        elif ftype == _FT_Q3_K_M:
            new = QT.Q5_K if i_layer < n_layer // 16 else \
                QT.Q4_K if not falcon or _use_more_bits(i_layer, n_layer) else QT.Q3_K
        elif ftype == _FT_Q3_K_L:
            new = QT.Q4_K if falcon else QT.Q5_K
        elif ftype == _FT_Q4_K_M:
            if falcon:
                new = QT.Q6_K if i_layer < n_layer // 16 else \
                    QT.Q5_K if _use_more_bits(i_layer, n_layer) else QT.Q4_K
            elif _use_more_bits(i_layer, n_layer):
                new = QT.Q6_K
        elif i_layer < n_layer // 8 and ftype in _FT_IQ4:          # (no imatrix)
            new = QT.Q5_K
        elif ftype == _FT_Q5_K_M and _use_more_bits(i_layer, n_layer):
            new = QT.Q6_K
        elif ftype == _FT_Q4_K_S and not falcon and i_layer < n_layer // 8:
            new = QT.Q5_K
        ctx.i_ffn_down += 1
    elif cat == "attn_output":
        if not falcon:
            if ctx.n_expert == 8:
                if ftype in (_FT_Q2_K, _FT_Q3_K_S, _FT_Q3_K_M, _FT_IQ4_NL, _FT_Q4_K_S, _FT_Q4_K_M, _FT_IQ4_XS):
                    new = QT.Q5_K
            elif ftype == _FT_Q2_K:
                new = QT.Q3_K
            elif ftype == _FT_Q3_K_M:
                new = QT.Q4_K
            elif ftype == _FT_Q3_K_L:
                new = QT.Q5_K
        elif ftype == _FT_Q3_K_L:
            new = QT.Q4_K
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


def mix_context(arch: str, metadata: Mapping[str, Any], tensor_names: Sequence[str]) -> MixContext:
    """The MixContext of a model: its architecture name, its GGUF metadata (GGUFFile.metadata)
    and its tensor names (the counters start at 0)."""
    def num(key: str, default: int = 0) -> int:
        v = metadata.get(key, default)
        if isinstance(v, list):   # per-layer arrays (e.g. head_count_kv): the first entry
            v = v[0] if v else default
        return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else default
    n_layer = num(f"{arch}.block_count")
    n_head = num(f"{arch}.attention.head_count")
    n_head_kv = num(f"{arch}.attention.head_count_kv", n_head)
    return MixContext(arch=arch, n_layer=n_layer, n_expert=num(f"{arch}.expert_count"),
                      is_70b=arch == "llama" and n_layer == 80 and n_head != n_head_kv,
                      n_gqa=n_head // n_head_kv if n_head_kv > 0 else 0,
                      n_attention_wv=sum(_category(n) == "attn_v" for n in tensor_names))
