"""`pyrt serve` end to end: a live server on a free loopback port, driven with the
official `openai` package (and http.client for raw HTTP): chat, streaming, completions,
embeddings, errors, concurrent clients and clients that disconnect; model names,
/metrics, /tokenize and /detokenize, CORS and content types, the API key on every
endpoint, --max-tokens-limit and --request-timeout. The ollama API is in
tests/test_server_ollama.py, the soak run in tests/test_server_soak.py.

Cost: one server process plus a few in-process servers, ~20-30 s on 2 cores."""
from __future__ import annotations

import base64
import http.client
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest

openai = pytest.importorskip("openai")

import pyrt  # noqa: E402

CHAT = [{"role": "user", "content": "What is 2+2?"}]
MODEL = "SmolLM2-135M-Instruct.Q4_1"              # the id: the file name without .gguf
NO_EOG = {"0": -100, "2": -100, "4": -100}      # SmolLM2's end-of-generation tokens


def env() -> dict:
    root = str(Path(pyrt.__file__).resolve().parent.parent)
    e = dict(os.environ)
    e["PYTHONPATH"] = root + os.pathsep + e.get("PYTHONPATH", "")
    return e


@pytest.fixture(scope="module")
def server(smollm2_path):
    # "m" is a second name for the model (--alias), so that tests may write model="m"
    proc = subprocess.Popen([sys.executable, "-m", "pyrt", "serve", "-m", str(smollm2_path), "--port", "0",
                             "-c", "1024", "--max-queue", "8", "--alias", MODEL, "--alias", "m"],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env())
    url = None
    lines = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        lines.append(line)
        m = re.search(r"listening on (http://127\.0\.0\.1:\d+/v1)", line)
        if m:
            url = m.group(1)
            break
    if url is None:
        proc.kill()
        pytest.fail("server did not start: " + "".join(lines))
    drain = threading.Thread(target=lambda: [lines.append(x) for x in proc.stderr], daemon=True)
    drain.start()
    yield url
    proc.terminate()                                  # SIGTERM: graceful shutdown
    assert proc.wait(timeout=30) == 0, "".join(lines)


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server, api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def llm(smollm2_path):
    with pyrt.Llama(str(smollm2_path), n_ctx=1024) as m:
        yield m


def request(method: str, url: str, body=None, headers: dict | None = None) -> tuple[int, dict]:
    """One plain HTTP request (stdlib); returns (status, decoded JSON body)."""
    u = urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
    hdrs = {"Content-Type": "application/json", **(headers or {})}
    conn.request(method, u.path, body=data, headers=hdrs)
    r = conn.getresponse()
    out = r.status, json.loads(r.read() or b"null")
    conn.close()
    return out


def raw_request(url: str, body: dict, key: str = "") -> socket.socket:
    """Send a POST by hand and return the open socket (to read a little and hang up)."""
    u = urlsplit(url)
    data = json.dumps(body).encode()
    s = socket.create_connection((u.hostname, u.port), timeout=60)
    auth = f"Authorization: Bearer {key}\r\n" if key else ""
    s.sendall(f"POST {u.path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n{auth}"
              f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
    return s


def read_until(s: socket.socket, marker: bytes, count: int = 1) -> bytes:
    got = b""
    while got.count(marker) < count:
        chunk = s.recv(4096)
        assert chunk, got
        got += chunk
    return got


def health(server) -> dict:
    return request("GET", server[:-3] + "/health")[1]


def test_models(client, smollm2_path):
    models = client.models.list().data
    assert [m.id for m in models] == ["SmolLM2-135M-Instruct.Q4_1"]
    assert models[0].owned_by == "pyrt"
    assert client.models.retrieve(models[0].id).id == models[0].id
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4")


def test_chat(client, llm):
    r = client.chat.completions.create(model=MODEL, messages=CHAT, temperature=0, max_tokens=32)
    ch = r.choices[0]
    want = llm.create_chat_completion(CHAT, temperature=0, max_tokens=32)["choices"][0]["message"]["content"]
    assert ch.message.role == "assistant" and ch.message.content == want and "4" in want
    assert ch.finish_reason == "stop"
    assert r.usage.prompt_tokens == 37 and r.usage.completion_tokens > 0
    assert r.model == "SmolLM2-135M-Instruct.Q4_1"


def test_chat_stream(client):
    full = client.chat.completions.create(model="m", messages=CHAT, temperature=0, max_tokens=32)
    chunks = list(client.chat.completions.create(model="m", messages=CHAT, temperature=0, max_tokens=32,
                                                 stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full.choices[0].message.content
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 3   # really streamed
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == full.usage.completion_tokens
    assert chunks[-1].usage.prompt_tokens_details.cached_tokens > 0       # prefix reuse across requests


def test_chat_logprobs_and_stop(client):
    r = client.chat.completions.create(model="m", messages=CHAT, temperature=0, max_tokens=4, logprobs=True,
                                       top_logprobs=2)
    content = r.choices[0].logprobs.content
    assert len(content) == 4 and len(content[0].top_logprobs) == 2
    full = r.choices[0].message.content
    r2 = client.chat.completions.create(model="m", messages=CHAT, temperature=0, max_tokens=4, stop=[" answer"])
    assert r2.choices[0].message.content == full[:full.index(" answer")] and r2.choices[0].finish_reason == "stop"


def test_completions(client, llm):
    r = client.completions.create(model="m", prompt="The capital of France is", temperature=0, max_tokens=8,
                                  logprobs=2)
    want = llm.create_completion("The capital of France is", temperature=0, max_tokens=8)
    assert r.choices[0].text == want["choices"][0]["text"] and r.choices[0].text.startswith(" Paris")
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 8
    assert len(r.choices[0].logprobs.tokens) == 8 and len(r.choices[0].logprobs.top_logprobs[0]) == 2
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model="m", prompt="The capital of France is", temperature=0, max_tokens=8, stream=True))
    assert streamed == r.choices[0].text
    ids = client.completions.create(model="m", prompt=llm.tokenize("The capital of France is"), temperature=0,
                                    max_tokens=8)
    assert ids.choices[0].text == r.choices[0].text
    # scoring a text, as lm-eval-harness does: no new tokens, the prompt's log-probabilities
    s = client.completions.create(model="m", prompt="The capital of France is", max_tokens=0, echo=True,
                                  logprobs=1)
    lp = s.choices[0].logprobs
    assert s.choices[0].text == "The capital of France is" and len(lp.tokens) == 5
    assert lp.token_logprobs[0] is None and all(x < 0 for x in lp.token_logprobs[1:])


def test_embeddings(client, llm):
    texts = ["hello world", "the stock market"]
    want = np.array(llm.embed(texts))
    r = client.embeddings.create(model="m", input=texts)                       # base64 on the wire
    got = np.array([d.embedding for d in r.data])
    assert got.shape == (2, 576) and np.allclose(got, want, atol=1e-5)
    assert r.usage.prompt_tokens == sum(len(llm.tokenize(t)) for t in texts)
    r = client.embeddings.create(model="m", input="hello world", encoding_format="float")
    assert np.allclose(r.data[0].embedding, want[0], atol=1e-5)
    _, raw = request("POST", str(client.base_url) + "embeddings", {"input": "hello world",
                                                               "encoding_format": "base64"})
    assert np.allclose(np.frombuffer(base64.b64decode(raw["data"][0]["embedding"]), "<f4"), want[0], atol=1e-5)


@pytest.mark.parametrize("kw, param", [
    (dict(temperature=-1), "temperature"),
    (dict(top_p=7), "top_p"),
    (dict(max_tokens=-1), "max_tokens"),
    (dict(n=0), "n"),
    (dict(n=129), "n"),
    (dict(stop=[1, 2]), "stop"),
    (dict(logit_bias={"999999999": 5}), "logit_bias"),
    (dict(messages=[{"role": "user"}]), "messages"),
    (dict(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]), "messages"),
    (dict(tools=[{"type": "function", "function": {"name": "no spaces", "parameters": {}}}]), "tools"),
])
def test_chat_errors(client, kw, param):
    args = dict(model="m", messages=CHAT, max_tokens=4)
    args.update(kw)
    with pytest.raises(openai.BadRequestError) as ei:
        client.chat.completions.create(**args)
    err = ei.value.body
    assert err["type"] == "invalid_request_error" and err["message"] and err["param"] == param


def test_context_length_error(client):
    with pytest.raises(openai.BadRequestError) as ei:
        client.completions.create(model="m", prompt="word " * 1100, max_tokens=4)
    assert ei.value.body["code"] == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model="m", input="word " * 1100)


def test_http_errors(server):
    base = server[:-3]
    st, r = request("GET", base + "/v1/nothing")
    assert st == 404 and r["error"]["code"] == "not_found"
    st, r = request("GET", base + "/v1/chat/completions")
    assert st == 405 and "error" in r
    st, r = request("POST", base + "/v1/chat/completions", b"{not json")
    assert st == 400 and "not valid JSON" in r["error"]["message"]
    st, r = request("POST", base + "/v1/chat/completions", ["a list"])
    assert st == 400 and r["error"]["type"] == "invalid_request_error"
    s = raw_request(base + "/v1/chat/completions", {})
    s.close()
    u = urlsplit(base)
    s = socket.create_connection((u.hostname, u.port), timeout=30)
    s.sendall(f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {64 << 20}\r\n\r\n".encode())
    assert s.recv(4096).startswith(b"HTTP/1.1 413")
    s.close()
    st, r = request("POST", base + "/v1/completions", {"model": "m"})
    assert st == 400 and r["error"]["param"] == "prompt"
    # DNS rebinding: a page from evil.example that resolves to 127.0.0.1 is refused
    st, r = request("GET", base + "/v1/models", headers={"Host": "evil.example:8080"})
    assert st == 403 and r["error"]["code"] == "forbidden_host"
    assert request("GET", base + "/v1/models", headers={"Host": "localhost:8080"})[0] == 200
    h = health(server)
    assert h["status"] == "ok" and h["busy"] is False


def test_concurrent_clients_do_not_corrupt_each_other(client):
    prompts = ["What is 2+2?", "Name a color.", "What is the capital of France?", "Say hello."]

    def ask(p):
        return client.chat.completions.create(model="m", messages=[{"role": "user", "content": p}],
                                              temperature=0, max_tokens=24).choices[0].message.content

    sequential = [ask(p) for p in prompts]
    results: dict[int, str] = {}
    both = prompts + prompts[:2]                  # 6 clients at once: 1 running + up to 8 queued
    threads = [threading.Thread(target=lambda i=i, p=p: results.__setitem__(i, ask(p)))
               for i, p in enumerate(both)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert [results.get(i) for i in range(len(both))] == sequential + sequential[:2]


def test_disconnect_stops_generation(server, client):
    """A client that goes away mid-stream, or while its request waits in the queue,
    cancels its job: the worker does not generate its 2000 tokens."""
    before = health(server)
    body = {"model": "m", "prompt": "Once upon a time", "max_tokens": 2000, "temperature": 0,
            "logit_bias": NO_EOG, "stream": True}
    base = str(client.base_url)
    a = raw_request(base + "completions", body)
    got = read_until(a, b"data: ", 4)                # a few streamed chunks arrived
    assert got.startswith(b"HTTP/1.1 200") and b"text/event-stream" in got
    # a second client queues behind it and gives up
    b = raw_request(base + "completions", dict(body, stream=False))
    time.sleep(0.5)
    b.close()
    a.close()
    # both connections are closed now; the worker notices within a token or two
    for _ in range(300):
        h = health(server)
        if not h["busy"] and h["cancelled"] >= before["cancelled"] + 2:
            break
        time.sleep(0.1)
    assert h["cancelled"] == before["cancelled"] + 2 and h["completed"] == before["completed"]
    assert h["busy"] is False and h["queued"] == 0
    # and the server still answers correctly
    r = client.chat.completions.create(model="m", messages=CHAT, temperature=0, max_tokens=32)
    assert "4" in r.choices[0].message.content


def test_api_key_busy_and_in_process_server(llm):
    from pyrt.server import Server
    srv = Server(llm, "127.0.0.1", 0, api_key="sekret", alias="smol", max_queue=1)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        bad = openai.OpenAI(base_url=srv.url, api_key="wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            bad.models.list()
        good = openai.OpenAI(base_url=srv.url, api_key="sekret", max_retries=0)
        assert good.models.list().data[0].id == "smol"
        r = good.completions.create(model="smol", prompt="The capital of France is", max_tokens=3, temperature=0)
        assert r.choices[0].text.startswith(" Paris")
        assert request("GET", srv.url[:-3] + "/health")[0] == 200             # health needs no key
        # one request running, one queued (max_queue=1): the next is turned away with 503
        long = {"prompt": "Once upon a time", "max_tokens": 2000, "logit_bias": NO_EOG, "stream": True}
        a = raw_request(srv.url + "/completions", long, "sekret")
        read_until(a, b"data: ", 2)
        b = raw_request(srv.url + "/completions", long, "sekret")
        for _ in range(100):
            if srv.app.worker.jobs.qsize() == 1:
                break
            time.sleep(0.05)
        st, r = request("POST", srv.url + "/completions", {"prompt": "x"}, {"Authorization": "Bearer sekret"})
        assert st == 503 and r["error"]["code"] == "server_busy"
        a.close()
        b.close()
    finally:
        srv.shutdown()


# ---------------------------------------------------------------------------------------------
# model names, /metrics, /tokenize, security, limits
# ---------------------------------------------------------------------------------------------

def raw(method: str, url: str, body: bytes | None = None, headers: dict | None = None):
    """One request with exactly these headers; returns (status, headers, body bytes)."""
    u = urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    conn.request(method, u.path, body=body, headers=headers or {})
    r = conn.getresponse()
    out = r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    conn.close()
    return out


@pytest.fixture
def inproc(llm):
    """Start in-process servers with given App options; all are shut down after the test."""
    from pyrt.server import Server
    made = []

    def start(**kw):
        srv = Server(llm, "127.0.0.1", 0, **kw)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        made.append(srv)
        return srv.url[:-3]
    yield start
    for srv in made:
        srv.shutdown()


def test_model_names(server, client):
    base = server[:-3]
    for name in (MODEL, "m", "m:latest", MODEL + ":latest"):
        r = client.completions.create(model=name, prompt="The capital of France is", max_tokens=2, temperature=0)
        assert r.choices[0].text.startswith(" Paris") and r.model == MODEL
        assert client.models.retrieve(name).id == MODEL
    st, r = request("POST", base + "/v1/completions", {"prompt": "Hi", "max_tokens": 1})     # no model: fine
    assert st == 200
    for call in (lambda: client.chat.completions.create(model="gpt-4o", messages=CHAT, max_tokens=2),
                 lambda: client.completions.create(model="llama3", prompt="x", max_tokens=2),
                 lambda: client.embeddings.create(model="text-embedding-3-small", input="x"),
                 lambda: client.models.retrieve("gpt-4o")):
        with pytest.raises(openai.NotFoundError) as ei:
            call()
        assert ei.value.body["code"] == "model_not_found" and ei.value.body["param"] == "model"
        assert "--alias" in ei.value.body["message"]
    st, r = request("POST", base + "/v1/completions", {"model": 7, "prompt": "x"})
    assert st == 400 and r["error"]["param"] == "model"
    assert client.models.list().data[0].model_extra["meta"]["aliases"] == [MODEL, "m"]


_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*"'
                     r'(?:,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*")*)\})? (-?[0-9.e+-]+|\+Inf|NaN)$')


def parse_metrics(text: str) -> dict:
    """Check Prometheus text format 0.0.4 line by line: every family has one HELP and
    one TYPE before its samples, every sample line parses and belongs to the family
    declared above it (histograms: _bucket/_sum/_count). Returns {(name, labels): value}."""
    assert text.endswith("\n")
    families: dict[str, str] = {}
    current = None
    samples = {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name = line.split(" ", 3)[2]
            assert name not in families, f"{name} declared twice"
            current = name
        elif line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert name == current and kind in ("counter", "gauge", "histogram", "summary")
            families[name] = kind
        else:
            m = _SAMPLE.match(line)
            assert m, f"bad sample line {line!r}"
            name = m.group(1)
            base = current
            if families[base] == "histogram":
                assert name in (base + "_bucket", base + "_sum", base + "_count"), line
            else:
                assert name == base, line
            if families[base] == "counter":
                assert name.endswith("_total")
            samples[(name, m.group(3) or "")] = float(m.group(4))
    return samples


def test_metrics(server, client):
    base = server[:-3]
    st, hdrs, body = raw("GET", base + "/metrics")
    assert st == 200 and hdrs["content-type"].startswith("text/plain; version=0.0.4")
    before = parse_metrics(body.decode())
    r = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "Count to three."}],
                                       temperature=0, max_tokens=6)
    request("GET", base + "/v1/nothing")
    after = parse_metrics(raw("GET", base + "/metrics")[2].decode())

    def delta(name, labels=""):
        return after.get((name, labels), 0) - before.get((name, labels), 0)

    assert delta("pyrt_requests_total", 'endpoint="/v1/chat/completions",status="200"') == 1
    assert delta("pyrt_requests_total", 'endpoint="other",status="404"') == 1
    assert delta("pyrt_requests_total", 'endpoint="/metrics",status="200"') == 1
    assert delta("pyrt_generated_tokens_total") == r.usage.completion_tokens == 6
    assert delta("pyrt_prompt_tokens_total") == r.usage.prompt_tokens
    assert delta("pyrt_prompt_tokens_cached_total") == r.usage.prompt_tokens_details.cached_tokens
    assert delta("pyrt_prompt_seconds_total") > 0 and delta("pyrt_generation_seconds_total") > 0
    assert delta("pyrt_time_to_first_token_seconds_count") == 1
    assert delta("pyrt_time_to_first_token_seconds_bucket", 'le="+Inf"') == 1
    slots = health(server)["slots"]              # pyrt serve's default --parallel
    assert slots >= 1 and after[("pyrt_slots_total", "")] == slots and after[("pyrt_slots_busy", "")] == 0
    assert after[("pyrt_requests_queued", "")] == 0 and after[("pyrt_requests_processing", "")] == 0
    assert after[("pyrt_model_info", f'model="{MODEL}"')] == 1
    buckets = sorted((float(k[1][4:-1]), v) for k, v in after.items()
                     if k[0] == "pyrt_time_to_first_token_seconds_bucket" and "Inf" not in k[1])
    assert [v for _, v in buckets] == sorted(v for _, v in buckets)     # cumulative
    assert raw("POST", base + "/metrics", b"{}", {"Content-Type": "application/json"})[0] == 405


def test_tokenize_detokenize(server, llm):
    base = server[:-3]
    text = "Hello world<|im_end|> café"
    st, r = request("POST", base + "/tokenize", {"content": text})
    assert st == 200 and r["tokens"] == llm.tokenize(text, add_bos=False, special=True)
    assert 2 in r["tokens"]                                           # <|im_end|> parsed as the special token
    st, r2 = request("POST", base + "/tokenize", {"content": text, "parse_special": False})
    assert 2 not in r2["tokens"] and len(r2["tokens"]) > len(r["tokens"])
    st, rp = request("POST", base + "/tokenize", {"content": text, "with_pieces": True})
    assert [p["id"] for p in rp["tokens"]] == r["tokens"]
    pieces = [p["piece"] for p in rp["tokens"]]
    assert "<|im_end|>" in pieces and all(isinstance(p, (str, list)) for p in pieces)
    assert "".join(p for p in pieces if isinstance(p, str)).startswith("Hello world<|im_end|>")
    st, d = request("POST", base + "/detokenize", {"tokens": r["tokens"]})
    assert st == 200 and d == {"content": text}
    st, d = request("POST", base + "/detokenize", {"tokens": []})
    assert st == 200 and d == {"content": ""}
    for path, body, param in (("/tokenize", {"content": 5}, "content"),
                              ("/tokenize", {"content": "x", "with_pieces": "yes"}, "with_pieces"),
                              ("/detokenize", {"tokens": [10 ** 9]}, "tokens"),
                              ("/detokenize", {"tokens": "abc"}, "tokens")):
        st, e = request("POST", base + path, body)
        assert st == 400 and e["error"]["param"] == param
    st, e = request("POST", base + "/tokenize", {"content": "x", "model": "other"})
    assert st == 404 and e["error"]["code"] == "model_not_found"


def test_tokenize_add_special(gemma3_path):
    """add_special adds BOS where the model wants one (Gemma does, SmolLM2 not)."""
    from pyrt.server import App
    with pyrt.Llama(str(gemma3_path), n_ctx=256) as g:
        app = App(g)
        try:
            plain = app.tokenize({"content": "Hello"})["tokens"]
            special = app.tokenize({"content": "Hello", "add_special": True})["tokens"]
            assert special == [g.token_bos()] + plain
        finally:
            app.worker.stop()


def test_cross_origin_requests_are_refused(server):
    """No --cors: a browser request (it carries Origin) is refused before anything runs,
    whatever its method or content type; POST bodies must be declared JSON."""
    base = server[:-3]
    before = health(server)["completed"]
    body = json.dumps({"prompt": "Hi", "max_tokens": 1}).encode()
    for method, ct in (("POST", "text/plain"), ("POST", "application/json"),
                       ("POST", "application/x-www-form-urlencoded"), ("GET", None), ("OPTIONS", None)):
        hdrs = {"Origin": "https://evil.example"}
        if ct:
            hdrs["Content-Type"] = ct
        st, h, out = raw(method, base + "/v1/completions", body if method == "POST" else None, hdrs)
        assert st == 403 and json.loads(out)["error"]["code"] == "forbidden_origin", (method, ct)
        assert "access-control-allow-origin" not in h
    st, _, out = raw("POST", base + "/api/generate", body, {"Origin": "null", "Content-Type": "text/plain"})
    assert st == 403 and "not allowed" in json.loads(out)["error"]
    # simple-request content types are refused even without Origin (old browsers, plugins)
    for ct in ("text/plain", "text/plain;charset=UTF-8", "multipart/form-data; boundary=x"):
        st, _, out = raw("POST", base + "/v1/completions", body, {"Content-Type": ct})
        assert st == 415 and json.loads(out)["error"]["code"] == "unsupported_media_type"
    assert health(server)["completed"] == before                     # nothing was generated
    # what curl sends with -d (a form type, or none): accepted from a non-browser client
    for hdrs in ({"Content-Type": "application/x-www-form-urlencoded"}, {}):
        st, _, out = raw("POST", base + "/v1/completions", body, hdrs)
        assert st == 200 and json.loads(out)["usage"]["completion_tokens"] == 1
    st, _, _ = raw("POST", base + "/v1/completions", body, {"Content-Type": "application/vnd.api+json"})
    assert st == 200
    # plain OPTIONS (no Origin): says what is allowed
    st, h, _ = raw("OPTIONS", base + "/v1/completions")
    assert st == 204 and "POST" in h["allow"] and "access-control-allow-origin" not in h


def test_cors_allowed_origins(inproc):
    base = inproc(cors=["http://localhost:3000", "https://*.example.org"], api_key="k")
    pre = {"Origin": "http://localhost:3000", "Access-Control-Request-Method": "POST",
           "Access-Control-Request-Headers": "content-type, authorization, x-stainless-os"}
    st, h, _ = raw("OPTIONS", base + "/v1/chat/completions", None, pre)     # preflight: no key needed
    assert st == 204
    assert h["access-control-allow-origin"] == "http://localhost:3000" and h["vary"] == "Origin"
    assert "POST" in h["access-control-allow-methods"]
    allowed = [x.strip().lower() for x in h["access-control-allow-headers"].split(",")]
    assert {"content-type", "authorization", "x-stainless-os"} <= set(allowed)
    body = json.dumps({"prompt": "Hi", "max_tokens": 1}).encode()
    hdrs = {"Origin": "https://ui.example.org", "Content-Type": "application/json", "Authorization": "Bearer k"}
    st, h, out = raw("POST", base + "/v1/completions", body, hdrs)
    assert st == 200 and h["access-control-allow-origin"] == "https://ui.example.org"
    st, h, _ = raw("POST", base + "/v1/completions", body, dict(hdrs, Authorization="Bearer wrong"))
    assert st == 401 and h["access-control-allow-origin"] == "https://ui.example.org"   # readable error
    # an allowed origin still may not send a simple-request content type
    st, _, _ = raw("POST", base + "/v1/completions", body, dict(hdrs, **{"Content-Type": "text/plain"}))
    assert st == 415
    for origin in ("http://localhost:3001", "https://example.org.evil.com", "http://ui.example.org"):
        st, h, _ = raw("OPTIONS", base + "/v1/completions", None, dict(pre, Origin=origin))
        assert st == 403 and "access-control-allow-origin" not in h, origin
    # streaming responses carry the header too
    st, h, out = raw("POST", base + "/v1/completions", json.dumps({"prompt": "Hi", "max_tokens": 2,
                                                                   "stream": True}).encode(), hdrs)
    assert st == 200 and h["access-control-allow-origin"] == "https://ui.example.org"
    assert out.rstrip().endswith(b"data: [DONE]")
    any_base = inproc(cors=["*"])
    st, h, _ = raw("GET", any_base + "/v1/models", None, {"Origin": "https://anything.example"})
    assert st == 200 and h["access-control-allow-origin"] == "*"


def test_api_key_guards_every_endpoint_but_health(inproc):
    base = inproc(api_key="sekret")
    gets = ["/v1/models", "/metrics", "/api/tags", "/api/version", "/api/ps", "/v1/models/x"]
    posts = ["/v1/chat/completions", "/tokenize", "/detokenize", "/api/chat", "/api/generate", "/api/show",
             "/api/embed"]
    for path in gets + posts:
        method = "GET" if path in gets else "POST"
        st, _, out = raw(method, base + path, b"{}" if method == "POST" else None,
                         {"Content-Type": "application/json"})
        assert st == 401, path
        err = json.loads(out)["error"]
        assert "API key" in (err if isinstance(err, str) else err["message"]), path
    assert raw("GET", base + "/health")[0] == 200
    assert raw("GET", base + "/")[0] == 200
    st, _, out = raw("GET", base + "/metrics", None, {"Authorization": "Bearer sekret"})
    assert st == 200 and b"pyrt_requests_total" in out
    st, _, out = raw("POST", base + "/tokenize", b'{"content": "hi"}',
                     {"Authorization": "Bearer sekret", "Content-Type": "application/json"})
    assert st == 200 and json.loads(out)["tokens"]


def test_max_tokens_limit(inproc):
    base = inproc(max_tokens_limit=5)
    long = {"prompt": "Once upon a time", "temperature": 0, "logit_bias": NO_EOG}
    for extra in ({"max_tokens": 100}, {}, {"max_tokens": None}):
        st, r = request("POST", base + "/v1/completions", dict(long, **extra))
        assert st == 200 and r["usage"]["completion_tokens"] == 5 and r["choices"][0]["finish_reason"] == "length"
    st, r = request("POST", base + "/v1/completions", dict(long, max_tokens=3))
    assert r["usage"]["completion_tokens"] == 3                     # below the limit: as asked
    st, r = request("POST", base + "/v1/chat/completions",
                    {"messages": CHAT, "logit_bias": NO_EOG | {"1": -100}, "temperature": 0})
    assert r["usage"]["completion_tokens"] == 5 and r["choices"][0]["finish_reason"] == "length"
    st, r = request("POST", base + "/api/generate", {"prompt": "Once upon a time", "raw": True, "stream": False,
                                                     "options": {"num_predict": -1, "temperature": 0}})
    assert st == 200 and r["eval_count"] == 5 and r["done_reason"] == "length"


def test_request_timeout_during_generation(inproc):
    """Past --request-timeout, generation ends at the next token with finish_reason
    "length" (streamed or not), and the metrics count it. (2 s: far less than 2000
    tokens take, far more than these short prompts' evaluation even on a busy machine.)"""
    base = inproc(request_timeout=2.0)
    body = {"prompt": "Once upon a time", "max_tokens": 2000, "temperature": 0, "logit_bias": NO_EOG}
    st, r = request("POST", base + "/v1/completions", body)
    assert st == 200 and r["choices"][0]["finish_reason"] == "length"
    assert 0 < r["usage"]["completion_tokens"] < 2000
    st, h, out = raw("POST", base + "/v1/completions", json.dumps(dict(body, stream=True)).encode(),
                     {"Content-Type": "application/json"})
    events = [json.loads(x[6:]) for x in out.decode().split("\n\n") if x.startswith("data: {")]
    assert events[-1]["choices"][0]["finish_reason"] == "length" and out.rstrip().endswith(b"[DONE]")
    st, r = request("POST", base + "/api/chat", {"messages": CHAT, "stream": False,
                                                 "options": {"num_predict": 2000, "temperature": 0}})
    assert st == 200 and r["done_reason"] in ("length", "stop")
    m = parse_metrics(raw("GET", base + "/metrics")[2].decode())
    assert m[("pyrt_request_timeouts_total", "")] >= 2


def test_request_timeout_during_prompt(smollm2_path):
    """A prompt evaluation still running at the time limit is interrupted: 503
    request_timeout, and the server goes on serving."""
    from pyrt.server import Server
    with pyrt.Llama(str(smollm2_path), n_ctx=4096) as big:
        srv = Server(big, "127.0.0.1", 0, request_timeout=0.01)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        try:
            base = srv.url[:-3]
            words = " ".join(f"w{i}" for i in range(900))                # ~3500 tokens, not cached
            st, r = request("POST", base + "/v1/completions", {"prompt": words, "max_tokens": 4})
            assert st == 503 and r["error"]["code"] == "request_timeout"
            assert "--request-timeout" in r["error"]["message"]
            st, r = request("POST", base + "/api/generate", {"prompt": words + " again", "raw": True,
                                                             "stream": True})
            assert st == 503 and r["error"].startswith("the request ran past")
            assert srv.app.worker.stats["failed"] == 2
            assert request("GET", base + "/health")[1]["status"] == "ok"
        finally:
            srv.shutdown()


def test_prompt_longer_than_context_is_400(server):
    base = server[:-3]
    st, r = request("POST", base + "/v1/chat/completions",
                    {"messages": [{"role": "user", "content": "word " * 1100}], "max_tokens": 4})
    assert st == 400 and r["error"]["code"] == "context_length_exceeded" and "n_ctx" in r["error"]["message"]
    st, r = request("POST", base + "/api/chat", {"messages": [{"role": "user", "content": "word " * 1100}]})
    assert st == 400 and "context window" in r["error"]


def test_head_and_root(server):
    base = server[:-3]
    st, h, out = raw("HEAD", base + "/")
    assert st == 200 and out == b"" and int(h["content-length"]) > 0
    st, _, out = raw("GET", base + "/")
    assert st == 200 and b"pyrt is running" in out


def test_keep_alive_connection_resets_per_request(inproc):
    """One connection, several requests: HEAD, an allowed-origin request, then plain
    ones: each answer has its own body and headers."""
    base = inproc(cors=["http://ui.test"])
    u = urlsplit(base)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    conn.request("HEAD", "/health")
    r = conn.getresponse()
    assert r.status == 200 and r.read() == b""
    conn.request("GET", "/health", headers={"Origin": "http://ui.test"})
    r = conn.getresponse()
    assert json.loads(r.read())["status"] == "ok" and r.getheader("Access-Control-Allow-Origin") == "http://ui.test"
    conn.request("GET", "/health")
    r = conn.getresponse()
    assert json.loads(r.read())["status"] == "ok" and r.getheader("Access-Control-Allow-Origin") is None
    conn.close()
