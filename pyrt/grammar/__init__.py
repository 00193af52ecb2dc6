"""Structured output: GBNF grammars (:mod:`pyrt.grammar.gbnf`), JSON schema
to grammar (:mod:`pyrt.grammar.json_schema`) and the matcher that constrains
generation (csrc/core/grammar.c).

``Grammar`` is the compiled, immutable grammar; ``GrammarMatcher`` follows
one generation through it. Generation samples first and asks the matcher
about the chosen token only; when the grammar rejects it, the whole
vocabulary is masked and the token is drawn again from the allowed ones
(pyrt/generate.py).
"""
from __future__ import annotations

import json
import os
import weakref

import numpy as np

from .._native import check, ffi, lib
from .gbnf import GrammarError, RuleTable, pack, parse

__all__ = ["Grammar", "LlamaGrammar", "GrammarMatcher", "GrammarError", "token_vocab", "resolve_grammar"]


class Grammar:
    """A compiled GBNF grammar. Build one with :meth:`from_string`,
    :meth:`from_file` or :meth:`from_json_schema`; pass it as ``grammar=``
    to :meth:`pyrt.Llama.generate`, ``create_completion`` or
    ``create_chat_completion``. Immutable and reusable."""

    def __init__(self, table: RuleTable, text: str):
        self._table = table
        self.text = text
        words, starts = pack(table)
        self._words, self._starts = words, starts
        out = ffi.new("pyrt_grammar **")
        check(lib.pyrt_grammar_create(ffi.from_buffer("int32_t[]", words), len(words),
                                      ffi.from_buffer("int32_t[]", starts), len(starts),
                                      table.root, out), "grammar")
        self._h = ffi.gc(out[0], lib.pyrt_grammar_free)
        # the start state is built once here, so a grammar that explodes
        # immediately fails at construction, not in the middle of generation
        GrammarMatcher(self)

    @classmethod
    def from_string(cls, grammar: str, verbose: bool = True) -> "Grammar":
        """Parse GBNF text (`verbose` is accepted for llama-cpp-python
        compatibility and ignored)."""
        return cls(parse(grammar), grammar)

    @classmethod
    def from_file(cls, path: str | os.PathLike, verbose: bool = True) -> "Grammar":
        with open(path, encoding="utf-8") as f:
            return cls.from_string(f.read())

    @classmethod
    def from_json_schema(cls, schema: str | dict | bool, verbose: bool = True) -> "Grammar":
        """A grammar for the JSON values `schema` (a dict, or its JSON text)
        accepts; see :mod:`pyrt.grammar.json_schema` for what is supported."""
        from .json_schema import schema_to_gbnf
        if isinstance(schema, str):
            try:
                schema = json.loads(schema)
            except json.JSONDecodeError as e:
                raise ValueError(f"json schema: not valid JSON ({e})") from None
        return cls.from_string(schema_to_gbnf(schema))

    @classmethod
    def json(cls) -> "Grammar":
        """Any JSON object (``response_format={"type": "json_object"}``)."""
        from .json_schema import schema_to_gbnf
        return cls.from_string(schema_to_gbnf({"type": "object", "additionalProperties": True}))

    def matcher(self, tokenizer=None) -> "GrammarMatcher":
        return GrammarMatcher(self, token_vocab(tokenizer) if tokenizer is not None else None)

    def accepts(self, text: str | bytes, *, prefix: bool = False) -> bool:
        """Whether `text` is a sentence of the grammar (with `prefix`: can
        still be completed into one)."""
        m = GrammarMatcher(self)
        if not m.accept_bytes(text.encode("utf-8") if isinstance(text, str) else text):
            return False
        return prefix or m.is_complete()

    def __repr__(self) -> str:
        return f"Grammar({len(self._table.rules)} rules)"


#: llama-cpp-python's name for the same class
LlamaGrammar = Grammar


class TokenVocab:
    """Every token's bytes as generation emits them, handed to C once per
    tokenizer (end-of-generation tokens flagged)."""

    def __init__(self, tokenizer):
        n = tokenizer.n_vocab
        pieces = [tokenizer.token_to_bytes(i) for i in range(n)]
        offsets = np.zeros(n + 1, dtype=np.int64)
        np.cumsum([len(p) for p in pieces], out=offsets[1:])
        data = np.frombuffer(b"".join(pieces) or b"\0", dtype=np.uint8)
        flags = np.zeros(n, dtype=np.uint8)
        for t in tokenizer.eog_ids:
            if 0 <= t < n:
                flags[t] |= lib.PYRT_GVOCAB_EOG
        out = ffi.new("pyrt_gvocab **")
        check(lib.pyrt_gvocab_create(ffi.from_buffer("uint8_t[]", data),
                                     ffi.from_buffer("int64_t[]", offsets),
                                     ffi.from_buffer("uint8_t[]", flags), n, out), "grammar vocabulary")
        self._h = ffi.gc(out[0], lib.pyrt_gvocab_free)
        self.n_vocab = n


_VOCABS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def token_vocab(tokenizer) -> TokenVocab:
    """The (cached) :class:`TokenVocab` of a tokenizer."""
    v = _VOCABS.get(tokenizer)
    if v is None:
        v = TokenVocab(tokenizer)
        _VOCABS[tokenizer] = v
    return v


class GrammarMatcher:
    """Where one text stands in a grammar. Without a vocabulary only
    :meth:`accept_bytes` works."""

    def __init__(self, grammar: Grammar, vocab: TokenVocab | None = None):
        if not isinstance(grammar, Grammar):
            raise TypeError(f"grammar must be a pyrt.Grammar (got {type(grammar).__name__})")
        self.grammar = grammar
        self.vocab = vocab
        out = ffi.new("pyrt_gmatcher **")
        check(lib.pyrt_gmatcher_create(grammar._h, vocab._h if vocab is not None else ffi.NULL, out),
              "grammar")
        self._h = ffi.gc(out[0], lib.pyrt_gmatcher_free)
        self._ok = ffi.new("int32_t *")
        self._n = ffi.new("int32_t *")
        if vocab is not None:
            self._mask = np.zeros(vocab.n_vocab, dtype=np.uint8)

    def reset(self) -> None:
        check(lib.pyrt_gmatcher_reset(self._h), "grammar")

    def accept_bytes(self, data: bytes) -> bool:
        """Feed text; False (state unchanged) if the grammar rejects it."""
        check(lib.pyrt_gmatcher_accept_bytes(self._h, data, len(data), self._ok), "grammar")
        return bool(self._ok[0])

    def accept_token(self, token: int) -> bool:
        """Feed one token; False (state unchanged) if the grammar rejects it.
        An end-of-generation token is accepted only where the text is complete."""
        check(lib.pyrt_gmatcher_accept_token(self._h, int(token), self._ok), "grammar")
        return bool(self._ok[0])

    def allowed(self) -> np.ndarray:
        """bool[n_vocab]: the tokens :meth:`accept_token` would take now."""
        if self.vocab is None:
            raise ValueError("grammar matcher has no vocabulary")
        check(lib.pyrt_gmatcher_mask(self._h, ffi.from_buffer("uint8_t[]", self._mask), self._n),
              "grammar")
        return self._mask.astype(bool)

    def is_complete(self) -> bool:
        c = ffi.new("int32_t *")
        check(lib.pyrt_gmatcher_state(self._h, c, ffi.NULL), "grammar")
        return bool(c[0])

    def can_continue(self) -> bool:
        c = ffi.new("int32_t *")
        check(lib.pyrt_gmatcher_state(self._h, ffi.NULL, c), "grammar")
        return bool(c[0])


def resolve_grammar(grammar, response_format) -> Grammar | None:
    """The grammar a completion call asks for: `grammar` (a :class:`Grammar`
    or GBNF text) or OpenAI's `response_format` (``{"type": "text"}``,
    ``{"type": "json_object"}`` with an optional ``"schema"``, or
    ``{"type": "json_schema", "json_schema": {"name", "schema", "strict"}}``).
    Both at once is an error."""
    if grammar is not None:
        if isinstance(grammar, str):
            grammar = Grammar.from_string(grammar)
        elif not isinstance(grammar, Grammar):
            raise ValueError(f"grammar must be a pyrt.Grammar or GBNF text (got {type(grammar).__name__})")
    if response_format is None:
        return grammar
    if not isinstance(response_format, dict) or not isinstance(response_format.get("type"), str):
        raise ValueError("response_format must be a dict with a 'type' ('text', 'json_object' or "
                         f"'json_schema'), got {response_format!r}")
    kind = response_format["type"]
    if kind == "text":
        return grammar
    if grammar is not None:
        raise ValueError("give either grammar or a JSON response_format, not both")
    if kind == "json_object":
        schema = response_format.get("schema")
        return Grammar.json() if schema is None else Grammar.from_json_schema(schema)
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        if not isinstance(spec, dict):
            raise ValueError("response_format json_schema: 'json_schema' must be an object "
                             "{'name': ..., 'schema': {...}, 'strict': ...}")
        name = spec.get("name")
        if name is not None and not isinstance(name, str):
            raise ValueError(f"response_format json_schema: 'name' must be a string (got {name!r})")
        strict = spec.get("strict", False)
        if strict is not None and not isinstance(strict, bool):
            raise ValueError(f"response_format json_schema: 'strict' must be a boolean (got {strict!r})")
        schema = spec.get("schema", {"type": "object", "additionalProperties": True})
        # the output is always held to the schema by the grammar, strict or not
        return Grammar.from_json_schema(schema)
    raise ValueError(f"response_format type must be 'text', 'json_object' or 'json_schema' (got {kind!r})")
