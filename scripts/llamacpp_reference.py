"""Regenerate tests/data/reference/identity/*.npz: llama.cpp's logits on the real models at full
float32 precision, for the bit-identity tests (tests/test_fidelity_identity.py).

Two halves, because llama.cpp lives in its own venv (never a pyrt dependency):

    # 1. with pyrt's venv: fetch the models (pyrt's cache, PYRT_CACHE_DIR honoured) and call 2.
    python scripts/llamacpp_reference.py --llama-python ~/.cache/pyrt/avx2-venv/bin/python

    # 2. (called by 1) inside the llama.cpp venv, for one model file
    python scripts/llamacpp_reference.py --run MODEL.gguf OUT.npz CHAT_PROMPT

The llama.cpp venv holds llama-cpp-python 0.3.36 built for AVX2 without AVX-512/VNNI, the build
whose arithmetic pyrt reproduces (`bash benchmarks/build_llamacpp_avx2.sh` makes it).

What a file holds (all logits are llama.cpp's raw float32 output, before any softmax):
- `sha256`: of the model file the reference belongs to;
- `text_ids` [512]: the first 512 tokens of tests/data/reference/text_public.txt (BOS rule applied),
  evaluated in one batch from an empty cache (n_ctx 1024, n_batch = n_ubatch = 512);
  `text_sha256`: sha256 of the whole float32 logits array [512, n_vocab] (little-endian, C order),
  `text_row_sha256` [512]: the same per row (a mismatch names the first position that differs),
  `text_top_ids` / `text_top_logits` [512, 32]: the 32 largest logits of each row, exactly;
- greedy decoding of each prompt (prompts_public.txt, then the model's own chat prompt), from an
  empty cache: the prompt in one batch, then one token per decode call, argmax (lowest id on a
  tie), until an end-of-generation token (included) or GREEDY_CAP tokens. Flattened over prompts:
  `greedy_prompt_off` / `greedy_prompt_ids`, `greedy_off` / `greedy_ids` (the tokens, EOG
  included), `greedy_eog` [n_prompts] (1 if the run ended on an EOG token),
  `greedy_row_sha256` (per step: the logits the token was chosen from) and
  `greedy_top_ids` / `greedy_top_logits` [steps, 8].
"""
from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REF = ROOT / "tests" / "data" / "reference"
N_TEXT, N_CTX, GREEDY_CAP, TOP_TEXT, TOP_GREEDY = 512, 1024, 64, 32, 8

# name -> (pyrt registry name, chat prompt in the model's own template)
MODELS = {
    "smollm2-135m-q4_1": ("smollm2-135m",
                          "<|im_start|>user\nName three fruits.<|im_end|>\n<|im_start|>assistant\n"),
    "gemma-3-270m-q4_k_m": ("gemma3-270m",
                            "<start_of_turn>user\nName three fruits.<end_of_turn>\n<start_of_turn>model\n"),
}


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def row_digest(row) -> str:
    """sha256 of a float32 row (or array), little-endian C order: what the tests compare."""
    import numpy as np
    return hashlib.sha256(np.ascontiguousarray(row, dtype="<f4").tobytes()).hexdigest()


def top_k(row, k: int):
    """The k largest logits, by value, ties by lowest id (a stable, reproducible order)."""
    import numpy as np
    order = np.lexsort((np.arange(row.shape[0]), -row.astype(np.float64)))[:k]
    return order.astype(np.int32), row[order].astype(np.float32)


def greedy_steps(L, vocab, row, decode, pos: int, cap: int, n_top: int):
    """Greedy decoding from the logits row(-1) after position pos - 1, at most
    `cap` tokens: per step the chosen id, the row's digest, its top ids and
    logits; and 1 if it stopped at an end-of-generation token. `decode(ids,
    pos)` evaluates one token (last-row logits)."""
    ids, sha, tids, tlgs = [], [], [], []
    for _ in range(cap):
        r = row(-1)
        tid, tlg = top_k(r, n_top)
        nxt = int(tid[0])
        ids.append(nxt)
        sha.append(row_digest(r))
        tids.append(tid)
        tlgs.append(tlg)
        if L.llama_vocab_is_eog(vocab, nxt):
            return ids, sha, tids, tlgs, 1
        decode([nxt], pos)
        pos += 1
    return ids, sha, tids, tlgs, 0


def public_prompts() -> list[str]:
    lines = (REF / "prompts_public.txt").read_text(encoding="utf-8").splitlines()
    return [ln.replace("\\n", "\n") for ln in lines if ln]


def run_llamacpp(model: str, out: str, chat_prompt: str) -> None:
    import numpy as np
    import llama_cpp
    from llama_cpp import llama_cpp as L
    import llamacpp_batch

    llm = llama_cpp.Llama(model, n_ctx=N_CTX, n_batch=N_TEXT, n_ubatch=N_TEXT, n_threads=2,
                          n_threads_batch=2, logits_all=True, verbose=False)
    ctx = llm._ctx.ctx
    vocab = L.llama_model_get_vocab(llm._model.model)
    n_vocab = llm.n_vocab()
    mem = L.llama_get_memory(ctx)

    def decode(toks, pos0, all_logits):
        llamacpp_batch.decode(L, ctx, toks, pos0, all_logits)

    def row(i):
        return np.ctypeslib.as_array(L.llama_get_logits_ith(ctx, i), shape=(n_vocab,)).copy()

    text = (REF / "text_public.txt").read_text(encoding="utf-8")
    add_bos = bool(L.llama_vocab_get_add_bos(vocab))
    text_ids = llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=False)[:N_TEXT]
    assert len(text_ids) == N_TEXT
    L.llama_memory_clear(mem, True)
    decode(text_ids, 0, True)
    logits = np.stack([row(i) for i in range(N_TEXT)]).astype(np.float32)
    tops = [top_k(r, TOP_TEXT) for r in logits]

    p_off, p_ids, g_off, g_ids, g_eog, g_sha, g_tid, g_tlg = [0], [], [0], [], [], [], [], []
    for prompt in public_prompts() + [chat_prompt]:
        ids = llm.tokenize(prompt.encode("utf-8"), add_bos=add_bos, special=True)
        L.llama_memory_clear(mem, True)
        decode(ids, 0, False)
        ids_, sha_, tid_, tlg_, eog = greedy_steps(L, vocab, row, lambda t, p: decode(t, p, False), len(ids),
                                                   GREEDY_CAP, TOP_GREEDY)
        g_ids += ids_
        g_sha += sha_
        g_tid += tid_
        g_tlg += tlg_
        p_ids += ids
        p_off.append(len(p_ids))
        g_off.append(len(g_ids))
        g_eog.append(eog)

    np.savez_compressed(
        out, sha256=sha256_file(Path(model)), llama_cpp_version=llama_cpp.__version__,
        text_ids=np.array(text_ids, np.int32), text_sha256=row_digest(logits),
        text_row_sha256=np.array([row_digest(r) for r in logits]),
        text_top_ids=np.stack([t[0] for t in tops]), text_top_logits=np.stack([t[1] for t in tops]),
        greedy_prompt_off=np.array(p_off, np.int32), greedy_prompt_ids=np.array(p_ids, np.int32),
        greedy_off=np.array(g_off, np.int32), greedy_ids=np.array(g_ids, np.int32),
        greedy_eog=np.array(g_eog, np.int8), greedy_row_sha256=np.array(g_sha),
        greedy_top_ids=np.stack(g_tid), greedy_top_logits=np.stack(g_tlg))


def reference_main(doc: str, script: str, default_out: Path, run) -> int:
    """The command line both reference scripts share: `--run MODEL OUT CHAT_PROMPT` inside the
    llama.cpp venv calls run(); otherwise, for each model of MODELS (or --model ones), call this
    script's --run with --llama-python and write OUT-DIR/NAME.npz."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", nargs=3, metavar=("MODEL", "OUT", "CHAT_PROMPT"))
    ap.add_argument("--llama-python", help="python of the venv that has llama-cpp-python (AVX2 build)")
    ap.add_argument("--out-dir", default=str(default_out))
    ap.add_argument("--model", action="append", choices=sorted(MODELS), help="only these models")
    args = ap.parse_args()
    if args.run:
        run(*args.run)
        return 0
    if not args.llama_python:
        ap.error("--llama-python is required")
    sys.path.insert(0, str(ROOT))
    from pyrt.registry import ensure_model
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, (reg, chat) in MODELS.items():
        if args.model and name not in args.model:
            continue
        path = ensure_model(reg)
        out = out_dir / f"{name}.npz"
        subprocess.run([args.llama_python, script, "--run", str(path), str(out), chat], check=True)
        print(f"{out}  ({out.stat().st_size} bytes)")
    return 0


def main() -> int:
    return reference_main(__doc__, __file__, REF / "identity", run_llamacpp)


if __name__ == "__main__":
    sys.exit(main())
