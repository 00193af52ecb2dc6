"""ollama's HTTP API on `pyrt serve`, so that ollama clients and UIs work
against pyrt: POST /api/chat, /api/generate, /api/embed, /api/embeddings,
/api/show; GET /api/tags, /api/ps, /api/version.

This module only translates: an ollama request becomes the keyword arguments
of `Llama.create_chat_completion` / `create_completion` / `create_embedding`,
run as a job on the server's worker like any OpenAI request (same queue, same
limits, same disconnect handling), and pyrt's chunks become ollama's objects.
pyrt/server.py routes /api/* here and frames the objects as NDJSON (one JSON
object a line, ``application/x-ndjson``) or as one JSON body with
``"stream": false``. Errors are ollama's ``{"error": "..."}``, also as the last
line of a stream that fails midway.

What maps to what:

- /api/chat: ``messages`` (role, content; ``images`` are refused: no vision),
  ``tools`` as in /v1/chat/completions, ``think`` only false.
- /api/generate: ``prompt`` is rendered with the model's chat template as one
  user turn after ``system`` (as ollama does); ``raw: true`` sends it as is,
  and ``suffix`` fills in the middle (create_completion's FIM). Custom
  ``template`` and ``context`` (token memory) are refused; the final object has
  no ``context``. An empty prompt (or empty ``messages`` in /api/chat) answers
  ``done_reason: "load"`` at once: the model is always loaded.
- ``options``: temperature, top_k, top_p, min_p, typical_p, repeat_penalty,
  repeat_last_n, presence_penalty, frequency_penalty, seed, stop,
  num_predict (-1 and -2: no limit but the context), mirostat, mirostat_tau,
  mirostat_eta. Unset ones take ollama's defaults (temperature 0.8, top_p 0.9,
  min_p 0, repeat_penalty 1.1, repeat_last_n 64). Options that configure the
  runtime (num_ctx, num_gpu, num_thread, ...) are ignored: pyrt sets those when
  the server starts (a num_ctx that differs from the server's context prints a
  note once). Unknown options are ignored, as ollama does.
- ``format``: ``"json"`` or a JSON schema, through pyrt's grammar machinery.
- ``keep_alive`` is accepted and ignored.
- Final object: ``done: true``, ``done_reason`` ("stop" or "length"),
  ``total_duration`` (arrival to end), ``load_duration`` (0),
  ``prompt_eval_count`` (prompt tokens, cached ones included),
  ``prompt_eval_duration``, ``eval_count``, ``eval_duration``, all durations in
  nanoseconds.
- Model names: ollama writes NAME:TAG; the loaded model is listed as
  ``ID:latest`` (or the --alias as given when it has a tag) and every name
  /v1 accepts is accepted with or without ``:latest``; others are 404.
  /api/pull, /api/push, /api/create, /api/copy and /api/delete answer 501:
  the server runs the one model it was started with.
"""
from __future__ import annotations

import datetime as _dt
import os
import sys
import time
from typing import Any, Callable

from .server import APIError, Job, Plan

__all__ = ["OllamaAPI", "OLLAMA_VERSION"]

# The ollama release whose API shapes this module follows, reported by /api/version
# (clients use it to decide which fields they may send).
OLLAMA_VERSION = "0.9.0"

# ollama's option name -> pyrt's keyword
_OPTIONS = {"temperature": "temperature", "top_k": "top_k", "top_p": "top_p", "min_p": "min_p",
            "typical_p": "typical_p", "repeat_penalty": "repeat_penalty", "repeat_last_n": "penalty_last_n",
            "presence_penalty": "presence_penalty", "frequency_penalty": "frequency_penalty", "seed": "seed",
            "mirostat": "mirostat_mode", "mirostat_tau": "mirostat_tau", "mirostat_eta": "mirostat_eta"}
# ollama's defaults for them (its server fills these in when a request leaves them out)
_DEFAULTS = {"temperature": 0.8, "top_k": 40, "top_p": 0.9, "min_p": 0.0, "repeat_penalty": 1.1,
             "penalty_last_n": 64}
# llama.cpp's file types (general.file_type) by number, as ollama names quantization levels
_FILE_TYPES = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K",
               11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S",
               17: "Q5_K_M", 18: "Q6_K", 19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS",
               23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL", 26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S", 29: "IQ2_M",
               30: "IQ4_XS", 31: "IQ1_M", 32: "BF16", 36: "TQ1_0", 37: "TQ2_0"}
_UNSUPPORTED = ("/api/pull", "/api/push", "/api/create", "/api/copy", "/api/delete")


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _ns(seconds: float) -> int:
    return int(round(seconds * 1e9))


def _bool(body: dict, key: str, default: bool) -> bool:
    v = body.get(key)
    if v is None:
        return default
    if not isinstance(v, bool):
        raise APIError(400, f"{key} must be a boolean", param=key)
    return v


class OllamaAPI:
    def __init__(self, app):
        self.app = app
        self.llm = app.llm
        alias = app.alias
        self.name = alias if ":" in alias else alias + ":latest"
        self._noted_num_ctx = False

    def routes(self) -> dict[str, dict[str, Callable]]:
        r: dict[str, dict[str, Callable]] = {
            "/api/chat": {"POST": self.chat},
            "/api/generate": {"POST": self.generate},
            "/api/embed": {"POST": self.embed},
            "/api/embeddings": {"POST": self.embeddings},
            "/api/show": {"POST": self.show},
            "/api/tags": {"GET": lambda _b: self.tags()},
            "/api/ps": {"GET": lambda _b: self.ps()},
            "/api/version": {"GET": lambda _b: self.version()},
        }
        for path in _UNSUPPORTED:
            r[path] = {m: (lambda _b, p=path: self._unsupported(p)) for m in ("POST", "DELETE")}
        return r

    @staticmethod
    def _unsupported(path: str):
        raise APIError(501, f"{path} is not available: pyrt serves the one model it was started with "
                            f"(`pyrt serve -m MODEL`; `pyrt pull NAME` fetches known models)",
                       code="not_implemented")

    # -- request fields
    def _model(self, body: dict) -> str:
        """The name to echo in replies (the request's, as ollama does)."""
        name = body.get("model")
        self.app.check_model(name)
        return name or self.name

    def _options(self, body: dict) -> dict:
        opts = body.get("options")
        if opts is None:
            opts = {}
        if not isinstance(opts, dict):
            raise APIError(400, "options must be an object", param="options")
        kw = dict(_DEFAULTS)
        for k, v in opts.items():
            if v is None:
                continue
            if k in _OPTIONS:
                kw[_OPTIONS[k]] = v
            elif k == "stop":
                stop = [v] if isinstance(v, str) else v
                if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop) or len(stop) > 16:
                    raise APIError(400, "options.stop must be a string or a list of at most 16 strings",
                                   param="stop")
                kw["stop"] = stop
            elif k == "num_predict":
                if isinstance(v, bool) or not isinstance(v, int) or v < -2:
                    raise APIError(400, "options.num_predict must be an integer >= -2 (-1: no limit)",
                                   param="num_predict")
                kw["max_tokens"] = None if v < 0 else v
            elif k == "num_ctx" and v != self.llm.n_ctx() and not self._noted_num_ctx:
                self._noted_num_ctx = True
                print(f"note: the ollama option num_ctx={v!r} is ignored: this server's context is "
                      f"{self.llm.n_ctx()} tokens (pyrt serve -c N)", file=sys.stderr)
            # other runtime options (num_gpu, num_thread, ...) and unknown ones: ignored, as ollama
        kw.setdefault("max_tokens", None)
        self.app.limit_tokens(kw, None)
        return kw

    def _format(self, body: dict) -> dict:
        fmt = body.get("format")
        if fmt is None or fmt == "":
            return {}
        from .grammar import Grammar, resolve_grammar
        try:
            if fmt == "json":
                return {"grammar": resolve_grammar(None, {"type": "json_object"})}
            if isinstance(fmt, dict):
                return {"grammar": Grammar.from_json_schema(fmt)}
        except ValueError as e:
            raise APIError(400, f"format: {e}", param="format") from None
        raise APIError(400, "format must be \"json\" or a JSON schema object", param="format")

    def _common(self, body: dict) -> tuple[str, dict, bool]:
        name = self._model(body)
        if body.get("think") not in (None, False):
            raise APIError(400, f"{name!r} does not support thinking", param="think")
        kw = self._options(body)
        kw.update(self._format(body))
        return name, kw, _bool(body, "stream", True)

    # -- generation
    def chat(self, body: dict):
        name, kw, stream = self._common(body)
        messages = body.get("messages")
        if messages is None or messages == []:
            return {"model": name, "created_at": _now(), "message": {"role": "assistant", "content": ""},
                    "done_reason": "load", "done": True}
        if not isinstance(messages, list):
            raise APIError(400, "messages must be a list", param="messages")
        msgs = []
        for i, m in enumerate(messages):
            if not isinstance(m, dict):
                raise APIError(400, f"messages[{i}] must be an object", param="messages")
            if m.get("images"):
                raise APIError(400, f"messages[{i}] has images: this model does not take images",
                               param="messages")
            msgs.append({k: v for k, v in m.items() if k not in ("images", "thinking")})
        if body.get("tools"):
            kw["tools"] = body["tools"]
        job = self.app.generation_job(self.llm.create_chat_completion, (msgs,), kw, stream)
        return self._plan(job, stream, name, "message")

    def generate(self, body: dict):
        name, kw, stream = self._common(body)
        prompt = body.get("prompt")
        prompt = "" if prompt is None else prompt
        suffix = body.get("suffix") or None
        system = body.get("system") or None
        for key, val in (("prompt", prompt), ("suffix", suffix or ""), ("system", system or "")):
            if not isinstance(val, str):
                raise APIError(400, f"{key} must be a string", param=key)
        if body.get("images"):
            raise APIError(400, "images: this model does not take images", param="images")
        if body.get("template"):
            raise APIError(400, "template is not supported: pyrt renders the model's own chat template "
                                "(send raw: true to give the whole prompt yourself)", param="template")
        if body.get("context"):
            raise APIError(400, "context is not supported: send the conversation to /api/chat",
                           param="context")
        raw = _bool(body, "raw", False)
        if not prompt and suffix is None:
            return {"model": name, "created_at": _now(), "response": "", "done": True, "done_reason": "load"}
        if raw or suffix is not None:
            if suffix is not None:
                kw["suffix"] = suffix
            job = self.app.generation_job(self.llm.create_completion, (prompt,), kw, stream)
            return self._plan(job, stream, name, "response", text_key="text")
        msgs = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
        job = self.app.generation_job(self.llm.create_chat_completion, (msgs,), kw, stream)
        return self._plan(job, stream, name, "response")

    def _plan(self, job: Job, stream: bool, name: str, field: str, text_key: str | None = None) -> Plan:
        """Plan turning pyrt's chunks (chat deltas, or completion text with
        `text_key="text"`) into ollama's objects: `field` is "message" (chat)
        or "response" (generate)."""

        def content(text: str):
            return {"role": "assistant", "content": text} if field == "message" else text

        def piece(choice: dict) -> str:
            if text_key:
                return choice.get(text_key) or ""
            return (choice.get("delta") or {}).get("content") or ""

        def final(text: str, finish: str | None, usage: dict | None) -> dict:
            st = job.stats
            usage = usage or {}
            return {"model": name, "created_at": _now(), field: content(text), "done": True,
                    "done_reason": finish or "stop",
                    "total_duration": _ns(time.monotonic() - job.t_submit), "load_duration": 0,
                    "prompt_eval_count": int(st.get("prompt_n", usage.get("prompt_tokens", 0))),
                    "prompt_eval_duration": _ns(st.get("prompt_ms", 0.0) / 1e3),
                    "eval_count": int(st.get("predicted_n", usage.get("completion_tokens", 0))),
                    "eval_duration": _ns(st.get("predicted_ms", 0.0) / 1e3)}

        def on_chunk(chunk: dict) -> list[dict]:
            out = []
            ch = chunk["choices"][0] if chunk.get("choices") else {}
            text = piece(ch)
            if text:
                out.append({"model": name, "created_at": _now(), field: content(text), "done": False})
            if ch.get("finish_reason"):
                out.append(final("", ch["finish_reason"], chunk.get("usage")))
            return out

        def on_result(result: dict) -> dict:
            ch = result["choices"][0]
            text = ch["text"] if text_key else ch["message"]["content"]
            return final(text, ch["finish_reason"], result.get("usage"))

        return Plan(job, stream, framing="ndjson", on_chunk=on_chunk, on_result=on_result,
                    on_error=lambda e: {"error": e.message})

    # -- embeddings
    def embed(self, body: dict) -> Plan:
        name = self._model(body)
        inp = body.get("input")
        if inp is None:
            raise APIError(400, "input is required", param="input")
        if not isinstance(inp, str) and not (isinstance(inp, list) and all(isinstance(s, str) for s in inp)):
            raise APIError(400, "input must be a string or a list of strings", param="input")
        dims = body.get("dimensions")
        if dims is not None and dims != self.llm.n_embd():
            raise APIError(400, f"this model's embeddings have {self.llm.n_embd()} dimensions; "
                                f"dimensions={dims!r} is not supported", param="dimensions")
        job = self.app.embed_job(inp, truncate=_bool(body, "truncate", True))

        def on_result(r: dict) -> dict:
            return {"model": name, "embeddings": [d["embedding"] for d in r["data"]],
                    "total_duration": _ns(time.monotonic() - job.t_submit), "load_duration": 0,
                    "prompt_eval_count": r["usage"]["prompt_tokens"]}

        return Plan(job, False, on_result=on_result)

    def embeddings(self, body: dict):
        """The older endpoint: one prompt, one vector, not normalized (as ollama's)."""
        self._model(body)
        prompt = body.get("prompt")
        if prompt is None or prompt == "":
            return {"embedding": []}
        if not isinstance(prompt, str):
            raise APIError(400, "prompt must be a string", param="prompt")
        job = self.app.embed_job(prompt, truncate=True, normalize=False)
        return Plan(job, False, on_result=lambda r: {"embedding": r["data"][0]["embedding"]})

    # -- the model
    def _details(self) -> dict:
        llm = self.llm
        arch = llm.hparams.arch
        n = llm.n_params()
        size = f"{n / 1e9:.1f}B" if n >= 1e9 else f"{n / 1e6:.2f}M"
        ft = llm.metadata.get("general.file_type")
        return {"parent_model": "", "format": "gguf", "family": arch, "families": [arch],
                "parameter_size": size, "quantization_level": _FILE_TYPES.get(ft, "unknown")}

    def _entry(self) -> dict:
        path = self.llm.model_path
        return {"name": self.name, "model": self.name,
                "modified_at": _dt.datetime.fromtimestamp(os.path.getmtime(path), _dt.timezone.utc)
                .isoformat().replace("+00:00", "Z"),
                "size": os.path.getsize(path), "digest": self.llm.model_fingerprint, "details": self._details()}

    def tags(self) -> dict:
        return {"models": [self._entry()]}

    def ps(self) -> dict:
        e = self._entry()
        e.pop("modified_at")
        e.update(expires_at="2999-12-31T23:59:59Z",           # never unloaded
                 size_vram=e["size"] if self.llm.device != "cpu" else 0, context_length=self.llm.n_ctx())
        return {"models": [e]}

    def version(self) -> dict:
        from . import __version__
        return {"version": OLLAMA_VERSION, "pyrt": __version__}

    def show(self, body: dict) -> dict:
        name = body.get("model") or body.get("name")        # older clients send "name"
        if not name:
            raise APIError(400, "model is required", param="model")
        self.app.check_model(name)
        llm = self.llm
        info: dict[str, Any] = {}
        for k, v in llm.metadata.items():
            info[k] = v if isinstance(v, (str, int, float, bool)) else None   # arrays: null, as ollama
        info["general.parameter_count"] = llm.n_params()
        caps = ["completion"]
        ids = llm.tokenizer.special_ids
        if all(ids.get(k) is not None for k in ("fim_pre", "fim_suf", "fim_mid")):
            caps.append("insert")
        entry = self._entry()
        return {"license": llm.metadata.get("general.license", ""),
                "modelfile": f"# served by pyrt\nFROM {llm.model_path}\n",
                "parameters": "", "template": llm.chat_template.source, "system": "",
                "details": entry["details"], "model_info": info, "capabilities": caps,
                "modified_at": entry["modified_at"]}
