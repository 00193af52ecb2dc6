"""Pre-tokenizers for byte-level BPE: the regex table keyed by ``tokenizer.ggml.pre``.

``PRE_TOKENIZERS`` maps each ``tokenizer.ggml.pre`` value llama.cpp knows to a ``PreTokenizer``:
the list of regexes that split text into words before BPE, plus the vocabulary flags llama.cpp
sets with that family. Data only; ``bpe.BPETokenizer.pre_tokenize`` applies it.
"""
from __future__ import annotations

from dataclasses import dataclass

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
