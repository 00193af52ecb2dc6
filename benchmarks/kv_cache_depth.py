"""Token generation at depth with each KV cache type (BENCHMARKS.md, 'Quantized KV cache'):
fill D random tokens, then time N single-token decodes, the f16 / q8_0 / q4_0 contexts alternating.

    python benchmarks/kv_cache_depth.py MODEL.gguf D N REPS
"""
import sys, time, numpy as np
from pyrt.model import Model, Context
from pyrt._native import lib
path, D, N, reps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
m = Model(path)
rng = np.random.default_rng(0)
toks = rng.integers(0, m.n_vocab, D + N).astype(np.int32)
ctxs = {}
for t in ("f16", "q8_0", "q4_0"):
    c = Context(m, D + N, 2, 512, type_k=t, type_v=t)
    c.decode(toks[:D], 0, lib.PYRT_OUT_NONE)
    ctxs[t] = c
res = {t: [] for t in ctxs}
for r in range(reps):
    for t, c in ctxs.items():
        c.truncate(D)
        t0 = time.perf_counter()
        for i in range(N):
            c.decode(toks[D + i:D + i + 1], D + i, lib.PYRT_OUT_LOGITS_LAST)
        res[t].append(N / (time.perf_counter() - t0))
for t, c in ctxs.items():
    print(f"{t}: KV {c.kv_bytes / 2**20:.1f} MiB, tg{N} @ depth {D}: {np.median(res[t]):.1f} t/s (median of {reps})")
