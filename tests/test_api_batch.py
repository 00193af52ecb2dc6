"""The API's batched entry: Llama.create_completion on a list of prompts and
n > 1 choices (create_chat_completion too). With n_parallel > 1 the
completions run at once through the batch engine; every choice's tokens are
the ones that prompt gives alone with the same seed (choice j: seed + j),
batched with its neighbours or not, streamed or not, and the same again
without n_parallel (one after another)."""
from __future__ import annotations

import threading

import numpy as np
import pytest

import pyrt
from pyrt._native import AbortedError

PROMPTS = ["Once upon a time", "The capital of France is", "def add(a, b):"]
KW = dict(max_tokens=12, temperature=0.9, seed=7)


@pytest.fixture(scope="module", params=["smollm2", "gemma3"])
def models(request):
    """(single-sequence Llama, Llama with n_parallel=4) of one model."""
    path = request.getfixturevalue(f"{request.param}_path")
    with pyrt.Llama(path, n_ctx=256, n_threads=2) as solo, \
            pyrt.Llama(path, n_ctx=256, n_threads=2, n_parallel=4) as par:
        yield solo, par


@pytest.fixture(scope="module")
def solo(smollm2_path):
    with pyrt.Llama(smollm2_path, n_ctx=256, n_threads=2) as m:
        yield m


@pytest.fixture(scope="module")
def par(smollm2_path):
    with pyrt.Llama(smollm2_path, n_ctx=256, n_threads=2, n_parallel=3) as m:
        yield m


def _alone(llm, prompts, n, **kw):
    """Each choice of each prompt as its own call: prompt i, seed + j."""
    out = []
    for p in prompts:
        for j in range(n):
            out.append(llm.create_completion(p, **dict(kw, seed=kw["seed"] + j))["choices"][0])
    return out


def _streamed(chunks, total):
    texts = [""] * total
    finish = [None] * total
    usages = []
    for c in chunks:
        assert len(c["choices"]) == 1
        ch = c["choices"][0]
        k = ch["index"]
        assert finish[k] is None, "a chunk after its choice's finish_reason"
        texts[k] += ch["text"] if "text" in ch else (ch["delta"].get("content") or "")
        finish[k] = ch["finish_reason"]
        if c["usage"] is not None:
            usages.append(c["usage"])
    return texts, finish, usages


def test_prompts_and_choices_match_alone(models):
    """3 prompts x n=2 at once: each choice's text is that prompt's alone with
    seed + j (index i*n + j), on n_parallel=4 (batched: steps carry several
    sequences) and on a single-sequence Llama (one after another); streamed,
    the chunks carry their index, each choice ends once, usage comes once."""
    solo, par = models
    ref = _alone(solo, PROMPTS, 2, **KW)
    want = [c["text"] for c in ref]
    before = par._engine.stats["max_parts"]
    for llm in (par, solo):
        out = llm.create_completion(PROMPTS, n=2, **KW)
        assert [c["index"] for c in out["choices"]] == list(range(6))
        assert [c["text"] for c in out["choices"]] == want
        assert [c["finish_reason"] for c in out["choices"]] == [c["finish_reason"] for c in ref]
        assert out["object"] == "text_completion" and out["id"].startswith("cmpl-")
        assert out["usage"]["completion_tokens"] == llm.last_stats["predicted_n"] > 0
        assert out["usage"]["prompt_tokens"] == sum(len(solo.tokenize(p)) for p in PROMPTS)
        assert out["usage"]["total_tokens"] == out["usage"]["prompt_tokens"] + out["usage"]["completion_tokens"]
        chunks = list(llm.create_completion(PROMPTS, n=2, stream=True, **KW))
        texts, finish, usages = _streamed(chunks, 6)
        assert texts == want and all(finish)
        assert len(usages) == 1 and chunks[-1]["usage"] == usages[0]
        assert usages[0]["completion_tokens"] == out["usage"]["completion_tokens"]
        assert len({c["id"] for c in chunks}) == 1
    assert par._engine.stats["max_parts"] >= 2 and par._engine.stats["max_parts"] >= before
    assert sorted(par._engine._free) == [0, 1, 2, 3]          # every sequence given back


def test_more_completions_than_sequences(par, solo):
    """7 completions on 3 sequences: they run 3 at a time, same texts."""
    prompts = ["Tell me a joke.", "List three colours:", "1, 2, 3,", "The sea is", "Hello", "Why", "A B C"]
    ref = [c["text"] for c in _alone(solo, prompts, 1, **KW)]
    assert [c["text"] for c in par.create_completion(prompts, **KW)["choices"]] == ref
    texts, finish, _ = _streamed(par.create_completion(prompts, stream=True, **KW), 7)
    assert texts == ref and all(finish)


def test_token_prompts_and_disambiguation(par, solo):
    """Lists of token ids batch like strings; a flat list of ints is one prompt."""
    toks = [solo.tokenize(p) for p in PROMPTS]
    by_text = par.create_completion(PROMPTS, **KW)
    by_ids = par.create_completion(toks, **KW)
    assert [c["text"] for c in by_ids["choices"]] == [c["text"] for c in by_text["choices"]]
    mixed = par.create_completion([PROMPTS[0], toks[1]], **KW)
    assert [c["text"] for c in mixed["choices"]] == [c["text"] for c in by_text["choices"][:2]]
    one = par.create_completion(toks[0], **KW)                       # one token prompt, not 4 prompts
    assert len(one["choices"]) == 1 and one["choices"][0]["text"] == by_text["choices"][0]["text"]
    arr = par.create_completion(np.array(toks[0], dtype=np.int32), **KW)
    assert arr["choices"][0]["text"] == one["choices"][0]["text"]
    single = par.create_completion([PROMPTS[1]], **KW)             # a list of one prompt is that prompt
    assert single["choices"][0]["text"] == by_text["choices"][1]["text"]


@pytest.mark.parametrize("prompt, n, match", [
    ([], 1, "prompt is empty"),
    (["a", ""], 1, r"prompt\[1\]"),
    ([[1, 2], []], 1, r"prompt\[1\]"),
    (["a", 5], 1, "mixing"),
    ([[1, 2], 3], 1, "mixing"),
    (["a", None], 1, r"prompt\[1\]"),
    ([["a"], ["b"]], 1, r"prompt\[0\] must be"),
    ("x", 0, "n must be"),
    ("x", 129, "n must be"),
    ("x", True, "n must be"),
    ("x", 2.0, "n must be"),
    (["x"] * 65, 2, "130 completions"),
    (["x"] * 1_000_000, 1, "at most 128"),
    ([[1, 2], [10 ** 9]], 1, "outside the vocabulary"),
])
def test_bad_batches_are_clear_errors(par, solo, prompt, n, match):
    for llm in (par, solo):
        with pytest.raises(ValueError, match=match):
            llm.create_completion(prompt, n=n, max_tokens=2)
    assert sorted(par._engine._free) == [0, 1, 2]


def test_bad_argument_raises_at_the_call(par):
    with pytest.raises(TypeError, match="mirostat_mod"):
        par.create_completion(PROMPTS, max_tokens=2, mirostat_mod=2, stream=True)
    with pytest.raises(pyrt.ContextFullError, match=r"prompt\[1\]"):
        par.create_completion(["short", "word " * 300], max_tokens=2)


def test_echo_logprobs_stop_per_choice(par, solo):
    """echo, logprobs and stop strings work per choice as alone."""
    kw = dict(KW, echo=True, logprobs=2, stop=[".", "\n"])
    ref = _alone(solo, PROMPTS[:2], 2, **kw)
    out = par.create_completion(PROMPTS[:2], n=2, **kw)
    for got, want in zip(out["choices"], ref):
        assert got["text"] == want["text"] and got["finish_reason"] == want["finish_reason"]
        assert got["logprobs"] == want["logprobs"]
    assert out["choices"][2]["text"].startswith(PROMPTS[1])
    kw0 = dict(kw, max_tokens=0)          # scoring the prompts only
    s = par.create_completion(PROMPTS, **kw0)
    assert [c["text"] for c in s["choices"]] == PROMPTS and s["usage"]["completion_tokens"] == 0


def test_chat_n_concurrent(models):
    solo, par = models
    msgs = [{"role": "user", "content": "Name a fruit."}]
    kw = dict(max_tokens=10, temperature=1.0, seed=3)
    ref = [solo.create_chat_completion(msgs, **dict(kw, seed=3 + j))["choices"][0]["message"]["content"]
           for j in range(3)]
    for llm in (par, solo):
        out = llm.create_chat_completion(msgs, n=3, **kw)
        assert [c["message"]["content"] for c in out["choices"]] == ref
        assert [c["index"] for c in out["choices"]] == [0, 1, 2] and out["id"].startswith("chatcmpl-")
        texts, finish, usages = _streamed(llm.create_chat_completion(msgs, n=3, stream=True, **kw), 3)
        assert texts == ref and all(finish) and len(usages) == 1
        assert usages[0]["prompt_tokens"] == out["usage"]["prompt_tokens"]        # the prompt counted once


def test_unseeded_choices_follow_the_llama_seed(smollm2_path):
    """seed=None draws each choice's seed from the Llama's RNG in index order:
    the same Llama seed gives the same texts, batched or not."""
    outs = []
    for n_parallel in (1, 3):
        with pyrt.Llama(smollm2_path, n_ctx=128, n_threads=2, seed=5, n_parallel=n_parallel) as m:
            outs.append([c["text"] for c in m.create_completion(PROMPTS, max_tokens=8, temperature=1.0)["choices"]])
    assert outs[0] == outs[1]


@pytest.mark.parametrize("which", ["solo", "par"])
def test_cancel_mid_stream(request, which):
    """should_stop firing mid-stream ends every choice (finish_reason "abort"
    for those running or not started); the sequences are given back."""
    llm = request.getfixturevalue(which)
    stop = threading.Event()
    prompts = PROMPTS + ["Tell me a story."]
    seen = 0
    chunks = []
    for c in llm.create_completion(prompts, max_tokens=200, temperature=0.8, seed=1, stream=True,
                                   should_stop=stop.is_set, logit_bias={llm.token_eos(): -100}):
        chunks.append(c)
        seen += 1
        if seen == 3:
            stop.set()
    _texts, finish, usages = _streamed(chunks, 4)
    assert all(f is not None for f in finish) and "abort" in finish and "stop" not in finish
    assert len(usages) == 1 and usages[0]["completion_tokens"] < 4 * 200
    if which == "par":
        assert sorted(llm._engine._free) == [0, 1, 2]


def test_closing_the_stream_stops_the_choices(par):
    it = par.create_completion(PROMPTS, max_tokens=200, temperature=0.8, seed=1, stream=True,
                               logit_bias={par.token_eos(): -100})
    next(it)
    it.close()
    assert sorted(par._engine._free) == [0, 1, 2]
    assert len(par.create_completion(PROMPTS, **KW)["choices"]) == 3          # still serving


def test_stopped_before_any_output_raises(par, solo):
    """should_stop true before any choice produced output: AbortedError, as a
    single call stopped during its prompt."""
    for llm in (par, solo):
        with pytest.raises(AbortedError):
            llm.create_completion(PROMPTS, max_tokens=4, should_stop=lambda: True)
    assert sorted(par._engine._free) == [0, 1, 2]
