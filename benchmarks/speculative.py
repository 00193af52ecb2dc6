"""Speculative decoding speed: plain decoding vs prompt lookup (and a draft model) on the same
prompts, same seed; the token sequences are checked identical on every run.

    python benchmarks/speculative.py [--models smollm2-135m gemma3-270m] [-n 128] [-t 2]
    python benchmarks/speculative.py --draft-pair     # SmolLM2 Q4_0 drafting SmolLM2 Q8_0
    python benchmarks/speculative.py -t 1 --cpu-time  # steadier on a shared machine
    python benchmarks/speculative.py --replay 1,1.32,1.73,2.17   # batch costs, no timing

Input-grounded prompts (rewrite/fix code, extract, quote) are where drafts from the prompt pay
off; free-form prompts check that adaptive drafting does not cost speed. Prints tokens/s of
each mode per prompt, the ratio, and the acceptance counts; under each table the totals:
drafted tokens accepted, verify calls, and tokens a verify call yielded on average (the
accepted drafts plus the token it was made for); a line with the CPU model first.

--cpu-time times the process's CPU seconds instead of the wall clock: with one thread a figure
other jobs on a shared machine hardly move (with 2 threads a descheduled worker stalls every
barrier of a step); `--rounds` alternates plain / speculative that many times per prompt and
keeps the faster of each.

--replay C1,C2,..: no timing; each prompt's plain greedy tokens are generated once and the
speculative loop is replayed over them (a draft's acceptance follows from those tokens), a
verify call of b tokens costing Cb one-token decodes (benchmarks/verify_batch.py measures
them). Prints the ratio the lookup speculator would reach at those costs and the ceiling: the
best choice of draft length at every step knowing which drafts will be accepted (drafts of up
to len(C) - 1 tokens from the same n-gram match).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare_llamacpp import cpu_model  # noqa: E402

CODE = '''def load_users(path):
    users = []
    with open(path) as f:
        for line in f:
            name, age, email = line.strip().split(",")
            users.append({"name": name, "age": int(age), "email": email})
    return users

def adults(users):
    result = []
    for u in users:
        if u["age"] >= 18:
            result.append(u)
    return result
'''
TEXT = ("The meeting on 12 March was attended by Maria Lopez (finance), Tom Becker (sales) and "
        "Ana Silva (engineering). Maria reported that Q1 revenue grew 8 percent to 4.2 million "
        "euros. Tom said the Berlin office will open in June. Ana presented the new release plan: "
        "version 3.1 ships on 30 April, version 3.2 on 15 July.")
GROUNDED = [
    f"Add type hints to this code and return the whole code:\n\n{CODE}",
    f"Rename the variable `users` to `people` everywhere in this code:\n\n{CODE}",
    f"Fix the bug: adults() should also skip users without an email. Return the code.\n\n{CODE}",
    f"Rewrite this code using list comprehensions; keep function names:\n\n{CODE}",
    f"Copy this code and add a docstring to each function:\n\n{CODE}",
    f"Extract every person and their department from this text as 'name: department' lines.\n\n{TEXT}",
    f"Quote the sentence of this text that mentions revenue, word for word.\n\n{TEXT}",
    f"List the dates mentioned in this text with what happens on each.\n\n{TEXT}",
    f"Summarize this text in two sentences, quoting the numbers exactly.\n\n{TEXT}",
    f"Repeat this text but replace 'Berlin' with 'Vienna'.\n\n{TEXT}",
    f"Convert this code to use pathlib for the path:\n\n{CODE}",
    f"Translate the comments and names of this code to clearer English names:\n\n{CODE}",
]
FREE = [
    "Write a short poem about the sea.",
    "Explain why the sky is blue to a child.",
    "Give three tips for learning a new language.",
    "Tell a short story about a robot who learns to paint.",
]


def run(llm, prompts, n, mode, seed=1, rounds=2, clock=time.perf_counter):
    from pyrt.generate import generate_tokens
    from pyrt.sampling import SamplingParams
    params = SamplingParams(temperature=0.0, seed=seed)
    rows = []
    for text in prompts:
        toks = (llm.chat_tokens([{"role": "user", "content": text}]) if llm.chat_template
                else llm.tokenize(text))
        res = {}
        for m in ("off", mode) * rounds:               # alternate, keep the faster of each
            llm.reset()
            llm.eval_prefix(toks)                      # prompt time is not what is compared
            t = clock()
            out = list(generate_tokens(llm, toks, params, max_tokens=n,
                                       speculator=llm._speculator(m)))
            dt = clock() - t
            st = dict(llm.last_stats) if m != "off" else {}
            prev = res.get(m)
            if prev is not None and prev[0] != out:
                raise SystemExit(f"nondeterministic output in mode {m}")
            if prev is None or dt < prev[1]:
                res[m] = (out, dt, st)
        if res["off"][0] != res[mode][0]:
            raise SystemExit(f"speculative output differs from plain decoding on: {text[:60]!r}")
        n_tok = len(res["off"][0])
        rows.append((text, n_tok, n_tok / res["off"][1], n_tok / res[mode][1], res[mode][2]))
    return rows


def replay(llm, prompts, n, costs):
    """Per prompt: (tokens, speculator's ratio, ceiling ratio) at `costs` (see the module doc)."""
    from pyrt.generate import generate_tokens
    from pyrt.sampling import SamplingParams
    from pyrt.speculative import PromptLookup
    rows = []
    for text in prompts:
        toks = (llm.chat_tokens([{"role": "user", "content": text}]) if llm.chat_template
                else llm.tokenize(text))
        llm.reset()
        steps = generate_tokens(llm, toks, SamplingParams(temperature=0.0), max_tokens=n)
        out = list(steps)
        n_dec = len(out) if len(out) < n else len(out) - 1     # decode calls plain decoding made
        # the speculator, as generate_step drives it: propose after each sampled token that
        # is not the next one of the current draft, record each draft's outcome
        spec = llm._speculator("lookup")
        hist, ahead, drafted, cost = list(toks), [], 0, 0.0
        for i, tok in enumerate(out[:n_dec]):
            if ahead:
                if ahead[0] == tok:
                    ahead.pop(0)
                    hist.append(tok)
                    if not ahead:
                        spec.record(drafted, drafted)
                    continue
                spec.record(drafted, drafted - len(ahead))
            room = min(llm.n_ctx() - len(hist) - 1, n - i - 2)
            ahead = spec.propose(hist + [tok], room) if room > 0 else []
            drafted = len(ahead)
            cost += costs[drafted]
            hist.append(tok)
        # the ceiling: best[i] = least cost from the decode of token i on, a draft of d tokens
        # allowed where the match's first d continuation tokens are the right ones
        lookup = PromptLookup(spec.drafter.max_ngram, spec.drafter.min_ngram)
        best = [0.0] * (n_dec + 1)
        for i in range(n_dec - 1, -1, -1):
            h = toks + out[:i + 1]
            cont = lookup.propose(h, min(len(costs) - 1, n_dec - 1 - i))
            ok = next((j for j, t in enumerate(cont) if t != out[i + 1 + j]), len(cont))
            best[i] = min(costs[d] + best[i + 1 + d] for d in range(ok + 1))
        rows.append((text, len(out), n_dec / cost, n_dec / best[0]))
    return rows


def report_replay(title, rows):
    print(f"\n{title}")
    print(f"{'prompt':42} {'tok':>4} {'lookup':>7} {'ceiling':>8}")
    for text, n_tok, r, c in rows:
        print(f"{text[:40].replace(chr(10), ' '):42} {n_tok:4d} {r:7.2f} {c:8.2f}")
    print(f"lookup: {summary([r for _, _, r, _ in rows])}; "
          f"ceiling: {summary([c for *_, c in rows])}")


def report(title, rows):
    print(f"\n{title}")
    print(f"{'prompt':42} {'tok':>4} {'plain t/s':>10} {'spec t/s':>9} {'ratio':>6} {'acc/draft':>10}")
    ratios = []
    for text, n_tok, a, b, st in rows:
        ratios.append(b / a)
        print(f"{text[:40].replace(chr(10), ' '):42} {n_tok:4d} {a:10.1f} {b:9.1f} {b / a:6.2f} "
              f"{st.get('accepted_n', 0):4d}/{st.get('drafted_n', 0):<5d}")
    print(summary(ratios))
    acc, dr, calls = (sum(st.get(key, 0) for *_, st in rows)
                      for key in ("accepted_n", "drafted_n", "draft_calls"))
    if dr:
        print(f"accepted {acc}/{dr} drafted tokens ({100 * acc / dr:.0f} %), {calls} verify calls, "
              f"{(acc + calls) / calls:.2f} tokens per verify call")


def summary(ratios) -> str:
    """The line under a table: geometric mean and minimum of the ratios."""
    gm = 1.0
    for r in ratios:
        gm *= r
    return f"geometric mean ratio {gm ** (1 / len(ratios)):.2f}, min {min(ratios):.2f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["smollm2-135m", "gemma3-270m"])
    ap.add_argument("-n", type=int, default=128)
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("--draft-pair", action="store_true")
    ap.add_argument("--rounds", type=int, default=2, help="alternating runs of each mode per prompt")
    ap.add_argument("--cpu-time", action="store_true", help="time process CPU seconds (use with -t 1)")
    ap.add_argument("--replay", metavar="C1,C2,..", help="replay at these batch costs, no timing")
    args = ap.parse_args()
    from pyrt import Llama
    opts = {"rounds": args.rounds, "clock": time.process_time if args.cpu_time else time.perf_counter}
    print(f"CPU: {cpu_model()}, {args.threads} threads, {args.n} tokens, greedy"
          f"{', CPU time' if args.cpu_time else ''}")
    if args.draft_pair:
        from pyrt.quantize import cached_quantize
        from pyrt.registry import ensure_model
        src = ensure_model("smollm2-135m")
        with Llama(cached_quantize(src, "q8_0"), n_ctx=2048, n_threads=args.threads,
                   draft_model=str(cached_quantize(src, "q4_0"))) as llm:
            report("SmolLM2 Q8_0 with a Q4_0 draft: grounded", run(llm, GROUNDED, args.n, "draft", **opts))
            report("SmolLM2 Q8_0 with a Q4_0 draft: free-form", run(llm, FREE, args.n, "draft", **opts))
        return 0
    costs = None
    if args.replay:
        costs = [float(c) for c in args.replay.split(",")]
        if costs[0] != 1.0 or any(c <= 0 for c in costs):
            ap.error("--replay: a cost per batch size from 1 token on, the first 1")
        print(f"replay at batch costs {args.replay} (one-token decodes for 1, 2, .. tokens)")
    for name in args.models:
        with Llama(name, n_ctx=2048, n_threads=args.threads) as llm:
            if costs:
                for title, prompts in (("input-grounded", GROUNDED), ("free-form", FREE)):
                    report_replay(f"{name} prompt lookup: {title}", replay(llm, prompts, args.n, costs))
                continue
            report(f"{name} prompt lookup: input-grounded", run(llm, GROUNDED, args.n, "lookup", **opts))
            report(f"{name} prompt lookup: free-form", run(llm, FREE, args.n, "lookup", **opts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
