"""A tiny, valid, random-weight llama GGUF for tests that need a model file but not a
real model: hostile-input tests mutate it, API tests can load it in milliseconds.

    from tiny_model import write_tiny_llama, tiny_llama_bytes
    path = write_tiny_llama(tmp_path / "tiny.gguf")          # ~60 KB, deterministic

Layout: llama arch, 2 layers, n_embd 64, 4 heads (2 KV heads, GQA), n_ff 128, a byte-level
gpt2 vocabulary (256 byte tokens + merges learnt from a short text + 3 special tokens), a
ChatML template, and a mix of tensor types (Q8_0, Q4_0, F32) written by `gguf.GGUFWriter`
with blocks from `gguf.quants.quantize` (IQ4_NL / IQ4_XS, on request: quantize_iq4 below).
Same arguments -> byte-identical file.
"""
from __future__ import annotations

import os
import tempfile
from collections import Counter
from pathlib import Path

import gguf
import numpy as np
from gguf import GGMLQuantizationType as QT

_TEXT = (
    "The quick brown fox jumps over the lazy dog. The dog sleeps; the fox runs. "
    "Hello world! Hello there, how are you? I am fine, thank you. 12345 67890 "
    "def main():\n    return 0\n"
)
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def _byte_to_unicode() -> list[str]:
    printable = list(range(0x21, 0x7F)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    table = [""] * 256
    for b in printable:
        table[b] = chr(b)
    n = 0
    for b in range(256):
        if not table[b]:
            table[b] = chr(256 + n)
            n += 1
    return table


def gpt2_vocab(n_merges: int = 48) -> tuple[list[str], list[str]]:
    """(tokens, merges): byte tokens, merged tokens learnt greedily from _TEXT, specials."""
    b2u = _byte_to_unicode()
    words = [[b2u[b] for b in (" " + w).encode()] for w in _TEXT.split()]
    tokens = list(b2u)
    merges: list[str] = []
    for _ in range(n_merges):
        pairs = Counter()
        for w in words:
            pairs.update(zip(w, w[1:]))
        if not pairs:
            break
        (a, b), _count = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))
        merges.append(f"{a} {b}")
        tokens.append(a + b)
        for w in words:
            i = 0
            while i < len(w) - 1:
                if w[i] == a and w[i + 1] == b:
                    w[i:i + 2] = [a + b]
                i += 1
    tokens.extend(SPECIAL_TOKENS)
    return tokens, merges


_KVALUES_IQ4NL = np.array([-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113], np.int64)


def _iq4_indices(x: np.ndarray, d: np.ndarray) -> np.ndarray:
    """[nb, 32] floats and their block scales -> [nb, 16] bytes of nearest-level indices."""
    with np.errstate(divide="ignore", invalid="ignore"):
        v = np.where(d[:, None] == 0, 0, x / d[:, None])
    idx = np.abs(v[..., None] - _KVALUES_IQ4NL).argmin(-1).astype(np.uint8)
    return idx[:, :16] | (idx[:, 16:] << 4)


def quantize_iq4(t: QT, x: np.ndarray) -> np.ndarray:
    """A plain IQ4 quantizer for realistic weights (block scale from the largest magnitude, which
    maps to level -127, then the nearest level; ggml's searches further, which only changes which
    valid bytes we get). Returns the raw blocks, flat."""
    x = x.astype(np.float32).reshape(-1, 32)
    mx = x[np.arange(x.shape[0]), np.argmax(np.abs(x), axis=1)]
    d = (mx / -127.0).astype(np.float32)
    if t == QT.IQ4_NL:
        d16 = d.astype(np.float16)
        return np.concatenate([d16[:, None].view(np.uint8), _iq4_indices(x, d16.astype(np.float32))],
                              axis=1).reshape(-1)
    # IQ4_XS: super-block scale D = max |block scale| / 31, 6-bit sub-block scales ls = 32 + d/D
    ds = d.reshape(-1, 8)
    D = (np.abs(ds).max(axis=1) / 31.0).astype(np.float16)
    Df = D.astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        ls = np.where(Df[:, None] == 0, 32, np.clip(np.rint(ds / Df[:, None]) + 32, 0, 63)).astype(np.int64)
    d_eff = (Df[:, None] * (ls - 32)).astype(np.float32).reshape(-1)
    out = np.zeros((ds.shape[0], 136), np.uint8)
    out[:, 0:2] = D[:, None].view(np.uint8)
    sh = np.zeros(ds.shape[0], np.int64)
    for s in range(8):
        sh |= (ls[:, s] >> 4) << (2 * s)
        out[:, 4 + s // 2] |= ((ls[:, s] & 15) << (4 * (s % 2))).astype(np.uint8)
    out[:, 2:4] = sh.astype(np.uint16)[:, None].view(np.uint8)
    out[:, 8:] = _iq4_indices(x, d_eff).reshape(-1, 128)
    return out.reshape(-1)


def _quantize(arr: np.ndarray, qtype: QT) -> np.ndarray:
    """Raw blocks [rows, row bytes] (gguf's quantizer; ours for IQ4_NL / IQ4_XS, which it lacks)."""
    if qtype in (QT.IQ4_NL, QT.IQ4_XS):
        return quantize_iq4(qtype, arr).reshape(arr.shape[0], -1)
    return gguf.quants.quantize(arr, qtype)


def _add(w: gguf.GGUFWriter, name: str, arr: np.ndarray, qtype: QT, as_f32: bool = False) -> None:
    """as_f32: write the quantized values dequantized, as F32 (same numbers, no quantization)."""
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if qtype == QT.F32:
        w.add_tensor(name, arr)
    elif as_f32:
        w.add_tensor(name, gguf.quants.dequantize(_quantize(arr, qtype), qtype).reshape(arr.shape))
    else:
        w.add_tensor(name, _quantize(arr, qtype), raw_dtype=qtype)


def write_tiny_llama(path: str | os.PathLike, *, n_layer: int = 2, n_embd: int = 64, n_head: int = 4,
                     n_head_kv: int = 2, n_ff: int = 128, n_ctx_train: int = 256, seed: int = 0,
                     tied_output: bool = False, alignment: int | None = None,
                     extra_kv: dict | None = None, qtypes: dict[str, QT] | None = None,
                     dequantized: bool = False) -> Path:
    """Write the tiny model to `path` and return it. qtypes overrides tensor types by name
    without "blk.N." and ".weight" (e.g. {"token_embd": QT.IQ4_NL, "ffn_up": QT.IQ4_XS});
    dequantized writes those overridden tensors' quantized values as F32 instead."""
    rng = np.random.default_rng(seed)
    tokens, merges = gpt2_vocab()
    n_vocab = len(tokens)
    head_dim = n_embd // n_head
    w = gguf.GGUFWriter(os.fspath(path), "llama")
    w.add_name("pyrt tiny llama (random weights)")
    w.add_context_length(n_ctx_train)
    w.add_embedding_length(n_embd)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head_kv)
    w.add_rope_dimension_count(head_dim)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(7)  # MOSTLY_Q8_0
    if alignment is not None:
        w.add_custom_alignment(alignment)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list(tokens)
    w.add_token_types([gguf.TokenType.CONTROL if t in SPECIAL_TOKENS else gguf.TokenType.NORMAL
                       for t in tokens])
    w.add_token_merges(merges)
    w.add_bos_token_id(tokens.index("<|im_start|>"))
    w.add_eos_token_id(tokens.index("<|im_end|>"))
    w.add_unk_token_id(tokens.index("<|endoftext|>"))
    w.add_pad_token_id(tokens.index("<|endoftext|>"))
    w.add_add_bos_token(False)
    w.add_chat_template(CHATML_TEMPLATE)
    for k, v in (extra_kv or {}).items():
        if isinstance(v, str):
            w.add_string(k, v)
        elif isinstance(v, float):
            w.add_float32(k, v)
        else:
            w.add_uint32(k, v)

    def mat(rows: int, cols: int, scale: float = 0.08) -> np.ndarray:
        return rng.standard_normal((rows, cols), dtype=np.float32) * scale

    def norm(n: int) -> np.ndarray:
        return 1.0 + 0.1 * rng.standard_normal(n, dtype=np.float32)

    q_dim, kv_dim = n_head * head_dim, n_head_kv * head_dim
    over = qtypes or {}

    def add(name: str, arr: np.ndarray, qtype: QT) -> None:
        key = name.split(".", 2)[-1] if name.startswith("blk.") else name
        key = key.removesuffix(".weight")
        if key in over:
            _add(w, name, arr, over[key], as_f32=dequantized)
        else:
            _add(w, name, arr, qtype)
    # numpy shapes are (rows, cols) = GGUF (ne1, ne0)
    add("token_embd.weight", mat(n_vocab, n_embd, 0.5), QT.Q8_0)
    for il in range(n_layer):
        p = f"blk.{il}."
        add(p + "attn_norm.weight", norm(n_embd), QT.F32)
        add(p + "attn_q.weight", mat(q_dim, n_embd), QT.Q4_0)
        add(p + "attn_k.weight", mat(kv_dim, n_embd), QT.Q8_0)
        add(p + "attn_v.weight", mat(kv_dim, n_embd), QT.Q4_0)
        add(p + "attn_output.weight", mat(n_embd, q_dim), QT.F32)
        add(p + "ffn_norm.weight", norm(n_embd), QT.F32)
        add(p + "ffn_gate.weight", mat(n_ff, n_embd), QT.Q4_0)
        add(p + "ffn_up.weight", mat(n_ff, n_embd), QT.Q8_0)
        add(p + "ffn_down.weight", mat(n_embd, n_ff), QT.Q8_0)
    add("output_norm.weight", norm(n_embd), QT.F32)
    if not tied_output:
        add("output.weight", mat(n_vocab, n_embd, 0.3), QT.Q8_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return Path(path)


_CACHE: dict[tuple, bytes] = {}


def tiny_llama_bytes(**kwargs) -> bytes:
    """The tiny model's file contents (cached per argument set)."""
    key = tuple(sorted(kwargs.items(), key=lambda kv: kv[0]))
    key = tuple((k, tuple(sorted(v.items())) if isinstance(v, dict) else v) for k, v in key)
    if key not in _CACHE:
        with tempfile.TemporaryDirectory() as d:
            p = write_tiny_llama(Path(d) / "tiny.gguf", **kwargs)
            _CACHE[key] = p.read_bytes()
    return _CACHE[key]


if __name__ == "__main__":
    import sys
    out = write_tiny_llama(sys.argv[1] if len(sys.argv) > 1 else "tiny-llama.gguf")
    print(f"wrote {out} ({out.stat().st_size} bytes)")
