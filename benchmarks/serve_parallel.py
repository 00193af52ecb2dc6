"""Concurrent streaming clients against `pyrt serve`: aggregate tokens/s, time
to first token while others stream, starvation, and same output alone or
batched. Issue targets: 4 clients >= 2.5x one client's tokens/s; TTFT of a
50-token prompt while 3 others stream <= 0.3 s at p95.

    PYTHONPATH=. python benchmarks/serve_parallel.py [--model PATH] [--parallel 4] [--tokens 128] [--rounds 5]

It starts the server itself (2 threads unless --threads) and prints one table;
run it on an otherwise idle machine. On a shared one, the server's CPU time per
token (1 client vs k) is the steadier figure: with --threads 1 its ratio is what
the aggregate tokens/s ratio would be if the forward pass had the core to
itself.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare_llamacpp import cpu_model  # noqa: E402
from soak import start_server  # noqa: E402

PROMPTS = [
    "Write a short story about a lighthouse keeper who finds a message in a bottle.",
    "Explain how a refrigerator works to a ten year old, step by step.",
    "Describe a walk through a busy market in Marrakesh, with sounds and smells.",
    "Give advice to someone starting to learn the piano as an adult.",
    "Tell me about the history of the bicycle in a few paragraphs.",
    "Write a letter from a cat to its owner about the new dog.",
]
# about 50 tokens with SmolLM2's and Gemma's tokenizers, with the chat template
TTFT_PROMPT = ("I am planning a small vegetable garden on a sunny balcony in a city apartment. "
               "Which vegetables grow well in pots, how deep should the pots be, and how often "
               "should I water them during a hot summer?")


def stream_chat(port: int, prompt: str, max_tokens: int, seed: int) -> dict:
    """One streaming chat request: its text, token count, TTFT and end time."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    body = {"messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens, "stream": True,
            "temperature": 0.8, "seed": seed, "stream_options": {"include_usage": True}}
    t0 = time.perf_counter()
    conn.request("POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"})
    resp = conn.getresponse()
    if resp.status != 200:
        raise RuntimeError(f"HTTP {resp.status}: {resp.read()[:200]!r}")
    text, ttft, n, stamps = [], None, 0, []
    for raw in resp:
        line = raw.decode().strip()
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        chunk = json.loads(line[6:])
        if chunk.get("usage"):
            n = chunk["usage"]["completion_tokens"]
        for ch in chunk.get("choices", []):
            piece = ch.get("delta", {}).get("content")
            if piece:
                if ttft is None:
                    ttft = time.perf_counter() - t0
                stamps.append(time.perf_counter())
                text.append(piece)
    conn.close()
    return {"text": "".join(text), "n": n, "ttft": ttft, "t0": t0, "t1": time.perf_counter(), "stamps": stamps}


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of process `pid` so far (Linux), else None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def run_clients(port: int, k: int, max_tokens: int) -> list[dict]:
    out: list = [None] * k

    def one(i):
        out[i] = stream_chat(port, PROMPTS[i % len(PROMPTS)], max_tokens, seed=100 + i)
    th = [threading.Thread(target=one, args=(i,)) for i in range(k)]
    for t in th:
        t.start()
    for t in th:
        t.join()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2", help="model path or name (default smollm2)")
    ap.add_argument("--parallel", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=128, help="max_tokens per request")
    ap.add_argument("--ttft-tries", type=int, default=10)
    ap.add_argument("--ctx", type=int, default=2048)
    ap.add_argument("--rounds", type=int, default=1,
                    help="alternate the 1-client and k-client runs this many times; with more than one the "
                         "median of the rounds' ratios is printed too (steadier on a shared machine)")
    a = ap.parse_args()
    print(f"CPU: {cpu_model()}, {a.threads} threads, model {a.model}, --parallel {a.parallel}")
    proc, base, _log = start_server(a.model, a.ctx, a.threads, ["--parallel", str(a.parallel), "--seed", "1"])
    port = int(base.rsplit(":", 1)[1])
    try:
        stream_chat(port, "Hello", 8, 0)                          # warm up
        k = a.parallel
        ratios = []
        for rnd in range(max(a.rounds, 1)):
            c0 = cpu_seconds(proc.pid)
            alone = run_clients(port, 1, a.tokens)
            c1 = cpu_seconds(proc.pid)
            one_tps = alone[0]["n"] / (alone[0]["t1"] - alone[0]["t0"])
            many = run_clients(port, k, a.tokens)
            c2 = cpu_seconds(proc.pid)
            span = max(r["t1"] for r in many) - min(r["t0"] for r in many)
            agg = sum(r["n"] for r in many) / span
            per = [r["n"] / (r["t1"] - r["t0"]) for r in many]
            ratios.append(agg / one_tps)
            tag = f"round {rnd + 1}: " if a.rounds > 1 else ""
            print(f"{tag}1 client: {one_tps:.1f} tok/s;  {k} clients: {agg:.1f} tok/s aggregate = "
                  f"{agg / one_tps:.2f}x; per client {min(per):.1f}..{max(per):.1f} tok/s")
            if c0 is not None and c2 is not None:
                cpu1, cpuk = (c1 - c0) * 1e3 / alone[0]["n"], (c2 - c1) * 1e3 / sum(r["n"] for r in many)
                print(f"{tag}server CPU per token: 1 client {cpu1:.2f} ms, {k} clients {cpuk:.2f} ms "
                      f"({cpu1 / cpuk:.2f}x)")
        if len(ratios) > 1:
            print(f"{k} clients / 1 client over {len(ratios)} rounds: median {statistics.median(ratios):.2f}x, "
                  f"range {min(ratios):.2f}-{max(ratios):.2f}x")
        # the same request alone and batched: client 0 of the batch asked what `alone` asked
        same = many[0]["text"] == alone[0]["text"]
        print(f"client 0's text batched == alone: {same}")
        # TTFT of a ~50-token prompt while k-1 others stream
        ttfts = []
        for i in range(a.ttft_tries):
            bg: list = []
            th = [threading.Thread(target=lambda j=j: bg.append(stream_chat(port, PROMPTS[j], a.tokens, 7 + j)))
                  for j in range(k - 1)]
            for t in th:
                t.start()
            time.sleep(0.5)        # benchmark pacing only: let the others get into their streams
            r = stream_chat(port, TTFT_PROMPT, 4, 1000 + i)
            ttfts.append(r["ttft"])
            for t in th:
                t.join()
        ttfts.sort()
        p95 = ttfts[min(len(ttfts) - 1, int(round(0.95 * (len(ttfts) - 1))))]
        print(f"TTFT while {k - 1} stream: median {statistics.median(ttfts):.3f} s, p95 {p95:.3f} s "
              f"({len(ttfts)} tries)")
        return 0 if same else 1
    finally:
        proc.terminate()
        proc.wait(30)


if __name__ == "__main__":
    sys.exit(main())
