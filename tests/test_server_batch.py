"""pyrt serve's batched requests, through the official `openai` client and raw
HTTP: /v1/completions with a list of prompts, n > 1 on both endpoints (the
choices of a stream carry their index), one generation slot per completion
running at once (a request that does not fit the free slots waits its turn),
and clear 400s for what can never run."""
from __future__ import annotations

import json
import socket
import threading
import time

import pytest

import pyrt
from pyrt.server import Server

openai = pytest.importorskip("openai")

PROMPTS = ["Once upon a time", "The capital of France is", "def add(a, b):"]
CHAT = [{"role": "user", "content": "Name a fruit."}]


@pytest.fixture(scope="module")
def llm(smollm2_path):
    with pyrt.Llama(str(smollm2_path), n_ctx=256, n_threads=2, n_parallel=3, seed=1) as m:
        yield m


@pytest.fixture(scope="module")
def srv(llm):
    s = Server(llm, "127.0.0.1", 0, alias="m", max_queue=8)
    threading.Thread(target=s.serve_forever, daemon=True).start()
    yield s
    s.shutdown()


@pytest.fixture(scope="module")
def client(srv):
    return openai.OpenAI(base_url=srv.url, api_key="unused", max_retries=0, timeout=300)


def _post(url: str, body: dict) -> tuple[int, dict]:
    import urllib.error
    import urllib.request
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=300) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_prompt_list_and_n(client, llm):
    kw = dict(max_tokens=8, temperature=0.9, seed=3)
    want = llm.create_completion(PROMPTS, n=2, **kw)
    r = client.completions.create(model="m", prompt=PROMPTS, n=2, **kw)
    assert [c.index for c in r.choices] == list(range(6))
    assert [c.text for c in r.choices] == [c["text"] for c in want["choices"]]
    assert r.usage.completion_tokens == want["usage"]["completion_tokens"]
    assert r.usage.prompt_tokens == want["usage"]["prompt_tokens"]
    # streamed: chunks of all choices interleave, each with its index; usage once at the end
    texts, finish, usage = [""] * 6, [None] * 6, []
    for c in client.completions.create(model="m", prompt=PROMPTS, n=2, stream=True,
                                       stream_options={"include_usage": True}, **kw):
        if c.usage is not None:
            usage.append(c.usage)
        for ch in c.choices:
            assert finish[ch.index] is None
            texts[ch.index] += ch.text
            finish[ch.index] = ch.finish_reason
    assert texts == [c.text for c in r.choices] and all(finish)
    assert len(usage) == 1 and usage[0].completion_tokens == r.usage.completion_tokens
    # token-id prompts, and a flat list of ids as one prompt
    ids = [llm.tokenize(p) for p in PROMPTS]
    r2 = client.completions.create(model="m", prompt=ids, n=2, **kw)
    assert [c.text for c in r2.choices] == [c.text for c in r.choices]
    r3 = client.completions.create(model="m", prompt=ids[1], **kw)
    assert len(r3.choices) == 1 and r3.choices[0].text == r.choices[2].text


def test_chat_n(client, llm):
    kw = dict(max_tokens=8, temperature=1.0, seed=5)
    want = [c["message"]["content"] for c in llm.create_chat_completion(CHAT, n=3, **kw)["choices"]]
    r = client.chat.completions.create(model="m", messages=CHAT, n=3, **kw)
    assert [c.message.content for c in r.choices] == want and [c.index for c in r.choices] == [0, 1, 2]
    texts = [""] * 3
    for c in client.chat.completions.create(model="m", messages=CHAT, n=3, stream=True, **kw):
        for ch in c.choices:
            texts[ch.index] += ch.delta.content or ""
    assert texts == want


@pytest.mark.parametrize("body, param, words", [
    ({"prompt": []}, "prompt", "empty"),
    ({"prompt": ["a", 1]}, "prompt", "list"),
    ({"prompt": [["a"]]}, "prompt", "list"),
    ({"prompt": [{"x": 1}]}, "prompt", "list"),
    ({"prompt": ["x"] * 129}, "prompt", "at most 128"),
    ({"prompt": ["x"] * 50, "n": 3}, "prompt", "150 completions"),
    ({"prompt": "x", "n": 0}, "n", "[1, 128]"),
    ({"prompt": "x", "n": "2"}, "n", "[1, 128]"),
    ({"prompt": "x", "n": True}, "n", "[1, 128]"),
    ({"prompt": ["a", ""]}, "prompt", "prompt[1]"),
])
def test_bad_batches_are_400(srv, body, param, words):
    st, r = _post(srv.url + "/completions", dict(body, max_tokens=2))
    assert st == 400 and r["error"]["param"] == param and words in r["error"]["message"], r
    st, r = _post(srv.url + "/chat/completions", {"messages": CHAT, "n": 200})
    assert st == 400 and r["error"]["param"] == "n"


def _stream_socket(srv, body: dict) -> socket.socket:
    host, port = srv.host, srv.port
    data = json.dumps(body).encode()
    s = socket.create_connection((host, port), timeout=300)
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
              b"Content-Length: " + str(len(data)).encode() + b"\r\n\r\n" + data)
    return s


def _read_until(s: socket.socket, marker: bytes) -> bytes:
    buf = b""
    while marker not in buf:
        part = s.recv(65536)
        assert part, buf
        buf += part
    return buf


def _wait(cond, what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def test_one_slot_per_completion_and_queueing(srv, client, llm):
    """A streaming n=2 request holds 2 of the 3 slots; a second n=2 request
    waits in the queue until they are free, then runs; a request with more
    completions than slots runs them that many at a time."""
    eos_ban = {str(llm.token_eos()): -100}
    long = {"prompt": "Once upon a time", "n": 2, "max_tokens": 2000, "stream": True, "logit_bias": eos_ban}
    a = _stream_socket(srv, long)
    try:
        _read_until(a, b"data: ")
        w = srv.app.worker
        _wait(lambda: w.slots()["busy"] == 2, "2 slots busy")
        assert w.slots()["running"] == 1
        out: dict = {}
        t = threading.Thread(target=lambda: out.setdefault("r", _post(srv.url + "/completions", {
            "prompt": "Hello", "n": 2, "max_tokens": 3})))
        t.start()
        _wait(lambda: w.slots()["queued"] == 1, "the second request queued")
        assert w.slots()["busy"] == 2
    finally:
        a.close()                              # disconnect: the first request is cancelled
    t.join(300)
    st, r = out["r"]
    assert st == 200 and len(r["choices"]) == 2
    _wait(lambda: w.slots()["busy"] == 0, "slots freed")
    r = client.completions.create(model="m", prompt=PROMPTS + ["Hi", "Yes"], max_tokens=4, temperature=0)
    assert [c.index for c in r.choices] == [0, 1, 2, 3, 4]
    assert sorted(llm._engine._free) == [0, 1, 2]


def test_disconnect_cancels_every_choice(srv, llm):
    eos_ban = {str(llm.token_eos()): -100}
    a = _stream_socket(srv, {"prompt": PROMPTS, "max_tokens": 2000, "stream": True, "logit_bias": eos_ban})
    _read_until(a, b'"index": 2')
    a.close()
    w = srv.app.worker
    _wait(lambda: w.slots()["busy"] == 0 and sorted(llm._engine._free) == [0, 1, 2], "cancelled")


@pytest.mark.parametrize("n_parallel", [1, 2])
def test_timeout_during_prompt_with_a_batch(smollm2_path, n_parallel):
    """Prompts still being evaluated at --request-timeout: 503 request_timeout
    (batched, or one after another on one slot)."""
    with pyrt.Llama(str(smollm2_path), n_ctx=4096, n_threads=2, n_parallel=n_parallel) as big:
        s = Server(big, "127.0.0.1", 0, request_timeout=0.01)
        threading.Thread(target=s.serve_forever, daemon=True).start()
        try:
            words = [" ".join(f"w{i}{k}" for i in range(700)) for k in range(2)]     # long, not cached
            st, r = _post(s.url + "/completions", {"prompt": words, "max_tokens": 4})
            assert st == 503 and r["error"]["code"] == "request_timeout", r
            _wait(lambda: s.app.worker.slots()["busy"] == 0, "slots freed")
            if n_parallel > 1:
                assert sorted(big._engine._free) == [0, 1]
            assert _post(s.url + "/completions", {"prompt": ["a", "b"], "max_tokens": 1})[0] in (200, 503)
        finally:
            s.shutdown()
