#!/usr/bin/env python3
"""Run the GGUF mutation sweep of tests/mutation.py at scale and report counts.

    python scripts/mutate_100k.py                       # 100,000 mutants, 2 workers
    python scripts/mutate_100k.py -n 20000 --smollm2-share 0.02 --json out.json
    python scripts/mutate_100k.py --replay tiny:1234 --out mutant.gguf   # rebuild one mutant

Mutants are split over the seeds `tiny`, `tiny_tied` (tests/tiny_model.py) and `smollm2`
(the real SmolLM2-135M header, mutated in place; ~0.1 s per mutant because every loaded
mutant builds a 49k-token tokenizer and runs the 135M model, hence a small share by default).
Outcomes: rejected (GGUFError), unsupported (UnsupportedError), value_error (a plain
ValueError, e.g. from the tokenizer), memory_error, loaded (loaded and generated),
gen_error (loaded; generation raised a clean error, e.g. all-NaN logits) — and the bugs:
exception (any other exception type), crash (worker killed by a signal), hang (> 2 s).
Exit status 1 if any bug was seen.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

import mutation  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", "--mutants", type=int, default=100_000)
    ap.add_argument("-j", "--jobs", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--smollm2-share", type=float, default=0.03,
                    help="fraction of mutants drawn from the SmolLM2 seed (default 0.03)")
    ap.add_argument("--master", type=int, default=1, help="master seed of the mutant generator")
    ap.add_argument("--chunk", type=int, default=5000, help="mutants per worker process")
    ap.add_argument("--json", help="write the full report here")
    ap.add_argument("--replay", metavar="SEED:I", help="rebuild one mutant and run it in-process")
    ap.add_argument("--out", help="with --replay: write the mutant file here")
    args = ap.parse_args()

    if args.replay:
        seed, i = args.replay.split(":")
        m, data = mutation.replay(seed, int(i), args.master)
        print(f"{seed}:{i}: {m.describe()}")
        out = Path(args.out or f"mutant-{seed}-{i}.gguf")
        if seed == "smollm2" and m.truncate is None:
            data = m.apply(mutation.seed_bytes(seed))
        out.write_bytes(data)
        print(f"wrote {out} ({len(data)} bytes); running it:")
        print(mutation.run_one(str(out)))
        return 0

    n_small = int(args.mutants * args.smollm2_share)
    n_tiny = (args.mutants - n_small) * 3 // 5
    n_tied = args.mutants - n_small - n_tiny
    plan = []
    for seed, n in (("tiny", n_tiny), ("tiny_tied", n_tied), ("smollm2", n_small)):
        chunk = args.chunk if seed != "smollm2" else max(1, min(args.chunk, 500))
        plan += [(seed, a, min(a + chunk, n)) for a in range(0, n, chunk)]
    # interleave so that the slow SmolLM2 chunks do not all run at the end
    plan.sort(key=lambda c: (c[1], c[0]))

    last = [0.0]

    def progress(r: mutation.Report) -> None:
        now = time.monotonic()
        if now - last[0] > 15:
            last[0] = now
            print(f"  {r.total:7d} mutants  {dict(r.counts)}", flush=True)

    print(f"{args.mutants} mutants over {len(plan)} worker runs, {args.jobs} in parallel "
          f"(tiny {n_tiny}, tiny_tied {n_tied}, smollm2 {n_small}); master seed {args.master}")
    r = mutation.run(plan, master=args.master, parallel=args.jobs, progress=progress)

    print(f"\n{r.total} mutants in {r.elapsed:.0f} s "
          f"({r.total / max(r.elapsed, 1e-9):.0f}/s); slowest {r.slowest:.2f} s; "
          f"max worker RSS {r.maxrss / 2**20:.0f} MiB (after {':'.join(map(str, r.maxrss_at))})")
    width = max(len(k) for k in mutation.CLEAN + mutation.BUGS)
    for k in mutation.CLEAN + mutation.BUGS:
        per_seed = ", ".join(f"{s} {c[k]}" for s, c in r.by_seed.items() if c[k])
        print(f"  {k:<{width}} {r.counts[k]:7d}   {per_seed}")
    for k in ("value_error", "gen_error", "unsupported", "memory_error") + mutation.BUGS:
        if r.samples.get(k):
            print(f"\n{k} (distinct messages, up to 10):")
            for seed, i, msg in list(r.samples[k].values())[:10]:
                print(f"  {seed}:{i}  {msg[:200]}")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "mutants": r.total, "elapsed_s": r.elapsed, "counts": dict(r.counts),
            "by_seed": {s: dict(c) for s, c in r.by_seed.items()}, "maxrss": r.maxrss,
            "slowest_s": r.slowest, "bugs": r.bugs,
            "samples": {k: list(v.values()) for k, v in r.samples.items()},
        }, indent=1))
    return 1 if r.bugs else 0


if __name__ == "__main__":
    sys.exit(main())
