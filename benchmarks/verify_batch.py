"""Per-token batch (speculative verification / continuous batching) vs separate decodes.

A batch of k tokens decoded with PYRT_NUMERICS_PER_TOKEN (every token in
single-token arithmetic, all logits) against k one-token decodes at the same
positions. Runs alternate (batch, separate, batch, ...) and the medians (or,
with --best, the fastest runs: steadier on a shared machine) are reported, so
both sides see the same machine load. The batch's logits are
checked against the separate decodes' bit for bit.

    PYTHONPATH=. python benchmarks/verify_batch.py [MODEL.gguf ...] [--ks 1,2,4,8] [--reps 15] [--threads 2] [--best]
        [--cpu-time] [--seqs [--depth 120]]

--seqs times what continuous batching runs instead (pyrt/batching.py): one decode step of k
sequences, each one token at its own depth (about --depth, the sequences 7 positions apart), in
one pyrt_decode_batch call, against one sequence's step; "k x 1tok/batch" is then the
aggregate tokens/s of k streams over one stream's, as far as the forward pass goes.

--cpu-time times the process's CPU seconds instead of the wall clock: with --threads 1 a
figure other jobs on a shared machine hardly move (with 2 threads a descheduled worker stalls
every barrier, and the wall-clock figures can be 10x off).
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path

import numpy as np

from pyrt._native import lib
from pyrt.model import Context, Model

MODELS = Path.home() / ".cache" / "pyrt" / "models"
DEFAULT = [MODELS / "SmolLM2-135M-Instruct.Q4_1.gguf", MODELS / "gemma-3-270m-q4_k_m.gguf"]


def cpu_line() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def bench(path: Path, ks: list[int], reps: int, threads: int, best: bool, clock=time.perf_counter) -> None:
    m = Model(path)
    c = Context(m, n_ctx=1024, n_threads=threads)
    toks = list(range(100, 400))
    n0 = 200
    c.decode(toks[:n0], 0, lib.PYRT_OUT_LOGITS_LAST)
    stat = min if best else statistics.median
    what = "CPU ms" if clock is time.process_time else "ms"
    print(f"{path.name}  ({threads} threads, {reps} alternating runs, {'best' if best else 'median'} {what})")
    print(f"{'k':>3} {'batch':>8} {'separate':>9} {'batch/1tok':>10} {'sep/batch':>9}  identical")
    one = None
    for k in ks:
        seq = toks[n0:n0 + k]
        tb, ts = [], []
        ref = batch = None
        for _ in range(reps):
            t = clock()
            batch = c.decode(seq, n0, lib.PYRT_OUT_LOGITS_ALL, n_shape=lib.PYRT_NUMERICS_PER_TOKEN)
            tb.append(clock() - t)
            t = clock()
            rows = [c.decode([seq[i]], n0 + i, lib.PYRT_OUT_LOGITS_LAST) for i in range(k)]
            ts.append(clock() - t)
            ref = np.stack([np.asarray(r).reshape(-1) for r in rows])
        b, s = stat(tb) * 1e3, stat(ts) * 1e3
        if k == 1:
            one = s
        same = np.array_equal(np.asarray(batch).reshape(k, -1), ref)
        rel = f"{b / one:10.2f}" if one else f"{'':>10}"
        print(f"{k:>3} {b:8.2f} {s:9.2f} {rel} {s / b:9.2f}  {'yes' if same else 'NO'}")


def bench_seqs(path: Path, ks: list[int], reps: int, threads: int, best: bool, depth: int,
               clock=time.perf_counter) -> None:
    m = Model(path)
    n_seq = max(ks)
    c = Context(m, n_ctx=depth + 16 + 7 * n_seq + 8, n_threads=threads, n_seq=n_seq)
    rng = np.random.default_rng(0)
    d0 = [depth + 7 * s for s in range(n_seq)]
    for s in range(n_seq):
        c.decode_batch([(s, rng.integers(100, 5000, d0[s]).astype(np.int32), 0, lib.PYRT_OUT_LOGITS_LAST, 0)])
    stat = min if best else statistics.median
    what = "CPU ms" if clock is time.process_time else "ms"
    print(f"{path.name}  ({threads} threads, decode steps of k sequences at depth ~{depth}, {reps} alternating "
          f"runs, {'best' if best else 'median'} {what})")
    print(f"{'k':>3} {'step':>8} {'step/1tok':>9} {'k x 1tok/step':>13}")
    times: dict[int, list[float]] = {k: [] for k in ks}
    for i in range(reps):
        for k in ks:                       # alternating, so every k sees the same machine load
            pos = [d + i % 8 for d in d0]
            for s in range(k):
                c.seq_truncate(s, pos[s])
            parts = [(s, np.array([200 + i], np.int32), pos[s], lib.PYRT_OUT_LOGITS_LAST, 0) for s in range(k)]
            t = clock()
            c.decode_batch(parts)
            times[k].append(clock() - t)
    one = stat(times[1]) * 1e3
    for k in ks:
        t = stat(times[k]) * 1e3
        print(f"{k:>3} {t:8.2f} {t / one:9.2f} {k * one / t:13.2f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="*", type=Path)
    ap.add_argument("--ks", default="1,2,3,4,8")
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--best", action="store_true", help="report the fastest run of each side, not the median")
    ap.add_argument("--cpu-time", action="store_true", help="time process CPU seconds (use with --threads 1)")
    ap.add_argument("--seqs", action="store_true", help="decode steps of k sequences (continuous batching)")
    ap.add_argument("--depth", type=int, default=120, help="--seqs: cached tokens per sequence")
    a = ap.parse_args()
    ks = [int(x) for x in a.ks.split(",")]
    if 1 not in ks:
        ks = [1] + ks
    print("CPU:", cpu_line(), "| kernels:", os.environ.get("PYRT_KERNELS", "auto"))
    clock = time.process_time if a.cpu_time else time.perf_counter
    for p in a.models or [p for p in DEFAULT if p.exists()]:
        if a.seqs:
            bench_seqs(p, ks, a.reps, a.threads, a.best, a.depth, clock)
        else:
            bench(p, ks, a.reps, a.threads, a.best, clock)


if __name__ == "__main__":
    main()
