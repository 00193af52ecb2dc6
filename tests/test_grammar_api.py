"""Structured output through the surfaces: `pyrt serve` with the official
`openai` client (response_format json_schema / json_object, chat.completions.parse
with a pydantic model, llama.cpp's `grammar` / `json_schema` request fields,
400s for bad ones) and `pyrt generate --grammar-file / --json-schema`."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

openai = pytest.importorskip("openai")
jsonschema = pytest.importorskip("jsonschema")

from test_server import env, server  # noqa: E402,F401  (the live-server fixture)

PERSON = {"type": "object",
          "properties": {"name": {"type": "string", "maxLength": 20},
                         "age": {"type": "integer", "minimum": 0, "maximum": 120}},
          "required": ["name", "age"], "additionalProperties": False}


@pytest.fixture(scope="module")
def client(server):  # noqa: F811
    return openai.OpenAI(base_url=server, api_key="unused", max_retries=0, timeout=120)


def test_server_response_format_json_schema(client):
    for seed in (1, 2):
        r = client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "Invent a person."}], max_tokens=100,
            seed=seed, temperature=0.8,
            response_format={"type": "json_schema",
                             "json_schema": {"name": "person", "schema": PERSON, "strict": True}})
        assert r.choices[0].finish_reason == "stop"
        jsonschema.validate(json.loads(r.choices[0].message.content), PERSON)


def test_server_parse_with_pydantic_and_streaming(client):
    pydantic = pytest.importorskip("pydantic")

    class City(pydantic.BaseModel):
        name: str = pydantic.Field(max_length=20)
        population: int = pydantic.Field(ge=0, le=100_000_000)
        capital: bool

    r = client.beta.chat.completions.parse(model="m", messages=[{"role": "user", "content": "Describe Lyon."}],
                                           max_tokens=120, temperature=0.3, seed=0, response_format=City) \
        if hasattr(client, "beta") and hasattr(client.beta.chat.completions, "parse") else \
        client.chat.completions.parse(model="m", messages=[{"role": "user", "content": "Describe Lyon."}],
                                      max_tokens=120, temperature=0.3, seed=0, response_format=City)
    city = r.choices[0].message.parsed
    assert isinstance(city, City) and 0 <= city.population <= 100_000_000
    # streamed json_object: the concatenated deltas are one JSON object
    ask = "Give a JSON object with the keys name and color for a cat."
    stream = client.chat.completions.create(model="m", messages=[{"role": "user", "content": ask}],
                                            max_tokens=120, seed=3, temperature=0.2, stream=True,
                                            response_format={"type": "json_object"})
    text, finish = "", None
    for ch in stream:
        if ch.choices:
            text += ch.choices[0].delta.content or ""
            finish = ch.choices[0].finish_reason or finish
    assert finish == "stop" and isinstance(json.loads(text), dict)


def test_server_completion_grammar_fields(client):
    r = client.completions.create(model="m", prompt="Is the sea salty? Answer:", max_tokens=10, seed=0,
                                  extra_body={"grammar": 'root ::= " " ("yes" | "no")\n'})
    assert r.choices[0].text in (" yes", " no") and r.choices[0].finish_reason == "stop"
    r = client.completions.create(model="m", prompt="A number:", max_tokens=20, seed=0,
                                  extra_body={"json_schema": {"type": "integer", "minimum": 10, "maximum": 99}})
    assert 10 <= json.loads(r.choices[0].text) <= 99
    r = client.completions.create(model="m", prompt="Colours:", max_tokens=60, seed=0,
                                  extra_body={"response_format": {
                                      "type": "json_schema",
                                      "json_schema": {"name": "c", "schema": {"type": "array",
                                                                              "items": {"enum": ["red", "blue"]},
                                                                              "maxItems": 3}}}})
    assert set(json.loads(r.choices[0].text)) <= {"red", "blue"}


@pytest.mark.parametrize("extra, param", [
    ({"grammar": "root ::= ("}, "grammar"),
    ({"grammar": 5}, "grammar"),
    ({"json_schema": {"type": "string", "pattern": "a"}}, "json_schema"),
    ({"response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "nope"}}}}, "response_format"),
    ({"response_format": {"type": "yaml"}}, "response_format"),
    ({"grammar": 'root ::= "a"', "response_format": {"type": "json_object"}}, "response_format"),
])
def test_server_bad_grammars_are_400(client, extra, param):
    with pytest.raises(openai.BadRequestError) as ei:
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}], max_tokens=4,
                                       extra_body=extra)
    assert ei.value.body["param"] == param and ei.value.body["message"]


def run_cli(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "pyrt", *args], capture_output=True, text=True,
                          timeout=timeout, env=env())


def test_cli_grammar_and_json_schema(smollm2_path, tmp_path):
    gf = tmp_path / "yn.gbnf"
    gf.write_text('root ::= ("yes" | "no") "."\n')
    r = run_cli("generate", "-m", str(smollm2_path), "--grammar-file", str(gf), "--temp", "0", "-n", "8",
                "Is fire hot?")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() in ("yes.", "no.")
    sf = tmp_path / "s.json"
    sf.write_text(json.dumps(PERSON))
    for spec in (json.dumps(PERSON), "@" + str(sf)):
        r = run_cli("generate", "-m", str(smollm2_path), "--json-schema", spec, "--temp", "0", "-n", "80",
                    "A person:")
        assert r.returncode == 0, r.stderr
        jsonschema.validate(json.loads(r.stdout), PERSON)
    r = run_cli("generate", "-m", str(smollm2_path), "--json-schema", '{"type": "string", "pattern": "x"}', "x")
    assert r.returncode == 1 and "pattern" in r.stderr and "Traceback" not in r.stderr
    gf.write_text('root ::= "a"\nb ::= [z-a]\n')
    r = run_cli("generate", "-m", str(smollm2_path), "--grammar-file", str(gf), "x")
    assert r.returncode == 1 and "line 2, column 7" in r.stderr


def test_chat_set_format_json(smollm2_path, tmp_path):
    pexpect = pytest.importorskip("pexpect")
    from test_repl import send, spawn
    c = spawn(smollm2_path, tmp_path / "cache", "-n", "120", "-c", "1024")
    assert "Set format to 'json' mode." in send(c, "/set format json")
    out = send(c, "Give a JSON object with the keys name and color for a cat.")
    import re
    text = re.sub(r"\x1b\[[0-9;]*m", "", out.split("\n", 1)[1]).strip()   # after the echoed line, no colors
    assert isinstance(json.loads(text), dict), out
    assert "Usage: /set format json" in send(c, "/set format yaml")
    assert "Disabled format." in send(c, "/set noformat")
    c.sendline("/bye")
    c.expect(pexpect.EOF)
