"""Continuous batching: several generations share one forward pass per step.

``Llama(n_parallel=N)`` (and ``pyrt serve --parallel N``) makes a context
with N sequences (csrc/pyrt.h, pyrt_decode_batch) and a :class:`BatchEngine`
thread that owns it. Each completion call runs the ordinary generation loop
(pyrt/generate.py) on a :class:`SeqView`: a stand-in for the Llama whose cache
is one sequence of the shared context and whose evaluations are requests to
the engine. The engine waits until every sequence it served in the last step
is back with its next request (or gone), then evaluates all pending requests
in one call: decoding tokens share every weight matmul, attention stays
within each sequence.

Why each request's output does not depend on its neighbours: every part of a
batch is computed in the numerics it has alone (its n_shape, as
pyrt_ctx_set_numerics), and a long evaluation (a prompt) is split into
chunks of ``n_batch`` tokens exactly as a single-sequence Llama splits it,
never by how much room the other sequences leave. So a request gives the
same tokens, with the same seed, alone or among others, and the same as
``Llama(n_parallel=1)``.

Scheduling: requests of at most ``short`` tokens (decoding, speculative
verification) always join the next step; longer ones (prompts) are prefilled
a chunk per step, oldest first, as many as fit ``n_batch`` tokens, so a long
prompt delays running streams by one chunk per step, not by the whole prompt.
A sequence is taken by a call when it evaluates its prompt (the free sequence
whose cached tokens share the longest prefix with the prompt, so follow-up
turns reuse their cache) and given back when the call's generation ends.
"""
from __future__ import annotations

import threading
import time
import types
from collections import deque
from typing import Callable, Sequence

import numpy as np

from ._native import AbortedError, lib
from .model import Context

#: Longest wait, in seconds, for a sequence served in the last step to come
#: back with its next token before a step runs without it (a slow consumer
#: must not stall the others); a sequence that came back later than this last
#: time is not waited for until it is quick again.
GATHER_WAIT = 0.02


class _Request:
    __slots__ = ("seq", "tokens", "pos0", "out_kind", "n_shape", "done_n", "rows", "result", "error",
                 "event", "should_stop", "cancelled")

    def __init__(self, seq, tokens, pos0, out_kind, n_shape, should_stop):
        self.seq, self.tokens, self.pos0 = seq, tokens, pos0
        self.out_kind, self.n_shape = out_kind, n_shape
        self.done_n = 0                 # tokens evaluated so far (a prompt goes in chunks)
        self.rows: list[np.ndarray] = []
        self.result = None
        self.error: BaseException | None = None
        self.event = threading.Event()
        self.should_stop = should_stop
        self.cancelled = False


class BatchEngine:
    """Owns a Context of `n_seq` sequences and evaluates every sequence's
    pending request in one forward call per step (see the module docstring).
    Sequences are taken with :meth:`acquire` and given back with
    :meth:`release`; :meth:`decode` blocks until the request is evaluated."""

    def __init__(self, model, n_ctx: int, n_seq: int, n_threads: int | None, n_batch: int, short: int,
                 type_k=None, type_v=None):
        self.n_seq, self.chunk, self.short = n_seq, n_batch, short
        self.ctx = Context(model, n_ctx, n_threads=n_threads, n_batch=n_batch + n_seq * short, n_seq=n_seq,
                           type_k=type_k, type_v=type_v)
        self._cv = threading.Condition()
        self._pending: deque[_Request] = deque()
        self._free = list(range(n_seq))
        self._cached: list[list[int]] = [[] for _ in range(n_seq)]   # tokens in each free sequence
        self._expected: set[int] = set()    # served last step, their next request not yet in
        self._served_at = [0.0] * n_seq     # when each sequence's last request was answered
        self._slow: set[int] = set()        # came back later than GATHER_WAIT last time: not waited for
        self._closed = False
        self._held = False
        #: counters for /metrics and tests: steps run, tokens evaluated, the
        #: largest number of sequences one step carried
        self.stats = {"steps": 0, "tokens": 0, "max_parts": 0}
        self._thread = threading.Thread(target=self._run, name="pyrt-batch", daemon=True)
        self._thread.start()

    # -- sequences --------------------------------------------------------------------------
    def acquire(self, tokens: Sequence[int], should_stop: Callable[[], bool] | None = None) -> tuple[int, list[int]]:
        """Take the free sequence whose cache shares the longest prefix with
        `tokens` (waiting while none is free); returns it and its cached tokens."""
        with self._cv:
            while not self._free:
                if self._closed:
                    raise RuntimeError("the Llama is closed")
                if should_stop is not None and should_stop():
                    raise AbortedError("cancelled while waiting for a free sequence")
                self._cv.wait(0.1 if should_stop is not None else None)
            if self._closed:
                raise RuntimeError("the Llama is closed")

            def shared(s: int) -> int:
                n = 0
                for a, b in zip(self._cached[s], tokens):
                    if a != b:
                        break
                    n += 1
                return n
            best = max(self._free, key=lambda s: (shared(s), -self._free.index(s)))
            self._free.remove(best)
            return best, list(self._cached[best])

    def release(self, seq: int, tokens: Sequence[int]) -> None:
        """Give back `seq`, whose cache holds `tokens` (kept for prefix reuse)."""
        n = min(len(tokens), self.ctx.seq_n_past(seq))
        with self._cv:
            self._cached[seq] = list(tokens[:n])
            self._free.append(seq)          # least recently used first
            self._expected.discard(seq)
            self._slow.discard(seq)
            self._cv.notify_all()

    # -- evaluation -------------------------------------------------------------------------
    def submit(self, seq: int, tokens: Sequence[int], pos0: int, out_kind: int, n_shape: int = 0,
               should_stop: Callable[[], bool] | None = None) -> _Request:
        """Queue an evaluation for the next step and return at once; :meth:`wait`
        gives its result (:meth:`decode` is both)."""
        if out_kind not in (lib.PYRT_OUT_NONE, lib.PYRT_OUT_LOGITS_LAST, lib.PYRT_OUT_LOGITS_ALL):
            raise ValueError(f"out_kind {out_kind} is not available with n_parallel > 1")
        toks = np.ascontiguousarray(tokens, dtype=np.int32).reshape(-1)
        if toks.size == 0:
            raise ValueError("nothing to evaluate")
        req = _Request(seq, toks, int(pos0), out_kind, int(n_shape), should_stop)
        with self._cv:
            if self._closed:
                raise RuntimeError("the Llama is closed")
            self._pending.append(req)
            if seq in self._expected or seq in self._slow:
                late = time.monotonic() - self._served_at[seq] > GATHER_WAIT
                (self._slow.add if late else self._slow.discard)(seq)
            self._expected.discard(seq)
            self._cv.notify_all()
        return req

    def wait(self, req: _Request):
        """The result of a submitted request (its logits, or None), once its step ran."""
        try:
            req.event.wait()
        except BaseException:                 # Ctrl-C: drop it after the running step
            self.cancel(req)
            raise
        if req.error is not None:
            raise req.error
        return req.result

    def cancel(self, req: _Request) -> None:
        """Drop a submitted request: one not yet in a step never runs (its
        sequence is cut back to where it started), one in the running step
        finishes; returns when either happened. The caller cuts the sequence
        back if the request had run."""
        req.cancelled = True
        with self._cv:
            self._cv.notify_all()
        req.event.wait()

    def decode(self, seq: int, tokens: Sequence[int], pos0: int, out_kind: int, n_shape: int = 0,
               should_stop: Callable[[], bool] | None = None):
        return self.wait(self.submit(seq, tokens, pos0, out_kind, n_shape, should_stop))

    def hold(self) -> None:
        """Run no step until :meth:`resume` (requests queue up meanwhile)."""
        with self._cv:
            self._held = True

    def resume(self) -> None:
        with self._cv:
            self._held = False
            self._cv.notify_all()

    def wait_pending(self, n: int) -> None:
        """Block until `n` requests are queued (with :meth:`hold`: to start
        several sequences in the same step)."""
        with self._cv:
            self._cv.wait_for(lambda: len(self._pending) >= n or self._closed)

    def close(self) -> None:
        with self._cv:
            self._closed = True
            for req in self._pending:
                req.error = RuntimeError("the Llama is closed")
                req.event.set()
            self._pending.clear()
            self._cv.notify_all()
        if self._thread is not threading.current_thread():
            self._thread.join()
        self.ctx.close()

    # -- the step loop ----------------------------------------------------------------------
    def _gather(self) -> list[tuple[_Request, int]]:
        """Under the lock: wait for work, then pick this step's (request, n tokens)."""
        while (not self._pending or self._held) and not self._closed:
            self._cv.wait()
        deadline = time.monotonic() + GATHER_WAIT
        while not self._closed and self._expected - self._slow:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self._cv.wait(left)
        picked: list[tuple[_Request, int]] = []
        long_budget = self.chunk
        for req in list(self._pending):
            # a prompt stops between chunks when its call is cancelled; a token's
            # evaluation is not cut short (the generation loop checks right after)
            long = len(req.tokens) > self.short
            if req.cancelled or (long and req.should_stop is not None and req.should_stop()):
                self._pending.remove(req)
                req.error = AbortedError("decode: aborted")
                self.ctx.seq_truncate(req.seq, min(req.pos0, self.ctx.seq_n_past(req.seq)))
                req.event.set()
                continue
            left = len(req.tokens) - req.done_n
            if left <= self.short and req.done_n == 0:
                picked.append((req, left))
            else:
                n = min(left, self.chunk)
                if n <= long_budget:
                    picked.append((req, n))
                    long_budget -= n
        return picked

    def _run(self) -> None:
        L, A = lib.PYRT_OUT_LOGITS_LAST, lib.PYRT_OUT_LOGITS_ALL
        while True:
            with self._cv:
                picked = self._gather()
                if self._closed:
                    return
            if not picked:
                continue
            parts = []
            for req, n in picked:
                last = req.done_n + n == len(req.tokens)
                kind = req.out_kind if last or req.out_kind == A else lib.PYRT_OUT_NONE
                parts.append((req.seq, req.tokens[req.done_n:req.done_n + n], req.pos0 + req.done_n, kind,
                              req.n_shape))
            try:
                outs = self.ctx.decode_batch(parts)
                err = None
            except BaseException as e:        # reported to every request of the step
                outs, err = [None] * len(parts), e
            with self._cv:
                self.stats["steps"] += 1
                self.stats["tokens"] += sum(n for _r, n in picked)
                self.stats["max_parts"] = max(self.stats["max_parts"], len(picked))
                for (req, n), out in zip(picked, outs):
                    if err is not None:
                        req.error = err
                    else:
                        req.done_n += n
                        if out is not None and req.out_kind == A:
                            req.rows.append(out)
                        if req.done_n < len(req.tokens):
                            continue
                        req.result = (out if req.out_kind == L else
                                      np.concatenate(req.rows) if req.out_kind == A else None)
                        self._expected.add(req.seq)
                        self._served_at[req.seq] = time.monotonic()
                    self._pending.remove(req)
                    req.event.set()
                self._cv.notify_all()


class _SeqCtx:
    """The part of Context's surface the generation loop uses, for one sequence."""

    def __init__(self, engine: BatchEngine, seq: int):
        self._engine, self._seq = engine, seq

    @property
    def n_past(self) -> int:
        return self._engine.ctx.seq_n_past(self._seq)

    def truncate(self, n_keep: int) -> None:
        self._engine.ctx.seq_truncate(self._seq, n_keep)

    def abort(self) -> None:
        pass                                   # a view stops through should_stop


class SeqView:
    """A Llama as one completion call sees it in parallel mode: its own
    sequence of the shared context (taken when the prompt is evaluated), its
    own token list and stats; every Llama method runs on the view (so the
    generation loop's cache work goes to the sequence), every other attribute
    is the Llama's."""

    def __init__(self, llm, engine: BatchEngine, should_stop: Callable[[], bool] | None = None):
        self._llm, self._engine, self._should_stop = llm, engine, should_stop
        self._seq: int | None = None
        self._tokens: list[int] = []
        self._ctx = None
        self._epoch = 0
        self._last_n_keep = 0
        self._eval_s = 0.0

    def __getattr__(self, name):
        attr = getattr(type(self._llm), name, None)
        if isinstance(attr, types.FunctionType):
            return types.MethodType(attr, self)
        return getattr(self._llm, name)

    def _take(self, tokens: Sequence[int]) -> None:
        if self._seq is None:
            self._seq, self._tokens = self._engine.acquire(tokens, self._should_stop)
            self._ctx = _SeqCtx(self._engine, self._seq)
            n = min(len(self._tokens), self._ctx.n_past)
            self._tokens = self._tokens[:n]

    def eval_prefix(self, tokens, *, progress=None):
        self._take(list(tokens))
        return type(self._llm).eval_prefix(self, tokens, progress=progress)

    def logits(self, tokens):
        self._take(list(tokens))
        return type(self._llm).logits(self, tokens)

    def _decode(self, tokens, pos0: int, out_kind: int, ctx=None, n_shape: int = 0):
        if self._seq is None:
            raise RuntimeError("no sequence: evaluate a prompt first")
        t0 = time.perf_counter()
        try:
            return self._engine.decode(self._seq, tokens, pos0, out_kind, n_shape, self._should_stop)
        except BaseException:
            self._tokens = self._tokens[:min(pos0, self._ctx.n_past)]
            raise
        finally:
            self._llm._eval_s += time.perf_counter() - t0

    def _decode_async(self, tokens, pos0: int, out_kind: int) -> "_Submitted":
        """Submit an evaluation to the next step and return at once: the
        generation loop hands its token to the consumer (a stream write)
        while the step runs, instead of before the step can start."""
        if self._seq is None:
            raise RuntimeError("no sequence: evaluate a prompt first")
        return _Submitted(self, self._engine.submit(self._seq, tokens, pos0, out_kind, 0, self._should_stop))

    def _release(self) -> None:
        if self._seq is not None:
            seq, self._seq = self._seq, None
            self._engine.release(seq, self._tokens)

    # the calling thread's stats (Llama.last_stats is per thread with n_parallel > 1)
    @property
    def last_stats(self) -> dict:
        return self._llm.last_stats

    @last_stats.setter
    def last_stats(self, value: dict) -> None:
        self._llm.last_stats = value


class _Submitted:
    """An evaluation :meth:`SeqView._decode_async` submitted: :meth:`result`
    waits for it, :meth:`cancel` drops it (the cache keeps no trace of it)."""

    def __init__(self, view: SeqView, req: _Request):
        self._view, self._req, self._t0 = view, req, time.perf_counter()

    def result(self):
        view, req = self._view, self._req
        try:
            return view._engine.wait(req)
        except BaseException:
            view._tokens = view._tokens[:min(req.pos0, view._ctx.n_past)]
            raise
        finally:
            view._llm._eval_s += time.perf_counter() - self._t0

    def cancel(self) -> None:
        view, req = self._view, self._req
        view._engine.cancel(req)
        # one that ran leaves its token in the cache; one dropped before its step
        # (req.error set) was cut back by the engine, or the Llama is closed
        if req.error is None and not view._engine._closed:
            view._ctx.truncate(min(req.pos0, view._ctx.n_past))
