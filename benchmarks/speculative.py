"""Speculative decoding speed: plain decoding vs prompt lookup (and a draft model) on the same
prompts, same seed; the token sequences are checked identical on every run.

    python benchmarks/speculative.py [--models smollm2-135m gemma3-270m] [-n 128] [-t 2]
    python benchmarks/speculative.py --draft-pair     # SmolLM2 Q4_0 drafting SmolLM2 Q8_0

Input-grounded prompts (rewrite/fix code, extract, quote) are where drafts from the prompt pay
off; free-form prompts check that adaptive drafting does not cost speed. Prints tokens/s of
each mode per prompt, the ratio, and the acceptance counts; a line with the CPU model first.
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


def run(llm, prompts, n, mode, seed=1):
    from pyrt.generate import generate_tokens
    from pyrt.sampling import SamplingParams
    params = SamplingParams(temperature=0.0, seed=seed)
    rows = []
    for text in prompts:
        toks = (llm.chat_tokens([{"role": "user", "content": text}]) if llm.chat_template
                else llm.tokenize(text))
        res = {}
        for m in ("off", mode, "off", mode):          # alternate, keep the faster of two
            llm.reset()
            llm.eval_prefix(toks)                      # prompt time is not what is compared
            t = time.perf_counter()
            out = list(generate_tokens(llm, toks, params, max_tokens=n,
                                       speculator=llm._speculator(m)))
            dt = time.perf_counter() - t
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


def report(title, rows):
    print(f"\n{title}")
    print(f"{'prompt':42} {'tok':>4} {'plain t/s':>10} {'spec t/s':>9} {'ratio':>6} {'acc/draft':>10}")
    ratios = []
    for text, n_tok, a, b, st in rows:
        ratios.append(b / a)
        print(f"{text[:40].replace(chr(10), ' '):42} {n_tok:4d} {a:10.1f} {b:9.1f} {b / a:6.2f} "
              f"{st.get('accepted_n', 0):4d}/{st.get('drafted_n', 0):<5d}")
    print(summary(ratios))


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
    args = ap.parse_args()
    from pyrt import Llama
    print(f"CPU: {cpu_model()}, {args.threads} threads, {args.n} tokens, greedy")
    if args.draft_pair:
        from pyrt.quantize import cached_quantize
        from pyrt.registry import ensure_model
        src = ensure_model("smollm2-135m")
        with Llama(cached_quantize(src, "q8_0"), n_ctx=2048, n_threads=args.threads,
                   draft_model=str(cached_quantize(src, "q4_0"))) as llm:
            report("SmolLM2 Q8_0 with a Q4_0 draft: grounded", run(llm, GROUNDED, args.n, "draft"))
            report("SmolLM2 Q8_0 with a Q4_0 draft: free-form", run(llm, FREE, args.n, "draft"))
        return 0
    for name in args.models:
        with Llama(name, n_ctx=2048, n_threads=args.threads) as llm:
            report(f"{name} prompt lookup: input-grounded", run(llm, GROUNDED, args.n, "lookup"))
            report(f"{name} prompt lookup: free-form", run(llm, FREE, args.n, "lookup"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
