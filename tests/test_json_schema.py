"""JSON schema -> grammar: what each keyword admits and rejects, clear
errors for what is not supported, and generation (SmolLM2, a few with
Gemma-3) whose every output validates with the jsonschema package."""
from __future__ import annotations

import json
import random

import pytest

jsonschema = pytest.importorskip("jsonschema")

from pyrt.grammar import Grammar, resolve_grammar          # noqa: E402
from pyrt.grammar.json_schema import SchemaError, int_range, schema_to_gbnf   # noqa: E402

PERSON = {"type": "object",
          "properties": {"name": {"type": "string", "minLength": 1, "maxLength": 20},
                         "age": {"type": "integer", "minimum": 0, "maximum": 120},
                         "email": {"type": "string", "maxLength": 30}},
          "required": ["name", "age"]}


def accepts(schema, text: str) -> bool:
    return Grammar.from_json_schema(schema).accepts(text)


# ---------------------------------------------------------------------------------------------
# keywords
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("schema, good, bad", [
    ({"type": "integer"}, ["0", "-7", "1234567890123456"], ["01", "1.5", "-", "12345678901234567", '"1"']),
    ({"type": "number"}, ["0", "-1.25", "3e10", "2.5E-3"], ["1.", ".5", "+1", "NaN"]),
    ({"type": "number", "minimum": 0}, ["0", "1.5"], ["-1", "-0.5"]),
    ({"type": "boolean"}, ["true", "false"], ["True", "1"]),
    ({"type": "null"}, ["null"], ["None", ""]),
    ({"type": "string"}, ['""', '"a\\"b"', '"\\u00e9 日本"'], ['"a', "'a'", '"a\nb"', '"\\q"']),
    ({"type": "string", "minLength": 2, "maxLength": 3}, ['"ab"', '"a\\nc"', '"日本語"'],
     ['"a"', '"abcd"']),
    ({"type": "string", "format": "date"}, ['"2024-02-29"', '"1999-12-31"'], ['"2024-13-01"', '"24-01-01"']),
    ({"type": "string", "format": "time"}, ['"23:59:59Z"', '"01:02:03.456+05:30"'], ['"24:00:00Z"', '"1:2:3"']),
    ({"type": "string", "format": "date-time"}, ['"2024-01-02T03:04:05Z"'], ['"2024-01-02 03:04:05Z"']),
    ({"type": "string", "format": "uuid"}, ['"123e4567-e89b-12d3-a456-426614174000"'], ['"123e4567"']),
    ({"enum": ["a", 1, None, [1, 2]]}, ['"a"', "1", "null", "[1,2]"], ['"b"', "2", "[1, 2]"]),
    ({"const": {"k": "v"}}, ['{"k":"v"}'], ['{"k":"w"}', "{}"]),
    ({"anyOf": [{"type": "integer"}, {"type": "string", "maxLength": 1}]}, ["5", '"x"'], ['"xy"', "true"]),
    ({"oneOf": [{"type": "boolean"}, {"type": "null"}]}, ["true", "null"], ["0"]),
    ({"type": ["string", "null"]}, ['"s"', "null"], ["1"]),
    ({"type": ["string", "integer"], "maxLength": 2, "minimum": 5}, ['"ab"', "5", "77"], ['"abc"', "4"]),
    ({"type": "array", "items": {"type": "integer"}, "minItems": 1, "maxItems": 3},
     ["[1]", "[1, 2, 3]", "[1,2]"], ["[]", "[1,2,3,4]", '["a"]']),
    ({"type": "array", "prefixItems": [{"type": "string"}, {"type": "integer"}], "items": False},
     ['["a", 1]', '["a"]', "[]"], ['[1, "a"]', '["a", 1, 2]']),
    ({"type": "array"}, ["[]", '[1, "a", {"b": null}]'], ["[1,]"]),
    ({"type": "object"}, ["{}", '{"a": [1, {"b": 2}]}'], ["[]", '{"a"}']),
    (PERSON, ['{"name": "Al", "age": 3}', '{"name":"Al","age":3,"email":"a@b"}'],
     ['{"age": 3, "name": "Al"}', '{"name": "Al"}', '{"name": "", "age": 3}', '{"name": "Al", "age": 121}',
      '{"name": "Al", "age": 3, "x": 1}']),
    ({"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}},
     ["{}", '{"a": 1}', '{"b": 2}', '{"a": 1, "b": 2}'], ['{"b": 2, "a": 1}', '{,"b": 2}', '{"a": 1,}']),
    ({"type": "object", "properties": {"a": {"type": "integer"}}, "additionalProperties": True},
     ['{"a": 1, "b": [true]}', '{"zz": 1}', '{"ab": 1}', '{}'], ['{"b": 1, "a": 2}', '{"a": 1, "a": 2}']),
    ({"type": "object", "properties": {"id": {"type": "integer"}},
      "additionalProperties": {"type": "string"}},
     ['{"id": 1, "x": "y"}', '{"i": "s"}'], ['{"x": 1}', '{"id": "s"}']),
    ({"type": "object", "required": ["k"], "additionalProperties": {"type": "boolean"}},
     ['{"k": true}', '{"k": false, "z": true}'], ["{}", '{"k": 1}']),
    ({"$defs": {"node": {"type": "object", "properties": {"v": {"type": "integer"},
                                                          "next": {"anyOf": [{"$ref": "#/$defs/node"},
                                                                             {"type": "null"}]}},
                         "required": ["v", "next"]}},
      "$ref": "#/$defs/node"},
     ['{"v": 1, "next": {"v": 2, "next": null}}'], ['{"v": 1, "next": {"v": 2}}']),
    ({"type": "object", "properties": {"tree": {"$ref": "#"}}, "title": "recursive to the root"},
     ['{}', '{"tree": {"tree": {}}}'], ['{"tree": 1}']),
    ({"allOf": [{"type": "integer", "exclusiveMinimum": 0, "exclusiveMaximum": 10}]}, ["1", "9"], ["0", "10"]),
])
def test_keywords_admit_and_reject(schema, good, bad):
    g = Grammar.from_json_schema(schema)
    for text in good:
        assert g.accepts(text), (schema, text)
        jsonschema.validate(json.loads(text), schema)          # the examples themselves are right
    for text in bad:
        assert not g.accepts(text), (schema, text)


@pytest.mark.parametrize("lo, hi", [(0, 150), (-5, 17), (-1000, -3), (7, 7), (10, 999), (123, 4567),
                                    (-99, 99), (0, 10 ** 16 - 1), (-(10 ** 16 - 1), 5)])
def test_integer_ranges_are_exact(lo, hi):
    g = Grammar.from_string("root ::= " + int_range(lo, hi) + "\n")
    rng = random.Random(lo)
    xs = set(range(lo - 30, lo + 300)) | set(range(hi - 300, hi + 30)) | \
        {rng.randint(lo, hi) for _ in range(300)} | {rng.randint(-10 ** 17, 10 ** 17) for _ in range(50)}
    for x in xs:
        assert g.accepts(str(x)) == (lo <= x <= hi), x
    assert not g.accepts("-0") and not g.accepts("00")


def test_random_instances_of_a_schema_are_accepted():
    schema = {"type": "object",
              "properties": {"n": {"type": "integer", "minimum": -50, "maximum": 50},
                             "s": {"type": "string", "maxLength": 4},
                             "l": {"type": "array", "items": {"type": "boolean"}, "maxItems": 3},
                             "e": {"enum": ["x", "y"]}},
              "required": ["n"]}
    g = Grammar.from_json_schema(schema)
    rng = random.Random(1)
    for _ in range(300):
        v = {"n": rng.randint(-50, 50)}
        if rng.random() < 0.5:
            v["s"] = "".join(rng.choice('ab"\\é\n') for _ in range(rng.randint(0, 4)))
        if rng.random() < 0.5:
            v["l"] = [rng.random() < 0.5 for _ in range(rng.randint(0, 3))]
        if rng.random() < 0.5:
            v["e"] = rng.choice("xy")
        text = json.dumps(v, ensure_ascii=rng.random() < 0.5, separators=rng.choice([(",", ":"), (", ", ": ")]))
        assert g.accepts(text), text


@pytest.mark.parametrize("schema, msg", [
    ({"type": "string", "pattern": "^a+$"}, "'pattern'"),
    ({"type": "integer", "multipleOf": 3}, "'multipleOf'"),
    ({"type": "object", "properties": {"a": {"type": "string", "format": "email"}}}, "#/properties/a: unsupported format 'email'"),
    ({"type": "array", "uniqueItems": True}, "'uniqueItems'"),
    ({"type": "object", "patternProperties": {"a": {}}}, "'patternProperties'"),
    ({"type": "number", "maximum": 3}, "'maximum'"),
    ({"$ref": "https://example.com/s.json"}, "only local $ref"),
    ({"$ref": "#/$defs/missing"}, "points to nothing"),
    ({"type": "integer", "minimum": 5, "maximum": 4}, "no integer"),
    ({"type": "string", "minLength": 5, "maxLength": 2}, "maxLength 2 < minLength 5"),
    ({"type": "object", "properties": {}, "required": ["x"]}, "required property 'x'"),
    ({"type": "widget"}, "unknown type 'widget'"),
    ({"allOf": [{"type": "string"}, {"maxLength": 3}]}, "allOf"),
    (False, "accepts nothing"),
    ([1], "must be an object"),
    ({"minLength": 1, "items": {}}, "several types"),
])
def test_unsupported_or_invalid_schemas_raise(schema, msg):
    with pytest.raises(SchemaError) as e:
        schema_to_gbnf(schema)
    assert msg in str(e.value)


def test_response_format_shapes():
    assert resolve_grammar(None, None) is None
    assert resolve_grammar(None, {"type": "text"}) is None
    assert resolve_grammar(None, {"type": "json_object"}).accepts('{"a": 1}')
    assert not resolve_grammar(None, {"type": "json_object"}).accepts("[1]")
    g = resolve_grammar(None, {"type": "json_object", "schema": {"type": "integer"}})
    assert g.accepts("5")
    g = resolve_grammar(None, {"type": "json_schema",
                               "json_schema": {"name": "p", "schema": PERSON, "strict": True}})
    assert g.accepts('{"name": "A", "age": 1}') and not g.accepts('{"name": "A"}')
    for bad, msg in [({"type": "xml"}, "must be 'text'"), ("json", "must be a dict"),
                     ({"type": "json_schema"}, "'json_schema' must be an object"),
                     ({"type": "json_schema", "json_schema": {"schema": {}, "strict": "yes"}}, "'strict'"),
                     ({"type": "json_schema", "json_schema": {"schema": {"type": "integer", "multipleOf": 2}}},
                      "multipleOf")]:
        with pytest.raises(ValueError, match=msg):
            resolve_grammar(None, bad)
    with pytest.raises(ValueError, match="not both"):
        resolve_grammar('root ::= "a"', {"type": "json_object"})
    with pytest.raises(ValueError, match="not valid JSON"):
        Grammar.from_json_schema("{nope")
    assert Grammar.from_json_schema('{"type": "boolean"}').accepts("true")


# ---------------------------------------------------------------------------------------------
# generation
# ---------------------------------------------------------------------------------------------
# (additionalProperties is left to the unit tests above: with open-ended keys a
# 135M model tends to invent keys until max_tokens, which says nothing about
# the grammar)

S = {"type": "string", "maxLength": 24}
GEN_CASES = [
    (PERSON, "Give me a person as JSON."),
    ({"type": "object", "properties": {"city": S, "population": {"type": "integer", "minimum": 0}},
      "required": ["city", "population"]}, "Describe Paris."),
    ({"type": "array", "items": {"type": "integer", "minimum": 1, "maximum": 9}, "minItems": 3,
      "maxItems": 5}, "Pick some digits."),
    ({"enum": ["positive", "negative", "neutral"]}, "Sentiment of: I love this!"),
    ({"type": "boolean"}, "Is water wet?"),
    ({"type": "integer", "minimum": 1900, "maximum": 2100}, "What year is it?"),
    ({"type": "number"}, "What is pi?"),
    ({"type": "number", "minimum": 0}, "How tall is a tree in metres?"),
    ({"type": "string", "minLength": 3, "maxLength": 12}, "Name a fruit."),
    ({"type": "string", "format": "date"}, "When was the moon landing?"),
    ({"type": "string", "format": "time"}, "What time is lunch?"),
    ({"type": "string", "format": "date-time"}, "When does the meeting start?"),
    ({"type": "string", "format": "uuid"}, "Make an id."),
    ({"type": "null"}, "Say nothing."),
    ({"const": "ok"}, "Reply ok."),
    ({"type": ["integer", "null"]}, "How many moons has Mars?"),
    ({"anyOf": [{"type": "integer"}, {"type": "string", "maxLength": 10}]}, "Your favourite number?"),
    ({"oneOf": [{"type": "object", "properties": {"cat": S}, "required": ["cat"]},
                {"type": "object", "properties": {"dog": S}, "required": ["dog"]}]}, "Name a pet."),
    ({"type": "object", "properties": {"title": S, "tags": {"type": "array", "items": S, "maxItems": 3}},
      "required": ["title", "tags"]}, "A blog post."),
    ({"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "boolean"},
                                       "c": {"type": "null"}}}, "Fill in a, b, c."),
    ({"type": "object", "properties": {"x": {"type": "number"}, "y": {"type": "number"}},
      "required": ["x", "y"]}, "A point in the plane."),
    ({"type": "object", "properties": {"name": S, "price": {"type": "number", "minimum": 0},
                                       "stock": {"type": "integer", "minimum": 0, "maximum": 1000}},
      "required": ["name", "price"]}, "A product."),
    ({"type": "object", "properties": {"lat": {"type": "number"}, "lon": {"type": "number"},
                                       "label": {"type": ["string", "null"], "maxLength": 16}},
      "required": ["lat", "lon", "label"]}, "Where is Rome?"),
    ({"type": "array", "prefixItems": [S, {"type": "integer", "minimum": 0, "maximum": 100}],
      "items": False, "minItems": 2}, "A name and a score."),
    ({"$defs": {"item": {"type": "object", "properties": {"name": S, "qty": {"type": "integer",
                                                                          "minimum": 1, "maximum": 99}},
                         "required": ["name", "qty"]}},
      "type": "object", "properties": {"items": {"type": "array", "items": {"$ref": "#/$defs/item"},
                                                 "minItems": 1, "maxItems": 3}},
      "required": ["items"]}, "A shopping list."),
    ({"definitions": {"color": {"enum": ["red", "green"]}},
      "type": "object", "properties": {"fg": {"$ref": "#/definitions/color"},
                                       "bg": {"$ref": "#/definitions/color"}},
      "required": ["fg", "bg"]}, "Pick colours."),
    ({"type": "object", "properties": {"user": PERSON, "active": {"type": "boolean"}},
      "required": ["user", "active"]}, "A user record."),
    ({"type": "object", "properties": {"when": {"type": "string", "format": "date"},
                                       "where": S}, "required": ["when", "where"]}, "An appointment."),
    ({"type": "array", "items": {"enum": [1, 2, 3]}, "maxItems": 4}, "Some of 1, 2, 3."),
    ({"type": "object"}, "Any JSON object please."),
    ({"type": "array", "items": {"type": "array", "items": {"type": "integer", "minimum": 0,
                                                           "maximum": 9}, "maxItems": 3},
      "minItems": 2, "maxItems": 3}, "A small matrix."),
    ({"type": "object", "properties": {"answer": {"type": "integer", "exclusiveMinimum": -10,
                                                  "exclusiveMaximum": 10},
                                       "confidence": {"enum": ["low", "high"]}},
      "required": ["answer", "confidence"]}, "What is 2 + 2?"),
    ({"type": "object", "properties": {"ok": {"type": "boolean"}, "reason": S},
      "required": ["ok"]}, "Can pigs fly?"),
]


@pytest.fixture(scope="module")
def smollm(smollm2_path):
    import pyrt
    m = pyrt.Llama(str(smollm2_path), n_ctx=1024, n_threads=2, seed=0)
    yield m
    m.close()


def check_reply(text: str, finish: str, schema) -> None:
    assert finish == "stop", f"did not finish: {text!r}"
    jsonschema.validate(json.loads(text), schema)


@pytest.mark.parametrize("i", range(len(GEN_CASES)))
def test_smollm2_output_validates(smollm, i):
    schema, prompt = GEN_CASES[i]
    assert len(GEN_CASES) >= 30
    rf = {"type": "json_schema", "json_schema": {"name": f"case{i}", "schema": schema, "strict": True}}
    r = smollm.create_chat_completion([{"role": "user", "content": prompt}], max_tokens=160,
                                      temperature=0.7, seed=i, response_format=rf)
    check_reply(r["choices"][0]["message"]["content"], r["choices"][0]["finish_reason"], schema)
    if i % 3 == 0:          # the same through create_completion, greedy
        r = smollm.create_completion(f"Q: {prompt}\nA (JSON):", max_tokens=160, temperature=0,
                                     response_format=rf)
        check_reply(r["choices"][0]["text"], r["choices"][0]["finish_reason"], schema)


def test_smollm2_json_object_and_stream(smollm):
    parts = list(smollm.create_chat_completion([{"role": "user", "content": "Describe a dog in JSON."}],
                                               max_tokens=160, temperature=0.5, seed=1, stream=True,
                                               response_format={"type": "json_object"}))
    text = "".join(p["choices"][0]["delta"].get("content", "") for p in parts)
    assert parts[-1]["choices"][0]["finish_reason"] == "stop"
    assert isinstance(json.loads(text), dict)


@pytest.fixture(scope="module")
def gemma(request):
    from pyrt.registry import ensure_model
    import pyrt
    try:
        path = ensure_model("gemma-3-270m")
    except Exception as e:            # noqa: BLE001 - not downloadable here
        pytest.skip(f"gemma-3-270m unavailable: {e}")
    m = pyrt.Llama(str(path), n_ctx=1024, n_threads=2, seed=0)
    yield m
    m.close()


@pytest.mark.parametrize("i", [0, 2, 9, 18, 24, 32])
def test_gemma3_output_validates(gemma, i):
    schema, prompt = GEN_CASES[i]
    r = gemma.create_chat_completion([{"role": "user", "content": prompt}], max_tokens=160,
                                     temperature=0.7, seed=i,
                                     response_format={"type": "json_schema",
                                                      "json_schema": {"name": "x", "schema": schema}})
    check_reply(r["choices"][0]["message"]["content"], r["choices"][0]["finish_reason"], schema)
