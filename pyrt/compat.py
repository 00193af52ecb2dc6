"""llama-cpp-python's ``Llama(...)`` keyword arguments, mapped onto pyrt.

Code written for llama-cpp-python passes its constructor arguments
unchanged. Each one is either mapped (``n_gpu_layers`` -> device placement,
``chat_format`` -> a built-in template, ``rope_freq_base`` -> an hparams
override, ...), accepted because it changes nothing in pyrt (``use_mmap``:
pyrt always maps the file; ``flash_attn``: pyrt takes the attention arithmetic
llama.cpp takes for the cache types), or
rejected with an error that names the argument and says what to do instead.
An argument neither library knows is a TypeError naming it (with the closest
known name).
"""
from __future__ import annotations

import difflib
import numbers
from dataclasses import dataclass, field

from ._native import UnsupportedError

__all__ = ["LLAMA_DEFAULT_SEED", "CompatOptions", "parse_llama_kwargs", "is_random_seed"]

#: llama.cpp's "pick a random seed" value (and -1, llama-cpp-python's spelling).
LLAMA_DEFAULT_SEED = 0xFFFFFFFF

# llama.cpp enum values these arguments take (llama.h)
_SPLIT_MODES = (0, 1, 2)                  # none, layer, row: one device either way here
_ROPE_SCALING = {-1: "unspecified", 0: "none", 1: "linear", 2: "yarn", 3: "longrope"}
_POOLING = {-1: "unspecified", 0: "none", 1: "mean", 2: "cls", 3: "last", 4: "rank"}
_ATTENTION = {-1: "unspecified", 0: "causal", 1: "non-causal"}

# arguments whose every value is fine: pyrt behaves the same whatever they say
_NO_EFFECT = {
    "use_mmap": "pyrt always memory-maps the model file",
    # an F16 cache follows llama.cpp without flash attention (llama-cpp-python's
    # default), a quantized one (type_k/type_v) llama.cpp's flash attention,
    # which llama.cpp needs for a quantized V cache and picks by default
    "flash_attn": "pyrt picks the attention arithmetic from the KV cache types",
    "offload_kqv": "the KV cache lives where the model runs",
    "op_offload": "pyrt places whole models",
    "swa_full": "pyrt keeps a full-size cache for sliding-window layers",
    "no_perf": "pyrt keeps no perf counters to disable",
    "numa": "pyrt does no NUMA placement",
    "embedding": "every pyrt Llama computes embeddings and logits",
    "lora_scale": "used only with lora_path",
}

_DEFAULT_ONLY = {   # accepted at llama-cpp-python's default; anything else is unsupported
    "yarn_ext_factor": (-1.0, "YaRN rope scaling is not supported"),
    "yarn_attn_factor": (1.0, "YaRN rope scaling is not supported"),
    "yarn_beta_fast": (32.0, "YaRN rope scaling is not supported"),
    "yarn_beta_slow": (1.0, "YaRN rope scaling is not supported"),
    "yarn_orig_ctx": (0, "YaRN rope scaling is not supported"),
    "vocab_only": (False, "pyrt always loads the weights (use pyrt.tokenizer for a vocabulary alone)"),
    "kv_overrides": (None, "metadata overrides are not supported; edit the GGUF (gguf-py's gguf_set_metadata)"),
    "tensor_split": (None, "pyrt runs a model on one device"),
    "lora_base": (None, "LoRA adapters are not supported yet"),
    "lora_path": (None, "LoRA adapters are not supported yet; merge the adapter into the model "
                        "(llama.cpp's llama-export-lora) and load the merged GGUF"),
    "chat_handler": (None, "chat handler objects (multimodal, function calling) are not supported; "
                           "use chat_format= or chat_template="),
    "tokenizer": (None, "pyrt uses the tokenizer in the GGUF file"),
}

_MAPPED = ("n_gpu_layers", "main_gpu", "split_mode", "use_mlock", "n_ubatch", "n_threads_batch",
           "rope_scaling_type", "pooling_type", "attention_type", "rope_freq_base", "rope_freq_scale",
           "logits_all", "last_n_tokens_size", "chat_format", "type_k", "type_v", "spm_infill")

KNOWN = frozenset(_NO_EFFECT) | frozenset(_DEFAULT_ONLY) | frozenset(_MAPPED)


@dataclass
class CompatOptions:
    """What the llama-cpp-python arguments asked for, in pyrt's terms."""
    device: str | None = None            # from n_gpu_layers / main_gpu
    gpu_requested: bool = False          # n_gpu_layers != 0 (a notice if the CPU answers)
    use_mlock: bool = False
    n_ubatch: int | None = None
    n_threads_batch: int | None = None
    logits_all: bool = False
    last_n_tokens_size: int = 64
    chat_format: str | None = None
    spm_infill: bool = False
    type_k: int | None = None            # KV cache types (PYRT_TYPE_* ids; None: f16)
    type_v: int | None = None
    hparams_overrides: dict = field(default_factory=dict)


def is_random_seed(seed) -> bool:
    """-1 and LLAMA_DEFAULT_SEED ask for a random seed, as in llama.cpp."""
    return isinstance(seed, numbers.Integral) and not isinstance(seed, bool) and seed in (-1, LLAMA_DEFAULT_SEED)


def _int(name: str, v, lo: int | None = None) -> int:
    if not isinstance(v, numbers.Integral) or isinstance(v, bool) or (lo is not None and v < lo):
        rule = f"an int >= {lo}" if lo is not None else "an int"
        raise ValueError(f"{name} must be {rule}, got {v!r}")
    return int(v)


def _bool(name: str, v) -> bool:
    if not isinstance(v, bool):
        raise ValueError(f"{name} must be True or False, got {v!r}")
    return v


def _enum(name: str, v, table: dict, ok: tuple) -> None:
    v = _int(name, v)
    if v not in table:
        raise ValueError(f"{name} must be one of {sorted(table)}, got {v!r}")
    if v not in ok:
        raise UnsupportedError(f"Llama({name}={v}): {table[v]} is not supported by pyrt "
                               f"(supported: {', '.join(table[o] for o in ok)})")


def parse_llama_kwargs(kwargs: dict) -> CompatOptions:
    """Check llama-cpp-python constructor arguments and map them; raises
    TypeError for an unknown name, UnsupportedError (a ValueError) for a
    known one whose value pyrt cannot honour, ValueError for a bad value."""
    opts = CompatOptions()
    for name in kwargs:
        if name not in KNOWN:
            close = difflib.get_close_matches(name, sorted(KNOWN) + [
                "model_path", "n_ctx", "n_threads", "seed", "n_batch", "verbose", "chat_template",
                "device"], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise TypeError(f"Llama() got an unexpected keyword argument {name!r}{hint}")
    for name, (default, why) in _DEFAULT_ONLY.items():
        if name in kwargs and kwargs[name] != default and not (default is None and kwargs[name] in ({}, [])):
            raise UnsupportedError(f"Llama({name}={kwargs[name]!r}): {why}")
    for name in ("use_mmap", "flash_attn", "offload_kqv", "no_perf", "embedding"):
        if name in kwargs:
            _bool(name, kwargs[name])

    k = kwargs
    if "n_gpu_layers" in k:
        n = _int("n_gpu_layers", k["n_gpu_layers"], lo=-1)
        if n != 0:
            opts.gpu_requested = True
            opts.device = "auto"
        else:
            opts.device = "cpu"
    if "main_gpu" in k:
        g = _int("main_gpu", k["main_gpu"], lo=0)
        if g and opts.gpu_requested:
            opts.device = f"cuda:{g}"
    if "split_mode" in k:
        _enum("split_mode", k["split_mode"], {0: "none", 1: "layer", 2: "row"}, _SPLIT_MODES)
    if "use_mlock" in k:
        opts.use_mlock = _bool("use_mlock", k["use_mlock"])
    if "n_ubatch" in k:
        opts.n_ubatch = _int("n_ubatch", k["n_ubatch"], lo=1)
    if k.get("n_threads_batch") is not None:
        v = k["n_threads_batch"]
        if not isinstance(v, int) or isinstance(v, bool) or not (v == -1 or 1 <= v <= 512):
            raise ValueError(f"n_threads_batch must be None, -1 or an int in [1, 512], got {v!r}")
        opts.n_threads_batch = None if v == -1 else v
    if k.get("rope_scaling_type") is not None:
        _enum("rope_scaling_type", k["rope_scaling_type"], _ROPE_SCALING, (-1, 0, 1))
        if k["rope_scaling_type"] == 0:
            opts.hparams_overrides["rope_freq_scale"] = 1.0
    if k.get("pooling_type") is not None:
        _enum("pooling_type", k["pooling_type"], _POOLING, (-1, 1))
    if k.get("attention_type") is not None:
        _enum("attention_type", k["attention_type"], _ATTENTION, (-1, 0))
    for name in ("rope_freq_base", "rope_freq_scale"):
        if name in k:
            v = k[name]
            if not isinstance(v, numbers.Real) or isinstance(v, bool) or not (0 <= v < 1e12):
                raise ValueError(f"{name} must be a number >= 0 (0: the model's value), got {v!r}")
            if v:
                opts.hparams_overrides[name] = float(v)
    if "logits_all" in k:
        opts.logits_all = _bool("logits_all", k["logits_all"])
    if "last_n_tokens_size" in k:
        opts.last_n_tokens_size = _int("last_n_tokens_size", k["last_n_tokens_size"], lo=-1)
    if k.get("chat_format") is not None:
        from .chat import chat_format_template
        chat_format_template(k["chat_format"])            # raises for an unknown name
        opts.chat_format = k["chat_format"]
    for name in ("type_k", "type_v"):
        if k.get(name) is not None:       # "f16" / "q8_0" / "q4_0" or GGML ids 1 / 8 / 2
            from .model import kv_cache_type
            setattr(opts, name, kv_cache_type(k[name], name))
    if "spm_infill" in k:
        opts.spm_infill = _bool("spm_infill", k["spm_infill"])
    return opts
