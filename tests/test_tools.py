"""Tool calling: tools / tool_choice / parallel_tool_calls on create_chat_completion with the
real SmolLM2 and Gemma-3 models (every call's arguments validate against the function's
parameters schema with `jsonschema`), streaming deltas against the non-stream reply, the
round trip with role:tool messages (fallback and native templates), the lazy grammar of
tool_choice="auto" on scripted token sequences, the call parser, bad requests, and the
official `openai` client against `pyrt serve`."""
from __future__ import annotations

import json
import random

import numpy as np
import pytest

import pyrt
from pyrt.chat import ChatTemplate
from pyrt.generate import LazyGrammar, _LazyTrigger
from pyrt.tools import CALL_OPEN, ToolCallStream, call_gbnf, check_tools, prepare_messages, template_tool_mode

jsonschema = pytest.importorskip("jsonschema")

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object",
                   "properties": {"city": {"type": "string", "maxLength": 30},
                                  "unit": {"enum": ["celsius", "fahrenheit"]}},
                   "required": ["city"]}}}
TIME = {"type": "function", "function": {
    "name": "get_time", "description": "Current time in a timezone",
    "parameters": {"type": "object", "properties": {"tz": {"type": "string", "maxLength": 40}},
                   "required": ["tz"]}}}
FLIGHT = {"type": "function", "function": {        # local $refs, nested objects, integer range
    "name": "book_flight", "description": "Book a flight",
    "parameters": {"type": "object",
                   "$defs": {"airport": {"type": "string", "minLength": 3, "maxLength": 3},
                             "leg": {"type": "object",
                                     "properties": {"from": {"$ref": "#/$defs/airport"},
                                                    "to": {"$ref": "#/$defs/airport"}},
                                     "required": ["from", "to"]}},
                   "properties": {"leg": {"$ref": "#/$defs/leg"},
                                  "seats": {"type": "integer", "minimum": 1, "maximum": 9}},
                   "required": ["leg", "seats"]}}}
PING = {"type": "function", "function": {"name": "ping"}}     # no parameters: arguments {}
TOOLS = [WEATHER, TIME, FLIGHT, PING]
SCHEMAS = {t["function"]["name"]: t["function"].get("parameters", {"type": "object", "properties": {},
                                                                   "additionalProperties": False})
           for t in TOOLS}
ASK = [{"role": "system", "content": "You are a weather bot. Use the tools."},
       {"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture(scope="module")
def smol(smollm2_path):
    llm = pyrt.Llama(str(smollm2_path), n_ctx=2048, n_threads=2, seed=0)
    yield llm
    llm.close()


@pytest.fixture(scope="module")
def gemma(gemma3_path):
    llm = pyrt.Llama(str(gemma3_path), n_ctx=2048, n_threads=2, seed=0)
    yield llm
    llm.close()


@pytest.fixture(params=["smol", "gemma"])
def llm(request):
    return request.getfixturevalue(request.param)


def check_calls(message: dict, allowed=None) -> list[dict]:
    """The message's tool calls, each checked: OpenAI shape, an allowed name, arguments a JSON
    string that validates against the function's parameters schema. Returns the arguments."""
    calls = message.get("tool_calls")
    assert calls, message
    out = []
    for c in calls:
        assert c["type"] == "function" and c["id"].startswith("call_")
        name = c["function"]["name"]
        assert name in (allowed or SCHEMAS), name
        args = json.loads(c["function"]["arguments"])
        jsonschema.validate(args, SCHEMAS[name])
        out.append({"name": name, "arguments": args})
    assert len({c["id"] for c in calls}) == len(calls)
    return out


def reassemble(chunks) -> tuple[str, list[dict], str, list[dict]]:
    """(content, tool calls, finish_reason, deltas) of a stream, accumulated as OpenAI clients do."""
    content, calls, finish, deltas = "", {}, None, []
    for ch in chunks:
        c = ch["choices"][0]
        d = c["delta"]
        deltas.append(d)
        content += d.get("content") or ""
        for tc in d.get("tool_calls") or ():
            slot = calls.setdefault(tc["index"], {"function": {"name": "", "arguments": ""}})
            if "id" in tc:
                assert "id" not in slot, "a call's id comes once, in its first chunk"
                slot["id"], slot["type"] = tc["id"], tc["type"]
                slot["function"]["name"] = tc["function"]["name"]
            slot["function"]["arguments"] += tc["function"].get("arguments", "")
        finish = c["finish_reason"] or finish
    assert sorted(calls) == list(range(len(calls)))
    return content, [calls[i] for i in sorted(calls)], finish, deltas


# ---------------------------------------------------------------------------------------------
# every tool_choice on the real models
# ---------------------------------------------------------------------------------------------

def test_required_calls_a_function(llm):
    for seed in (0, 1, 2):
        r = llm.create_chat_completion(ASK, tools=TOOLS, tool_choice="required", max_tokens=80,
                                       temperature=0.8, seed=seed)
        ch = r["choices"][0]
        assert ch["finish_reason"] == "tool_calls"
        assert ch["message"]["content"] is None
        calls = check_calls(ch["message"])
        assert len(calls) == 1          # parallel_tool_calls defaults to False


@pytest.mark.parametrize("name", ["get_time", "book_flight", "ping"])
def test_named_function(llm, name):
    r = llm.create_chat_completion(ASK, tools=TOOLS, max_tokens=80, temperature=0.7, seed=3,
                                   tool_choice={"type": "function", "function": {"name": name}})
    ch = r["choices"][0]
    assert ch["finish_reason"] == "tool_calls"
    [call] = check_calls(ch["message"], allowed=[name])
    if name == "ping":
        assert call["arguments"] == {}


def test_none_answers_in_text_and_hides_the_tools(llm):
    r = llm.create_chat_completion(ASK, tools=TOOLS, tool_choice="none", max_tokens=24, temperature=0)
    msg = r["choices"][0]["message"]
    assert "tool_calls" not in msg and isinstance(msg["content"], str) and msg["content"]
    assert r["choices"][0]["finish_reason"] in ("stop", "length")
    # the same prompt as without tools: none shows nothing of them to the model
    msgs, extra = prepare_messages(llm.chat_template, ASK, check_tools(TOOLS, "none"))
    assert extra == {} and llm.apply_chat_template(msgs) == llm.apply_chat_template(ASK)


def test_auto_may_answer_in_text(smol):
    msgs = [{"role": "user", "content": "Write one sentence about the sea."}]
    r = smol.create_chat_completion(msgs, tools=[WEATHER], max_tokens=40, temperature=0)
    ch = r["choices"][0]
    assert "tool_calls" not in ch["message"] and ch["message"]["content"].strip()
    assert ch["finish_reason"] in ("stop", "length")
    assert CALL_OPEN not in ch["message"]["content"]


def test_auto_calls_once_the_model_writes_the_marker(gemma, smol):
    """The model starts the call by itself (asked to write the marker); from there the
    lazy grammar holds it to a valid call; text before the marker is the content."""
    msgs = [{"role": "user", "content": "Say hi, then write <tool_call>"}]
    r = gemma.create_chat_completion(msgs, tools=[WEATHER], max_tokens=60, temperature=0)
    ch = r["choices"][0]
    assert ch["finish_reason"] == "tool_calls"
    check_calls(ch["message"])
    assert "<" not in (ch["message"]["content"] or "")
    n_called = 0
    for seed in range(1, 7):
        r = smol.create_chat_completion(msgs, tools=[WEATHER], max_tokens=60, temperature=0.7, seed=seed)
        ch = r["choices"][0]
        if ch["message"].get("tool_calls"):
            n_called += 1
            assert ch["finish_reason"] == "tool_calls"
            check_calls(ch["message"])
        assert CALL_OPEN not in (ch["message"]["content"] or "")
    assert n_called >= 1


@pytest.mark.parametrize("choice, prompt", [
    ("required", ASK),
    ("auto", [{"role": "user", "content": "Say hi, then write <tool_call>"}]),
])
def test_stream_reassembles_to_the_non_stream_reply(gemma, choice, prompt):
    kw = dict(tools=TOOLS, tool_choice=choice, max_tokens=80, temperature=0.7, seed=5)
    full = gemma.create_chat_completion(prompt, **kw)["choices"][0]
    content, calls, finish, deltas = reassemble(gemma.create_chat_completion(prompt, stream=True, **kw))
    assert finish == full["finish_reason"] == "tool_calls"
    assert content == (full["message"]["content"] or "")
    assert [c["function"] for c in calls] == [c["function"] for c in full["message"]["tool_calls"]]
    check_calls({"tool_calls": calls})
    # the first delta of a call names it with empty arguments; then arguments only, in pieces
    firsts = [d["tool_calls"][0] for d in deltas if d.get("tool_calls") and "id" in d["tool_calls"][0]]
    assert all(f["function"]["arguments"] == "" for f in firsts)
    assert sum(1 for d in deltas if d.get("tool_calls")) > len(calls) + 1
    assert not any("<" in (d.get("content") or "") for d in deltas)


def test_parallel_calls(smol):
    r = smol.create_chat_completion(ASK, tools=TOOLS, tool_choice="required", parallel_tool_calls=True,
                                    max_tokens=150, temperature=0.5, seed=0)
    ch = r["choices"][0]
    calls = ch["message"]["tool_calls"]
    if ch["finish_reason"] == "length":    # a small model may go on calling: the cut call is left out
        calls = calls[:-1]
    assert len(calls) >= 2
    check_calls({"tool_calls": calls})
    content, scalls, finish, _ = reassemble(smol.create_chat_completion(
        ASK, tools=TOOLS, tool_choice="required", parallel_tool_calls=True, max_tokens=150,
        temperature=0.5, seed=0, stream=True))
    assert [c["function"] for c in scalls] == [c["function"] for c in ch["message"]["tool_calls"]]


# ---------------------------------------------------------------------------------------------
# tool results back: fallback and native templates
# ---------------------------------------------------------------------------------------------

HISTORY = ASK + [
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function",
         "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
        {"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": '{"tz": "CET"}'}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": "18 C, sunny"},
    {"role": "tool", "tool_call_id": "call_2", "content": "14:05"},
]


def test_round_trip_fallback(llm):
    assert template_tool_mode(llm.chat_template) == "fallback"
    msgs, extra = prepare_messages(llm.chat_template, HISTORY, check_tools(TOOLS))
    text = llm.apply_chat_template(msgs, **extra)
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>' in text
    assert '<tool_response>\n{"name": "get_weather", "content": "18 C, sunny"}\n</tool_response>' in text
    assert '{"name": "get_time", "content": "14:05"}' in text
    assert text.count("<tool_response>\n") == 2 and "<tools>" in text
    assert "</tool_response>\n<tool_response>" in text          # consecutive results: one turn
    assert "You are a weather bot" in text
    r = llm.create_chat_completion(HISTORY, tools=TOOLS, max_tokens=30, temperature=0)
    ch = r["choices"][0]
    assert ch["finish_reason"] in ("stop", "length", "tool_calls")
    if ch["message"].get("tool_calls"):
        check_calls(ch["message"])
    # history with calls renders without tools offered too (tool_choice none, or no tools)
    for kw in ({}, {"tools": TOOLS, "tool_choice": "none"}):
        r = llm.create_chat_completion(HISTORY, max_tokens=4, **kw)
        assert "tool_calls" not in r["choices"][0]["message"]


NATIVE = """{%- if tools %}<|im_start|>system
{% if messages[0].role == 'system' %}{{ messages[0].content }}

{% endif %}Functions you may call:
<tools>{% for t in tools %}
{{ t | tojson }}{% endfor %}
</tools>
Call one as <tool_call>
{"name": ..., "arguments": ...}
</tool_call><|im_end|>
{% elif messages[0].role == 'system' %}<|im_start|>system
{{ messages[0].content }}<|im_end|>
{% endif %}
{%- for m in messages %}{% if m.role == 'system' %}{% elif m.role == 'tool' %}<|im_start|>user
<tool_response>
{{ m.content }}
</tool_response><|im_end|>
{% elif m.role == 'assistant' and m.tool_calls %}<|im_start|>assistant
{{ m.content }}{% for c in m.tool_calls %}<tool_call>
{"name": "{{ c.function.name }}", "arguments": {{ c.function.arguments | tojson }}}
</tool_call>{% endfor %}<|im_end|>
{% else %}<|im_start|>{{ m.role }}
{{ m.content }}<|im_end|>
{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant
{% endif %}"""


def test_round_trip_native_template(smollm2_path):
    llm = pyrt.Llama(str(smollm2_path), n_ctx=2048, n_threads=2, seed=0, chat_template=NATIVE)
    try:
        assert template_tool_mode(llm.chat_template) == "native"
        msgs, extra = prepare_messages(llm.chat_template, HISTORY, check_tools(TOOLS))
        assert extra["tools"][0]["function"]["name"] == "get_weather"
        text = llm.apply_chat_template(msgs, **extra)
        assert '"name": "get_weather"' in text and "<tools>" in text and "You can call functions" not in text
        # the arguments reach the template as an object (written once by tojson, not re-quoted)
        assert '{"name": "get_weather", "arguments": {"city": "Paris"}}' in text
        assert "<tool_response>\n18 C, sunny\n</tool_response>" in text
        r = llm.create_chat_completion(HISTORY, tools=TOOLS, tool_choice="required", max_tokens=80,
                                       temperature=0.5, seed=1)
        assert r["choices"][0]["finish_reason"] == "tool_calls"
        check_calls(r["choices"][0]["message"])
    finally:
        llm.close()
    # a template that does not render its tools variable is not native
    assert template_tool_mode(ChatTemplate("{% for m in messages %}{{ m.content }}<tool_call>{% endfor %}"
                                           "{% if tools %}{% endif %}")) == "fallback"


# ---------------------------------------------------------------------------------------------
# the lazy grammar on scripted tokens
# ---------------------------------------------------------------------------------------------

class ScriptedSampler:
    """Returns the scripted tokens in order; from masked logits, the best allowed token."""

    def __init__(self, script):
        self.script = list(script)
        self.masked = 0

    def sample(self, logits):
        if np.isinf(logits).any():
            self.masked += 1
            return int(np.argmax(logits))
        return self.script.pop(0)


def _ids(smol, *pieces):
    out = []
    for p in pieces:
        t = smol.tokenizer.token_to_id(p)
        assert t is not None, p
        out.append(t)
    return out


@pytest.fixture(scope="module")
def call_grammar_auto():
    from pyrt.tools import call_grammar
    g = call_grammar(check_tools([WEATHER]))
    assert isinstance(g, LazyGrammar) and g.trigger == CALL_OPEN
    return g


def test_lazy_trigger_across_tokens(smol, call_grammar_auto):
    """Text is free until the marker is complete; the marker spread over five tokens turns
    the grammar on at its last one, fed from the marker's start."""
    lt = _LazyTrigger(call_grammar_auto, smol.tokenizer)
    script = _ids(smol, "Hi", "<", "tool", "<", "tool", "_", "call", ">")
    s = ScriptedSampler(script)
    logits = np.zeros(smol.n_vocab(), dtype=np.float32)
    never = lambda t: False  # noqa: E731
    got = [lt.sample(s, logits, never, ()) for _ in range(len(script))]
    assert [t for t, _m in got] == script and s.masked == 0
    assert all(m is None for _t, m in got[:-1])
    m = got[-1][1]
    assert m is not None and not m.is_complete()
    assert m.accept_bytes(b'\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>')
    assert m.is_complete() and not m.can_continue()


def test_lazy_trigger_token_with_rejected_text_after_the_marker(smol, call_grammar_auto):
    """A token that completes the marker but carries text the grammar rejects is replaced by
    an allowed token, drawn under the mask that continues the marker already written."""
    tok = smol.tokenizer
    bad = [i for i in range(smol.n_vocab())
           if tok.token_to_bytes(i).startswith(b">") and len(tok.token_to_bytes(i)) > 1
           and not tok.token_to_bytes(i).startswith(b">\n")]
    assert bad
    lt = _LazyTrigger(call_grammar_auto, tok)
    s = ScriptedSampler(_ids(smol, "<", "tool", "_", "call") + [bad[0]])
    logits = np.zeros(smol.n_vocab(), dtype=np.float32)
    for _ in range(4):
        assert lt.sample(s, logits, lambda t: False, ())[1] is None
    t, m = lt.sample(s, logits, lambda t: False, ())
    assert s.masked == 1 and t != bad[0] and m is not None
    assert (b"<tool_call" + tok.token_to_bytes(t)).startswith(b"<tool_call>")


class StubTokenizer:
    """A tiny vocabulary, to script tokens no real vocabulary has."""

    def __init__(self, pieces):
        self.pieces = [p.encode() for p in pieces]
        self.n_vocab = len(pieces)
        self.eog_ids = [0]

    def token_to_bytes(self, i):
        return self.pieces[i]


def test_lazy_trigger_inside_one_token():
    """The whole marker inside one token, after free text: kept when what follows the
    marker in the token is grammatical, else redrawn from the tokens that start a call."""
    g = LazyGrammar(pyrt.Grammar.from_string('root ::= "<call>" [0-9]+ "</call>"'), "<call>")
    tok = StubTokenizer(["<eos>", "hi <call>7", "hi <call>x", "<call>", "<ca", "7", "</call>", "x"])
    logits = np.zeros(tok.n_vocab, dtype=np.float32)
    never = lambda t: False  # noqa: E731
    t, m = _LazyTrigger(g, tok).sample(ScriptedSampler([1]), logits, never, ())
    assert t == 1 and m is not None and m.accept_bytes(b"</call>") and m.is_complete()
    s = ScriptedSampler([2])
    t, m = _LazyTrigger(g, tok).sample(s, logits, never, ())
    assert s.masked == 1 and t == 3 and m is not None      # "<call>": the first allowed token
    assert not m.accept_token(7) and m.accept_token(5) and m.accept_token(6) and m.is_complete()


def test_lazy_grammar_checks_its_trigger():
    g = pyrt.Grammar.from_string('root ::= "<call>" [a-z]+')
    with pytest.raises(ValueError, match="trigger"):
        LazyGrammar(g, "<other>")
    with pytest.raises(ValueError, match="trigger"):
        LazyGrammar(g, "")
    with pytest.raises(TypeError):
        LazyGrammar("root ::= x", "<call>")


# ---------------------------------------------------------------------------------------------
# the call parser and the grammar text
# ---------------------------------------------------------------------------------------------

REPLY = ('Let me check. \n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Sa\\"o {P}", '
         '"unit": "celsius"}}\n</tool_call>\n<tool_call>\n{"name": "ping", "arguments": {}}\n</tool_call>')


def test_call_parser_any_split():
    rng = random.Random(0)
    for trial in range(40):
        cuts = sorted(rng.sample(range(1, len(REPLY)), rng.randint(0, 30))) if trial else list(range(1, len(REPLY)))
        parts = [REPLY[a:b] for a, b in zip([0] + cuts, cuts + [len(REPLY)])]
        p = ToolCallStream()
        events = [e for part in parts for e in p.feed(part)] + list(p.finish())
        content = "".join(e[1] for e in events if e[0] == "content")
        assert content == "Let me check."
        assert [c["function"]["name"] for c in p.calls] == ["get_weather", "ping"]
        assert json.loads(p.calls[0]["function"]["arguments"]) == {"city": 'Sa"o {P}', "unit": "celsius"}
        assert p.calls[1]["function"]["arguments"] == "{}"
        args = "".join(e[2] for e in events if e[0] == "args" and e[1] == 0)
        assert args == p.calls[0]["function"]["arguments"]


def test_call_parser_holds_back_only_a_possible_marker():
    p = ToolCallStream()
    assert list(p.feed("a <tool")) == [("content", "a")]
    assert list(p.feed("box and <")) == [("content", " <toolbox and")]
    assert list(p.finish()) == [("content", " <")]
    assert p.calls == []


def test_call_grammar_accepts_exactly_valid_calls():
    spec = check_tools(TOOLS, "required")
    g = pyrt.Grammar.from_string(call_gbnf(spec))
    ok = '<tool_call>\n{"name": "book_flight", "arguments": {"leg": {"from": "CDG", "to": "JFK"}, "seats": 2}}\n</tool_call>'
    assert g.accepts(ok)
    assert not g.accepts(ok.replace('"CDG"', '"CDGX"'))           # $ref'd maxLength 3
    assert not g.accepts(ok.replace("2}}", "12}}"))                # maximum 9
    assert not g.accepts(ok.replace("book_flight", "rm_rf"))       # not a tool
    assert not g.accepts(ok + "\n" + ok)                           # parallel calls off
    gp = pyrt.Grammar.from_string(call_gbnf(check_tools(TOOLS, "required", True)))
    assert gp.accepts(ok + "\n" + ok)
    named = pyrt.Grammar.from_string(call_gbnf(check_tools(TOOLS, {"type": "function",
                                                                  "function": {"name": "ping"}})))
    assert named.accepts('<tool_call>\n{"name": "ping", "arguments": {}}\n</tool_call>')
    assert not named.accepts(ok)


# ---------------------------------------------------------------------------------------------
# bad requests
# ---------------------------------------------------------------------------------------------

BAD = [
    (dict(tools="get_weather"), "tools must be a list"),
    (dict(tools=[{"type": "retrieval"}]), r"tools\[0\].type"),
    (dict(tools=[{"type": "function"}]), r"tools\[0\].function"),
    (dict(tools=[{"type": "function", "function": {"name": "has space"}}]), r"tools\[0\].function.name"),
    (dict(tools=[WEATHER, WEATHER]), "given twice"),
    (dict(tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": "string"}}}]),
     "describe an object"),
    (dict(tools=[{"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"x": {"type": "string", "pattern": "a+"}}}}}]),
     r"tools\[0\].function.parameters: .*pattern"),
    (dict(tools=TOOLS, tool_choice="always"), "tool_choice must be"),
    (dict(tools=TOOLS, tool_choice={"type": "function", "function": {"name": "nope"}}), "not in tools"),
    (dict(tools=TOOLS, tool_choice={"type": "function"}), "tool_choice must be"),
    (dict(tool_choice="required"), "needs tools"),
    (dict(tools=TOOLS, parallel_tool_calls="yes"), "parallel_tool_calls"),
    (dict(tools=TOOLS, response_format={"type": "json_object"}), "not both"),
]


@pytest.mark.parametrize("kw, match", BAD)
def test_bad_tool_requests_raise(smol, kw, match):
    with pytest.raises(ValueError, match=match):
        smol.create_chat_completion(ASK, max_tokens=4, **kw)


def test_no_tools_is_a_plain_chat(smol):
    plain = smol.create_chat_completion(ASK, max_tokens=8, temperature=0)["choices"][0]["message"]
    for kw in (dict(tools=[]), dict(tools=None, tool_choice="none"), dict(tools=[], tool_choice="auto")):
        r = smol.create_chat_completion(ASK, max_tokens=8, temperature=0, **kw)
        assert r["choices"][0]["message"] == plain


def test_bad_history_raises(smol):
    bad = ASK + [{"role": "assistant", "content": None, "tool_calls": [{"type": "function", "function": {}}]}]
    with pytest.raises(ValueError, match=r"messages\[2\].tool_calls\[0\]"):
        smol.create_chat_completion(bad, tools=TOOLS, max_tokens=4)
    with pytest.raises(ValueError, match="content is required"):
        smol.create_chat_completion(ASK + [{"role": "tool", "tool_call_id": "x"}], max_tokens=4)


# ---------------------------------------------------------------------------------------------
# the openai client against pyrt serve
# ---------------------------------------------------------------------------------------------

openai = pytest.importorskip("openai")
from test_server import env, server  # noqa: E402,F401  (the live-server fixture, SmolLM2)


@pytest.fixture(scope="module")
def client(server):  # noqa: F811
    return openai.OpenAI(base_url=server, api_key="unused", max_retries=0, timeout=120)


def test_server_tools_required_and_stream(client):
    kw = dict(model="m", messages=ASK, tools=TOOLS, tool_choice="required", max_tokens=80,
              temperature=0.7, seed=4)
    r = client.chat.completions.create(**kw)
    ch = r.choices[0]
    assert ch.finish_reason == "tool_calls" and ch.message.content is None
    calls = check_calls(ch.message.model_dump())
    # streamed: the deltas reassemble (as the client library sees them) to the same call
    content, args, name, cid, finish = "", "", None, None, None
    for chunk in client.chat.completions.create(stream=True, **kw):
        if not chunk.choices:
            continue
        d = chunk.choices[0].delta
        content += d.content or ""
        for tc in d.tool_calls or ():
            assert tc.index == 0
            if tc.id:
                cid, name = tc.id, tc.function.name
            args += tc.function.arguments or ""
        finish = chunk.choices[0].finish_reason or finish
    assert finish == "tool_calls" and content == "" and cid.startswith("call_")
    assert {"name": name, "arguments": json.loads(args)} == calls[0]


def test_server_tools_auto_and_round_trip(client):
    msgs = [{"role": "user", "content": "Say hi, then write <tool_call>"}]
    called = None
    for seed in range(1, 7):
        r = client.chat.completions.create(model="m", messages=msgs, tools=[WEATHER], max_tokens=60,
                                           temperature=0.7, seed=seed)
        ch = r.choices[0]
        assert "<tool_call>" not in (ch.message.content or "")
        if ch.message.tool_calls:
            assert ch.finish_reason == "tool_calls"
            check_calls(ch.message.model_dump())
            called = ch.message
            break
    assert called is not None
    # the result goes back as a tool message; the reply is text or calls, never an error
    follow = msgs + [called.model_dump(exclude_none=True),
                     {"role": "tool", "tool_call_id": called.tool_calls[0].id, "content": "21 C"}]
    r = client.chat.completions.create(model="m", messages=follow, tools=[WEATHER], max_tokens=20,
                                       temperature=0)
    assert r.choices[0].finish_reason in ("stop", "length", "tool_calls")
    r = client.chat.completions.create(model="m", messages=ASK, tools=[WEATHER], tool_choice="none",
                                       max_tokens=8, temperature=0)
    assert r.choices[0].message.tool_calls is None and r.choices[0].message.content


@pytest.mark.parametrize("extra, param", [
    (dict(tools=[{"type": "function", "function": {"name": "f g"}}]), "tools"),
    (dict(tools=TOOLS, tool_choice="sometimes"), "tool_choice"),
    (dict(tools=TOOLS, tool_choice={"type": "function", "function": {"name": "nope"}}), "tool_choice"),
    (dict(tool_choice="required"), "tool_choice"),
    (dict(tools=TOOLS, parallel_tool_calls=3), "parallel_tool_calls"),
    (dict(tools=TOOLS, response_format={"type": "json_object"}), "tools"),
])
def test_server_bad_tools_are_400(client, extra, param):
    with pytest.raises(openai.BadRequestError) as ei:
        client.chat.completions.create(model="m", messages=ASK, max_tokens=4, extra_body=extra)
    assert ei.value.body["param"] == param and ei.value.body["message"]
