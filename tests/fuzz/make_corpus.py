#!/usr/bin/env python3
"""Regenerate the committed seed corpora of the fuzz targets (deterministic output).

    python tests/fuzz/make_corpus.py        # rewrites tests/fuzz/corpus/{loader,tokenizer}/seed-*

Loader seeds: the smallest valid llama model the loader accepts (1 layer, n_embd 32, ~30 KB),
a tied-output variant with 64-byte alignment, and a tensor-less file holding one metadata
entry of every GGUF value type (for parser coverage). Tokenizer seeds: a few texts that reach
the pre-tokenizer's branches (letters, digits, punctuation, whitespace runs, newlines,
non-ASCII, special-token text). Files carry no .gguf suffix (the
repository ignores *.gguf). Run the fuzzers on a scratch copy of the corpus and merge back
only what adds coverage (libFuzzer's -merge=1), keeping the committed corpus small.
"""
from __future__ import annotations

import os
import struct
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from tiny_model import write_tiny_llama  # noqa: E402


def _kv_zoo() -> bytes:
    def s(b: bytes) -> bytes:
        return struct.pack("<Q", len(b)) + b
    kvs = [
        (b"general.architecture", 8, s(b"llama")),
        (b"z.u8", 0, struct.pack("<B", 7)), (b"z.i8", 1, struct.pack("<b", -7)),
        (b"z.u16", 2, struct.pack("<H", 700)), (b"z.i16", 3, struct.pack("<h", -700)),
        (b"z.u32", 4, struct.pack("<I", 70000)), (b"z.i32", 5, struct.pack("<i", -70000)),
        (b"z.f32", 6, struct.pack("<f", 0.5)), (b"z.bool", 7, b"\x01"),
        (b"z.u64", 10, struct.pack("<Q", 1 << 40)), (b"z.i64", 11, struct.pack("<q", -(1 << 40))),
        (b"z.f64", 12, struct.pack("<d", 0.25)),
        (b"z.arr_u8", 9, struct.pack("<IQ", 0, 3) + b"\x01\x02\x03"),
        (b"z.arr_i32", 9, struct.pack("<IQ", 5, 2) + struct.pack("<ii", -1, 1)),
        (b"z.arr_f32", 9, struct.pack("<IQ", 6, 2) + struct.pack("<ff", 1.0, -1.0)),
        (b"z.arr_bool", 9, struct.pack("<IQ", 7, 2) + b"\x00\x01"),
        (b"z.arr_str", 9, struct.pack("<IQ", 8, 2) + s(b"a") + s("é".encode())),
        (b"general.alignment", 4, struct.pack("<I", 16)),
    ]
    out = bytearray(b"GGUF" + struct.pack("<IQQ", 3, 1, len(kvs)))
    for k, t, v in kvs:
        out += s(k) + struct.pack("<I", t) + v
    out += s(b"output_norm.weight") + struct.pack("<I", 1) + struct.pack("<Q", 4)
    out += struct.pack("<IQ", 0, 0)
    out += b"\0" * (-len(out) % 16) + struct.pack("<4f", 1, 2, 3, 4)
    return bytes(out)


TEXTS = {
    "english": "The quick brown fox jumps over the lazy dog. It's 12:30, isn't it?",
    "code": "def f(x):\n\treturn x**2  # square\n\n\nprint(f(12345678))\r\n",
    "unicode": "naïve café — 日本語のテキスト 🤖🎉 Ωμέγα ǅ ﬁ \u00a0\u2028end",
    "special": "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n<|endoftext|>",
    "spaces": "   leading   and    trailing   \n\n\n  \t\t  ",
}


def main() -> None:
    loader = HERE / "corpus" / "loader"
    tok = HERE / "corpus" / "tokenizer"
    loader.mkdir(parents=True, exist_ok=True)
    tok.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as d:
        p = write_tiny_llama(os.path.join(d, "a.gguf"), n_layer=1, n_embd=32, n_head=2,
                             n_head_kv=1, n_ff=32)
        (loader / "seed-tiny-1layer").write_bytes(p.read_bytes())
        p = write_tiny_llama(os.path.join(d, "b.gguf"), n_layer=1, n_embd=32, n_head=2,
                             n_head_kv=2, n_ff=32, tied_output=True, alignment=64)
        (loader / "seed-tiny-tied").write_bytes(p.read_bytes())
    (loader / "seed-kv-zoo").write_bytes(_kv_zoo())
    for name, text in TEXTS.items():
        # first byte picks the mode in fuzz_tokenizer.py; 1 = round-trip text
        (tok / f"seed-{name}").write_bytes(b"\x01\x00" + text.encode("utf-8"))
    for d in (loader, tok):
        print(d, sum(f.stat().st_size for f in d.iterdir()), "bytes")


if __name__ == "__main__":
    main()
