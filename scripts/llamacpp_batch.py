"""One llama_decode call on sequence 0, for the scripts that run inside a llama.cpp venv
(scripts/arch_reference.py, llamacpp_reference.py, kv_reference.py, benchmarks/llamacpp_bench.py)."""
from __future__ import annotations


def decode(L, ctx, toks, pos0: int, all_logits: bool) -> None:
    """Evaluate `toks` at positions pos0.. on sequence 0 of llama.cpp context `ctx` (L is
    llama_cpp.llama_cpp); logits for every token when `all_logits`, else for the last one."""
    batch = L.llama_batch_init(len(toks), 0, 1)
    try:
        batch.n_tokens = len(toks)
        for i, t in enumerate(toks):
            batch.token[i] = int(t)
            batch.pos[i] = pos0 + i
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = 0
            batch.logits[i] = all_logits or i == len(toks) - 1
        rc = L.llama_decode(ctx, batch)
        if rc != 0:
            raise RuntimeError(f"llama_decode failed: {rc}")
    finally:
        L.llama_batch_free(batch)
