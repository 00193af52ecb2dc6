"""Synthetic GGUF files, one per architecture pyrt runs, for parity against llama.cpp.

    from arch_models import ARCH_CASES, write_arch_model
    path = write_arch_model(tmp_path / "m.gguf", "qwen2", "q8_0")   # deterministic bytes

Random weights, but exactly the tensor names, shapes and metadata llama.cpp expects for
each architecture (its src/models/<arch>.cpp), scaled so that logits are spread (std about
1/sqrt(fan_in)) and so that each architecture's own feature changes the output: q/k/v
biases of size ~0.5 (qwen2), q/k norm weights far from 1 (qwen3), Llama 3 rope frequency
factors 1..8 (llama3), fused q/k/v and gate/up weights (phi3), LongRoPE factor pairs and a
rope attention factor (phi3long). Widths are multiples of 256
so the K-quant types apply to every matrix. The vocabulary is tiny_model's byte-level BPE.

The reference outputs (tests/data/arch/*.npz) were produced by
scripts/arch_reference.py with llama.cpp built for AVX2; each stores the sha256 of the file
it was computed on, which the tests check before comparing.
"""
from __future__ import annotations

import os
from pathlib import Path

import gguf
import numpy as np
from gguf import GGMLQuantizationType as QT

from tiny_model import CHATML_TEMPLATE, SPECIAL_TOKENS, gpt2_vocab

# name -> (general.architecture, what the case exercises)
ARCH_CASES = {
    "llama3": ("llama", "rope_freqs.weight (Llama 3 rope scaling), untied output"),
    "mistral": ("llama", "llama block, GQA 4:1, tied output"),
    "qwen2": ("qwen2", "q/k/v biases, neox rope"),
    "qwen3": ("qwen3", "per-head q/k RMSNorm, neox rope"),
    "gemma2": ("gemma2", "attention + final soft-capping, sliding window 16 on every other layer, "
                         "post norms, GeGLU, tied output"),
    "mixtral": ("llama", "Mixtral-style MoE: 4 experts, top-2 softmax routing"),
    "qwen3moe": ("qwen3moe", "q/k norm + MoE: 8 experts of width 256, top-2, normalized weights"),
    "phi3": ("phi3", "fused attn_qkv, fused gate+up ffn_up, q scaled before attention"),
    "phi3long": ("phi3", "LongRoPE: rope_factors_long/short picked by the context size, rope "
                         "attn_factor 1.19, original context 256"),
}
# Cases whose references are also made with a larger context, which switches phi3's LongRoPE
# factors from short to long (llama.cpp rounds n_ctx up to 256 and compares it with the
# original context length): case -> n_ctx of that second reference (file {case}-{wt}-ctx{n}.npz).
LONG_CTX = {"phi3long": 512}
PARITY_N_CTX = 128
# weight type of the matrices -> (matrix type, token_embd/output type)
# (q5_k / q6_k: the K-quants llama.cpp keeps unrepacked on x86, so its MoE experts take its tiled
# GEMM with 8+ routed rows; Q4_K_M files hold Q6_K experts in some layers)
WEIGHT_TYPES = {"q8_0": (QT.Q8_0, QT.Q8_0), "q4_k": (QT.Q4_K, QT.Q6_K), "iq4_xs": (QT.IQ4_XS, QT.Q6_K),
                "q5_k": (QT.Q5_K, QT.Q6_K), "q6_k": (QT.Q6_K, QT.Q6_K)}

N_EMBD, N_HEAD, N_LAYER, N_FF, HEAD_DIM = 256, 4, 2, 512, 64


def _quantize(arr: np.ndarray, qtype: QT) -> np.ndarray:
    if qtype in (QT.Q4_K, QT.Q5_K, QT.Q6_K, QT.IQ4_XS):
        from pyrt.quantize.kquants import quantize_rows
        rows = quantize_rows(arr.reshape(-1, arr.shape[-1]), qtype)
        return rows.reshape(*arr.shape[:-1], rows.shape[-1])
    return gguf.quants.quantize(arr, qtype)


# The tensors that carry each case's own feature; write_arch_model(strip=True) leaves them out
# (drawing the same random numbers), so a test can show the parity gate fails without them.
FEATURE_TENSORS = {"llama3": ("rope_freqs.weight",), "qwen2": (".attn_q.bias", ".attn_k.bias", ".attn_v.bias"),
                   "qwen3": (".attn_q_norm.weight", ".attn_k_norm.weight"),
                   "gemma2": (), "mixtral": (), "qwen3moe": (),
                   "phi3long": ("rope_factors_long.weight", "rope_factors_short.weight")}  # + attn_factor   # stripped: soft-capping values so large that tanh is linear


def write_arch_model(path: str | os.PathLike, case: str, wtype: str = "q8_0", strip: bool = False) -> Path:
    """strip: without the case's FEATURE_TENSORS (qwen3 is then written as qwen2)."""
    arch, _what = ARCH_CASES[case]
    if strip and case == "qwen3":
        arch = "qwen2"
    if strip and case in ("mixtral", "qwen3moe"):   # stripped: one expert per token, not two
        pass
    mat_t, emb_t = WEIGHT_TYPES[wtype]
    rng = np.random.default_rng(sum(map(ord, case)))
    tokens, merges = gpt2_vocab()
    specials = SPECIAL_TOKENS
    if arch == "phi3":      # llama.cpp's vocabulary loader looks these up for phi3 models
        specials = SPECIAL_TOKENS + ("<unk>", "<s>", "</s>")
        tokens = tokens + ["<unk>", "<s>", "</s>"]
    n_vocab = len(tokens)
    n_head_kv = 1 if case == "mistral" else 2
    E, FF, HD = N_EMBD, N_FF, HEAD_DIM
    Q, KV = N_HEAD * HD, n_head_kv * HD

    w = gguf.GGUFWriter(os.fspath(path), arch)
    w.add_name(f"pyrt synthetic {case} (random weights)")
    w.add_context_length(4096)
    w.add_embedding_length(E)
    w.add_block_count(N_LAYER)
    w.add_feed_forward_length(FF)
    w.add_head_count(N_HEAD)
    w.add_head_count_kv(n_head_kv)
    w.add_rope_dimension_count(HD)
    w.add_rope_freq_base(10000.0 if case != "llama3" else 500000.0)
    w.add_layer_norm_rms_eps(1e-6 if arch in ("qwen2", "qwen3") else 1e-5)
    if case == "phi3long":  # as llama.cpp's converter writes a 128k Phi-3 (scaled down)
        w.add_rope_scaling_orig_ctx_len(256)
        if not strip:
            w.add_rope_scaling_attn_factors(1.19)
    w.add_file_type({"q8_0": 7, "q4_k": 15, "iq4_xs": 30, "q5_k": 17, "q6_k": 18}[wtype])
    n_expert = {"mixtral": 4, "qwen3moe": 8}.get(case, 0)
    if n_expert:
        w.add_expert_count(n_expert)
        w.add_expert_used_count(1 if strip else 2)
        if arch == "qwen3moe":
            w.add_expert_feed_forward_length(256)
    if arch == "gemma2":
        w.add_sliding_window(16)
        w.add_float32("gemma2.attn_logit_softcapping", 1e4 if strip else 4.0)
        w.add_float32("gemma2.final_logit_softcapping", 1e4 if strip else 2.0)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list(tokens)
    w.add_token_types([gguf.TokenType.CONTROL if t in specials else gguf.TokenType.NORMAL
                       for t in tokens])
    w.add_token_merges(merges)
    w.add_bos_token_id(tokens.index("<|im_start|>"))
    w.add_eos_token_id(tokens.index("<|im_end|>"))
    w.add_add_bos_token(False)
    w.add_chat_template(CHATML_TEMPLATE)

    def add(name: str, arr: np.ndarray, qtype: QT = QT.F32) -> None:
        arr = np.ascontiguousarray(arr, dtype=np.float32)
        if strip and name.endswith(FEATURE_TENSORS.get(case, ())):
            return
        if qtype == QT.F32:
            w.add_tensor(name, arr)
        else:
            w.add_tensor(name, _quantize(arr, qtype), raw_dtype=qtype)

    def mat(rows: int, cols: int) -> np.ndarray:      # numpy (rows, cols) = GGUF (ne1, ne0)
        return rng.standard_normal((rows, cols), dtype=np.float32) / np.float32(np.sqrt(cols))

    def norm(n: int, spread: float = 0.1) -> np.ndarray:
        return 1.0 + spread * rng.standard_normal(n, dtype=np.float32)

    add("token_embd.weight", 0.1 * rng.standard_normal((n_vocab, E), dtype=np.float32), emb_t)
    if case == "llama3":   # llama.cpp's llama3 scaling gives factors 1 (high freq) .. 8 (low freq)
        # (x**1.5 as x*sqrt(x): exactly rounded float32 steps, the same bytes on every CPU;
        # numpy's float32 power differs between its AVX2 and AVX-512 builds)
        f = np.linspace(1.0, 8.0, HD // 2, dtype=np.float32)
        add("rope_freqs.weight", f * np.sqrt(f))
    if case == "phi3long":  # short: near 1 .. 3; long: 1 .. 40 (low frequencies stretched)
        add("rope_factors_long.weight", np.linspace(1.0, 40.0, HD // 2, dtype=np.float32))
        add("rope_factors_short.weight", np.linspace(1.0, 3.0, HD // 2, dtype=np.float32) ** 2)
    for il in range(N_LAYER):
        p = f"blk.{il}."
        add(p + "attn_norm.weight", norm(E))
        if arch == "phi3":
            add(p + "attn_qkv.weight", mat(Q + 2 * KV, E), mat_t)
        else:
            add(p + "attn_q.weight", mat(Q, E), mat_t)
            add(p + "attn_k.weight", mat(KV, E), mat_t)
            add(p + "attn_v.weight", mat(KV, E), mat_t)
        if case == "qwen2":
            add(p + "attn_q.bias", 0.5 * rng.standard_normal(Q, dtype=np.float32))
            add(p + "attn_k.bias", 0.5 * rng.standard_normal(KV, dtype=np.float32))
            add(p + "attn_v.bias", 0.5 * rng.standard_normal(KV, dtype=np.float32))
        if arch in ("qwen3", "qwen3moe"):
            add(p + "attn_q_norm.weight", norm(HD, 0.5))
            add(p + "attn_k_norm.weight", norm(HD, 0.5))
        add(p + "attn_output.weight", mat(E, Q), mat_t)
        add(p + "ffn_norm.weight", norm(E))
        if n_expert:
            fe = 256 if arch == "qwen3moe" else FF
            add(p + "ffn_gate_inp.weight", mat(n_expert, E) * 4.0)   # spread router probabilities
            add(p + "ffn_gate_exps.weight", np.stack([mat(fe, E) for _ in range(n_expert)]), mat_t)
            add(p + "ffn_up_exps.weight", np.stack([mat(fe, E) for _ in range(n_expert)]), mat_t)
            add(p + "ffn_down_exps.weight", np.stack([mat(E, fe) for _ in range(n_expert)]), mat_t)
        elif arch == "phi3":
            add(p + "ffn_up.weight", mat(2 * FF, E), mat_t)
        else:
            add(p + "ffn_gate.weight", mat(FF, E), mat_t)
            add(p + "ffn_up.weight", mat(FF, E), mat_t)
        if not n_expert:
            add(p + "ffn_down.weight", mat(E, FF), mat_t)
        if arch == "gemma2":
            add(p + "post_attention_norm.weight", norm(E))
            add(p + "post_ffw_norm.weight", norm(E))
    add("output_norm.weight", norm(E))
    if case not in ("mistral", "gemma2"):
        add("output.weight", mat(n_vocab, E), emb_t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return Path(path)


def parity_tokens(n_vocab: int, n: int = 64) -> list[int]:
    """The fixed token sequence the parity references are computed on."""
    return np.random.default_rng(1234).integers(0, n_vocab - 3, n).tolist()
