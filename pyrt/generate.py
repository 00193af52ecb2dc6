"""The one token generator behind every way pyrt generates text.

Three layers, in the shape of mlx-lm's generate_step -> stream_generate ->
generate (docs/ARCHITECTURE.md):

``generate_step(llm, tokens, params, ...)`` -> :class:`TokenSteps`
    The lowest layer. Makes the KV cache hold the prompt (reusing the cached
    prefix, :meth:`Llama.eval_prefix`), then samples one token at a time and
    yields ``(token, logits)``: the logits the token was sampled from. It
    stops at an end-of-generation token or one of `stop_ids` (not yielded),
    after `max_tokens`, when the context is full, or when `should_stop()`
    says so; ``finish_reason`` then says which ("stop", "length", "abort").
    The next token is only evaluated when the consumer asks for it, so a
    consumer that stops early leaves no extra work behind. Before each
    evaluation it checks that no other call moved the cache meanwhile.

``generate_tokens(llm, tokens, params, ...)``
    :meth:`Llama.generate`: token ids, with stop strings matched on the
    detokenized tokens still held back (the tokens that make up a stop string
    are never yielded).

``stream_generate(llm, tokens, params, ...)`` -> :class:`Piece`
    Text: incremental UTF-8 decoding (never half a character), stop strings
    cut at the exact character with the text that might begin one held back
    until it cannot, per-token log-probabilities, and a last piece with the
    finish_reason and the number of generated tokens. It records
    ``Llama.last_stats``. :meth:`Llama.create_completion` and
    :meth:`Llama.create_chat_completion` are built on it, and through them
    the chat REPL and the server.

These functions take a :class:`pyrt.Llama` and work on its cache; they are
the only code outside pyrt/api.py that touches Llama's private state. Their
arguments are validated by the Llama methods that call them.
"""
from __future__ import annotations

import codecs
import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Collection, Iterator, Sequence

import numpy as np

from ._native import lib
from .sampling import Sampler, SamplingParams

if TYPE_CHECKING:
    from .api import Llama
    from .speculative import Speculator
    from .grammar import Grammar, GrammarMatcher

__all__ = ["TokenSteps", "LazyGrammar", "generate_step", "generate_tokens", "Piece", "stream_generate"]


# ---------------------------------------------------------------------------------------------
# tokens
# ---------------------------------------------------------------------------------------------

class TokenSteps:
    """Iterator of ``(token, logits)`` for one generation; see
    :func:`generate_step`. After it ends (or is closed), ``finish_reason`` is
    "stop" (end-of-generation or stop token), "length" (max_tokens or a full
    context) or "abort" (should_stop), and ``n_generated`` counts the tokens
    yielded. ``close()`` ends it early (the sampler is freed)."""

    def __init__(self, llm: "Llama", tokens: list[int], params: SamplingParams, *,
                 max_tokens: int | None, stop_ids: Collection[int] = (),
                 should_stop: Callable[[], bool] | None = None,
                 progress: Callable[[int, int], None] | None = None,
                 prompt_logits: np.ndarray | None = None, record_stats: bool = False,
                 grammar: "Grammar | None" = None,
                 speculator: "Speculator | None" = None):
        self.finish_reason: str | None = None
        self.n_generated = 0
        self._spec = speculator
        self._ahead: list[int] = []          # drafted tokens in the cache, not yet confirmed
        self._rows: list[np.ndarray] = []    # logits after each of them
        self._drafted = 0                    # size of the current verified draft
        self._t_verify = 0.0                 # seconds its verify call took
        self._submitted = None               # the next token's evaluation, submitted before the yield
        self._gen = self._steps(llm, tokens, params, max_tokens, stop_ids, should_stop, progress,
                                prompt_logits, record_stats, grammar)

    def __iter__(self) -> "TokenSteps":
        return self

    def __next__(self) -> tuple[int, np.ndarray]:
        return next(self._gen)

    def close(self) -> None:
        self._gen.close()

    def _steps(self, llm, toks, params, max_tokens, stop_ids, should_stop, progress, prompt_logits,
               record_stats, grammar) -> Iterator[tuple[int, np.ndarray]]:
        is_eog = llm.tokenizer.is_eog
        lazy = _LazyTrigger(grammar, llm.tokenizer) if isinstance(grammar, LazyGrammar) else None
        matcher = grammar.matcher(llm.tokenizer) if grammar is not None and lazy is None else None
        sampler = Sampler(params, llm.n_vocab())
        # a sequence of a batched context (pyrt/batching.py) submits each
        # token's evaluation before yielding it
        submit = getattr(llm, "_decode_async", None) if self._spec is None else None
        t0 = time.perf_counter()
        t1 = None
        try:
            for t in toks:
                sampler.accept(t)
            if prompt_logits is None:
                logits = llm.eval_prefix(toks, progress=progress)
            else:                       # the caller evaluated the prompt (echo with logprobs)
                logits = prompt_logits
            epoch = llm._epoch
            t1 = time.perf_counter()
            if record_stats:
                llm.last_stats = {"prompt_n": len(toks), "cached_n": llm._last_n_keep,
                                  "prompt_ms": (t1 - t0) * 1e3, "predicted_n": 0, "predicted_ms": 0.0}
            self.finish_reason = "length"
            while True:
                if max_tokens is not None and self.n_generated >= max_tokens:
                    break
                if should_stop is not None and should_stop():
                    self.finish_reason = "abort"
                    break
                if matcher is None and lazy is not None:   # free text until the trigger appears
                    tok, matcher = lazy.sample(sampler, logits, is_eog, stop_ids)
                elif matcher is None:
                    tok = sampler.sample(logits)
                else:
                    if matcher.is_complete() and not matcher.can_continue():
                        self.finish_reason = "stop"     # the grammar allows nothing more
                        break
                    tok = _sample_constrained(sampler, matcher, logits, is_eog, stop_ids)
                if is_eog(tok) or tok in stop_ids:
                    self.finish_reason = "stop"
                    break
                sampler.accept(tok)
                self.n_generated += 1
                more = len(llm._tokens) < llm._n_ctx and (max_tokens is None or self.n_generated < max_tokens)
                if more and submit is not None:     # the step runs while the consumer has the token
                    llm._check_epoch(epoch)
                    self._submitted = submit([tok], len(llm._tokens), lib.PYRT_OUT_LOGITS_LAST)
                yield tok, logits
                if not more:
                    break
                llm._check_epoch(epoch)
                if self._submitted is not None:
                    sub, self._submitted = self._submitted, None
                    logits = sub.result()
                    llm._tokens.append(tok)
                elif self._spec is None:
                    logits = llm._decode([tok], len(llm._tokens), lib.PYRT_OUT_LOGITS_LAST)
                    llm._tokens.append(tok)
                else:
                    room = llm._n_ctx - len(llm._tokens) - 1
                    if max_tokens is not None:
                        room = min(room, max_tokens - self.n_generated - 1)
                    logits = self._advance(llm, tok, room)
        finally:
            sampler.close()
            if self._submitted is not None:     # the consumer stopped: the token is not kept
                sub, self._submitted = self._submitted, None
                sub.cancel()
            if self._ahead and llm._ctx is not None and llm._epoch == epoch:
                self._settle(len(self._ahead))
                llm._ctx.truncate(len(llm._tokens))      # drop drafts nobody confirmed
            if record_stats and t1 is not None:
                llm.last_stats["predicted_n"] = self.n_generated
                llm.last_stats["predicted_ms"] = (time.perf_counter() - t1) * 1e3
            if self._spec is not None and t1 is not None:    # drafted/accepted, every surface
                llm.last_stats.update(self._spec.stats.as_dict())

    def _settle(self, rejected: int) -> None:
        """The current draft is decided: `rejected` of its tokens were not confirmed."""
        if self._drafted:
            self._spec.record(self._drafted, self._drafted - rejected, self._t_verify)
        self._ahead.clear()
        self._rows.clear()
        self._drafted = 0

    def _advance(self, llm, tok: int, room: int) -> np.ndarray:
        """Speculative step: the logits after `tok` (just sampled; plain decoding would now
        evaluate it alone). From the verified draft when `tok` is its next token; else the
        rest of the draft leaves the cache and `tok` is evaluated together with a new draft,
        every row in single-token arithmetic (see pyrt/speculative.py)."""
        if self._ahead:
            if self._ahead[0] == tok:           # accepted: its logits are computed already
                self._ahead.pop(0)
                llm._tokens.append(tok)
                logits = self._rows.pop(0)
                if not self._ahead:
                    self._settle(0)
                return logits
            self._settle(len(self._ahead))
            llm._ctx.truncate(len(llm._tokens))
        pos = len(llm._tokens)
        draft = self._spec.propose(llm._tokens + [tok], room) if room > 0 else []
        t = time.perf_counter()
        if not draft:
            logits = llm._decode([tok], pos, lib.PYRT_OUT_LOGITS_LAST)
            llm._tokens.append(tok)
            self._spec.observe_single(time.perf_counter() - t)
            return logits
        rows = llm._decode([tok] + draft, pos, lib.PYRT_OUT_LOGITS_ALL,
                           n_shape=lib.PYRT_NUMERICS_PER_TOKEN)
        self._t_verify = time.perf_counter() - t
        llm._tokens.append(tok)
        self._ahead, self._rows, self._drafted = list(draft), list(rows[1:]), len(draft)
        return rows[0]


@dataclass(frozen=True)
class LazyGrammar:
    """A grammar that applies from the first occurrence of `trigger` in the
    generated text on (tool calls with ``tool_choice="auto"``: the model may
    answer in free text, but once it writes the call marker the rest must be
    a valid call). The grammar's sentences start with `trigger`: the matcher
    is fed the text from the trigger on."""

    grammar: "Grammar"
    trigger: str

    def __post_init__(self):
        from .grammar import Grammar
        if not isinstance(self.grammar, Grammar):
            raise TypeError(f"LazyGrammar.grammar must be a pyrt.Grammar (got {type(self.grammar).__name__})")
        if not isinstance(self.trigger, str) or not self.trigger:
            raise ValueError("LazyGrammar.trigger must be a non-empty string")
        if not self.grammar.accepts(self.trigger, prefix=True):
            raise ValueError(f"LazyGrammar: the grammar's sentences must start with the trigger {self.trigger!r}")


class _LazyTrigger:
    """One generation's watch for a :class:`LazyGrammar`'s trigger."""

    def __init__(self, lazy: LazyGrammar, tokenizer):
        self.grammar = lazy.grammar
        self.trigger = lazy.trigger.encode("utf-8")
        self.tokenizer = tokenizer
        self.tail = b""             # the generated bytes that may hold the trigger's beginning

    def sample(self, sampler: Sampler, logits: np.ndarray, is_eog: Callable[[int], bool],
               stop_ids: Collection[int]) -> "tuple[int, GrammarMatcher | None]":
        """Sample one token freely; when its text completes the trigger,
        return it with a matcher that has consumed the text from the trigger
        on. A token that completes the trigger but carries text the grammar
        rejects after it is replaced by one drawn from the tokens the grammar
        allows after the part of the trigger already written."""
        tok = sampler.sample(logits)
        if is_eog(tok) or tok in stop_ids:
            return tok, None
        text = self.tail + self.tokenizer.token_to_bytes(tok)
        at = text.find(self.trigger)
        if at < 0:
            self.tail = text[max(0, len(text) - (len(self.trigger) - 1)):]
            return tok, None
        matcher = self.grammar.matcher(self.tokenizer)
        if matcher.accept_bytes(text[at:]):
            return tok, matcher
        # the trigger straddles earlier tokens and this one, or ends inside it with text the
        # grammar rejects: continue the trigger prefix already emitted under the grammar (when
        # the trigger began inside this token, the text before it in the token is dropped)
        matcher = self.grammar.matcher(self.tokenizer)
        if at < len(self.tail) and not matcher.accept_bytes(self.tail[at:]):
            raise RuntimeError("grammar: the trigger prefix was rejected")      # checked at construction
        allowed = matcher.allowed()
        if not allowed.any():
            raise ValueError("grammar: no token of the vocabulary can continue the text generated so far")
        tok = sampler.sample(np.where(allowed, logits, np.float32(-np.inf)).astype(np.float32, copy=False))
        if not matcher.accept_token(tok):
            raise RuntimeError(f"grammar: token {tok} was allowed by the mask but rejected")  # a bug
        return tok, matcher


def _sample_constrained(sampler: Sampler, matcher: "GrammarMatcher", logits: np.ndarray,
                        is_eog: Callable[[int], bool], stop_ids: Collection[int]) -> int:
    """Sample, then check only the chosen token against the grammar; only
    when it is rejected, mask the whole vocabulary and draw again from the
    allowed tokens. The matcher has consumed the returned token (an end
    token is only returned where the text is complete)."""
    tok = sampler.sample(logits)
    if is_eog(tok) or tok in stop_ids:
        if matcher.is_complete():
            return tok
    elif matcher.accept_token(tok):
        return tok
    allowed = matcher.allowed()
    if stop_ids and matcher.is_complete():
        allowed[list(stop_ids)] = True
    if not allowed.any():
        raise ValueError("grammar: no token of the vocabulary can continue the text generated so "
                         "far (the grammar needs characters no token provides)")
    tok = sampler.sample(np.where(allowed, logits, np.float32(-np.inf)).astype(np.float32, copy=False))
    if not (is_eog(tok) or tok in stop_ids) and not matcher.accept_token(tok):
        raise RuntimeError(f"grammar: token {tok} was allowed by the mask but rejected")  # a bug
    return tok


def generate_step(llm: "Llama", tokens: list[int], params: SamplingParams, *, max_tokens: int | None,
                  stop_ids: Collection[int] = (), should_stop: Callable[[], bool] | None = None,
                  progress: Callable[[int, int], None] | None = None,
                  prompt_logits: np.ndarray | None = None, record_stats: bool = False,
                  grammar: "Grammar | None" = None,
                  speculator: "Speculator | None" = None) -> TokenSteps:
    """Generate after the prompt `tokens` (checked ids that fit the context),
    one ``(token, logits)`` per step. Nothing runs until the first step is
    asked for; then the cache is made to hold `tokens` (the longest cached
    prefix is kept; `progress(done, total)` reports batches), or, with
    `prompt_logits`, the caller has done that already and these are the
    logits after the prompt. `record_stats` makes ``llm.last_stats`` describe
    this generation. With `grammar` (a :class:`pyrt.Grammar`) every token
    keeps the text a prefix of the grammar's language, and an end token
    comes only where the text is complete; a :class:`LazyGrammar` does so
    from its trigger on. A `speculator` (pyrt/speculative.py)
    drafts tokens that are verified in batches: the tokens are the same, only
    sooner."""
    return TokenSteps(llm, tokens, params, max_tokens=max_tokens, stop_ids=stop_ids,
                      should_stop=should_stop, progress=progress, prompt_logits=prompt_logits,
                      record_stats=record_stats, grammar=grammar, speculator=speculator)


def generate_tokens(llm: "Llama", tokens: list[int], params: SamplingParams, *, max_tokens: int | None,
                    stop_ids: Collection[int] = (), stop_strs: Sequence[str] = (),
                    grammar: "Grammar | None" = None,
                    speculator: "Speculator | None" = None) -> Iterator[int]:
    """The token ids of :meth:`Llama.generate`. With stop strings, tokens are
    held back while the text they detokenize to could still be the start of a
    stop string; when it contains one, generation ends and the held tokens
    are dropped."""
    steps = generate_step(llm, tokens, params, max_tokens=max_tokens, stop_ids=stop_ids,
                          grammar=grammar, speculator=speculator)
    detokenize = llm.tokenizer.detokenize
    held: list[int] = []              # tokens that may be the start of a stop string
    try:
        for tok, _logits in steps:
            if not stop_strs:
                yield tok
                continue
            held.append(tok)
            text = detokenize(held)
            if any(s in text for s in stop_strs):
                return
            keep = stop_holdback(text, stop_strs)
            # release leading tokens whose text cannot be part of a stop string
            while held and (keep == 0 or len(detokenize(held[1:])) >= keep):
                yield held.pop(0)
        yield from held
    finally:
        steps.close()


# ---------------------------------------------------------------------------------------------
# text
# ---------------------------------------------------------------------------------------------

@dataclass
class Piece:
    """One event of :func:`stream_generate`.

    While generating: `text` is the next piece of the reply (possibly empty
    when only log-probabilities became ready) and `logprobs` the records of
    the tokens whose text is now fully emitted (see :func:`logprob_entry`;
    empty unless log-probabilities were asked for). The last piece has
    `finish_reason` ("stop", "length" or "abort"), no text, and
    `n_generated`, the number of tokens generated (a stop string's included)."""

    text: str
    logprobs: list[dict] = field(default_factory=list)
    finish_reason: str | None = None
    n_generated: int = 0


def stream_generate(llm: "Llama", tokens: list[int], params: SamplingParams, *,
                    max_tokens: int | None, stop_ids: Collection[int] = (),
                    stop_strs: Sequence[str] = (), n_logprobs: int | None = None,
                    should_stop: Callable[[], bool] | None = None,
                    progress: Callable[[int, int], None] | None = None,
                    prompt_logits: np.ndarray | None = None,
                    grammar: "Grammar | None" = None,
                    speculator: "Speculator | None" = None) -> Iterator[Piece]:
    """The text-streaming core of the completion APIs (arguments as
    :func:`generate_step`; `n_logprobs` None: no log-probabilities, k: the
    sampled token's and the k most likely ones').

    Stop strings are cut at the exact character; text that might begin a stop
    string is held back until it cannot; incomplete UTF-8 is never emitted.
    Records ``llm.last_stats``."""
    steps = generate_step(llm, tokens, params, max_tokens=max_tokens, stop_ids=stop_ids,
                          should_stop=should_stop, progress=progress, prompt_logits=prompt_logits,
                          record_stats=True, grammar=grammar, speculator=speculator)
    tokenizer = llm.tokenizer
    tok_bytes = tokenizer.token_to_bytes
    dec = codecs.getincrementaldecoder("utf-8")("replace")
    text = ""                    # generated text so far
    emitted = 0                  # characters of `text` already yielded
    pending: deque = deque()     # (entry, end offset) of tokens not yet yielded
    max_stop = max((len(s) for s in stop_strs), default=0)
    cut = -1
    try:
        for tok, logits in steps:
            prev = len(text)
            text += dec.decode(tok_bytes(tok))
            if n_logprobs is not None:
                pending.append((logprob_entry(tokenizer, logits, tok, n_logprobs, prev), len(text)))
            hold = 0
            if stop_strs:
                start = max(0, prev - max_stop + 1)
                hits = [i for i in (text.find(s, start) for s in stop_strs) if i >= 0]
                if hits:
                    cut = min(hits)
                    break
                hold = stop_holdback(text, stop_strs)
            upto = len(text) - hold
            if upto > emitted or (pending and pending[0][1] <= upto):
                ready = []
                while pending and pending[0][1] <= upto:
                    ready.append(pending.popleft()[0])
                yield Piece(text[emitted:upto], ready)
                emitted = upto
    finally:
        steps.close()
    if cut >= 0:
        finish = "stop"
        rest = text[emitted:cut]
        ready = [e for e, _end in pending if e["offset"] < cut]
    else:
        finish = steps.finish_reason
        rest = text[emitted:] + dec.decode(b"", final=True)
        ready = [e for e, _end in pending]
    if rest or ready:
        yield Piece(rest, ready)
    yield Piece("", [], finish, steps.n_generated)


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------

def stop_holdback(text: str, stops: Sequence[str]) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of a stop string."""
    best = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), 0, -1):
            if text.endswith(s[:k]):
                best = max(best, k)
                break
    return best


def log_softmax(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64)
    m = np.max(x)
    return x - (m + math.log(np.sum(np.exp(x - m))))


def logprob_entry(tokenizer, logits: np.ndarray, tok: int, k: int, offset: int) -> dict:
    """Log-probability record of token `tok` sampled from `logits` (the raw
    model distribution): id, token text and bytes, logprob, the `k` most
    likely (id, bytes, logprob) in `top`, and its character `offset` in the
    generated text."""
    lp = log_softmax(logits)
    top = []
    if k > 0:
        idx = np.argpartition(-lp, k - 1)[:k]
        idx = idx[np.argsort(-lp[idx], kind="stable")]
        top = [(int(i), tokenizer.token_to_bytes(int(i)), float(lp[i])) for i in idx]
    raw = tokenizer.token_to_bytes(tok)
    return {"id": tok, "token": raw.decode("utf-8", "replace"), "bytes": raw, "logprob": float(lp[tok]),
            "top": top, "offset": offset}
