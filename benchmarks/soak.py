"""Soak test of `pyrt serve`: many requests from concurrent clients, some of
which hang up midway, against a real server process.

    python benchmarks/soak.py [-m MODEL] [-n 500] [-c 8] [--max-tokens 32]

It starts `pyrt serve` on the model (a subprocess on a free port), then N
requests come from C client threads: OpenAI chat and completions, ollama chat
and generate, each streamed or not at random, with random prompts, lengths and
temperatures; a share of them disconnect mid-stream or before the answer
(`--cancel-rate`), a few are invalid on purpose (unknown model, bad parameter)
and must get a well-formed 4xx. It checks:

- every request that should succeed does: HTTP 200 and a well-formed body;
  every stream is well-formed (SSE: each ``data:`` line parses, one
  finish_reason, ends with ``data: [DONE]``; NDJSON: each line parses, the last
  one and only it has ``done: true`` with ollama's counters);
- no crash: the server is alive at the end, /health says ok and idle, /metrics
  is well-formed and counted every request, and SIGTERM stops it with status 0;
- memory: the server's resident set (VmRSS from /proc/PID/status) grows by at
  most 5 % from after the first `--rss-mark` requests (default 100) to the end.

It prints a summary and exits 1 on any failure. `soak()` is the core, used by
tests/test_server_soak.py for a short run in the normal test suite.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PROMPTS = ["What is 2+2?", "Name three colors.", "Write a haiku about the sea.", "What is the capital of France?",
           "Explain what a CPU does in one sentence.", "Say hello in Spanish.", "List two fruits.",
           "Why is the sky blue?", "Tell me a short joke.", "What day comes after Monday?",
           "Translate 'good morning' to German.", "Give me a word that rhymes with cat."]
KINDS = ["chat", "chat_stream", "completion", "completion_stream", "ollama_chat", "ollama_chat_stream",
         "ollama_generate", "ollama_generate_stream"]
OLLAMA_FINAL = ("total_duration", "load_duration", "prompt_eval_count", "prompt_eval_duration",
                "eval_count", "eval_duration")


@dataclass
class Report:
    n_requests: int = 0
    ok: int = 0
    cancelled: int = 0
    rejected: int = 0                      # invalid on purpose, answered 4xx as they should be
    failures: list[str] = field(default_factory=list)
    kinds: Counter = field(default_factory=Counter)
    tokens: int = 0
    seconds: float = 0.0
    rss_mark_kib: int = 0
    rss_end_kib: int = 0
    rss_limit: float = 0.05
    exit_code: int | None = None
    server_tail: str = ""

    @property
    def rss_growth(self) -> float:
        return (self.rss_end_kib - self.rss_mark_kib) / self.rss_mark_kib if self.rss_mark_kib else 0.0

    @property
    def problems(self) -> list[str]:
        out = list(self.failures)
        if self.rss_mark_kib and self.rss_growth > self.rss_limit:
            out.append(f"RSS grew {self.rss_growth:.1%} (limit {self.rss_limit:.0%}): "
                       f"{self.rss_mark_kib} -> {self.rss_end_kib} KiB")
        if self.exit_code != 0:
            out.append(f"the server exited with {self.exit_code} on SIGTERM")
        return out

    def summary(self) -> str:
        lines = [f"requests: {self.n_requests} in {self.seconds:.1f} s "
                 f"({', '.join(f'{k} {v}' for k, v in sorted(self.kinds.items()))})",
                 f"  succeeded {self.ok}, cancelled by the client {self.cancelled}, "
                 f"rejected as they should be {self.rejected}, failed {len(self.failures)}",
                 f"  generated tokens (answered requests): {self.tokens} "
                 f"({self.tokens / self.seconds if self.seconds else 0:.1f} tok/s)",
                 f"server RSS: {self.rss_mark_kib} KiB after the mark, {self.rss_end_kib} KiB at the end "
                 f"({self.rss_growth:+.2%}, limit {self.rss_limit:.0%})",
                 f"server exit status on SIGTERM: {self.exit_code}"]
        probs = self.problems
        lines.append("RESULT: " + ("ok" if not probs else f"FAILED ({len(probs)} problems)"))
        lines += [f"  - {p}" for p in probs[:20]]
        if len(probs) > 20:
            lines.append(f"  ... and {len(probs) - 20} more")
        return "\n".join(lines)


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def start_server(model: str, ctx: int, threads: int | None, extra: list[str]) -> tuple[subprocess.Popen, str, list]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, "-m", "pyrt", "serve", "-m", model, "--port", "0", "-c", str(ctx),
           "--max-queue", "32", *extra]
    if threads:
        cmd += ["-t", str(threads)]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
    lines: list[str] = []
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        lines.append(line)
        m = re.search(r"listening on (http://127\.0\.0\.1:\d+)/v1", line)
        if m:
            threading.Thread(target=lambda: [lines.append(x) for x in proc.stderr], daemon=True).start()
            return proc, m.group(1), lines
    proc.kill()
    raise RuntimeError("the server did not start:\n" + "".join(lines))


class Client:
    def __init__(self, base: str, timeout: float = 300):
        m = re.match(r"http://([^:/]+):(\d+)", base)
        self.host, self.port, self.timeout = m.group(1), int(m.group(2)), timeout

    def open(self, path: str, body: dict) -> http.client.HTTPConnection:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        conn.request("POST", path, body=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
        return conn

    def get(self, path: str) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            conn.request("GET", path)
            r = conn.getresponse()
            return r.status, r.read()
        finally:
            conn.close()


def make_request(rng: random.Random, kind: str, max_tokens: int, model: str) -> tuple[str, dict]:
    prompt = rng.choice(PROMPTS)
    n = rng.randint(1, max_tokens)
    temp = rng.choice([0.0, 0.5, 1.0])
    stream = kind.endswith("_stream")
    if kind.startswith("chat"):
        return "/v1/chat/completions", {"model": model, "messages": [{"role": "user", "content": prompt}],
                                        "max_tokens": n, "temperature": temp, "stream": stream,
                                        "seed": rng.randrange(1 << 30)}
    if kind.startswith("completion"):
        return "/v1/completions", {"model": model, "prompt": prompt, "max_tokens": n, "temperature": temp,
                                   "stream": stream}
    opts = {"num_predict": n, "temperature": temp, "seed": rng.randrange(1 << 30)}
    if kind.startswith("ollama_chat"):
        return "/api/chat", {"model": model, "messages": [{"role": "user", "content": prompt}],
                             "options": opts, "stream": stream}
    return "/api/generate", {"model": model, "prompt": prompt, "options": opts, "stream": stream,
                             "raw": rng.random() < 0.5}


def check_sse(data: str, max_tokens: int) -> tuple[str | None, int]:
    """(problem or None, tokens) of an SSE body."""
    events = [e for e in data.split("\n\n") if e]
    if not events or events[-1] != "data: [DONE]":
        return f"SSE does not end with [DONE]: {data[-200:]!r}", 0
    finishes = []
    tokens = 0
    for e in events[:-1]:
        if not e.startswith("data: "):
            return f"SSE event without 'data: ': {e[:100]!r}", 0
        try:
            obj = json.loads(e[6:])
        except json.JSONDecodeError as err:
            return f"SSE data is not JSON ({err}): {e[:100]!r}", 0
        if "error" in obj:
            return f"error in stream: {obj['error']}", 0
        for ch in obj.get("choices") or ():
            if ch.get("finish_reason"):
                finishes.append(ch["finish_reason"])
        if obj.get("usage"):
            tokens = obj["usage"]["completion_tokens"]
    if len(finishes) != 1 or finishes[0] not in ("stop", "length"):
        return f"SSE finish_reasons {finishes}", 0
    return None, tokens


def check_ndjson(data: str, max_tokens: int) -> tuple[str | None, int]:
    if not data.endswith("\n"):
        return "NDJSON does not end with a newline", 0
    try:
        objs = [json.loads(x) for x in data.splitlines()]
    except json.JSONDecodeError as err:
        return f"NDJSON line is not JSON ({err})", 0
    if not objs or any(o.get("done") is not False for o in objs[:-1]):
        return "NDJSON: done before the last line", 0
    return check_ollama_final(objs[-1], max_tokens)


def check_ollama_final(o: dict, max_tokens: int) -> tuple[str | None, int]:
    if "error" in o:
        return f"ollama error: {o['error']}", 0
    if o.get("done") is not True or o.get("done_reason") not in ("stop", "length"):
        return f"ollama final object not done: {str(o)[:200]}", 0
    missing = [k for k in OLLAMA_FINAL if not isinstance(o.get(k), int)]
    if missing:
        return f"ollama final object lacks {missing}", 0
    if o["eval_count"] > max_tokens:
        return f"eval_count {o['eval_count']} > num_predict {max_tokens}", 0
    return None, o["eval_count"]


def check_json(kind: str, obj: dict, max_tokens: int) -> tuple[str | None, int]:
    if kind.startswith("ollama"):
        return check_ollama_final(obj, max_tokens)
    try:
        ch = obj["choices"][0]
        text = ch["message"]["content"] if kind.startswith("chat") else ch["text"]
        assert isinstance(text, str) and ch["finish_reason"] in ("stop", "length")
        n = obj["usage"]["completion_tokens"]
        assert 0 <= n <= max_tokens
    except (KeyError, IndexError, TypeError, AssertionError):
        return f"malformed response: {str(obj)[:200]}", 0
    return None, n


def one_request(client: Client, rng: random.Random, model: str, max_tokens: int, cancel_rate: float,
                bad_rate: float) -> tuple[str, str, str | None, int]:
    """Run one random request: (kind, outcome "ok" | "cancelled" | "rejected", problem, tokens)."""
    kind = rng.choice(KINDS)
    path, body = make_request(rng, kind, max_tokens, model)
    limit = body.get("max_tokens") or body.get("options", {}).get("num_predict")
    if rng.random() < bad_rate:                      # invalid on purpose: must be a clean 4xx
        if rng.random() < 0.5:
            body["model"] = "no-such-model"
            want = 404
        else:
            if "options" in body:
                body["options"]["temperature"] = -1
            else:
                body["temperature"] = -1
            want = 400
        conn = client.open(path, body)
        try:
            r = conn.getresponse()
            data = r.read()
        finally:
            conn.close()
        try:
            err = json.loads(data)["error"]
        except (ValueError, KeyError, TypeError):
            err = None
        if r.status != want or not err:
            return kind, "rejected", f"{kind} invalid request: status {r.status} (want {want}), {data[:200]!r}", 0
        return kind, "rejected", None, 0
    cancel = rng.random() < cancel_rate
    conn = client.open(path, body)
    try:
        if cancel and (not body["stream"] or rng.random() < 0.3):
            time.sleep(rng.uniform(0.0, 0.3))       # hang up before (or while) the answer comes
            return kind, "cancelled", None, 0
        r = conn.getresponse()
        if r.status != 200:
            return kind, "ok", f"{kind}: status {r.status}: {r.read()[:300]!r}", 0
        if cancel:                                   # read a few lines of the stream, then hang up
            for _ in range(rng.randint(1, 4)):
                if not r.readline():
                    break
            return kind, "cancelled", None, 0
        data = r.read().decode("utf-8")
        ctype = r.getheader("Content-Type", "")
    finally:
        conn.close()
    if body["stream"]:
        want_ct = "application/x-ndjson" if path.startswith("/api/") else "text/event-stream"
        if ctype != want_ct:
            return kind, "ok", f"{kind}: content type {ctype!r}", 0
        prob, n = (check_ndjson if path.startswith("/api/") else check_sse)(data, limit)
    else:
        try:
            obj = json.loads(data)
        except json.JSONDecodeError:
            return kind, "ok", f"{kind}: body is not JSON: {data[:200]!r}", 0
        prob, n = check_json(kind, obj, limit)
    return kind, "ok", (f"{kind}: {prob}" if prob else None), n


def parse_metrics(text: str) -> dict:
    out = {}
    for line in text.splitlines():
        if line.startswith("#") or not line:
            continue
        m = re.match(r"^([a-zA-Z_:][\w:]*)(\{[^}]*\})? (\S+)$", line)
        if not m:
            raise ValueError(f"bad metrics line {line!r}")
        out[(m.group(1), m.group(2) or "")] = float(m.group(3))
    return out


def soak(model: str, n_requests: int = 500, clients: int = 8, max_tokens: int = 32, seed: int = 0,
         cancel_rate: float = 0.15, bad_rate: float = 0.03, ctx: int = 2048, threads: int | None = None,
         rss_mark: int = 100, rss_limit: float = 0.05, log=None) -> Report:
    """Start `pyrt serve` on `model`, run the requests, stop it; the Report says
    what happened (`report.problems` is empty when everything held)."""
    proc, base, lines = start_server(model, ctx, threads, [])
    rep = Report(n_requests=n_requests, rss_limit=rss_limit)
    client = Client(base)
    lock = threading.Lock()
    issued = [0]
    done = [0]
    try:
        status, body = client.get("/v1/models")
        model_id = json.loads(body)["data"][0]["id"]
        t0 = time.monotonic()

        def worker(i: int) -> None:
            rng = random.Random(seed * 1000 + i)
            while True:
                with lock:
                    if issued[0] >= n_requests:
                        return
                    issued[0] += 1
                try:
                    kind, outcome, prob, n = one_request(client, rng, model_id, max_tokens, cancel_rate, bad_rate)
                except (OSError, http.client.HTTPException) as e:
                    kind, outcome, prob, n = "?", "ok", f"connection error: {type(e).__name__}: {e}", 0
                with lock:
                    rep.kinds[kind] += 1
                    if prob:
                        rep.failures.append(prob)
                    elif outcome == "ok":
                        rep.ok += 1
                        rep.tokens += n
                    elif outcome == "cancelled":
                        rep.cancelled += 1
                    else:
                        rep.rejected += 1
                    done[0] += 1
                    if done[0] == min(rss_mark, n_requests):
                        rep.rss_mark_kib = rss_kib(proc.pid)
                    if log and done[0] % 50 == 0:
                        log(f"{done[0]}/{n_requests} requests, {len(rep.failures)} failed, "
                            f"RSS {rss_kib(proc.pid)} KiB")

        ts = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(clients)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        rep.seconds = time.monotonic() - t0
        if proc.poll() is not None:
            rep.failures.append(f"the server died (exit status {proc.returncode})")
            return rep
        # the server finishes what the last hung-up clients left, then must be idle and healthy
        deadline = time.monotonic() + 60
        while True:
            h = json.loads(client.get("/health")[1])
            if (not h["busy"] and h["queued"] == 0) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        if h.get("status") != "ok" or h["busy"] or h["queued"]:
            rep.failures.append(f"/health at the end: {h}")
        # every request was counted (a handler records its request when it returns)
        gen = ("/v1/chat/completions", "/v1/completions", "/api/chat", "/api/generate")
        counted = -1
        while time.monotonic() < deadline:
            st, text = client.get("/metrics")
            try:
                m = parse_metrics(text.decode())
            except ValueError as e:
                rep.failures.append(f"/metrics: {e}")
                break
            counted = sum(v for (name, lab), v in m.items() if name == "pyrt_requests_total"
                          and any(f'endpoint="{g}"' in lab for g in gen))
            if counted >= n_requests:
                break
            time.sleep(0.1)
        if counted != n_requests:
            rep.failures.append(f"/metrics counted {counted} generation requests, {n_requests} were sent")
        rep.rss_end_kib = rss_kib(proc.pid)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                rep.exit_code = proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                rep.exit_code = proc.wait()
        else:
            rep.exit_code = proc.returncode
        rep.server_tail = "".join(lines[-20:])
    return rep


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-m", "--model", default="smollm2-135m", help="GGUF file or known model name")
    ap.add_argument("-n", "--requests", type=int, default=500)
    ap.add_argument("-c", "--clients", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=32, help="each request asks for 1..N tokens")
    ap.add_argument("--cancel-rate", type=float, default=0.15, help="share of requests that hang up midway")
    ap.add_argument("--bad-rate", type=float, default=0.03, help="share of invalid requests (must be 4xx)")
    ap.add_argument("--ctx", type=int, default=2048)
    ap.add_argument("-t", "--threads", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rss-mark", type=int, default=100, help="measure RSS growth from after this many requests")
    ap.add_argument("--rss-limit", type=float, default=0.05)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from pyrt.registry import ensure_model
    model = str(ensure_model(args.model))
    print(f"soak: {args.requests} requests, {args.clients} clients, model {model}", flush=True)
    rep = soak(model, args.requests, args.clients, args.max_tokens, args.seed, args.cancel_rate, args.bad_rate,
               args.ctx, args.threads, args.rss_mark, args.rss_limit,
               log=lambda s: print("  " + s, flush=True))
    print(rep.summary())
    if rep.problems:
        print("server stderr (tail):\n" + rep.server_tail, file=sys.stderr)
    return 1 if rep.problems else 0


if __name__ == "__main__":
    sys.exit(main())
