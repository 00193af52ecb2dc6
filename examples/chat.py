"""A two-turn chat with the model's chat template; the second turn reuses the
KV cache of the first, so only its new tokens are evaluated.

    python examples/chat.py [MODEL]
"""
import sys

import pyrt

model = sys.argv[1] if len(sys.argv) > 1 else "smollm2-135m"
with pyrt.Llama(model, n_ctx=1024) as llm:
    messages = [{"role": "user", "content": "What is 2+2?"}]
    for question in (None, "And what is 3+3?"):
        if question:
            messages.append({"role": "user", "content": question})
        reply = llm.create_chat_completion(messages, max_tokens=48, temperature=0)
        answer = reply["choices"][0]["message"]
        messages.append(answer)
        usage = reply["usage"]
        print(f"user: {messages[-2]['content']}")
        print(f"assistant: {answer['content']}")
        print(f"  [{usage['prompt_tokens']} prompt tokens, "
              f"{usage['prompt_tokens_details']['cached_tokens']} reused from the cache]")
