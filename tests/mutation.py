"""Mutation sweep over valid GGUF seeds: bit flips, field overwrites (0 / -1 / 2^31 / 2^63 ...),
byte smears, insertions/deletions and truncation at every section boundary. Every mutant
must either be rejected with a clean exception or load and survive a short generation; a
crash (signal), a hang (> 2 s), an unexpected exception type or unbounded memory is a bug.

Used by tests/test_mutation.py (a few thousand mutants, time-bounded) and
scripts/mutate_100k.py (100,000 mutants). Mutant `i` of seed `s` is a pure function of
(s, i, master seed), so any finding can be replayed:

    python scripts/mutate_100k.py --replay tiny:1234 --out mutant.gguf

Seeds: `tiny` and `tiny_tied` (tests/tiny_model.py: random-weight llama models, Q8_0/Q4_0/F32
tensors, byte-level BPE vocabulary) and `smollm2` (the real SmolLM2-135M file; its header is
mutated in place in a private copy, so the 100 MB of weights are written once per worker).

Mutants run in worker subprocesses (`python tests/mutation.py --worker ...`) that report one
JSON line per mutant; the parent kills a worker that stops answering and attributes the
crash or hang to the mutant it was running, then restarts it after that mutant.
"""
from __future__ import annotations

import json
import os
import random
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

# a mutant running longer than HANG_S is a hang (sanitizer builds run slower: the CI job
# raises it through $PYRT_MUT_HANG_S); the parent gives up on a silent worker after KILL_S
HANG_S = float(os.environ.get("PYRT_MUT_HANG_S", "2.0"))
KILL_S = max(10.0, 5 * HANG_S)
MEM_LIMIT = 4 << 30           # RLIMIT_AS of a worker
SPECIAL64 = (0, (1 << 64) - 1, 1 << 31, 1 << 63, 1, (1 << 31) - 1, 1 << 32, (1 << 63) - 1, 1 << 62)
SPECIAL32 = (0, (1 << 32) - 1, 1 << 31, 1, (1 << 31) - 1, 0xFFFF, 13)
CLEAN = ("rejected", "unsupported", "value_error", "memory_error", "loaded", "gen_error")
BUGS = ("exception", "crash", "hang", "bad_output")


# ----------------------------------------------------------------------------------------------
# seeds and their structure
# ----------------------------------------------------------------------------------------------

def smollm2_path() -> Path:
    from pyrt.registry import ensure_model
    return Path(ensure_model("smollm2-135m"))


def seed_bytes(name: str) -> bytes:
    from tiny_model import tiny_llama_bytes
    if name == "tiny":
        return tiny_llama_bytes()
    if name == "tiny_tied":
        return tiny_llama_bytes(n_layer=1, tied_output=True, alignment=64, n_head_kv=4)
    if name == "smollm2":
        return smollm2_path().read_bytes()
    raise KeyError(name)


@dataclass
class Layout:
    """Where the fields and sections of a valid GGUF file are."""
    size: int
    header_end: int                                   # start of the data section
    fields: list[tuple[int, int]] = field(default_factory=list)   # (offset, width)
    boundaries: list[int] = field(default_factory=list)


def layout(data: bytes, sample: int = 48) -> Layout:
    """Walk a valid GGUF: every header field, a sample of array elements, section starts."""
    rng = random.Random(len(data))
    u32 = lambda p: struct.unpack_from("<I", data, p)[0]   # noqa: E731
    u64 = lambda p: struct.unpack_from("<Q", data, p)[0]   # noqa: E731
    widths = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
    L = Layout(len(data), 0)
    F, B = L.fields, L.boundaries
    F += [(0, 4), (4, 4), (8, 8), (16, 8)]
    B += [0, 4, 8, 16, 24]
    n_tensors, n_kv = u64(8), u64(16)
    p = 24
    align = 32
    for _ in range(n_kv):
        B.append(p)
        F.append((p, 8))
        klen = u64(p)
        key = data[p + 8:p + 8 + klen]
        p += 8 + klen
        F.append((p, 4))
        vt = u32(p)
        p += 4
        B.append(p)
        if vt in widths:
            F.append((p, widths[vt]))
            if key == b"general.alignment":
                align = int.from_bytes(data[p:p + widths[vt]], "little")
            p += widths[vt]
        elif vt == 8:
            F.append((p, 8))
            p += 8 + u64(p)
        elif vt == 9:
            et, n = u32(p), u64(p + 4)
            F += [(p, 4), (p + 4, 8)]
            p += 12
            B.append(p)
            picks = set(range(min(n, 3))) | set(rng.sample(range(n), min(n, sample))) | ({n - 1} if n else set())
            if et == 8:
                for i in range(n):
                    if i in picks:
                        F.append((p, 8))
                    p += 8 + u64(p)
            else:
                w = widths[et]
                F += [(p + i * w, w) for i in sorted(picks)]
                p += n * w
        else:
            raise ValueError(f"seed has unexpected value type {vt}")
    for _ in range(n_tensors):
        B.append(p)
        F.append((p, 8))
        p += 8 + u64(p)
        nd = u32(p)
        F.append((p, 4))
        p += 4
        F += [(p + 8 * d, 8) for d in range(nd)]
        p += 8 * nd
        F += [(p, 4), (p + 4, 8)]
        p += 12
    B.append(p)
    L.header_end = (p + align - 1) // align * align
    B.append(L.header_end)
    from pyrt.gguf_file import GGUFFile
    g = GGUFFile(data)
    for t in g.tensors.values():
        L.boundaries += [t.offset, t.offset + t.nbytes // 2, t.offset + t.nbytes]
    g.close()
    L.boundaries = sorted(set(b for b in L.boundaries if 0 <= b <= L.size))
    return L


# ----------------------------------------------------------------------------------------------
# mutants
# ----------------------------------------------------------------------------------------------

@dataclass
class Mutant:
    kind: str
    patches: list[tuple[int, bytes]] = field(default_factory=list)   # overwrite at offset
    truncate: int | None = None
    insert: tuple[int, bytes] | None = None       # insert bytes at offset
    delete: tuple[int, int] | None = None         # delete n bytes at offset

    def apply(self, data: bytes) -> bytes:
        b = bytearray(data)
        for off, chunk in self.patches:
            b[off:off + len(chunk)] = chunk
        if self.insert:
            off, chunk = self.insert
            b[off:off] = chunk
        if self.delete:
            off, n = self.delete
            del b[off:off + n]
        if self.truncate is not None:
            del b[self.truncate:]
        return bytes(b)

    def describe(self) -> str:
        parts = [self.kind]
        parts += [f"@{o}={c.hex()}" for o, c in self.patches[:4]]
        if self.truncate is not None:
            parts.append(f"truncate={self.truncate}")
        if self.insert:
            parts.append(f"insert@{self.insert[0]}={self.insert[1].hex()}")
        if self.delete:
            parts.append(f"delete@{self.delete[0]}x{self.delete[1]}")
        return " ".join(parts)


def make_mutant(seed: str, index: int, data: bytes, L: Layout, master: int = 0) -> Mutant:
    rng = random.Random(f"{master}:{seed}:{index}")
    in_place = seed == "smollm2"          # no insert/delete/truncate rewrite of 100 MB
    kinds = ["bitflip"] * 30 + ["field"] * 35 + ["truncate"] * 10 + ["smear"] * 12 + ["swap"] * 5
    if not in_place:
        kinds += ["insdel"] * 8
    kind = rng.choice(kinds)
    hdr = L.header_end
    if kind == "bitflip":
        m = Mutant(kind)
        for _ in range(rng.choice((1, 1, 1, 2, 3, 4))):
            off = rng.randrange(hdr) if rng.random() < 0.9 else rng.randrange(L.size)
            bit = 1 << rng.randrange(8)
            m.patches.append((off, bytes([data[off] ^ bit])))
        return m
    if kind == "field":
        m = Mutant(kind)
        for _ in range(rng.choice((1, 1, 1, 2))):
            off, w = rng.choice(L.fields)
            if w == 8:
                v = rng.choice(SPECIAL64 + (int.from_bytes(data[off:off + 8], "little") + rng.choice((1, -1, 32, -32)),))
            elif w == 4:
                v = rng.choice(SPECIAL32 + (int.from_bytes(data[off:off + 4], "little") + rng.choice((1, -1)),))
            else:
                v = rng.choice((0, 0xFF, 0x80, 0x7F, 1, 2))
            m.patches.append((off, (v % (1 << (8 * w))).to_bytes(w, "little")))
        return m
    if kind == "truncate":
        b = rng.choice(L.boundaries) + rng.choice((0, 0, -1, 1))
        return Mutant(kind, truncate=max(0, min(b, L.size - 1)))
    if kind == "smear":
        off = rng.randrange(hdr)
        n = rng.randint(1, 8)
        pat = rng.choice((b"\0", b"\xff", b"\x7f", b"\x80", None))
        chunk = bytes(rng.randrange(256) for _ in range(n)) if pat is None else pat * n
        return Mutant(kind, patches=[(off, chunk[:max(0, L.size - off)])])
    if kind == "swap":
        (a, wa), (b, wb) = rng.choice(L.fields), rng.choice(L.fields)
        w = min(wa, wb)
        return Mutant(kind, patches=[(a, data[b:b + w])])
    # insdel: shift everything after a boundary (or a random header byte)
    off = rng.choice(L.boundaries) if rng.random() < 0.6 else rng.randrange(hdr)
    if rng.random() < 0.5:
        return Mutant("insert", insert=(off, bytes(rng.randrange(256) for _ in range(rng.choice((1, 4, 8, 13))))))
    return Mutant("delete", delete=(off, rng.choice((1, 4, 8, 13))))


# ----------------------------------------------------------------------------------------------
# worker: run mutants in this process and report one JSON line each
# ----------------------------------------------------------------------------------------------

def _classify(e: BaseException) -> str:
    from pyrt._native import ContextFullError, PyrtError, UnsupportedError
    from pyrt.gguf_file import GGUFError
    t = type(e)
    if t is GGUFError:
        return "rejected"
    if t is UnsupportedError:
        return "unsupported"
    if t is MemoryError:
        return "memory_error"
    if t in (ValueError, PyrtError, ContextFullError):
        return "value_error"
    return "exception"


def run_one(path: str, truncated_view=None) -> tuple[str, str]:
    """Load `path` with pyrt.Llama and, if it loads, generate a few tokens."""
    import pyrt
    if truncated_view is not None:        # in-place seeds: truncation is checked on a view
        from pyrt.gguf_file import GGUFFile
        try:
            GGUFFile(truncated_view).close()
        except BaseException as e:  # noqa: BLE001
            return _classify(e), f"{type(e).__name__}: {e}"[:300]
        return "loaded", "truncated prefix parses (unexpected for a proper prefix)"
    try:
        llm = pyrt.Llama(path, n_ctx=32, n_threads=1)
    except BaseException as e:  # noqa: BLE001
        return _classify(e), f"{type(e).__name__}: {e}"[:300]
    try:
        ids = llm.tokenize("Hello world! <|im_start|>user 12345", special=True)[:12] or [0]
        greedy = list(llm.generate(ids, max_tokens=3, temperature=0))
        sampled = list(llm.generate(ids[:3], max_tokens=2, temperature=0.9, seed=7))
        out = greedy + sampled
        text = llm.detokenize(out)
        llm.detokenize(out, special=True)
        # a mutant counts as cleanly loaded only if what it produced is sane: ids in the
        # vocabulary, no more tokens than asked, text as bytes/str, logits of the right shape
        # and type; greedy decoding picks the argmax of those logits (non-finite logits are
        # allowed: mutated weights may hold NaN/inf, and then argmax is undefined)
        n_vocab = llm.n_vocab()
        problems = []
        if len(greedy) > 3 or len(sampled) > 2:
            problems.append(f"{len(greedy)}+{len(sampled)} tokens for max_tokens 3+2")
        if any(not isinstance(t, int) or not 0 <= t < n_vocab for t in out):
            problems.append(f"token ids outside [0, {n_vocab}): {out}")
        if not isinstance(text, (str, bytes)):
            problems.append(f"detokenize gave {type(text).__name__}")
        x = llm.logits(ids)
        if x.shape != (len(ids), n_vocab) or x.dtype != np.float32:
            problems.append(f"logits {x.shape} {x.dtype}, want ({len(ids)}, {n_vocab}) float32")
        elif greedy and np.isfinite(x[-1]).all() and \
                x[-1, greedy[0]] < x[-1].max() - 1e-4 * max(1.0, abs(float(x[-1].max()))):
            problems.append(f"greedy token {greedy[0]} is not the argmax {int(x[-1].argmax())}")
        if problems:
            return "bad_output", "; ".join(problems)[:300]
        return "loaded", ""
    except BaseException as e:  # noqa: BLE001
        kind = _classify(e)
        return ("gen_error" if kind != "exception" else "exception"), f"{type(e).__name__}: {e}"[:300]
    finally:
        llm.close()


def _peak_rss() -> int:
    """This process's peak RSS in bytes. VmHWM belongs to the current address space;
    ru_maxrss would also count the parent's RSS inherited through fork (kept across exec)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def worker(seed: str, start: int, stop: int, master: int) -> None:
    import resource
    if "asan" not in os.environ.get("LD_PRELOAD", ""):   # ASan reserves terabytes of shadow
        resource.setrlimit(resource.RLIMIT_AS, (MEM_LIMIT, MEM_LIMIT))
    data = seed_bytes(seed)
    L = layout(data)
    tmp = Path(tempfile.mkdtemp(prefix="pyrt-mut-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None))
    path = tmp / f"{seed}.gguf"
    path.write_bytes(data)
    in_place = seed == "smollm2"
    fd = os.open(path, os.O_WRONLY) if in_place else -1
    try:
        run_one(str(path))                              # warm-up: imports, first load
        print(json.dumps({"ready": True}), flush=True)
        for i in range(start, stop):
            m = make_mutant(seed, i, data, L, master)
            print(json.dumps({"start": i}), flush=True)
            t0 = time.perf_counter()
            if in_place:
                if m.truncate is not None:
                    with memoryview(data) as mv:
                        outcome, msg = run_one(str(path), truncated_view=mv[:m.truncate])
                else:
                    for off, chunk in m.patches:
                        os.pwrite(fd, chunk, off)
                    try:
                        outcome, msg = run_one(str(path))
                    finally:
                        for off, chunk in m.patches:
                            os.pwrite(fd, data[off:off + len(chunk)], off)
            else:
                path.write_bytes(m.apply(data))
                outcome, msg = run_one(str(path))
            dt = time.perf_counter() - t0
            if dt > HANG_S and outcome not in BUGS:
                outcome, msg = "hang", f"took {dt:.2f} s ({outcome}: {msg})"
            rss = _peak_rss()
            print(json.dumps({"i": i, "outcome": outcome, "msg": msg, "t": round(dt, 4), "rss": rss}),
                  flush=True)
        print(json.dumps({"done": True, "maxrss": _peak_rss()}), flush=True)
    finally:
        if fd >= 0:
            os.close(fd)
        shutil.rmtree(tmp, ignore_errors=True)


# ----------------------------------------------------------------------------------------------
# parent: drive workers, survive their crashes and hangs
# ----------------------------------------------------------------------------------------------

@dataclass
class Report:
    counts: Counter = field(default_factory=Counter)
    by_seed: dict = field(default_factory=dict)
    samples: dict = field(default_factory=dict)     # outcome -> [(seed, i, msg)]
    bugs: list = field(default_factory=list)        # (seed, i, outcome, msg, mutant)
    maxrss: int = 0
    maxrss_at: tuple = ()                           # (seed, i) of the mutant that raised maxrss
    slowest: float = 0.0
    elapsed: float = 0.0

    def add(self, seed: str, i: int, outcome: str, msg: str, t: float = 0.0, rss: int = 0) -> None:
        self.counts[outcome] += 1
        self.by_seed.setdefault(seed, Counter())[outcome] += 1
        self.slowest = max(self.slowest, t)
        if rss > self.maxrss:
            self.maxrss, self.maxrss_at = rss, (seed, i)
        s = self.samples.setdefault(outcome, {})
        key = msg.split(":", 1)[0] + ":" + msg.split(":", 1)[-1][:60] if msg else ""
        if key not in s and len(s) < 40:
            s[key] = (seed, i, msg)
        if outcome in BUGS:
            self.bugs.append((seed, i, outcome, msg))

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def _spawn(seed: str, start: int, stop: int, master: int) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")]))
    return subprocess.Popen([sys.executable, str(HERE / "mutation.py"), "--worker", seed, str(start),
                             str(stop), str(master)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=env, text=True, bufsize=1, start_new_session=True)


class _Run:
    """One worker process over [start, stop) of one seed, restarted past crashing mutants."""

    def __init__(self, seed: str, start: int, stop: int, master: int, report: Report, deadline: float):
        self.seed, self.next, self.stop, self.master = seed, start, stop, master
        self.report, self.deadline = report, deadline
        self.proc: subprocess.Popen | None = None
        self.current: int | None = None
        self.last = time.monotonic()
        self.ready = False
        self.buf = ""
        self._start()

    def _start(self) -> None:
        self.proc = _spawn(self.seed, self.next, self.stop, self.master)
        self.current, self.ready, self.buf = None, False, ""
        self.last = time.monotonic()

    def _kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.proc:
            self.proc.wait()
            for s in (self.proc.stdout, self.proc.stderr):
                s.close()

    @property
    def fd(self) -> int:
        return self.proc.stdout.fileno()

    def on_line(self, line: str) -> None:
        msg = json.loads(line)
        self.last = time.monotonic()
        if msg.get("ready"):
            self.ready = True
        elif "start" in msg:
            self.current = msg["start"]
        elif "i" in msg:
            self.report.add(self.seed, msg["i"], msg["outcome"], msg["msg"], msg["t"], msg.get("rss", 0))
            self.next = msg["i"] + 1
            self.current = None
        elif msg.get("done"):
            self.report.maxrss = max(self.report.maxrss, msg["maxrss"])

    def pump(self) -> bool:
        """Read what is there; handle death and silence. False when finished."""
        chunk = os.read(self.fd, 1 << 16).decode()
        if chunk:
            self.buf += chunk
            while "\n" in self.buf:
                line, self.buf = self.buf.split("\n", 1)
                if line.startswith("{"):
                    self.on_line(line)
            return True
        # EOF: the worker exited
        rc = self.proc.wait()
        err = self.proc.stderr.read()[-2000:]
        self._kill()
        if self.next >= self.stop:
            return False
        if rc == 0 and self.current is None:
            return False                    # stopped early (time budget)
        if self.current is None:
            raise RuntimeError(f"mutation worker for {self.seed} failed before any mutant (rc={rc}):\n{err}")
        sig = -rc if rc < 0 else 0
        self.report.add(self.seed, self.current, "crash",
                        f"worker died (signal {sig}, rc {rc}): {err.strip().splitlines()[-1:] if err else ''}")
        self.next = self.current + 1
        if self.next >= self.stop or time.monotonic() > self.deadline:
            return False
        self._start()
        return True

    def check_silence(self) -> bool:
        limit = KILL_S if self.ready else 120.0
        if time.monotonic() - self.last < limit:
            return True
        cur = self.current
        self._kill()
        if cur is None:
            raise RuntimeError(f"mutation worker for {self.seed} did not start")
        self.report.add(self.seed, cur, "hang", f"no answer for {limit:.0f} s")
        self.next = cur + 1
        if self.next >= self.stop or time.monotonic() > self.deadline:
            return False
        self._start()
        return True

    def expired(self) -> bool:
        return time.monotonic() > self.deadline

    def finish(self) -> None:
        self._kill()


def run(plan: list[tuple[str, int, int]], master: int = 0, parallel: int = 2,
        budget_s: float | None = None, progress=None) -> Report:
    """Run [(seed, start, stop), ...] on `parallel` workers; stop starting new mutants once
    `budget_s` is spent (each worker finishes its current mutant)."""
    report = Report()
    t0 = time.monotonic()
    deadline = t0 + budget_s if budget_s else float("inf")
    pending = list(plan)
    active: list[_Run] = []
    while pending or active:
        while pending and len(active) < parallel and time.monotonic() < deadline:
            seed, a, b = pending.pop(0)
            active.append(_Run(seed, a, b, master, report, deadline))
        if not active:
            break
        fds = {r.fd: r for r in active}
        ready, _, _ = select.select(list(fds), [], [], 0.5)
        for fd in ready:
            r = fds[fd]
            if not r.pump():
                r.finish()
                active.remove(r)
        for r in list(active):
            if r not in active:
                continue
            if r.expired():            # the mutant in flight is dropped, not counted
                r.finish()
                active.remove(r)
                continue
            if not r.check_silence():
                r.finish()
                active.remove(r)
        if progress:
            progress(report)
    report.elapsed = time.monotonic() - t0
    return report


def replay(seed: str, index: int, master: int = 0) -> tuple[Mutant, bytes]:
    data = seed_bytes(seed)
    m = make_mutant(seed, index, data, layout(data), master)
    return m, m.apply(data)


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "--worker":
        worker(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
    else:
        print("usage: mutation.py --worker SEED START STOP MASTER  (see scripts/mutate_100k.py)",
              file=sys.stderr)
        sys.exit(2)
