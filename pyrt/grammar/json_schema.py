"""JSON schema -> GBNF: a grammar whose every complete sentence is a JSON
value the schema accepts.

Supported (anything else raises :class:`SchemaError` naming the keyword and
where it is; nothing is silently ignored):

- ``type`` (one or a list): null, boolean, integer, number, string, array, object;
  no ``type``: inferred from the keywords present, else any JSON value
- ``enum``, ``const``; ``anyOf`` and ``oneOf`` (as alternatives; oneOf's
  exclusivity is not enforced, as in llama.cpp); ``allOf`` of one schema
- objects: ``properties`` (emitted in the order given), ``required``,
  ``additionalProperties`` (false unless given when ``properties`` is there,
  as llama.cpp; true or a schema allows extra keys after the declared ones,
  never repeating a declared name); ``{"type": "object"}`` alone is any object
- arrays: ``items``, ``prefixItems``, ``minItems``, ``maxItems``
- strings: ``minLength``, ``maxLength``, ``format`` date, time, date-time, uuid
- integers: ``minimum``, ``maximum``, ``exclusiveMinimum``, ``exclusiveMaximum``
  (at most 16 digits either way, as llama.cpp); numbers: ``minimum: 0``
- local ``$ref`` (``#``, ``#/$defs/...``, ``#/definitions/...``, any JSON
  pointer into the document), recursion included
- annotations are ignored: title, description, default, examples, $schema,
  $id, $comment, deprecated, readOnly, writeOnly

Whitespace is compact: at most one space after a token.
"""
from __future__ import annotations

import json
import math
import re
from typing import Any

__all__ = ["SchemaError", "schema_to_gbnf"]

MAX_DIGITS = 16                      # integers and exponents: at most this many digits
_INT_BOUND = 10 ** MAX_DIGITS - 1

ANNOTATIONS = {"title", "description", "default", "examples", "$schema", "$id", "$comment",
               "deprecated", "readOnly", "writeOnly", "$anchor"}

PRIMITIVES = {
    "space": '" "?',
    "boolean": '("true" | "false") space',
    "null": '"null" space',
    "integral-part": "[0] | [1-9] [0-9]{0,15}",
    "decimal-part": "[0-9]{1,16}",
    "integer": '("-"? integral-part) space',
    "number": '("-"? integral-part) ("." decimal-part)? ([eE] [-+]? integral-part)? space',
    "char": r'[^"\\\x7F\x00-\x1F] | [\\] (["\\bfnrt/] | "u" [0-9a-fA-F]{4})',
    "string": r'"\"" char* "\"" space',
    "value": "object | array | string | number | boolean | null",
    "object": '"{" space ( string ":" space value ("," space string ":" space value)* )? "}" space',
    "array": '"[" space ( value ("," space value)* )? "]" space',
}
PRIMITIVE_DEPS = {
    "boolean": ["space"], "null": ["space"], "integer": ["integral-part", "space"],
    "number": ["integral-part", "decimal-part", "space"], "string": ["char", "space"],
    "value": ["object", "array", "string", "number", "boolean", "null"],
    "object": ["string", "value", "space"], "array": ["value", "space"],
}
FORMATS = {
    "date": '"\\"" date "\\"" space',
    "time": '"\\"" time "\\"" space',
    "date-time": '"\\"" date "T" time "\\"" space',
    "uuid": ('"\\"" [0-9a-fA-F]{8} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{4} '
             '"-" [0-9a-fA-F]{12} "\\"" space'),
}
FORMAT_RULES = {
    "date": '[0-9]{4} "-" ("0" [1-9] | "1" [0-2]) "-" ("0" [1-9] | [1-2] [0-9] | "3" [0-1])',
    "time": ('([01] [0-9] | "2" [0-3]) ":" [0-5] [0-9] ":" [0-5] [0-9] ("." [0-9]{3})? '
             '("Z" | [+-] ([01] [0-9] | "2" [0-3]) ":" [0-5] [0-9])'),
}
FORMAT_DEPS = {"date": ["date"], "time": ["time"], "date-time": ["date", "time"], "uuid": []}


_NUM_KEYS = {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"}
_KEYS_OF = {"null": set(), "boolean": set(), "integer": _NUM_KEYS, "number": _NUM_KEYS,
            "string": {"minLength", "maxLength", "format"},
            "array": {"items", "prefixItems", "minItems", "maxItems"},
            "object": {"properties", "required", "additionalProperties"}}


class SchemaError(ValueError):
    """A schema that cannot be turned into a grammar (unsupported or invalid)."""


def literal(text: str) -> str:
    """`text` as a GBNF string literal."""
    out = ['"']
    for c in text:
        o = ord(c)
        if c == '"':
            out.append('\\"')
        elif c == "\\":
            out.append("\\\\")
        elif c == "\n":
            out.append("\\n")
        elif c == "\r":
            out.append("\\r")
        elif c == "\t":
            out.append("\\t")
        elif o < 0x20 or o == 0x7F:
            out.append(f"\\x{o:02X}")
        elif 0xD800 <= o <= 0xDFFF:
            raise SchemaError(f"json schema: lone surrogate U+{o:04X} in a literal")
        else:
            out.append(c)
    out.append('"')
    return "".join(out)


def _class_char(c: str) -> str:
    o = ord(c)
    if c in "\\]^-[\"" or o < 0x20 or o == 0x7F:
        return f"\\x{o:02X}" if o < 0x100 else f"\\u{o:04X}"
    return c


def _json_literal(v: Any) -> str:
    return literal(json.dumps(v, ensure_ascii=False, separators=(",", ":"))) + " space"


class _Converter:
    def __init__(self, root: Any):
        self.root = root
        self.rules: dict[str, str] = {}
        self.ref_rules: dict[str, str] = {}

    # ---- rules ----
    def add(self, name: str, body: str) -> str:
        name = re.sub(r"[^a-zA-Z0-9-]+", "-", name).strip("-") or "r"
        if self.rules.get(name) == body:
            return name
        base, k = name, 1
        while name in self.rules:
            if self.rules[name] == body:
                return name
            k += 1
            name = f"{base}-{k}"
        self.rules[name] = body
        return name

    def prim(self, name: str) -> str:
        if name not in self.rules:
            self.rules[name] = PRIMITIVES[name]
            for dep in PRIMITIVE_DEPS.get(name, ()):
                self.prim(dep)
        return name

    def err(self, path: str, msg: str) -> SchemaError:
        return SchemaError(f"json schema: at {path or '#'}: {msg}")

    # ---- refs ----
    def resolve(self, ref: str, path: str) -> Any:
        if not isinstance(ref, str) or not ref.startswith("#"):
            raise self.err(path, f"only local $ref ('#...') is supported (got {ref!r})")
        node = self.root
        if ref in ("#", "#/"):
            return node
        if not ref.startswith("#/"):
            raise self.err(path, f"$ref {ref!r}: anchors are not supported, use a JSON pointer")
        for part in ref[2:].split("/"):
            part = part.replace("~1", "/").replace("~0", "~")
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                raise self.err(path, f"$ref {ref!r} points to nothing")
        return node

    # ---- schemas ----
    def visit(self, s: Any, name: str, path: str) -> str:
        """A GBNF expression (a rule name) for schema `s`."""
        if s is True or s == {}:
            return self.prim("value")
        if s is False:
            raise self.err(path, "the schema false accepts nothing")
        if not isinstance(s, dict):
            raise self.err(path, f"a schema must be an object or a boolean (got {type(s).__name__})")
        keys = set(s) - ANNOTATIONS
        if "$ref" in s:
            extra = keys - {"$ref", "$defs", "definitions"}
            if extra:
                raise self.err(path, f"keywords next to $ref are not supported: {sorted(extra)}")
            ref = s["$ref"]
            rule = self.ref_rules.get(ref)
            if rule is None:
                target = self.resolve(ref, path)
                rule = self.add("ref-" + (ref.rsplit("/", 1)[-1] or "root"), "<pending>")
                self.ref_rules[ref] = rule
                body = self.visit(target, rule, ref)
                self.rules[rule] = body
            return rule
        keys -= {"$defs", "definitions"}
        if "const" in s:
            self._only(s, keys, {"const", "type"}, path)
            return self.add(name, _json_literal(s["const"]))
        if "enum" in s:
            self._only(s, keys, {"enum", "type"}, path)
            if not isinstance(s["enum"], list) or not s["enum"]:
                raise self.err(path, "enum must be a non-empty list")
            return self.add(name, " | ".join(_json_literal(v) for v in s["enum"]))
        for kw in ("anyOf", "oneOf"):
            if kw in s:
                self._only(s, keys, {kw}, path)
                subs = s[kw]
                if not isinstance(subs, list) or not subs:
                    raise self.err(path, f"{kw} must be a non-empty list")
                alts = [self.visit(sub, f"{name}-{i}", f"{path}/{kw}/{i}") for i, sub in enumerate(subs)]
                return self.add(name, " | ".join(alts))
        if "allOf" in s:
            subs = s["allOf"]
            if not isinstance(subs, list) or len(subs) != 1 or keys - {"allOf"}:
                raise self.err(path, "allOf is only supported with a single schema and nothing beside it")
            return self.visit(subs[0], name, f"{path}/allOf/0")
        t = s.get("type")
        if t is None:
            t = self._infer_type(s, keys, path)
            if t is None:
                self._only(s, keys, set(), path)
                return self.prim("value")
        if isinstance(t, list):
            if not t or not all(isinstance(x, str) for x in t):
                raise self.err(path, "type must be a string or a non-empty list of strings")
            if len(t) == 1:
                t = t[0]
            else:
                # each branch takes the keywords of its own type only
                others = set().union(*_KEYS_OF.values())
                alts = [self.visit({k: v for k, v in s.items()
                                    if k not in others or k in _KEYS_OF.get(x, ())} | {"type": x},
                                   f"{name}-{x}", path) for x in t]
                return self.add(name, " | ".join(alts))
        handler = {"null": self.v_null, "boolean": self.v_boolean, "integer": self.v_integer,
                   "number": self.v_number, "string": self.v_string, "array": self.v_array,
                   "object": self.v_object}.get(t)
        if handler is None:
            raise self.err(path, f"unknown type {t!r}")
        return handler(s, keys, name, path)

    _TYPE_KEYS = {
        "object": {"properties", "required", "additionalProperties"},
        "array": {"items", "prefixItems", "minItems", "maxItems"},
        "string": {"minLength", "maxLength", "format"},
    }

    def _infer_type(self, s, keys, path) -> str | None:
        found = [t for t, ks in self._TYPE_KEYS.items() if keys & ks]
        if len(found) > 1:
            raise self.err(path, f"no 'type' and keywords of several types ({', '.join(found)})")
        return found[0] if found else None

    def _only(self, s: dict, keys: set, allowed: set, path: str) -> None:
        extra = keys - allowed - {"type"}
        if extra:
            raise self.err(path, "unsupported keyword" + ("s " if len(extra) > 1 else " ")
                           + ", ".join(repr(k) for k in sorted(extra)))

    # ---- types ----
    def v_null(self, s, keys, name, path):
        self._only(s, keys, set(), path)
        return self.prim("null")

    def v_boolean(self, s, keys, name, path):
        self._only(s, keys, set(), path)
        return self.prim("boolean")

    def _bound(self, s, kw, path) -> float | None:
        v = s.get(kw)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise self.err(path, f"{kw} must be a finite number (got {v!r})")
        return v

    def v_integer(self, s, keys, name, path):
        self._only(s, keys, {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"}, path)
        lo, hi = -_INT_BOUND, _INT_BOUND
        if (v := self._bound(s, "minimum", path)) is not None:
            lo = max(lo, math.ceil(v))
        if (v := self._bound(s, "exclusiveMinimum", path)) is not None:
            lo = max(lo, math.floor(v) + 1)
        if (v := self._bound(s, "maximum", path)) is not None:
            hi = min(hi, math.floor(v))
        if (v := self._bound(s, "exclusiveMaximum", path)) is not None:
            hi = min(hi, math.ceil(v) - 1)
        if lo > hi:
            raise self.err(path, f"no integer lies in [{lo}, {hi}]")
        if (lo, hi) == (-_INT_BOUND, _INT_BOUND):
            return self.prim("integer")
        self.prim("space")
        return self.add(name, "(" + int_range(lo, hi) + ") space")

    def v_number(self, s, keys, name, path):
        self._only(s, keys, {"minimum"}, path)
        if "minimum" in s:
            if self._bound(s, "minimum", path) != 0:
                raise self.err(path, "number bounds other than minimum: 0 are not supported "
                                     "(use type integer for integer ranges)")
            self.prim("number")
            return self.add(name, 'integral-part ("." decimal-part)? ([eE] [-+]? integral-part)? space')
        return self.prim("number")

    def _count(self, s, kw, path) -> int | None:
        v = s.get(kw)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise self.err(path, f"{kw} must be an int >= 0 (got {v!r})")
        if v > 2000:
            raise self.err(path, f"{kw} {v} is too large (at most 2000)")
        return v

    def v_string(self, s, keys, name, path):
        self._only(s, keys, {"minLength", "maxLength", "format"}, path)
        fmt = s.get("format")
        if fmt is not None:
            if fmt not in FORMATS:
                raise self.err(path, f"unsupported format {fmt!r} (supported: {', '.join(FORMATS)})")
            if keys & {"minLength", "maxLength"}:
                raise self.err(path, "format together with minLength/maxLength is not supported")
            for dep in FORMAT_DEPS[fmt]:
                self.add(dep, FORMAT_RULES[dep])
            self.prim("space")
            return self.add(f"{fmt}-string", FORMATS[fmt])
        lo = self._count(s, "minLength", path) or 0
        hi = self._count(s, "maxLength", path)
        if lo == 0 and hi is None:
            return self.prim("string")
        if hi is not None and hi < lo:
            raise self.err(path, f"maxLength {hi} < minLength {lo}")
        self.prim("char")
        self.prim("space")
        rep = f"{{{lo},}}" if hi is None else f"{{{lo},{hi}}}"
        return self.add(name, f'"\\"" char{rep} "\\"" space')

    def v_array(self, s, keys, name, path):
        self._only(s, keys, {"items", "prefixItems", "minItems", "maxItems"}, path)
        lo = self._count(s, "minItems", path) or 0
        hi = self._count(s, "maxItems", path)
        if hi is not None and hi < lo:
            raise self.err(path, f"maxItems {hi} < minItems {lo}")
        self.prim("space")
        prefix = s.get("prefixItems", [])
        if not isinstance(prefix, list):
            raise self.err(path, "prefixItems must be a list")
        items = s.get("items", True)
        if isinstance(items, list):
            raise self.err(path, "items as a list (draft 4 tuples) is not supported; use prefixItems")
        first = [self.visit(p, f"{name}-{i}", f"{path}/prefixItems/{i}") for i, p in enumerate(prefix)]
        rest = None if items is False else self.visit(items, f"{name}-item", f"{path}/items")
        n_pre = len(first)
        if hi is not None:
            n_pre = min(n_pre, hi)
            first = first[:n_pre]
        if rest is None:
            hi = n_pre if hi is None else min(hi, n_pre)
        if lo > (hi if hi is not None else lo):
            raise self.err(path, f"minItems {lo} cannot be met")
        # elements 0..n_pre-1 are the prefix items, the rest `rest`; the
        # array holds between lo and hi of them
        def elem(i):
            return first[i] if i < n_pre else rest

        def tail(i):
            """elements i.. given i are already there (i >= 1): ("," elem)..."""
            if hi is not None and i >= hi:
                return ""
            if i >= n_pre:                       # homogeneous from here
                need = max(0, lo - i)
                more = "" if hi is None else hi - i
                if more != "" and more <= 0:
                    return ""
                return f'("," space {rest}){{{need},{more}}}'
            nxt = f'"," space {elem(i)} {tail(i + 1)}'.strip()
            return nxt if i < lo else f"({nxt})?"

        if (hi is not None and hi == 0) or (rest is None and n_pre == 0):
            body = '"[" space "]" space'
        else:
            inner = f"{elem(0)} {tail(1)}".strip()
            body = f'"[" space {inner} "]" space' if lo >= 1 else f'"[" space ({inner})? "]" space'
        return self.add(name, body)

    def v_object(self, s, keys, name, path):
        self._only(s, keys, {"properties", "required", "additionalProperties"}, path)
        props = s.get("properties")
        add = s.get("additionalProperties")
        if props is None and add is None:
            if s.get("required"):
                props = {}
            else:
                return self.prim("object")
        props = props or {}
        if not isinstance(props, dict):
            raise self.err(path, "properties must be an object")
        required = s.get("required", [])
        if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
            raise self.err(path, "required must be a list of strings")
        if add is None:
            add = False
        props = dict(props)
        for r in required:
            if r not in props:
                if add is False:
                    raise self.err(path, f"required property {r!r} is not in properties and "
                                         "additionalProperties is false")
                props[r] = add
        self.prim("space")
        kvs = []
        for key, sub in props.items():
            v = self.visit(sub, f"{name}-{key}", f"{path}/properties/{key}")
            kv = self.add(f"{name}-{key}-kv", f"{_json_literal(key)} \":\" space {v}")
            kvs.append((kv, key in required))
        extra = None
        if add is not False:
            v = self.visit(add, f"{name}-additional", f"{path}/additionalProperties")
            k = self.key_not_in(list(props), f"{name}-key")
            extra = self.add(f"{name}-additional-kv", f'{k} ":" space {v}')
        # after_i: properties i.. when one came before (each starts with ",");
        # first_i: properties i.. when none came before (may be empty)
        after = f'("," space {extra})*' if extra else ""
        first = f'({extra} ("," space {extra})*)?' if extra else ""
        for i in range(len(kvs) - 1, -1, -1):
            kv, req = kvs[i]
            if req:
                new_after = f'"," space {kv} {after}'
                new_first = f"{kv} {after}"
            else:
                new_after = f'("," space {kv})? {after}'
                new_first = f"{kv} {after} | {first}" if first else f"({kv} {after})?"
            after = self.add(f"{name}-after-{i}", new_after.strip())
            first = self.add(f"{name}-first-{i}", new_first.strip())
        return self.add(name, f'"{{" space {first} "}}" space' if first else '"{" space "}" space')

    def key_not_in(self, names: list[str], rule: str) -> str:
        """A JSON string key (no escapes) that is none of `names`."""
        self.prim("space")
        plain = r'[^"\\\x7F\x00-\x1F]'
        if not names:
            return self.add(f"{rule}", f'"\\"" {plain}* "\\"" space')
        tail = self.add(f"{rule}-tail", f"{plain}*")
        trie: dict = {}
        for n in names:
            node = trie
            for c in n:
                node = node.setdefault(c, {})
            node[""] = {}

        counter = [0]

        def node_rule(node: dict) -> str:
            counter[0] += 1
            my = f"{rule}-n{counter[0]}"
            alts = []
            if "" not in node:
                alts.append('"\\""')
            chars = sorted(c for c in node if c)
            for c in chars:
                alts.append(f"{literal(c)} {node_rule(node[c])}")
            excl = "".join(_class_char(c) for c in chars)
            alts.append(f'[^"\\\\\\x7F\\x00-\\x1F{excl}] {tail} "\\""')
            return self.add(my, " | ".join(alts))

        body = f'"\\"" {node_rule(trie)} space'
        return self.add(rule, body)


# ---------------------------------------------------------------------------------------------
# integer ranges
# ---------------------------------------------------------------------------------------------

def _same_len(lo: str, hi: str) -> list[str]:
    """GBNF sequences for the decimal numbers from lo to hi (same length)."""
    if lo == hi:
        return [literal(lo)]
    if len(lo) == 1:
        return [f"[{lo}-{hi}]"]
    k = len(lo) - 1
    if lo[0] == hi[0]:
        return [f'"{lo[0]}" ({" | ".join(_same_len(lo[1:], hi[1:]))})']
    if lo[1:] == "0" * k and hi[1:] == "9" * k:
        return [f"[{lo[0]}-{hi[0]}] [0-9]{{{k}}}"]
    out = []
    if lo[1:] == "0" * k:
        start = lo[0]
    else:
        out.append(f'"{lo[0]}" ({" | ".join(_same_len(lo[1:], "9" * k))})')
        start = chr(ord(lo[0]) + 1)
    if hi[1:] == "9" * k:
        end = hi[0]
        tail_hi = None
    else:
        end = chr(ord(hi[0]) - 1)
        tail_hi = f'"{hi[0]}" ({" | ".join(_same_len("0" * k, hi[1:]))})'
    if start <= end:
        out.append(f"[{start}-{end}] [0-9]{{{k}}}")
    if tail_hi:
        out.append(tail_hi)
    return out


def _nonneg(a: int, b: int) -> list[str]:
    out = []
    for d in range(len(str(a)), len(str(b)) + 1):
        lo = max(a, 10 ** (d - 1) if d > 1 else 0)
        hi = min(b, 10 ** d - 1)
        if lo <= hi:
            out += _same_len(str(lo), str(hi))
    return out


def int_range(lo: int, hi: int) -> str:
    """GBNF alternatives for the integers in [lo, hi] written as JSON does."""
    alts = []
    if lo < 0:
        neg = _nonneg(max(1, -hi), -lo)
        alts.append('"-" (' + " | ".join(neg) + ")")
    if hi >= 0:
        alts += _nonneg(max(lo, 0), hi)
    return " | ".join(alts)


def schema_to_gbnf(schema: Any) -> str:
    """GBNF text for `schema` (a dict or bool); raises :class:`SchemaError`."""
    c = _Converter(schema)
    c.prim("space")
    top = c.visit(schema, "root-value", "#")
    rules = dict(c.rules)
    rules = {"root": top, **{k: v for k, v in rules.items() if k != "root"}}
    return "".join(f"{k} ::= {v}\n" for k, v in rules.items())
