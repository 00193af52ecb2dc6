"""Regenerate tests/data/reference/kv/*.npz: llama.cpp's logits with a quantized KV cache
(type_k / type_v), for tests/test_kv_cache_types.py. Two halves, as scripts/llamacpp_reference.py:

    # 1. with pyrt's venv: find the models (pyrt's cache) and call 2. for each
    python scripts/kv_reference.py --llama-python ~/.cache/pyrt/avx2-venv/bin/python

    # 2. (called by 1) inside the llama.cpp venv (llama-cpp-python 0.3.36, AVX2 build)
    python scripts/kv_reference.py --run MODEL.gguf OUT.npz CHAT_PROMPT

llama.cpp runs with flash_attn=True: it needs flash attention for a quantized V cache (and its
default, "auto", turns it on), and it is the arithmetic pyrt follows for every cache with a
quantized K or V (pyrt's F16/F16 cache follows llama-cpp-python's default, flash_attn=False,
checked by tests/test_fidelity_identity.py). n_threads 2, n_ctx 512, n_batch = n_ubatch = 128.

Per cache configuration CFG ("q8_0-q8_0", "q4_0-q4_0", "q8_0-f16", "f16-q4_0"), keys CFG__NAME:
- `text_row_sha256` [N_TEXT], `text_top_ids` / `text_top_logits` [N_TEXT, 8]: the first N_TEXT
  tokens of tests/data/reference/text_public.txt in one batch from an empty cache, every row;
- greedy decoding (argmax, lowest id on a tie) of the first two public prompts and the chat
  prompt, prompt in one batch then one token per call, until EOG (included) or GREEDY_CAP:
  `greedy_off`, `greedy_ids`, `greedy_eog`, `greedy_row_sha256`, `greedy_top_ids` /
  `greedy_top_logits` [steps, 8]; `greedy_first_all_sha256` [prompts]: the prompt's last row when
  the prompt is evaluated asking for every row's logits (llama.cpp then computes its last layer's
  FFN over all rows instead of the output row alone, as pyrt always does; the two can differ).
Shared: `sha256` (model file), `text_ids`, `greedy_prompt_off` / `greedy_prompt_ids`, `configs`.
Digests are sha256 of the float32 row bytes (little-endian), as scripts/llamacpp_reference.py.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from llamacpp_reference import (MODELS, REF, greedy_steps, public_prompts, reference_main,  # noqa: E402
                                row_digest, sha256_file, top_k)

N_TEXT, N_CTX, GREEDY_CAP, TOP = 128, 512, 32, 8
GGML = {"f16": 1, "q8_0": 8, "q4_0": 2}
CONFIGS = [("q8_0", "q8_0"), ("q4_0", "q4_0"), ("q8_0", "f16"), ("f16", "q4_0")]


def run_llamacpp(model: str, out: str, chat_prompt: str) -> None:
    import numpy as np
    import llama_cpp
    from llama_cpp import llama_cpp as L
    import llamacpp_batch

    data: dict = {"sha256": sha256_file(Path(model)), "llama_cpp_version": llama_cpp.__version__,
                  "configs": np.array([f"{k}-{v}" for k, v in CONFIGS])}
    for tk, tv in CONFIGS:
        cfg = f"{tk}-{tv}"
        llm = llama_cpp.Llama(model, n_ctx=N_CTX, n_batch=N_TEXT, n_ubatch=N_TEXT, n_threads=2,
                              n_threads_batch=2, logits_all=True, verbose=False, flash_attn=True,
                              type_k=GGML[tk], type_v=GGML[tv])
        ctx = llm._ctx.ctx
        vocab = L.llama_model_get_vocab(llm._model.model)
        n_vocab = llm.n_vocab()
        mem = L.llama_get_memory(ctx)

        def row(i):
            return np.ctypeslib.as_array(L.llama_get_logits_ith(ctx, i), shape=(n_vocab,)).copy()

        add_bos = bool(L.llama_vocab_get_add_bos(vocab))
        text = (REF / "text_public.txt").read_text(encoding="utf-8")
        text_ids = llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=False)[:N_TEXT]
        L.llama_memory_clear(mem, True)
        llamacpp_batch.decode(L, ctx, text_ids, 0, True)
        logits = np.stack([row(i) for i in range(N_TEXT)]).astype(np.float32)
        tops = [top_k(r, TOP) for r in logits]
        data["text_ids"] = np.array(text_ids, np.int32)
        data[f"{cfg}__text_row_sha256"] = np.array([row_digest(r) for r in logits])
        data[f"{cfg}__text_top_ids"] = np.stack([t[0] for t in tops])
        data[f"{cfg}__text_top_logits"] = np.stack([t[1] for t in tops])

        p_off, p_ids, g_off, g_ids, g_eog, g_sha, g_tid, g_tlg = [0], [], [0], [], [], [], [], []
        g_all = []
        for prompt in public_prompts()[:2] + [chat_prompt]:
            ids = llm.tokenize(prompt.encode("utf-8"), add_bos=add_bos, special=True)
            L.llama_memory_clear(mem, True)
            llamacpp_batch.decode(L, ctx, ids, 0, True)      # every row: no output-row selection
            g_all.append(row_digest(row(len(ids) - 1)))
            L.llama_memory_clear(mem, True)
            llamacpp_batch.decode(L, ctx, ids, 0, False)
            ids_, sha_, tid_, tlg_, eog = greedy_steps(
                L, vocab, row, lambda t, p: llamacpp_batch.decode(L, ctx, t, p, False), len(ids), GREEDY_CAP, TOP)
            g_ids += ids_
            g_sha += sha_
            g_tid += tid_
            g_tlg += tlg_
            p_ids += ids
            p_off.append(len(p_ids))
            g_off.append(len(g_ids))
            g_eog.append(eog)
        data["greedy_prompt_off"] = np.array(p_off, np.int32)
        data["greedy_prompt_ids"] = np.array(p_ids, np.int32)
        data[f"{cfg}__greedy_off"] = np.array(g_off, np.int32)
        data[f"{cfg}__greedy_ids"] = np.array(g_ids, np.int32)
        data[f"{cfg}__greedy_eog"] = np.array(g_eog, np.int8)
        data[f"{cfg}__greedy_first_all_sha256"] = np.array(g_all)
        data[f"{cfg}__greedy_row_sha256"] = np.array(g_sha)
        data[f"{cfg}__greedy_top_ids"] = np.stack(g_tid)
        data[f"{cfg}__greedy_top_logits"] = np.stack(g_tlg)
        llm.close()
    np.savez_compressed(out, **data)


def main() -> int:
    return reference_main(__doc__, __file__, REF / "kv", run_llamacpp)


if __name__ == "__main__":
    sys.exit(main())
