"""Tool (function) calling for chat completions, in OpenAI's shape.

One call format, the Hermes/Qwen one: each call is a block

    <tool_call>
    {"name": "get_weather", "arguments": {"city": "Paris"}}
    </tool_call>

written by the model; several blocks (one per line) when parallel calls are
allowed. pieces:

- validation of ``tools``, ``tool_choice`` and ``parallel_tool_calls``
  (:func:`check_tools`), every error a ``ValueError`` naming the field;
- the prompt (:func:`prepare_messages`): a chat template that uses the
  ``<tool_call>`` format itself (Qwen 2.5/3, Hermes: it mentions ``tools``
  and the marker) gets the tools as its ``tools`` variable, as transformers
  and llama.cpp pass them, and the conversation's earlier calls and results
  as they are (``tool_calls`` with the arguments parsed into objects,
  ``role: tool`` messages). Any other template (SmolLM2's ChatML, Gemma's)
  gets the fallback: a system-prompt block listing the functions and the
  exact call format, earlier calls written into the assistant turns in that
  format, and tool results sent back as a user turn of
  ``<tool_response>`` blocks;
- the grammar (:func:`call_grammar`): the marker, then a JSON object whose
  "name" is one of the allowed functions and whose "arguments" match that
  function's parameters schema (an alternative per function), then the
  closing marker. ``required`` or a named function constrains the reply from
  its first token; ``auto`` applies the grammar lazily, from the moment the
  model writes the marker (:class:`pyrt.generate.LazyGrammar`); ``none``
  shows no tools to the model and constrains nothing;
- the reply (:class:`ToolCallStream`): text before the first marker is the
  message content, each call becomes an OpenAI ``tool_calls`` entry, and in
  streaming its arguments arrive as string fragments; the marker text never
  reaches ``content``.
"""
from __future__ import annotations

import copy
import json
import re
import threading
import uuid
from collections import OrderedDict
from typing import Any, Iterator, Mapping, Sequence

__all__ = ["CALL_OPEN", "CALL_CLOSE", "ToolSpec", "check_tools", "prepare_messages", "call_grammar",
           "ToolCallStream", "template_tool_mode", "fallback_system_block"]

CALL_OPEN = "<tool_call>"
CALL_CLOSE = "</tool_call>"
RESPONSE_OPEN = "<tool_response>"
RESPONSE_CLOSE = "</tool_response>"

_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")      # OpenAI's rule for function names
MAX_TOOLS = 128


# ---------------------------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------------------------

class ToolSpec:
    """Validated tools of one request: `tools` (normalized OpenAI dicts),
    `mode` ("auto", "required", "none"), `names` (the functions the model may
    call: all, or the one `tool_choice` names) and `parallel`."""

    def __init__(self, tools: list[dict], mode: str, names: list[str], parallel: bool):
        self.tools, self.mode, self.names, self.parallel = tools, mode, names, parallel

    @property
    def active(self) -> bool:
        """Whether the model may call a function in this reply."""
        return self.mode != "none"

    def functions(self) -> dict[str, dict]:
        return {t["function"]["name"]: t["function"] for t in self.tools}


def check_tools(tools: Any, tool_choice: Any = None, parallel_tool_calls: Any = None) -> ToolSpec | None:
    """Validate OpenAI's `tools`, `tool_choice` and `parallel_tool_calls`;
    None when there are no tools (then `tool_choice` may only be None,
    "none" or "auto"). Each function's parameters schema is compiled here, so an
    unsupported schema fails before generation. Raises ValueError."""
    if parallel_tool_calls is not None and not isinstance(parallel_tool_calls, bool):
        raise ValueError(f"parallel_tool_calls must be a boolean, got {parallel_tool_calls!r}")
    if tools is None or (isinstance(tools, (list, tuple)) and not tools):
        if tool_choice not in (None, "none", "auto"):
            raise ValueError(f"tool_choice {tool_choice!r} needs tools (none were given)")
        return None
    if not isinstance(tools, (list, tuple)):
        raise ValueError(f"tools must be a list of {{'type': 'function', 'function': {{...}}}} dicts, "
                         f"got {type(tools).__name__}")
    if len(tools) > MAX_TOOLS:
        raise ValueError(f"tools: at most {MAX_TOOLS} tools per request (got {len(tools)})")
    from .grammar.json_schema import schema_to_gbnf
    out, seen = [], set()
    for i, t in enumerate(tools):
        where = f"tools[{i}]"
        if not isinstance(t, Mapping):
            raise ValueError(f"{where} must be a dict, got {type(t).__name__}")
        if t.get("type") != "function":
            raise ValueError(f"{where}.type must be 'function' (got {t.get('type')!r})")
        f = t.get("function")
        if not isinstance(f, Mapping):
            raise ValueError(f"{where}.function must be a dict with 'name' and 'parameters'")
        name = f.get("name")
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise ValueError(f"{where}.function.name must be 1-64 characters of a-z, A-Z, 0-9, _ and - "
                             f"(got {name!r})")
        if name in seen:
            raise ValueError(f"{where}.function.name {name!r} is given twice")
        seen.add(name)
        desc = f.get("description")
        if desc is not None and not isinstance(desc, str):
            raise ValueError(f"{where}.function.description must be a string")
        params = f.get("parameters")
        if params is None:
            params = {"type": "object", "properties": {}}        # OpenAI: no parameters
        if not isinstance(params, Mapping):
            raise ValueError(f"{where}.function.parameters must be a JSON schema object")
        if params.get("type", "object") != "object":
            raise ValueError(f"{where}.function.parameters must describe an object "
                             f"(type 'object', got {params.get('type')!r})")
        strict = f.get("strict")
        if strict is not None and not isinstance(strict, bool):
            raise ValueError(f"{where}.function.strict must be a boolean")
        params = copy.deepcopy(dict(params))
        try:
            schema_to_gbnf(params)
        except ValueError as e:
            raise ValueError(f"{where}.function.parameters: {e}") from None
        fn = {"name": name}
        if desc is not None:
            fn["description"] = desc
        fn["parameters"] = params
        out.append({"type": "function", "function": fn})
    names = [t["function"]["name"] for t in out]
    if tool_choice is None or tool_choice == "auto":
        mode, allowed = "auto", names
    elif tool_choice in ("none", "required"):
        mode, allowed = tool_choice, names
    elif isinstance(tool_choice, Mapping):
        fn = tool_choice.get("function")
        name = fn.get("name") if isinstance(fn, Mapping) else None
        if tool_choice.get("type") != "function" or not isinstance(name, str):
            raise ValueError("tool_choice must be 'auto', 'none', 'required' or "
                             "{'type': 'function', 'function': {'name': ...}}, "
                             f"got {tool_choice!r}")
        if name not in seen:
            raise ValueError(f"tool_choice names the function {name!r}, which is not in tools "
                             f"({', '.join(names)})")
        mode, allowed = "required", [name]
    else:
        raise ValueError("tool_choice must be 'auto', 'none', 'required' or "
                         f"{{'type': 'function', 'function': {{'name': ...}}}}, got {tool_choice!r}")
    parallel = False if parallel_tool_calls is None else parallel_tool_calls     # as llama.cpp
    return ToolSpec(out, mode, allowed, parallel)


# ---------------------------------------------------------------------------------------------
# the prompt
# ---------------------------------------------------------------------------------------------

_PROBE_TOOL = {"type": "function", "function": {"name": "pyrt_probe_fn_q7",
                                                "description": "probe",
                                                "parameters": {"type": "object", "properties": {}}}}


def template_tool_mode(template) -> str:
    """"native" when `template` (a :class:`pyrt.chat.ChatTemplate`) renders
    the ``tools`` it is given and uses the ``<tool_call>`` format, else
    "fallback". Decided once per template by rendering a probe."""
    mode = getattr(template, "_pyrt_tool_mode", None)
    if mode is None:
        mode = "fallback"
        if CALL_OPEN in template.source and "tools" in template.source:
            probe = [{"role": "user", "content": "hi"}]
            try:
                if "pyrt_probe_fn_q7" in template.render(probe, tools=[_PROBE_TOOL]):
                    mode = "native"
            except ValueError:
                pass
        template._pyrt_tool_mode = mode
    return mode


def fallback_system_block(spec: ToolSpec) -> str:
    """The system-prompt text that offers the tools to a model whose template
    has no tool support: the functions as JSON, then the call format."""
    lines = ["You can call functions. They are listed here as JSON, one per line:", "<tools>"]
    for t in spec.tools:
        lines.append(json.dumps(t["function"], ensure_ascii=False))
    lines += ["</tools>",
              "To call a function, reply with one block like this per call, and nothing else:",
              CALL_OPEN,
              '{"name": "<function name>", "arguments": {<the arguments as a JSON object>}}',
              CALL_CLOSE,
              f"The results come back inside {RESPONSE_OPEN}{RESPONSE_CLOSE}."]
    if spec.mode == "required" and len(spec.names) == 1 and len(spec.tools) > 1:
        lines.append(f"Call the function {spec.names[0]}.")
    elif spec.mode == "required":
        lines.append("Call a function now.")
    else:
        lines.append("If no function is needed, answer the user directly.")
    return "\n".join(lines)


def _call_text(call: Mapping) -> str:
    fn = call["function"]
    args = fn["arguments"]
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except json.JSONDecodeError:
            pass        # kept as the string the client sent
    return f"{CALL_OPEN}\n" + json.dumps({"name": fn["name"], "arguments": args}, ensure_ascii=False) \
        + f"\n{CALL_CLOSE}"


def _response_text(msg: Mapping, names: dict[str, str]) -> str:
    body: dict = {}
    name = msg.get("name") or names.get(msg.get("tool_call_id") or "")
    if name:
        body["name"] = name
    body["content"] = msg["content"]
    return f"{RESPONSE_OPEN}\n" + json.dumps(body, ensure_ascii=False) + f"\n{RESPONSE_CLOSE}"


def prepare_messages(template, messages: Sequence[Mapping], spec: ToolSpec | None) -> tuple[list[dict], dict]:
    """(messages, extra template variables) to render for a request's
    `messages` (validated here by :func:`pyrt.chat.normalize_messages`).
    With a native template the tools go to its ``tools`` variable; with the
    fallback they are described in the system prompt and earlier calls and
    results are rewritten as text (see the module docstring). With
    ``tool_choice="none"`` no tools are shown."""
    from .chat import normalize_messages
    messages = normalize_messages(messages)
    offered = spec if spec is not None and spec.active else None
    has_history = any(m.get("tool_calls") or m["role"] == "tool" for m in messages)
    if offered is None and not has_history:
        return list(messages), {}
    if template_tool_mode(template) == "native":
        return list(messages), ({"tools": offered.tools} if offered is not None else {})
    out: list[dict] = []
    names: dict[str, str] = {}          # tool_call_id -> function name
    for m in messages:
        if m["role"] == "assistant" and m.get("tool_calls"):
            parts = [m["content"]] if m["content"] else []
            for c in m["tool_calls"]:
                if c.get("id"):
                    names[c["id"]] = c["function"]["name"]
                parts.append(_call_text(c))
            out.append({"role": "assistant", "content": "\n".join(parts)})
        elif m["role"] == "tool":
            text = _response_text(m, names)
            if out and out[-1].get("_tool_results"):
                out[-1]["content"] += "\n" + text           # consecutive results: one user turn
            else:
                out.append({"role": "user", "content": text, "_tool_results": True})
        else:
            out.append({k: v for k, v in m.items() if k in ("role", "content", "name")})
    for m in out:
        m.pop("_tool_results", None)
    if offered is not None:
        block = fallback_system_block(offered)
        if out and out[0]["role"] in ("system", "developer"):
            out[0] = dict(out[0], content=(out[0]["content"] + "\n\n" + block) if out[0]["content"] else block)
        else:
            out.insert(0, {"role": "system", "content": block})
    return out, {}


# ---------------------------------------------------------------------------------------------
# the grammar
# ---------------------------------------------------------------------------------------------

_VALUES = {"const", "enum", "default", "examples"}                   # values, not subschemas
_SCHEMA_MAPS = {"properties", "$defs", "definitions", "patternProperties"}  # name -> subschema


def _rebase_refs(node: Any, base: str) -> Any:
    """Schema `node` with every local ``$ref`` moved under the JSON pointer
    `base` (the function's parameters schema now lives there)."""
    if isinstance(node, list):
        return [_rebase_refs(v, base) for v in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for k, v in node.items():
        if k == "$ref" and isinstance(v, str) and v.startswith("#"):
            rest = v[1:]
            out[k] = "#" + base + (rest if rest != "/" else "")
        elif k in _VALUES:
            out[k] = v
        elif k in _SCHEMA_MAPS and isinstance(v, dict):
            out[k] = {name: _rebase_refs(sub, base) for name, sub in v.items()}
        else:
            out[k] = _rebase_refs(v, base)
    return out


def call_schema(spec: ToolSpec) -> dict:
    """One JSON schema for a call object: an alternative per allowed
    function, {"name": <that name>, "arguments": <its parameters>}."""
    fns = spec.functions()
    defs, alts = {}, []
    for i, name in enumerate(spec.names):
        key = f"pyrt_fn{i}"
        defs[key] = _rebase_refs(fns[name]["parameters"], f"/$defs/{key}")
        alts.append({"type": "object",
                     "properties": {"name": {"const": name}, "arguments": {"$ref": f"#/$defs/{key}"}},
                     "required": ["name", "arguments"], "additionalProperties": False})
    return {"anyOf": alts, "$defs": defs} if len(alts) > 1 else {**alts[0], "$defs": defs}


def call_gbnf(spec: ToolSpec) -> str:
    """GBNF for the calls: marker, call object, closing marker; with
    parallel calls, further blocks each on a new line."""
    from .grammar.json_schema import literal, schema_to_gbnf
    body = schema_to_gbnf(call_schema(spec))
    lines = body.splitlines()
    assert lines[0].startswith("root ::= ")
    obj = lines[0][len("root ::= "):]
    call = f"{literal(CALL_OPEN + chr(10))} ({obj}) {literal(chr(10) + CALL_CLOSE)}"
    root = 'pyrt-tool-call ("\\n" pyrt-tool-call)*' if spec.parallel else "pyrt-tool-call"
    return "\n".join([f"root ::= {root}", f"pyrt-tool-call ::= {call}"] + lines[1:]) + "\n"


_GRAMMARS: "OrderedDict[str, Any]" = OrderedDict()
_GRAMMARS_LOCK = threading.Lock()


def call_grammar(spec: ToolSpec):
    """The compiled :class:`pyrt.Grammar` for `spec`'s calls (cached: an
    agent sends the same tools with every request); with ``auto`` wrapped in
    a :class:`pyrt.generate.LazyGrammar` triggered by the call marker."""
    from .generate import LazyGrammar
    from .grammar import Grammar
    key = json.dumps([spec.tools, spec.names, spec.parallel], sort_keys=True)
    with _GRAMMARS_LOCK:
        g = _GRAMMARS.get(key)
        if g is not None:
            _GRAMMARS.move_to_end(key)
    if g is None:
        g = Grammar.from_string(call_gbnf(spec))
        with _GRAMMARS_LOCK:
            _GRAMMARS[key] = g
            while len(_GRAMMARS) > 16:
                _GRAMMARS.popitem(last=False)
    return LazyGrammar(g, CALL_OPEN) if spec.mode == "auto" else g


# ---------------------------------------------------------------------------------------------
# the reply
# ---------------------------------------------------------------------------------------------

_HEAD = re.compile(r'\s*\{\s*"name"\s*:\s*"((?:[^"\\]|\\.)*)"\s*,\s*"arguments"\s*:\s*')


class ToolCallStream:
    """Splits the reply text, fed piece by piece (:meth:`feed`), into
    content and tool calls. Yields deltas: ``("content", text)``,
    ``("call", index, id, name)`` when a call's name is known and
    ``("args", index, fragment)`` as its arguments' JSON text grows. Content
    that might be the start of the marker (and the whitespace before it) is
    held back until it cannot be; :meth:`finish` flushes. `calls` holds the
    finished list in OpenAI's shape."""

    def __init__(self):
        self.calls: list[dict] = []
        self._buf = ""              # content not yet emitted, or the call region
        self._in_calls = False
        self._pos = 0               # call region: where parsing stands in _buf
        self._state = "marker"      # marker | head | args | close
        self._depth = 0
        self._in_str = False
        self._esc = False

    def feed(self, text: str) -> Iterator[tuple]:
        self._buf += text
        if not self._in_calls:
            i = self._buf.find(CALL_OPEN)
            if i < 0:
                hold = _marker_holdback(self._buf)
                ready = self._buf[:len(self._buf) - hold]
                if ready:
                    self._buf = self._buf[len(ready):]
                    yield ("content", ready)
                return
            before = self._buf[:i].rstrip()
            if before:
                yield ("content", before)
            self._buf = self._buf[i:]
            self._in_calls = True
            self._pos = 0
        yield from self._parse()

    def finish(self) -> Iterator[tuple]:
        if not self._in_calls and self._buf:
            yield ("content", self._buf)
            self._buf = ""

    def _parse(self) -> Iterator[tuple]:
        buf = self._buf
        while True:
            if self._state == "marker":
                i = buf.find(CALL_OPEN, self._pos)
                if i < 0:
                    return
                self._pos = i + len(CALL_OPEN)
                self._state = "head"
            if self._state == "head":
                m = _HEAD.match(buf, self._pos)
                if m is None or m.end() == len(buf):
                    return          # the head (or the space after it) may still grow
                name = json.loads('"' + m.group(1) + '"')
                idx = len(self.calls)
                cid = "call_" + uuid.uuid4().hex[:24]
                self.calls.append({"id": cid, "type": "function", "function": {"name": name, "arguments": ""}})
                yield ("call", idx, cid, name)
                self._pos = m.end()
                self._state = "args"
                self._depth, self._in_str, self._esc = 0, False, False
            if self._state == "args":
                start = self._pos
                end = None
                for j in range(start, len(buf)):
                    c = buf[j]
                    if self._in_str:
                        if self._esc:
                            self._esc = False
                        elif c == "\\":
                            self._esc = True
                        elif c == '"':
                            self._in_str = False
                    elif c == '"':
                        self._in_str = True
                    elif c in "{[":
                        self._depth += 1
                    elif c in "}]":
                        self._depth -= 1
                        if self._depth == 0:
                            end = j + 1
                            break
                stop = end if end is not None else len(buf)
                if stop > start:
                    frag = buf[start:stop]
                    self.calls[-1]["function"]["arguments"] += frag
                    yield ("args", len(self.calls) - 1, frag)
                self._pos = stop
                if end is None:
                    return
                self._state = "close"
            if self._state == "close":
                i = buf.find(CALL_CLOSE, self._pos)
                if i < 0:
                    return
                self._pos = i + len(CALL_CLOSE)
                self._state = "marker"


def _marker_holdback(text: str) -> int:
    """Characters at the end of `text` to hold back: a proper prefix of the
    marker there, with the whitespace before it."""
    k = 0
    for n in range(min(len(CALL_OPEN) - 1, len(text)), 0, -1):
        if text.endswith(CALL_OPEN[:n]):
            k = n
            break
    body = text[:len(text) - k]
    return k + (len(body) - len(body.rstrip()))
