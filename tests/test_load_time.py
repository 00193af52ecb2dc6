"""The load-time shortcuts give exactly what the plain, one-item-at-a-time code gives.

- the SPM model proto pieces, encoded with numpy, byte for byte against ``_pb_field`` per piece
  (multi-byte varints, non-ASCII, lone surrogates, NUL inside a token, odd scores);
- GGUF string arrays decoded in one pass (and the per-string fallback: invalid UTF-8, NUL);
- BPE merge ranks keyed by the merge string: first occurrence wins, malformed merges never apply;
- the lazily built text -> id map, and duplicate token texts still rejected by both tokenizers.
No timing assertions: timings are in the load-time report of the commit that added this file.
"""
from __future__ import annotations

import struct

import numpy as np
import pytest

from pyrt.gguf_file import GGUFFile
from pyrt.tokenizer import SPMTokenizer, load_tokenizer
from pyrt.tokenizer.spm_proto import _PB_BYTE, _PB_NORMAL, _pb_field, _pb_pieces
from test_tokenizer import pieces, tiny
from test_tokenizer_spm import small_vocab


# ---------------------------------------------------------------- SPM proto pieces

def _pieces_reference(texts, scores, types) -> bytes:
    return b"".join(_pb_field(1, _pb_field(1, t.encode("utf-8", "surrogatepass"))
                              + _pb_field(2, float(s)) + _pb_field(3, int(ty)))
                    for t, s, ty in zip(texts, scores, types))


@pytest.mark.parametrize("texts", [
    ["a"],
    ["<unk>", "\u2581the", "\u00e9t\u00e9", "\u4e2d\u6587", "\U0001f642", "x" * 127, "y" * 128],
    ["z" * 16383, "w" * 16384, "\u00e9" * 70000, "q"],       # 2- and 3-byte varints
    ["lone \udc80 surrogate", "\ud800", "ok"],
    ["nul\x00inside", "\x00", "b"],                          # the per-text encode fallback
])
def test_pb_pieces_match_per_piece_encoding(texts):
    rng = np.random.default_rng(len(texts))
    scores = (rng.standard_normal(len(texts)) * 1e6).astype(np.float32)
    scores[0] = -0.0
    types = np.where(np.arange(len(texts)) % 2, _PB_BYTE, _PB_NORMAL).astype(np.uint8)
    assert _pb_pieces(texts, scores, types) == _pieces_reference(texts, scores.tolist(), types)


def test_spm_scores_must_be_finite_float32():
    meta = small_vocab()
    meta["tokenizer.ggml.scores"] = [0.0] * 5 + [1e39] + [0.0] * (len(meta["tokenizer.ggml.tokens"]) - 6)
    with pytest.raises(ValueError, match=r"scores\[5\] .* not finite as a float32"):
        load_tokenizer(meta)


# ---------------------------------------------------------------- GGUF string arrays

def _gguf_with_strings(items: list[bytes]) -> bytes:
    def s(b: bytes) -> bytes:
        return struct.pack("<Q", len(b)) + b
    data = b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + s(b"k") + struct.pack("<IIQ", 9, 8, len(items))
    data += b"".join(s(x) for x in items)
    return data + b"\0" * (-len(data) % 32)


@pytest.mark.parametrize("items", [
    [], [b""], [b"a", b"", b"\xc3\xa9", b"\xf0\x9f\x99\x82"],
    [b"a", b"b\x00c", b""],                    # NUL inside: per-string path
    [b"\xff\xfe", b"ok", b"\xc3"],             # invalid UTF-8: per-string path, surrogateescape
])
def test_gguf_string_array_decoding(items):
    want = [x.decode("utf-8", "surrogateescape") for x in items]
    g = GGUFFile(_gguf_with_strings(items))
    try:
        assert g.metadata["k"] == want
    finally:
        g.close()


# ---------------------------------------------------------------- BPE ranks

def test_bpe_duplicate_merge_keeps_first_rank():
    # "b c" appears again after "a b": its first rank (0) still beats "a b"
    t = tiny(merges=["b c", "a b", "b c"])
    assert pieces(t, t.tokenize("abc")) == ["a", "bc"]


def test_bpe_malformed_merges_never_apply():
    # llama.cpp splits at the first space after the first character: "ab c" is (ab, c), which
    # can apply; " ab" and "ab" (no usable space) and "a  b" (pair (a, " b")) never do.
    base = tiny(merges=["a b"])
    t = load_tokenizer({**_meta_of(base), "tokenizer.ggml.merges": [" ab", "ab", "a  b", "a b", "ab c"]})
    assert pieces(t, t.tokenize("abc")) == ["abc"]
    t = load_tokenizer({**_meta_of(base), "tokenizer.ggml.merges": [" ab", "ab", "a  b"]})
    assert pieces(t, t.tokenize("ab")) == ["a", "b"]


def _meta_of(t) -> dict:
    return {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": t.pre_name,
            "tokenizer.ggml.tokens": list(t._texts) + ["abc"],
            "tokenizer.ggml.bos_token_id": 0, "tokenizer.ggml.eos_token_id": 0}


# ---------------------------------------------------------------- text -> id map, duplicates

def test_token_map_is_lazy_and_complete():
    t = load_tokenizer(small_vocab())
    assert isinstance(t, SPMTokenizer)
    assert "_token_to_id" not in vars(t)           # not built while loading
    assert t.token_to_id("</s>") == 2              # a text looked up while loading
    assert "_token_to_id" not in vars(t)
    assert t.token_to_id("hello") == t._texts.index("hello")
    assert "_token_to_id" in vars(t)
    assert all(t.token_to_id(x) == i for i, x in enumerate(t._texts))
    assert t.token_to_id("no such token") is None


@pytest.mark.parametrize("kind, dup, orig", [("spm", 262, 261), ("spm", 200, 100), ("bpe", 257, 200)])
def test_duplicate_tokens_rejected(kind, dup, orig):
    meta = small_vocab() if kind == "spm" else _meta_of(tiny(merges=["a b"]))
    toks = list(meta["tokenizer.ggml.tokens"])
    toks[dup] = toks[orig]
    with pytest.raises(ValueError, match=rf"tokenizer.ggml.tokens\[{dup}\] = .* duplicates "
                                         rf"tokenizer.ggml.tokens\[{orig}\]"):
        load_tokenizer({**meta, "tokenizer.ggml.tokens": toks})


def test_chat_lookups_need_no_full_map():
    from pyrt.chat import _DETECT, END_OF_TURN_TEXTS
    from pyrt.tokenizer.base import _KNOWN_TEXTS
    assert {t for markers, _ in _DETECT for t in markers} <= _KNOWN_TEXTS
    assert set(END_OF_TURN_TEXTS) <= _KNOWN_TEXTS
