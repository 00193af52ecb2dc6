"""Talk to `pyrt serve` with the official openai package.

    pyrt serve &                                   # http://127.0.0.1:8080/v1
    python examples/server_client.py [BASE_URL]
"""
import sys

from openai import OpenAI

base_url = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8080/v1"
client = OpenAI(base_url=base_url, api_key="unused")     # pyrt serve --api-key KEY to require one

model = client.models.list().data[0].id
print(f"model: {model}")

reply = client.chat.completions.create(
    model=model, messages=[{"role": "user", "content": "What is 2+2?"}], max_tokens=32, temperature=0)
print(f"chat: {reply.choices[0].message.content}")

print("stream: ", end="")
for chunk in client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Name a color."}], max_tokens=16,
        temperature=0, stream=True):
    if chunk.choices and chunk.choices[0].delta.content:
        print(chunk.choices[0].delta.content, end="", flush=True)
print()

emb = client.embeddings.create(model=model, input=["hello", "world"])
print(f"embeddings: {len(emb.data)} x {len(emb.data[0].embedding)}")
