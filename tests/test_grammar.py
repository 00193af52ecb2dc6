"""GBNF grammars: parsing (errors with line/column), the C matcher (bytes,
partial UTF-8, tokens, the vocabulary mask), bounded pathological grammars,
and generation under every grammar llama.cpp ships (SmolLM2)."""
from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest

from pyrt import UnsupportedError
from pyrt.grammar import Grammar, GrammarError, GrammarMatcher, LlamaGrammar
from pyrt.grammar.gbnf import parse

LLAMACPP_GRAMMARS = Path(os.environ.get(
    "PYRT_LLAMACPP_GRAMMARS",
    Path.home() / ".cache/pyrt/avx2-build/llama_cpp_python-0.3.36/vendor/llama.cpp/grammars"))


def llamacpp_grammars() -> list[Path]:
    return sorted(LLAMACPP_GRAMMARS.glob("*.gbnf")) if LLAMACPP_GRAMMARS.is_dir() else []


needs_llamacpp = pytest.mark.skipif(not llamacpp_grammars(),
                                    reason="llama.cpp's grammars/ (llama-cpp-python sdist) not found")

JSONISH = r'''
root   ::= object
value  ::= object | array | string | number | ("true" | "false" | "null") ws
object ::= "{" ws ( string ":" ws value ("," ws string ":" ws value)* )? "}" ws
array  ::= "[" ws ( value ("," ws value)* )? "]" ws
string ::= "\"" ( [^"\\\x7F\x00-\x1F] | "\\" (["\\bfnrt] | "u" [0-9a-fA-F]{4}) )* "\"" ws
number ::= ("-"? ([0-9] | [1-9] [0-9]{0,15})) ("." [0-9]+)? ([eE] [-+]? [0-9]{1,3})? ws
ws ::= | " " | "\n" [ \t]{0,20}
'''


# ---------------------------------------------------------------------------------------------
# parsing
# ---------------------------------------------------------------------------------------------

@needs_llamacpp
@pytest.mark.parametrize("path", llamacpp_grammars(), ids=lambda p: p.name)
def test_every_llamacpp_grammar_parses(path):
    g = Grammar.from_file(path)
    assert g._table.rules and g._table.names[g._table.root] == "root"


@pytest.mark.parametrize("src, where, what", [
    ('root ::= "abc\n', "line 2, column 1", "unterminated string"),
    ('root ::= "a"\nx ::= [a-\n', "line 2, column 7", "empty range"),
    ("root ::= foo\n", "line 1, column 10", "undefined rule 'foo'"),
    ('root ::= "a" )\n', "line 1, column 14", "expecting a newline"),
    ('root ::= ("a" | "b"\n', "line 2, column 1", "opened at line 1, column 10"),
    ('root ::= * "a"\n', "line 1, column 10", "no item before it"),
    ('root ::= "a"{3,1}\n', "line 1, column 13", "below the minimum"),
    ('root ::= "a"{1,99999}\n', "line 1, column 13", "too large"),
    ('root ::= "\\q"\n', "line 1, column 11", "unknown escape"),
    ('root ::= "\\xZZ"\n', "line 1, column 13", "hex digits"),
    ('root ::= <think>\n', "line 1, column 10", "token references"),
    ('root ::= "a"\nroot ::= "b"\n', "line 2, column 1", "defined twice"),
    ("root = 'a'\n", "line 1, column 6", "expecting '::='"),
])
def test_parse_errors_name_line_and_column(src, where, what):
    with pytest.raises(GrammarError) as e:
        Grammar.from_string(src)
    assert where in str(e.value) and what in str(e.value)


def test_structural_errors():
    with pytest.raises(GrammarError, match="no 'root' rule"):
        Grammar.from_string('start ::= "a"\n')
    with pytest.raises(GrammarError, match="empty grammar"):
        Grammar.from_string("# nothing\n")
    with pytest.raises(GrammarError, match="left recursion.*expr -> expr"):
        Grammar.from_string('root ::= expr\nexpr ::= expr "+" term | term\nterm ::= [0-9]\n')
    with pytest.raises(GrammarError, match="left recursion"):   # through a nullable prefix
        Grammar.from_string('root ::= ws root "a" | "b"\nws ::= " "?\n')
    with pytest.raises(TypeError):
        Grammar.from_string(b'root ::= "a"')
    assert LlamaGrammar is Grammar


def test_syntax_features_match_their_meaning():
    g = Grammar.from_string(r'''
root ::= greeting ws name ("!" | "?"){1,3} tail?   # comment
greeting ::= "hi" | "hello"
ws ::= [ \t]+
name ::= [A-Z] [a-z\-]* | "\u00e9t\u00E9" | [^\x00-\x7F]{2}
tail ::= (
   "." |
   "~" .
)
''')
    ok = ["hi Bob!", "hello\t \tAnn-marie??!", "hi été!", "hi 日本!.", "hi X!~\n", "hi X!~ü"]
    bad = ["hi bob!", "hi Bob", "hi Bob!!!!", "hiBob!", "hi 日!", "hi X!~", "hey X!"]
    for s in ok:
        assert g.accepts(s), s
    for s in bad:
        assert not g.accepts(s), s
    assert g.accepts("hi Bo", prefix=True) and not g.accepts("ho", prefix=True)


def test_repetition_counts():
    g = Grammar.from_string('root ::= "ab"{2} "c"{1,} "d"{0,2} "e"{3,5}\n')
    for n_d in range(3):
        for n_e in range(3, 6):
            assert g.accepts("abab" + "c" * 4 + "d" * n_d + "e" * n_e)
    assert not g.accepts("ab" + "c" + "eee")
    assert not g.accepts("ababc" + "ddd" + "eee")
    assert not g.accepts("ababc" + "eeeeee")
    assert not g.accepts("abab" + "eee")


# ---------------------------------------------------------------------------------------------
# the matcher
# ---------------------------------------------------------------------------------------------

def random_json(rng: random.Random, depth: int = 0):
    k = rng.randrange(7 if depth < 3 else 4)
    if k == 0:
        return rng.choice([True, False, None])
    if k == 1:
        return rng.choice([0, -7, 12345, 3.25, -0.5, 1e20])
    if k in (2, 3):
        return "".join(rng.choice('ab é"\\\n/日\t') for _ in range(rng.randrange(5)))
    if k == 4:
        return [random_json(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {random_json(rng, 3) if rng.random() < 0.5 else "k": random_json(rng, depth + 1)
            for _ in range(rng.randrange(4))}


def test_matcher_agrees_with_a_json_parser():
    import json
    g = Grammar.from_string(JSONISH)
    rng = random.Random(7)
    n_rejected = 0
    for i in range(400):
        v = {"v": random_json(rng)}
        indent = rng.choice([None, None, 2])        # the grammar's ws: "", " " or "\n" + indent
        seps = (",", ": ") if indent else rng.choice([(",", ":"), (", ", ": ")])
        text = json.dumps(v, ensure_ascii=bool(i % 2), separators=seps, indent=indent)
        assert g.accepts(text), text
        for _ in range(5):                      # damaged texts: whatever JSON rejects, so do we
            j = rng.randrange(len(text))
            bad = text[:j] + rng.choice(['', '"', ',', '}', ']', '\\', '\x01', 'x']) + text[j + 1:]
            try:
                json.loads(bad)
            except ValueError:
                assert not g.accepts(bad), bad
                n_rejected += 1
    assert n_rejected > 500


def test_partial_utf8_across_byte_feeds():
    g = Grammar.from_string('root ::= "é" [日本]+ "€"\n')
    data = "é日本日€".encode()
    m = GrammarMatcher(g)
    for b in data:                       # one byte at a time: every prefix is a valid prefix
        assert m.accept_bytes(bytes([b]))
    assert m.is_complete() and not m.can_continue()
    m = GrammarMatcher(g)
    assert m.accept_bytes("é".encode() + "日".encode()[:2])
    assert not m.is_complete()
    assert not m.accept_bytes(b"x")                 # a broken sequence is rejected...
    assert m.accept_bytes("日".encode()[2:])          # ...and the state is unchanged
    assert not m.accept_bytes("中".encode()[:1] + b"\xe0")
    # invalid UTF-8 never passes, even where the grammar allows any character
    anyg = Grammar.from_string("root ::= .*\n")
    for bad in (b"\xe0\x81\xa9", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\x80", b"\xff"):
        assert not anyg.accepts(bad), bad
        assert not anyg.accepts(bad, prefix=True), bad
    assert anyg.accepts("\U0010FFFF\u00e9\x00".encode())
    # a lead byte is only taken where some allowed character starts with it
    ascii_only = Grammar.from_string("root ::= [a-z]*\n")
    assert not ascii_only.accepts(b"\xc3", prefix=True)
    high = Grammar.from_string("root ::= [\\u4e00-\\u9fff]\n")
    assert high.accepts(b"\xe4", prefix=True) and not high.accepts(b"\xe0", prefix=True)


class FakeTokenizer:
    """Just what TokenVocab reads."""

    def __init__(self, pieces: list[bytes], eog: set[int]):
        self.pieces = pieces
        self.n_vocab = len(pieces)
        self.eog_ids = eog

    def token_to_bytes(self, i: int) -> bytes:
        return self.pieces[i]


def test_mask_equals_token_by_token_checks():
    rng = random.Random(3)
    alphabet = [b"{", b"}", b'"', b"a", b"1", b":", b",", b" ", b"\n", b"[", b"]", b"tr", b"ue",
                "é".encode(), "é".encode()[:1], "é".encode()[1:], b"\\", b"u", b"0"]
    pieces = sorted({b"".join(rng.choice(alphabet) for _ in range(rng.randint(1, 4)))
                     for _ in range(600)}) + [b"", b""]
    empty, eog = len(pieces) - 2, len(pieces) - 1
    tok = FakeTokenizer(pieces, eog={eog})
    g = Grammar.from_string(JSONISH)
    m = g.matcher(tok)
    ref = g.matcher(tok)
    text = b""
    for _ in range(40):
        allowed = m.allowed()
        for t in range(len(pieces)):           # the mask says exactly what accept_token takes
            ref.reset()
            assert ref.accept_bytes(text)
            assert ref.accept_token(t) == allowed[t], (text, pieces[t])
        assert not allowed[empty]                       # no bytes: never
        assert allowed[eog] == m.is_complete()          # EOG: only when complete
        choices = [t for t in np.flatnonzero(allowed) if t != eog]
        if not choices:
            break
        t = int(rng.choice(choices))
        assert m.accept_token(t)
        text += pieces[t]
    assert len(text) > 20


def test_mask_on_a_real_vocabulary(llm):
    tk = llm.tokenizer
    g = Grammar.from_string(JSONISH)
    m = g.matcher(tk)
    assert m.accept_bytes(b'{"na')
    allowed = m.allowed()
    rng = random.Random(0)
    for t in rng.sample(range(tk.n_vocab), 1500):
        piece = tk.token_to_bytes(t)
        ok = piece != b"" and not tk.is_eog(t) and g.accepts(b'{"na' + piece, prefix=True)
        assert allowed[t] == ok, (t, piece)
    assert allowed.sum() > 10000          # inside a string almost anything goes


def test_unsatisfiable_grammar_is_a_clear_error():
    from pyrt.generate import _sample_constrained
    from pyrt.sampling import Sampler, SamplingParams
    tok = FakeTokenizer([b"a", b"b", b""], eog={2})
    m = Grammar.from_string('root ::= "c"\n').matcher(tok)
    with Sampler(SamplingParams(seed=1), 3) as s:
        with pytest.raises(ValueError, match="no token of the vocabulary"):
            _sample_constrained(s, m, np.zeros(3, np.float32), lambda t: t == 2, ())
    m = Grammar.from_string('root ::= "a"+\n').matcher(tok)
    with Sampler(SamplingParams(temperature=0), 3) as s:
        logits = np.array([0, 5, 9], np.float32)        # the model wants b, then EOG
        assert _sample_constrained(s, m, logits, lambda t: t == 2, ()) == 0
        assert _sample_constrained(s, m, logits, lambda t: t == 2, ()) == 2   # complete: EOG ok


# ---------------------------------------------------------------------------------------------
# bounds
# ---------------------------------------------------------------------------------------------

def test_pathological_grammars_fail_cleanly_or_work():
    # deep recursion: the stack depth is capped
    g = Grammar.from_string('root ::= "(" root ")" | ""\n')
    assert g.accepts("((()))")
    m = GrammarMatcher(g)
    with pytest.raises(UnsupportedError, match="nesting too deep"):
        m.accept_bytes(b"(" * 5000)
    # a huge alternation: fine up to the stack limit, a clear error beyond it
    assert Grammar.from_string("root ::= " + " | ".join(['"a"'] * 20000) + "\n").accepts("a")
    with pytest.raises(UnsupportedError, match="parse stacks"):
        Grammar.from_string("root ::= " + " | ".join(['"a"'] * 40000) + "\n")
    # x? x? x? ...: quadratic, still bounded and correct
    g = Grammar.from_string("root ::= " + " ".join(['"x"?'] * 300) + "\n")
    assert g.accepts("x" * 300) and not g.accepts("x" * 301)
    # repetitions whose expansion would be too large are refused while parsing
    with pytest.raises(GrammarError, match="too large"):
        Grammar.from_string('root ::= "' + "a" * 1000 + '"{2000}\n')
    # nested repetitions that explode while matching: refused when the start state is built
    with pytest.raises(UnsupportedError, match="too ambiguous"):
        Grammar.from_string('root ::= ((("a"{0,2000}){0,2000}){0,2000})\n')


def test_table_validation_in_c():
    from pyrt._native import ffi, lib
    out = ffi.new("pyrt_grammar **")
    bad = [np.array([lib.PYRT_GR_REF, 5, lib.PYRT_GR_END, 0], np.int32),          # rule 5 absent
           np.array([lib.PYRT_GR_CHARS, 9, 1, 2], np.int32),                        # past the end
           np.array([lib.PYRT_GR_CHARS, 1, 5, 2, lib.PYRT_GR_END, 0], np.int32),    # lo > hi
           np.array([7, 0, lib.PYRT_GR_END, 0], np.int32)]                          # unknown code
    starts = np.array([0], np.int32)
    for words in bad:
        rc = lib.pyrt_grammar_create(ffi.from_buffer("int32_t[]", words), len(words),
                                     ffi.from_buffer("int32_t[]", starts), 1, 0, out)
        assert rc == lib.PYRT_ERR_INVALID_ARG


# ---------------------------------------------------------------------------------------------
# generation
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def llm(smollm2_path):
    import pyrt
    m = pyrt.Llama(str(smollm2_path), n_ctx=1024, n_threads=2, seed=0)
    yield m
    m.close()


PROMPTS = {"json": "A cat as JSON:", "json_arr": "People as a JSON list:", "arithmetic": "Compute:",
           "chess": "A chess game: ", "c": "int main", "list": "Groceries:\n",
           "english": "Tell me a story.", "japanese": "日本語で話してください。"}


@needs_llamacpp
@pytest.mark.parametrize("path", llamacpp_grammars(), ids=lambda p: p.name)
def test_generation_follows_each_llamacpp_grammar(llm, path):
    g = Grammar.from_file(path)
    for seed in (1, 2):
        toks = list(llm.generate(llm.tokenize(PROMPTS.get(path.stem, "Hello")), max_tokens=24,
                                 temperature=0.8, seed=seed, grammar=g))
        data = b"".join(llm.tokenizer.token_to_bytes(t) for t in toks)
        m = GrammarMatcher(g)
        assert m.accept_bytes(data), data
        if len(toks) < 24:                     # it ended early: only where the grammar is complete
            assert m.is_complete(), data


def test_generation_is_forced_into_the_grammar(llm):
    g = Grammar.from_string('root ::= "The answer is " ("yes" | "no") "."\n')
    for seed in range(3):
        r = llm.create_completion("Q: Is the sky green?\nA:", max_tokens=20, temperature=1.0,
                                  seed=seed, grammar=g)
        assert r["choices"][0]["text"] in ("The answer is yes.", "The answer is no.")
        assert r["choices"][0]["finish_reason"] == "stop"
    # greedy and stream: the same text either way; GBNF text is accepted directly
    a = llm.create_completion("Count:", max_tokens=30, temperature=0, grammar='root ::= [0-9]{3} " " [a-z]+\n')
    chunks = llm.create_completion("Count:", max_tokens=30, temperature=0, stream=True,
                                   grammar='root ::= [0-9]{3} " " [a-z]+\n')
    text = "".join(c["choices"][0]["text"] for c in chunks)
    assert text == a["choices"][0]["text"]
    assert Grammar.from_string('root ::= [0-9]{3} " " [a-z]+\n').accepts(text, prefix=True)


def test_grammar_argument_errors(llm):
    with pytest.raises(ValueError, match="grammar must be"):
        llm.create_completion("x", grammar=42)
    with pytest.raises(GrammarError):
        llm.create_completion("x", grammar="root ::= (")
