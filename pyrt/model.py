"""Model: hyper-parameters and weights read from a validated GGUF file, bound
to a C model handle; Context: a KV cache + thread pool that evaluates tokens.

The weights stay in the file's mmap; C receives raw pointers only after every
tensor has been checked (type, shape against the hparams, byte range).
"""
from __future__ import annotations

import dataclasses
import math
import numbers
import os
import re
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from gguf import GGUFValueType

from ._native import UnsupportedError, check, ffi, lib
from .gguf_file import INT_TYPES, GGUFError, GGUFFile, type_name, value_type_name

# general.architecture -> (C arch id, rope type, features shown by `pyrt info`). Traits the C
# core reads are in csrc/core/arch.c; tensors any architecture may carry are listed in
# expected_tensors below.
ARCHS = {
    "llama":  (lib.PYRT_ARCH_LLAMA, lib.PYRT_ROPE_NORMAL,
               "Llama 1-3, Mistral, Mixtral MoE, SmolLM: rope_freqs (Llama 3 rope scaling), "
               "optional biases"),
    "gemma3": (lib.PYRT_ARCH_GEMMA3, lib.PYRT_ROPE_NEOX,
               "q/k norm, post norms, GeGLU, sliding-window layers, embedding scale"),
    "qwen2":  (lib.PYRT_ARCH_QWEN2, lib.PYRT_ROPE_NEOX, "q/k/v biases, neox rope, output bias"),
    "qwen3":  (lib.PYRT_ARCH_QWEN3, lib.PYRT_ROPE_NEOX, "per-head q/k RMSNorm, neox rope"),
    "gemma2": (lib.PYRT_ARCH_GEMMA2, lib.PYRT_ROPE_NEOX,
               "attention and final-logit soft-capping, alternating sliding-window layers, "
               "post norms, GeGLU, embedding scale"),
    "qwen3moe": (lib.PYRT_ARCH_QWEN3MOE, lib.PYRT_ROPE_NEOX,
                 "qwen3 with a mixture of experts (normalized top-k softmax routing)"),
    "phi3":   (lib.PYRT_ARCH_PHI3, lib.PYRT_ROPE_NEOX,
               "fused attn_qkv, fused gate+up in ffn_up, q scaled before attention, "
               "LongRoPE factors (long above the original context, else short)"),
}
SUPPORTED_ARCHS = {name: v[0] for name, v in ARCHS.items()}

# floats of decode_batch's logits buffer a Context keeps between steps (64 MiB)
_BATCH_OUT_KEEP = 16 << 20


@dataclass
class HParams:
    arch: str
    n_vocab: int
    n_embd: int
    n_layer: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_ff: int
    n_rot: int
    rope_type: int
    rope_freq_base: float
    rope_freq_scale: float
    norm_eps: float
    n_ctx_train: int
    rope_freq_base_swa: float = 0.0
    sliding_window: int = 0
    swa_period: int = 0
    attn_scale: float = 0.0
    embd_scale: float = 0.0
    attn_softcap: float = 0.0
    final_softcap: float = 0.0
    n_expert: int = 0
    n_expert_used: int = 0
    n_ff_exp: int = 0
    n_ctx_orig: int = 0             # rope.scaling.original_context_length (phi3 LongRoPE)
    rope_attn_factor: float = 1.0   # rope.scaling.attn_factor: cos/sin scale
    extra: dict = field(default_factory=dict)

    def to_c(self):
        hp = ffi.new("pyrt_hparams *")
        hp.arch = SUPPORTED_ARCHS[self.arch]
        for name in ("n_vocab", "n_embd", "n_layer", "n_head", "n_head_kv", "head_dim", "n_ff",
                     "n_rot", "rope_type", "rope_freq_base", "rope_freq_scale", "rope_freq_base_swa",
                     "norm_eps", "n_ctx_train", "sliding_window", "swa_period", "attn_scale",
                     "embd_scale", "attn_softcap", "final_softcap", "n_expert", "n_expert_used",
                     "n_ff_exp", "n_ctx_orig", "rope_attn_factor"):
            setattr(hp, name, getattr(self, name))
        return hp


_INT32_MAX = (1 << 31) - 1


def _int(g: GGUFFile, key: str, default: Any = None, lo: int = 1, hi: int = _INT32_MAX) -> int:
    v = g.get(key, default, (int,))
    if v is None:
        raise GGUFError(f"missing required metadata {key!r}")
    if not lo <= v <= hi:
        raise GGUFError(f"metadata {key!r} = {v} is outside [{lo}, {hi}]")
    return v


def _float(g: GGUFFile, key: str, default: float | None = None, lo: float = 0.0,
           hi: float = math.inf, lo_open: bool = True, hi_open: bool = False) -> float:
    v = g.get(key, default, (float, int))
    if v is None:
        raise GGUFError(f"missing required metadata {key!r}")
    v = float(v)
    if not math.isfinite(v) or v > hi or v < lo or (lo_open and v == lo) or (hi_open and v == hi):
        raise GGUFError(f"metadata {key!r} = {v} is outside {'(' if lo_open else '['}{lo}, "
                        f"{hi}{')' if hi_open else ']'}")
    return v


MAX_VOCAB = 1 << 22            # the C core's limit
_TOKEN_TYPE_MAX = 6            # llama.cpp's token types: UNDEFINED .. BYTE
_BYTE_TOKEN = re.compile(r"<0x[0-9A-Fa-f]{2}>")
_SPECIAL_ID_KEY = re.compile(r"tokenizer\.ggml\.\w+_token_id")


def _check_vocab(g: GGUFFile, n_vocab: int) -> None:
    """Vocabulary arrays of the element types llama.cpp requires, one entry per
    token, and special token ids inside the vocabulary: checked here so that the
    tokenizer is only ever built from well-formed data."""
    STR, ARR, BOOL = GGUFValueType.STRING, GGUFValueType.ARRAY, GGUFValueType.BOOL
    I32, F32 = GGUFValueType.INT32, GGUFValueType.FLOAT32

    def array(key: str, etypes, what: str, required: bool = False):
        if key not in g.metadata:
            if required:
                raise GGUFError(f"missing required metadata {key!r}")
            return None
        vt = g.metadata_types.get(key)
        et = g.array_types.get(key)
        if vt != ARR or et not in etypes:
            got = value_type_name(vt) if vt != ARR else f"ARRAY of {value_type_name(et)}"
            raise GGUFError(f"metadata {key!r} has type {got}, expected an array of {what}")
        return g.metadata[key]

    model = g.get("tokenizer.ggml.model", None, (str,))
    if model is None:
        raise GGUFError("missing required metadata 'tokenizer.ggml.model'")
    tokens = array("tokenizer.ggml.tokens", (STR,), "strings", required=True)
    if len(tokens) != n_vocab:
        raise GGUFError(f"tokenizer.ggml.tokens has {len(tokens)} entries but token_embd.weight "
                        f"has {n_vocab} rows")
    # duplicate token texts: the tokenizer rejects them (one pass over a 262k vocabulary, not two)
    types = array("tokenizer.ggml.token_type", (I32,), "INT32")
    if types is not None:
        if len(types) != n_vocab:
            raise GGUFError(f"tokenizer.ggml.token_type has {len(types)} entries for {n_vocab} tokens")
        tarr = np.asarray(types, dtype=np.int64)
        bad = np.flatnonzero((tarr < 0) | (tarr > _TOKEN_TYPE_MAX))
        if bad.size:
            i = int(bad[0])
            raise GGUFError(f"tokenizer.ggml.token_type[{i}] = {types[i]} is not a token type "
                            f"(0..{_TOKEN_TYPE_MAX})")
        for i in np.flatnonzero(tarr == _TOKEN_TYPE_MAX).tolist():   # BYTE tokens: "<0xAB>"
            if not _BYTE_TOKEN.fullmatch(tokens[i]):
                raise GGUFError(f"tokenizer.ggml.tokens[{i}] = {tokens[i]!r} has type BYTE but is "
                                f"not of the form <0xXX>")
    scores = array("tokenizer.ggml.scores", (F32, I32), "FLOAT32 (or INT32)")
    if scores is not None and len(scores) != n_vocab:
        raise GGUFError(f"tokenizer.ggml.scores has {len(scores)} entries for {n_vocab} tokens")
    array("tokenizer.ggml.merges", (STR,), "strings", required=model == "gpt2")
    for key, vt in g.metadata_types.items():
        if _SPECIAL_ID_KEY.fullmatch(key):
            v = g.metadata[key]
            if vt not in INT_TYPES:
                raise GGUFError(f"metadata {key!r} has type {value_type_name(vt)}, expected an integer")
            if not 0 <= v < n_vocab:
                raise GGUFError(f"metadata {key!r} = {v} is not a token id (vocabulary of {n_vocab})")
    for key in ("tokenizer.ggml.add_bos_token", "tokenizer.ggml.add_eos_token",
                "tokenizer.ggml.add_space_prefix"):
        if key in g.metadata_types and g.metadata_types[key] != BOOL:
            raise GGUFError(f"metadata {key!r} has type {value_type_name(g.metadata_types[key])}, "
                            f"expected BOOL")
    for key in ("tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.chat_template"):
        if key in g.metadata_types and g.metadata_types[key] != STR:
            raise GGUFError(f"metadata {key!r} has type {value_type_name(g.metadata_types[key])}, "
                            f"expected STRING")


def read_hparams(g: GGUFFile) -> HParams:
    """Hyper-parameters from GGUF metadata, each in a sane range and consistent with the
    token embedding and the vocabulary (tensor shapes are checked in Model._bind)."""
    arch = g.get("general.architecture", None, (str,))
    if arch is None:
        raise GGUFError("missing required metadata 'general.architecture'")
    if arch not in SUPPORTED_ARCHS:
        raise GGUFError(f"unsupported architecture {arch!r} (pyrt supports: "
                        f"{', '.join(sorted(SUPPORTED_ARCHS))})")
    a = arch
    n_embd = _int(g, f"{a}.embedding_length", hi=1 << 16)
    n_head = _int(g, f"{a}.attention.head_count", hi=1024)
    n_head_kv = _int(g, f"{a}.attention.head_count_kv", n_head, hi=n_head)
    if n_head % n_head_kv:
        raise GGUFError(f"{a}.attention.head_count_kv = {n_head_kv} does not divide head_count {n_head}")
    if f"{a}.attention.key_length" not in g.metadata and n_embd % n_head:
        raise GGUFError(f"{a}.embedding_length {n_embd} is not a multiple of head_count {n_head} "
                        f"and {a}.attention.key_length is missing")
    head_dim = _int(g, f"{a}.attention.key_length", n_embd // n_head, hi=1024)
    v_dim = _int(g, f"{a}.attention.value_length", head_dim, hi=1024)
    if v_dim != head_dim:
        raise GGUFError(f"{a}.attention.value_length {v_dim} != key_length {head_dim} is not supported")
    n_rot = _int(g, f"{a}.rope.dimension_count", head_dim, hi=head_dim)
    if n_rot % 2 or head_dim % 2:
        raise GGUFError(f"odd rope dimension ({a}.rope.dimension_count = {n_rot}) or head size "
                        f"({head_dim})")
    n_ff = g.get(f"{a}.feed_forward_length", None, (int, list))
    if isinstance(n_ff, list):  # per-layer list: only uniform values are supported
        if not n_ff or len(set(n_ff)) != 1:
            raise GGUFError(f"{a}.feed_forward_length varies per layer; not supported")
        n_ff = n_ff[0]
    if isinstance(n_ff, bool) or not isinstance(n_ff, int) or not 1 <= n_ff <= 1 << 20:
        raise GGUFError(f"metadata {a}.feed_forward_length = {n_ff!r} is invalid (expected an "
                        f"integer in [1, 2^20])")
    # rope scaling as llama.cpp reads it: the type defaults to linear, the factor (0: none) applies
    # to every type but "none"; longrope's per-pair factors are tensors (phi3, below)
    scale_type = g.get(f"{a}.rope.scaling.type", "linear", (str,))
    if scale_type not in ("none", "linear", "longrope"):
        raise GGUFError(f"unsupported {a}.rope.scaling.type {scale_type!r} (pyrt runs none, linear "
                        f"and longrope)")
    factor_key = (f"{a}.rope.scaling.factor" if f"{a}.rope.scaling.factor" in g.metadata
                  else f"{a}.rope.scale_linear")
    factor = _float(g, factor_key, 0.0, lo=0.0, hi=1e3, lo_open=False)
    if 0.0 < factor < 1e-3:
        raise GGUFError(f"metadata {factor_key!r} = {factor} is too small")
    freq_scale = 1.0 / factor if factor and scale_type != "none" else 1.0
    emb = g.tensors.get("token_embd.weight")
    if emb is None:
        raise GGUFError("missing tensor 'token_embd.weight'")
    if len(emb.shape) < 2 or any(d != 1 for d in emb.shape[2:]):
        raise GGUFError(f"token_embd.weight has shape {list(emb.shape)}, expected "
                        f"[{n_embd}, n_vocab]")
    if emb.shape[0] != n_embd:
        raise GGUFError(f"token_embd.weight rows have {emb.shape[0]} elements but "
                        f"{a}.embedding_length is {n_embd}")
    n_vocab = emb.shape[1]
    if n_vocab > MAX_VOCAB:
        raise GGUFError(f"token_embd.weight has {n_vocab} rows, more than the limit {MAX_VOCAB}")
    _check_vocab(g, n_vocab)

    hp = HParams(
        arch=arch, n_vocab=n_vocab, n_embd=n_embd,
        n_layer=_int(g, f"{a}.block_count", hi=1024),
        n_head=n_head, n_head_kv=n_head_kv, head_dim=head_dim, n_ff=n_ff, n_rot=n_rot,
        rope_type=ARCHS[arch][1],
        rope_freq_base=_float(g, f"{a}.rope.freq_base", 10000.0, hi=1e12),
        rope_freq_scale=freq_scale,
        norm_eps=_float(g, f"{a}.attention.layer_norm_rms_epsilon", 1e-5, hi=1.0, hi_open=True),
        n_ctx_train=_int(g, f"{a}.context_length", 2048, hi=1 << 24),
    )
    hp.n_ctx_orig = _int(g, f"{a}.rope.scaling.original_context_length", hp.n_ctx_train, hi=1 << 24)
    hp.rope_attn_factor = _float(g, f"{a}.rope.scaling.attn_factor", 1.0, hi=100.0)
    hp.n_expert = _int(g, f"{a}.expert_count", 0, lo=0, hi=512)
    if arch == "qwen3moe" and hp.n_expert == 0:
        raise GGUFError(f"{a}.expert_count is missing or 0")
    if hp.n_expert:
        if arch not in ("llama", "qwen3moe"):
            raise UnsupportedError(f"mixture of experts in a {arch!r} model is not supported by pyrt")
        hp.n_expert_used = _int(g, f"{a}.expert_used_count", None, hi=min(hp.n_expert, 64))
        hp.n_ff_exp = (_int(g, f"{a}.expert_feed_forward_length", hp.n_ff // hp.n_expert_used, hi=1 << 20)
                       if arch == "qwen3moe" else n_ff)
        if n_embd % 8:
            raise UnsupportedError(f"MoE with {a}.embedding_length {n_embd} (not a multiple of 8)")
        scale = g.get(f"{a}.expert_weights_scale", 0.0, (float, int))
        if scale not in (0, 1):
            raise UnsupportedError(f"{a}.expert_weights_scale = {scale} is not supported by pyrt")
        if g.get(f"{a}.expert_shared_count", 0, (int,)):
            raise UnsupportedError("shared experts are not supported by pyrt")
    if arch == "phi3":
        # LongRoPE files carry rope_factors_long/short (expected_tensors); llama.cpp ignores
        # phi3's sliding window (it disables Phi SWA), and so do we, for parity
        if ("rope_factors_long.weight" in g.tensors) != ("rope_factors_short.weight" in g.tensors):
            raise GGUFError("phi3: rope_factors_long.weight and rope_factors_short.weight come "
                            "as a pair; this file has only one")
    if arch == "gemma2":
        # as llama.cpp's llama_model_gemma2::load_arch_hparams and gemma2.cpp
        f32 = np.float32
        hp.sliding_window = _int(g, f"{a}.attention.sliding_window", 4096, lo=0, hi=1 << 24)
        hp.swa_period = _gemma3_swa_period(g, a, hp.n_layer, default=2) if hp.sliding_window else 0
        hp.rope_freq_base_swa = _float(g, f"{a}.rope.freq_base_swa", hp.rope_freq_base, hi=1e12)
        if hp.rope_freq_scale != 1.0 and hp.sliding_window:
            raise UnsupportedError("gemma2 with rope scaling: pyrt does not scale sliding-window layers")
        hp.attn_softcap = _float(g, f"{a}.attn_logit_softcapping", 50.0, lo=0.0, hi=1e6, lo_open=False)
        hp.final_softcap = _float(g, f"{a}.final_logit_softcapping", 30.0, lo=0.0, hi=1e6, lo_open=False)
        hp.embd_scale = float(np.sqrt(f32(n_embd)))
        scale_dim = n_embd // n_head if hp.n_layer == 46 else head_dim   # 27B: width per head
        hp.attn_scale = float(f32(1.0) / np.sqrt(f32(scale_dim)))
    if arch == "gemma3":
        # as llama.cpp's llama_model_gemma3::load_arch_hparams and gemma3.cpp
        f32 = np.float32
        hp.sliding_window = _int(g, f"{a}.attention.sliding_window", 0, lo=0, hi=1 << 24)
        if hp.sliding_window > 0:
            hp.swa_period = _gemma3_swa_period(g, a, hp.n_layer)
            hp.rope_freq_base_swa = _float(g, f"{a}.rope.freq_base_swa", 10000.0, hi=1e12)
        softcap = g.get(f"{a}.final_logit_softcapping", 0.0, (float, int))
        if softcap:
            raise UnsupportedError(f"{a}.final_logit_softcapping = {softcap}: final logit "
                                   f"soft-capping is not supported by pyrt")
        hp.embd_scale = float(np.sqrt(f32(n_embd)))
        # 27B (62 layers) scales by the model width per head, the others by the head size
        scale_dim = n_embd // n_head if hp.n_layer == 62 else head_dim
        hp.attn_scale = float(f32(1.0) / np.sqrt(f32(scale_dim)))
    return hp


def _gemma3_swa_period(g: GGUFFile, a: str, n_layer: int, default: int = 6) -> int:
    """Sliding-window layer pattern as a period P (every P-th layer is global, the rest use the
    window; llama.cpp's default P is 6, and P = 0 there means "every layer"): from
    {arch}.attention.sliding_window_pattern, an integer or a per-layer array of booleans."""
    key = f"{a}.attention.sliding_window_pattern"
    v = g.get(key, default, (int, list))
    if isinstance(v, bool):
        raise GGUFError(f"metadata {key!r} must be an integer or an array of booleans")
    if isinstance(v, int):
        if not 0 <= v <= 1 << 16:
            raise GGUFError(f"metadata {key!r} = {v} is out of range")
        return v if v > 0 else n_layer + 1       # 0: all layers windowed
    flags = [bool(x) for x in v]
    if len(flags) < n_layer:
        raise GGUFError(f"metadata {key!r} has {len(flags)} entries for {n_layer} layers")
    for period in range(1, n_layer + 2):
        if all(flags[il] == ((il + 1) % period != 0) for il in range(n_layer)):
            return period
    raise UnsupportedError(f"{key}: this per-layer sliding-window pattern is not periodic "
                           f"(every P-th layer global), which is all pyrt supports")


def expected_tensors(hp: HParams) -> dict[str, tuple[tuple[int, ...], bool]]:
    """GGUF tensor name -> (shape in ggml order, required) for this architecture,
    mirroring what csrc/core/model.c binds."""
    E, V, FF, HD = hp.n_embd, hp.n_vocab, hp.n_ff, hp.head_dim
    Q, KV = hp.n_head * HD, hp.n_head_kv * HD
    out: dict[str, tuple[tuple[int, ...], bool]] = {
        "token_embd.weight": ((E, V), True),
        "output_norm.weight": ((E,), True),
        "output.weight": ((E, V), False),        # absent: tied to token_embd
    }
    out["output.bias"] = ((V,), False)
    out["rope_freqs.weight"] = ((hp.n_rot // 2,), False)
    if hp.arch == "phi3":   # LongRoPE: long factors above the original context, else short
        out["rope_factors_long.weight"] = ((hp.n_rot // 2,), False)
        out["rope_factors_short.weight"] = ((hp.n_rot // 2,), False)
    fused_up = hp.arch == "phi3"
    per_layer = {
        "attn_norm.weight": ((E,), True), "attn_output.weight": ((Q, E), True),
        "ffn_norm.weight": ((E,), True), "ffn_up.weight": ((E, 2 * FF if fused_up else FF), True),
        "ffn_down.weight": ((FF, E), True),
        # q/k/v: separate (required unless the fused attn_qkv is there; check_tensors)
        "attn_q.weight": ((E, Q), False), "attn_k.weight": ((E, KV), False),
        "attn_v.weight": ((E, KV), False), "attn_qkv.weight": ((E, Q + 2 * KV), False),
        "attn_q.bias": ((Q,), False), "attn_k.bias": ((KV,), False), "attn_v.bias": ((KV,), False),
    }
    if not fused_up:
        per_layer["ffn_gate.weight"] = ((E, FF), True)
    if hp.n_expert:
        NE, FE = hp.n_expert, hp.n_ff_exp
        for k in ("ffn_gate.weight", "ffn_up.weight", "ffn_down.weight"):
            per_layer.pop(k, None)
        per_layer.update({"ffn_gate_inp.weight": ((E, NE), True),
                          "ffn_gate_exps.weight": ((E, FE, NE), True),
                          "ffn_up_exps.weight": ((E, FE, NE), True),
                          "ffn_down_exps.weight": ((FE, E, NE), True)})
    if hp.arch in ("gemma3", "qwen3", "qwen3moe"):
        per_layer.update({"attn_q_norm.weight": ((HD,), True), "attn_k_norm.weight": ((HD,), True)})
    if hp.arch in ("gemma3", "gemma2"):
        per_layer.update({"post_attention_norm.weight": ((E,), True),
                          "post_ffw_norm.weight": ((E,), True)})
    for il in range(hp.n_layer):
        for suffix, spec in per_layer.items():
            out[f"blk.{il}.{suffix}"] = spec
    return out


def _pad4(shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(shape) + (1,) * (4 - len(shape))


def check_tensors(g: GGUFFile, hp: HParams) -> None:
    """Every tensor is one the architecture uses, with the shape the hparams
    imply; every required tensor is present."""
    want = expected_tensors(hp)
    for name, t in g.tensors.items():
        spec = want.get(name)
        if spec is None:
            m = re.fullmatch(r"blk\.(\d+)\..+", name)
            if m and int(m.group(1)) >= hp.n_layer:
                raise GGUFError(f"tensor {name!r} belongs to layer {m.group(1)} but "
                                f"{hp.arch}.block_count is {hp.n_layer}")
            raise GGUFError(f"tensor {name!r} is not used by the {hp.arch!r} architecture")
        if _pad4(t.shape) != _pad4(spec[0]):
            raise GGUFError(f"tensor {name!r} has shape {list(t.shape)}, but the hyper-parameters "
                            f"(n_embd={hp.n_embd}, n_head={hp.n_head}, n_head_kv={hp.n_head_kv}, "
                            f"head_dim={hp.head_dim}, n_ff={hp.n_ff}, n_vocab={hp.n_vocab}) "
                            f"imply {list(spec[0])}")
    for name, (_shape, required) in want.items():
        if required and name not in g.tensors:
            raise GGUFError(f"missing tensor {name!r}")
    for il in range(hp.n_layer):
        fused = f"blk.{il}.attn_qkv.weight" in g.tensors
        for part in ("q", "k", "v"):
            name = f"blk.{il}.attn_{part}.weight"
            if fused and name in g.tensors:
                raise GGUFError(f"blk.{il} has both attn_qkv.weight and attn_{part}.weight")
            if not fused and name not in g.tensors:
                raise GGUFError(f"missing tensor {name!r}")


class Model:
    """Weights of one GGUF model, shared by any number of Contexts."""

    def __init__(self, path: str | os.PathLike, hparams_overrides: dict | None = None):
        """`hparams_overrides` replaces hparams fields read from the file
        (rope_freq_base / rope_freq_scale: llama.cpp's --rope-freq-* options)."""
        self.path = os.fspath(path)
        self.gguf = GGUFFile(self.path)
        self._handle = ffi.NULL
        try:
            self.metadata = self.gguf.metadata
            self.hparams = read_hparams(self.gguf)
            if hparams_overrides:
                self.hparams = dataclasses.replace(self.hparams, **hparams_overrides)
            from .tokenizer import load_tokenizer
            try:
                self.tokenizer = load_tokenizer(self.metadata)
            except GGUFError:
                raise
            except ValueError as e:       # name the file's tokenizer as the culprit
                raise GGUFError(f"{self.path}: tokenizer metadata: {e}") from None
            self._bind()
        except BaseException:
            self.close()
            raise

    def _bind(self) -> None:
        hp = self.hparams
        check_tensors(self.gguf, hp)   # C re-checks names/shapes/bytes, with less telling errors
        out = ffi.new("pyrt_model **")
        check(lib.pyrt_model_create(hp.to_c(), out), "model")
        self._handle = out[0]
        base = ffi.from_buffer("char[]", self.gguf.buffer)
        ne = ffi.new("int64_t[4]")
        for name, t in self.gguf.tensors.items():
            for i, d in enumerate(t.shape):
                ne[i] = d
            st = lib.pyrt_model_set_tensor(self._handle, name.encode(), t.type, len(t.shape), ne,
                                           base + t.offset, t.nbytes)
            if st == lib.PYRT_ERR_UNSUPPORTED:
                raise UnsupportedError(f"{self.path}: tensor {name!r} has type {t.type_name}, "
                                       f"which pyrt does not support yet")
            check(st, self.path)
        check(lib.pyrt_model_finalize(self._handle), f"{self.path}")
        self._base = base

    @property
    def n_vocab(self) -> int:
        return self.hparams.n_vocab

    def tensor_summary(self) -> list[tuple[str, str, tuple[int, ...], int]]:
        return [(t.name, type_name(t.type), t.shape, t.nbytes) for t in self.gguf.tensors.values()]

    def close(self) -> None:
        if getattr(self, "_handle", ffi.NULL) != ffi.NULL:
            lib.pyrt_model_free(self._handle)
            self._handle = ffi.NULL
        self._base = None
        g = getattr(self, "gguf", None)
        if g is not None:
            g.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


def _physical_memory() -> int:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 0


#: KV cache types by name, as llama.cpp's ``--cache-type-k/-v`` (the values
#: are GGML / PYRT_TYPE_* ids, which llama-cpp-python's type_k/type_v take).
KV_CACHE_TYPES = {"f16": 1, "q8_0": 8, "q4_0": 2}
_KV_TYPE_NAMES = {v: k for k, v in KV_CACHE_TYPES.items()}
# other GGML type ids llama.cpp accepts for its cache, named in the error
_GGML_NAMES = {0: "f32", 3: "q4_1", 6: "q5_0", 7: "q5_1", 20: "iq4_nl", 30: "bf16"}


def kv_cache_type(value, what: str = "type_k") -> int:
    """A KV cache type ("f16", "q8_0", "q4_0", or their GGML ids 1, 8, 2;
    None: f16) as its PYRT_TYPE_* id. Raises ValueError for anything else
    (UnsupportedError for a type llama.cpp has but pyrt's cache does not)."""
    from ._native import UnsupportedError
    if value is None:
        return KV_CACHE_TYPES["f16"]
    if isinstance(value, str):
        key = value.strip().lower()
        if key in KV_CACHE_TYPES:
            return KV_CACHE_TYPES[key]
        if key in _GGML_NAMES.values():
            raise UnsupportedError(f"{what}={value!r}: pyrt's KV cache is f16, q8_0 or q4_0")
        raise ValueError(f"{what} must be one of {', '.join(KV_CACHE_TYPES)} (or GGML type ids "
                         f"{', '.join(str(v) for v in KV_CACHE_TYPES.values())}), got {value!r}")
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = int(value)
        if value in _KV_TYPE_NAMES:
            return value
        if value in _GGML_NAMES:
            raise UnsupportedError(f"{what}={value} ({_GGML_NAMES[value]}): pyrt's KV cache is f16 (1), "
                                   f"q8_0 (8) or q4_0 (2)")
    raise ValueError(f"{what} must be one of {', '.join(KV_CACHE_TYPES)} (or GGML type ids "
                     f"{', '.join(str(v) for v in KV_CACHE_TYPES.values())}), got {value!r}")


def kv_cache_type_name(type_id: int) -> str:
    return _KV_TYPE_NAMES.get(int(type_id), str(type_id))


def kv_cache_bytes(hp, n_ctx: int, n_seq: int = 1, type_k=None, type_v=None) -> int:
    """Bytes of a KV cache (K and V, all layers) of these types."""
    row = int(hp.n_head_kv) * int(hp.head_dim)
    total = 0
    for t in (kv_cache_type(type_k), kv_cache_type(type_v, "type_v")):
        total += row * 2 if t == 1 else row // 32 * (34 if t == 8 else 18)
    return int(hp.n_layer) * int(n_seq) * int(n_ctx) * total


class Context:
    """A KV cache and thread pool over a Model; evaluates token batches.

    `type_k` / `type_v` are the cache types (kv_cache_type: "f16", the
    default, "q8_0" or "q4_0"; quantized ones on the CPU only): a quantized
    cache takes half (q8_0) or about a quarter (q4_0) of the F16 memory, and
    attention over it follows llama.cpp's flash-attention arithmetic.

    `backend`/`device` pick where it runs (pyrt.device.place_model resolves a
    device string and offloads the weights first); the default is the CPU.
    `n_seq` > 1 (CPU only) makes it hold that many independent sequences of
    `n_ctx` positions each, evaluated together by :meth:`decode_batch`; the
    other methods work on sequence 0."""

    def __init__(self, model: Model, n_ctx: int, n_threads: int | None = None, n_batch: int = 512,
                 backend: int = lib.PYRT_BACKEND_CPU, device: int = 0, n_seq: int = 1,
                 type_k=None, type_v=None):
        self.model = model
        self._handle = ffi.NULL
        hp = model.hparams
        tk, tv = kv_cache_type(type_k, "type_k"), kv_cache_type(type_v, "type_v")
        kv_bytes = kv_cache_bytes(hp, int(n_ctx), int(n_seq), tk, tv)
        ram = _physical_memory()
        if backend == lib.PYRT_BACKEND_CPU and ram and kv_bytes > ram:
            raise MemoryError(f"n_ctx={n_ctx} x {n_seq} sequences needs a {kv_bytes / 2**30:.1f} GiB KV cache, more than this "
                              f"machine's {ram / 2**30:.1f} GiB of memory; use a smaller n_ctx")
        params = ffi.new("pyrt_ctx_params *")
        params.n_ctx, params.n_threads, params.n_batch = int(n_ctx), int(n_threads or 0), int(n_batch)
        params.backend, params.device, params.n_seq = int(backend), int(device), int(n_seq)
        params.type_k, params.type_v = tk, tv
        out = ffi.new("pyrt_ctx **")
        check(lib.pyrt_ctx_create_ex(model._handle, params, out), "context")
        self._handle = out[0]
        self._lock = threading.Lock()
        self._batch_out = None   # decode_batch's logits buffer, reused

    @property
    def backend(self) -> int:
        return lib.pyrt_ctx_backend(self._handle)

    @property
    def n_ctx(self) -> int:
        return lib.pyrt_ctx_n_ctx(self._handle)

    @property
    def type_k(self) -> str:
        """The K cache type: "f16", "q8_0" or "q4_0"."""
        return kv_cache_type_name(lib.pyrt_ctx_type_k(self._handle))

    @property
    def type_v(self) -> str:
        return kv_cache_type_name(lib.pyrt_ctx_type_v(self._handle))

    @property
    def kv_bytes(self) -> int:
        """Bytes the KV cache holds (K and V, every layer, sequence and position)."""
        return lib.pyrt_ctx_kv_bytes(self._handle)

    @property
    def n_past(self) -> int:
        return lib.pyrt_ctx_n_past(self._handle)

    @property
    def n_threads(self) -> int:
        return lib.pyrt_ctx_n_threads(self._handle)

    def truncate(self, n_keep: int) -> None:
        check(lib.pyrt_ctx_truncate(self._handle, int(n_keep)), "truncate")

    def abort(self) -> None:
        lib.pyrt_ctx_abort(self._handle)

    def decode(self, tokens, pos0: int, out_kind: int, n_shape: int = 0) -> np.ndarray | None:
        """Evaluate tokens at positions pos0.. . n_shape > 0: compute in the
        arithmetic of an n_shape-token batch; -1 (PYRT_NUMERICS_PER_TOKEN): every token
        as if decoded alone (pyrt_ctx_set_numerics in pyrt.h)."""
        toks = np.ascontiguousarray(tokens, dtype=np.int32)
        n = int(toks.shape[0])
        hp = self.model.hparams
        if out_kind == lib.PYRT_OUT_LOGITS_LAST:
            out = np.empty(hp.n_vocab, dtype=np.float32)
        elif out_kind == lib.PYRT_OUT_LOGITS_ALL:
            out = np.empty((n, hp.n_vocab), dtype=np.float32)
        elif out_kind == lib.PYRT_OUT_EMBD_ALL:
            out = np.empty((n, hp.n_embd), dtype=np.float32)
        else:
            out = None
        optr = ffi.cast("float *", out.ctypes.data) if out is not None else ffi.NULL
        with self._lock:
            check(lib.pyrt_ctx_set_numerics(self._handle, int(n_shape)))
            st = lib.pyrt_decode(self._handle, ffi.cast("int32_t *", toks.ctypes.data), n, int(pos0),
                                 out_kind, optr, out.size if out is not None else 0)
        check(st, "decode")
        return out

    @property
    def n_seq(self) -> int:
        return lib.pyrt_ctx_n_seq(self._handle)

    def seq_n_past(self, seq: int) -> int:
        return lib.pyrt_ctx_seq_n_past(self._handle, int(seq))

    def seq_truncate(self, seq: int, n_keep: int) -> None:
        check(lib.pyrt_ctx_seq_truncate(self._handle, int(seq), int(n_keep)), "truncate")

    def seq_copy(self, src: int, dst: int, n: int) -> None:
        """Sequence `dst` becomes the first `n` positions of sequence `src`."""
        check(lib.pyrt_ctx_seq_copy(self._handle, int(src), int(dst), int(n)), "seq_copy")

    def decode_batch(self, parts) -> list[np.ndarray | None]:
        """Evaluate several sequences' new tokens in one forward pass. `parts`:
        ``(seq, tokens, pos0, out_kind, n_shape)`` tuples (each sequence at most
        once; out_kind NONE, LOGITS_LAST or LOGITS_ALL; n_shape as in
        :meth:`decode`). Returns each part's logits (a row, rows, or None)."""
        n = len(parts)
        segs = ffi.new("pyrt_batch_seq[]", max(n, 1))
        toks, rows = [], []
        for i, (seq, tokens, pos0, out_kind, n_shape) in enumerate(parts):
            t = np.ascontiguousarray(tokens, dtype=np.int32).reshape(-1)
            toks.append(t)
            segs[i].seq, segs[i].pos0, segs[i].n_tokens = int(seq), int(pos0), int(t.shape[0])
            segs[i].out_kind, segs[i].n_shape = int(out_kind), int(n_shape)
            rows.append(t.shape[0] if out_kind == lib.PYRT_OUT_LOGITS_ALL else int(out_kind == lib.PYRT_OUT_LOGITS_LAST))
        flat = np.ascontiguousarray(np.concatenate(toks) if toks else np.zeros(0, np.int32), dtype=np.int32)
        V = self.model.hparams.n_vocab
        need = max(sum(rows), 1) * V
        res, r = [], 0
        with self._lock:
            # the C call writes into a buffer kept for the next step: a fresh one
            # each step (MBs with a large vocabulary) had its pages zeroed by the
            # kernel every time; each part gets its own copy, made under the lock
            if need > _BATCH_OUT_KEEP:     # (all-token logits of a long prompt: not kept)
                out = np.empty((need // V, V), dtype=np.float32)
            else:
                if self._batch_out is None or self._batch_out.size < need:
                    self._batch_out = np.empty(need, dtype=np.float32)
                out = self._batch_out[:need].reshape(-1, V)
            st = lib.pyrt_decode_batch(self._handle, ffi.cast("int32_t *", flat.ctypes.data), segs, n,
                                       ffi.cast("float *", out.ctypes.data), out.size)
            if st == lib.PYRT_OK:
                for (_seq, _t, _p, out_kind, _s), k in zip(parts, rows):
                    if out_kind == lib.PYRT_OUT_LOGITS_LAST:
                        res.append(out[r].copy())
                    elif out_kind == lib.PYRT_OUT_LOGITS_ALL:
                        res.append(out[r:r + k].copy())
                    else:
                        res.append(None)
                    r += k
        check(st, "decode")
        return res

    def state(self) -> bytes:
        size = lib.pyrt_ctx_state_size(self._handle)
        buf = bytearray(size)
        check(lib.pyrt_ctx_state_get(self._handle, ffi.from_buffer(buf), size), "state")
        return bytes(buf)

    def set_state(self, data: bytes) -> None:
        check(lib.pyrt_ctx_state_set(self._handle, ffi.from_buffer(data), len(data)), "state")

    def close(self) -> None:
        if getattr(self, "_handle", ffi.NULL) != ffi.NULL:
            lib.pyrt_ctx_free(self._handle)
            self._handle = ffi.NULL

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass
