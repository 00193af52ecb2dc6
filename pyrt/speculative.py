"""Speculative decoding: draft a few tokens cheaply, verify them in one batched forward.

The generator (:mod:`pyrt.generate`) samples every token exactly as plain decoding does; a
drafter only guesses which tokens will come next, so that their logits can be computed in one
batched call instead of one call per token:

1. after a token ``t`` is sampled, the drafter proposes ``d1..dk``;
2. ``[t, d1..dk]`` are evaluated in one call with ``PYRT_NUMERICS_PER_TOKEN`` numerics, so row
   ``i`` holds bit for bit the logits plain decoding would have computed after that token
   (the batch still reads each weight once);
3. the sampler samples from row 0; while the sampled token equals the next draft, the
   following row is already the right logits and no call is needed; at the first mismatch the
   sampled token is kept (it came from correct logits) and the cache is cut back to the
   accepted tokens.

So the sampled sequence -- greedy or random, with penalties, top-k/p, min-p, grammars, the same
seed -- is the one plain decoding gives, only sooner when drafts are accepted.

Drafters:

* :class:`PromptLookup` ("lookup"): the continuation of the longest recent n-gram match in the
  prompt + output so far. Free to compute; pays off on input-grounded tasks (rewrite, fix,
  extract, quote).
* :class:`DraftModel` ("draft"): a small model with the same vocabulary, decoding greedily in
  its own context, which it keeps in sync with the accepted tokens.

:class:`Speculator` adapts the draft length to the acceptance rate and stops drafting for a
while when drafts keep failing, so free-form text does not pay for verification that does not
work out.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Sequence

import numpy as np

from ._native import lib

if TYPE_CHECKING:
    from .api import Llama

__all__ = ["PromptLookup", "LlamaPromptLookupDecoding", "DraftModel", "Speculator", "SpecStats",
           "check_draft_compatible"]

MAX_DRAFT = 16


class PromptLookup:
    """n-gram drafting: find the most recent earlier occurrence of the last ``n`` tokens
    (``n`` from `max_ngram` down to `min_ngram`) and propose the tokens that followed it.

    Defaults 4 and 2: a match of a single token proposes text that is rejected more often
    than it pays, a longer match picks the right one of several continuations (replayed on
    benchmarks/speculative.py's prompts: SmolLM2 and Gemma-3 accept more of fewer drafts;
    BENCHMARKS.md, issue 20).

    `by_match` bounds a draft by the evidence for it: at most ``n - 1`` tokens (at least 1)
    follow a match of ``n`` tokens. On the benchmark's prompts a 2-token match's first token
    was accepted 59 % of the time (SmolLM2), a 4-token match's 95 %: a 2-token match drafts
    one token, whose verification costs least, and a longer match the controller's full
    length. pyrt's own lookup (``speculative="lookup"``) drafts so; the default keeps the
    plain rule that llama-cpp-python's class follows."""

    name = "lookup"

    def __init__(self, max_ngram: int = 4, min_ngram: int = 2, by_match: bool = False):
        if not 1 <= min_ngram <= max_ngram <= 16:
            raise ValueError(f"prompt lookup n-gram sizes must satisfy 1 <= min ({min_ngram}) <= "
                             f"max ({max_ngram}) <= 16")
        self.max_ngram, self.min_ngram, self.by_match = max_ngram, min_ngram, by_match

    def match(self, history: Sequence[int]) -> tuple[int, int]:
        """``(start, n)``: the longest suffix of `history` of ``n`` tokens (`min_ngram` ..
        `max_ngram`) that occurred earlier with at least one token after it, and where the
        continuation of its most recent such occurrence starts; ``(0, 0)`` when none."""
        n_hist = len(history)
        if n_hist < 2:
            return 0, 0
        arr = np.asarray(history, dtype=np.int64)
        # ends: last positions of the earlier occurrences of the last n tokens (n = 1 first),
        # each before the final token so that a continuation follows; filtered as n grows
        ends = np.flatnonzero(arr[:n_hist - 1] == arr[n_hist - 1])
        n = 1
        while ends.size and n < self.max_ngram:
            longer = ends[ends >= n]
            longer = longer[arr[longer - n] == arr[n_hist - 1 - n]]
            if not longer.size:
                break
            ends, n = longer, n + 1
        if not ends.size or n < self.min_ngram:
            return 0, 0
        return int(ends[-1]) + 1, n

    def propose(self, history: Sequence[int], k: int) -> list[int]:
        start, n = self.match(history) if k > 0 else (0, 0)
        if not n:
            return []
        if self.by_match:
            k = min(k, max(1, n - 1))
        return [int(t) for t in history[start:start + k]]

    def reset(self) -> None:
        pass

    def close(self) -> None:
        pass


class LlamaPromptLookupDecoding(PromptLookup):
    """llama-cpp-python's prompt-lookup drafter, by its name and arguments:
    ``Llama(path, draft_model=LlamaPromptLookupDecoding(num_pred_tokens=10))``."""

    def __init__(self, max_ngram_size: int = 2, num_pred_tokens: int = 10):
        super().__init__(max_ngram=max_ngram_size, min_ngram=1)     # its search: max_ngram_size .. 1
        if isinstance(num_pred_tokens, bool) or not isinstance(num_pred_tokens, int) or \
                not 1 <= num_pred_tokens <= 64:
            raise ValueError(f"num_pred_tokens must be an int in [1, 64], got {num_pred_tokens!r}")
        self.num_pred_tokens = num_pred_tokens


def check_draft_compatible(target: "Llama", draft: "Llama") -> None:
    """A draft model must share the target's vocabulary exactly (same ids, texts, special
    tokens); otherwise its proposals would mean other tokens. Raises ValueError naming the
    first difference."""
    tt, dt = target.tokenizer, draft.tokenizer
    if type(tt) is not type(dt):
        raise ValueError(f"draft model's tokenizer ({type(dt).__name__}) differs from the target "
                         f"model's ({type(tt).__name__})")
    if target.n_vocab() != draft.n_vocab():
        raise ValueError(f"draft model has {draft.n_vocab()} tokens in its vocabulary, the target "
                         f"model {target.n_vocab()}")
    for what in ("token_bos", "token_eos"):
        a, b = getattr(target, what)(), getattr(draft, what)()
        if a != b:
            raise ValueError(f"draft model's {what[6:]} token is {b}, the target model's {a}")
    ta = target.metadata.get("tokenizer.ggml.tokens")
    da = draft.metadata.get("tokenizer.ggml.tokens")
    if ta is not None and da is not None and list(ta) != list(da):
        first = next(i for i, (a, b) in enumerate(zip(ta, da)) if a != b)
        raise ValueError(f"draft model's token {first} is {da[first]!r}, the target model's "
                         f"{ta[first]!r}: the vocabularies differ")
    if tt.eog_ids != dt.eog_ids:
        raise ValueError("draft model's end-of-generation tokens differ from the target model's")


class DraftModel:
    """Greedy drafting with a small model of the same vocabulary (its own Llama and cache)."""

    name = "draft"

    def __init__(self, draft: "Llama | str | os.PathLike", target: "Llama", **llama_kwargs):
        from .api import Llama
        self._owned = not isinstance(draft, Llama)
        if self._owned:
            llama_kwargs.setdefault("n_ctx", target.n_ctx())
            llama_kwargs.setdefault("n_threads", target.n_threads())
            draft = Llama(draft, **llama_kwargs)
        try:
            check_draft_compatible(target, draft)
        except BaseException:
            if self._owned:
                draft.close()
            raise
        self.llm = draft

    def propose(self, history: Sequence[int], k: int) -> list[int]:
        llm = self.llm
        n = len(history)
        k = min(k, llm.n_ctx() - n)
        if k <= 0:
            return []
        logits = llm.eval_prefix(list(history))
        out: list[int] = []
        while True:
            tok = int(np.argmax(logits))
            out.append(tok)
            if len(out) >= k or llm.tokenizer.is_eog(tok):
                break
            logits = llm._decode([tok], len(llm._tokens), lib.PYRT_OUT_LOGITS_LAST)
            llm._tokens.append(tok)
        return out

    def reset(self) -> None:
        pass

    def close(self) -> None:
        if self._owned and self.llm is not None:
            self.llm.close()
        self.llm = None


@dataclass
class SpecStats:
    """Counts of one generation: verification calls, tokens drafted, drafts accepted."""
    n_calls: int = 0
    n_drafted: int = 0
    n_accepted: int = 0

    def as_dict(self) -> dict:
        return {"draft_calls": self.n_calls, "drafted_n": self.n_drafted,
                "accepted_n": self.n_accepted}


@dataclass
class Speculator:
    """Draft-length control around a drafter: grows the draft (by 2, up to `grow_max`) while
    everything is accepted, shrinks it after rejections, and pauses drafting (for `backoff`
    tokens, doubling up to 64) when the recent acceptance rate falls below `min_rate`, or when
    verification does not pay: the measured time of a verify call against (accepted + 1)
    single-token steps.

    `grow_max` 3 (a verify call of at most 4 tokens): the per-token batches' kernels read each
    weight once for up to 4 tokens, and a longer draft risks more rejected work than it saves
    (an offline replay of benchmarks/speculative.py's prompts against measured batch costs:
    see BENCHMARKS.md, issue 20). `max_draft` still bounds a draft the caller asks for."""

    drafter: object
    max_draft: int = MAX_DRAFT
    min_draft: int = 1
    min_rate: float = 0.25
    k: int = 3
    grow_max: int = 3
    stats: SpecStats = field(default_factory=SpecStats)
    _rate: float = 0.5
    _pause: int = 0
    _backoff: int = 4
    _t_single: float = 0.0      # EMA of a single-token decode's seconds (0: not measured yet)
    _gain: float = 1.0          # EMA of (accepted + 1) * t_single / t_verify

    def __post_init__(self):
        if not 1 <= self.max_draft <= 64:
            raise ValueError(f"draft length {self.max_draft} must be in [1, 64]")
        if not 1 <= self.grow_max <= 64:
            raise ValueError(f"draft growth limit {self.grow_max} must be in [1, 64]")
        self.k = min(self.k, self.max_draft)

    def propose(self, history: Sequence[int], room: int) -> list[int]:
        """Up to min(k, room) draft tokens after `history` ([] when paused or no guess)."""
        if self._pause > 0:
            self._pause -= 1
            return []
        k = min(self.k, room)
        if k <= 0:
            return []
        return self.drafter.propose(history, k)[:k]

    def observe_single(self, seconds: float) -> None:
        """A plain single-token decode took `seconds`."""
        self._t_single = seconds if not self._t_single else 0.8 * self._t_single + 0.2 * seconds

    def record(self, drafted: int, accepted: int, seconds: float = 0.0) -> None:
        """A verify call of `drafted` tokens took `seconds`; `accepted` of them were confirmed."""
        s = self.stats
        s.n_calls += 1
        s.n_drafted += drafted
        s.n_accepted += accepted
        self._rate = 0.7 * self._rate + 0.3 * (accepted / drafted)
        if self._t_single and seconds > 0:
            self._gain = 0.7 * self._gain + 0.3 * ((accepted + 1) * self._t_single / seconds)
            if self._gain < 1.0:          # slower than decoding those tokens one by one
                self._gain = 1.0
                self._rate = min(self._rate, self.min_rate / 2)
        if accepted == drafted:
            self.k = max(self.k, min(self.k + 2, self.grow_max, self.max_draft))
        else:
            self.k = max(self.min_draft, min(self.k, accepted + 1))
        if self._rate < self.min_rate:
            self._pause = self._backoff
            self._backoff = min(self._backoff * 2, 64)
            self._rate = self.min_rate      # try again after the pause
        elif accepted:
            self._backoff = 4

    def close(self) -> None:
        self.drafter.close()
