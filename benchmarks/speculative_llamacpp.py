#!/usr/bin/env python3
"""The prompts of benchmarks/speculative.py through llama-cpp-python's own prompt lookup
(`LlamaPromptLookupDecoding`, num_pred_tokens=10 as its docs suggest), plain vs lookup, greedy,
in the native-build bench venv of compare_llamacpp.py. Gives the speed-up llama.cpp users get
from lookup on the same prompts and models, next to pyrt's (run speculative.py in the same minutes).

    python benchmarks/speculative_llamacpp.py [--models smollm2-135m gemma3-270m] [-n 128] [-t 2]

The prompts are tokenized here with pyrt (the chat template where the model has one) and the
token ids handed to llama.cpp, so both tools continue the same tokens. Time after the first
generated token (the prompt is excluded); each prompt runs plain / lookup twice, alternating,
keeping the faster; whether lookup's tokens equal plain decoding's is printed per prompt.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def worker(spec_file: str) -> int:
    """Runs in the bench venv: time each prompt plain and with lookup."""
    import llama_cpp
    from llama_cpp.llama_speculative import LlamaPromptLookupDecoding
    spec = json.loads(Path(spec_file).read_text())
    out = []
    llms = {m: llama_cpp.Llama(spec["model"], n_ctx=2048, n_threads=spec["threads"], n_threads_batch=spec["threads"],
                               verbose=False, seed=1,
                               draft_model=LlamaPromptLookupDecoding(num_pred_tokens=10) if m == "lookup" else None)
            for m in ("off", "lookup")}
    for toks in spec["prompts"]:
        res = {}
        for m in ("off", "lookup", "off", "lookup"):
            llm = llms[m]
            llm.reset()
            got, t0 = [], None
            for tok in llm.generate(toks, temp=0.0, top_k=1, reset=True):
                if t0 is None:
                    t0 = time.perf_counter()
                got.append(int(tok))
                if tok == llm.token_eos() or len(got) >= spec["n"]:
                    break
            dt = time.perf_counter() - t0
            if m not in res or dt < res[m][1]:
                res[m] = (got, dt)
        n_plain, n_look = len(res["off"][0]) - 1, len(res["lookup"][0]) - 1
        out.append(dict(n=n_plain, plain_ts=n_plain / res["off"][1] if n_plain else 0.0,
                        lookup_ts=n_look / res["lookup"][1] if n_look else 0.0,
                        same=res["off"][0] == res["lookup"][0]))
    print(json.dumps(out))
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["smollm2-135m", "gemma3-270m"])
    ap.add_argument("-n", type=int, default=128)
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("--llama-python", help="python of an env that has llama_cpp (default: the bench venv)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args.worker)

    sys.path.insert(0, str(HERE))
    from compare_llamacpp import bench_venv_python, cpu_model
    from speculative import FREE, GROUNDED, summary

    from pyrt import Llama
    from pyrt.registry import cache_root, ensure_model
    llama_py = Path(args.llama_python) if args.llama_python else bench_venv_python(Path(cache_root()))
    print(f"CPU: {cpu_model()}, {args.threads} threads, {args.n} tokens, greedy; llama-cpp-python prompt lookup")
    for name in args.models:
        path = ensure_model(name)
        with Llama(path, n_ctx=2048, n_threads=1) as llm:
            def toks(text):
                return (llm.chat_tokens([{"role": "user", "content": text}]) if llm.chat_template
                        else llm.tokenize(text))
            groups = {"input-grounded": [toks(p) for p in GROUNDED], "free-form": [toks(p) for p in FREE]}
        for title, prompts in groups.items():
            with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
                json.dump(dict(model=str(path), threads=args.threads, n=args.n, prompts=prompts), f)
            try:
                r = subprocess.run([str(llama_py), __file__, "--worker", f.name], capture_output=True, text=True)
            finally:
                os.unlink(f.name)
            if r.returncode:
                raise SystemExit(f"llama.cpp worker failed:\n{r.stderr[-2000:]}")
            rows = json.loads(r.stdout.strip().splitlines()[-1])
            print(f"\n{name} llama.cpp lookup: {title}")
            print(f"{'prompt':42} {'tok':>4} {'plain t/s':>10} {'lookup t/s':>10} {'ratio':>6} same")
            ratios = []
            src = GROUNDED if title == "input-grounded" else FREE
            for text, row in zip(src, rows):
                ratio = row["lookup_ts"] / row["plain_ts"] if row["plain_ts"] else 0.0
                ratios.append(ratio)
                print(f"{text[:40].replace(chr(10), ' '):42} {row['n']:4d} {row['plain_ts']:10.1f} "
                      f"{row['lookup_ts']:10.1f} {ratio:6.2f} {'yes' if row['same'] else 'NO'}")
            print(summary(ratios))
    return 0


if __name__ == "__main__":
    sys.exit(main())
