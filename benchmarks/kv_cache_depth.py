"""Token generation and prompt processing at depth with each KV cache type (BENCHMARKS.md,
'Quantized KV cache'): fill D random tokens, then time N single-token decodes (tg) and one
batch of P tokens (pp), the f16 / q8_0 / q4_0 contexts alternating, median of R rounds.

    python benchmarks/kv_cache_depth.py MODEL.gguf D N REPS            (tg only, as before)
    python benchmarks/kv_cache_depth.py MODEL.gguf -d 2048 -n 32 -p 512 -r 5 [-t 2] [--types f16 q8_0]

To compare two builds, run it once per library with PYRT_LIB=path/to/libpyrt.so, alternating.
"""
import argparse
import time

import numpy as np

from pyrt._native import LIB_PATH, lib
from pyrt.model import Context, Model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("pos", nargs="*", type=int, help="D N REPS (the old positional form)")
    ap.add_argument("-d", "--depth", type=int, default=2048)
    ap.add_argument("-n", "--tg", type=int, default=32, help="single-token decodes timed (0: none)")
    ap.add_argument("-p", "--pp", type=int, default=0, help="tokens of one batch timed at depth (0: none)")
    ap.add_argument("-r", "--reps", type=int, default=5)
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("--types", nargs="+", default=["f16", "q8_0", "q4_0"])
    args = ap.parse_args()
    if args.pos:
        if len(args.pos) != 3:
            ap.error("positional form: D N REPS")
        args.depth, args.tg, args.reps = args.pos
    D, N, P = args.depth, args.tg, args.pp
    m = Model(args.model)
    rng = np.random.default_rng(0)
    toks = rng.integers(0, m.n_vocab, D + max(N, P)).astype(np.int32)
    ctxs = {}
    for t in args.types:
        c = Context(m, D + max(N, P), args.threads, max(512, P), type_k=t, type_v=t)
        c.decode(toks[:D], 0, lib.PYRT_OUT_NONE)
        ctxs[t] = c
    tg = {t: [] for t in ctxs}
    pp = {t: [] for t in ctxs}
    for _ in range(args.reps):
        for t, c in ctxs.items():
            if N:
                c.truncate(D)
                t0 = time.perf_counter()
                for i in range(N):
                    c.decode(toks[D + i:D + i + 1], D + i, lib.PYRT_OUT_LOGITS_LAST)
                tg[t].append(N / (time.perf_counter() - t0))
            if P:
                c.truncate(D)
                t0 = time.perf_counter()
                c.decode(toks[D:D + P], D, lib.PYRT_OUT_LOGITS_LAST)
                pp[t].append(P / (time.perf_counter() - t0))
    print(f"library {LIB_PATH}, {args.threads} threads")
    for t, c in ctxs.items():
        line = f"{t}: KV {c.kv_bytes / 2**20:.1f} MiB"
        if N:
            line += f", tg{N} @ depth {D}: {np.median(tg[t]):.1f} t/s"
        if P:
            line += f", pp{P} @ depth {D}: {np.median(pp[t]):.1f} t/s"
        print(line + f" (median of {args.reps})")


if __name__ == "__main__":
    main()
