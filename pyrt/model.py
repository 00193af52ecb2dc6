"""Model: hyper-parameters and weights read from a validated GGUF file, bound
to a C model handle; Context: a KV cache + thread pool that evaluates tokens.

The weights stay in the file's mmap; C receives raw pointers only after every
tensor has been checked (type, shape against the hparams, byte range).
"""
from __future__ import annotations

import math
import os
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._native import UnsupportedError, check, ffi, lib
from .gguf_file import GGUFError, GGUFFile, type_name

SUPPORTED_ARCHS = {"llama": lib.PYRT_ARCH_LLAMA, "gemma3": lib.PYRT_ARCH_GEMMA3}


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
    extra: dict = field(default_factory=dict)

    def to_c(self):
        hp = ffi.new("pyrt_hparams *")
        hp.arch = SUPPORTED_ARCHS[self.arch]
        for name in ("n_vocab", "n_embd", "n_layer", "n_head", "n_head_kv", "head_dim", "n_ff",
                     "n_rot", "rope_type", "rope_freq_base", "rope_freq_scale", "rope_freq_base_swa",
                     "norm_eps", "n_ctx_train", "sliding_window", "swa_period", "attn_scale",
                     "embd_scale"):
            setattr(hp, name, getattr(self, name))
        return hp


def _int(g: GGUFFile, key: str, default: Any = None, lo: int = 1, hi: int = 1 << 31) -> int:
    v = g.get(key, default, (int,))
    if v is None:
        raise GGUFError(f"missing required metadata {key!r}")
    if not lo <= v <= hi:
        raise GGUFError(f"metadata {key!r} = {v} is outside [{lo}, {hi}]")
    return v


def _float(g: GGUFFile, key: str, default: float | None = None, lo: float = 0.0,
           hi: float = math.inf, lo_open: bool = True) -> float:
    v = g.get(key, default, (float, int))
    if v is None:
        raise GGUFError(f"missing required metadata {key!r}")
    v = float(v)
    if not math.isfinite(v) or v > hi or v < lo or (lo_open and v == lo):
        raise GGUFError(f"metadata {key!r} = {v} is out of range")
    return v


def read_hparams(g: GGUFFile) -> HParams:
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
    head_dim = _int(g, f"{a}.attention.key_length", n_embd // n_head, hi=1024)
    v_dim = _int(g, f"{a}.attention.value_length", head_dim, hi=1024)
    if v_dim != head_dim:
        raise GGUFError(f"{a}.attention.value_length {v_dim} != key_length {head_dim} is not supported")
    n_rot = _int(g, f"{a}.rope.dimension_count", head_dim, hi=head_dim)
    if n_rot % 2 or head_dim % 2:
        raise GGUFError(f"odd rope dimension ({n_rot}) or head size ({head_dim})")
    n_ff = g.get(f"{a}.feed_forward_length", None, (int, list))
    if isinstance(n_ff, list):  # per-layer list: only uniform values are supported
        if not n_ff or len(set(n_ff)) != 1:
            raise GGUFError(f"{a}.feed_forward_length varies per layer; not supported")
        n_ff = n_ff[0]
    if not isinstance(n_ff, int) or not 1 <= n_ff <= 1 << 20:
        raise GGUFError(f"metadata {a}.feed_forward_length = {n_ff!r} is invalid")
    scale_type = g.get(f"{a}.rope.scaling.type", "none", (str,))
    freq_scale = 1.0
    if scale_type == "linear":
        freq_scale = 1.0 / _float(g, f"{a}.rope.scaling.factor", 1.0)
    elif scale_type not in ("none", ""):
        raise GGUFError(f"unsupported {a}.rope.scaling.type {scale_type!r}")
    tokens = g.get("tokenizer.ggml.tokens", None, (list,))
    if tokens is None:
        raise GGUFError("missing required metadata 'tokenizer.ggml.tokens'")
    emb = g.tensors.get("token_embd.weight")
    if emb is None:
        raise GGUFError("missing tensor 'token_embd.weight'")
    n_vocab = emb.shape[1] if len(emb.shape) > 1 else 0
    if n_vocab != len(tokens):
        raise GGUFError(f"token_embd.weight has {n_vocab} rows but the vocabulary has {len(tokens)} tokens")

    hp = HParams(
        arch=arch, n_vocab=n_vocab, n_embd=n_embd,
        n_layer=_int(g, f"{a}.block_count", hi=1024),
        n_head=n_head, n_head_kv=n_head_kv, head_dim=head_dim, n_ff=n_ff, n_rot=n_rot,
        rope_type=lib.PYRT_ROPE_NORMAL if arch == "llama" else lib.PYRT_ROPE_NEOX,
        rope_freq_base=_float(g, f"{a}.rope.freq_base", 10000.0),
        rope_freq_scale=freq_scale,
        norm_eps=_float(g, f"{a}.attention.layer_norm_rms_epsilon", 1e-5, hi=1.0),
        n_ctx_train=_int(g, f"{a}.context_length", 2048, hi=1 << 24),
    )
    if arch == "gemma3":
        hp.sliding_window = _int(g, f"{a}.attention.sliding_window", 512, hi=1 << 24)
        hp.swa_period = 6
        hp.rope_freq_base_swa = 10000.0
        hp.embd_scale = math.sqrt(n_embd)
        hp.attn_scale = 1.0 / math.sqrt(head_dim)
    return hp


class Model:
    """Weights of one GGUF model, shared by any number of Contexts."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        self.gguf = GGUFFile(self.path)
        self._handle = ffi.NULL
        try:
            self.metadata = self.gguf.metadata
            self.hparams = read_hparams(self.gguf)
            from .tokenizer import load_tokenizer
            self.tokenizer = load_tokenizer(self.metadata)
            self._bind()
        except BaseException:
            self.close()
            raise

    def _bind(self) -> None:
        hp = self.hparams
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


class Context:
    """A KV cache (F16) and thread pool over a Model; evaluates token batches."""

    def __init__(self, model: Model, n_ctx: int, n_threads: int | None = None, n_batch: int = 512):
        self.model = model
        out = ffi.new("pyrt_ctx **")
        check(lib.pyrt_ctx_create(model._handle, int(n_ctx), int(n_threads or 0), int(n_batch), out),
              "context")
        self._handle = out[0]
        self._lock = threading.Lock()

    @property
    def n_ctx(self) -> int:
        return lib.pyrt_ctx_n_ctx(self._handle)

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

    def decode(self, tokens, pos0: int, out_kind: int) -> np.ndarray | None:
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
            st = lib.pyrt_decode(self._handle, ffi.cast("int32_t *", toks.ctypes.data), n, int(pos0),
                                 out_kind, optr, out.size if out is not None else 0)
        check(st, "decode")
        return out

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
