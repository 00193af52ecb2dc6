"""Stream a completion token by token, and stop at a stop string.

    python examples/streaming.py [MODEL]
"""
import sys

import pyrt

model = sys.argv[1] if len(sys.argv) > 1 else "smollm2-135m"
with pyrt.Llama(model, n_ctx=512) as llm:
    for chunk in llm.create_completion("Once upon a time, there was a little", max_tokens=48,
                                       temperature=0, stop=["."], stream=True):
        choice = chunk["choices"][0]
        print(choice["text"], end="", flush=True)
        if choice["finish_reason"]:
            print(f"\n[finish_reason={choice['finish_reason']}]")
