"""Several sequences in one context and continuous batching (pyrt_decode_batch,
pyrt/batching.py): a sequence's logits and tokens are the same alone or batched
with others, bad batches are clear errors, and Llama(n_parallel=N) serves
concurrent calls."""
from __future__ import annotations

import json
import threading
import urllib.request

import numpy as np
import pytest

import pyrt
from pyrt._native import ContextFullError, lib
from pyrt.model import Context, Model

L, A, NONE = lib.PYRT_OUT_LOGITS_LAST, lib.PYRT_OUT_LOGITS_ALL, lib.PYRT_OUT_NONE
PER_TOKEN = lib.PYRT_NUMERICS_PER_TOKEN


@pytest.fixture(scope="module", params=["smollm2", "gemma3"])
def model(request):
    m = Model(request.getfixturevalue(f"{request.param}_path"))
    yield m
    m.close()


def _prompts(n_vocab: int, lens, seed: int = 0) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [[int(t) for t in rng.integers(100, min(n_vocab, 20000), size=n)] for n in lens]


def _alone(model, prompt: list[int], steps: int, n_batch: int = 512) -> tuple[list[np.ndarray], list[int]]:
    """Logits after the prompt and after each greedy token, one sequence alone."""
    c = Context(model, n_ctx=256, n_threads=2, n_batch=n_batch)
    try:
        out = [c.decode(prompt, 0, L)]
        toks = list(prompt)
        for _ in range(steps):
            toks.append(int(np.argmax(out[-1])))
            out.append(c.decode([toks[-1]], len(toks) - 1, L))
        return out, toks[len(prompt):]
    finally:
        c.close()


def test_batched_sequences_match_alone(model):
    """Prompts and decoding steps of 4 sequences, interleaved in batches of
    different compositions (prefill parts of several sizes next to decoding
    parts), give each sequence exactly the logits it gets alone."""
    prompts = _prompts(model.hparams.n_vocab, (7, 30, 1, 50))
    steps = 5
    ref = [_alone(model, p, steps) for p in prompts]
    c = Context(model, n_ctx=256, n_threads=2, n_seq=4, n_batch=128)
    try:
        assert c.n_seq == 4
        got = {0: [], 1: [], 2: [], 3: []}
        toks = {i: list(p) for i, p in enumerate(prompts)}
        r = c.decode_batch([(0, prompts[0], 0, L, 0), (1, prompts[1], 0, L, 0)])
        got[0].append(r[0])
        got[1].append(r[1])
        started = [0, 1]
        for step in range(steps + 2):
            parts = []
            for s in started:
                if len(got[s]) <= steps:
                    toks[s].append(int(np.argmax(got[s][-1])))
                    parts.append((s, [toks[s][-1]], len(toks[s]) - 1, L, 0))
            if step == 1:                      # two prompts join running decodes
                parts = [(3, prompts[3], 0, L, 0)] + parts + [(2, prompts[2], 0, L, 0)]
                started += [2, 3]
            if not parts:
                break
            for (s, *_rest), o in zip(parts, c.decode_batch(parts)):
                got[s].append(o)
        for s in range(4):
            assert len(got[s]) == steps + 1
            for a, b in zip(ref[s][0], got[s]):
                np.testing.assert_array_equal(a, b)
            assert [c_ for c_ in toks[s][len(prompts[s]):]][:steps] == ref[s][1][:steps]
            assert c.seq_n_past(s) == len(prompts[s]) + steps
    finally:
        c.close()


def test_per_token_parts_and_all_logits(model):
    """A speculative-verify part (several tokens, per-token numerics, all
    logits) next to a decoding part: every row equals single-token decoding."""
    p0, p1 = _prompts(model.hparams.n_vocab, (12, 9), seed=1)
    extra = [111, 222, 333, 444]
    c1 = Context(model, n_ctx=128, n_threads=2)
    c1.decode(p0, 0, NONE)
    rows = [c1.decode([t], len(p0) + i, L) for i, t in enumerate(extra)]
    ref1 = _alone(model, p1, 1)[0]
    c1.close()
    c = Context(model, n_ctx=128, n_threads=2, n_seq=2)
    try:
        c.decode_batch([(0, p0, 0, NONE, 0), (1, p1, 0, L, 0)])
        out = c.decode_batch([(1, [int(np.argmax(ref1[0]))], len(p1), L, 0),
                              (0, extra, len(p0), A, PER_TOKEN)])
        np.testing.assert_array_equal(out[0], ref1[1])
        assert out[1].shape == (4, model.hparams.n_vocab)
        for i in range(4):
            np.testing.assert_array_equal(out[1][i], rows[i])
    finally:
        c.close()


def test_seq_copy_and_truncate(smollm2_path):
    m = Model(smollm2_path)
    c = Context(m, n_ctx=64, n_threads=2, n_seq=3)
    try:
        p = _prompts(m.hparams.n_vocab, (20,))[0]
        c.decode_batch([(0, p, 0, NONE, 0)])
        c.seq_copy(0, 2, 15)                  # sequence 2 starts from 15 of sequence 0's positions
        assert c.seq_n_past(2) == 15 and c.seq_n_past(0) == 20 and c.seq_n_past(1) == 0
        a = c.decode_batch([(2, p[15:], 15, L, len(p))])[0]
        c.seq_truncate(0, 15)
        b = c.decode_batch([(0, p[15:], 15, L, len(p))])[0]
        np.testing.assert_array_equal(a, b)
        with pytest.raises(ValueError, match="positions not in"):
            c.seq_copy(1, 0, 5)               # sequence 1 holds nothing
        with pytest.raises(ValueError, match="not in"):
            c.seq_truncate(3, 0)
    finally:
        c.close()
        m.close()


def test_bad_batches_are_clear_errors(smollm2_path):
    m = Model(smollm2_path)
    c = Context(m, n_ctx=32, n_threads=2, n_seq=2, n_batch=16)
    try:
        with pytest.raises(ValueError, match="appears twice"):
            c.decode_batch([(0, [1], 0, L, 0), (0, [2], 1, L, 0)])
        with pytest.raises(ValueError, match="sequence 2 not in"):
            c.decode_batch([(2, [1], 0, L, 0)])
        with pytest.raises(ValueError, match="pos0 5"):
            c.decode_batch([(1, [1], 5, L, 0)])
        c.decode_batch([(1, [5] * 16, 0, NONE, 0)])
        c.decode_batch([(1, [5] * 8, 16, NONE, 0)])
        with pytest.raises(ContextFullError):
            c.decode_batch([(1, [5] * 9, 24, NONE, 0)])       # positions 24..32 of 32
        assert c.seq_n_past(1) == 24
        with pytest.raises(ValueError, match="exceed n_batch"):
            c.decode_batch([(0, [1] * 10, 0, NONE, 0), (1, [1] * 10, 0, NONE, 0)])
        with pytest.raises(ValueError, match="out_kind"):
            c.decode_batch([(0, [1], 0, lib.PYRT_OUT_EMBD_ALL, 0)])
        with pytest.raises(ValueError, match="outside"):
            c.decode_batch([(0, [m.hparams.n_vocab], 0, L, 0)])
        with pytest.raises(ValueError, match="parts"):
            c.decode_batch([])
        with pytest.raises(ValueError, match="n_seq"):
            Context(m, n_ctx=32, n_seq=1000)
        # a failed batch moves no sequence
        before = (c.seq_n_past(0), c.seq_n_past(1))
        with pytest.raises(ValueError):
            c.decode_batch([(0, [1], c.seq_n_past(0), L, 0), (1, [-1], 0, L, 0)])
        assert (c.seq_n_past(0), c.seq_n_past(1)) == before
    finally:
        c.close()
        m.close()


# ---- Llama(n_parallel=N) ------------------------------------------------------------------

PROMPTS = ["Tell me a story about a dragon.", "What is the capital of France?",
           "Write a haiku about the sea.", "Name three fruits."]


def _chat(llm, prompt, **kw):
    return llm.create_chat_completion([{"role": "user", "content": prompt}], max_tokens=24,
                                      temperature=0.8, seed=42, **kw)


@pytest.mark.parametrize("name", ["smollm2", "gemma3"])
def test_parallel_calls_match_sequential(request, name):
    """4 threads at once, batched into the same steps (the engine is held
    until all 4 prompts are queued), give the texts of 4 calls one after
    another on a single-sequence Llama; streams too."""
    path = request.getfixturevalue(f"{name}_path")
    with pyrt.Llama(path, n_ctx=512, n_threads=2) as solo:
        ref = [_chat(solo, p)["choices"][0]["message"]["content"] for p in PROMPTS]
    with pyrt.Llama(path, n_ctx=512, n_threads=2, n_parallel=4) as llm:
        eng = llm._engine
        for stream in (False, True):
            out: list = [None] * 4
            errors: list = []

            def run(i):
                try:
                    r = _chat(llm, PROMPTS[i], stream=stream)
                    out[i] = ("".join(c["choices"][0]["delta"].get("content") or "" for c in r) if stream
                              else r["choices"][0]["message"]["content"])
                except BaseException as e:      # reported below
                    errors.append(e)
            eng.hold()
            th = [threading.Thread(target=run, args=(i,)) for i in range(4)]
            for t in th:
                t.start()
            eng.wait_pending(4)
            eng.resume()
            for t in th:
                t.join()
            assert not errors
            assert out == ref
        assert eng.stats["max_parts"] == 4
        with pytest.raises(RuntimeError, match="n_parallel"):
            llm.eval([1, 2, 3])
        with pytest.raises(RuntimeError, match="n_parallel"):
            llm.save_state()


def test_parallel_prefix_reuse_and_generate(smollm2_path):
    with pyrt.Llama(smollm2_path, n_ctx=256, n_threads=2, n_parallel=2, seed=3) as llm:
        toks = llm.tokenize("The quick brown fox")
        a = list(llm.generate(toks, max_tokens=8, temperature=0))
        b = list(llm.generate(toks, max_tokens=8, temperature=0))
        assert a == b and len(a) == 8
        r = _chat(llm, PROMPTS[0])
        r2 = _chat(llm, PROMPTS[0])
        assert r["choices"][0]["message"]["content"] == r2["choices"][0]["message"]["content"]
        assert r2["usage"]["prompt_tokens_details"]["cached_tokens"] > 0   # the sequence kept its cache


def test_parallel_cancel_one_keeps_others(smollm2_path):
    """A call whose should_stop fires ends (finish_reason "abort"); a call
    batched with it is unaffected."""
    with pyrt.Llama(smollm2_path, n_ctx=512, n_threads=2) as solo:
        ref = _chat(solo, PROMPTS[1])["choices"][0]["message"]["content"]
    with pyrt.Llama(smollm2_path, n_ctx=512, n_threads=2, n_parallel=2) as llm:
        stop = threading.Event()
        res: dict = {}

        def victim():
            n = 0
            for chunk in llm.create_chat_completion([{"role": "user", "content": PROMPTS[0]}], max_tokens=200,
                                                    stream=True, seed=1, should_stop=stop.is_set):
                n += 1
                if n == 3:
                    stop.set()
                res["finish"] = chunk["choices"][0]["finish_reason"] if chunk["choices"] else res.get("finish")
        t = threading.Thread(target=victim)
        t.start()
        other = _chat(llm, PROMPTS[1])["choices"][0]["message"]["content"]
        t.join()
        assert other == ref
        assert res["finish"] == "abort"


def test_parallel_step_runs_while_the_consumer_holds_the_token(smollm2_path):
    """With n_parallel > 1 the generation loop submits a token's evaluation
    before handing the token out, so the step runs while the consumer (a
    stream write) has it; closing the stream then drops that evaluation, and
    the sequence keeps exactly the tokens handed out before the last one."""
    with pyrt.Llama(smollm2_path, n_ctx=256, n_threads=2, n_parallel=2, seed=3) as llm:
        eng = llm._engine
        toks = llm.tokenize("The quick brown fox")
        ref = list(llm.generate(toks, max_tokens=12, temperature=0))
        assert len(ref) == 12
        got = []
        gen = llm.generate(toks, max_tokens=12, temperature=0)
        for tok in gen:
            got.append(tok)
            before = eng.stats["steps"]
            with eng._cv:       # this token's step runs now, while we hold the token
                assert eng._cv.wait_for(lambda: eng.stats["steps"] > before, timeout=120)
            if len(got) == 5:
                break
        gen.close()
        assert got == ref[:5]
        assert not eng._pending
        for s in range(2):
            assert llm._engine.ctx.seq_n_past(s) == len(eng._cached[s])
        assert len(toks) + 4 in [len(c) for c in eng._cached]
        # the cut sequence is reused and continues exactly
        assert list(llm.generate(toks, max_tokens=12, temperature=0)) == ref


def test_parallel_stream_closed_after_its_llama(smollm2_path):
    """A suspended stream whose next evaluation was already submitted closes
    quietly after its Llama was closed (nothing left to cut back)."""
    llm = pyrt.Llama(smollm2_path, n_ctx=256, n_threads=2, n_parallel=2)
    gen = llm.generate(llm.tokenize("Hello there"), max_tokens=20, temperature=0,
                       logit_bias={llm.token_eos(): -1e9})
    next(gen), next(gen)
    llm.close()
    gen.close()


def test_parallel_rejects_bad_arguments(smollm2_path):
    with pytest.raises(ValueError, match="n_parallel"):
        pyrt.Llama(smollm2_path, n_ctx=64, n_parallel=0)
    with pytest.raises(pyrt.UnsupportedError, match="draft model"):
        pyrt.Llama(smollm2_path, n_ctx=64, n_parallel=2, draft_model=smollm2_path)


def test_server_parallel_streams(smollm2_path):
    """pyrt serve's worker with a parallel Llama: two streaming requests at
    once both complete, and /health reports the slots."""
    from pyrt.server import Server
    llm = pyrt.Llama(smollm2_path, n_ctx=256, n_threads=2, n_parallel=2, seed=5)
    srv = Server(llm, "127.0.0.1", 0)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    try:
        def post(body):
            req = urllib.request.Request(srv.url + "/chat/completions", json.dumps(body).encode(),
                                         {"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=300) as r:
                return r.read().decode()
        outs: list = [None, None]

        def one(i):
            outs[i] = post({"messages": [{"role": "user", "content": PROMPTS[i]}], "max_tokens": 12,
                            "stream": True, "seed": i})
        ts = [threading.Thread(target=one, args=(i,)) for i in range(2)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        for o in outs:
            assert o.rstrip().endswith("data: [DONE]")
        with urllib.request.urlopen(srv.url + "/health", timeout=60) as r:
            health = json.loads(r.read())
        assert health["slots"] == 2 and health["completed"] == 2
    finally:
        srv.shutdown()
        srv.app.worker.stop()
        llm.close()


def test_parallel_n_choices_match_sequential(smollm2_path):
    """n>1 choices are generated at once with n_parallel > 1; choice i is the
    text a single-sequence Llama gives for seed + i."""
    kw = dict(max_tokens=16, temperature=0.9, seed=11, n=3)
    with pyrt.Llama(smollm2_path, n_ctx=256, n_threads=2) as solo:
        ref = solo.create_completion("Once upon a time", **kw)
    with pyrt.Llama(smollm2_path, n_ctx=256, n_threads=2, n_parallel=3) as llm:
        out = llm.create_completion("Once upon a time", **kw)
        assert llm._engine.stats["max_parts"] >= 1
    assert [c["text"] for c in out["choices"]] == [c["text"] for c in ref["choices"]]
    assert [c["index"] for c in out["choices"]] == [0, 1, 2]
    assert out["usage"] == ref["usage"]


def test_parallel_grammar_and_lookup_match_sequential(smollm2_path):
    """A JSON-constrained call and a prompt-lookup speculative call, batched
    together, give the texts they give on a single-sequence Llama (drafts are
    verified as per-token parts of the shared step)."""
    msgs = [[{"role": "user", "content": "Give a JSON object describing a cat named Tom."}],
            [{"role": "user", "content": "Rewrite this sentence exactly: The quick brown fox jumps over "
                                         "the lazy dog. The quick brown fox jumps over the lazy dog."}]]
    kws = [dict(response_format={"type": "json_object"}, max_tokens=48, seed=3, temperature=0.7),
           dict(speculative="lookup", max_tokens=48, seed=4, temperature=0)]
    with pyrt.Llama(smollm2_path, n_ctx=512, n_threads=2) as solo:
        ref = [solo.create_chat_completion(m, **k)["choices"][0]["message"]["content"] for m, k in zip(msgs, kws)]
    with pyrt.Llama(smollm2_path, n_ctx=512, n_threads=2, n_parallel=2) as llm:
        out: list = [None, None]

        def run(i):
            out[i] = llm.create_chat_completion(msgs[i], **kws[i])["choices"][0]["message"]["content"]
        llm._engine.hold()
        th = [threading.Thread(target=run, args=(i,)) for i in range(2)]
        for t in th:
            t.start()
        llm._engine.wait_pending(2)
        llm._engine.resume()
        for t in th:
            t.join()
        assert llm._engine.stats["max_parts"] == 2
        with pytest.raises(pyrt.ContextFullError):
            llm.create_completion("x " * 600, max_tokens=4)
    assert out == ref
