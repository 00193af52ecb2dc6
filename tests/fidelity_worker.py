"""One kernel table's run of the bit-identity check (tests/test_fidelity_identity.py starts it
in a fresh process per table, because the table is chosen once per process from the
environment: PYRT_KERNELS, PYRT_NO_VNNI).

    python tests/fidelity_worker.py MODEL.gguf REFERENCE.npz OUT.json
    python tests/fidelity_worker.py --fingerprint      # [table name, fingerprint] only

Compares pyrt's float32 logits with llama.cpp's full-precision reference (made by
scripts/llamacpp_reference.py; its docstring describes the file) and writes what it found:
the active table and a fingerprint of its entries, the first text position whose logits differ,
and per greedy prompt the tokens, where generation stopped and the first step whose logits
differ. Deciding pass/fail is the test's job; this only measures.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def digest(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a, dtype="<f4").tobytes()).hexdigest()


def table_fingerprint() -> tuple[str, str]:
    """The active table's name and a digest of every entry it holds, as offsets inside the
    library (so two processes that picked the same functions give the same digest)."""
    from kernel_table import kffi, klib
    from pyrt._native import ffi, lib
    active = lib.pyrt_kernels_active()
    k = klib.pyrt_kernels_get(active)
    base = int(kffi.cast("uintptr_t", klib.pyrt_kernels_get(lib.PYRT_KERNELS_SCALAR).fp32_to_fp16))
    h = hashlib.sha256()

    def walk(obj, ctype):
        for name, field in ctype.fields:
            v = getattr(obj, name)
            t = field.type
            if t.kind == "array":
                for i in range(t.length):
                    walk(v[i], t.item)
            elif t.kind == "function" or (t.kind == "pointer" and t.item.kind == "function"):
                p = int(kffi.cast("uintptr_t", v))
                h.update(f"{name}:{p - base if p else 0};".encode())
            elif t.kind == "primitive":
                h.update(f"{name}={v};".encode())

    walk(k[0], kffi.typeof(k[0]))
    return ffi.string(lib.pyrt_kernels_name(active)).decode(), h.hexdigest()[:16]


def main(model: str, ref_path: str, out_path: str) -> int:
    import pyrt
    from pyrt.generate import generate_step
    from pyrt.sampling import SamplingParams

    ref = np.load(ref_path)
    name, fingerprint = table_fingerprint()
    result: dict = {"kernels": name, "fingerprint": fingerprint}
    with pyrt.Llama(model, n_ctx=1024, n_batch=512, n_threads=2, seed=0) as llm:
        # 1. the reference text in one batch, every position
        ids = ref["text_ids"].tolist()
        x = llm.logits(ids)
        assert x.dtype == np.float32
        rows = ref["text_row_sha256"]
        bad = [i for i in range(len(ids)) if digest(x[i]) != rows[i]]
        result["text"] = {"n": len(ids), "whole_equal": digest(x) == str(ref["text_sha256"]),
                          "rows_differing": len(bad), "first_bad_row": bad[0] if bad else None}
        if bad:
            i = bad[0]
            t = ref["text_top_ids"][i]
            result["text"]["max_abs_diff_top32_there"] = float(np.abs(x[i, t] - ref["text_top_logits"][i]).max())
        # 2. greedy decoding per prompt from an empty cache, stopping at end-of-generation
        cap = int(max(np.diff(ref["greedy_off"])))
        greedy = []
        po, pi, go, gi = ref["greedy_prompt_off"], ref["greedy_prompt_ids"], ref["greedy_off"], ref["greedy_ids"]
        # $PYRT_IDENTITY_PROMPTS=N checks only the first N greedy prompts (the sanitizer job,
        # where every step costs ~3x); the test says how many ran
        n_prompts = int(os.environ.get("PYRT_IDENTITY_PROMPTS") or 0) or len(po) - 1
        for p in range(min(n_prompts, len(po) - 1)):
            prompt = pi[po[p]:po[p + 1]].tolist()
            want = gi[go[p]:go[p + 1]].tolist()
            shas = ref["greedy_row_sha256"][go[p]:go[p + 1]]
            llm.reset()
            steps = generate_step(llm, prompt, SamplingParams(temperature=0.0), max_tokens=cap)
            toks, first_bad = [], None
            try:
                for k, (tok, logits) in enumerate(steps):
                    toks.append(int(tok))
                    if first_bad is None and (k >= len(shas) or digest(np.asarray(logits)) != shas[k]):
                        first_bad = k
            finally:
                steps.close()
            greedy.append({"prompt_ids": prompt, "ours": toks, "ref": want, "ref_eog": bool(ref["greedy_eog"][p]),
                           "ours_eog": len(toks) < cap, "first_bad_step": first_bad,
                           "eog_is_eog": bool(llm.tokenizer.is_eog(want[-1])) if want else None})
        result["greedy"] = greedy
    Path(out_path).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    if sys.argv[1:] == ["--fingerprint"]:
        print(json.dumps(table_fingerprint()))
        sys.exit(0)
    sys.exit(main(*sys.argv[1:4]))
