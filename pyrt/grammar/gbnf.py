"""GBNF (llama.cpp's grammar format) parsed into a rule table.

Syntax, as llama.cpp reads it::

    root  ::= item ("," item)*          # a rule: name ::= alternatives
    item  ::= [a-z]+ | "lit\\n" | (x | y)? | [^"\\\\] | . | z{2,5}

- names are ``[a-zA-Z0-9-]+``; ``root`` is the start rule;
- ``"..."`` literals and ``[...]`` classes (``^`` negates, ``a-z`` ranges) take
  the escapes ``\\x..``, ``\\u....``, ``\\U........``, ``\\t \\r \\n \\\\ \\" \\[ \\] \\-``;
- ``.`` is any character; ``( )`` groups; ``*``, ``+``, ``?``, ``{m}``,
  ``{m,}``, ``{m,n}`` repeat the item before them (a whole literal string);
- ``#`` starts a comment; a rule ends at a newline outside parentheses, and a
  ``|`` may be followed by newlines.

The result, :class:`RuleTable`, is plain data: each rule a list of
alternatives, each alternative a list of elements, an element either
``(CHARS, negated, ((lo, hi), ...))`` matching one code point or
``(REF, rule_id)``. Repetitions are rewritten into helper rules (``x*`` ->
``r ::= x r |``), groups into nested rules. :func:`pack` flattens it into the
int32 table the C matcher (csrc/core/grammar.c) walks.

Errors are :class:`GrammarError` (a ValueError) naming line and column.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["GrammarError", "RuleTable", "parse", "pack", "CHARS", "REF", "MAX_REPETITION",
           "MAX_TABLE_WORDS"]

CHARS = 0
REF = 1

#: the largest count ``{m,n}`` may name (llama.cpp's bound as well)
MAX_REPETITION = 2000
#: a compiled grammar may have at most this many int32 words (16 MiB)
MAX_TABLE_WORDS = 4 << 20
MAX_CODEPOINT = 0x10FFFF

# element codes in the packed table (csrc/pyrt.h, PYRT_GR_*)
_G_END, _G_ALT, _G_REF, _G_CHARS, _G_NCHARS = 0, 1, 2, 3, 4


class GrammarError(ValueError):
    """A grammar that cannot be parsed or compiled; the message names where."""


@dataclass
class RuleTable:
    """Rules by id; ``names[i]`` names rule i (helper rules get ``name_N``)."""
    rules: list[list[list[tuple]]] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    root: int = 0

    def size_words(self) -> int:
        n = 0
        for alts in self.rules:
            for seq in alts:
                for el in seq:
                    n += 2 if el[0] == REF else 2 + 2 * len(el[2])
                n += 2
        return n


def _is_word(c: str) -> bool:
    return ("a" <= c <= "z") or ("A" <= c <= "Z") or ("0" <= c <= "9") or c == "-"


class _Parser:
    def __init__(self, src: str):
        if not isinstance(src, str):
            raise TypeError(f"grammar must be a str (got {type(src).__name__})")
        self.s = src
        self.n = len(src)
        self.table = RuleTable()
        self.ids: dict[str, int] = {}
        self.defined: dict[int, int] = {}     # rule id -> source offset of its definition
        self.first_use: dict[int, int] = {}   # rule id -> offset of its first reference
        self.words = 0
        self.counters: dict[str, int] = {}    # helper rule numbering per base name

    # ---- errors and positions ----
    def where(self, pos: int) -> str:
        line = self.s.count("\n", 0, pos) + 1
        col = pos - (self.s.rfind("\n", 0, pos) + 1) + 1
        return f"line {line}, column {col}"

    def error(self, pos: int, msg: str) -> GrammarError:
        near = self.s[pos:pos + 20]
        shown = f" near {near!r}" if near else " at end of input"
        return GrammarError(f"grammar: {msg} at {self.where(pos)}{shown}")

    def peek(self, pos: int) -> str:
        return self.s[pos] if pos < self.n else ""

    # ---- symbols ----
    def symbol(self, name: str, pos: int) -> int:
        rid = self.ids.get(name)
        if rid is None:
            rid = len(self.table.rules)
            self.ids[name] = rid
            self.table.rules.append([])
            self.table.names.append(name)
            self.first_use[rid] = pos
        return rid

    def new_rule(self, base: str, alts: list[list[tuple]], pos: int) -> int:
        rid = self.symbol(self._fresh(base), pos)
        self.set_rule(rid, alts, pos)
        return rid

    def set_rule(self, rid: int, alts, pos: int) -> None:
        self.table.rules[rid] = alts
        self.defined[rid] = pos
        for seq in alts:
            for el in seq:
                self.words += 2 if el[0] == REF else 2 + 2 * len(el[2])
            self.words += 2
        if self.words > MAX_TABLE_WORDS:
            raise self.error(pos, f"grammar too large (more than {MAX_TABLE_WORDS} table words "
                                  "after expanding repetitions)")

    # ---- lexing ----
    def space(self, pos: int, newline_ok: bool) -> int:
        s, n = self.s, self.n
        while pos < n:
            c = s[pos]
            if c in " \t" or (newline_ok and c in "\r\n"):
                pos += 1
            elif c == "#":
                while pos < n and s[pos] not in "\r\n":
                    pos += 1
            else:
                break
        return pos

    def name(self, pos: int) -> int:
        end = pos
        while end < self.n and _is_word(self.s[end]):
            end += 1
        if end == pos:
            raise self.error(pos, "expecting a rule name")
        return end

    def hex(self, pos: int, size: int) -> tuple[int, int]:
        digits = self.s[pos:pos + size]
        if len(digits) != size or any(c not in "0123456789abcdefABCDEF" for c in digits):
            raise self.error(pos, f"expecting {size} hex digits")
        v = int(digits, 16)
        if v > MAX_CODEPOINT:
            raise self.error(pos, f"code point U+{v:X} is beyond U+10FFFF")
        return v, pos + size

    def char(self, pos: int) -> tuple[int, int]:
        if pos >= self.n:
            raise self.error(pos, "unexpected end of input")
        c = self.s[pos]
        if c == "\\":
            e = self.peek(pos + 1)
            if e == "x":
                return self.hex(pos + 2, 2)
            if e == "u":
                return self.hex(pos + 2, 4)
            if e == "U":
                return self.hex(pos + 2, 8)
            simple = {"t": 9, "r": 13, "n": 10, "\\": 92, '"': 34, "[": 91, "]": 93, "-": 45}
            if e in simple:
                return simple[e], pos + 2
            raise self.error(pos, f"unknown escape '\\{e}'")
        cp = ord(c)
        if 0xD800 <= cp <= 0xDFFF:
            raise self.error(pos, "lone surrogate in grammar text")
        return cp, pos + 1

    def integer(self, pos: int) -> tuple[int, int]:
        end = pos
        while end < self.n and self.s[end].isascii() and self.s[end].isdigit():
            end += 1
        if end == pos:
            raise self.error(pos, "expecting an integer")
        if end - pos > 9:
            raise self.error(pos, f"repetition count too large (at most {MAX_REPETITION})")
        return int(self.s[pos:end]), end

    # ---- grammar ----
    def parse(self) -> RuleTable:
        pos = self.space(0, True)
        while pos < self.n:
            pos = self.rule(pos)
        if not self.ids:
            raise GrammarError("grammar: no rules (an empty grammar)")
        for name, rid in self.ids.items():
            if rid not in self.defined:
                raise self.error(self.first_use[rid], f"undefined rule '{name}'")
        if "root" not in self.ids:
            raise GrammarError("grammar: no 'root' rule (the start rule must be named root)")
        self.table.root = self.ids["root"]
        check_left_recursion(self.table)
        return self.table

    def rule(self, pos: int) -> int:
        start = pos
        end = self.name(pos)
        name = self.s[pos:end]
        rid = self.symbol(name, pos)
        if rid in self.defined:
            raise self.error(start, f"rule '{name}' is defined twice (first at "
                                    f"{self.where(self.defined[rid])})")
        self.defined[rid] = start                  # provisional: marks it as being defined
        pos = self.space(end, False)
        if self.s[pos:pos + 3] != "::=":
            raise self.error(pos, "expecting '::='")
        pos = self.space(pos + 3, True)
        alts, pos = self.alternates(pos, name, nested=False)
        self.set_rule(rid, alts, start)
        if pos < self.n:
            if self.s[pos] == "\r":
                pos += 2 if self.peek(pos + 1) == "\n" else 1
            elif self.s[pos] == "\n":
                pos += 1
            else:
                raise self.error(pos, "expecting a newline or the end of the rule")
        return self.space(pos, True)

    def alternates(self, pos: int, name: str, nested: bool) -> tuple[list, int]:
        seq, pos = self.sequence(pos, name, nested)
        alts = [seq]
        while self.peek(pos) == "|":
            pos = self.space(pos + 1, True)
            seq, pos = self.sequence(pos, name, nested)
            alts.append(seq)
        return alts, pos

    def sequence(self, pos: int, name: str, nested: bool) -> tuple[list, int]:
        seq: list[tuple] = []
        last = -1                      # start of the last item in seq (-1: none)
        while pos < self.n:
            c = self.s[pos]
            if c == '"':
                pos += 1
                last = len(seq)
                while True:
                    if pos >= self.n:
                        raise self.error(pos, "unterminated string literal")
                    if self.s[pos] == '"':
                        break
                    cp, pos = self.char(pos)
                    seq.append((CHARS, False, ((cp, cp),)))
                pos = self.space(pos + 1, nested)
            elif c == "[":
                start = pos
                pos += 1
                neg = self.peek(pos) == "^"
                if neg:
                    pos += 1
                ranges = []
                while True:
                    if pos >= self.n:
                        raise self.error(start, "unterminated character class")
                    if self.s[pos] == "]":
                        break
                    lo, pos = self.char(pos)
                    hi = lo
                    if self.peek(pos) == "-" and self.peek(pos + 1) not in ("]", ""):
                        hi, pos = self.char(pos + 1)
                        if hi < lo:
                            raise self.error(start, f"empty range U+{lo:04X}-U+{hi:04X} in a "
                                                    "character class")
                    ranges.append((lo, hi))
                last = len(seq)
                seq.append((CHARS, neg, _merge(ranges)))
                pos = self.space(pos + 1, nested)
            elif c == "<" or c == "!":
                raise self.error(pos, "token references (<...>, !<...>) are not supported; "
                                      "write the text as a literal")
            elif _is_word(c):
                end = self.name(pos)
                last = len(seq)
                seq.append((REF, self.symbol(self.s[pos:end], pos)))
                pos = self.space(end, nested)
            elif c == "(":
                start = pos
                pos = self.space(pos + 1, True)
                alts, pos = self.alternates(pos, name, nested=True)
                if self.peek(pos) != ")":
                    raise self.error(pos, f"expecting ')' (the group opened at {self.where(start)} "
                                          "is not closed)")
                last = len(seq)
                seq.append((REF, self.new_rule(name, alts, start)))
                pos = self.space(pos + 1, nested)
            elif c == ".":
                last = len(seq)
                seq.append((CHARS, True, ()))
                pos = self.space(pos + 1, nested)
            elif c in "*+?{":
                op = pos
                if c == "{":
                    pos = self.space(pos + 1, nested)
                    lo, pos = self.integer(pos)
                    pos = self.space(pos, nested)
                    hi: int | None = lo
                    if self.peek(pos) == ",":
                        pos = self.space(pos + 1, nested)
                        hi = None
                        if self.peek(pos).isascii() and self.peek(pos).isdigit():
                            hi, pos = self.integer(pos)
                            pos = self.space(pos, nested)
                    if self.peek(pos) != "}":
                        raise self.error(pos, "expecting '}' to close a repetition")
                    pos = self.space(pos + 1, nested)
                    if lo > MAX_REPETITION or (hi is not None and hi > MAX_REPETITION):
                        raise self.error(op, f"repetition count too large (at most {MAX_REPETITION})")
                    if hi is not None and hi < lo:
                        raise self.error(op, f"repetition {{{lo},{hi}}}: the maximum is below the minimum")
                else:
                    lo, hi = {"*": (0, None), "+": (1, None), "?": (0, 1)}[c]
                    pos = self.space(pos + 1, nested)
                if last < 0:
                    raise self.error(op, f"'{c}' has no item before it to repeat")
                item = seq[last:]
                del seq[last:]
                seq.extend(self.repeat(item, lo, hi, name, op))
                if len(seq) == last:
                    last = -1
            else:
                break
        return seq, pos

    def repeat(self, item: list, lo: int, hi: int | None, name: str, pos: int) -> list:
        """item{lo,hi} as elements: lo copies, then a chain of optional rules."""
        out = item * lo
        if hi is None:
            rid = self.symbol(self._fresh(name), pos)
            self.set_rule(rid, [item + [(REF, rid)], []], pos)
            out.append((REF, rid))
        elif hi > lo:
            prev = None
            for _ in range(hi - lo):          # opt_k ::= item opt_{k-1} |
                body = item + ([(REF, prev)] if prev is not None else [])
                prev = self.new_rule(name, [body, []], pos)
            out.append((REF, prev))
        return out

    def _fresh(self, base: str) -> str:
        k = self.counters.get(base, 0) + 1
        while f"{base}_{k}" in self.ids:
            k += 1
        self.counters[base] = k
        return f"{base}_{k}"


def _merge(ranges: list[tuple[int, int]]) -> tuple:
    out: list[list[int]] = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + 1:
            out[-1][1] = max(out[-1][1], hi)
        else:
            out.append([lo, hi])
    return tuple((a, b) for a, b in out)


def check_left_recursion(t: RuleTable) -> None:
    """Reject a rule that can reach itself without consuming a character
    (the matcher would expand it forever)."""
    n = len(t.rules)
    nullable = [False] * n
    changed = True
    while changed:
        changed = False
        for r, alts in enumerate(t.rules):
            if nullable[r]:
                continue
            if any(all(el[0] == REF and nullable[el[1]] for el in seq) for seq in alts):
                nullable[r] = changed = True
    # left[r]: rules that may start rule r
    left: list[set[int]] = [set() for _ in range(n)]
    for r, alts in enumerate(t.rules):
        for seq in alts:
            for el in seq:
                if el[0] != REF:
                    break
                left[r].add(el[1])
                if not nullable[el[1]]:
                    break
    state = [0] * n                              # 0 new, 1 on the path, 2 done
    for s in range(n):
        if state[s]:
            continue
        stack = [(s, iter(sorted(left[s])))]
        state[s] = 1
        while stack:
            r, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                state[r] = 2
                stack.pop()
            elif state[nxt] == 1:
                path = [t.names[x] for x, _ in stack] + [t.names[nxt]]
                i = path.index(t.names[nxt])
                raise GrammarError("grammar: left recursion (a rule reaches itself before "
                                   "matching any character): " + " -> ".join(path[i:]))
            elif state[nxt] == 0:
                state[nxt] = 1
                stack.append((nxt, iter(sorted(left[nxt]))))


def parse(src: str) -> RuleTable:
    """Parse GBNF text; raise :class:`GrammarError` naming line and column."""
    return _Parser(src).parse()


def pack(t: RuleTable) -> tuple[np.ndarray, np.ndarray]:
    """The C matcher's tables: ``words`` (int32) and ``starts`` (int32, one
    offset per rule). Each rule's alternatives follow each other, separated
    by ALT and closed by END; elements are ``REF id`` or ``CHARS|NCHARS n
    lo0 hi0 ... lo(n-1) hi(n-1)``."""
    words: list[int] = []
    starts: list[int] = []
    for alts in t.rules:
        starts.append(len(words))
        for i, seq in enumerate(alts):
            if i:
                words += (_G_ALT, 0)
            for el in seq:
                if el[0] == REF:
                    words += (_G_REF, el[1])
                else:
                    words += (_G_NCHARS if el[1] else _G_CHARS, len(el[2]))
                    for lo, hi in el[2]:
                        words += (lo, hi)
        words += (_G_END, 0)
    return np.asarray(words, dtype=np.int32), np.asarray(starts, dtype=np.int32)
