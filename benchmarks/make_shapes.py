#!/usr/bin/env python3
"""Benchmark GGUFs in real models' shapes: random block data with small finite scales (the values
are meaningless, the timings are real) and SmolLM2's vocabulary (49152 tokens, read from the
SmolLM2-135M file in the model cache). Written once to ~/.cache/pyrt/shapes/<shape>.<type>.gguf,
tensor by tensor (an 8B file is never held in memory).

    python benchmarks/make_shapes.py [--shapes smollm2-1.7b llama3.1-8b] [--types q4_0 q8_0 q4_k_m q5_k_m]
                                     [--out DIR] [--force]

Types: q4_0 and q8_0 (every matrix, embeddings included, in that type), q4_k_m (llama-quantize's
Q4_K_M mix: Q4_K matrices; Q6_K for attn_v and ffn_down on its "more bits" layers, the first and
last eighth and every third layer between, and for the output matrix or, where the model ties its
output to the embeddings, the embeddings; Q4_K embeddings otherwise), q5_k_m (the same mix with
Q5_K in place of Q4_K). Norms (and qwen2.5-3b's q/k/v biases) are F32 ones.
Prints each path; benchmarks/compare_llamacpp.py takes them by key (`<shape>-<type>`)."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import gguf
import numpy as np
from gguf import GGMLQuantizationType as QT
from gguf.constants import GGML_QUANT_SIZES

# n_embd, n_layer, n_ff, n_head, n_head_kv, rope base, tied output, context
SHAPES = {
    "smollm2-1.7b": dict(n_embd=2048, n_layer=24, n_ff=8192, n_head=32, n_head_kv=32, rope=130000.0,
                         tied=True, ctx=8192),
    "llama3.2-1b": dict(n_embd=2048, n_layer=16, n_ff=8192, n_head=32, n_head_kv=8, rope=500000.0,
                        tied=True, ctx=131072),
    "llama3.1-8b": dict(n_embd=4096, n_layer=32, n_ff=14336, n_head=32, n_head_kv=8, rope=500000.0,
                        tied=False, ctx=131072),
    # Qwen2.5-3B's shape in its own architecture (q/k/v biases, GQA 16/2, head dim 128); the
    # vocabulary stays SmolLM2's, so the output matrix is 49152 rows, not 151936
    "qwen2.5-3b": dict(n_embd=2048, n_layer=36, n_ff=11008, n_head=16, n_head_kv=2, rope=1000000.0,
                       tied=True, ctx=32768, arch="qwen2"),
    # Qwen3-30B-A3B's shape: 128 experts of 768, 8 per token (~3.3B of 30.5B weights read per
    # token), GQA 32/4 with head dim 128 (q is 4096 wide on a 2048 residual), q/k norms; the
    # router is random so each token takes its own experts
    "qwen3-30b-a3b": dict(n_embd=2048, n_layer=48, n_ff=6144, n_head=32, n_head_kv=4, head_dim=128,
                          rope=1000000.0, tied=False, ctx=40960, arch="qwen3moe",
                          n_expert=128, n_expert_used=8, n_ff_exp=768),
}
TYPES = ("q4_0", "q8_0", "q4_k_m", "q5_k_m")
FILE_TYPE = {"q4_0": gguf.LlamaFileType.MOSTLY_Q4_0, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
             "q4_k_m": gguf.LlamaFileType.MOSTLY_Q4_K_M, "q5_k_m": gguf.LlamaFileType.MOSTLY_Q5_K_M}
# byte offsets of the fp16 scales in a block (d, and dmin where the type has one)
SCALE_OFFS = {QT.Q4_0: (0,), QT.Q8_0: (0,), QT.Q4_K: (0, 2), QT.Q5_K: (0, 2), QT.Q6_K: (208,)}
VOCAB_SOURCE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir() -> Path:
    return Path(os.environ.get("PYRT_CACHE", Path.home() / ".cache" / "pyrt"))


def more_bits(il: int, n_layer: int) -> bool:
    """llama-quantize's use_more_bits: first and last eighth of the layers, every third between."""
    return il < n_layer // 8 or il >= 7 * n_layer // 8 or (il - n_layer // 8) % 3 == 2


def tensor_types(shape: dict, qtype: str) -> dict[str, tuple]:
    """GGUF tensor name -> (type, rows, cols[, n_expert]) for one shape and type mix."""
    d, L, ff = shape["n_embd"], shape["n_layer"], shape["n_ff"]
    hd = shape.get("head_dim", d // shape["n_head"])
    q, kv = hd * shape["n_head"], hd * shape["n_head_kv"]
    ne = shape.get("n_expert", 0)
    base = {"q4_0": QT.Q4_0, "q8_0": QT.Q8_0, "q4_k_m": QT.Q4_K, "q5_k_m": QT.Q5_K}[qtype]
    big = QT.Q6_K if qtype in ("q4_k_m", "q5_k_m") else base
    out = {"token_embd.weight": (big if shape["tied"] else base, 49152, d)}
    for il in range(L):
        p = f"blk.{il}."
        mb = big if more_bits(il, L) else base
        out[p + "attn_norm.weight"] = (QT.F32, 1, d)
        out[p + "attn_q.weight"] = (base, q, d)
        out[p + "attn_k.weight"] = (base, kv, d)
        out[p + "attn_v.weight"] = (mb, kv, d)
        if shape.get("arch") == "qwen2":
            out[p + "attn_q.bias"] = (QT.F32, 1, q)
            out[p + "attn_k.bias"] = (QT.F32, 1, kv)
            out[p + "attn_v.bias"] = (QT.F32, 1, kv)
        if shape.get("arch") == "qwen3moe":
            out[p + "attn_q_norm.weight"] = (QT.F32, 1, hd)
            out[p + "attn_k_norm.weight"] = (QT.F32, 1, hd)
        out[p + "attn_output.weight"] = (base, d, q)
        out[p + "ffn_norm.weight"] = (QT.F32, 1, d)
        if ne:
            fe = shape["n_ff_exp"]
            out[p + "ffn_gate_inp.weight"] = (QT.F32, ne, d)
            out[p + "ffn_gate_exps.weight"] = (base, fe, d, ne)
            out[p + "ffn_up_exps.weight"] = (base, fe, d, ne)
            out[p + "ffn_down_exps.weight"] = (mb, d, fe, ne)
        else:
            out[p + "ffn_gate.weight"] = (base, ff, d)
            out[p + "ffn_up.weight"] = (base, ff, d)
            out[p + "ffn_down.weight"] = (mb, d, ff)
    out["output_norm.weight"] = (QT.F32, 1, d)
    if not shape["tied"]:
        out["output.weight"] = (big, 49152, d)
    return out


def random_tensor(t: QT, rows: int, cols: int, rng) -> np.ndarray:
    """Raw blocks (uint8 [rows, row_bytes]): random codes and sub-block scales, fp16 block scales
    uniform in [1e-4, 3e-4] (dmin likewise), so activations stay finite through every layer.
    F32: ones for a vector (norms, biases), normal values for a matrix (an MoE router)."""
    if t == QT.F32:
        if rows > 1:
            return rng.standard_normal((rows, cols), dtype=np.float32)
        return np.ones(cols, np.float32)
    bs, bb = GGML_QUANT_SIZES[t]
    nb = rows * cols // bs
    raw = rng.integers(0, 256, (nb, bb), dtype=np.uint8)
    for off in SCALE_OFFS[t]:
        raw[:, off:off + 2] = rng.uniform(1e-4, 3e-4, nb).astype(np.float16).view(np.uint8).reshape(nb, 2)
    return raw.reshape(rows, cols // bs * bb)


def copy_vocab(w: gguf.GGUFWriter, src: Path) -> None:
    r = gguf.GGUFReader(src)
    for key, f in r.fields.items():
        if not key.startswith("tokenizer."):
            continue
        vt = f.types[0]
        if vt == gguf.GGUFValueType.ARRAY:
            et = f.types[1]
            if et == gguf.GGUFValueType.STRING:
                val = [bytes(f.parts[i]).decode("utf-8", "surrogateescape") for i in f.data]
            else:
                val = [int(f.parts[i][0]) for i in f.data]
            w.add_key_value(key, val, vt, sub_type=et)
        elif vt == gguf.GGUFValueType.STRING:
            w.add_key_value(key, bytes(f.parts[f.data[0]]).decode("utf-8"), vt)
        else:
            w.add_key_value(key, f.parts[f.data[0]][0].item(), vt)


def write_shape(path: Path, name: str, qtype: str, vocab_src: Path, seed: int = 0) -> Path:
    shape = SHAPES[name]
    rng = np.random.default_rng(seed)
    tmp = path.with_suffix(".tmp")
    arch = shape.get("arch", "llama")
    w = gguf.GGUFWriter(os.fspath(tmp), arch)
    w.add_name(f"pyrt benchmark shape {name} {qtype} (random weights)")
    w.add_context_length(shape["ctx"])
    w.add_embedding_length(shape["n_embd"])
    w.add_block_count(shape["n_layer"])
    w.add_feed_forward_length(shape["n_ff"])
    w.add_head_count(shape["n_head"])
    w.add_head_count_kv(shape["n_head_kv"])
    hd = shape.get("head_dim", shape["n_embd"] // shape["n_head"])
    w.add_rope_dimension_count(hd)
    if "head_dim" in shape:
        w.add_key_length(hd)
        w.add_value_length(hd)
    if shape.get("n_expert"):
        w.add_expert_count(shape["n_expert"])
        w.add_expert_used_count(shape["n_expert_used"])
        w.add_expert_feed_forward_length(shape["n_ff_exp"])
    w.add_rope_freq_base(shape["rope"])
    w.add_layer_norm_rms_eps(1e-6 if arch in ("qwen2", "qwen3moe") else 1e-5)
    w.add_vocab_size(49152)
    w.add_file_type(int(FILE_TYPE[qtype]))
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    copy_vocab(w, vocab_src)
    types = tensor_types(shape, qtype)
    for tname, (t, rows, cols, *ne) in types.items():
        lead = list(ne)                      # [n_expert] for an expert tensor
        if t == QT.F32:
            dims = [cols] if rows == 1 else [rows, cols]
            w.add_tensor_info(tname, dims, np.dtype(np.float32), rows * cols * 4)
        else:
            bs, bb = GGML_QUANT_SIZES[t]
            nbytes = (ne[0] if ne else 1) * rows * cols // bs * bb
            w.add_tensor_info(tname, lead + [rows, cols // bs * bb], np.dtype(np.uint8), nbytes, raw_dtype=t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    for tname, (t, rows, cols, *ne) in types.items():
        w.write_tensor_data(random_tensor(t, (ne[0] if ne else 1) * rows, cols, rng))
    w.close()
    tmp.replace(path)
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", nargs="*", default=["smollm2-1.7b", "llama3.1-8b"], choices=list(SHAPES))
    ap.add_argument("--types", nargs="*", default=list(TYPES), choices=TYPES)
    ap.add_argument("--out", type=Path, default=cache_dir() / "shapes")
    ap.add_argument("--force", action="store_true", help="rewrite files that exist")
    args = ap.parse_args()
    vocab = cache_dir() / "models" / VOCAB_SOURCE
    if not vocab.exists():
        from pyrt.registry import ensure_model
        vocab = Path(ensure_model("smollm2-135m"))
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.shapes:
        for qtype in args.types:
            path = args.out / f"{name}.{qtype}.gguf"
            if args.force or not path.exists():
                write_shape(path, name, qtype, vocab)
            print(path)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    sys.exit(main())
