"""`pyrt bench`: prompt-processing (pp) and token-generation (tg) throughput,
measured like llama-bench: random tokens, one warm-up run, mean ± stdev of
tokens/second over repetitions; plus model load time and peak RSS.

`--json` prints llama-bench's field names (model_filename, n_threads,
n_prompt, n_gen, avg_ts, stddev_ts, samples_ts, ...) so the two tools'
records compare directly."""
from __future__ import annotations

import json
import os
import resource
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from .cli_args import add_cache_type_args, add_device_arg


@dataclass
class BenchRecord:
    model_filename: str
    model_type: str
    model_size: int
    model_n_params: int
    n_threads: int
    n_prompt: int
    n_gen: int
    n_batch: int
    avg_ts: float
    stddev_ts: float
    samples_ts: list = field(default_factory=list)
    avg_ns: float = 0.0
    load_ms: float = 0.0
    peak_rss_mb: float = 0.0
    kernels: str = ""
    backend: str = "CPU"
    tool: str = "pyrt"
    python_overhead_pct: float | None = None
    n_depth: int = 0
    type_k: str = "f16"          # KV cache types (llama-bench's field names)
    type_v: str = "f16"
    n_ctx: int = 0               # positions of the context measured
    kv_bytes: int = 0            # its KV cache (K and V, all layers)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0   # KiB on Linux


def _where(device: str) -> dict:
    """backend (llama-bench's "CPU" / "CUDA") and kernels fields of a record."""
    from ._native import ffi, lib
    if device == "cpu":
        return {"backend": "CPU", "kernels": ffi.string(lib.pyrt_kernels_name(lib.pyrt_kernels_active())).decode()}
    return {"backend": "CUDA", "kernels": device}


def run_bench(model: str, n_prompt: int = 512, n_gen: int = 128, n_threads: int | None = None,
              repetitions: int = 5, n_batch: int = 512, seed: int = 0, device: str = "cpu",
              n_depth: int = 0, type_k: str = "f16", type_v: str = "f16", n_ctx: int = 0) -> list[BenchRecord]:
    """Measure pp{n_prompt} and tg{n_gen} (either may be 0 to skip) on `device`
    (as Llama's: "cpu", "cuda", "cuda:N", "auto") with a KV cache of types
    type_k / type_v ("f16", "q8_0", "q4_0") over n_ctx positions (0: just
    enough for the test), after `n_depth` positions of the cache are filled
    (llama-bench's -d: attention over a long cache)."""
    from ._native import lib
    from .device import check_requested, place_model
    from .model import Context, Model
    from .registry import ensure_model

    if n_prompt < 0 or n_gen < 0 or n_prompt + n_gen == 0:
        raise ValueError("n_prompt and n_gen must be >= 0 and not both 0")
    if repetitions < 1:
        raise ValueError(f"repetitions must be >= 1, got {repetitions}")
    if n_depth < 0:
        raise ValueError(f"n_depth must be >= 0, got {n_depth}")
    check_requested(device)
    path = str(ensure_model(model))
    t0 = time.perf_counter()
    m = Model(path)
    try:
        where = place_model(m, device)
        need = n_depth + max(n_prompt, n_gen)
        if n_ctx and n_ctx < need:
            raise ValueError(f"n_ctx {n_ctx} is less than n_depth + max(n_prompt, n_gen) = {need}")
        ctx = Context(m, n_ctx or max(need, 16), n_threads, n_batch, backend=where.backend,
                      device=where.index, type_k=type_k, type_v=type_v)
    except BaseException:
        m.close()
        raise
    load_ms = (time.perf_counter() - t0) * 1e3
    try:
        rng = np.random.default_rng(seed)
        n_vocab = m.n_vocab
        g = m.gguf
        n_params = sum(t.n_elements for t in g.tensors.values())
        size = sum(t.nbytes for t in g.tensors.values())
        ftype = {t.type_name for t in g.tensors.values() if len(t.shape) > 1}
        base = dict(model_filename=os.path.basename(path),
                    model_type=f"{m.hparams.arch} {'/'.join(sorted(ftype))}",
                    model_size=size, model_n_params=n_params, n_threads=ctx.n_threads, n_batch=n_batch,
                    load_ms=load_ms, type_k=ctx.type_k, type_v=ctx.type_v, n_ctx=ctx.n_ctx,
                    kv_bytes=ctx.kv_bytes, **_where(where.device))
        records = []
        if n_depth:                                         # the cache every test starts from
            ctx.decode(rng.integers(0, n_vocab, n_depth).astype(np.int32), 0, lib.PYRT_OUT_NONE)
        D = n_depth

        def measure(run, n_tokens):
            run()                                           # warm-up
            samples = []
            for _ in range(repetitions):
                t = time.perf_counter()
                run()
                samples.append(n_tokens / (time.perf_counter() - t))
            return samples

        if n_prompt:
            toks = rng.integers(0, n_vocab, n_prompt).astype(np.int32)
            samples = measure(lambda: ctx.decode(toks, D, lib.PYRT_OUT_LOGITS_LAST), n_prompt)
            records.append(BenchRecord(**base, n_prompt=n_prompt, n_gen=0, n_depth=D, avg_ts=statistics.mean(samples),
                                       stddev_ts=statistics.stdev(samples) if len(samples) > 1 else 0.0,
                                       samples_ts=samples, avg_ns=1e9 * n_prompt / statistics.mean(samples)))
        if n_gen:
            toks = rng.integers(0, n_vocab, n_gen).astype(np.int32)

            def tg():
                for i in range(n_gen):
                    ctx.decode(toks[i:i + 1], D + i, lib.PYRT_OUT_LOGITS_LAST)
            samples = measure(tg, n_gen)
            records.append(BenchRecord(**base, n_prompt=0, n_gen=n_gen, n_depth=D, avg_ts=statistics.mean(samples),
                                       stddev_ts=statistics.stdev(samples) if len(samples) > 1 else 0.0,
                                       samples_ts=samples, avg_ns=1e9 * n_gen / statistics.mean(samples)))
        for r in records:
            r.peak_rss_mb = _peak_rss_mb()
        return records
    finally:
        ctx.close()
        m.close()


def run_generate_bench(model: str, n_gen: int = 128, n_threads: int | None = None,
                       repetitions: int = 5, prompt: str = "The capital of France is",
                       device: str = "cpu") -> BenchRecord:
    """Time the Python-level loop: Llama.generate, greedy, n_gen tokens, and how
    much of each step is spent outside C (Python overhead). End-of-generation
    tokens are banned so that every run makes exactly n_gen tokens, as
    llama-cpp-python's generate loop (which does not stop at them) does in
    benchmarks/llamacpp_bench.py."""
    from .api import Llama

    t0 = time.perf_counter()
    llm = Llama(model, n_ctx=max(512, n_gen + 64), n_threads=n_threads, device=device)
    load_ms = (time.perf_counter() - t0) * 1e3
    try:
        ids = llm.tokenize(prompt)

        ban_eog = {t: float("-inf") for t in llm.tokenizer.eog_ids}

        def gen():
            llm.reset()
            n = 0
            for _ in llm.generate(ids, max_tokens=n_gen, temperature=0, stop=[], logit_bias=ban_eog):
                n += 1
            if n != n_gen:
                raise RuntimeError(f"generate bench: {n} tokens instead of {n_gen} (context full?)")
            return n
        gen()
        samples, overhead = [], []
        for _ in range(repetitions):
            in_c = llm.eval_seconds
            t = time.perf_counter()
            n = gen()
            wall = time.perf_counter() - t
            in_c = llm.eval_seconds - in_c
            samples.append(n / wall)
            overhead.append(100.0 * (wall - in_c) / wall)
        rec = BenchRecord(model_filename=os.path.basename(llm.model_path), model_type="generate",
                          model_size=llm.model_size(), model_n_params=llm.n_params(),
                          n_threads=llm.n_threads(), n_prompt=len(ids), n_gen=n_gen, n_batch=512,
                          avg_ts=statistics.mean(samples),
                          stddev_ts=statistics.stdev(samples) if len(samples) > 1 else 0.0,
                          samples_ts=samples, load_ms=load_ms, peak_rss_mb=_peak_rss_mb(), **_where(llm.device))
        rec.python_overhead_pct = statistics.mean(overhead)   # time outside the C forward (incl. sampling)
        return rec
    finally:
        llm.close()


def _kv_cell(r: BenchRecord) -> str:
    if not r.kv_bytes:
        return "-"
    return f"{r.type_k}/{r.type_v} {r.kv_bytes / 2**20:.2f} MiB @ {r.n_ctx}"


def format_table(records: list[BenchRecord]) -> str:
    lines = ["| model | size | params | kernels | threads | KV cache | test | t/s | load | peak RSS |",
             "| ----- | ---: | -----: | ------- | ------: | -------- | ---- | --: | ---: | -------: |"]
    for r in records:
        test = ("generate" if r.model_type == "generate" else
                f"pp{r.n_prompt}" if r.n_prompt else f"tg{r.n_gen}") + (f" @ d{r.n_depth}" if r.n_depth else "")
        lines.append(f"| {r.model_type} | {r.model_size / 2**20:.2f} MiB | {r.model_n_params / 1e6:.1f} M "
                     f"| {r.kernels} | {r.n_threads} | {_kv_cell(r)} | {test} | {r.avg_ts:.2f} ± {r.stddev_ts:.2f} "
                     f"| {r.load_ms:.0f} ms | {r.peak_rss_mb:.0f} MiB |")
    return "\n".join(lines)


def main(args) -> int:
    records = run_bench(args.model, n_prompt=args.n_prompt, n_gen=args.n_gen, n_threads=args.threads,
                        repetitions=args.repetitions, n_batch=args.batch_size, device=args.device,
                        n_depth=args.n_depth, type_k=args.cache_type_k, type_v=args.cache_type_v,
                        n_ctx=args.ctx_size)
    if args.generate:
        records.append(run_generate_bench(args.model, args.generate, args.threads, args.repetitions,
                                          device=args.device))
    if args.json:
        json.dump([asdict(r) for r in records], sys.stdout, indent=2)
        print()
    else:
        print(format_table(records))
    return 0


def add_parser(sub) -> None:
    b = sub.add_parser("bench", help="prompt-processing and generation throughput (like llama-bench)")
    b.add_argument("-m", "--model", default=None, help="GGUF file or known model name")
    b.add_argument("-p", "--n-prompt", type=int, default=512)
    b.add_argument("-n", "--n-gen", type=int, default=128)
    b.add_argument("-t", "--threads", type=int, default=None)
    b.add_argument("-b", "--batch-size", type=int, default=512)
    b.add_argument("-r", "--repetitions", type=int, default=5)
    b.add_argument("-d", "--n-depth", type=int, default=0,
                   help="fill this many KV cache positions first (llama-bench's -d)")
    b.add_argument("--generate", type=int, default=0, metavar="N",
                   help="also time Llama.generate (greedy, N tokens) and its Python overhead")
    b.add_argument("--json", action="store_true", help="print llama-bench-style JSON records")
    b.add_argument("-c", "--ctx-size", type=int, default=0,
                   help="context positions (its KV cache size is reported; default: n_depth + max(n_prompt, n_gen))")
    add_device_arg(b)
    add_cache_type_args(b)
    b.set_defaults(func=main)
