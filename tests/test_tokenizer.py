"""Tokenizer parity with llama.cpp (tests/data/reference, made by llama.cpp on SmolLM2-135M),
plus the rules that the real model does not exercise, on small synthetic vocabularies."""
from __future__ import annotations

import codecs
import json
import time
from pathlib import Path

import pytest

from pyrt.tokenizer import PRE_TOKENIZERS, BPETokenizer, load_tokenizer

REF_DIR = Path(__file__).parent / "data" / "reference"
REF = json.loads((REF_DIR / "smollm2-135m-q4_1.json").read_text(encoding="utf-8"))


def read_metadata(path: Path) -> dict:
    try:
        from pyrt.gguf_file import GGUFFile
    except ImportError:  # loader not there yet: same dict through the gguf package
        import gguf
        reader = gguf.GGUFReader(str(path))
        return {k: f.contents() for k, f in reader.fields.items() if not k.startswith("GGUF.")}
    return dict(GGUFFile(path).metadata)


@pytest.fixture(scope="module")
def model_path(smollm2_path) -> Path:
    """The model from pyrt's cache (PYRT_CACHE_DIR honoured), fetched like every other test's;
    a failed fetch fails the tests that need it, loudly, instead of skipping them."""
    return Path(smollm2_path)


@pytest.fixture(scope="module")
def meta(model_path) -> dict:
    return read_metadata(model_path)


@pytest.fixture(scope="module")
def tok(meta) -> BPETokenizer:
    t = load_tokenizer(meta)
    assert isinstance(t, BPETokenizer)
    return t


# ---------------------------------------------------------------- llama.cpp reference parity

@pytest.mark.parametrize(
    "entry", REF["tokenize"],
    ids=[f"{i}-{'special' if e['special'] else 'plain'}" for i, e in enumerate(REF["tokenize"])])
def test_reference_tokenize(tok, entry):
    ids = tok.tokenize(entry["text"], add_bos=entry["add_bos"], special=entry["special"])
    assert ids == entry["ids"], repr(entry["text"])


def test_reference_covers_both_modes():
    # the special-token strings tokenize differently in the two modes: the reference
    # really tests special parsing
    by_text: dict[str, dict[bool, list[int]]] = {}
    for e in REF["tokenize"]:
        by_text.setdefault(e["text"], {})[e["special"]] = e["ids"]
    assert any(v[True] != v[False] for v in by_text.values() if len(v) == 2)


@pytest.mark.parametrize("g", REF["greedy"], ids=[f"greedy{i}" for i in range(len(REF["greedy"]))])
def test_reference_prompt_ids(tok, g):
    assert tok.tokenize(g["prompt"], special=True) == g["prompt_ids"]


def test_reference_text_logits_ids(tok):
    text = (REF_DIR / "text_public.txt").read_text(encoding="utf-8")
    ids = tok.tokenize(text)  # model's BOS rule (SmolLM2: none), no special parsing
    assert len(ids) > len(REF["logits"]["ids"]) == 512
    assert ids[:512] == REF["logits"]["ids"]
    assert tok.detokenize(ids) == text


@pytest.mark.parametrize("g", REF["greedy"], ids=[f"greedy{i}" for i in range(len(REF["greedy"]))])
def test_reference_detokenize(tok, g):
    assert tok.detokenize(g["ids"]) == g["text"]


def test_model_flags(tok):
    assert REF["add_bos_default"] is False and tok.add_bos is False and tok.add_eos is False
    assert tok.n_vocab == REF["n_vocab"] == 49152
    assert (tok.bos_id, tok.eos_id) == (1, 2)
    assert tok.pre_name == "smollm" and tok.clean_spaces is False


# ---------------------------------------------------------------- round trips, pieces, streaming

def test_roundtrip_plain_strings(tok):
    texts = sorted({e["text"] for e in REF["tokenize"]})
    for s in texts:
        assert tok.detokenize(tok.tokenize(s)) == s, repr(s)


def test_special_tokens_render(tok):
    s = "<|im_start|>user\nhi<|im_end|>"
    ids = tok.tokenize(s, special=True)
    assert tok.detokenize(ids, special=True) == s
    assert tok.detokenize(ids) == "user\nhi"  # control tokens are hidden by default
    assert tok.token_to_piece(1) == "<|im_start|>"
    assert tok.token_to_bytes(1) == b"" and tok.token_to_bytes(1, special=True) == b"<|im_start|>"
    assert tok.token_to_piece(28120) == "hello" and tok.token_to_piece(905) == "Ġworld"
    # without special parsing the same text is ordinary characters
    assert tok.detokenize(tok.tokenize(s)) == s


def test_add_bos_override(tok):
    assert tok.tokenize("hi", add_bos=True) == [1] + tok.tokenize("hi")
    assert tok.tokenize("", add_bos=True) == [1]
    assert tok.tokenize("") == []


def test_token_bytes_stream_emoji(tok):
    text = "👨‍👩‍👧‍👦 🦙 family ✨"
    ids = tok.tokenize(text)
    chunks = [tok.token_to_bytes(i) for i in ids]
    assert b"".join(chunks) == text.encode("utf-8")
    partial = 0
    for c in chunks:
        try:
            c.decode("utf-8")
        except UnicodeDecodeError:
            partial += 1
    assert partial > 0, "expected tokens that split a UTF-8 sequence"
    dec = codecs.getincrementaldecoder("utf-8")()
    out = "".join(dec.decode(c) for c in chunks) + dec.decode(b"", final=True)
    assert out == text


def test_detokenize_invalid_utf8_is_replaced(tok):
    ids = tok.tokenize("🦙")
    assert len(ids) > 1
    assert tok.detokenize(ids[:1]) == "\ufffd"


def test_eog(tok, meta):
    im_end = meta["tokenizer.ggml.tokens"].index("<|im_end|>")
    endoftext = meta["tokenizer.ggml.tokens"].index("<|endoftext|>")
    assert {2, im_end, endoftext} <= tok.eog_ids
    assert tok.is_eog(2) and tok.is_eog(im_end)
    assert not tok.is_eog(1) and not tok.is_eog(905)
    assert tok.eot_id == im_end


def test_speed_smoke(meta):
    # no timing assertion (shared CI machines); prints cold (empty word cache) and warm times
    text = (REF_DIR / "text_public.txt").read_text(encoding="utf-8")
    t = load_tokenizer(meta)
    t0 = time.perf_counter()
    first = t.tokenize(text)
    t1 = time.perf_counter()
    assert t.tokenize(text) == first
    t2 = time.perf_counter()
    print(f"\ntokenize {len(text.encode())} bytes -> {len(first)} tokens: "
          f"cold {1e3 * (t1 - t0):.1f} ms, warm {1e3 * (t2 - t1):.1f} ms")


# ---------------------------------------------------------------- errors

def test_errors(meta):
    with pytest.raises(ValueError, match="sentencepiece-ish"):
        load_tokenizer({**meta, "tokenizer.ggml.model": "sentencepiece-ish"})
    with pytest.raises(ValueError, match="no-such-pre"):
        load_tokenizer({**meta, "tokenizer.ggml.pre": "no-such-pre"})
    with pytest.raises(ValueError, match="token_type"):
        load_tokenizer({**meta, "tokenizer.ggml.token_type": meta["tokenizer.ggml.token_type"][:-1]})
    with pytest.raises(ValueError, match="bos_token_id"):
        load_tokenizer({**meta, "tokenizer.ggml.bos_token_id": 49152})
    with pytest.raises(ValueError, match="eos_token_id"):
        load_tokenizer({**meta, "tokenizer.ggml.eos_token_id": -1})
    with pytest.raises(ValueError, match="merges"):
        load_tokenizer({k: v for k, v in meta.items() if k != "tokenizer.ggml.merges"})
    with pytest.raises(ValueError, match="tokenizer.ggml.model"):
        load_tokenizer({k: v for k, v in meta.items() if k != "tokenizer.ggml.model"})
    dup = list(meta["tokenizer.ggml.tokens"])
    dup[100] = dup[101]
    with pytest.raises(ValueError, match="duplicate"):
        load_tokenizer({**meta, "tokenizer.ggml.tokens": dup})


def test_missing_pre_warns_and_uses_default(meta):
    m = {k: v for k, v in meta.items() if k != "tokenizer.ggml.pre"}
    with pytest.warns(UserWarning, match="tokenizer.ggml.pre"):
        t = load_tokenizer(m)
    assert t.pre_name == "default"


# ---------------------------------------------------------------- synthetic vocabularies

def _byte_vocab() -> list[str]:
    from pyrt.tokenizer.bpe import _BYTE_TO_UNICODE
    return list(_BYTE_TO_UNICODE)


def tiny(pre="gpt-2", merges=(), extra=(), types=None, **kw):
    """A byte-level vocab: the 256 byte symbols, then the merge results, then `extra`."""
    tokens = _byte_vocab()
    for m in merges:
        a, b = m.split(" ")
        if a + b not in tokens:
            tokens.append(a + b)
    ttypes = [1] * len(tokens)
    for text, ttype in extra:
        tokens.append(text)
        ttypes.append(ttype)
    meta = {
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": pre,
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.token_type": types or ttypes,
        "tokenizer.ggml.merges": list(merges),
        "tokenizer.ggml.bos_token_id": 0,
        "tokenizer.ggml.eos_token_id": 0,
        **kw,
    }
    return load_tokenizer(meta)


def pieces(t, ids):
    return [t.token_to_piece(i) for i in ids]


def test_bpe_rank_order_and_ties():
    # "aaa": (a,a) applies to the leftmost pair first -> "aa" + "a"
    t = tiny(merges=["a a"])
    assert pieces(t, t.tokenize("aaa")) == ["aa", "a"]
    # lower rank wins regardless of position: "abc" with b c before a b
    t = tiny(merges=["b c", "a b"])
    assert pieces(t, t.tokenize("abc")) == ["a", "bc"]
    t = tiny(merges=["a b", "b c"])
    assert pieces(t, t.tokenize("abc")) == ["ab", "c"]
    # merges only inside a pre-token: " a" is a word boundary for gpt-2
    t = tiny(merges=["Ġ a", "a a"])
    assert pieces(t, t.tokenize("a a")) == ["a", "Ġa"]


def test_ignore_merges():
    # llama3-style: a pre-token that is in the vocab is one token, even without a merge path
    extra = [("hello", 1)]
    t = tiny(pre="llama-bpe", extra=extra)
    assert pieces(t, t.tokenize("hello", add_bos=False)) == ["hello"]
    assert t.tokenize("hello") == [t.bos_id, t.token_to_id("hello")]
    t = tiny(pre="gpt-2", extra=extra)
    assert pieces(t, t.tokenize("hello")) == list("hello")
    assert tiny(pre="llama-bpe").add_bos is True  # llama3 default when the GGUF does not say
    assert tiny(pre="llama-bpe", **{"tokenizer.ggml.add_bos_token": False}).add_bos is False


def test_user_defined_vs_control_partition():
    extra = [("<ctl>", 3), ("<usr>", 4)]
    t = tiny(extra=extra)
    ctl, usr = t.token_to_id("<ctl>"), t.token_to_id("<usr>")
    plain = t.tokenize("a<ctl>b<usr>c")
    assert usr in plain and ctl not in plain  # user-defined tokens are always split out
    special = t.tokenize("a<ctl>b<usr>c", special=True)
    assert special == [t.token_to_id("a"), ctl, t.token_to_id("b"), usr, t.token_to_id("c")]
    # user-defined renders always, control only with special=True
    assert t.detokenize(special) == "ab<usr>c"
    assert t.detokenize(special, special=True) == "a<ctl>b<usr>c"


def test_longest_special_token_first():
    t = tiny(extra=[("<a>", 3), ("<a><b>", 3), ("<b>", 3)])
    ids = t.tokenize("<a><b><b><a>", special=True)
    assert pieces(t, ids) == ["<a><b>", "<b>", "<a>"]


def test_phi3_rstrip_special():
    # llama.cpp marks special tokens of phi-3 models RSTRIP: spaces after them are eaten
    extra = [("<|user|>", 3), ("<|endoftext|>", 3)]
    t = tiny(extra=extra, **{"general.name": "Phi-3 mini"})
    ids = t.tokenize("<|user|>  \n x<|endoftext|> y", special=True)
    assert pieces(t, ids) == ["<|user|>", "x", "<|endoftext|>", "Ġ", "y"]


def test_clean_spaces_detokenize():
    t = tiny(pre="gpt-2")
    assert t.clean_spaces
    for raw, clean in [("Hello , world .", "Hello, world."), ("it 's", "it's"), ("I 'm", "I'm"),
                       ("we 're", "we're"), ("don 't", "don 't"), ("a ' b", "a'b"), ("x ?!", "x?!")]:
        assert t.detokenize(t.tokenize(raw)) == clean, raw
    t = tiny(pre="smollm")
    assert t.detokenize(t.tokenize("Hello , world .")) == "Hello , world ."


def test_eog_autodetect_and_fim():
    extra = [("<|im_end|>", 1), ("<|endoftext|>", 3), ("<|fim_pad|>", 3), ("<|file_sep|>", 3)]
    t = tiny(extra=extra)
    ids = {x: t.token_to_id(x) for x, _ in extra}
    assert set(ids.values()) <= t.eog_ids
    assert t.eot_id == ids["<|im_end|>"]
    # a NORMAL token recognised as EOG becomes CONTROL (hidden when detokenizing)
    assert t.detokenize([ids["<|im_end|>"]]) == ""


def test_unknown_types_render_empty():
    t = tiny(extra=[("<unused0>", 5), ("<undef>", 0)])
    assert t.detokenize([t.token_to_id("<unused0>"), t.token_to_id("<undef>")], special=True) == ""


def test_pre_tokenizer_table_compiles():
    import regex
    for name, p in PRE_TOKENIZERS.items():
        for rx in p.regexes:
            regex.compile(rx)
        assert p.regexes, name


@pytest.mark.parametrize("pre,text,expected", [
    # gpt-2: letters/numbers/other runs with one optional leading space; \s+(?!\S)
    ("gpt-2", "Hello  world's 123abc!!", ["Hello", " ", " world", "'s", " 123", "abc", "!!"]),
    # smollm/starcoder: every digit is its own piece first
    ("smollm", "x 2024 y", ["x", " ", "2", "0", "2", "4", " y"]),
    # llama3: numbers in groups of three, case-insensitive contractions, newline runs
    ("llama-bpe", "I'M 12345\n\n  ok", ["I", "'M", " ", "123", "45", "\n\n", " ", " ok"]),
    # qwen2: single digits
    ("qwen2", "a 123", ["a", " ", "1", "2", "3"]),
])
def test_pre_tokenize_splits(pre, text, expected):
    t = tiny(pre=pre)
    assert t.pre_tokenize(text) == expected


# ---------------------------------------------------------------- other pre-tokenizers vs llama.cpp
# The SmolLM2 vocabulary and merges with tokenizer.ggml.pre replaced, tokenized (no BOS, no special
# parsing) by llama.cpp (the version vendored in llama-cpp-python 0.3.36) through llama_tokenize on
# vocab-only GGUF copies. Different pre-tokenizers split the same text differently, and so give
# different ids from the same merges.

LLAMA_CPP_STRINGS = ["I'M 12345\n\n  ok don'T", "SiKC世(@ {국're \u2028", "Hello , world . it 's", '  x\u3000y\u2028z\xa0 ', 'ÀÉÎ àéî 12,345.67$', "f(x)=>{ret 'a'}\r\n\tIMGIMGBZ<sentinel:3>", '\u3000\u3000。 1\u2028']
LLAMA_CPP_IDS = {
    'gpt-2': [[57, 23, 61, 216, 33, 34, 35, 36, 37, 8866, 10907, 1326, 23, 68], [32139, 59, 51, 7906, 240, 24, 48, 1662, 181, 130, 251, 2316, 459, 118], [19556, 3297, 905, 1673, 357, 637, 99], [216, 1792, 12109, 218, 105, 321, 118, 106, 15442, 216], [142, 218, 39614, 142, 232, 25782, 2756, 30736, 216, 33, 34, 28, 35, 36, 37, 30, 38, 39, 20], [86, 24, 104, 36637, 46, 107, 3274, 637, 81, 16124, 2738, 197, 5974, 55, 5974, 14201, 74, 44, 14812, 25092, 42, 35, 46], [12109, 218, 12109, 218, 19076, 216, 33, 321, 118]],
    'llama-bpe': [[57, 23, 61, 216, 33, 34, 35, 36, 37, 1116, 216, 10907, 1326, 23, 68], [32139, 59, 51, 7906, 240, 24, 48, 1662, 181, 130, 251, 2316, 459, 118], [19556, 3297, 905, 1673, 357, 637, 99], [216, 1792, 12109, 218, 105, 321, 118, 106, 15442, 216], [142, 218, 39614, 142, 232, 25782, 2756, 30736, 216, 33, 34, 28, 35, 36, 37, 30, 38, 39, 20], [86, 24, 104, 36637, 46, 107, 3274, 637, 81, 16124, 2738, 197, 5974, 55, 5974, 14201, 74, 44, 14812, 25092, 42, 35, 46], [12109, 218, 12109, 218, 19076, 216, 33, 321, 118]],
    'qwen2': [[57, 23, 61, 216, 33, 34, 35, 36, 37, 1116, 216, 10907, 1326, 23, 68], [32139, 59, 51, 7906, 240, 24, 48, 1662, 181, 130, 251, 2316, 459, 118], [19556, 3297, 905, 1673, 357, 637, 99], [216, 1792, 12109, 218, 105, 321, 118, 106, 15442, 216], [142, 218, 39614, 142, 232, 25782, 2756, 30736, 216, 33, 34, 28, 35, 36, 37, 30, 38, 39, 20], [86, 24, 104, 36637, 46, 107, 3274, 637, 81, 16124, 2738, 197, 5974, 55, 5974, 14201, 74, 44, 14812, 25092, 42, 35, 46], [12109, 218, 12109, 218, 19076, 216, 33, 321, 118]],
    'qwen35': [[57, 23, 61, 216, 33, 34, 35, 36, 37, 1116, 216, 10907, 1326, 23, 68], [32139, 59, 51, 7906, 240, 24, 48, 1662, 181, 130, 251, 2316, 459, 118], [19556, 3297, 905, 1673, 357, 637, 99], [216, 1792, 12109, 218, 105, 321, 118, 106, 15442, 216], [142, 218, 39614, 142, 232, 25782, 2756, 30736, 216, 33, 34, 28, 35, 36, 37, 30, 38, 39, 20], [86, 24, 104, 36637, 46, 107, 3274, 637, 81, 16124, 2738, 197, 5974, 55, 5974, 14201, 74, 44, 14812, 25092, 42, 35, 46], [12109, 218, 12109, 218, 19076, 216, 33, 321, 118]],
    'deepseek-coder': [[57, 23, 61, 216, 33, 34, 35, 36, 37, 198, 198, 216, 10907, 1326, 23, 68], [32139, 59, 51, 7906, 240, 24, 48, 1662, 181, 130, 251, 23, 257, 459, 118], [19556, 3297, 905, 1673, 357, 637, 99], [216, 1792, 12109, 218, 105, 321, 118, 106, 15442, 216], [142, 218, 39614, 142, 232, 25782, 2756, 30736, 216, 33, 34, 28, 35, 36, 37, 30, 38, 39, 20], [86, 24, 104, 25, 45, 46, 107, 3274, 637, 81, 16124, 201, 198, 197, 5974, 55, 5974, 14201, 74, 44, 14812, 25092, 42, 35, 46], [12109, 218, 12109, 218, 19076, 216, 33, 321, 118]],
    'deepseek-llm': [[57, 23, 61, 216, 33, 34, 35, 36, 37, 198, 198, 216, 10907, 1326, 23, 68], [32139, 59, 51, 7906, 240, 24, 48, 1662, 181, 130, 251, 23, 257, 459, 118], [19556, 3297, 905, 1673, 357, 637, 99], [216, 1792, 12109, 218, 105, 321, 118, 106, 15442, 216], [142, 218, 39614, 142, 232, 25782, 2756, 30736, 216, 33, 34, 28, 35, 36, 37, 30, 38, 39, 20], [86, 24, 104, 36637, 46, 107, 3274, 637, 81, 16124, 201, 198, 197, 5974, 55, 5974, 14201, 74, 44, 14812, 25092, 42, 35, 46], [12109, 218, 12109, 218, 19076, 216, 33, 321, 118]],
    'deepseek-v3': [[57, 23, 61, 216, 33, 34, 35, 36, 37, 1116, 216, 10907, 1326, 23, 68], [32139, 59, 51, 7906, 240, 24, 48, 1662, 181, 130, 251, 2316, 459, 118], [19556, 3297, 905, 1673, 357, 637, 99], [216, 1792, 12109, 218, 105, 321, 118, 106, 15442, 216], [142, 218, 39614, 142, 232, 25782, 2756, 30736, 216, 33, 34, 28, 35, 36, 37, 30, 38, 39, 20], [86, 24, 104, 36637, 46, 107, 3274, 637, 81, 16124, 2738, 197, 5974, 55, 5974, 14201, 74, 44, 14812, 25092, 42, 35, 46], [12109, 218, 12109, 218, 19076, 216, 33, 321, 118]],
    'falcon': [[57, 23, 61, 216, 33, 34, 35, 36, 37, 8866, 10907, 1326, 23, 68], [32139, 59, 51, 7906, 240, 24, 48, 216, 107, 181, 130, 251, 23, 257, 459, 118], [19556, 216, 28, 905, 216, 30, 357, 216, 23, 99], [216, 1792, 12109, 218, 105, 321, 118, 106, 15442, 216], [142, 218, 39614, 142, 232, 25782, 2756, 30736, 216, 33, 34, 28, 35, 36, 37, 30, 38, 39, 20], [86, 24, 104, 36637, 46, 107, 3274, 216, 23, 81, 16124, 2738, 197, 5974, 55, 5974, 14201, 74, 44, 14812, 25092, 42, 35, 46], [12109, 218, 12109, 218, 19076, 216, 33, 321, 118]],
    'tekken': [[57, 23, 61, 216, 33, 34, 35, 36, 37, 1116, 216, 10907, 1326, 23, 68], [32139, 59, 51, 7906, 240, 24, 48, 1662, 181, 130, 251, 2316, 459, 118], [19556, 3297, 905, 1673, 357, 637, 99], [216, 1792, 12109, 218, 105, 321, 118, 106, 15442, 216], [142, 218, 39614, 142, 232, 25782, 2756, 30736, 216, 33, 34, 28, 35, 36, 37, 30, 38, 39, 20], [86, 24, 104, 36637, 46, 107, 3274, 637, 81, 16124, 2738, 197, 5974, 55, 5974, 14201, 74, 44, 14812, 25092, 42, 35, 46], [12109, 218, 12109, 218, 19076, 216, 33, 321, 118]],
    'gpt-4o': [[57, 23, 61, 216, 33, 34, 35, 36, 37, 1116, 216, 10907, 1326, 23, 68], [32139, 59, 51, 7906, 240, 24, 48, 1662, 181, 130, 251, 2316, 459, 118], [19556, 3297, 905, 1673, 357, 637, 99], [216, 1792, 12109, 218, 105, 321, 118, 106, 15442, 216], [142, 218, 39614, 142, 232, 25782, 2756, 30736, 216, 33, 34, 28, 35, 36, 37, 30, 38, 39, 20], [86, 24, 104, 36637, 46, 107, 3274, 637, 81, 16124, 2738, 197, 5974, 55, 5974, 14201, 74, 44, 14812, 25092, 42, 35, 46], [12109, 218, 12109, 218, 19076, 216, 33, 321, 118]],
    'default': [[57, 23, 61, 216, 33, 34, 35, 36, 37, 8866, 10907, 1326, 23, 68], [32139, 59, 51, 7906, 240, 24, 48, 216, 107, 181, 130, 251, 23, 257, 459, 118], [19556, 216, 28, 905, 216, 30, 357, 216, 23, 99], [216, 1792, 12109, 218, 105, 321, 118, 106, 15442, 216], [142, 218, 39614, 142, 232, 25782, 2756, 30736, 216, 33, 34, 28, 35, 36, 37, 30, 38, 39, 20], [86, 24, 104, 36637, 46, 107, 3274, 216, 23, 81, 16124, 2738, 197, 5974, 55, 5974, 14201, 74, 44, 14812, 25092, 42, 35, 46], [12109, 218, 12109, 218, 19076, 216, 33, 321, 118]],
    'bloom': [[57, 23, 61, 216, 33, 34, 35, 36, 37, 8866, 10907, 1326, 23, 68], [32139, 59, 51, 7906, 240, 24, 48, 1662, 181, 130, 251, 2316, 459, 118], [19556, 3297, 905, 1673, 357, 216, 506], [216, 1792, 12109, 218, 105, 321, 118, 106, 15442, 216], [142, 218, 39614, 142, 232, 25782, 2756, 30736, 216, 33, 34, 28, 35, 36, 37, 30, 38, 39, 20], [86, 24, 104, 25, 45, 46, 107, 3274, 637, 81, 16124, 15290, 5974, 55, 5974, 14201, 74, 44, 14812, 25092, 42, 35, 46], [12109, 218, 12109, 218, 19076, 216, 33, 321, 118]],
    'chameleon': [[57, 23, 61, 216, 33, 34, 35, 36, 37, 198, 198, 256, 2231, 1326, 23, 68], [32139, 59, 51, 7906, 240, 24, 48, 216, 107, 181, 130, 251, 23, 257, 459, 118], [19556, 216, 28, 905, 216, 30, 357, 216, 23, 99], [256, 104, 12109, 218, 105, 321, 118, 106, 15442, 216], [142, 218, 39614, 142, 232, 25782, 2756, 30736, 216, 33, 34, 28, 35, 36, 37, 30, 38, 39, 20], [86, 24, 104, 25, 45, 46, 107, 3274, 216, 23, 81, 23, 109, 201, 198, 197, 5974, 55, 5974, 14201, 74, 44, 14812, 25092, 42, 35, 46], [12109, 218, 12109, 218, 19076, 216, 33, 321, 118]],
    'exaone-moe': [[57, 23, 61, 216, 33, 34, 35, 36, 37, 1116, 216, 10907, 1326, 23, 68], [32139, 59, 51, 7906, 240, 24, 48, 1662, 181, 130, 251, 2316, 459, 118], [19556, 3297, 905, 1673, 357, 637, 99], [216, 1792, 12109, 218, 105, 321, 118, 106, 15442, 216], [142, 218, 39614, 142, 232, 25782, 2756, 30736, 216, 33, 34, 28, 35, 36, 37, 30, 38, 39, 20], [86, 24, 104, 36637, 46, 107, 3274, 637, 81, 16124, 201, 198, 197, 5974, 55, 5974, 14201, 74, 44, 14812, 25092, 42, 35, 46], [12109, 218, 12109, 218, 19076, 216, 33, 321, 118]],
    'jais-2': [[57, 23, 61, 216, 33, 34, 35, 36, 37, 1116, 216, 10907, 1326, 23, 68], [32139, 59, 51, 7906, 240, 24, 48, 1662, 181, 130, 251, 2316, 459, 118], [19556, 3297, 905, 1673, 357, 637, 99], [216, 1792, 12109, 218, 105, 321, 118, 106, 15442, 216], [142, 218, 39614, 142, 232, 25782, 2756, 30736, 216, 33, 34, 28, 35, 36, 37, 30, 38, 39, 20], [86, 24, 104, 36637, 46, 107, 3274, 637, 81, 16124, 2738, 197, 5974, 55, 5974, 14201, 74, 44, 14812, 25092, 42, 35, 46], [12109, 218, 12109, 218, 19076, 216, 33, 321, 118]],
    'bailingmoe': [[57, 23, 61, 216, 33, 34, 35, 36, 37, 1116, 216, 10907, 1326, 23, 68], [32139, 59, 51, 7906, 240, 24, 48, 1662, 181, 130, 251, 2316, 459, 118], [19556, 3297, 905, 1673, 357, 637, 99], [216, 1792, 12109, 218, 105, 321, 118, 106, 15442, 216], [142, 218, 39614, 142, 232, 25782, 2756, 30736, 216, 33, 34, 28, 35, 36, 37, 30, 38, 39, 20], [86, 24, 104, 36637, 46, 107, 3274, 637, 81, 16124, 2738, 197, 5974, 55, 5974, 14201, 74, 44, 14812, 25092, 42, 35, 46], [12109, 218, 12109, 218, 19076, 216, 33, 321, 118]],
}


@pytest.mark.parametrize("pre", sorted(LLAMA_CPP_IDS))
def test_pre_tokenizers_vs_llama_cpp(meta, pre):
    t = load_tokenizer({**meta, "tokenizer.ggml.pre": pre})
    got = [t.tokenize(s, add_bos=False) for s in LLAMA_CPP_STRINGS]
    assert got == LLAMA_CPP_IDS[pre]
