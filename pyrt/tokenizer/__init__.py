"""Tokenizers built from GGUF metadata, matching llama.cpp token for token.

Layout
------
``base``: ``Tokenizer`` holds what every vocabulary type shares, following llama.cpp's vocab
loader: token attributes from ``tokenizer.ggml.token_type``, special token ids (with llama.cpp's
defaults and its text-based auto-detection of EOT/FIM tokens), the end-of-generation set,
partitioning of special-token text out of the input, and detokenization (per-token bytes,
control tokens hidden unless ``special``, BPE "clean spaces" pass).

``bpe``: ``BPETokenizer`` (``tokenizer.ggml.model = gpt2``) adds byte-level BPE: a pre-tokenizer
(a list of regexes, each one splitting the pieces the previous left; chosen by
``tokenizer.ggml.pre``, see ``PRE_TOKENIZERS`` in ``pretokenize``), GPT-2's byte->unicode
mapping, and merges applied lowest rank first (ties: leftmost first), with an LRU cache of
word -> ids.

``spm``: ``SPMTokenizer`` (``tokenizer.ggml.model = llama``) runs llama.cpp's SPM merging through
the ``sentencepiece`` library, on a model proto built from the GGUF vocabulary (see its
docstring) by the protobuf encoder in ``spm_proto``.

This module: ``load_tokenizer``, which picks the class from ``tokenizer.ggml.model``.

Checked against llama.cpp (the copy vendored in llama-cpp-python 0.3.36, built from source, on
vocab-only GGUFs): tokenize with and without special parsing, and detokenize, agree on tens of
thousands of random strings for every pre-tokenizer in ``PRE_TOKENIZERS`` that was tried (all
families). Known divergences:

- Unicode version: llama.cpp classifies code points with its own tables (Unicode 15.x); the
  ``regex`` module knows newer versions. They agree on every code point llama.cpp's tables assign
  (checked exhaustively); the ~10k code points first assigned in Unicode 16/17 are "undefined"
  (punctuation-like) for llama.cpp but letters/numbers/... for ``regex``.
- ``eot_id`` when the GGUF does not name it: llama.cpp takes the first matching text in its hash
  map's order (SmolLM2: ``<|endoftext|>``); we take the first in a fixed priority list
  (SmolLM2: ``<|im_end|>``). ``eog_ids`` is identical either way.
- llama.cpp refuses to load a model named "phi-3" whose vocabulary lacks ``<unk>``/``<s>``; we
  skip the missing tokens.
"""
from __future__ import annotations

from typing import Any, Mapping

from .base import Tokenizer
from .bpe import BPETokenizer
from .pretokenize import PRE_TOKENIZERS, PreTokenizer
from .spm import SPMTokenizer

__all__ = [
    "Tokenizer",
    "BPETokenizer",
    "SPMTokenizer",
    "PreTokenizer",
    "PRE_TOKENIZERS",
    "load_tokenizer",
]

_MODELS: dict[str, type[Tokenizer]] = {
    "gpt2": BPETokenizer,
    "llama": SPMTokenizer,
}


def load_tokenizer(meta: Mapping[str, Any]) -> Tokenizer:
    """Build the tokenizer described by GGUF metadata (key -> value, arrays as lists)."""
    model = meta.get("tokenizer.ggml.model")
    if model is None:
        raise ValueError("GGUF metadata has no tokenizer.ggml.model")
    cls = _MODELS.get(model) if isinstance(model, str) else None
    if cls is None:
        raise ValueError(f"unsupported tokenizer.ggml.model: {model!r} "
                         f"(supported: {', '.join(sorted(_MODELS))})")
    return cls(meta)
