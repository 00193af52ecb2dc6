#!/usr/bin/env python3
"""pyrt vs llama.cpp, side by side in one run, on the same GGUF files and
thread count. Prints each figure and the ratio pyrt / llama.cpp.

llama.cpp comes from llama-cpp-python built from source into a separate venv
(~/.cache/pyrt/bench-venv, made on first use: several minutes on 2 cores). It
is never a pyrt dependency. Models: SmolLM2-135M Q4_1 (original), its Q8_0 and
Q4_0 (pyrt quantize) and Q4_K_M (llama.cpp's quantizer), and Gemma-3-270m
Q4_K_M. Runs alternate tool by tool, model by model, `--rounds` times.

Real sizes: `--models` also takes the benchmark shapes of benchmarks/make_shapes.py
(random weights in real models' shapes, written on first use to ~/.cache/pyrt/shapes),
keyed `<shape>-<type>`, e.g. smollm2-1.7b-q4_k_m, llama3.1-8b-q4_0; `--shapes` runs
all of them (several GB, long on 2 cores).

    python benchmarks/compare_llamacpp.py -t 2 -r 5 [--llama-python PATH] [--json out.json]
    python benchmarks/compare_llamacpp.py -t 2 -r 3 -p 256 -n 64 --models smollm2-1.7b-q4_k_m
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
try:                                   # installed pyrt, or this source tree
    import pyrt  # noqa: F401
except ImportError:
    sys.path.insert(0, str(HERE.parent))
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE.parent), os.environ.get("PYTHONPATH")]))
LLAMA_CPP_PYTHON = "llama-cpp-python==0.3.36"


def bench_venv_python(cache: Path) -> Path:
    venv = cache / "bench-venv"
    py = venv / "bin" / "python"
    if not py.exists():
        print(f"building {LLAMA_CPP_PYTHON} from source into {venv} (several minutes) ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "--quiet", "numpy", LLAMA_CPP_PYTHON], check=True)
    return py


def shape_models(cache: Path, keys: list[str]) -> dict[str, Path]:
    """Benchmark-shape GGUFs by key, written by make_shapes.py where missing."""
    sys.path.insert(0, str(HERE))
    import make_shapes
    vocab = cache / "models" / make_shapes.VOCAB_SOURCE
    if not vocab.exists():
        from pyrt.registry import ensure_model
        vocab = Path(ensure_model("smollm2-135m"))
    out = {}
    for key in keys:
        shape, qtype = key.rsplit("-", 1)
        path = cache / "shapes" / f"{shape}.{qtype}.gguf"
        if not path.exists():
            print(f"writing {path} ...", file=sys.stderr)
            path.parent.mkdir(parents=True, exist_ok=True)
            make_shapes.write_shape(path, shape, qtype, vocab)
        out[key] = path
    return out


def shape_keys() -> list[str]:
    sys.path.insert(0, str(HERE))
    import make_shapes
    return [f"{s}-{t}" for s in make_shapes.SHAPES for t in make_shapes.TYPES]


def models(cache: Path, llama_py: Path, only: list[str] | None) -> dict[str, Path]:
    shapes = [k for k in only or [] if k in shape_keys()]
    if only and len(shapes) == len(only):
        return shape_models(cache, shapes)
    from pyrt.registry import ensure_model
    from pyrt.quantize import cached_quantize
    src = Path(ensure_model("smollm2-135m"))
    out = {"smollm2-q4_1": src}
    out["smollm2-q8_0"] = Path(cached_quantize(src, "q8_0"))
    out["smollm2-q4_0"] = Path(cached_quantize(src, "q4_0"))
    kq = cache / "quantized" / "SmolLM2-135M-Instruct.llamacpp-q4_k_m.gguf"
    if not kq.exists():
        code = ("import sys, llama_cpp as l; p = l.llama_model_quantize_default_params(); "
                "p.ftype = l.LLAMA_FTYPE_MOSTLY_Q4_K_M; p.allow_requantize = True; "
                "sys.exit(l.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), p))")
        kq.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([str(llama_py), "-c", code, str(src), str(kq)], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    out["smollm2-q4_k_m"] = kq
    try:
        out["gemma3-q4_k_m"] = Path(ensure_model("gemma3-270m"))
    except Exception as e:  # noqa: BLE001 - report and go on without it
        print(f"gemma3-270m unavailable: {e}", file=sys.stderr)
    out.update(shape_models(cache, shapes))
    return {k: v for k, v in out.items() if not only or k in only}


def run_json(cmd: list[str]) -> list[dict]:
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} ... failed:\n{r.stderr[-2000:]}")
    return json.loads(r.stdout[r.stdout.index("["):])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("-r", "--repetitions", type=int, default=5)
    ap.add_argument("-p", "--n-prompt", type=int, default=512)
    ap.add_argument("-n", "--n-gen", type=int, default=128)
    ap.add_argument("-d", "--n-depth", type=int, default=0, help="KV positions filled before each test (llama-bench -d)")
    ap.add_argument("--rounds", type=int, default=1, help="alternate the tools this many times per model")
    ap.add_argument("--generate", type=int, default=128, help="tokens for the Python generate-loop test (0: skip)")
    ap.add_argument("--models", nargs="*", help="subset of model keys (real models or benchmark shapes)")
    ap.add_argument("--shapes", action="store_true", help="every benchmark shape (make_shapes.py) instead")
    ap.add_argument("--llama-python", help="python of an env that has llama_cpp (default: build the bench venv)")
    ap.add_argument("--json", help="write all records here")
    args = ap.parse_args()

    from pyrt.registry import cache_root
    cache = Path(cache_root())
    llama_py = Path(args.llama_python) if args.llama_python else bench_venv_python(cache)
    files = models(cache, llama_py, shape_keys() if args.shapes else args.models)

    results = []
    for key, path in files.items():
        for rnd in range(args.rounds):
            common = ["-m", str(path), "-p", str(args.n_prompt), "-n", str(args.n_gen), "-d", str(args.n_depth),
                      "-t", str(args.threads), "-r", str(args.repetitions)]
            gen = ["--generate", str(args.generate)] if args.generate and key == "smollm2-q4_1" else []
            runs = [("pyrt", [sys.executable, "-m", "pyrt.cli", "bench", "--json", *common, *gen]),
                    ("llama.cpp", [str(llama_py), str(HERE / "llamacpp_bench.py"), *common, *gen])]
            if rnd % 2:
                runs.reverse()
            for tool, cmd in runs:
                for rec in run_json(cmd):
                    rec.update(model_key=key, round=rnd, tool=tool)
                    results.append(rec)
                    print(f"{key:16} {tool:9} {_test(rec):9} {rec['avg_ts']:8.1f} ± {rec['stddev_ts']:.1f} t/s",
                          file=sys.stderr)

    print(f"\nmachine: {cpu_model()}, {os.cpu_count()} CPUs, "
          f"threads={args.threads}, repetitions={args.repetitions}, rounds={args.rounds}")
    print("\n| model | test | pyrt t/s | llama.cpp t/s | pyrt / llama.cpp |")
    print("| ----- | ---- | -------: | ------------: | ---------------: |")
    by = {}
    for r in results:
        by.setdefault((r["model_key"], _test(r), r["tool"]), []).append(r["avg_ts"])
    for (key, test) in sorted({(k, t) for k, t, _ in by}):
        p = by.get((key, test, "pyrt")); l = by.get((key, test, "llama.cpp"))
        if not p or not l:
            continue
        pm, lm = sum(p) / len(p), sum(l) / len(l)
        print(f"| {key} | {test} | {pm:.1f} | {lm:.1f} | {pm / lm:.2f}x |")
    extra = [r for r in results if r["tool"] == "pyrt" and r.get("python_overhead_pct") is not None]
    for r in extra:
        print(f"\npyrt generate loop: Python overhead {r['python_overhead_pct']:.1f} % of each step")
    for tool in ("pyrt", "llama.cpp"):
        rs = [r for r in results if r["tool"] == tool and r["model_key"] == "smollm2-q4_1"]
        if rs:
            print(f"{tool}: SmolLM2 Q4_1 load {min(r['load_ms'] for r in rs):.0f} ms, "
                  f"peak RSS {max(r['peak_rss_mb'] for r in rs):.0f} MiB")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _test(r: dict) -> str:
    if r.get("test") == "generate" or r.get("model_type") == "generate":
        return "generate"
    t = f"pp{r['n_prompt']}" if r["n_prompt"] else f"tg{r['n_gen']}"
    return t + (f" @ d{r['n_depth']}" if r.get("n_depth") else "")


if __name__ == "__main__":
    sys.exit(main())
