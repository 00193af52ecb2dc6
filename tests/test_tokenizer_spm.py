"""SPM tokenizer (tokenizer.ggml.model = llama) against llama.cpp.

- Gemma 3: every string of the llama.cpp reference (tokenize entries with and without special
  parsing, the greedy prompts, the log-prob text) and the detokenized greedy continuations.
- A small hand-made vocabulary (merges by score, byte fallback, control and user-defined tokens,
  the add_space_prefix rule both ways, whitespace runs): expected ids are llama.cpp's own output
  on the same vocabulary written to a GGUF (llama-cpp-python 0.3.36, vocab_only), recorded here.
During development pyrt also agreed with llama.cpp on 30,000 random strings over the Gemma
vocabulary and 4,500 over the small ones (ASCII, multi-byte, emoji, NUL, whitespace runs, special
token texts, both special modes, detokenization).
Runtime: ~4 s (building the Gemma tokenizer: 262k pieces).
"""
from __future__ import annotations

import pytest

from conftest import load_reference, REF
from pyrt.tokenizer import SPMTokenizer, load_tokenizer

GEMMA_REF = "gemma-3-270m-q4_k_m.json"


@pytest.fixture(scope="module")
def gemma_tok(gemma3_path):
    from pyrt.gguf_file import GGUFFile
    g = GGUFFile(gemma3_path)
    try:
        tok = load_tokenizer(g.metadata)
    finally:
        g.close()
    assert isinstance(tok, SPMTokenizer)
    return tok


def test_gemma_reference_strings(gemma_tok):
    ref = load_reference(GEMMA_REF)
    assert len(ref["tokenize"]) > 100
    for e in ref["tokenize"]:
        got = gemma_tok.tokenize(e["text"], add_bos=e["add_bos"], special=e["special"])
        assert got == e["ids"], (e["text"], e["special"])


def test_gemma_prompts_text_and_detokenize(gemma_tok):
    ref = load_reference(GEMMA_REF)
    assert gemma_tok.add_bos and gemma_tok.bos_id == 2 and not gemma_tok.add_space_prefix
    for g in ref["greedy"]:
        assert gemma_tok.tokenize(g["prompt"], special=True) == g["prompt_ids"]
        assert gemma_tok.detokenize(g["ids"]) == g["text"]
    text = (REF / "text_public.txt").read_text(encoding="utf-8")
    ids = ref["logits"]["ids"]
    assert gemma_tok.tokenize(text)[:len(ids)] == ids
    # end of generation: <eos> and <end_of_turn>
    assert {1, 106} <= set(gemma_tok.eog_ids)


# ---- a small vocabulary, llama.cpp's answers ----------------------------------------------------

def small_vocab(add_space_prefix=None) -> dict:
    toks = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    types = [2, 3, 3] + [6] * 256
    scores = [0.0] * len(toks)
    pieces = ["\u2581", "a", "b", "c", "d", "e", "h", "l", "o", "w", "r", "t", "n", "i", "s", ".", ",", "!",
              "\n", "\u00e9", "\u4e2d", "\u2581t", "th", "\u2581th", "he", "\u2581the", "ll", "he", "hell", "hello",
              "\u2581hello", "lo", "wo", "or", "rl", "ld", "wor", "world", "\u2581world", "in", "ing", "\u2581a", "an",
              "\u2581an", "and", "\u2581and", "er", "\u2581w", "\u2581\u2581", "\u2581\u2581\u2581", "ab", "abc", "bc",
              "ca", "cab", "is", "\u2581is", "st", "\u2581s", "es", "te", "tes", "test", "\u2581test", "ne", "ni",
              "nin", "ning", "ee", "eee"]
    seen = set(toks)
    for i, p in enumerate(pieces):
        if p not in seen:
            seen.add(p)
            toks.append(p)
            types.append(1)
            scores.append(-float(i) - (0.5 if len(p) > 2 else 0.0))
    for p, ty in (("<|im_start|>", 4), ("<|im_end|>", 3), ("[SEP]", 4), ("\u2581<mask>", 4)):
        toks.append(p)
        types.append(ty)
        scores.append(0.0)
    meta = {"tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": toks,
            "tokenizer.ggml.scores": scores, "tokenizer.ggml.token_type": types,
            "tokenizer.ggml.bos_token_id": 1, "tokenizer.ggml.eos_token_id": 2,
            "tokenizer.ggml.unknown_token_id": 0}
    if add_space_prefix is not None:
        meta["tokenizer.ggml.add_space_prefix"] = add_space_prefix
    return meta


# llama.cpp, add_space_prefix absent (its default for SPM: true)
LLAMACPP_SPACE_PREFIX = [
    ('hello world', False, [288, 259, 290, 292, 263]),
    ('hello world', True, [288, 259, 290, 292, 263]),
    (' hello world', False, [259, 288, 259, 290, 292, 263]),
    (' hello world', True, [259, 288, 259, 290, 292, 263]),
    ('hello  world', False, [288, 306, 290, 292, 263]),
    ('hello  world', True, [288, 306, 290, 292, 263]),
    ('the test is testing', False, [284, 280, 264, 315, 314, 280, 264, 315, 298]),
    ('the test is testing', True, [284, 280, 264, 315, 314, 280, 264, 315, 298]),
    ('abc cab', False, [299, 310, 259, 312]),
    ('abc cab', True, [299, 310, 259, 312]),
    ('Hello!', False, [259, 75, 264, 285, 267, 276]),
    ('Hello!', True, [259, 75, 264, 285, 267, 276]),
    ('é中x', False, [259, 278, 279, 123]),
    ('é中x', True, [259, 278, 279, 123]),
    ('\n\nhello\n', False, [259, 277, 277, 287, 277]),
    ('\n\nhello\n', True, [259, 277, 277, 287, 277]),
    ('<|im_start|>hello<|im_end|> world', False, [328, 288, 63, 127, 272, 112, 98, 264, 271, 263, 127, 65, 259, 290, 292, 263]),
    ('<|im_start|>hello<|im_end|> world', True, [328, 288, 329, 306, 290, 292, 263]),
    ('a[SEP]b', False, [299, 330, 259, 261]),
    ('a[SEP]b', True, [299, 330, 259, 261]),
    ('[SEP] the', False, [330, 259, 284]),
    ('[SEP] the', True, [330, 259, 284]),
    (' <mask> a', False, [306, 63, 112, 260, 273, 110, 65, 299]),
    (' <mask> a', True, [306, 63, 112, 260, 273, 110, 65, 299]),
    ('eeee', False, [259, 326, 326]),
    ('eeee', True, [259, 326, 326]),
    ('ninning', False, [259, 324, 325]),
    ('ninning', True, [259, 324, 325]),
    ('  ', False, [307]),
    ('  ', True, [307]),
    ('', False, []),
    ('', True, []),
    ('\t', False, [259, 12]),
    ('\t', True, [259, 12]),
    ('a\x00b', False, [299, 3, 261]),
    ('a\x00b', True, [299, 3, 261]),
    ('😀', False, [259, 243, 162, 155, 131]),
    ('😀', True, [259, 243, 162, 155, 131]),
]
# llama.cpp, tokenizer.ggml.add_space_prefix = false
LLAMACPP_NO_SPACE_PREFIX = [
    ('hello world', False, [287, 259, 290, 292, 263]),
    ('hello world', True, [287, 259, 290, 292, 263]),
    (' hello world', False, [288, 259, 290, 292, 263]),
    (' hello world', True, [288, 259, 290, 292, 263]),
    ('hello  world', False, [287, 306, 290, 292, 263]),
    ('hello  world', True, [287, 306, 290, 292, 263]),
    ('the test is testing', False, [281, 264, 280, 264, 315, 314, 280, 264, 315, 298]),
    ('the test is testing', True, [281, 264, 280, 264, 315, 314, 280, 264, 315, 298]),
    ('abc cab', False, [309, 259, 312]),
    ('abc cab', True, [309, 259, 312]),
    ('Hello!', False, [75, 264, 285, 267, 276]),
    ('Hello!', True, [75, 264, 285, 267, 276]),
    ('é中x', False, [278, 279, 123]),
    ('é中x', True, [278, 279, 123]),
    ('\n\nhello\n', False, [277, 277, 287, 277]),
    ('\n\nhello\n', True, [277, 277, 287, 277]),
    ('<|im_start|>hello<|im_end|> world', False, [328, 287, 63, 127, 272, 112, 98, 264, 271, 263, 127, 65, 259, 290, 292, 263]),
    ('<|im_start|>hello<|im_end|> world', True, [328, 287, 329, 259, 290, 292, 263]),
    ('a[SEP]b', False, [260, 330, 261]),
    ('a[SEP]b', True, [260, 330, 261]),
    ('[SEP] the', False, [330, 284]),
    ('[SEP] the', True, [330, 284]),
    (' <mask> a', False, [259, 63, 112, 260, 273, 110, 65, 299]),
    (' <mask> a', True, [259, 63, 112, 260, 273, 110, 65, 299]),
    ('eeee', False, [326, 326]),
    ('eeee', True, [326, 326]),
    ('ninning', False, [324, 325]),
    ('ninning', True, [324, 325]),
    ('  ', False, [306]),
    ('  ', True, [306]),
    ('', False, []),
    ('', True, []),
    ('\t', False, [12]),
    ('\t', True, [12]),
    ('a\x00b', False, [260, 3, 261]),
    ('a\x00b', True, [260, 3, 261]),
    ('😀', False, [243, 162, 155, 131]),
    ('😀', True, [243, 162, 155, 131]),
]


@pytest.mark.parametrize("asp,cases", [(None, LLAMACPP_SPACE_PREFIX), (False, LLAMACPP_NO_SPACE_PREFIX)],
                         ids=["space_prefix", "no_space_prefix"])
def test_small_vocab_matches_llamacpp(asp, cases):
    tok = load_tokenizer(small_vocab(asp))
    assert isinstance(tok, SPMTokenizer) and tok.add_space_prefix == (asp is None)
    for text, special, want in cases:
        assert tok.tokenize(text, add_bos=False, special=special) == want, (text, special)
    assert tok.tokenize("hello") == [1] + tok.tokenize("hello", add_bos=False)   # add_bos default


@pytest.mark.parametrize("asp,cases", [
    (None, [[[259, 288, 259, 290, 292, 263], ' hello world'], [[284, 280, 264, 315], 'the test'], [[1, 288], ' hello'], [[3, 300], '\x00an']]),
    (False, [[[288, 259, 290, 292, 263], ' hello world'], [[281, 264, 280, 264, 315], 'the test'], [[1, 287], 'hello'], [[3, 300], '\x00an']]),
], ids=["space_prefix", "no_space_prefix"])
def test_small_vocab_detokenize_like_llamacpp(asp, cases):
    """llama_detokenize: with add_space_prefix the first token's leading space goes."""
    tok = load_tokenizer(small_vocab(asp))
    for ids, want in cases:
        assert tok.detokenize(ids) == want


def test_bytes_without_byte_tokens():
    """No <0xXX> tokens: a character that formed no token falls back to the token of each of its
    bytes as a one-character string (llama.cpp's byte_to_token), else it is an error."""
    meta = small_vocab(False)
    keep = [i for i, t in enumerate(meta["tokenizer.ggml.tokens"]) if not t.startswith("<0x")]
    for k in ("tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type"):
        meta[k] = [meta[k][i] for i in keep]
    tok = load_tokenizer(meta)
    assert tok.tokenize("a!", add_bos=False) == [tok.token_to_id("a"), tok.token_to_id("!")]
    with pytest.raises(ValueError, match="0x78"):           # 'x': no token at all
        tok.tokenize("x", add_bos=False)


def test_lone_surrogates_become_bytes():
    tok = load_tokenizer(small_vocab(False))
    ids = tok.tokenize("ab\ud800c", add_bos=False)
    b = lambda v: tok.token_to_id(f"<0x{v:02X}>")   # noqa: E731
    assert ids == tok.tokenize("ab", add_bos=False) + [b(0xED), b(0xA0), b(0x80)] + tok.tokenize("c", add_bos=False)


def test_bad_vocabularies_are_clear_errors():
    meta = small_vocab()
    meta["tokenizer.ggml.scores"] = meta["tokenizer.ggml.scores"][:-1]
    with pytest.raises(ValueError, match="scores"):
        load_tokenizer(meta)
    meta = small_vocab()
    meta["tokenizer.ggml.scores"] = [float("nan")] * len(meta["tokenizer.ggml.tokens"])
    with pytest.raises(ValueError, match="not finite"):
        load_tokenizer(meta)
    with pytest.raises(TypeError):
        load_tokenizer(small_vocab()).tokenize(b"bytes")
