"""llama.cpp side of benchmarks/compare_llamacpp.py: pp/tg throughput through
llama-cpp-python's low-level API, measured exactly like `pyrt bench` (random
tokens, a warm-up run, mean ± stdev over repetitions), printed as JSON records
with llama-bench's field names. Runs inside the separate benchmark venv; never
imported by pyrt."""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")   # as pyrt's CLI: no BLAS threads competing (before numpy)
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts"))
import llamacpp_batch  # noqa: E402  (the llama_decode helper the reference scripts use)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("-m", "--model", required=True)
    ap.add_argument("-p", "--n-prompt", type=int, default=512)
    ap.add_argument("-n", "--n-gen", type=int, default=128)
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("-r", "--repetitions", type=int, default=5)
    ap.add_argument("-d", "--n-depth", type=int, default=0, help="fill this many KV positions first")
    ap.add_argument("--generate", type=int, default=0,
                    help="also time Llama.generate (greedy) for this many tokens")
    args = ap.parse_args()

    import llama_cpp
    from llama_cpp import llama_cpp as L

    t0 = time.perf_counter()
    llm = llama_cpp.Llama(args.model, n_ctx=max(args.n_depth + max(args.n_prompt, args.n_gen), 512), n_batch=512,
                          n_threads=args.threads, n_threads_batch=args.threads, verbose=False)
    load_ms = (time.perf_counter() - t0) * 1e3
    ctx = llm._ctx.ctx
    n_vocab = llm.n_vocab()
    rng = np.random.default_rng(0)
    mem = L.llama_get_memory(ctx)

    def decode(tokens, pos0):
        llamacpp_batch.decode(L, ctx, tokens, pos0, False)

    D = args.n_depth
    if D:                                   # the cache every test starts from, in n_batch chunks
        fill = rng.integers(0, n_vocab, D)
        for i in range(0, D, 512):
            decode(fill[i:i + 512], i)

    def clear():
        if D:
            L.llama_memory_seq_rm(mem, 0, D, -1)    # keep the filled positions
        else:
            L.llama_memory_clear(mem, True)

    def measure(run, n):
        run()
        samples = []
        for _ in range(args.repetitions):
            t = time.perf_counter()
            run()
            samples.append(n / (time.perf_counter() - t))
        return samples

    base = dict(model_filename=os.path.basename(args.model), n_threads=args.threads, n_batch=512, n_depth=D,
                load_ms=load_ms, tool="llama.cpp", build=getattr(llama_cpp, "__version__", "?"))
    out = []
    if args.n_prompt:
        toks = rng.integers(0, n_vocab, args.n_prompt)

        def pp():
            clear()
            decode(toks, D)
        s = measure(pp, args.n_prompt)
        out.append(dict(base, n_prompt=args.n_prompt, n_gen=0, avg_ts=statistics.mean(s),
                        stddev_ts=statistics.stdev(s) if len(s) > 1 else 0.0, samples_ts=s))
    if args.n_gen:
        toks = rng.integers(0, n_vocab, args.n_gen)

        def tg():
            clear()
            for i in range(args.n_gen):
                decode(toks[i:i + 1], D + i)
        s = measure(tg, args.n_gen)
        out.append(dict(base, n_prompt=0, n_gen=args.n_gen, avg_ts=statistics.mean(s),
                        stddev_ts=statistics.stdev(s) if len(s) > 1 else 0.0, samples_ts=s))
    if args.generate:
        prompt = llm.tokenize(b"The capital of France is")

        def gen():
            llm.reset()
            n = 0
            for _ in llm.generate(prompt, temp=0.0, top_k=1, reset=True):
                n += 1
                if n >= args.generate:
                    break
        s = measure(gen, args.generate)
        out.append(dict(base, n_prompt=len(prompt), n_gen=args.generate, test="generate", avg_ts=statistics.mean(s),
                        stddev_ts=statistics.stdev(s) if len(s) > 1 else 0.0, samples_ts=s))
    for r in out:
        r["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    json.dump(out, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
