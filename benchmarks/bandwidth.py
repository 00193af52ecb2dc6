#!/usr/bin/env python3
"""Achieved memory bandwidth during token generation, against the machine's measured read rate.

Token generation reads every weight matrix once per token, plus the KV cache up to the current
position, so bytes per token / seconds per token is the rate a tg step streams memory at. This
script measures the machine's read and copy bandwidth (benchmarks/membw.c, compiled here with the
system C compiler; a buffer much larger than the caches, the same thread count), then runs tg on
each model with pyrt bench and, side by side, llama.cpp (benchmarks/llamacpp_bench.py in the
bench venv of compare_llamacpp.py), and prints t/s, GB/s and the share of the read bandwidth.

Bytes per token: all tensors of the file except the token embedding, which is counted only when
it doubles as the output matrix (tied embeddings; otherwise one row of it is read), plus the K
and V rows of every layer at the mean position of the test (depth + n_gen / 2, F16 cache).

    python benchmarks/bandwidth.py --models smollm2-1.7b-q4_0 llama3.1-8b-q4_k_m [-n 64] [-d 0] [-t 2]
    python benchmarks/bandwidth.py --paths model.gguf --no-llamacpp
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from compare_llamacpp import bench_venv_python, cpu_model, models, run_json  # noqa: E402

from pyrt.gguf_file import GGUFFile  # noqa: E402
from pyrt.model import read_hparams  # noqa: E402


def machine_bandwidth(mib: int, threads: int, reps: int) -> dict:
    """Best read and copy rates of membw.c over a `mib` MiB buffer."""
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not cc:
        raise SystemExit("no C compiler found (set CC) to build benchmarks/membw.c")
    arch = ["-march=native"] if platform.machine() in ("x86_64", "AMD64", "aarch64", "arm64") else []
    with tempfile.TemporaryDirectory() as tmp:
        exe = Path(tmp) / "membw"
        subprocess.run([cc, "-O3", *arch, "-pthread", str(HERE / "membw.c"), "-o", str(exe)], check=True)
        out = subprocess.run([str(exe), str(mib), str(threads), str(reps)], check=True,
                             capture_output=True, text=True).stdout
    return json.loads(out)


def bytes_per_token(path: Path, pos: float) -> tuple[int, int]:
    """(weight bytes, KV bytes) one generated token reads at position `pos` (F16 cache)."""
    with GGUFFile(path) as g:
        hp = read_hparams(g)
        t = g.tensors
        weights = sum(ti.nbytes for name, ti in t.items() if name != "token_embd.weight")
        emb = t.get("token_embd.weight")
        if emb is not None:
            weights += emb.nbytes if "output.weight" not in t else emb.nbytes // max(1, emb.shape[1])
    kv = int(hp.n_layer) * 2 * int(hp.n_head_kv) * int(hp.head_dim) * 2 * pos
    return weights, int(kv)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="*", default=[], help="model keys, as compare_llamacpp.py takes them")
    ap.add_argument("--paths", nargs="*", default=[], help="GGUF files")
    ap.add_argument("-n", "--n-gen", type=int, default=64)
    ap.add_argument("-d", "--n-depth", type=int, default=0)
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("-r", "--repetitions", type=int, default=3)
    ap.add_argument("--mib", type=int, default=2048, help="buffer size for the machine's read rate")
    ap.add_argument("--no-llamacpp", action="store_true", help="pyrt only")
    ap.add_argument("--llama-python", help="python of an env that has llama_cpp (default: the bench venv)")
    args = ap.parse_args()
    if not args.models and not args.paths:
        ap.error("name --models or --paths")

    from pyrt.registry import cache_root
    cache = Path(cache_root())
    llama_py = None if args.no_llamacpp else (
        Path(args.llama_python) if args.llama_python else bench_venv_python(cache))
    files = dict(models(cache, llama_py, args.models)) if args.models else {}
    files.update({Path(p).name: Path(p) for p in args.paths})

    bw = machine_bandwidth(args.mib, args.threads, 10)
    print(f"machine: {cpu_model()}, {os.cpu_count()} CPUs, threads={args.threads}: read {bw['read_gbs']:.1f} GB/s (one stream per "
          f"thread {bw['read1_gbs']:.1f}, 8 streams {bw['read8_gbs']:.1f}), copy {bw['copy_gbs']:.1f} GB/s ({bw['mib']} MiB buffer, best of 10)", file=sys.stderr)
    common = ["-p", "0", "-n", str(args.n_gen), "-d", str(args.n_depth), "-t", str(args.threads),
              "-r", str(args.repetitions)]
    rows = []
    for key, path in files.items():
        w, kv = bytes_per_token(path, args.n_depth + args.n_gen / 2)
        runs = [("pyrt", [sys.executable, "-m", "pyrt.cli", "bench", "--json", "-m", str(path), *common])]
        if llama_py:
            runs.append(("llama.cpp", [str(llama_py), str(HERE / "llamacpp_bench.py"), "-m", str(path), *common]))
        for tool, cmd in runs:
            ts = run_json(cmd)[0]["avg_ts"]
            gbs = (w + kv) * ts / 1e9
            rows.append((key, tool, ts, (w + kv) / 2**20, gbs, 100 * gbs / bw["read_gbs"]))
            print(f"{key} {tool}: {ts:.2f} t/s, {gbs:.1f} GB/s", file=sys.stderr)

    print(f"\nmachine: {cpu_model()}; measured read {bw['read_gbs']:.1f} GB/s, copy {bw['copy_gbs']:.1f} GB/s "
          f"({args.threads} threads); tg{args.n_gen}" + (f" @ d{args.n_depth}" if args.n_depth else ""))
    print("\n| model | tool | tg t/s | MiB read per token | GB/s | % of read bandwidth |")
    print("| ----- | ---- | -----: | -----------------: | ---: | ------------------: |")
    for key, tool, ts, mib, gbs, pct in rows:
        print(f"| {key} | {tool} | {ts:.2f} | {mib:.0f} | {gbs:.1f} | {pct:.0f} % |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
