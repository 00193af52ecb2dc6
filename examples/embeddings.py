"""Sentence embeddings (mean-pooled, normalized) and cosine similarity.

    python examples/embeddings.py [MODEL]
"""
import sys

import numpy as np

import pyrt

model = sys.argv[1] if len(sys.argv) > 1 else "smollm2-135m"
texts = ["The cat sat on the mat.", "A kitten is sitting on a rug.", "Stock prices fell sharply today."]
with pyrt.Llama(model, n_ctx=512) as llm:
    vecs = np.array(llm.embed(texts))          # (3, n_embd), unit length
    sims = vecs @ vecs.T
    print(f"{len(texts)} embeddings of dimension {vecs.shape[1]}")
    for i in range(1, len(texts)):
        print(f"cos({texts[0]!r}, {texts[i]!r}) = {sims[0, i]:.3f}")
