"""Regenerate tests/data/dry_reference.json: llama.cpp's DRY penalties on SmolLM2's vocabulary.

Runs inside the llama.cpp venv (llama-cpp-python 0.3.36, never a pyrt dependency):

    ~/.cache/pyrt/avx2-venv/bin/python scripts/dry_reference.py MODEL.gguf tests/data/dry_reference.json

For each case (a token history and DRY parameters, with llama.cpp's default sequence breakers
"\\n", ":", "\\"", "*" resolved against the model's vocabulary by llama.cpp itself) it applies
llama.cpp's DRY sampler to all-zero logits after accepting the history and records every
token whose logit moved: {token id: penalty}. tests/test_sampler.py checks pyrt's DRY (breaker
strings turned into token sequences by pyrt.sampling.dry_breaker_sequences) against it.
"""
from __future__ import annotations

import ctypes
import json
import random
import sys

BREAKERS = ["\n", ":", "\"", "*"]

TEXTS = [
    # a greedy loop SmolLM2 falls into
    "The sky is a canvas of colors, a canvas of light, a canvas of dreams.\n\nThe sky is a canvas of "
    "light, a canvas of dreams.\n\nThe sky is a canvas of light, a canvas of",
    # a repeat that runs across a ':' breaker, and one after it
    "Question: what is the answer to the question? Answer: the answer to the question is the answer "
    "to the",
    # quotes and stars inside repeats
    'He said "yes it is" and she said "yes it is" and they said *yes it* and "yes it',
    # a multi-token repeat without breakers
    "one two three four five six seven one two three four five six seven one two three four five",
]
PARAMS = [(0.8, 1.75, 2, 64), (1.0, 2.0, 1, 32), (0.5, 1.5, 3, -1), (0.8, 1.75, 0, 16)]


def main() -> int:
    import llama_cpp
    model_path, out_path = sys.argv[1], sys.argv[2]
    llm = llama_cpp.Llama(model_path=model_path, vocab_only=True, verbose=False)
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)
    rng = random.Random(7)
    histories = [llm.tokenize(t.encode(), add_bos=False, special=False) for t in TEXTS]
    for _ in range(3):            # random histories over a few tokens, with the breaker tokens in
        pool = [rng.randrange(n_vocab) for _ in range(5)] + llm.tokenize(b"\n:", add_bos=False)
        histories.append([rng.choice(pool) for _ in range(rng.randrange(20, 80))])
    cases = []
    arr = (ctypes.c_char_p * len(BREAKERS))(*[b.encode() for b in BREAKERS])
    for hist in histories:
        for mult, base, allowed, last_n in PARAMS:
            smpl = llama_cpp.llama_sampler_init_dry(vocab, mult, base, allowed,
                                                    last_n if last_n >= 0 else 4096, arr, len(BREAKERS))
            for t in hist:
                llama_cpp.llama_sampler_accept(smpl, t)
            data = (llama_cpp.llama_token_data * n_vocab)()
            for i in range(n_vocab):
                data[i].id, data[i].logit, data[i].p = i, 0.0, 0.0
            cur = llama_cpp.llama_token_data_array(data=data, size=n_vocab, selected=-1, sorted=False)
            llama_cpp.llama_sampler_apply(smpl, ctypes.byref(cur))
            pen = {int(data[i].id): -float(data[i].logit) for i in range(cur.size) if data[i].logit != 0.0}
            llama_cpp.llama_sampler_free(smpl)
            cases.append({"history": hist, "multiplier": mult, "base": base, "allowed_length": allowed,
                          "penalty_last_n": last_n, "penalties": pen})
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump({"breakers": BREAKERS, "n_vocab": n_vocab, "cases": cases}, f)
    print(f"{out_path}: {len(cases)} cases, {sum(bool(c['penalties']) for c in cases)} with penalties")
    return 0


if __name__ == "__main__":
    sys.exit(main())
