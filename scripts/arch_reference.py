"""Regenerate tests/data/arch/*.npz: llama.cpp's outputs on the synthetic architecture models.

Two halves, because llama.cpp lives in its own venv (never a pyrt dependency):

    # 1. with pyrt's venv: write the models (tests/arch_models.py) and, for each, call 2.
    python scripts/arch_reference.py --llama-python ~/.cache/pyrt/avx2-venv/bin/python

    # 2. (called by 1) inside the llama.cpp venv: logits + greedy tokens for one file
    python scripts/arch_reference.py --run MODEL.gguf OUT.npz [--n-ctx N]

The llama.cpp venv holds llama-cpp-python 0.3.36 built from its sdist for AVX2 (the build whose
arithmetic pyrt reproduces):
    CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON
      -DGGML_AVX512=OFF -DGGML_AVX_VNNI=OFF -DGGML_BMI2=OFF" pip install llama_cpp_python-0.3.36.tar.gz

Each npz holds: sha256 (of the model file), tokens (64 ids), logits (float32 [64, n_vocab], the
whole sequence in one batch), prompt (the first 8 of those ids) and greedy (32 tokens of greedy
decoding after the prompt, one token per decode call).
"""
from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
N_GREEDY, N_PROMPT = 32, 8


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def run_llamacpp(model: str, out: str, n_ctx: int) -> None:
    import numpy as np
    import llama_cpp
    from llama_cpp import llama_cpp as L
    import llamacpp_batch

    sys.path.insert(0, str(ROOT / "tests"))
    llm = llama_cpp.Llama(model, n_ctx=n_ctx, n_batch=64, n_ubatch=64, n_threads=2,
                          n_threads_batch=2, logits_all=True, verbose=False)
    ctx = llm._ctx.ctx
    n_vocab = llm.n_vocab()
    mem = L.llama_get_memory(ctx)
    rng = np.random.default_rng(1234)            # = arch_models.parity_tokens
    tokens = rng.integers(0, n_vocab - 3, 64).tolist()

    def decode(toks, pos0, all_logits):
        llamacpp_batch.decode(L, ctx, toks, pos0, all_logits)

    L.llama_memory_clear(mem, True)
    decode(tokens, 0, True)
    logits = np.array([np.ctypeslib.as_array(L.llama_get_logits_ith(ctx, i), shape=(n_vocab,))
                       for i in range(len(tokens))], dtype=np.float32)
    L.llama_memory_clear(mem, True)
    prompt = tokens[:N_PROMPT]
    decode(prompt, 0, False)
    greedy, pos = [], len(prompt)
    for _ in range(N_GREEDY):
        row = np.ctypeslib.as_array(L.llama_get_logits_ith(ctx, -1), shape=(n_vocab,))
        nxt = int(np.argmax(row))
        greedy.append(nxt)
        decode([nxt], pos, False)
        pos += 1
    np.savez_compressed(out, sha256=sha256(Path(model)), tokens=np.array(tokens, np.int32),
                        logits=logits, prompt=np.array(prompt, np.int32),
                        greedy=np.array(greedy, np.int32))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", nargs=2, metavar=("MODEL", "OUT"))
    ap.add_argument("--n-ctx", type=int, default=128)
    ap.add_argument("--only", help="regenerate only this case (arch_models.ARCH_CASES key)")
    ap.add_argument("--types", nargs="*", help="only these weight types (arch_models.WEIGHT_TYPES keys)")
    ap.add_argument("--llama-python", help="python of the venv that has llama-cpp-python (AVX2 build)")
    ap.add_argument("--models-dir", default="/tmp/pyrt-arch-models")
    ap.add_argument("--out-dir", default=str(ROOT / "tests" / "data" / "arch"))
    args = ap.parse_args()
    if args.run:
        run_llamacpp(*args.run, args.n_ctx)
        return 0
    if not args.llama_python:
        ap.error("--llama-python is required")
    sys.path.insert(0, str(ROOT / "tests"))
    from arch_models import ARCH_CASES, LONG_CTX, PARITY_N_CTX, WEIGHT_TYPES, write_arch_model
    models, out_dir = Path(args.models_dir), Path(args.out_dir)
    models.mkdir(parents=True, exist_ok=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    for case in ARCH_CASES:
        if args.only and case != args.only:
            continue
        for wt in WEIGHT_TYPES:
            if args.types and wt not in args.types:
                continue
            path = write_arch_model(models / f"{case}-{wt}.gguf", case, wt)
            runs = [(PARITY_N_CTX, out_dir / f"{case}-{wt}.npz")]
            if case in LONG_CTX:
                runs.append((LONG_CTX[case], out_dir / f"{case}-{wt}-ctx{LONG_CTX[case]}.npz"))
            for n_ctx, out in runs:
                subprocess.run([args.llama_python, __file__, "--run", str(path), str(out),
                                "--n-ctx", str(n_ctx)], check=True)
                print(f"{out}  ({path.stat().st_size} byte model, n_ctx {n_ctx})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
