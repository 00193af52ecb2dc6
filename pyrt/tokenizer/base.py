"""Tokenizers built from GGUF metadata, matching llama.cpp token for token.

Layout
------
``Tokenizer`` (base) holds what every vocabulary type shares, following llama.cpp's vocab loader:
token attributes from ``tokenizer.ggml.token_type``, special token ids (with llama.cpp's
defaults and its text-based auto-detection of EOT/FIM tokens), the end-of-generation set,
partitioning of special-token text out of the input, and detokenization (per-token bytes,
control tokens hidden unless ``special``, BPE "clean spaces" pass).

``BPETokenizer`` (``tokenizer.ggml.model = gpt2``) adds byte-level BPE: a pre-tokenizer (a list of
regexes, each one splitting the pieces the previous left; chosen by ``tokenizer.ggml.pre``, see
``PRE_TOKENIZERS``), GPT-2's byte->unicode mapping, and merges applied lowest rank first (ties:
leftmost first), with an LRU cache of word -> ids.

``SPMTokenizer`` (``tokenizer.ggml.model = llama``) runs llama.cpp's SPM merging through the
``sentencepiece`` library, on a model proto built from the GGUF vocabulary (see its docstring).

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

import functools
import heapq
import itertools
import operator
import re
import struct
import warnings
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import numpy as np

__all__ = [
    "Tokenizer",
    "BPETokenizer",
    "SPMTokenizer",
    "PreTokenizer",
    "PRE_TOKENIZERS",
    "load_tokenizer",
]

# ----------------------------------------------------------------------------------------------
# token types (GGUF tokenizer.ggml.token_type) and attributes (llama.cpp's llama_token_attr)
# ----------------------------------------------------------------------------------------------

TYPE_UNDEFINED, TYPE_NORMAL, TYPE_UNKNOWN, TYPE_CONTROL, TYPE_USER_DEFINED, TYPE_UNUSED, TYPE_BYTE = range(7)

ATTR_UNDEFINED = 0
ATTR_UNKNOWN = 1 << 0
ATTR_UNUSED = 1 << 1
ATTR_NORMAL = 1 << 2
ATTR_CONTROL = 1 << 3
ATTR_USER_DEFINED = 1 << 4
ATTR_BYTE = 1 << 5
ATTR_NORMALIZED = 1 << 6
ATTR_LSTRIP = 1 << 7
ATTR_RSTRIP = 1 << 8
ATTR_SINGLE_WORD = 1 << 9

_TYPE_TO_ATTR = {
    TYPE_UNDEFINED: ATTR_UNDEFINED,
    TYPE_NORMAL: ATTR_NORMAL,
    TYPE_UNKNOWN: ATTR_UNKNOWN,
    TYPE_CONTROL: ATTR_CONTROL,
    TYPE_USER_DEFINED: ATTR_USER_DEFINED,
    TYPE_UNUSED: ATTR_UNUSED,
    TYPE_BYTE: ATTR_BYTE,
}

# special-token keys in GGUF -> our name. Later entries with the same name (deprecated keys)
# override earlier ones when present, as in llama.cpp.
_SPECIAL_KEYS = (
    ("bos", "tokenizer.ggml.bos_token_id"),
    ("eos", "tokenizer.ggml.eos_token_id"),
    ("eot", "tokenizer.ggml.eot_token_id"),
    ("eom", "tokenizer.ggml.eom_token_id"),
    ("unk", "tokenizer.ggml.unknown_token_id"),
    ("sep", "tokenizer.ggml.seperator_token_id"),  # sic: the GGUF key is misspelled
    ("pad", "tokenizer.ggml.padding_token_id"),
    ("mask", "tokenizer.ggml.mask_token_id"),
    ("fim_pre", "tokenizer.ggml.fim_pre_token_id"),
    ("fim_suf", "tokenizer.ggml.fim_suf_token_id"),
    ("fim_mid", "tokenizer.ggml.fim_mid_token_id"),
    ("fim_pad", "tokenizer.ggml.fim_pad_token_id"),
    ("fim_rep", "tokenizer.ggml.fim_rep_token_id"),
    ("fim_sep", "tokenizer.ggml.fim_sep_token_id"),
    ("fim_pre", "tokenizer.ggml.prefix_token_id"),
    ("fim_suf", "tokenizer.ggml.suffix_token_id"),
    ("fim_mid", "tokenizer.ggml.middle_token_id"),
)

# Tokens found by their text when the GGUF does not name them (llama.cpp does the same; it
# takes whichever its hash map yields first, we take the first name of the list present).
_AUTO_SPECIAL_TEXTS = {
    "eot": ("<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>",
            "<|end_of_text|>", "<EOT>", "_<EOT>", "[EOT]", "<｜end▁of▁sentence｜>",
            "<end_of_utterance>"),
    "eom": ("<|eom_id|>",),
    "fim_pre": ("<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<｜fim▁begin｜>", "<PRE>",
                "▁<PRE>", "<|code_prefix|>", "<|prefix|>"),
    "fim_suf": ("<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<｜fim▁hole｜>", "<SUF>",
                "▁<SUF>", "<|code_suffix|>", "<|suffix|>"),
    "fim_mid": ("<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<｜fim▁end｜>", "<MID>",
                "▁<MID>", "<|code_middle|>", "<|middle|>"),
    "fim_pad": ("<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"),
    "fim_rep": ("<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>"),
    "fim_sep": ("<|file_sep|>",),
}

# Texts llama.cpp treats as end-of-generation whatever the GGUF says.
_EOG_TEXTS = frozenset((
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>",
    "<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]",
    "<|end_of_text|>", "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>",
    "<｜end▁of▁sentence｜>",
))

# Texts looked up while loading a vocabulary (token_to_id finds them without the full map).
_KNOWN_TEXTS = frozenset((
    *itertools.chain.from_iterable(_AUTO_SPECIAL_TEXTS.values()), *_EOG_TEXTS,
    "<|channel|>", "<|message|>", "<|start|>", "<|constrain|>",     # gpt-oss
    "<mask>", "[MASK]", "</s>", "<unk>", "<s>", "<|endoftext|>",     # per-model fix-ups
    *map(chr, range(0x80)),                                          # SPM one-byte fallbacks
    "<pyrt-unknown>",                                                # SPM unknown piece
    # what pyrt.chat looks up to pick a template and its stop tokens (kept in sync by a test)
    "<start_of_turn>", "<|start_header_id|>", "<|im_start|>", "<|assistant|>", "[INST]", "[/INST]",
))

_SPECIAL_OR_BYTE = ATTR_CONTROL | ATTR_USER_DEFINED | ATTR_UNKNOWN | ATTR_BYTE

# C isspace() in the "C" locale: what llama.cpp strips next to LSTRIP/RSTRIP special tokens.
_C_SPACE = " \t\n\v\f\r"


# ----------------------------------------------------------------------------------------------
# pre-tokenizers: data, one entry per llama.cpp pre-tokenizer family
# ----------------------------------------------------------------------------------------------
# Each regex splits every piece left by the previous one; matched spans and the gaps between
# them both become pieces (llama.cpp's unicode_regex_split). The patterns are llama.cpp's
# (themselves adapted from the models' tokenizer.json), written for the `regex` module:
# `$` became `\Z` (Python's `$` also matches before a final newline) and `\d` became `[0-9]`
# where llama.cpp evaluates it with std::regex (ASCII digits only).
# A pattern without Unicode categories (\p{..}) runs in llama.cpp on code points where every
# non-ASCII whitespace was replaced by U+000B, so e.g. a literal range U+0800-U+4E00 does not
# match U+2028 there; we match such patterns on the same substituted text.
_CATEGORY_MARKERS = (r"\p{N}", r"\p{L}", r"\p{P}", r"\p{M}", r"\p{S}",
                     r"\p{Lu}", r"\p{Ll}", r"\p{Lt}", r"\p{Lm}", r"\p{Lo}")
_NONASCII_WS_TO_VT = {c: 0x0B for c in (0x85, 0xA0, 0x1680, *range(0x2000, 0x200B), 0x2028, 0x2029,
                                        0x202F, 0x205F, 0x3000)}

_CONTRACTIONS = r"'s|'t|'re|'ve|'m|'ll|'d"
_CONTRACTIONS_CI = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"

# GPT-2. llama.cpp runs a hand-written matcher for this one that behaves like the pattern
# followed by `|\s+` (a lone whitespace before a non-space is its own piece).
RE_GPT2 = _CONTRACTIONS + r"| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
RE_LLAMA3 = (_CONTRACTIONS_CI + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
             r"|\s*[\r\n]+|\s+(?!\S)|\s+")
RE_QWEN2 = (_CONTRACTIONS_CI + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
            r"|\s*[\r\n]+|\s+(?!\S)|\s+")
RE_QWEN35 = (_CONTRACTIONS_CI + r"|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*"
             r"|\s*[\r\n]+|\s+(?!\S)|\s+")
RE_JAIS2 = (_CONTRACTIONS_CI + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
            r"|\s*[\r\n]+|\s{512}(?!\S)|\s{256}(?!\S)|\s{128}(?!\S)|\s{64}(?!\S)|\s{32}(?!\S)"
            r"|\s{16}(?!\S)|\s{8}(?!\S)|\s{4}(?!\S)|\s{1,2}(?!\S)|\s{1}")
# llama.cpp evaluates \p{Lu}/\p{Ll}-style classes on collapsed categories, where every
# non-ASCII letter counts as both cases; its adapted patterns (kept here) express exactly that.
_UPPERISH = r"(?:(?=\p{L})[^a-z])"
_LOWERISH = r"(?:(?=\p{L})[^A-Z])"
RE_TEKKEN = (r"[^\r\n\p{L}\p{N}]?" + _UPPERISH + "*" + _LOWERISH + "+"
             r"|[^\r\n\p{L}\p{N}]?" + _UPPERISH + "+" + _LOWERISH + "*"
             r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")
RE_GPT4O = (r"[^\r\n\p{L}\p{N}]?" + _UPPERISH + "*" + _LOWERISH + "+" + _CONTRACTIONS_CI + "?"
            r"|[^\r\n\p{L}\p{N}]?" + _UPPERISH + "+" + _LOWERISH + "*" + _CONTRACTIONS_CI + "?"
            r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_UPPERISH_M = r"(?:(?=[\p{L}\p{M}])[^a-z])"
_LOWERISH_M = r"(?:(?=[\p{L}\p{M}])[^A-Z])"
RE_GRANITE_EMB_MULTI = (
    r"[^\r\n\p{L}\p{N}]?" + _UPPERISH_M + "*" + _LOWERISH_M + "+" + _CONTRACTIONS_CI + "?"
    r"|[^\r\n\p{L}\p{N}]?" + _UPPERISH_M + "+" + _LOWERISH_M + "*" + _CONTRACTIONS_CI + "?"
    r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")
RE_DEEPSEEK3_MAIN = (r"[!\"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+"
                     r"| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
RE_BLOOM = r" ?[^(\s|.,!?…。，、।۔،)]+"
RE_FALCON_MAIN = _CONTRACTIONS + r"| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"

RE_DEEPSEEK_LLM_LETTERS = (
    "\\s?["
    "A-Za-z\u00b5\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u01ba\u01bc-\u01bf\u01c4-\u0293\u0295-"
    "\u02af\u0370-\u0373\u0376\u0377\u037b-\u037d\u037f\u0386\u0388-\u038a\u038c\u038e-\u03a1"
    "\u03a3-\u03f5\u03f7-\u0481\u048a-\u052f\u0531-\u0556\u10a0-\u10c5\u13a0-\u13f5\u13f8-"
    "\u13fd\u1c90-\u1cba\u1cbd-\u1cbf\u1d00-\u1d2b\u1d6b-\u1d77\u1d79-\u1d9a\u1e00-\u1f15"
    "\u1f18-\u1f1d\u1f20-\u1f45\u1f48-\u1f4d\u1f50-\u1f57\u1f59\u1f5b\u1f5d\u1f5f-\u1f7d"
    "\u1f80-\u1fb4\u1fb6-\u1fbc\u1fbe\u1fc2-\u1fc4\u1fc6-\u1fcc\u1fd0-\u1fd3\u1fd6-\u1fdb"
    "\u1fe0-\u1fec\u1ff2-\u1ff4\u1ff6-\u1ffc\u2102\u2107\u210a-\u2113\u2115\u2119-\u211d"
    "\u2124\u2126\u2128\u212a-\u212d\u212f-\u2134\u2139\u213c-\u213f\u2145-\u2149\u214e\u2183"
    "\u2184\u2c00-\u2c7b\u2c7e-\u2ce4\u2ceb-\u2cee\u2cf2\u2cf3\ua640-\ua66d\ua680-\ua69b"
    "\ua722-\ua76f\ua771-\ua787\ua78b-\ua78e\uab70-\uabbf\ufb00-\ufb06\ufb13-\ufb17\uff21-"
    "\uff3a\uff41-\uff5a\U00010400-\U0001044f\U000104b0-\U000104d3\U000104d8-\U000104fb"
    "\U00010c80-\U00010cb2\U00010cc0-\U00010cf2\U000118a0-\U000118df\U0001e900-\U0001e943"
    "]+"
)


@dataclass(frozen=True)
class PreTokenizer:
    """One llama.cpp pre-tokenizer family plus the vocab flags llama.cpp sets with it."""
    regexes: tuple[str, ...]
    clean_spaces: bool = True      # detokenize: HF clean_up_tokenization_spaces
    ignore_merges: bool = False    # a pre-token that is itself in the vocab is one token
    add_bos: bool = False          # default when the GGUF has no tokenizer.ggml.add_bos_token
    no_bos: bool = False           # default BOS id is "none" (chatglm)


_P_DEFAULT = PreTokenizer((r"[\p{P}$+<=>^~|]+", RE_GPT2, r"\p{N}+", r"[0-9][0-9][0-9]"))
_P_GPT2 = PreTokenizer((RE_GPT2,))
_P_GPT2_NC = PreTokenizer((RE_GPT2,), clean_spaces=False)
_P_STARCODER = PreTokenizer((r"\p{N}", RE_GPT2))
_P_STARCODER_NC = PreTokenizer((r"\p{N}", RE_GPT2), clean_spaces=False)
_P_LLAMA3 = PreTokenizer((RE_LLAMA3,), ignore_merges=True, add_bos=True)
_P_LLAMA3_PLAIN = PreTokenizer((RE_LLAMA3,))
_P_QWEN2 = PreTokenizer((RE_QWEN2,))
_P_QWEN2_NC = PreTokenizer((RE_QWEN2,), clean_spaces=False)
_P_DEEPSEEK3 = PreTokenizer((r"\p{N}{1,3}", r"[一-龥぀-ゟ゠-ヿ]+", RE_DEEPSEEK3_MAIN), clean_spaces=False)
_P_BLOOM = PreTokenizer((RE_BLOOM,))
_P_GPT4O = PreTokenizer((RE_GPT4O,), clean_spaces=False)

#: tokenizer.ggml.pre value -> pre-tokenizer (names as llama.cpp's llama-vocab.cpp maps them)
PRE_TOKENIZERS: dict[str, PreTokenizer] = {
    "default": _P_DEFAULT,
    # llama 3 family
    **dict.fromkeys(("llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral",
                     "midm-2.0", "lfm2", "jina-v5-nano"), _P_LLAMA3),
    **dict.fromkeys(("dbrx", "smaug-bpe"), _P_LLAMA3_PLAIN),
    "chatglm-bpe": PreTokenizer((RE_LLAMA3,), no_bos=True),
    **dict.fromkeys(("glm4", "glm5"), PreTokenizer((RE_LLAMA3,), ignore_merges=True, no_bos=True)),
    "jais-2": PreTokenizer((RE_JAIS2,)),
    "minicpm5": PreTokenizer((r"\p{N}{1,3}", _CONTRACTIONS_CI + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}+"
                              r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"),
                             ignore_merges=True),
    # gpt-2 family
    **dict.fromkeys(("gpt-2", "phi-2", "jina-es", "jina-de", "gigachat", "jina-v2-es", "jina-v2-de",
                     "a.x-4.0", "mellum", "modern-bert", "exaone4", "jina-v1-en", "jina-v2-code",
                     "roberta-bpe", "mpt", "olmo", "jais"), _P_GPT2),
    **dict.fromkeys(("trillion", "granite-docling"), _P_GPT2_NC),
    # starcoder / smollm family: digits split one by one, then gpt-2
    **dict.fromkeys(("starcoder", "refact", "codeshell", "exaone", "minerva-7b", "mellum2"), _P_STARCODER),
    **dict.fromkeys(("smollm", "command-r"), _P_STARCODER_NC),
    # qwen2 family
    **dict.fromkeys(("qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2", "hunyuan", "solar-open", "grok-2"),
                    _P_QWEN2_NC),
    **dict.fromkeys(("stablelm2", "megrez"), _P_QWEN2),
    "qwen35": PreTokenizer((RE_QWEN35,), clean_spaces=False),
    "laguna": PreTokenizer((r"[^\n]+|[\n]+", RE_QWEN2), clean_spaces=False),
    "ufakzeka": PreTokenizer((r"[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
                              r"|\s+(?!\S)|\s+",), clean_spaces=False),
    "seed-coder": PreTokenizer((_CONTRACTIONS_CI + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1}"
                                r"| ?[^\s\p{L}\p{N}\r\n]+|\s*[\r\n]+|\s+(?!\S)|\s+",), clean_spaces=False),
    **dict.fromkeys(("bailingmoe", "bailingmoe2", "llada-moe"), PreTokenizer(
        (r"'(?:[sSdDmMtT]|[lL][lL]|[vV][eE]|[rR][eE])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
         r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+",), clean_spaces=False)),
    "exaone-moe": PreTokenizer((_CONTRACTIONS_CI + r"|[^\r\n\p{L}\p{N}]?(?:\p{L}\p{M}*(?: \p{L}\p{M}*)*)+"
                                r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]?|\s*[\r\n]|\s+(?!\S)|\s+",)),
    # deepseek
    "deepseek-llm": PreTokenizer((r"[\r\n]", RE_DEEPSEEK_LLM_LETTERS, r"\s?[!-/:-~！-／：-～‘-‟　-。]+",
                                  r"\s+\Z", r"[一-龥ࠀ-一가-퟿]+", r"\p{N}+"), clean_spaces=False),
    "deepseek-coder": PreTokenizer((r"[\r\n]", r"\s?\p{L}+", r"\s?\p{P}+", r"[一-龥ࠀ-一가-퟿]+", r"\p{N}"),
                                   clean_spaces=False),
    **dict.fromkeys(("deepseek-v3", "hunyuan-dense", "joyai-llm", "hy_v4"), _P_DEEPSEEK3),
    # falcon
    "falcon": PreTokenizer((r"[\p{P}$+<=>^~|`]+", RE_FALCON_MAIN, r"[0-9][0-9][0-9]")),
    # bloom family
    "poro-chat": PreTokenizer((RE_BLOOM,), clean_spaces=False),
    **dict.fromkeys(("bloom", "gpt3-finnish"), _P_BLOOM),
    "viking": PreTokenizer((RE_BLOOM, r"\p{N}"), clean_spaces=False),
    # mistral tekken, gpt-4o
    "tekken": PreTokenizer((RE_TEKKEN,), clean_spaces=False, ignore_merges=True, add_bos=True),
    **dict.fromkeys(("gpt-4o", "llama4", "kanana2", "talkie", "minimax-m2"), _P_GPT4O),
    "granite-embed-multi-97m": PreTokenizer((RE_GRANITE_EMB_MULTI,), clean_spaces=False, ignore_merges=True),
    "chameleon": PreTokenizer((r"<sentinel:[0-9]+>", r"(IMGIMG)((A|B|C|D|E|F|G|H|I){1,4})Z",
                               r"([\t\n]|    |  )", r"\p{N}", r"[\p{P}!-/:-@\[-`{-~]", RE_GPT2),
                              add_bos=True, clean_spaces=False),
}
# Not supported (llama.cpp has hand-written splitters or non byte-level BPE for these):
# kimi-k2, afmoe, tiny_aya/cohere2moe, superbpe, gemma4, sarvam-moe, whitespace, spark2_5, youtu.


# ----------------------------------------------------------------------------------------------
# GPT-2 byte <-> unicode mapping
# ----------------------------------------------------------------------------------------------

def _gpt2_byte_to_unicode() -> list[str]:
    printable = (list(range(0x21, 0x7F)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100)))
    table: list[str] = [""] * 256
    for b in printable:
        table[b] = chr(b)
    n = 0
    for b in range(256):
        if not table[b]:
            table[b] = chr(256 + n)
            n += 1
    return table


_BYTE_TO_UNICODE = _gpt2_byte_to_unicode()
_UNICODE_TO_BYTE = {c: b for b, c in enumerate(_BYTE_TO_UNICODE)}
# str.translate table for text decoded as latin-1 (one char per byte)
_BYTE_ENCODE_TABLE = {b: c for b, c in enumerate(_BYTE_TO_UNICODE)}


# ----------------------------------------------------------------------------------------------
# base tokenizer
# ----------------------------------------------------------------------------------------------

class Tokenizer:
    """Vocabulary, special tokens, special-token partitioning and detokenization.

    Subclasses implement ``_tokenize_text`` (one plain-text fragment -> ids) and
    ``_normal_token_bytes`` (bytes of a NORMAL token).
    """

    model_name = ""
    default_add_bos = False
    default_clean_spaces = False
    #: llama.cpp's default special ids for this vocab type (used when the GGUF has no key)
    default_special: dict[str, int | None] = {"bos": 1, "eos": 2, "unk": 0}

    n_vocab: int
    bos_id: int | None
    eos_id: int | None
    eot_id: int | None
    add_bos: bool
    add_eos: bool
    eog_ids: frozenset[int]

    def __init__(self, meta: Mapping[str, Any], *, pre: PreTokenizer | None = None) -> None:
        tokens = meta.get("tokenizer.ggml.tokens")
        if not isinstance(tokens, (list, tuple)) or not tokens:
            raise ValueError("GGUF metadata has no tokenizer.ggml.tokens array")
        n = len(tokens)
        self.n_vocab = n

        texts: list[str] = list(tokens)
        if not set(map(type, texts)) <= {str}:
            for i, t in enumerate(texts):
                if not isinstance(t, str):
                    raise ValueError(f"tokenizer.ggml.tokens[{i}] is not a string")
        if "" in texts:
            texts = [t if t else f"[EMPTY_{i}]" for i, t in enumerate(texts)]
        self._texts = texts
        # Duplicate texts are rejected by the subclasses, which learn whether there are any
        # for free (BPE: building the text -> id map; SPM: sentencepiece refuses them).
        # The full text -> id map (tens of ms for a 262k vocabulary) is built on first use;
        # the texts looked up while loading are found by one scan.
        self._known_ids = {texts[i]: i for i in
                           itertools.compress(range(n), map(_KNOWN_TEXTS.__contains__, texts))}

        types = meta.get("tokenizer.ggml.token_type")
        if types is not None:
            if not isinstance(types, (list, tuple)) or len(types) != n:
                raise ValueError(f"tokenizer.ggml.token_type has {len(types) if isinstance(types, (list, tuple)) else '?'}"
                                 f" entries for {n} tokens")
            if set(map(type, types)) <= {int}:
                attrs = list(map(_TYPE_TO_ATTR.get, types, itertools.repeat(ATTR_UNDEFINED)))
            else:
                attrs = [_TYPE_TO_ATTR.get(int(t), ATTR_UNDEFINED) for t in types]
        else:
            attrs = [ATTR_NORMAL] * n
        self._attrs = attrs
        # Every id whose attributes can matter below (special or byte ones). Attributes change
        # below only for tokens found by text, all among _known_ids: with them, this list holds
        # every id that may later carry a special or byte attribute, so that no rule below
        # needs another scan of the whole vocabulary.
        self._special_candidates = sorted(set(_ids_with(attrs, _SPECIAL_OR_BYTE))
                                          .union(self._known_ids.values()))

        scores = meta.get("tokenizer.ggml.scores")
        if scores is not None and (not isinstance(scores, (list, tuple)) or len(scores) != n):
            raise ValueError(f"tokenizer.ggml.scores has {len(scores) if isinstance(scores, (list, tuple)) else '?'}"
                             f" entries for {n} tokens")
        self._scores = scores

        # --- special token ids: defaults, then GGUF keys
        special: dict[str, int | None] = {k: None for k, _ in _SPECIAL_KEYS}
        special.update(self.default_special)
        if pre is not None and pre.no_bos:
            special["bos"] = None
        for name, v in list(special.items()):
            if v is not None and v >= n:
                special[name] = None
        for name, key in _SPECIAL_KEYS:
            if key not in meta:
                continue
            v = meta[key]
            if isinstance(v, bool) or not isinstance(v, int):
                raise ValueError(f"{key} must be an integer, got {v!r}")
            if not 0 <= v < n:
                raise ValueError(f"{key} = {v} is out of range for a vocabulary of {n} tokens")
            special[name] = v

        add_bos = meta.get("tokenizer.ggml.add_bos_token")
        add_eos = meta.get("tokenizer.ggml.add_eos_token")
        default_add_bos = pre.add_bos if pre is not None and pre.add_bos else self.default_add_bos
        self.add_bos = bool(add_bos) if add_bos is not None else default_add_bos
        self.add_eos = bool(add_eos) if add_eos is not None else False

        # --- auto-detect EOT / EOM / FIM tokens by text (forcing them to CONTROL)
        for name, candidates in _AUTO_SPECIAL_TEXTS.items():
            if special[name] is not None:
                continue
            for text in candidates:
                tid = self._id_of(text)
                if tid is not None:
                    special[name] = tid
                    attrs[tid] |= ATTR_CONTROL
                    break

        # control tokens whose text says "unused" are unused
        for i in self._special_candidates:
            if attrs[i] & ATTR_CONTROL and "unused" in texts[i]:
                attrs[i] |= ATTR_UNUSED

        # --- end-of-generation set
        eog: set[int] = set()
        for name in ("fim_pad", "fim_rep", "fim_sep"):
            if special[name] is not None:
                eog.add(special[name])  # type: ignore[arg-type]
        for text in _EOG_TEXTS:
            tid = self._id_of(text)
            if tid is not None:
                eog.add(tid)
                attrs[tid] |= ATTR_CONTROL
        # gpt-oss: these are always rendered
        for text in ("<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"):
            tid = self._id_of(text)
            if tid is not None:
                attrs[tid] = ATTR_USER_DEFINED
        for name in ("eos", "eot", "eom"):
            if special[name] is not None:
                eog.add(special[name])  # type: ignore[arg-type]
        eog_texts = {texts[i]: i for i in eog}
        # o200k_harmony / solar-open: "<|end|>" ends a message, not the generation
        if "<|end|>" in eog_texts and (("<|return|>" in eog_texts and ("<|call|>" in eog_texts or "<|calls|>" in eog_texts))
                                       or (("<|call|>" in eog_texts or "<|calls|>" in eog_texts) and "<|flush|>" in eog_texts)):
            end_id = eog_texts["<|end|>"]
            eog.discard(end_id)
            attrs[end_id] = ATTR_USER_DEFINED
        # gemma4 / plamo: "</s>" is an ordinary token there
        if "</s>" in eog_texts and ("<|tool_response>" in eog_texts or "<|plamo:eos|>" in eog_texts):
            s_id = eog_texts["</s>"]
            eog.discard(s_id)
            attrs[s_id] = ATTR_NORMAL

        self.special_ids: dict[str, int | None] = special
        self.bos_id = special["bos"]
        self.eos_id = special["eos"]
        self.eot_id = special["eot"]
        self.eog_ids = frozenset(eog)
        if self.add_bos and self.bos_id is None:
            raise ValueError("tokenizer.ggml.add_bos_token is true but the model has no BOS token")
        if self.add_eos and self.eos_id is None:
            raise ValueError("tokenizer.ggml.add_eos_token is true but the model has no EOS token")

        # --- special-token cache: longest text first (llama.cpp's order of partitioning)
        special_list = [i for i in self._special_candidates
                        if attrs[i] & (ATTR_CONTROL | ATTR_USER_DEFINED | ATTR_UNKNOWN)]
        special_list.sort(key=lambda i: (-_utf8_len(texts[i]), i))

        # per-model attribute fix-ups (llama.cpp keys them on names)
        model_name = str(meta.get("general.name", "")).lower()
        pre_name = str(meta.get("tokenizer.ggml.pre", ""))
        arch = str(meta.get("general.architecture", ""))

        def set_attr(text: str, attr: int, value: bool) -> None:
            tid = self._id_of(text)
            if tid is not None:
                attrs[tid] = (attrs[tid] | attr) if value else (attrs[tid] & ~attr)

        if any(s in pre_name for s in ("jina-v2-de", "jina-v2-es", "jina-v2-code")) or \
                any(s in arch for s in ("nomic-bert-moe", "jina-bert-v3")):
            set_attr("<mask>", ATTR_LSTRIP, True)
        elif "phi-3" in model_name or "phi3" in model_name:
            for tid in special_list:
                attrs[tid] |= ATTR_RSTRIP
            set_attr("</s>", ATTR_RSTRIP, True)
            for text in ("<unk>", "<s>", "<|endoftext|>"):
                set_attr(text, ATTR_RSTRIP, False)
        elif "modern-bert" in model_name:
            set_attr("[MASK]", ATTR_LSTRIP, True)

        self._special_all = [(texts[i], i, bool(attrs[i] & ATTR_LSTRIP), bool(attrs[i] & ATTR_RSTRIP))
                             for i in special_list]
        # without special parsing, only USER_DEFINED tokens are still split out
        self._special_user = [s for s in self._special_all
                              if not attrs[s[1]] & (ATTR_CONTROL | ATTR_UNKNOWN)]

        self.clean_spaces = pre.clean_spaces if pre is not None else self.default_clean_spaces
        self._piece_cache: list[bytes | None] = [None] * n

    # ------------------------------------------------------------------ public API

    def tokenize(self, text: str, add_bos: bool | None = None, special: bool = False) -> list[int]:
        """Text -> token ids.

        ``add_bos=None`` applies the model's rule (llama.cpp's ``add_special=True``: BOS if the
        model adds BOS, EOS if it adds EOS); ``True`` forces a BOS (EOS per model rule);
        ``False`` adds neither. ``special=True`` parses special-token text such as
        ``<|im_start|>`` into its token; user-defined tokens are split out either way.
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be str, not {type(text).__name__}")
        out: list[int] = []
        want_bos = self.add_bos if add_bos is None else bool(add_bos)
        want_eos = self.add_eos if add_bos is None else (self.add_eos and bool(add_bos))
        if want_bos:
            if self.bos_id is None:
                raise ValueError("this model has no BOS token")
            out.append(self.bos_id)
        if text:
            self._tokenize_fragments(self._partition(text, special), out)
        if want_eos:
            out.append(self.eos_id)  # type: ignore[arg-type]
        return out

    def detokenize(self, ids: Iterable[int], special: bool = False) -> str:
        """Token ids -> text. ``special=False`` renders control tokens as '' (llama.cpp's
        default); invalid UTF-8 becomes U+FFFD."""
        data = b"".join([self.token_to_bytes(i, special) for i in ids])
        if self.clean_spaces:
            data = _clean_up_spaces(data)
        return data.decode("utf-8", errors="replace")

    def token_to_bytes(self, id: int, special: bool = False) -> bytes:
        """Raw bytes of one token as llama.cpp's token_to_piece gives them (may be a partial
        UTF-8 sequence: decode a stream with an incremental decoder)."""
        if not 0 <= id < self.n_vocab:
            raise IndexError(f"token id {id} out of range [0, {self.n_vocab})")
        attr = self._attrs[id]
        if not special and attr & (ATTR_UNKNOWN | ATTR_CONTROL):
            return b""
        piece = self._piece_cache[id]
        if piece is None:
            piece = self._piece_bytes(id)
            self._piece_cache[id] = piece
        return piece

    def token_to_piece(self, id: int) -> str:
        """The vocabulary string of a token (as stored in the GGUF)."""
        if not 0 <= id < self.n_vocab:
            raise IndexError(f"token id {id} out of range [0, {self.n_vocab})")
        return self._texts[id]

    def token_attr(self, id: int) -> int:
        return self._attrs[id]

    def token_to_id(self, piece: str) -> int | None:
        return self._id_of(piece)

    def is_eog(self, id: int) -> bool:
        return id in self.eog_ids

    def is_control(self, id: int) -> bool:
        return bool(self._attrs[id] & ATTR_CONTROL)

    def __len__(self) -> int:
        return self.n_vocab

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(n_vocab={self.n_vocab}, bos={self.bos_id}, eos={self.eos_id}, "
                f"add_bos={self.add_bos})")

    # ------------------------------------------------------------------ internals

    def _reject_duplicates(self) -> None:
        """Raise ValueError naming the first duplicate token text, if there is one."""
        first: dict[str, int] = {}
        for i, t in enumerate(self._texts):
            if t in first:
                raise ValueError(f"tokenizer.ggml.tokens[{i}] = {t!r} duplicates "
                                 f"tokenizer.ggml.tokens[{first[t]}]")
            first[t] = i

    @functools.cached_property
    def _token_to_id(self) -> dict[str, int]:
        return dict(zip(self._texts, range(self.n_vocab)))

    def _id_of(self, text: str) -> int | None:
        """Id of a token text; the texts of ``_KNOWN_TEXTS`` without building the full map."""
        if text in _KNOWN_TEXTS:
            return self._known_ids.get(text)
        return self._token_to_id.get(text)

    def _partition(self, text: str, parse_special: bool) -> list[str | int]:
        """Split special-token text out of ``text`` (llama.cpp's tokenizer_st_partition):
        for each special token, longest first, every occurrence in every remaining text
        fragment becomes that token."""
        frags: list[str | int] = [text]
        chars = set(text) if len(text) > 64 else text  # cheap prefilter for big special lists
        for stext, sid, lstrip, rstrip in (self._special_all if parse_special else self._special_user):
            if stext[0] not in chars or stext not in text:
                continue
            new: list[str | int] = []
            for frag in frags:
                if type(frag) is int or stext not in frag:  # type: ignore[operator]
                    new.append(frag)
                    continue
                pos = 0
                end = len(frag)  # type: ignore[arg-type]
                while True:
                    m = frag.find(stext, pos)  # type: ignore[union-attr]
                    if m < 0:
                        break
                    left = frag[pos:m]  # type: ignore[index]
                    if lstrip:
                        left = left.rstrip(_C_SPACE)
                    if left:
                        new.append(left)
                    new.append(sid)
                    pos = m + len(stext)
                    if rstrip:
                        while pos < end and frag[pos] in _C_SPACE:  # type: ignore[index]
                            pos += 1
                if pos < end:
                    new.append(frag[pos:])  # type: ignore[index]
            frags = new
        return frags

    def _piece_bytes(self, id: int) -> bytes:
        attr = self._attrs[id]
        text = self._texts[id]
        if attr & (ATTR_UNKNOWN | ATTR_CONTROL | ATTR_USER_DEFINED):
            return text.encode("utf-8", "surrogatepass")
        if attr & ATTR_NORMAL:
            return self._normal_token_bytes(text)
        if attr & ATTR_BYTE:
            return bytes((int(text[3:5], 16),))
        return b""  # unused / undefined tokens render as nothing

    def _tokenize_fragments(self, frags: list[str | int], out: list[int]) -> None:
        """Append the ids of ``_partition``'s output: special token ids, tokenized text."""
        for frag in frags:
            if type(frag) is int:
                out.append(frag)
            else:
                self._tokenize_text(frag, out)  # type: ignore[arg-type]

    def _tokenize_text(self, text: str, out: list[int]) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _normal_token_bytes(self, text: str) -> bytes:  # pragma: no cover - abstract
        raise NotImplementedError


def _utf8_len(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def _ids_with(attrs: list[int], mask: int) -> list[int]:
    """Ids whose attributes have any bit of ``mask`` (ascending), without a Python-level loop."""
    return list(itertools.compress(range(len(attrs)), map(operator.and_, attrs, itertools.repeat(mask))))


def _clean_up_spaces(data: bytes) -> bytes:
    """llama.cpp's clean_spaces passes over detokenized bytes (HF's
    clean_up_tokenization_spaces), done in place on one buffer as llama.cpp does."""
    t = bytearray(data)
    SP, AP = 0x20, 0x27
    # 1: " ?", " !", " .", " ," -> drop the space
    n = len(t)
    out = 1 if n else 0
    for i in range(1, n):
        x = t[i]
        if t[i - 1] == SP and x in b"?!.,":
            out -= 1
        t[out] = x
        out += 1
    # 2: " ' " -> "'"
    n = out
    out = 1 if n else 0
    i = 1
    while i < n:
        x = t[i]
        if x == AP and i + 1 < n and t[i - 1] == SP and t[i + 1] == SP:
            out -= 1
            i += 1
            t[i] = 0
        t[out] = x
        out += 1
        i += 1
    # 3: " 's", " 'm", " 're", " 've" -> drop the space
    n = out
    out = 1 if n else 0
    for i in range(1, n):
        x = t[i]
        if t[i - 1] == SP and x == AP and i + 1 < n:
            x1 = t[i + 1]
            if x1 in b"td":
                pass
            elif x1 in b"sm":
                out -= 1
            elif i + 2 < n:
                x2 = t[i + 2]
                if (x1, x2) in ((0x72, 0x65), (0x76, 0x65)):  # "re", "ve"
                    out -= 1
        t[out] = x
        out += 1
    return bytes(t[:out])


# ----------------------------------------------------------------------------------------------
# byte-level BPE
# ----------------------------------------------------------------------------------------------

class BPETokenizer(Tokenizer):
    """Byte-level BPE (GGUF ``tokenizer.ggml.model = gpt2``)."""

    model_name = "gpt2"
    default_add_bos = False
    default_clean_spaces = True
    # llama.cpp's defaults for gpt2 vocabularies (ids >= n_vocab are dropped)
    default_special = {"bos": 11, "eos": 11, "unk": None}

    def __init__(self, meta: Mapping[str, Any], cache_size: int = 1 << 16) -> None:
        pre_name = meta.get("tokenizer.ggml.pre")
        if pre_name is None or pre_name == "":
            warnings.warn("GGUF has no tokenizer.ggml.pre: using the 'default' pre-tokenizer "
                          "(generation quality may suffer)", stacklevel=3)
            pre_name = "default"
        if not isinstance(pre_name, str) or pre_name not in PRE_TOKENIZERS:
            raise ValueError(f"unsupported tokenizer.ggml.pre: {pre_name!r} "
                             f"(supported: {', '.join(sorted(PRE_TOKENIZERS))})")
        self.pre_name = pre_name
        self.pre = pre = PRE_TOKENIZERS[pre_name]
        super().__init__(meta, pre=pre)
        if len(self._token_to_id) != self.n_vocab:   # the map is needed to tokenize anyway
            self._reject_duplicates()

        merges = meta.get("tokenizer.ggml.merges")
        if not isinstance(merges, (list, tuple)):
            raise ValueError("gpt2 tokenizer needs a tokenizer.ggml.merges array of strings")
        if not set(map(type, merges)) <= {str}:
            for i, m in enumerate(merges):
                if not isinstance(m, str):
                    raise ValueError(f"tokenizer.ggml.merges[{i}] is not a string")
        # "left right" -> rank of its first occurrence. llama.cpp splits a merge at its first
        # space after the first character; the symbols looked up never hold a space (it is
        # byte-encoded as 'Ġ'), so a merge matches exactly when it is f"{left} {right}".
        self._ranks: dict[str, int] = dict(zip(reversed(merges), range(len(merges) - 1, -1, -1)))
        # (compiled regex, whether it sees non-ASCII whitespace as U+000B)
        import regex
        self._splitters = tuple((regex.compile(p), not any(c in p for c in _CATEGORY_MARKERS))
                                for p in pre.regexes)
        self._ignore_merges = pre.ignore_merges
        self._word_ids = functools.lru_cache(maxsize=cache_size)(self._bpe_word)

    # -- pre-tokenization

    def pre_tokenize(self, text: str) -> list[str]:
        """Split plain text into words (before byte encoding) like llama.cpp's
        unicode_regex_split."""
        pieces = [text]
        for rx, ws_to_vt in self._splitters:
            new: list[str] = []
            append = new.append
            for piece in pieces:
                pos = 0
                for m in rx.finditer(piece.translate(_NONASCII_WS_TO_VT) if ws_to_vt else piece):
                    s, e = m.span()
                    if s > pos:
                        append(piece[pos:s])
                    if e > s:
                        append(piece[s:e])
                    pos = e
                if pos < len(piece):
                    append(piece[pos:])
            pieces = new
        return pieces

    def _tokenize_text(self, text: str, out: list[int]) -> None:
        word_ids = self._word_ids
        for word in self.pre_tokenize(text):
            out.extend(word_ids(word))

    # -- BPE on one word

    def _bpe_word(self, word: str) -> tuple[int, ...]:
        enc = word.encode("utf-8", "surrogatepass").decode("latin-1").translate(_BYTE_ENCODE_TABLE)
        vocab = self._token_to_id
        if self._ignore_merges:
            tid = vocab.get(enc)
            if tid is not None:
                return (tid,)
        syms = list(enc)
        n = len(syms)
        if n > 1:
            ranks = self._ranks
            prev = list(range(-1, n - 1))
            nxt = list(range(1, n + 1))
            nxt[-1] = -1
            heap = []
            for i in range(n - 1):
                r = ranks.get(f"{syms[i]} {syms[i + 1]}")
                if r is not None:
                    heap.append((r, i, i + 1, syms[i] + syms[i + 1]))
            heapq.heapify(heap)
            push, pop = heapq.heappush, heapq.heappop
            while heap:
                _, left, right, merged = pop(heap)
                a, b = syms[left], syms[right]
                if not a or not b or a + b != merged:
                    continue  # stale bigram
                syms[left] = merged
                syms[right] = ""
                r_next = nxt[right]
                nxt[left] = r_next
                if r_next >= 0:
                    prev[r_next] = left
                p = prev[left]
                if p >= 0:
                    r = ranks.get(f"{syms[p]} {merged}")
                    if r is not None:
                        push(heap, (r, p, left, syms[p] + merged))
                if r_next >= 0:
                    r = ranks.get(f"{merged} {syms[r_next]}")
                    if r is not None:
                        push(heap, (r, left, r_next, merged + syms[r_next]))
        ids: list[int] = []
        for s in syms:
            if not s:
                continue
            tid = vocab.get(s)
            if tid is not None:
                ids.append(tid)
                continue
            # not in the vocab: llama.cpp looks up each UTF-8 byte of the symbol as a
            # one-byte token string (only ASCII can match) and drops the rest
            for b in s.encode("utf-8"):
                if b < 0x80:
                    t = vocab.get(chr(b))
                    if t is not None:
                        ids.append(t)
        return tuple(ids)

    # -- detokenization of NORMAL tokens: unicode chars back to bytes

    def _normal_token_bytes(self, text: str) -> bytes:
        out = bytearray()
        for ch in text:
            b = _UNICODE_TO_BYTE.get(ch)
            if b is not None:
                out.append(b)
            else:
                # llama.cpp writes an error marker for chars outside the byte map
                utf8 = ch.encode("utf-8", "surrogatepass")
                out += b"[UNK_BYTE_0x" + utf8.hex().encode() + text.encode("utf-8", "surrogatepass") + b"]"
        return bytes(out)


# ----------------------------------------------------------------------------------------------
# SPM (sentencepiece-style BPE over scored pieces)
# ----------------------------------------------------------------------------------------------

_SPACE_ESCAPE = "\u2581"      # '▁', how SPM vocabularies spell a space
_SURROGATE = re.compile("[\ud800-\udfff]")
_SURROGATE_SPLIT = re.compile("([\ud800-\udfff])")
_PB_NORMAL, _PB_UNKNOWN, _PB_BYTE = 1, 2, 6     # sentencepiece ModelProto.SentencePiece.Type


def _pb_varint(n: int) -> bytes:
    if n < 0:
        n &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _pb_field(num: int, value: bytes | int | float) -> bytes:
    """One protobuf field: bytes (length-delimited), int (varint) or float (fixed32)."""
    if isinstance(value, bytes):
        return _pb_varint(num << 3 | 2) + _pb_varint(len(value)) + value
    if isinstance(value, float):
        return _pb_varint(num << 3 | 5) + struct.pack("<f", value)
    return _pb_varint(num << 3) + _pb_varint(int(value))


def _varint_len(x: np.ndarray) -> np.ndarray:
    """Bytes of the protobuf varint of each (non-negative int64) value."""
    n = np.ones(x.shape, np.int64)
    for k in range(1, 10):
        n += x >= (1 << (7 * k))
    return n


def _put_varints(out: np.ndarray, pos: np.ndarray, x: np.ndarray, xlen: np.ndarray) -> None:
    """Write the varint of each ``x`` (``xlen`` bytes) into ``out`` at ``pos``."""
    for k in range(int(xlen.max(initial=0))):
        sel = np.flatnonzero(xlen > k)
        out[pos[sel] + k] = ((x[sel] >> (7 * k)) & 0x7F) | ((xlen[sel] > k + 1) << 7)


def _utf8_concat(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """UTF-8 (surrogatepass) bytes of all texts back to back, and each one's length."""
    n = len(texts)
    joined = "\0".join(texts)
    if joined.count("\0") == n - 1:       # no text holds a NUL: one encode, split at the NULs
        data = np.frombuffer(joined.encode("utf-8", "surrogatepass"), np.uint8)
        nul = data == 0
        bounds = np.concatenate(([-1], np.flatnonzero(nul), [data.size]))
        return data[~nul], np.diff(bounds) - 1
    enc = [t.encode("utf-8", "surrogatepass") for t in texts]
    return np.frombuffer(b"".join(enc), np.uint8), np.fromiter(map(len, enc), np.int64, n)


def _pb_pieces(texts: list[str], scores: np.ndarray, types: np.ndarray) -> bytes:
    """The repeated ``ModelProto.pieces`` field, one ``SentencePiece {1: piece, 2: score,
    3: type}`` per text: what ``_pb_field`` would give piece by piece, built with numpy
    (a 262k-token vocabulary in milliseconds). ``scores`` float32, ``types`` < 128."""
    n = len(texts)
    data, tlen = _utf8_concat(texts)
    tlen_len = _varint_len(tlen)
    inner = 1 + tlen_len + tlen + 5 + 2      # tag+len+text, tag+fixed32 score, tag+type
    inner_len = _varint_len(inner)
    rec = 1 + inner_len + inner
    start = np.zeros(n, np.int64)
    np.cumsum(rec[:-1], out=start[1:])
    total = int(rec.sum())
    out = np.zeros(total, np.uint8)
    out[start] = 1 << 3 | 2                  # ModelProto.pieces, length-delimited
    _put_varints(out, start + 1, inner, inner_len)
    p = start + 1 + inner_len
    out[p] = 1 << 3 | 2                      # SentencePiece.piece
    _put_varints(out, p + 1, tlen, tlen_len)
    t = p + 1 + tlen_len                     # text bytes: [t, e)
    e = t + tlen
    run = np.zeros(total + 1, np.int8)
    run[t] = 1
    run[e] -= 1
    out[np.cumsum(run[:-1], dtype=np.int8).view(np.bool_)] = data
    out[e] = 2 << 3 | 5                      # SentencePiece.score, fixed32
    score_bytes = np.ascontiguousarray(scores, dtype="<f4").view(np.uint8).reshape(n, 4)
    for k in range(4):
        out[e + 1 + k] = score_bytes[:, k]
    out[e + 5] = 3 << 3                      # SentencePiece.type, varint
    out[e + 6] = types
    return out.tobytes()


class SPMTokenizer(Tokenizer):
    """SentencePiece-style vocabulary (GGUF ``tokenizer.ggml.model = llama``: Llama 1/2,
    Mistral v1, Gemma, ...), tokenized like llama.cpp's SPM tokenizer.

    llama.cpp replaces every space by '▁' (and prepends one to a fragment that starts the text
    or follows a special token when ``tokenizer.ggml.add_space_prefix`` is true, the default),
    splits the text into UTF-8 characters and repeatedly merges the adjacent pair whose
    concatenation is a vocabulary token of the highest score (leftmost on ties); characters
    that never became a token are emitted as their ``<0xXX>`` byte tokens.

    The merging runs in the ``sentencepiece`` library, from a model proto built here from the
    GGUF vocabulary: a BPE model with identity normalization (we escape spaces ourselves), the
    GGUF scores, byte fallback, and every token typed NORMAL so that - as in llama.cpp, and
    unlike a stock sentencepiece model - control, unused and user-defined token texts can be
    reached by merges too. BYTE tokens keep their type (sentencepiece wants them for the
    fallback; their text "<0xXX>" is not reachable by merges in real vocabularies) and the
    unknown piece sentencepiece requires is an extra entry past the vocabulary. Lone
    surrogates (not valid UTF-8) cannot merge with anything; they become byte tokens of their
    surrogatepass encoding, as llama.cpp does with the same bytes.
    """

    model_name = "llama"
    default_add_bos = True
    default_clean_spaces = False
    default_special = {"bos": 1, "eos": 2, "unk": 0}

    def __init__(self, meta: Mapping[str, Any]) -> None:
        super().__init__(meta)
        asp = meta.get("tokenizer.ggml.add_space_prefix")
        self.add_space_prefix = True if asp is None else bool(asp)
        n = self.n_vocab
        texts = self._texts
        # byte tokens, and whether the full set exists for sentencepiece's fallback
        self._byte_ids: dict[int, int] = {}
        for i in self._special_candidates:
            t = texts[i]
            if self._attrs[i] & ATTR_BYTE and len(t) == 6 and t.startswith("<0x") and t.endswith(">"):
                b = int(t[3:5], 16)
                if f"<0x{b:02X}>" == t and b not in self._byte_ids:
                    self._byte_ids[b] = i
        byte_fallback = len(self._byte_ids) == 256
        piece_types = np.full(n, _PB_NORMAL, np.uint8)
        if byte_fallback:
            piece_types[list(self._byte_ids.values())] = _PB_BYTE
        # bytes of a character that formed no token: "<0xXX>", else the one-byte token
        for b in range(256):
            if b not in self._byte_ids:
                tid = self._id_of(chr(b)) if b < 0x80 else None
                if tid is not None:
                    self._byte_ids[b] = tid
        self._unk_piece = n          # id sentencepiece reports for a character it cannot place
        if self._scores is None:
            scores = np.zeros(n, np.float32)
        else:
            scores64 = np.asarray(self._scores, dtype=np.float64)
            with np.errstate(over="ignore"):
                scores = scores64.astype(np.float32)
            bad = np.flatnonzero(~np.isfinite(scores))
            if bad.size:
                i = int(bad[0])
                raise ValueError(f"tokenizer.ggml.scores[{i}] = {float(scores64[i])} is not finite"
                                 + ("" if not np.isfinite(scores64[i]) else " as a float32"))
        pieces = _pb_pieces(texts, scores, piece_types)
        unk_text = "<pyrt-unknown>"
        while self._id_of(unk_text) is not None:
            unk_text += "_"
        pieces += _pb_field(1, _pb_field(1, unk_text.encode()) + _pb_field(2, 0.0) + _pb_field(3, _PB_UNKNOWN))
        trainer = (_pb_field(3, 2) + _pb_field(4, n + 1) + _pb_field(35, int(byte_fallback))
                   + _pb_field(40, n) + _pb_field(41, -1) + _pb_field(42, -1) + _pb_field(43, -1))
        normalizer = (_pb_field(1, b"identity") + _pb_field(3, 0) + _pb_field(4, 0) + _pb_field(5, 0))
        proto = pieces + _pb_field(2, trainer) + _pb_field(3, normalizer)
        import sentencepiece
        sp = sentencepiece.SentencePieceProcessor()
        try:
            sp.LoadFromSerializedProto(proto)
        except Exception as e:   # sentencepiece reports bad vocabularies as RuntimeError/OSError
            self._reject_duplicates()   # one reason it refuses them: name the tokens as BPE does
            raise ValueError(f"cannot build the SPM tokenizer from this vocabulary: {e}") from None
        self._sp = sp
        self._encode = sp.EncodeAsIds

    # -- tokenization

    def _tokenize_fragments(self, frags: list[str | int], out: list[int]) -> None:
        prev_special = True          # the text start counts as "after a special token"
        for frag in frags:
            if type(frag) is int:
                out.append(frag)
                prev_special = True
            else:
                if self.add_space_prefix and prev_special:
                    frag = " " + frag   # type: ignore[operator]
                self._tokenize_text(frag, out)  # type: ignore[arg-type]
                prev_special = False

    def _tokenize_text(self, text: str, out: list[int]) -> None:
        text = text.replace(" ", _SPACE_ESCAPE)
        if _SURROGATE.search(text):
            # lone surrogates (not UTF-8): tokenize the valid runs, surrogates become bytes
            for run in _SURROGATE_SPLIT.split(text):
                if _SURROGATE.fullmatch(run):
                    self._emit_bytes(run.encode("utf-8", "surrogatepass"), out)
                elif run:
                    self._tokenize_text(run, out)
            return
        ids = self._encode(text)
        if self._unk_piece in ids:
            # no full set of byte tokens: fall back per character, as llama.cpp does
            pieces = self._sp.EncodeAsPieces(text)
            for tid, piece in zip(ids, pieces):
                if tid == self._unk_piece:
                    self._emit_bytes(piece.encode("utf-8", "surrogatepass"), out)
                else:
                    out.append(tid)
            return
        out.extend(ids)

    def _emit_bytes(self, data: bytes, out: list[int]) -> None:
        for b in data:
            tid = self._byte_ids.get(b)
            if tid is None:
                raise ValueError(f"cannot tokenize byte 0x{b:02X}: the vocabulary has neither "
                                 f"<0x{b:02X}> nor a one-byte token for it")
            out.append(tid)

    # -- detokenization

    def detokenize(self, ids: Iterable[int], special: bool = False) -> str:
        """Token ids -> text; with ``add_space_prefix`` the first token's leading space is
        dropped (llama.cpp's detokenize)."""
        parts = [self.token_to_bytes(i, special) for i in ids]
        if parts and self.add_space_prefix and parts[0][:1] == b" ":
            parts[0] = parts[0][1:]
        return b"".join(parts).decode("utf-8", errors="replace")

    def _normal_token_bytes(self, text: str) -> bytes:
        return text.replace(_SPACE_ESCAPE, " ").encode("utf-8", "surrogatepass")


# ----------------------------------------------------------------------------------------------
# entry point
# ----------------------------------------------------------------------------------------------

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
