#!/usr/bin/env python3
"""Single-token matmul (GEMV) throughput per weight type: weight bytes read per second through
pyrt_matmul with one activation row, on random blocks with small finite scales. Says whether a
type's token-generation path is memory-bound (compare with Q4_0 / Q8_0 on the same run).

    python benchmarks/gemv_bench.py [--rows 14336 --cols 4096] [-t 2] [--types q4_0 q4_K q6_K]
        [--kernels avx2|avx512|scalar]   (or PYRT_KERNELS=...)

Each call quantizes the activations, splits rows over fresh threads and reads the whole matrix;
the matrix is much larger than the caches, so the figure is the streaming rate. Rounds
alternate the types; the best of each type's repetitions is printed."""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from gguf import GGMLQuantizationType as T  # noqa: E402
from gguf.constants import GGML_QUANT_SIZES  # noqa: E402

# byte offsets of fp16 scales inside a block (super-block d / dmin, or the block's d)
SCALE_OFFS = {T.Q4_0: (0,), T.Q4_1: (0, 2), T.Q5_0: (0,), T.Q8_0: (0,), T.Q4_K: (0, 2), T.Q5_K: (0, 2),
              T.Q6_K: (208,), T.Q2_K: (80, 82), T.Q3_K: (108,), T.IQ4_NL: (0,), T.IQ4_XS: (0,)}


def random_blocks(t: T, rows: int, cols: int, rng) -> np.ndarray:
    """Random codes and sub-block scales, small finite positive fp16 block scales."""
    bs, bb = GGML_QUANT_SIZES[t]
    nb = rows * cols // bs
    raw = rng.integers(0, 256, (nb, bb), dtype=np.uint8)
    for off in SCALE_OFFS[t]:
        d = rng.uniform(1e-3, 2e-3, nb).astype(np.float16)
        raw[:, off:off + 2] = d.view(np.uint8).reshape(nb, 2)
    return raw.reshape(-1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=14336)
    ap.add_argument("--cols", type=int, default=4096)
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("-r", "--repetitions", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--types", nargs="*", default=["q4_0", "q8_0", "q4_K", "q5_K", "q6_K"])
    ap.add_argument("--kernels", default=None, help="avx2 | avx512 | scalar | neon (default: best)")
    args = ap.parse_args()
    if args.kernels:
        os.environ["PYRT_KERNELS"] = args.kernels
    from pyrt._native import check, ffi, lib, ptr
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, args.cols)).astype(np.float32)
    y = np.zeros((1, args.rows), np.float32)
    mats = {name: random_blocks(T[name.upper()], args.rows, args.cols, rng) for name in args.types}
    best: dict[str, float] = {}
    for _ in range(args.rounds):
        for name, w in mats.items():
            t = int(T[name.upper()])
            for _ in range(args.repetitions):
                t0 = time.perf_counter()
                check(lib.pyrt_matmul(lib.PYRT_KERNELS_AUTO, t, ptr(w), args.rows, args.cols,
                                      ptr(x, "float *"), 1, ptr(y, "float *"), args.threads), "matmul")
                dt = time.perf_counter() - t0
                best[name] = min(best.get(name, 1e9), dt)
    ref = best.get("q4_0")
    print(f"GEMV {args.rows} x {args.cols}, {args.threads} threads, kernels={os.environ.get('PYRT_KERNELS', 'auto')}")
    for name, dt in best.items():
        gbs = mats[name].nbytes / dt / 1e9
        rel = f"  {gbs / (mats['q4_0'].nbytes / ref / 1e9) * 100:5.1f} % of q4_0's bytes/s" if ref else ""
        print(f"{name:6} {mats[name].nbytes / 1e6:7.1f} MB  {dt * 1e3:7.2f} ms  {gbs:6.2f} GB/s{rel}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
