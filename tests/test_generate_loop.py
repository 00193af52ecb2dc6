"""The one token generator (pyrt/generate.py): its layers agree with each
other and with the Llama methods built on them; stop tokens, stop strings
across token boundaries, max_tokens, aborts, early closing; the public
accessors that bench and the REPL use instead of Llama's private state; and
the one-way dependency cli -> bench -> api."""
from __future__ import annotations

import subprocess
import sys

import pytest

import pyrt
from pyrt.generate import Piece, generate_step, generate_tokens, stop_holdback, stream_generate
from pyrt.sampling import SamplingParams

PROMPT = "Once upon a time, there was a little"


@pytest.fixture(scope="module")
def llm(smollm2_path):
    with pyrt.Llama(str(smollm2_path), n_ctx=256, n_threads=2, seed=0) as m:
        yield m


def greedy():
    return SamplingParams(temperature=0, seed=0)


# ---- generate_step ---------------------------------------------------------------------------

def test_steps_are_llama_generate_tokens_and_their_logits_pick_them(llm):
    ids = llm.tokenize(PROMPT)
    steps = generate_step(llm, ids, greedy(), max_tokens=6)
    got = [(tok, int(logits.argmax())) for tok, logits in steps]
    assert [t for t, _ in got] == list(llm.generate(ids, max_tokens=6, temperature=0))
    assert all(t == best for t, best in got)           # greedy: the yielded logits gave the token
    assert steps.finish_reason == "length" and steps.n_generated == 6


def test_step_stop_token_is_not_yielded(llm):
    ids = llm.tokenize(PROMPT)
    full = list(llm.generate(ids, max_tokens=8, temperature=0))
    steps = generate_step(llm, ids, greedy(), max_tokens=8, stop_ids={full[3]})
    assert [t for t, _ in steps] == full[:3]
    assert steps.finish_reason == "stop" and steps.n_generated == 3


def test_step_max_tokens_zero_samples_nothing(llm):
    steps = generate_step(llm, llm.tokenize(PROMPT), greedy(), max_tokens=0)
    assert list(steps) == [] and steps.finish_reason == "length"


def test_step_should_stop_aborts_between_tokens(llm):
    calls = []

    def should_stop():
        calls.append(1)
        return len(calls) > 2
    steps = generate_step(llm, llm.tokenize(PROMPT), greedy(), max_tokens=10, should_stop=should_stop)
    assert len(list(steps)) == 2
    assert steps.finish_reason == "abort"


def test_closing_early_evaluates_no_further_token(llm):
    ids = llm.tokenize(PROMPT)
    steps = generate_step(llm, ids, greedy(), max_tokens=10)
    next(steps)
    assert llm.n_tokens() == len(ids)            # the prompt is cached, the first token not yet
    next(steps)
    assert llm.n_tokens() == len(ids) + 1
    steps.close()
    assert llm.n_tokens() == len(ids) + 1
    with pytest.raises(StopIteration):
        next(steps)


def test_nothing_runs_before_the_first_step(llm):
    llm.reset()
    steps = generate_step(llm, llm.tokenize(PROMPT), greedy(), max_tokens=2)
    assert llm.n_tokens() == 0
    list(steps)
    assert llm.n_tokens() > 0


# ---- tokens and text agree -------------------------------------------------------------------

@pytest.mark.parametrize("seed", [1, 2, 3])
def test_generate_and_create_completion_agree_for_a_seed(llm, seed):
    ids = llm.tokenize(PROMPT)
    kw = dict(max_tokens=16, temperature=0.9, seed=seed)
    toks = list(llm.generate(ids, **kw))
    out = llm.create_completion(ids, logprobs=0, **kw)
    assert out["choices"][0]["text"] == llm.detokenize_text(toks)
    assert out["usage"]["completion_tokens"] == len(toks)
    assert out["choices"][0]["logprobs"]["tokens"] == \
        [llm.tokenizer.token_to_bytes(t).decode("utf-8", "replace") for t in toks]


def test_stream_generate_pieces_and_last_piece(llm):
    ids = llm.tokenize(PROMPT)
    pieces = list(stream_generate(llm, ids, greedy(), max_tokens=7))
    assert all(isinstance(p, Piece) for p in pieces)
    assert all(p.finish_reason is None for p in pieces[:-1])
    last = pieces[-1]
    assert (last.text, last.finish_reason, last.n_generated) == ("", "length", 7)
    assert "".join(p.text for p in pieces) == llm.detokenize_text(list(llm.generate(ids, max_tokens=7,
                                                                                temperature=0)))
    assert llm.last_stats["predicted_n"] == 7 and llm.last_stats["prompt_n"] == len(ids)


def test_stream_generate_logprob_records_follow_the_text(llm):
    ids = llm.tokenize(PROMPT)
    pieces = list(stream_generate(llm, ids, greedy(), max_tokens=6, n_logprobs=2))
    entries = [e for p in pieces for e in p.logprobs]
    text = "".join(p.text for p in pieces)
    assert len(entries) == 6
    assert all(len(e["top"]) == 2 and e["top"][0][0] == e["id"] for e in entries)   # greedy: top-1
    assert [text[e["offset"]:e["offset"] + len(e["token"])] for e in entries] == [e["token"] for e in entries]


def _two_token_stop(llm, ids):
    """A stop string made of the end of one generated token and the start of the next."""
    toks = list(llm.generate(ids, max_tokens=12, temperature=0))
    pieces = [llm.detokenize_text([t]) for t in toks]
    for i in range(1, len(pieces) - 1):
        a, b = pieces[i], pieces[i + 1]
        if len(a) >= 2 and len(b) >= 2:
            stop = a[-2:] + b[:2]
            full = "".join(pieces)
            if full.find(stop) == len("".join(pieces[:i + 1])) - 2:     # first occurrence is there
                return full, stop
    pytest.skip("no suitable token pair in the greedy continuation")


def test_stop_string_across_a_token_boundary(llm):
    ids = llm.tokenize(PROMPT)
    full, stop = _two_token_stop(llm, ids)
    want = full[:full.index(stop)]
    out = llm.create_completion(ids, max_tokens=12, temperature=0, stop=[stop])
    assert out["choices"][0]["text"] == want
    assert out["choices"][0]["finish_reason"] == "stop"
    chunks = list(llm.create_completion(ids, max_tokens=12, temperature=0, stop=[stop], stream=True))
    assert "".join(c["choices"][0]["text"] for c in chunks) == want
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    pieces = list(stream_generate(llm, ids, greedy(), max_tokens=12, stop_strs=[stop]))
    assert "".join(p.text for p in pieces) == want and pieces[-1].finish_reason == "stop"
    # Llama.generate drops every token that is part of the stop string
    toks = list(generate_tokens(llm, ids, greedy(), max_tokens=12, stop_strs=[stop]))
    assert toks == list(llm.generate(ids, max_tokens=12, temperature=0, stop=[stop]))
    text = llm.detokenize_text(toks)
    assert stop not in text and want.startswith(text) and len(want) - len(text) < len(stop) + 8


def test_stop_holdback():
    assert stop_holdback("the end", ["end."]) == 3
    assert stop_holdback("abc", ["xyz"]) == 0
    assert stop_holdback("ab", ["b", "abc"]) == 2
    assert stop_holdback("", ["x"]) == 0


# ---- public accessors -------------------------------------------------------------------------

def test_model_accessors_match_the_gguf_file(llm):
    from pyrt.gguf_file import GGUFFile
    with GGUFFile(llm.model_path) as g:
        assert llm.n_params() == sum(t.n_elements for t in g.tensors.values())
        assert llm.model_size() == sum(t.nbytes for t in g.tensors.values())
    assert 100e6 < llm.n_params() < 200e6


def test_eval_seconds_counts_evaluation_only(llm):
    s0 = llm.eval_seconds
    assert isinstance(s0, float)
    llm.tokenize(PROMPT)
    assert llm.eval_seconds == s0
    llm.reset()
    list(llm.generate(llm.tokenize(PROMPT), max_tokens=3, temperature=0))
    assert llm.eval_seconds > s0


def test_generate_bench_uses_public_accessors(smollm2_path):
    from pyrt.bench import run_generate_bench
    rec = run_generate_bench(str(smollm2_path), n_gen=3, n_threads=2, repetitions=1)
    assert rec.model_n_params > 0 and rec.model_size > 0
    assert 0.0 <= rec.python_overhead_pct < 100.0


# ---- module dependencies ----------------------------------------------------------------------

def test_bench_and_api_do_not_import_the_cli():
    code = ("import sys, pyrt.bench, pyrt.api, pyrt.generate; "
            "assert 'pyrt.cli' not in sys.modules, sorted(m for m in sys.modules if m.startswith('pyrt'))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def test_cli_parser_builds_with_bench_and_device_args():
    from pyrt.cli import build_parser
    args = build_parser().parse_args(["bench", "-p", "4", "-n", "2", "--device", "cpu"])
    assert (args.n_prompt, args.n_gen, args.device) == (4, 2, "cpu")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["bench", "--device", "tpu"])
