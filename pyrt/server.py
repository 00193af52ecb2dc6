"""`pyrt serve`: an OpenAI-compatible (and ollama-compatible) HTTP server.

Endpoints (the /v1 prefix is optional on the OpenAI ones):

- OpenAI: GET /v1/models[/ID], POST /v1/completions (`prompt` may be a list
  of prompts), POST /v1/chat/completions (both: SSE streaming, `n` choices),
  POST /v1/embeddings.
- ollama (pyrt/server_ollama.py): POST /api/chat, /api/generate (NDJSON
  streaming by default), /api/embed, /api/embeddings, /api/show; GET /api/tags,
  /api/ps, /api/version.
- llama.cpp's server: POST /tokenize, /detokenize.
- GET /health (no API key), GET /metrics (Prometheus text format), GET / .

Model names: a request may leave "model" out, or name the loaded model by its
id (the first --alias, else the file name without .gguf), by the file name, by
any --alias, or in ollama's NAME:latest form. Any other name is answered 404
``model_not_found`` (ollama does the same; llama.cpp's server ignores the
field): start the server with ``--alias gpt-4o-mini`` to serve a client that
insists on a name.

Security: on a loopback bind only loopback Host names are served (DNS
rebinding). A request with an Origin header (every cross-origin request a
browser makes) is refused with 403 unless ``--cors ORIGIN`` allows that origin
(exact, with ``*`` wildcards, or ``*`` for all); allowed origins get
Access-Control-Allow-Origin and an answered OPTIONS preflight. POST bodies must
be declared ``application/json`` (``+json`` types too); only a request without
an Origin header (curl, scripts) may also send none or curl's default form
type. Anything else, e.g. text/plain, is 415: a web page cannot make the model
generate with a "simple" cross-origin request. ``--api-key`` guards every
endpoint except /health, / and OPTIONS preflights (so /metrics needs the key
too: Prometheus sends it with ``authorization: {credentials: KEY}``).

Limits per request: the body (8 MiB), ``--max-tokens-limit N`` (a larger or
missing max_tokens / num_predict is lowered to N; the reply then ends with
finish_reason "length"), ``--request-timeout S`` (the model's work on one
request, counted from when it leaves the queue: generation past S seconds
ends with finish_reason "length"; a prompt evaluation or embedding batch still
running at S is interrupted and answered 503 ``request_timeout``), and a
prompt that does not fit the context is a 400 ``context_length_exceeded``.

Why the standard library (``http.server.ThreadingHTTPServer``) and not an ASGI
stack: the server's job is to parse small JSON requests, queue them for the
generation worker, and stream the result. That needs a thread per connection
and SSE / NDJSON over chunked transfer encoding, nothing more; the stdlib does
it with no new dependency and nothing to configure.

Concurrency: request threads never touch the model's cache (tokenize and
detokenize only read the vocabulary). Every generation or embedding request
becomes a job on a bounded queue served by `Worker` (submit / cancel / busy /
slots): `--parallel N` worker threads call the Llama, made with
n_parallel=N, so up to N generations run at once, each on its own sequence of
the KV cache, batched into one forward pass per token (pyrt/batching.py); a
sequence keeps its cache for prefix reuse by a later request. A request for
several completions (/v1/completions with a list of prompts, `n` > 1 on either
endpoint: at most 128) holds one slot per completion it runs at once, at most
all N (more run N at a time); requests start in arrival order, each when its
slots are free, and wait in the queue until then. A client that
disconnects — while queued, during prompt evaluation or mid-stream — cancels
its job: the worker stops at the next token, and a running prompt evaluation
stops (in C with one slot, at the next prompt chunk with several).
"""
from __future__ import annotations

import fnmatch
import hmac
import json
import os
import queue
import re
import select
import signal
import socket
import sys
import threading
import time
import traceback
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

MAX_BODY = 8 << 20            # bytes of a request body
_encode = json.JSONEncoder(ensure_ascii=False).encode    # json.dumps with an argument makes an encoder per call
MAX_CONNECTIONS = 64          # concurrent connections (each is a thread)
_POLL = 0.1                   # seconds between disconnect / time-limit checks while waiting


class APIError(Exception):
    def __init__(self, status: int, message: str, type_: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class _ClientGone(Exception):
    pass


# ---------------------------------------------------------------------------------------------
# the generation worker
# ---------------------------------------------------------------------------------------------

class Job:
    """One request's work. `fn(job)` runs on the worker and calls `job.emit`.

    Besides its events a job carries what the request thread and /metrics read:
    when it was made (`t_submit`) and started (`t_start`), its time limit
    (`deadline`, set by `start`), whether generation has begun (`in_generation`:
    `should_stop` let it go on, so a prompt is evaluated), whether it ran out of
    time (`timed_out`), and `stats` (prompt_n, cached_n, prompt_ms, predicted_n,
    predicted_ms of its generation, as `Llama.last_stats` has them) filled by
    whoever runs it before it emits its last chunk or its result."""

    def __init__(self, fn: Callable[["Job"], None]):
        self.fn = fn
        self.events: queue.Queue = queue.Queue()
        self.cancelled = threading.Event()
        self.t_submit = time.monotonic()
        self.t_start: float | None = None
        self.deadline: float | None = None
        self.in_generation = False
        self.timed_out = False
        self.stats: dict = {}
        #: generation slots the job holds while it runs: one per completion it
        #: runs at once (a request for several prompts or n > 1 choices)
        self.weight = 1
        self._sink: Callable[[str, Any], None] | None = None
        self._sink_lock = threading.Lock()

    def emit(self, kind: str, value: Any = None) -> None:
        sink = self._sink
        if sink is None:
            with self._sink_lock:
                sink = self._sink
                if sink is None:
                    self.events.put((kind, value))
                    return
        sink(kind, value)

    def divert(self, sink: Callable[[str, Any], None]) -> None:
        """From now on `emit` calls `sink(kind, value)` in the emitting thread
        (a stream writes its chunks to the socket there: no hand-over to the
        request thread per chunk); the events queued before go to `sink`
        first, in order (an emit meanwhile waits)."""
        with self._sink_lock:
            while True:
                try:
                    kind, value = self.events.get_nowait()
                except queue.Empty:
                    break
                sink(kind, value)
            self._sink = sink

    def start(self, timeout: float | None) -> None:
        self.t_start = time.monotonic()
        if timeout is not None:
            self.deadline = self.t_start + timeout

    def expired(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    def should_stop(self) -> bool:
        """Polled by the generator between tokens (first right after the prompt),
        and before each choice of a several-completion call starts. Only a poll
        that lets generation go on marks it begun: one that stops it (say, past
        the limit before a choice's prompt) leaves the request thread
        interrupting prompt evaluations, as it must when an interrupt came
        before an evaluation started (which clears it)."""
        if self.cancelled.is_set():
            return True
        if self.expired():
            self.timed_out = True
            return True
        self.in_generation = True
        return False


class Worker:
    """Runs jobs from a bounded queue: one at a time, or with a Llama made
    with n_parallel=N, up to N slots' worth at once (their generations are
    batched into one forward pass per token, pyrt/batching.py). A job holds
    `job.weight` slots (a request for several completions at once); jobs
    start in arrival order, each when enough slots are free (a later small
    job does not overtake a waiting large one)."""

    def __init__(self, llm, max_queue: int):
        self.llm = llm
        self.n_slots = max(1, int(getattr(llm, "n_parallel", 1)))
        self.jobs: queue.Queue = queue.Queue(maxsize=max_queue)
        self.lock = threading.Lock()
        self._cv = threading.Condition(self.lock)     # a slot was freed / a waiting job was cancelled
        self._admit = threading.Lock()                # held by the thread taking the next job
        self._admitting: Job | None = None            # taken from the queue, waiting for its slots
        self._busy_slots = 0
        self.running: set[Job] = set()
        self.stats = {"completed": 0, "cancelled": 0, "failed": 0}
        self._threads = [threading.Thread(target=self._run, name=f"pyrt-worker-{i}", daemon=True)
                         for i in range(self.n_slots)]
        for t in self._threads:
            t.start()

    def submit(self, job: Job) -> None:
        try:
            self.jobs.put_nowait(job)
        except queue.Full:
            raise APIError(503, "the server is busy (too many queued requests); retry later",
                           "server_error", code="server_busy") from None

    def _abort(self) -> None:
        # one generation at a time: abort() stops a running prompt evaluation in
        # C; batched ones stop through their should_stop at the next chunk
        if self.n_slots == 1:
            self.llm.abort()

    def cancel(self, job: Job) -> None:
        with self.lock:
            if not job.cancelled.is_set():
                job.cancelled.set()
            if job in self.running:
                self._abort()
            self._cv.notify_all()

    def interrupt(self, job: Job) -> None:
        """Abort `job`'s running evaluation (a prompt past its time limit) without
        cancelling it: the job fails with AbortedError. No-op once it has ended."""
        with self.lock:
            if job in self.running:
                self._abort()

    def _take(self) -> Job | None:
        """The next job, once its slots are free (None: stop); one thread at a
        time takes, so jobs start in queue order."""
        with self._admit:
            while True:
                job = self.jobs.get()
                if job is None:
                    return None
                weight = min(max(1, job.weight), self.n_slots)
                with self.lock:
                    self._admitting = job
                    while self._busy_slots + weight > self.n_slots and not job.cancelled.is_set():
                        self._cv.wait()
                    self._admitting = None
                    if job.cancelled.is_set():
                        self.stats["cancelled"] += 1
                        job.emit("end")
                        continue
                    job.weight = weight
                    self._busy_slots += weight
                    self.running.add(job)
                    return job

    def _run(self) -> None:
        while True:
            job = self._take()
            if job is None:
                return
            try:
                job.fn(job)
            except BaseException as e:  # reported to the request thread
                job.emit("error", e)
                if not job.cancelled.is_set():
                    self.stats["failed"] += 1
            else:
                if not job.cancelled.is_set():
                    self.stats["completed"] += 1
            finally:
                with self.lock:
                    self.running.discard(job)
                    self._busy_slots -= job.weight
                    if job.cancelled.is_set():
                        self.stats["cancelled"] += 1
                    self._cv.notify_all()
                job.emit("end")

    def busy(self) -> bool:
        with self.lock:
            return bool(self.running)

    def slots(self) -> dict:
        """Generation slots: how many completions can run at once (`total`),
        how many slots are in use now (`busy`), how many requests run
        (`running`) and how many wait (`queued`). /health and /metrics read
        this."""
        with self.lock:
            busy, running = self._busy_slots, len(self.running)
            waiting = 1 if self._admitting is not None else 0
        return {"total": self.n_slots, "busy": busy, "running": running, "queued": self.jobs.qsize() + waiting}

    def stop(self, timeout: float = 10.0) -> bool:
        """Cancel the running jobs, drop queued ones, stop the threads; True if they stopped."""
        while True:
            try:
                job = self.jobs.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                job.cancelled.set()
                job.emit("error", APIError(503, "the server is shutting down", "server_error"))
                job.emit("end")
        with self.lock:
            for job in self.running:
                job.cancelled.set()
            if self.running:
                self._abort()
            if self._admitting is not None:
                self._admitting.cancelled.set()
                self._admitting.emit("error", APIError(503, "the server is shutting down", "server_error"))
            self._cv.notify_all()
        for _ in self._threads:
            try:
                self.jobs.put_nowait(None)
            except queue.Full:
                break
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self._threads)


# ---------------------------------------------------------------------------------------------
# metrics (Prometheus text exposition format 0.0.4)
# ---------------------------------------------------------------------------------------------

TTFT_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def _label(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\"", "\\\"").replace("\n", "\\n")


def _num(v: float) -> str:
    return repr(float(v)) if isinstance(v, float) else str(v)


class Metrics:
    """Counters the request threads and the worker add to; `render` writes them
    with the worker's live gauges for GET /metrics."""

    def __init__(self):
        self.lock = threading.Lock()
        self.requests: Counter = Counter()        # (endpoint, status) -> count
        self.prompt_tokens = 0
        self.cached_tokens = 0
        self.generated_tokens = 0
        self.prompt_seconds = 0.0
        self.generation_seconds = 0.0
        self.timeouts = 0
        self.ttft_buckets = [0] * len(TTFT_BUCKETS)
        self.ttft_sum = 0.0
        self.ttft_count = 0

    def request(self, endpoint: str, status: int) -> None:
        with self.lock:
            self.requests[(endpoint, status)] += 1

    def timeout(self) -> None:
        with self.lock:
            self.timeouts += 1

    def generation(self, job: Job, stats: dict) -> None:
        """A generation job ended (any way): add what it did."""
        if "prompt_ms" not in stats:       # it failed before its prompt was evaluated
            return
        ttft = (job.t_start or job.t_submit) - job.t_submit + stats["prompt_ms"] / 1e3
        with self.lock:
            self.prompt_tokens += int(stats.get("prompt_n", 0))
            self.cached_tokens += int(stats.get("cached_n", 0))
            self.generated_tokens += int(stats.get("predicted_n", 0))
            self.prompt_seconds += stats["prompt_ms"] / 1e3
            self.generation_seconds += stats.get("predicted_ms", 0.0) / 1e3
            for i, b in enumerate(TTFT_BUCKETS):
                if ttft <= b:
                    self.ttft_buckets[i] += 1
            self.ttft_sum += ttft
            self.ttft_count += 1

    def render(self, worker: Worker, model: str) -> str:
        slots = worker.slots()
        out: list[str] = []

        def metric(name: str, kind: str, help_: str, samples) -> None:
            out.append(f"# HELP {name} {help_}")
            out.append(f"# TYPE {name} {kind}")
            for labels, value in samples:
                lab = ",".join(f'{k}="{_label(str(v))}"' for k, v in labels.items())
                out.append(f"{name}{{{lab}}} {_num(value)}" if lab else f"{name} {_num(value)}")

        with self.lock:
            reqs = sorted(self.requests.items())
            metric("pyrt_requests_total", "counter", "HTTP requests answered, by endpoint and status code",
                   [({"endpoint": e, "status": s}, n) for (e, s), n in reqs])
            metric("pyrt_prompt_tokens_total", "counter",
                   "prompt tokens of generation requests (cached ones included)", [({}, self.prompt_tokens)])
            metric("pyrt_prompt_tokens_cached_total", "counter",
                   "prompt tokens reused from the KV cache instead of evaluated", [({}, self.cached_tokens)])
            metric("pyrt_generated_tokens_total", "counter", "tokens generated", [({}, self.generated_tokens)])
            metric("pyrt_prompt_seconds_total", "counter", "seconds spent evaluating prompts",
                   [({}, self.prompt_seconds)])
            metric("pyrt_generation_seconds_total", "counter", "seconds spent generating tokens",
                   [({}, self.generation_seconds)])
            metric("pyrt_request_timeouts_total", "counter",
                   "requests that ran past --request-timeout", [({}, self.timeouts)])
            name = "pyrt_time_to_first_token_seconds"
            out.append(f"# HELP {name} seconds from a generation request's arrival to its first token "
                       f"(queue wait and prompt evaluation)")
            out.append(f"# TYPE {name} histogram")
            for b, n in zip(TTFT_BUCKETS, self.ttft_buckets):
                out.append(f'{name}_bucket{{le="{b}"}} {n}')
            out.append(f'{name}_bucket{{le="+Inf"}} {self.ttft_count}')
            out.append(f"{name}_sum {_num(self.ttft_sum)}")
            out.append(f"{name}_count {self.ttft_count}")
        metric("pyrt_requests_queued", "gauge", "requests waiting for a generation slot",
               [({}, slots["queued"])])
        metric("pyrt_requests_processing", "gauge", "requests being generated now", [({}, slots["running"])])
        metric("pyrt_slots_total", "gauge", "generation slots (requests served at once)", [({}, slots["total"])])
        metric("pyrt_slots_busy", "gauge", "generation slots in use", [({}, slots["busy"])])
        metric("pyrt_jobs_total", "counter", "model jobs by outcome",
               [({"result": k}, v) for k, v in sorted(worker.stats.items())])
        metric("pyrt_model_info", "gauge", "the model this server runs", [({"model": model}, 1)])
        return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------------
# request parsing (OpenAI JSON -> pyrt.Llama keyword arguments)
# ---------------------------------------------------------------------------------------------

_PARAMS = {"messages", "prompt", "input", "n", "temperature", "top_p", "top_k", "min_p", "typical_p",
           "presence_penalty", "frequency_penalty", "repeat_penalty", "seed", "logit_bias", "stop",
           "max_tokens", "logprobs", "top_logprobs", "echo", "suffix", "tools", "tool_choice",
           "response_format", "penalty_last_n", "encoding_format", "stream", "grammar", "json_schema",
           "speculative", "parallel_tool_calls"}
_SAMPLING_KEYS = ("temperature", "top_p", "top_k", "min_p", "typical_p", "presence_penalty",
                  "frequency_penalty", "repeat_penalty", "seed", "logit_bias")


def _number_fields(body: dict, keys) -> dict:
    out = {}
    for k in keys:
        if k in body and body[k] is not None:
            out[k] = body[k]
    if "penalty_last_n" in body or "repeat_last_n" in body:
        out["penalty_last_n"] = body.get("penalty_last_n", body.get("repeat_last_n"))
    return out


#: most completions (prompts x n) of one request, as Llama.create_completion allows
MAX_CHOICES = 128


def _common(body: dict) -> dict:
    kw = {}
    n = body.get("n")
    if n is not None:
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_CHOICES:
            raise APIError(400, f"n must be an integer in [1, {MAX_CHOICES}]", param="n")
        if n != 1:
            kw["n"] = n
    if body.get("best_of") not in (None, 1):
        raise APIError(400, "only best_of=1 is supported", param="best_of")
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise APIError(400, "model must be a string", param="model")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise APIError(400, "stream must be a boolean", param="stream")
    so = body.get("stream_options")
    if so is not None and (not isinstance(so, dict) or not isinstance(so.get("include_usage", False), bool)):
        raise APIError(400, "stream_options must be {\"include_usage\": bool}", param="stream_options")
    kw.update(_number_fields(body, _SAMPLING_KEYS))
    sp = body.get("speculative")     # pyrt's: drafts verified in batches, the same tokens sooner
    if sp is not None:
        if sp not in ("lookup", "draft", "off"):
            raise APIError(400, "speculative must be 'lookup', 'draft' or 'off'", param="speculative")
        kw["speculative"] = sp
    if "stop" in body and body["stop"] is not None:
        stop = body["stop"]
        if isinstance(stop, str):
            stop = [stop]
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop) or len(stop) > 16:
            raise APIError(400, "stop must be a string or a list of at most 16 strings", param="stop")
        kw["stop"] = stop
    mt = body.get("max_completion_tokens", body.get("max_tokens"))
    if mt is not None:   # 0 is allowed: with echo + logprobs it scores a prompt (lm-eval does this)
        if isinstance(mt, bool) or not isinstance(mt, int) or mt < 0:
            raise APIError(400, "max_tokens must be an integer >= 0", param="max_tokens")
        kw["max_tokens"] = mt
    return kw


def _grammar_fields(body: dict) -> dict:
    """`grammar` (GBNF text, as llama.cpp's server), `json_schema` (a schema,
    as llama.cpp's server) or `response_format` (OpenAI) -> a compiled
    pyrt.Grammar, made here so a bad one is a 400 before the request queues."""
    from .grammar import Grammar, resolve_grammar
    gr, js, rf = body.get("grammar"), body.get("json_schema"), body.get("response_format")
    given = [k for k, v in (("grammar", gr), ("json_schema", js)) if v is not None]
    if rf is not None and not (isinstance(rf, dict) and rf.get("type") == "text"):
        given.append("response_format")
    if len(given) > 1:
        raise APIError(400, f"give only one of {', '.join(given)}", param=given[-1])
    try:
        if gr is not None:
            if not isinstance(gr, str):
                raise APIError(400, "grammar must be a string (GBNF)", param="grammar")
            g = Grammar.from_string(gr)
        elif js is not None:
            g = Grammar.from_json_schema(js)
        else:
            g = resolve_grammar(None, rf)
    except ValueError as e:
        raise APIError(400, str(e), param=given[0] if given else "response_format") from None
    return {"grammar": g} if g is not None else {}


def _tool_fields(body: dict) -> tuple[dict, bool]:
    """`tools`, `tool_choice`, `parallel_tool_calls` (OpenAI), checked here so
    a bad one is a 400 before the request queues (pyrt/tools.py); also
    whether the model may call a function."""
    from .tools import check_tools
    kw = {k: body[k] for k in ("tools", "tool_choice", "parallel_tool_calls") if body.get(k) is not None}
    try:
        spec = check_tools(kw.get("tools"), kw.get("tool_choice"), kw.get("parallel_tool_calls"))
    except ValueError as e:
        msg = str(e)
        param = next((p for p in ("parallel_tool_calls", "tool_choice", "tools") if msg.startswith(p)), "tools")
        raise APIError(400, msg, param=param) from None
    return kw, spec is not None and spec.active


def _is_token(t: Any) -> bool:
    return isinstance(t, int) and not isinstance(t, bool)


def _prompt_field(prompt: Any) -> str | list:
    """/v1/completions' `prompt`, as OpenAI takes it: a string, a list of token
    ids, or a list of prompts (strings and/or lists of token ids; one such
    prompt is that prompt). Anything else is a 400."""
    bad = APIError(400, "prompt must be a string, a list of token ids, or a list of strings / lists of "
                        "token ids", param="prompt")
    if isinstance(prompt, str):
        return prompt
    if not isinstance(prompt, list):
        raise bad
    if not prompt:
        raise APIError(400, "prompt must not be empty", param="prompt")
    if all(_is_token(t) for t in prompt):
        return prompt
    for p in prompt:
        if not (isinstance(p, str) or (isinstance(p, list) and all(_is_token(t) for t in p))):
            raise bad
    return prompt[0] if len(prompt) == 1 else prompt


def _include_usage(body: dict) -> bool:
    so = body.get("stream_options") or {}
    return bool(so.get("include_usage", False))


# ---------------------------------------------------------------------------------------------
# HTTP
# ---------------------------------------------------------------------------------------------

@dataclass
class Plan:
    """How a request that runs on the worker is answered: `job`'s events become
    one JSON body (`on_result` applied to its result) or, with `stream`, SSE
    events (``data: ...`` lines ending with ``[DONE]``) or NDJSON lines, each
    pyrt chunk mapped through `on_chunk` to the objects sent for it; an error
    after the stream began is sent as `on_error`'s object."""
    job: Job
    stream: bool
    framing: str = "sse"                                          # "sse" or "ndjson"
    on_chunk: Callable[[dict], list[dict]] | None = None
    on_result: Callable[[Any], Any] | None = None
    on_error: Callable[[APIError], dict] | None = None


@dataclass
class TextReply:
    body: str
    content_type: str = "text/plain; charset=utf-8"


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr, handler, app: "App"):
        self.app = app
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        super().__init__(addr, handler)

    def process_request(self, request, client_address):
        if not self._slots.acquire(blocking=False):
            try:
                body = json.dumps(APIError(503, "too many connections", "server_error").body()).encode()
                request.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                                b"Connection: close\r\nContent-Length: " + str(len(body)).encode() +
                                b"\r\n\r\n" + body)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def handle_error(self, request, client_address):
        # a client that resets a kept-alive connection between requests is not an error
        if isinstance(sys.exc_info()[1], (ConnectionError, socket.timeout)):
            return
        super().handle_error(request, client_address)

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


_PUBLIC = {"/health", "/"}                 # answered without the API key
_JSON_TYPE = re.compile(r"^application/([\w.+-]+\+)?json$")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "pyrt"
    timeout = 120                 # seconds of socket inactivity before a connection is dropped
    server: _HTTPServer
    _cors: str | None = None      # the Access-Control-Allow-Origin value of this response
    _status: int | None = None
    _head = False

    # -- plumbing
    def log_message(self, fmt, *args) -> None:
        if self.server.app.verbose:
            sys.stderr.write(f"{self.address_string()} - {fmt % args}\n")

    def send_response(self, code: int, message: str | None = None) -> None:
        self._status = code
        super().send_response(code, message)

    def end_headers(self) -> None:
        if self._cors is not None:
            self.send_header("Access-Control-Allow-Origin", self._cors)
            self.send_header("Vary", "Origin")
        super().end_headers()

    def _send_bytes(self, status: int, data: bytes, content_type: str, headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if not self._head:
            self.wfile.write(data)
        self.wfile.flush()

    def _send_json(self, status: int, obj: Any, headers: dict | None = None) -> None:
        self._send_bytes(status, _encode(obj).encode("utf-8"), "application/json", headers)

    def _send_error(self, err: APIError) -> None:
        if not self._body_read and int(self.headers.get("Content-Length") or 0) > 0:
            self.close_connection = True      # an unread body would poison the next request
        body = {"error": err.message} if self._ollama else err.body()     # ollama's error shape
        self._send_json(err.status, body, {"Connection": "close"} if self.close_connection else None)

    def _client_gone(self) -> bool:
        try:
            r, _, _ = select.select([self.connection], [], [], 0)
            if not r:
                return False
            return self.connection.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):
            return True

    def _check_content_type(self) -> None:
        """POST bodies are JSON. The types a web page may send cross-origin without
        a preflight (text/plain, forms) are refused, so that no page can make the
        model generate; curl's default form type (or none) only without Origin."""
        raw = self.headers.get("Content-Type") or ""
        ct = raw.split(";", 1)[0].strip().lower()
        if _JSON_TYPE.match(ct):
            return
        if ct in ("", "application/x-www-form-urlencoded") and self.headers.get("Origin") is None:
            return
        raise APIError(415, f"the request body must be JSON sent with 'Content-Type: application/json' "
                            f"(got {raw or 'no Content-Type'!r})", code="unsupported_media_type")

    def _read_json(self) -> dict:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            self.close_connection = True
            raise APIError(411, "chunked request bodies are not supported; send Content-Length")
        length = self.headers.get("Content-Length")
        if length is None:
            self.close_connection = True
            raise APIError(411, "a Content-Length header is required")
        try:
            n = int(length)
        except ValueError:
            self.close_connection = True
            raise APIError(400, "bad Content-Length") from None
        if n < 0 or n > MAX_BODY:
            self.close_connection = True
            raise APIError(413, f"the request body is larger than {MAX_BODY} bytes")
        raw = self.rfile.read(n)
        self._body_read = True
        if len(raw) != n:
            self.close_connection = True
            raise APIError(400, "the request body is shorter than Content-Length")
        try:
            body = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise APIError(400, f"the request body is not valid JSON: {e}") from None
        if not isinstance(body, dict):
            raise APIError(400, "the request body must be a JSON object")
        return body

    def _authorized(self) -> bool:
        key = self.server.app.api_key
        if not key:
            return True
        auth = self.headers.get("Authorization", "")
        given = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
        return hmac.compare_digest(given.encode(), key.encode())

    def _host_allowed(self) -> bool:
        """On a loopback bind, only loopback Host names are served: a web page whose
        domain re-resolves to 127.0.0.1 (DNS rebinding, as in ollama's CVE-2024-28224)
        must not reach the model through the user's browser."""
        if not self.server.app.loopback_only:
            return True
        host = (self.headers.get("Host") or "").strip().lower()
        if host.startswith("["):
            name = host[1:host.find("]")] if "]" in host else host
        else:
            name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
        return name in ("localhost", "127.0.0.1", "::1", "") or name.startswith("127.") \
            or name.endswith(".localhost")

    def _route(self) -> str:
        path = self.path.split("?", 1)[0].rstrip("/") or "/"
        if path.startswith("/v1/"):
            path = path[3:]
        return path

    def _preflight(self) -> None:
        """OPTIONS: a CORS preflight from an allowed origin (others were refused
        already), or a plain OPTIONS asking what is allowed."""
        hdrs = {"Allow": "GET, HEAD, POST, OPTIONS"}
        if self._cors is not None:
            asked = self.headers.get("Access-Control-Request-Headers", "")
            names = [h.strip() for h in asked.split(",") if re.fullmatch(r"[A-Za-z0-9-]+", h.strip())]
            for h in ("Authorization", "Content-Type"):
                if h.lower() not in (n.lower() for n in names):
                    names.append(h)
            hdrs.update({"Access-Control-Allow-Methods": "GET, HEAD, POST, OPTIONS",
                         "Access-Control-Allow-Headers": ", ".join(names),
                         "Access-Control-Max-Age": "600"})
        self.send_response(204)
        for k, v in hdrs.items():
            self.send_header(k, v)
        self.send_header("Content-Length", "0")
        self.end_headers()

    # -- methods
    def parse_request(self) -> bool:
        # one handler serves every request of a kept-alive connection: reset per request
        self._cors, self._status, self._head = None, None, False
        return super().parse_request()

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._head = True
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_OPTIONS(self) -> None:
        self._dispatch("OPTIONS")

    def _dispatch(self, method: str) -> None:
        app = self.server.app
        self._body_read = False
        path = self._route()
        self._ollama = path.startswith("/api/")
        endpoint = "other"
        try:
            if not self._host_allowed():
                raise APIError(403, "this server only answers requests addressed to localhost "
                                    "(the Host header names another host)", code="forbidden_host")
            origin = self.headers.get("Origin")
            if origin is not None:
                if not app.origin_allowed(origin):
                    raise APIError(403, f"cross-origin requests from {origin!r} are not allowed "
                                        f"(start the server with --cors ORIGIN to allow them)",
                                   code="forbidden_origin")
                self._cors = "*" if "*" in app.cors else origin
            if method == "OPTIONS":
                endpoint = "OPTIONS"
                return self._preflight()
            methods = app.routes.get(path)
            if methods is not None:
                endpoint = app.endpoint_label(path)
            elif path.startswith("/models/"):
                endpoint = "/v1/models/{id}"
                methods = {"GET": lambda _body, mid=path[len("/models/"):]: app.model_info(mid)}
            if path not in _PUBLIC and not self._authorized():
                raise APIError(401, "invalid or missing API key (send 'Authorization: Bearer KEY')",
                               code="invalid_api_key")
            shown = self.path.split("?", 1)[0]
            if methods is None:
                raise APIError(404, f"unknown endpoint {method} {shown}", code="not_found")
            fn = methods.get(method)
            if fn is None:
                raise APIError(405, f"use {' or '.join(sorted(methods))} {shown}", code="method_not_allowed")
            body = None
            if method == "POST":
                self._check_content_type()
                body = self._read_json()
            out = fn(body)
            if isinstance(out, Plan):
                self._serve_plan(out)
            elif isinstance(out, TextReply):
                self._send_bytes(200, out.body.encode("utf-8"), out.content_type)
            else:
                self._send_json(200, out)
        except APIError as e:
            try:
                self._send_error(e)
            except OSError:
                self.close_connection = True
        except _ClientGone:
            self.close_connection = True
        except (BrokenPipeError, ConnectionResetError, socket.timeout):
            self.close_connection = True
        except Exception as e:  # a bug: answer 500, keep serving
            if app.verbose:
                traceback.print_exc()
            try:
                self._send_error(APIError(500, f"internal error: {type(e).__name__}: {e}", "server_error"))
            except OSError:
                self.close_connection = True
        finally:
            app.metrics.request(endpoint, self._status if self._status is not None else 499)

    # -- running a job
    def _next_event(self, job: Job):
        worker = self.server.app.worker
        while True:
            try:
                return job.events.get(timeout=_POLL)
            except queue.Empty:
                if self._client_gone():
                    worker.cancel(job)
                    raise _ClientGone() from None
                if not job.in_generation and job.expired():
                    # past the time limit before its first token: interrupt the evaluation
                    # (generation checks the limit itself, between tokens)
                    job.timed_out = True
                    worker.interrupt(job)

    def _serve_plan(self, plan: Plan) -> None:
        worker = self.server.app.worker
        job = plan.job
        worker.submit(job)
        kind, value = self._next_event(job)
        if kind == "error":
            raise _api_error(value)
        if kind == "end":
            raise APIError(500, "the request produced no result", "server_error")
        if not plan.stream:
            self._send_json(200, plan.on_result(value) if plan.on_result else value)
            self._drain(job)
            return
        sse = plan.framing == "sse"
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream" if sse else "application/x-ndjson")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

        def frame(obj) -> bytes:
            text = _encode(obj).encode()
            return b"data: " + text + b"\n\n" if sse else text + b"\n"

        def write(kind: str, value: Any) -> bool:
            """Send one event's frames; False when the stream is over."""
            if kind == "chunk":
                data = b"".join(frame(obj) for obj in (plan.on_chunk(value) if plan.on_chunk else [value]))
                if data:
                    self._write_chunk(data)
                return True
            if kind == "error":
                err = _api_error(value)
                self._write_chunk(frame(plan.on_error(err) if plan.on_error else err.body()))
            return False

        # The first event was written by this thread; the rest are written by the
        # thread that generates them (Job.divert), while this one watches for a
        # disconnect or the time limit. `lock` keeps writes off the socket once
        # this thread gave up on it (it is closed after we return).
        lock = threading.Lock()
        over = threading.Event()          # the job's last event was handled
        state = {"gone": False, "open": True}

        def sink(kind: str, value: Any) -> None:
            with lock:
                if state["gone"] or not state["open"]:
                    if kind == "end":
                        over.set()
                    return
                try:
                    state["open"] = write(kind, value)
                except OSError:
                    state["gone"] = True
                    worker.cancel(job)
                if kind == "end" or not state["open"]:
                    over.set()

        try:
            if write(kind, value):
                job.divert(sink)
                while not over.wait(_POLL):
                    if self._client_gone():
                        with lock:
                            state["gone"] = True
                        worker.cancel(job)
                        raise _ClientGone()
                    if not job.in_generation and job.expired():
                        job.timed_out = True
                        worker.interrupt(job)
                with lock:
                    if state["gone"]:
                        raise _ClientGone()
                    state["open"] = False
            if sse:
                self._write_chunk(b"data: [DONE]\n\n")
            self._write_chunk(b"")
        except (BrokenPipeError, ConnectionResetError, socket.timeout, OSError):
            with lock:
                state["gone"] = True
            worker.cancel(job)
            raise _ClientGone() from None

    def _write_chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _drain(self, job: Job) -> None:
        while True:
            kind, _ = job.events.get()
            if kind == "end":
                return


def _api_error(e: BaseException) -> APIError:
    from ._native import AbortedError, ContextFullError
    if isinstance(e, APIError):
        return e
    if isinstance(e, ContextFullError):
        return APIError(400, str(e), code="context_length_exceeded")
    if isinstance(e, (ValueError, TypeError)):
        msg = str(e)
        m = re.match(r"(\w+)(?:\[\d+\])?[ .:]", msg)
        return APIError(400, msg, param=m.group(1) if m and m.group(1) in _PARAMS else None)
    if isinstance(e, AbortedError):
        return APIError(499, "the request was cancelled", code="cancelled")
    return APIError(500, f"{type(e).__name__}: {e}", "server_error")


# ---------------------------------------------------------------------------------------------
# the application
# ---------------------------------------------------------------------------------------------

_OPENAI_PATHS = ("/models", "/completions", "/chat/completions", "/embeddings")


class App:
    def __init__(self, llm, *, alias: str | list[str] | tuple[str, ...] | None = None,
                 api_key: str | None = None, max_queue: int = 16, verbose: bool = False,
                 cors: list[str] | tuple[str, ...] | None = None, max_tokens_limit: int | None = None,
                 request_timeout: float | None = None):
        from .server_ollama import OllamaAPI
        self.llm = llm
        aliases = [alias] if isinstance(alias, str) else list(alias or [])
        file_name = llm.model_name
        self.alias = aliases[0] if aliases else file_name
        llm.model_name = self.alias
        # the names a request may give for this model ("NAME:latest" too, ollama's form)
        self.names = list(dict.fromkeys([self.alias, *aliases, file_name]))
        self.api_key = api_key
        self.verbose = verbose
        self.cors = [c.strip().lower().rstrip("/") for c in (cors or []) if c.strip()]
        if max_tokens_limit is not None and (isinstance(max_tokens_limit, bool) or max_tokens_limit < 1):
            raise ValueError(f"max_tokens_limit must be >= 1, got {max_tokens_limit!r}")
        if request_timeout is not None and not request_timeout > 0:
            raise ValueError(f"request_timeout must be > 0 seconds, got {request_timeout!r}")
        self.max_tokens_limit = max_tokens_limit
        self.request_timeout = request_timeout
        self.loopback_only = False      # set by Server when bound to a loopback address
        self.created = int(time.time())
        self.metrics = Metrics()
        self.worker = Worker(llm, max_queue)
        self.ollama = OllamaAPI(self)
        # path (without /v1) -> {method: fn(body) -> dict | Plan | TextReply}
        self.routes: dict[str, dict[str, Callable]] = {
            "/": {"GET": lambda _b: TextReply("pyrt is running (OpenAI API under /v1, ollama API under /api)\n")},
            "/health": {"GET": lambda _b: self.health()},
            "/metrics": {"GET": lambda _b: TextReply(self.metrics.render(self.worker, self.alias),
                                                     "text/plain; version=0.0.4; charset=utf-8")},
            "/models": {"GET": lambda _b: self.models()},
            "/completions": {"POST": self.completion_job},
            "/chat/completions": {"POST": self.chat_job},
            "/embeddings": {"POST": self.embedding_job},
            "/tokenize": {"POST": self.tokenize},
            "/detokenize": {"POST": self.detokenize},
            **self.ollama.routes(),
        }

    @staticmethod
    def endpoint_label(path: str) -> str:
        return "/v1" + path if path in _OPENAI_PATHS else path

    def origin_allowed(self, origin: str) -> bool:
        o = origin.strip().lower().rstrip("/")
        return any(p == "*" or p == o or ("*" in p and fnmatch.fnmatchcase(o, p)) for p in self.cors)

    def health(self) -> dict:
        w = self.worker
        s = w.slots()
        return {"status": "ok", "model": self.alias, "busy": w.busy(), "queued": s["queued"],
                "slots": s["total"], "slots_busy": s["busy"], **w.stats}

    # -- model names
    def model_known(self, name: str) -> bool:
        base = name[:-len(":latest")] if name.endswith(":latest") else name
        return name in self.names or base in self.names

    def check_model(self, name: Any) -> None:
        """A request's "model": missing, empty or a name of the loaded model; else 404."""
        if name is None or name == "":
            return
        if not isinstance(name, str):
            raise APIError(400, "model must be a string", param="model")
        if not self.model_known(name):
            raise APIError(404, f"the model {name!r} does not exist: this server runs {self.alias!r} "
                                f"(start it with --alias {name} to accept that name too)",
                           param="model", code="model_not_found")

    def _model_obj(self) -> dict:
        llm = self.llm
        return {"id": self.alias, "object": "model", "created": self.created, "owned_by": "pyrt",
                "meta": {"n_ctx": llm.n_ctx(), "n_ctx_train": llm.hparams.n_ctx_train,
                         "n_vocab": llm.n_vocab(), "n_embd": llm.n_embd(),
                         "size": os.path.getsize(llm.model_path), "aliases": self.names}}

    def models(self) -> dict:
        return {"object": "list", "data": [self._model_obj()]}

    def model_info(self, model_id: str) -> dict:
        self.check_model(model_id)
        return self._model_obj()

    # -- limits
    def limit_tokens(self, kw: dict, default: int | None) -> None:
        """Apply --max-tokens-limit to kw["max_tokens"] (`default`: the API's
        value when the request gives none)."""
        cap = self.max_tokens_limit
        if cap is None:
            return
        mt = kw.get("max_tokens", default)
        kw["max_tokens"] = cap if mt is None else min(mt, cap)

    # -- jobs
    def job(self, body: Callable[[Job], None]) -> Job:
        """A job running `body(job)` under the request time limit: an evaluation
        interrupted for running past it becomes a 503 request_timeout."""
        from ._native import AbortedError
        timeout = self.request_timeout

        def fn(job: Job) -> None:
            job.start(timeout)
            try:
                body(job)
            except AbortedError:
                if job.timed_out and not job.cancelled.is_set():
                    raise APIError(503, f"the request ran past the server's time limit "
                                        f"(--request-timeout {timeout:g} s) before its first token",
                                   "server_error", code="request_timeout") from None
                raise
            finally:
                if job.timed_out:
                    self.metrics.timeout()

        return Job(fn)

    def generation_job(self, call: Callable, args: tuple, kw: dict, stream: bool, completions: int = 1) -> Job:
        """A job calling `call(*args, stream=stream, should_stop=..., **kw)` (a Llama
        completion method): emits its result, or each chunk; fills job.stats
        before the last one; adds its counts to /metrics. It holds one slot
        per completion it runs at once (`completions`, at most the server's
        slots: more run that many at a time)."""
        llm = self.llm

        def length_if_timed_out(job: Job, obj: dict) -> dict:
            if job.timed_out:
                for c in obj.get("choices") or ():
                    if c.get("finish_reason") == "abort":
                        c["finish_reason"] = "length"
            return obj

        def body(job: Job) -> None:
            llm.last_stats = {}
            try:
                out = call(*args, stream=stream, should_stop=job.should_stop, **kw)
                if not stream:
                    job.stats = dict(llm.last_stats)
                    job.emit("result", length_if_timed_out(job, out))
                    return
                for chunk in out:
                    if job.cancelled.is_set():
                        out.close()
                        return
                    if chunk["choices"] and chunk["choices"][0].get("finish_reason"):
                        job.stats = dict(llm.last_stats)
                    job.emit("chunk", length_if_timed_out(job, chunk))
            finally:
                self.metrics.generation(job, llm.last_stats)

        job = self.job(body)
        job.weight = min(max(1, completions), self.worker.n_slots)
        return job

    # -- OpenAI endpoints: each returns a Plan
    def chat_job(self, body: dict) -> Plan:
        self.check_model(body.get("model"))
        kw = _common(body)
        if "messages" not in body:
            raise APIError(400, "messages is required", param="messages")
        messages = body["messages"]
        tool_kw, calls = _tool_fields(body)
        kw.update(tool_kw)
        kw.update(_grammar_fields(body))
        if calls and "grammar" in kw:
            raise APIError(400, "give either tools or grammar / json_schema / a JSON response_format, "
                                "not both", param="tools")
        if body.get("logprobs") is not None:
            kw["logprobs"] = body["logprobs"]
        if body.get("top_logprobs") is not None:
            kw["top_logprobs"] = body["top_logprobs"]
        self.limit_tokens(kw, None)
        stream = body.get("stream", False)
        job = self.generation_job(self.llm.create_chat_completion, (messages,), kw, stream, kw.get("n", 1))
        return Plan(job, stream, on_chunk=self._usage_post(_include_usage(body)))

    def completion_job(self, body: dict) -> Plan:
        self.check_model(body.get("model"))
        kw = _common(body)
        if "prompt" not in body:
            raise APIError(400, "prompt is required", param="prompt")
        prompt = _prompt_field(body["prompt"])
        n_prompts = len(prompt) if isinstance(prompt, list) and prompt and not _is_token(prompt[0]) else 1
        if n_prompts * kw.get("n", 1) > MAX_CHOICES:
            raise APIError(400, f"{n_prompts} prompts x n={kw.get('n', 1)} is {n_prompts * kw.get('n', 1)} "
                                f"completions; at most {MAX_CHOICES} per request", param="prompt")
        for k in ("echo", "logprobs", "suffix"):
            if body.get(k) is not None:
                kw[k] = body[k]
        kw.update(_grammar_fields(body))
        if kw.get("echo") is False:
            kw.pop("echo")
        self.limit_tokens(kw, 16)             # create_completion's default
        stream = body.get("stream", False)
        job = self.generation_job(self.llm.create_completion, (prompt,), kw, stream, n_prompts * kw.get("n", 1))
        return Plan(job, stream, on_chunk=self._usage_post(_include_usage(body)))

    def embedding_job(self, body: dict) -> Plan:
        self.check_model(body.get("model"))
        if "input" not in body:
            raise APIError(400, "input is required", param="input")
        inp = body["input"]
        fmt = body.get("encoding_format", "float") or "float"
        if fmt not in ("float", "base64"):
            raise APIError(400, "encoding_format must be 'float' or 'base64'", param="encoding_format")
        dims = body.get("dimensions")
        if dims is not None and dims != self.llm.n_embd():
            raise APIError(400, f"this model's embeddings have {self.llm.n_embd()} dimensions; "
                                f"dimensions={dims!r} is not supported", param="dimensions")
        return Plan(self.embed_job(inp, truncate=False, encoding_format=fmt), False)

    def embed_job(self, inp: Any, **kw) -> Job:
        if isinstance(inp, str) and not inp:
            raise APIError(400, "input must not be empty", param="input")
        if isinstance(inp, list) and len(inp) > 2048:
            raise APIError(400, "at most 2048 inputs per request", param="input")
        llm = self.llm
        return self.job(lambda job: job.emit("result", llm.create_embedding(inp, **kw)))

    # -- llama.cpp's server: tokens (read the vocabulary only: answered on the request thread)
    def tokenize(self, body: dict) -> dict:
        self.check_model(body.get("model"))
        content = body.get("content")
        if not isinstance(content, str):
            raise APIError(400, "content must be a string", param="content")
        flags = {}
        for k, default in (("add_special", False), ("parse_special", True), ("with_pieces", False)):
            v = body.get(k, default)
            if not isinstance(v, bool):
                raise APIError(400, f"{k} must be a boolean", param=k)
            flags[k] = v
        llm = self.llm
        toks = llm.tokenize(content, add_bos=None if flags["add_special"] else False,
                            special=flags["parse_special"])
        if not flags["with_pieces"]:
            return {"tokens": toks}
        pieces = []
        for t in toks:
            raw = llm.tokenizer.token_to_bytes(t, True)
            try:
                piece: Any = raw.decode("utf-8")
            except UnicodeDecodeError:
                piece = list(raw)          # part of a character: its bytes, as llama.cpp gives them
            pieces.append({"id": t, "piece": piece})
        return {"tokens": pieces}

    def detokenize(self, body: dict) -> dict:
        self.check_model(body.get("model"))
        toks = body.get("tokens")
        if not isinstance(toks, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in toks):
            raise APIError(400, "tokens must be a list of token ids", param="tokens")
        try:
            return {"content": self.llm.detokenize_text(toks, special=True)}
        except ValueError as e:
            raise APIError(400, str(e), param="tokens") from None

    @staticmethod
    def _usage_post(include_usage: bool) -> Callable[[dict], list[dict]]:
        def post(chunk: dict) -> list[dict]:
            usage = chunk.pop("usage", None)
            if not include_usage:
                return [chunk]
            chunk["usage"] = None
            if chunk["choices"] and chunk["choices"][0].get("finish_reason") and usage is not None:
                tail = {k: chunk[k] for k in ("id", "object", "created", "model")}
                tail.update(choices=[], usage=usage)
                return [chunk, tail]
            return [chunk]
        return post


class Server:
    """An App bound to a socket; `serve_forever()` blocks, `shutdown()` stops."""

    def __init__(self, llm, host: str = "127.0.0.1", port: int = 8080, **app_kw):
        self.app = App(llm, **app_kw)
        self.httpd = _HTTPServer((host, port), Handler, self.app)
        self.host, self.port = self.httpd.server_address[:2]
        self.app.loopback_only = _is_loopback(str(self.host))

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in str(self.host) else self.host
        return f"http://{host}:{self.port}/v1"

    def serve_forever(self) -> None:
        self.httpd.serve_forever(poll_interval=0.25)

    def shutdown(self) -> None:
        self.app.worker.stop()
        self.httpd.shutdown()
        self.httpd.server_close()


def _is_loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")


def _default_parallel(args, want: int = 4) -> int:
    """4 parallel requests on the CPU, fewer when their KV caches would take
    more than a quarter of the machine's memory; 1 on a GPU."""
    if args.device not in (None, "cpu"):
        return 1
    from .gguf_file import GGUFFile
    from .model import _physical_memory, kv_cache_bytes, read_hparams
    from .registry import ensure_model
    try:
        g = GGUFFile(str(ensure_model(args.model)))          # the header only
        try:
            hp = read_hparams(g)
        finally:
            g.close()
    except Exception:
        return 1                                             # Llama() reports the problem
    n_ctx = args.ctx_size or hp.n_ctx_train
    per_seq = kv_cache_bytes(hp, n_ctx, 1, getattr(args, "cache_type_k", None), getattr(args, "cache_type_v", None))
    ram = _physical_memory()
    n = want
    while n > 1 and ram and n * per_seq > ram // 4:
        n -= 1
    return n


def run_server(args) -> int:
    """Entry point of `pyrt serve`."""
    from .api import Llama
    from .cli_args import cache_type_kwargs
    if not 0 <= args.port <= 65535:
        print("pyrt: error: --port must be in [0, 65535]", file=sys.stderr)
        return 2
    if args.max_queue < 1:
        print("pyrt: error: --max-queue must be >= 1", file=sys.stderr)
        return 2
    if args.max_tokens_limit is not None and args.max_tokens_limit < 1:
        print("pyrt: error: --max-tokens-limit must be >= 1", file=sys.stderr)
        return 2
    if args.request_timeout is not None and not args.request_timeout > 0:
        print("pyrt: error: --request-timeout must be > 0 seconds", file=sys.stderr)
        return 2
    api_key = args.api_key or os.environ.get("PYRT_API_KEY") or None
    template = args.chat_template
    if template:
        from .chat import BUILTIN_TEMPLATES
        if template not in BUILTIN_TEMPLATES and os.path.isfile(template):
            with open(template, encoding="utf-8") as f:
                template = f.read()
    if args.parallel is not None and not 1 <= args.parallel <= 256:
        print("pyrt: error: --parallel must be in [1, 256]", file=sys.stderr)
        return 2
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(8), "little")
    n_parallel = args.parallel or _default_parallel(args)
    llm = Llama(args.model, n_ctx=args.ctx_size, n_threads=args.threads, seed=seed, chat_template=template,
                device=args.device, n_parallel=n_parallel, **cache_type_kwargs(args))
    try:
        tmpl = llm.chat_template
        if tmpl.notice:
            print(f"note: {tmpl.notice}", file=sys.stderr)
        try:
            server = Server(llm, args.host, args.port, alias=args.alias, api_key=api_key,
                            max_queue=args.max_queue, verbose=args.verbose, cors=args.cors,
                            max_tokens_limit=args.max_tokens_limit, request_timeout=args.request_timeout)
        except OSError as e:
            print(f"pyrt: error: cannot listen on {args.host}:{args.port}: {e.strerror or e}", file=sys.stderr)
            return 1
        if not _is_loopback(args.host) and not api_key:
            print(f"warning: listening on {args.host} without --api-key: anyone who can reach this "
                  f"machine can use the model", file=sys.stderr)
        if "*" in server.app.cors:
            print("warning: --cors '*': every web page the user opens may use this server"
                  + ("" if api_key else " (set --api-key)"), file=sys.stderr)

        def on_term(signum, frame):
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, on_term)
        print(f"pyrt server listening on {server.url} (model {server.app.alias!r}, n_ctx {llm.n_ctx()}, "
              f"{llm.n_parallel} parallel)",
              file=sys.stderr, flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            print("shutting down", file=sys.stderr)
        finally:
            stopped = server.app.worker.stop()
            server.httpd.server_close()
        if not stopped:       # the worker is still inside the model: let the process exit instead
            llm = None
        return 0
    finally:
        if llm is not None:
            llm.close()
