"""Hello, pyrt: load a model and complete a prompt.

    python examples/hello.py [MODEL]      # MODEL: a GGUF path or known name (default smollm2-135m)
"""
import sys

import pyrt

model = sys.argv[1] if len(sys.argv) > 1 else "smollm2-135m"
with pyrt.Llama(model, n_ctx=512) as llm:
    out = llm("The capital of France is", max_tokens=16, temperature=0)
    print(out["choices"][0]["text"].strip())
    print(f"({out['usage']['completion_tokens']} tokens, finish_reason={out['choices'][0]['finish_reason']})")
