"""Token sampling: parameters (validated here, before any C call) and a thin
wrapper around the C sampler (csrc/core/sampler.c).

The chain matches llama.cpp's as llama-cpp-python configures it, with
llama.cpp's DRY and XTC samplers where llama.cpp's common sampler puts them:

    logit bias -> penalties -> DRY -> (temperature == 0: argmax)
                 -> top-k -> typical -> top-p -> min-p -> XTC -> temperature -> draw

and with ``mirostat_mode`` 1 or 2: logit bias -> penalties -> temperature ->
Mirostat (v1 / v2: its own truncation, draw and learning of mu).

A fixed seed makes the draws reproducible: the same seed and the same sequence
of logits (and accepted tokens) give the same tokens.
"""
from __future__ import annotations

import math
import numbers
import os
from dataclasses import dataclass

import numpy as np

from ._native import check, ffi, lib

__all__ = ["SamplingParams", "Sampler", "MAX_PENALTY_HISTORY", "LogitsProcessorList",
           "StoppingCriteriaList", "dry_breaker_sequences"]

#: The penalty history window is capped at this many tokens (also for
#: ``penalty_last_n=-1``, "the whole history").
MAX_PENALTY_HISTORY = 65536


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_real(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _random_seed() -> int:
    return int.from_bytes(os.urandom(8), "little")


@dataclass
class SamplingParams:
    """Sampling parameters, llama-cpp-python's defaults.

    Filters are off at their neutral values: ``top_k=0``, ``top_p=1``,
    ``min_p=0``, ``typical_p=1``. ``temperature=0`` is greedy decoding (argmax
    after bias and penalties; the seed is then irrelevant).

    Penalties (llama.cpp semantics) look at the last ``penalty_last_n``
    accepted tokens (0: off, -1: all of them, capped at
    :data:`MAX_PENALTY_HISTORY`): a penalised token's positive logit is divided
    by ``repeat_penalty`` and a negative one multiplied, then
    ``count * frequency_penalty + presence_penalty`` is subtracted.

    ``logit_bias`` maps token id -> value added to its logit; ``-inf`` bans
    the token. ``seed=None`` draws a random seed.

    ``mirostat_mode`` 1 or 2 replaces top-k..min-p (and DRY, XTC) by
    Mirostat aiming at ``mirostat_tau`` bits of surprise per token, learning
    rate ``mirostat_eta``. DRY (``dry_multiplier`` > 0) penalises tokens that
    would extend a repeat of the last ``dry_penalty_last_n`` tokens longer
    than ``dry_allowed_length`` by ``dry_multiplier * dry_base^(len -
    allowed)``; a ``dry_sequence_breakers`` string in the history ends the
    window. XTC (``xtc_probability`` > 0, ``xtc_threshold`` <= 0.5) removes,
    on that share of the steps, all but the least likely of the tokens whose
    probability is at least the threshold. Defaults are llama.cpp's.
    """

    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    typical_p: float = 1.0
    repeat_penalty: float = 1.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    penalty_last_n: int = 64
    seed: int | None = None
    logit_bias: dict[int, float] | None = None
    mirostat_mode: int = 0
    mirostat_tau: float = 5.0
    mirostat_eta: float = 0.1
    dry_multiplier: float = 0.0
    dry_base: float = 1.75
    dry_allowed_length: int = 2
    dry_penalty_last_n: int = 64
    dry_sequence_breakers: tuple = ("\n", ":", "\"", "*")
    xtc_probability: float = 0.0
    xtc_threshold: float = 0.1
    #: DRY breakers as token sequences (head first), filled by
    #: :func:`dry_breaker_sequences` from the strings and a tokenizer
    dry_breaker_tokens: list | None = None
    #: llama-cpp-python's hooks: ``logits_processor(input_ids, scores) -> scores``
    #: edits each step's logits (float32, n_vocab; a copy) before the chain;
    #: ``stopping_criteria(input_ids, scores) -> bool`` ends generation after
    #: the token just sampled (the next sample returns ``stop_token``).
    #: input_ids are the tokens accepted so far (prompt and generated), int32.
    logits_processor: object = None
    stopping_criteria: object = None
    stop_token: int | None = None

    def validate(self, n_vocab: int | None = None) -> None:
        """Raise ValueError naming the first bad parameter and its value."""

        def bad(name: str, rule: str) -> ValueError:
            return ValueError(f"{name} must be {rule} (got {getattr(self, name)!r})")

        def real(name: str) -> float:
            v = getattr(self, name)
            if not _is_real(v) or not math.isfinite(v):
                raise bad(name, "a finite number")
            return float(v)

        def integer(name: str) -> int:
            v = getattr(self, name)
            if not _is_int(v):
                raise bad(name, "an int")
            return int(v)

        if real("temperature") < 0:
            raise bad("temperature", ">= 0")
        if integer("top_k") < 0:
            raise bad("top_k", ">= 0 (0 disables it)")
        if not 0 <= real("top_p") <= 1:
            raise bad("top_p", "in [0, 1] (1 disables it; 0 keeps the most likely token)")
        if not 0 <= real("min_p") <= 1:
            raise bad("min_p", "in [0, 1] (0 disables it)")
        if not 0 < real("typical_p") <= 1:
            raise bad("typical_p", "in (0, 1] (1 disables it)")
        if real("repeat_penalty") <= 0:
            raise bad("repeat_penalty", "> 0 (1 disables it)")
        real("frequency_penalty")
        real("presence_penalty")
        if integer("penalty_last_n") < -1:
            raise bad("penalty_last_n", ">= -1 (0 disables penalties, -1 uses the whole history)")
        if self.seed is not None and (not _is_int(self.seed) or not 0 <= self.seed < 2**64):
            raise bad("seed", "None or an int in [0, 2**64)")
        if integer("mirostat_mode") not in (0, 1, 2):
            raise bad("mirostat_mode", "0 (off), 1 (Mirostat) or 2 (Mirostat 2.0)")
        if real("mirostat_tau") < 0:
            raise bad("mirostat_tau", ">= 0")
        if real("mirostat_eta") < 0:
            raise bad("mirostat_eta", ">= 0")
        if real("dry_multiplier") < 0:
            raise bad("dry_multiplier", ">= 0 (0 disables DRY)")
        if real("dry_base") < 0:
            raise bad("dry_base", ">= 0 (below 1 disables DRY)")
        if integer("dry_allowed_length") < 0:
            raise bad("dry_allowed_length", ">= 0")
        if integer("dry_penalty_last_n") < -1:
            raise bad("dry_penalty_last_n", ">= -1 (0 disables DRY, -1 uses the whole history)")
        b = self.dry_sequence_breakers
        if isinstance(b, str) or not isinstance(b, (list, tuple)) or not all(isinstance(x, str) for x in b):
            raise bad("dry_sequence_breakers", "a list of strings")
        if not 0 <= real("xtc_probability") <= 1:
            raise bad("xtc_probability", "in [0, 1] (0 disables XTC)")
        if not 0 <= real("xtc_threshold") <= 1:
            raise bad("xtc_threshold", "in [0, 1] (above 0.5 disables XTC)")
        for name in ("logits_processor", "stopping_criteria"):
            v = getattr(self, name)
            if v is not None and not callable(v) and not (isinstance(v, (list, tuple)) and all(map(callable, v))):
                raise bad(name, "None, a callable (input_ids, scores) or a list of them")
        if self.stopping_criteria is not None and self.stop_token is None:
            raise ValueError("stopping_criteria needs stop_token (an end-of-generation token id)")
        if n_vocab is not None and (not _is_int(n_vocab) or n_vocab < 1):
            raise ValueError(f"n_vocab must be an int >= 1 (got {n_vocab!r})")
        if self.logit_bias is not None:
            if not isinstance(self.logit_bias, dict):
                raise bad("logit_bias", "a dict {token id: bias} or None")
            for tok, val in self.logit_bias.items():
                if not _is_int(tok) or tok < 0 or (n_vocab is not None and tok >= n_vocab):
                    rng = f"[0, {n_vocab})" if n_vocab is not None else ">= 0"
                    raise ValueError(f"logit_bias: token id must be an int in {rng} (got {tok!r})")
                if not _is_real(val) or not (math.isfinite(val) or val == -math.inf):
                    raise ValueError(
                        f"logit_bias: bias for token {tok} must be finite or -inf (got {val!r})")


class Sampler:
    """One sampling stream: penalty history, logit bias and a seeded RNG.

    Call :meth:`sample` on each step's logits and :meth:`accept` on the token
    that was actually emitted (prompt tokens may be accepted too, to make
    them count for the penalties).
    """

    def __init__(self, params: SamplingParams, n_vocab: int):
        self._h = None
        params.validate(n_vocab)
        self.params = params
        self.n_vocab = int(n_vocab)
        self.seed = params.seed if params.seed is not None else _random_seed()

        cp = ffi.new("pyrt_sampler_params *")
        cp.temperature = params.temperature
        cp.top_k = params.top_k if params.top_k < self.n_vocab else 0  # k >= n_vocab keeps all
        cp.top_p = params.top_p
        cp.min_p = params.min_p
        cp.typical_p = params.typical_p
        cp.repeat_penalty = params.repeat_penalty
        cp.frequency_penalty = params.frequency_penalty
        cp.presence_penalty = params.presence_penalty
        cp.penalty_last_n = min(params.penalty_last_n, MAX_PENALTY_HISTORY)
        cp.seed = self.seed
        cp.mirostat = params.mirostat_mode
        cp.mirostat_tau = params.mirostat_tau
        cp.mirostat_eta = params.mirostat_eta
        cp.dry_multiplier = params.dry_multiplier
        cp.dry_base = params.dry_base
        cp.dry_allowed_length = params.dry_allowed_length
        cp.dry_penalty_last_n = min(params.dry_penalty_last_n, MAX_PENALTY_HISTORY)
        cp.xtc_probability = params.xtc_probability
        cp.xtc_threshold = params.xtc_threshold
        out = ffi.new("pyrt_sampler **")
        check(lib.pyrt_sampler_create(cp, self.n_vocab, out), "sampler")
        self._h = out[0]

        if params.logit_bias:
            ids = np.fromiter(params.logit_bias.keys(), dtype=np.int32, count=len(params.logit_bias))
            vals = np.fromiter(params.logit_bias.values(), dtype=np.float32, count=len(params.logit_bias))
            check(lib.pyrt_sampler_set_bias(self._h, ffi.from_buffer("int32_t[]", ids),
                                            ffi.from_buffer("float[]", vals), len(ids)),
                  "logit_bias")
        if params.dry_multiplier > 0 and params.dry_breaker_tokens:
            seqs = [list(q) for q in params.dry_breaker_tokens]
            toks = np.array([t for q in seqs for t in q], dtype=np.int32)
            lens = np.array([len(q) for q in seqs], dtype=np.int32)
            check(lib.pyrt_sampler_set_dry_breakers(self._h, ffi.from_buffer("int32_t[]", toks),
                                                    ffi.from_buffer("int32_t[]", lens), len(lens)),
                  "dry_sequence_breakers")
        self._out = ffi.new("int32_t *")
        # llama-cpp-python hooks: they see the accepted tokens
        self._procs = _as_list(params.logits_processor)
        self._stops = _as_list(params.stopping_criteria)
        self._ids: list[int] | None = [] if (self._procs or self._stops) else None
        self._stop_next = False

    @property
    def mirostat_mu(self) -> float | None:
        """Mirostat's current mu (None when Mirostat is off)."""
        v = float(lib.pyrt_sampler_mirostat_mu(self._handle()))
        return None if math.isnan(v) else v

    def _handle(self):
        if self._h is None:
            raise ValueError("sampler is closed")
        return self._h

    def sample(self, logits: np.ndarray) -> int:
        """Pick the next token from one row of logits: float32, C-contiguous,
        shape (n_vocab,). The array is not modified."""
        h = self._handle()
        if not isinstance(logits, np.ndarray):
            raise TypeError(f"logits must be a numpy array (got {type(logits).__name__})")
        if logits.dtype != np.float32:
            raise ValueError(f"logits must be float32 (got {logits.dtype})")
        if logits.shape != (self.n_vocab,):
            raise ValueError(f"logits must have shape ({self.n_vocab},) (got {logits.shape})")
        if not logits.flags.c_contiguous:
            raise ValueError("logits must be C-contiguous")
        if self._ids is not None:
            if self._stop_next:
                return int(self.params.stop_token)
            ids = np.array(self._ids, dtype=np.intc)
            raw = logits
            if self._procs:
                logits = logits.copy()
                for proc in self._procs:
                    logits = proc(ids, logits)
                    logits = np.ascontiguousarray(logits, dtype=np.float32)
                    if logits.shape != (self.n_vocab,):
                        raise ValueError(f"logits_processor returned shape {logits.shape}, "
                                         f"expected ({self.n_vocab},)")
        check(lib.pyrt_sampler_sample(h, ffi.from_buffer("float[]", logits), self._out), "sample")
        tok = int(self._out[0])
        if self._stops and any(bool(c(ids, raw)) for c in self._stops):
            self._stop_next = True
        return tok

    def accept(self, token: int) -> None:
        """Record an emitted token in the penalty history."""
        h = self._handle()
        if not _is_int(token) or not 0 <= token < self.n_vocab:
            raise ValueError(f"token must be an int in [0, {self.n_vocab}) (got {token!r})")
        check(lib.pyrt_sampler_accept(h, int(token)), "accept")
        if self._ids is not None:
            self._ids.append(int(token))

    def reset(self, seed: int | None = None) -> None:
        """Forget the penalty history and restart the RNG: from ``seed`` if
        given, else from the sampler's seed (so the same draws repeat)."""
        h = self._handle()
        if seed is not None:
            if not _is_int(seed) or not 0 <= seed < 2**64:
                raise ValueError(f"seed must be None or an int in [0, 2**64) (got {seed!r})")
            self.seed = int(seed)
        check(lib.pyrt_sampler_reset(h, self.seed), "reset")
        if self._ids is not None:
            self._ids = []
            self._stop_next = False

    def close(self) -> None:
        h, self._h = self._h, None
        if h is not None:
            lib.pyrt_sampler_free(h)

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def __enter__(self) -> "Sampler":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


#: llama.cpp's limits on DRY sequence breakers: characters per breaker and
#: tokens of the tail that follows a breaker's first token
DRY_MAX_BREAKER_CHARS = 40
DRY_MAX_TAIL_TOKENS = 20


def dry_breaker_sequences(breakers, tokenizer) -> list[tuple[int, ...]]:
    """DRY sequence breakers (strings) as token sequences, as llama.cpp
    derives them: every token whose text contains a breaker is a one-token
    breaker; a token whose text ends with the beginning of a breaker is the
    head of a sequence whose tail is the tokenization of the breaker's rest
    (at most DRY_MAX_TAIL_TOKENS tokens). Cached per tokenizer."""
    key = tuple(breakers)
    cache = tokenizer.__dict__.setdefault("_pyrt_dry_breakers", {})
    if key in cache:
        return cache[key]
    n = len(tokenizer)
    words = [tokenizer.token_to_bytes(i, special=True).decode("utf-8", "replace") for i in range(n)]
    out: dict[tuple[int, ...], None] = {}
    for brk in key:
        brk = brk[:DRY_MAX_BREAKER_CHARS]
        if not brk:
            continue
        for tid, word in enumerate(words):
            if brk in word:
                out[(tid,)] = None
                continue
            pos = word.find(brk[0])
            while pos >= 0:
                tail = word[pos:]
                if brk.startswith(tail):
                    rest = tokenizer.tokenize(brk[len(tail):], add_bos=False)[:DRY_MAX_TAIL_TOKENS]
                    out[(tid, *rest)] = None
                pos = word.find(brk[0], pos + 1)
    result = list(out)
    cache[key] = result
    return result


def _as_list(hooks) -> list:
    if hooks is None:
        return []
    return list(hooks) if isinstance(hooks, (list, tuple)) else [hooks]


class LogitsProcessorList(list):
    """llama-cpp-python's list of ``(input_ids, scores) -> scores`` callables,
    applied in order (pass it as ``logits_processor=``)."""

    def __call__(self, input_ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
        for proc in self:
            scores = proc(input_ids, scores)
        return scores


class StoppingCriteriaList(list):
    """llama-cpp-python's list of ``(input_ids, logits) -> bool`` callables:
    generation stops when any says True (pass it as ``stopping_criteria=``)."""

    def __call__(self, input_ids: np.ndarray, logits: np.ndarray) -> bool:
        return any(bool(c(input_ids, logits)) for c in self)
