"""argparse helpers shared by the `pyrt` subcommands (pyrt/cli.py and the
`pyrt bench` parser in pyrt/bench.py). Kept apart from both so that the
dependency runs one way: cli -> bench -> api, each using this module."""
from __future__ import annotations

import argparse

__all__ = ["add_model_arg", "add_device_arg", "add_sampling_args", "extra_sampling", "add_grammar_args",
           "load_grammar", "add_cache_type_args", "cache_type_kwargs"]


def add_model_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("-m", "--model", default=None,
                   help="GGUF file or known model name (default: the default model, fetched on first use)")


def _device_arg(value: str) -> str:
    from .device import parse_device      # loads the C library: only when a --device is given
    try:
        parse_device(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return value


def add_device_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", type=_device_arg, default="cpu", metavar="DEVICE",
                   help="cpu (default), cuda, cuda:N or auto (the GPU when this build has CUDA, a GPU is "
                        "present and it supports the model's types; else the CPU). See `pyrt devices`")


def _cache_type(value: str) -> str:
    from .model import kv_cache_type, kv_cache_type_name
    try:
        return kv_cache_type_name(kv_cache_type(value, "cache type"))
    except ValueError as e:                  # UnsupportedError is one too
        raise argparse.ArgumentTypeError(str(e)) from None


def add_cache_type_args(p: argparse.ArgumentParser) -> None:
    """-ctk / --cache-type-k and -ctv / --cache-type-v, as llama.cpp's."""
    p.add_argument("-ctk", "--cache-type-k", type=_cache_type, default="f16", metavar="TYPE",
                   help="KV cache type of K: f16 (default), q8_0 (half the memory) or q4_0 (about a quarter)")
    p.add_argument("-ctv", "--cache-type-v", type=_cache_type, default="f16", metavar="TYPE",
                   help="KV cache type of V: f16 (default), q8_0 or q4_0")


def cache_type_kwargs(args) -> dict:
    """Llama(type_k=, type_v=) from the parsed cache-type flags."""
    return {"type_k": getattr(args, "cache_type_k", None), "type_v": getattr(args, "cache_type_v", None)}


def add_sampling_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--temp", type=float, default=0.8, help="temperature; 0 = greedy (default 0.8)")
    p.add_argument("--top-k", type=int, default=40)
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--min-p", type=float, default=0.05)
    p.add_argument("--repeat-penalty", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=None, help="RNG seed (default: random)")
    # llama.cpp's names for its other samplers (pyrt.sampling.SamplingParams)
    p.add_argument("--mirostat", type=int, default=0, choices=(0, 1, 2),
                   help="Mirostat sampling: 0 off (default), 1 Mirostat, 2 Mirostat 2.0")
    p.add_argument("--mirostat-ent", type=float, default=5.0, help="Mirostat target entropy tau (default 5.0)")
    p.add_argument("--mirostat-lr", type=float, default=0.1, help="Mirostat learning rate eta (default 0.1)")
    p.add_argument("--dry-multiplier", type=float, default=0.0, help="DRY repetition penalty (0: off, default)")
    p.add_argument("--xtc-probability", type=float, default=0.0, help="XTC probability (0: off, default)")
    p.add_argument("--xtc-threshold", type=float, default=0.1, help="XTC threshold (default 0.1)")


def add_grammar_args(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--grammar-file", metavar="FILE", default=None,
                   help="constrain the output to a GBNF grammar (llama.cpp's format)")
    g.add_argument("--json-schema", metavar="SCHEMA", default=None,
                   help="constrain the output to JSON matching this schema (JSON text, or @FILE)")


def load_grammar(args):
    """The pyrt.Grammar that --grammar-file / --json-schema ask for, or None."""
    if getattr(args, "grammar_file", None):
        from .grammar import Grammar
        return Grammar.from_file(args.grammar_file)
    if getattr(args, "json_schema", None):
        from .grammar import Grammar
        text = args.json_schema
        if text.startswith("@"):
            with open(text[1:], encoding="utf-8") as f:
                text = f.read()
        return Grammar.from_json_schema(text)
    return None


def extra_sampling(args) -> dict:
    """The keyword arguments of the samplers beyond top-k/p, min-p and penalties."""
    return {"mirostat_mode": args.mirostat, "mirostat_tau": args.mirostat_ent,
            "mirostat_eta": args.mirostat_lr, "dry_multiplier": args.dry_multiplier,
            "xtc_probability": args.xtc_probability, "xtc_threshold": args.xtc_threshold}
