"""ollama's API on `pyrt serve` (pyrt/server_ollama.py), driven over plain HTTP as
ollama clients drive it: NDJSON streams and single objects from /api/chat and
/api/generate (compared token for token with pyrt's own API), options, format,
the model listing endpoints, embeddings and the error shapes.

The official `ollama` client is not a dependency; these tests check the wire
shapes it parses. Cost: shares the live server of tests/test_server.py, ~10 s."""
from __future__ import annotations

import json
import math
from urllib.parse import urlsplit
import http.client

import numpy as np
import pytest

pytest.importorskip("openai")       # the shared server fixture lives in test_server.py

from test_server import MODEL, llm, server  # noqa: E402,F401  (fixtures)

CHAT = [{"role": "user", "content": "What is 2+2?"}]
GREEDY = {"temperature": 0, "repeat_penalty": 1.0}        # pyrt's API defaults, to compare outputs
FINAL_KEYS = {"total_duration", "load_duration", "prompt_eval_count", "prompt_eval_duration",
              "eval_count", "eval_duration"}


def post(server, path, body, headers=None):
    """POST JSON; returns (status, content type, [objects]) with one object per NDJSON line."""
    u = urlsplit(server)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=120)
    conn.request("POST", path, body=json.dumps(body).encode(),
                 headers={"Content-Type": "application/json", **(headers or {})})
    r = conn.getresponse()
    data = r.read().decode()
    conn.close()
    ctype = r.getheader("Content-Type")
    if ctype == "application/x-ndjson":
        assert data.endswith("\n")
        return r.status, ctype, [json.loads(line) for line in data.splitlines()]
    return r.status, ctype, [json.loads(data)]


def get(server, path):
    u = urlsplit(server)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    conn.request("GET", path)
    r = conn.getresponse()
    out = r.status, json.loads(r.read())
    conn.close()
    return out


def check_final(obj: dict) -> None:
    assert obj["done"] is True and obj["done_reason"] in ("stop", "length")
    assert FINAL_KEYS <= obj.keys()
    assert all(isinstance(obj[k], int) and obj[k] >= 0 for k in FINAL_KEYS)
    assert obj["total_duration"] >= obj["prompt_eval_duration"] + obj["eval_duration"] > 0
    assert obj["created_at"].endswith("Z") and "T" in obj["created_at"]


def test_chat_stream_and_single(server, llm):
    want = llm.create_chat_completion(CHAT, temperature=0, max_tokens=24)
    body = {"model": MODEL, "messages": CHAT, "options": dict(GREEDY, num_predict=24)}
    st, ctype, lines = post(server, "/api/chat", body)                       # streams by default
    assert st == 200 and ctype == "application/x-ndjson"
    assert len(lines) > 3 and all(x["done"] is False for x in lines[:-1])
    assert all(x["model"] == MODEL and x["message"]["role"] == "assistant" for x in lines)
    text = "".join(x["message"]["content"] for x in lines)
    assert text == want["choices"][0]["message"]["content"] and "4" in text
    last = lines[-1]
    check_final(last)
    assert last["message"]["content"] == ""
    assert last["done_reason"] == want["choices"][0]["finish_reason"]
    assert last["eval_count"] == want["usage"]["completion_tokens"]
    assert last["prompt_eval_count"] == want["usage"]["prompt_tokens"]
    st, ctype, [one] = post(server, "/api/chat", dict(body, stream=False, model="m:latest"))
    assert st == 200 and ctype == "application/json"
    check_final(one)
    assert one["message"] == {"role": "assistant", "content": text} and one["model"] == "m:latest"


def test_chat_options_and_length(server, llm):
    opts = {"temperature": 0, "repeat_penalty": 1.0, "num_predict": 6, "seed": 3, "top_k": 10,
            "stop": ["zzz"], "num_ctx": 99999, "num_thread": 64, "no_such_option": 1}
    st, _, [r] = post(server, "/api/chat", {"messages": CHAT, "options": opts, "stream": False,
                                            "keep_alive": "5m"})
    assert st == 200 and r["done_reason"] == "length" and r["eval_count"] == 6
    want = llm.create_chat_completion(CHAT, temperature=0, max_tokens=6)["choices"][0]["message"]["content"]
    assert r["message"]["content"] == want
    # stop strings end the reply before them
    full = r["message"]["content"]
    cut = full.split()[1]
    st, _, [r2] = post(server, "/api/chat", {"messages": CHAT, "stream": False,
                                             "options": dict(GREEDY, num_predict=6, stop=[cut])})
    assert r2["message"]["content"] == full[:full.index(cut)] and r2["done_reason"] == "stop"


def test_generate_templated_raw_and_suffix(server, llm):
    # not raw: the prompt is one user turn in the chat template, as /api/chat
    st, _, [g] = post(server, "/api/generate", {"prompt": "What is 2+2?", "stream": False,
                                                "options": dict(GREEDY, num_predict=16)})
    want = llm.create_chat_completion(CHAT, temperature=0, max_tokens=16)["choices"][0]["message"]["content"]
    assert st == 200 and g["response"] == want
    check_final(g)
    # a system prompt changes the rendered prompt
    st, _, [gs] = post(server, "/api/generate", {"prompt": "What is 2+2?", "system": "Answer in French.",
                                                 "stream": False, "options": dict(GREEDY, num_predict=16)})
    want_s = llm.create_chat_completion([{"role": "system", "content": "Answer in French."}] + CHAT,
                                        temperature=0, max_tokens=16)["choices"][0]["message"]["content"]
    assert gs["response"] == want_s and gs["prompt_eval_count"] != g["prompt_eval_count"]
    # raw: the prompt as is, streamed
    st, _, lines = post(server, "/api/generate", {"prompt": "The capital of France is", "raw": True,
                                                  "options": dict(GREEDY, num_predict=8)})
    want = llm.create_completion("The capital of France is", temperature=0, max_tokens=8)
    assert "".join(x["response"] for x in lines) == want["choices"][0]["text"]
    assert all(x["done"] is False for x in lines[:-1]) and lines[-1]["response"] == ""
    check_final(lines[-1])
    assert lines[-1]["eval_count"] == 8 and lines[-1]["done_reason"] == "length"
    # suffix: filled in the middle (SmolLM2 has no FIM tokens: the suffix follows the text)
    st, _, [s] = post(server, "/api/generate", {"prompt": "def add(a, b):", "suffix": "\n# end", "stream": False,
                                                "options": dict(GREEDY, num_predict=4)})
    assert st == 200 and s["response"].endswith("\n# end")
    # an empty prompt "loads" the model
    st, _, [ld] = post(server, "/api/generate", {"model": MODEL})
    assert st == 200 and ld["done"] is True and ld["done_reason"] == "load" and ld["response"] == ""
    st, _, [lc] = post(server, "/api/chat", {"model": MODEL, "messages": []})
    assert lc["done_reason"] == "load" and lc["message"]["content"] == ""


def test_format_json_and_schema(server):
    st, _, [r] = post(server, "/api/chat", {"messages": [{"role": "user", "content": "Give a JSON object."}],
                                            "format": "json", "stream": False,
                                            "options": {"num_predict": 40, "seed": 1}})
    assert st == 200
    if r["done_reason"] == "stop":
        assert isinstance(json.loads(r["message"]["content"]), dict)
    schema = {"type": "object", "properties": {"age": {"type": "integer", "minimum": 0, "maximum": 99}},
              "required": ["age"], "additionalProperties": False}
    st, _, lines = post(server, "/api/generate", {"prompt": "How old is Tom?", "format": schema,
                                                  "options": {"num_predict": 30, "seed": 2}})
    text = "".join(x["response"] for x in lines)
    assert lines[-1]["done_reason"] == "stop"
    obj = json.loads(text)
    assert list(obj) == ["age"] and 0 <= obj["age"] <= 99
    st, _, [e] = post(server, "/api/chat", {"messages": CHAT, "format": "yaml"})
    assert st == 400 and "format" in e["error"]
    st, _, [e] = post(server, "/api/chat", {"messages": CHAT, "format": {"type": "object", "properties": 5}})
    assert st == 400 and e["error"].startswith("format")


@pytest.mark.parametrize("path, body, status, words", [
    ("/api/chat", {"model": "llama3.2", "messages": CHAT}, 404, "does not exist"),
    ("/api/generate", {"model": "llama3.2:1b", "prompt": "x"}, 404, "does not exist"),
    ("/api/show", {"model": "llama3.2"}, 404, "does not exist"),
    ("/api/show", {}, 400, "model is required"),
    ("/api/chat", {"messages": [{"role": "user", "content": "hi", "images": ["aGk="]}]}, 400, "images"),
    ("/api/generate", {"prompt": "hi", "images": ["aGk="]}, 400, "images"),
    ("/api/chat", {"messages": CHAT, "think": True}, 400, "thinking"),
    ("/api/chat", {"messages": CHAT, "options": {"temperature": "hot"}}, 400, "temperature"),
    ("/api/chat", {"messages": CHAT, "options": {"num_predict": -3}}, 400, "num_predict"),
    ("/api/chat", {"messages": CHAT, "options": [1]}, 400, "options"),
    ("/api/chat", {"messages": CHAT, "stream": "yes"}, 400, "stream"),
    ("/api/chat", {"messages": "hi"}, 400, "messages"),
    ("/api/chat", {"messages": [{"role": "user"}]}, 400, "content"),
    ("/api/generate", {"prompt": "hi", "template": "{{ .Prompt }}"}, 400, "template"),
    ("/api/generate", {"prompt": "hi", "context": [1, 2, 3]}, 400, "context"),
    ("/api/generate", {"prompt": 5}, 400, "prompt"),
    ("/api/embed", {"input": 5}, 400, "input"),
    ("/api/pull", {"model": "llama3.2"}, 501, "one model"),
    ("/api/nothing", {}, 404, "unknown endpoint"),
])
def test_errors_are_ollama_shaped(server, path, body, status, words):
    st, ctype, [e] = post(server, path, body)
    assert st == status and ctype == "application/json"
    assert list(e) == ["error"] and isinstance(e["error"], str) and words in e["error"], e


def test_prompt_too_long_is_400_before_streaming(server):
    st, _, [e] = post(server, "/api/chat", {"messages": [{"role": "user", "content": "word " * 1100}]})
    assert st == 400 and "context window" in e["error"]


def test_listing_endpoints(server, llm):
    st, tags = get(server, "/api/tags")
    assert st == 200 and len(tags["models"]) == 1
    m = tags["models"][0]
    assert m["name"] == m["model"] == MODEL + ":latest"
    assert m["size"] > 50_000_000 and isinstance(m["digest"], str) and m["modified_at"].endswith("Z")
    assert m["details"] == {"parent_model": "", "format": "gguf", "family": "llama", "families": ["llama"],
                            "parameter_size": "134.52M", "quantization_level": "Q4_1"}
    st, ps = get(server, "/api/ps")
    p = ps["models"][0]
    assert p["name"] == m["name"] and p["context_length"] == 1024 and p["size_vram"] == 0 and p["expires_at"]
    st, v = get(server, "/api/version")
    assert st == 200 and all(x.isdigit() for x in v["version"].split("."))
    for key in ("model", "name"):                                  # older clients send "name"
        st, _, [show] = post(server, "/api/show", {key: m["name"]})
        assert st == 200
    assert show["details"] == m["details"] and "completion" in show["capabilities"]
    assert show["model_info"]["general.architecture"] == "llama"
    assert show["model_info"]["general.parameter_count"] == llm.n_params()
    assert show["model_info"]["tokenizer.ggml.tokens"] is None       # arrays left out, as ollama
    assert "<|im_start|>" in show["template"]


def test_embeddings(server, llm):
    texts = ["hello world", "the stock market"]
    st, _, [r] = post(server, "/api/embed", {"model": MODEL, "input": texts})
    assert st == 200 and r["model"] == MODEL
    got = np.array(r["embeddings"])
    assert got.shape == (2, 576) and np.allclose(got, np.array(llm.embed(texts)), atol=1e-5)
    assert r["prompt_eval_count"] == sum(len(llm.tokenize(t)) for t in texts) and r["total_duration"] > 0
    st, _, [one] = post(server, "/api/embed", {"input": "hello world"})
    assert np.allclose(one["embeddings"][0], got[0], atol=1e-5)
    st, _, [old] = post(server, "/api/embeddings", {"prompt": "hello world"})      # not normalized
    v = np.array(old["embedding"])
    assert not math.isclose(np.linalg.norm(v), 1, rel_tol=1e-3)
    assert np.allclose(v / np.linalg.norm(v), got[0], atol=1e-5)
    st, _, [empty] = post(server, "/api/embeddings", {"prompt": ""})
    assert empty == {"embedding": []}


def test_official_ollama_client(server):
    """The `ollama` package itself, where it is installed (it is not a dependency)."""
    ollama = pytest.importorskip("ollama")
    c = ollama.Client(host=server[:-3])
    names = [m.model for m in c.list().models]
    assert names == [MODEL + ":latest"]
    assert c.show(MODEL).details.quantization_level == "Q4_1"
    assert c.ps().models[0].context_length == 1024
    r = c.chat(model=MODEL, messages=CHAT, options=dict(GREEDY, num_predict=16))
    parts = list(c.chat(model=names[0], messages=CHAT, stream=True, options=dict(GREEDY, num_predict=16)))
    assert "".join(p.message.content for p in parts) == r.message.content and "4" in r.message.content
    assert parts[-1].done and parts[-1].eval_count == r.eval_count
    g = c.generate(model=MODEL, prompt="The capital of France is", raw=True, options=dict(GREEDY, num_predict=4))
    assert g.response.startswith(" Paris") and g.done_reason == "length"
    assert len(c.embed(model=MODEL, input=["a", "b"]).embeddings) == 2
    with pytest.raises(ollama.ResponseError) as ei:
        c.chat(model="llama3.2", messages=CHAT)
    assert ei.value.status_code == 404
