"""`pyrt serve`: an OpenAI-compatible HTTP server.

Endpoints: GET /health, GET /v1/models[/ID], POST /v1/completions,
POST /v1/chat/completions (SSE streaming), POST /v1/embeddings (the /v1
prefix is optional).

Why the standard library (``http.server.ThreadingHTTPServer``) and not an ASGI
stack: the model runs one request at a time anyway (one KV cache, and the C
forward pass already uses every core), so the server's job is to parse small
JSON requests, queue them for one generation worker, and stream the result.
That needs a thread per connection and SSE over chunked transfer encoding,
nothing more; the stdlib does it with no new dependency and nothing to
configure.

Concurrency: request threads never touch the model. Every request becomes a
job on a bounded queue served by one worker thread that owns the Llama, so
concurrent clients are served in turn and the KV cache is never shared
mid-generation (prefix reuse still works across requests). A client that
disconnects — while queued, during prompt evaluation or mid-stream — cancels
its job: the worker stops at the next token, and a running prompt evaluation
is aborted in C.
"""
from __future__ import annotations

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
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

MAX_BODY = 8 << 20            # bytes of a request body
MAX_CONNECTIONS = 64          # concurrent connections (each is a thread)
_POLL = 0.1                   # seconds between disconnect checks while waiting


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
    """One request's work. `fn(job)` runs on the worker and calls `job.emit`."""

    def __init__(self, fn: Callable[["Job"], None]):
        self.fn = fn
        self.events: queue.Queue = queue.Queue()
        self.cancelled = threading.Event()

    def emit(self, kind: str, value: Any = None) -> None:
        self.events.put((kind, value))


class Worker:
    """Runs jobs from a bounded queue: one at a time, or with a Llama made
    with n_parallel=N, up to N at once (their generations are batched into
    one forward pass per token, pyrt/batching.py)."""

    def __init__(self, llm, max_queue: int):
        self.llm = llm
        self.n_slots = max(1, int(getattr(llm, "n_parallel", 1)))
        self.jobs: queue.Queue = queue.Queue(maxsize=max_queue)
        self.lock = threading.Lock()
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

    def _run(self) -> None:
        while True:
            job = self.jobs.get()
            if job is None:
                return
            with self.lock:
                if job.cancelled.is_set():
                    self.stats["cancelled"] += 1
                    job.emit("end")
                    continue
                self.running.add(job)
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
                    if job.cancelled.is_set():
                        self.stats["cancelled"] += 1
                job.emit("end")

    def busy(self) -> bool:
        with self.lock:
            return bool(self.running)

    def n_running(self) -> int:
        with self.lock:
            return len(self.running)

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
# request parsing (OpenAI JSON -> pyrt.Llama keyword arguments)
# ---------------------------------------------------------------------------------------------

_PARAMS = {"messages", "prompt", "input", "temperature", "top_p", "top_k", "min_p", "typical_p",
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


def _common(body: dict) -> dict:
    n = body.get("n")
    if n is not None and n != 1:
        raise APIError(400, "only n=1 is supported", param="n")
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
    kw = _number_fields(body, _SAMPLING_KEYS)
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


def _include_usage(body: dict) -> bool:
    so = body.get("stream_options") or {}
    return bool(so.get("include_usage", False))


# ---------------------------------------------------------------------------------------------
# HTTP
# ---------------------------------------------------------------------------------------------

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

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "pyrt"
    timeout = 120                 # seconds of socket inactivity before a connection is dropped
    server: _HTTPServer

    # -- plumbing
    def log_message(self, fmt, *args) -> None:
        if self.server.app.verbose:
            sys.stderr.write(f"{self.address_string()} - {fmt % args}\n")

    def _send_json(self, status: int, obj: Any, headers: dict | None = None) -> None:
        data = json.dumps(obj, ensure_ascii=False).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def _send_error(self, err: APIError) -> None:
        if not self._body_read and int(self.headers.get("Content-Length") or 0) > 0:
            self.close_connection = True      # an unread body would poison the next request
        self._send_json(err.status, err.body(), {"Connection": "close"} if self.close_connection else None)

    def _client_gone(self) -> bool:
        try:
            r, _, _ = select.select([self.connection], [], [], 0)
            if not r:
                return False
            return self.connection.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):
            return True

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

    # -- methods
    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        app = self.server.app
        self._body_read = False
        path = self._route()
        try:
            if not self._host_allowed():
                raise APIError(403, "this server only answers requests addressed to localhost "
                                    "(the Host header names another host)", code="forbidden_host")
            if path == "/health":
                if method != "GET":
                    raise APIError(405, "use GET /health", code="method_not_allowed")
                return self._send_json(200, app.health())
            if not self._authorized():
                raise APIError(401, "invalid or missing API key (send 'Authorization: Bearer KEY')",
                               code="invalid_api_key")
            routes = {"/models": ("GET", None), "/completions": ("POST", app.completion_job),
                      "/chat/completions": ("POST", app.chat_job), "/embeddings": ("POST", app.embedding_job)}
            if path.startswith("/models/") and method == "GET":
                return self._send_json(200, app.model_info(path[len("/models/"):]))
            if path not in routes:
                raise APIError(404, f"unknown endpoint {method} {self.path.split('?', 1)[0]}",
                               code="not_found")
            want, make = routes[path]
            if method != want:
                raise APIError(405, f"use {want} {self.path.split('?', 1)[0]}", code="method_not_allowed")
            if make is None:
                return self._send_json(200, app.models())
            body = self._read_json()
            job, stream, post = make(body)
            self._serve_job(job, stream, post)
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

    def _serve_job(self, job: Job, stream: bool, post: Callable[[dict], list[dict]] | None) -> None:
        worker = self.server.app.worker
        worker.submit(job)
        kind, value = self._next_event(job)
        if kind == "error":
            raise _api_error(value)
        if kind == "end":
            raise APIError(500, "the request produced no result", "server_error")
        if not stream:
            self._send_json(200, value)
            self._drain(job)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            while True:
                if kind == "chunk":
                    for obj in (post(value) if post else [value]):
                        self._write_chunk(b"data: " + json.dumps(obj, ensure_ascii=False).encode() + b"\n\n")
                elif kind == "error":
                    err = _api_error(value)
                    self._write_chunk(b"data: " + json.dumps(err.body()).encode() + b"\n\n")
                    break
                elif kind == "end":
                    break
                kind, value = self._next_event(job)
            self._write_chunk(b"data: [DONE]\n\n")
            self._write_chunk(b"")
        except (BrokenPipeError, ConnectionResetError, socket.timeout, OSError):
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

class App:
    def __init__(self, llm, *, alias: str | None = None, api_key: str | None = None,
                 max_queue: int = 16, verbose: bool = False):
        self.llm = llm
        self.alias = alias or llm.model_name
        llm.model_name = self.alias
        self.api_key = api_key
        self.verbose = verbose
        self.loopback_only = False      # set by Server when bound to a loopback address
        self.created = int(time.time())
        self.worker = Worker(llm, max_queue)

    def health(self) -> dict:
        w = self.worker
        return {"status": "ok", "model": self.alias, "busy": w.busy(), "queued": w.jobs.qsize(),
                "slots": w.n_slots, "slots_busy": w.n_running(), **w.stats}

    def _model_obj(self) -> dict:
        llm = self.llm
        return {"id": self.alias, "object": "model", "created": self.created, "owned_by": "pyrt",
                "meta": {"n_ctx": llm.n_ctx(), "n_ctx_train": llm.hparams.n_ctx_train,
                         "n_vocab": llm.n_vocab(), "n_embd": llm.n_embd(),
                         "size": os.path.getsize(llm.model_path)}}

    def models(self) -> dict:
        return {"object": "list", "data": [self._model_obj()]}

    def model_info(self, model_id: str) -> dict:
        if model_id != self.alias:
            raise APIError(404, f"the model {model_id!r} does not exist (this server has {self.alias!r})",
                           param="model", code="model_not_found")
        return self._model_obj()

    # -- jobs: return (job, stream, post-processing of stream chunks)
    def chat_job(self, body: dict):
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
        stream = body.get("stream", False)
        llm = self.llm

        def fn(job: Job) -> None:
            out = llm.create_chat_completion(messages, stream=stream, should_stop=job.cancelled.is_set, **kw)
            if not stream:
                job.emit("result", out)
                return
            for chunk in out:
                if job.cancelled.is_set():
                    out.close()
                    return
                job.emit("chunk", chunk)

        return Job(fn), stream, self._usage_post(_include_usage(body))

    def completion_job(self, body: dict):
        kw = _common(body)
        if "prompt" not in body:
            raise APIError(400, "prompt is required", param="prompt")
        prompt = body["prompt"]
        if isinstance(prompt, list) and prompt and all(isinstance(p, (str, list)) for p in prompt):
            if len(prompt) != 1:
                raise APIError(400, "only one prompt per request is supported", param="prompt")
            prompt = prompt[0]
        if not isinstance(prompt, (str, list)):
            raise APIError(400, "prompt must be a string or a list of token ids", param="prompt")
        if isinstance(prompt, list) and not all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
            raise APIError(400, "prompt must be a string or a list of token ids", param="prompt")
        for k in ("echo", "logprobs", "suffix"):
            if body.get(k) is not None:
                kw[k] = body[k]
        kw.update(_grammar_fields(body))
        if kw.get("echo") is False:
            kw.pop("echo")
        stream = body.get("stream", False)
        llm = self.llm

        def fn(job: Job) -> None:
            out = llm.create_completion(prompt, stream=stream, should_stop=job.cancelled.is_set, **kw)
            if not stream:
                job.emit("result", out)
                return
            for chunk in out:
                if job.cancelled.is_set():
                    out.close()
                    return
                job.emit("chunk", chunk)

        return Job(fn), stream, self._usage_post(_include_usage(body))

    def embedding_job(self, body: dict):
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
        if isinstance(inp, str) and not inp:
            raise APIError(400, "input must not be empty", param="input")
        if isinstance(inp, list) and len(inp) > 2048:
            raise APIError(400, "at most 2048 inputs per request", param="input")
        llm = self.llm

        def fn(job: Job) -> None:
            job.emit("result", llm.create_embedding(inp, truncate=False, encoding_format=fmt))

        return Job(fn), False, None

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
    from .model import _physical_memory, read_hparams
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
    per_seq = 2 * hp.n_layer * n_ctx * hp.n_head_kv * hp.head_dim * 2
    ram = _physical_memory()
    n = want
    while n > 1 and ram and n * per_seq > ram // 4:
        n -= 1
    return n


def run_server(args) -> int:
    """Entry point of `pyrt serve`."""
    from .api import Llama
    if not 0 <= args.port <= 65535:
        print("pyrt: error: --port must be in [0, 65535]", file=sys.stderr)
        return 2
    if args.max_queue < 1:
        print("pyrt: error: --max-queue must be >= 1", file=sys.stderr)
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
                device=args.device, n_parallel=n_parallel)
    try:
        tmpl = llm.chat_template
        if tmpl.notice:
            print(f"note: {tmpl.notice}", file=sys.stderr)
        try:
            server = Server(llm, args.host, args.port, alias=args.alias, api_key=api_key,
                            max_queue=args.max_queue, verbose=args.verbose)
        except OSError as e:
            print(f"pyrt: error: cannot listen on {args.host}:{args.port}: {e.strerror or e}", file=sys.stderr)
            return 1
        if not _is_loopback(args.host) and not api_key:
            print(f"warning: listening on {args.host} without --api-key: anyone who can reach this "
                  f"machine can use the model", file=sys.stderr)

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
