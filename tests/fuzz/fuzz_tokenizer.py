#!/usr/bin/env python3
"""Coverage-guided fuzz target (atheris) for the tokenizer and detokenizer on arbitrary bytes,
with the real SmolLM2 vocabulary (49k byte-level BPE tokens, 'smollm' pre-tokenizer) and the
tiny test vocabulary.

    python tests/fuzz/fuzz_tokenizer.py tests/fuzz/corpus/tokenizer -max_total_time=600 \
        -timeout=2 -rss_limit_mb=4096

Checked for every input: tokenize (plain and with special-token parsing; str input, lone
surrogates included, and bytes input through pyrt.Llama.tokenize) returns ids in range;
detokenize never fails on in-range ids and raises IndexError/ValueError on others; and for
text without surrogates whose bytes all have a token, plain tokenization round-trips exactly
(byte-level BPE is lossless).
"""
from __future__ import annotations

import os
import sys

import atheris

with atheris.instrument_imports(include=["pyrt"]):
    import pyrt
    from pyrt.gguf_file import GGUFFile
    from pyrt.tokenizer import load_tokenizer

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def _tokenizers():
    from pyrt.registry import ensure_model
    from tiny_model import write_tiny_llama
    import tempfile
    toks = []
    with GGUFFile(ensure_model("smollm2-135m")) as g:
        toks.append(load_tokenizer(g.metadata))
    d = tempfile.mkdtemp(prefix="pyrt-fuzz-tok-")
    tiny = write_tiny_llama(os.path.join(d, "tiny.gguf"))
    llm = pyrt.Llama(str(tiny), n_ctx=16, n_threads=1)
    toks.append(llm.tokenizer)
    return toks, llm


TOKS, LLM = _tokenizers()


def _byte_coverage(tok) -> frozenset[int]:
    """Bytes that have a token of their own: text made of other bytes is not representable
    (SmolLM2 has no token for e.g. 0x06 or 0x14; llama.cpp drops those bytes too)."""
    from pyrt.tokenizer.bpe import _BYTE_TO_UNICODE
    return frozenset(b for b in range(256) if tok.token_to_id(_BYTE_TO_UNICODE[b]) is not None)


COVERED = [_byte_coverage(t) for t in TOKS]


def _check_ids(tok, ids) -> None:
    n = tok.n_vocab
    for t in ids:
        if type(t) is not int or not 0 <= t < n:
            raise AssertionError(f"tokenize returned an invalid id {t!r} (n_vocab {n})")


def TestOneInput(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    mode = fdp.ConsumeIntInRange(0, 3)
    which = fdp.ConsumeIntInRange(0, len(TOKS) - 1)
    tok = TOKS[which]
    if mode == 0:                          # unicode text, surrogates possible
        text = fdp.ConsumeUnicode(fdp.remaining_bytes())
    elif mode == 1:                        # unicode text without surrogates: round trip
        text = fdp.ConsumeUnicodeNoSurrogates(fdp.remaining_bytes())
    elif mode == 2:                        # raw bytes through the public API
        raw = fdp.ConsumeBytes(fdp.remaining_bytes())
        ids = LLM.tokenize(raw, special=bool(raw[:1] == b"<"))
        _check_ids(LLM.tokenizer, ids)
        LLM.detokenize(ids)
        LLM.detokenize(ids, special=True)
        return
    else:                                  # arbitrary id lists into the detokenizer
        ids = fdp.ConsumeIntListInRange(fdp.ConsumeIntInRange(0, 64), -2, tok.n_vocab + 1)
        try:
            tok.detokenize(ids)
            tok.detokenize(ids, special=True)
        except IndexError:
            if all(0 <= t < tok.n_vocab for t in ids):
                raise
        else:
            if not all(0 <= t < tok.n_vocab for t in ids):
                raise AssertionError(f"detokenize accepted out-of-range ids {ids}")
        return
    for special in (False, True):
        ids = tok.tokenize(text, add_bos=False, special=special)
        _check_ids(tok, ids)
        out = tok.detokenize(ids, special=True)
        if mode == 1 and not special and out != text and \
                COVERED[which].issuperset(text.encode("utf-8")):
            raise AssertionError(f"round trip changed the text: {text!r} -> {ids} -> {out!r}")
        tok.detokenize(ids)
    tok.tokenize(text, add_bos=True, special=True)


def main() -> None:
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
