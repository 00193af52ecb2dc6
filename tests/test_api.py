"""The Llama-style Python API: completions, chat completions, streaming, logprobs,
embeddings, state save/load and parameter validation, on the real SmolLM2 model."""
from __future__ import annotations

import math

import numpy as np
import pytest

import pyrt
from pyrt.api import LlamaState

PROMPT = "The capital of France is"


@pytest.fixture(scope="module")
def llm(smollm2_path):
    with pyrt.Llama(str(smollm2_path), n_ctx=512, seed=0) as m:
        yield m


def greedy_ids(llm, prompt, n):
    return list(llm.generate(llm.tokenize(prompt, special=True), max_tokens=n, temperature=0))


# ---- completions -------------------------------------------------------------------------------

def test_completion_shape_and_greedy_text(llm):
    out = llm.create_completion(PROMPT, max_tokens=8, temperature=0)
    assert out["object"] == "text_completion" and out["id"].startswith("cmpl-")
    assert out["model"] == llm.model_name
    (choice,) = out["choices"]
    assert choice["finish_reason"] == "length" and choice["index"] == 0 and choice["logprobs"] is None
    assert choice["text"] == llm.detokenize_text(greedy_ids(llm, PROMPT, 8))
    assert choice["text"].startswith(" Paris")        # llama.cpp's greedy continuation
    u = out["usage"]
    assert (u["prompt_tokens"], u["completion_tokens"], u["total_tokens"]) == (5, 8, 13)


def test_call_is_create_completion(llm):
    a = llm(PROMPT, max_tokens=6, temperature=0)
    b = llm.create_completion(PROMPT, max_tokens=6, temperature=0)
    assert a["choices"][0]["text"] == b["choices"][0]["text"]


def test_stream_concatenates_to_the_same_text(llm):
    full = llm.create_completion(PROMPT, max_tokens=20, temperature=0)
    chunks = list(llm.create_completion(PROMPT, max_tokens=20, temperature=0, stream=True))
    assert all(c["object"] == "text_completion" for c in chunks)
    assert [c["choices"][0]["finish_reason"] for c in chunks[:-1]] == [None] * (len(chunks) - 1)
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert chunks[-1]["usage"]["completion_tokens"] == 20
    assert "".join(c["choices"][0]["text"] for c in chunks) == full["choices"][0]["text"]
    assert len(chunks) > 5                              # really streamed, not one blob


def test_stop_string_cuts_exactly(llm):
    full = llm.create_completion(PROMPT, max_tokens=20, temperature=0)["choices"][0]["text"]
    # " Paris.\n\nThe United States ..." : cut in the middle of a token and across tokens
    for stop in (".", "\n\nThe", "ted St"):
        i = full.index(stop)
        out = llm.create_completion(PROMPT, max_tokens=20, temperature=0, stop=[stop, "zzz"])
        assert out["choices"][0]["text"] == full[:i], stop
        assert out["choices"][0]["finish_reason"] == "stop"
        streamed = "".join(c["choices"][0]["text"] for c in
                           llm.create_completion(PROMPT, max_tokens=20, temperature=0, stop=stop, stream=True))
        assert streamed == full[:i]


def test_eos_finishes_with_stop(llm):
    prompt = "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"
    out = llm.create_completion(prompt, max_tokens=32, temperature=0)
    assert out["choices"][0]["text"] == "The answer is: 4"      # llama.cpp's reference
    assert out["choices"][0]["finish_reason"] == "stop"


def test_prompt_as_token_ids(llm):
    ids = llm.tokenize(PROMPT)
    a = llm.create_completion(ids, max_tokens=5, temperature=0)
    b = llm.create_completion(PROMPT, max_tokens=5, temperature=0)
    assert a["choices"][0]["text"] == b["choices"][0]["text"]


def test_logprobs_match_the_logits(llm):
    out = llm.create_completion(PROMPT, max_tokens=4, temperature=0, logprobs=3)
    lp = out["choices"][0]["logprobs"]
    ids = greedy_ids(llm, PROMPT, 4)
    assert lp["tokens"] == [llm.detokenize_text([t]) for t in ids]
    text = out["choices"][0]["text"]
    assert lp["text_offset"] == [len(llm.detokenize_text(ids[:i])) for i in range(4)]
    assert "".join(lp["tokens"]) == text
    # the logits generation saw: the prompt's last row, then one single-token decode per token
    # (a batch evaluation of the same tokens may differ in the last bits, as in llama.cpp)
    from pyrt._native import lib
    prompt = llm.tokenize(PROMPT)
    logits = [llm.eval_prefix(prompt)]
    for i, t in enumerate(ids[:-1]):
        logits.append(llm._decode([t], len(prompt) + i, lib.PYRT_OUT_LOGITS_LAST))
        llm._tokens.append(t)
    for i, t in enumerate(ids):
        row = logits[i].astype(np.float64)
        ref = row[t] - (row.max() + math.log(np.exp(row - row.max()).sum()))
        assert lp["token_logprobs"][i] == pytest.approx(ref, abs=1e-4)
        top = lp["top_logprobs"][i]
        assert len(top) == 3 and max(top.values()) == pytest.approx(ref, abs=1e-4)   # greedy = top-1


def test_echo_with_logprobs_scores_the_prompt(llm):
    ids = llm.tokenize(PROMPT)
    out = llm.create_completion(PROMPT, max_tokens=0, echo=True, logprobs=1)
    ch = out["choices"][0]
    assert ch["text"] == PROMPT and out["usage"]["completion_tokens"] == 0
    lps = ch["logprobs"]["token_logprobs"]
    assert lps[0] is None and len(lps) == len(ids)
    rows = llm.logits(ids).astype(np.float64)
    for i in range(1, len(ids)):
        r = rows[i - 1]
        assert lps[i] == pytest.approx(r[ids[i]] - (r.max() + math.log(np.exp(r - r.max()).sum())), abs=1e-4)


def test_seeds(llm):
    kw = dict(max_tokens=12, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0)
    a = llm.create_completion(PROMPT, seed=7, **kw)["choices"][0]["text"]
    b = llm.create_completion(PROMPT, seed=7, **kw)["choices"][0]["text"]
    assert a == b
    others = {llm.create_completion(PROMPT, seed=s, **kw)["choices"][0]["text"] for s in (1, 2, 3)}
    assert len(others | {a}) > 1
    # seed=None draws from the Llama's own seeded RNG: a fresh Llama repeats the sequence
    first = [llm.create_completion(PROMPT, **kw)["choices"][0]["text"] for _ in range(2)]
    assert first[0] != first[1] or len(others) > 1


def test_prefix_reuse_is_reported(llm):
    llm.reset()
    a = llm.create_completion(PROMPT, max_tokens=4, temperature=0)
    assert a["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    b = llm.create_completion(PROMPT + " Paris", max_tokens=4, temperature=0)
    assert b["usage"]["prompt_tokens_details"]["cached_tokens"] == 5
    assert llm.last_stats["prompt_n"] == 6 and llm.last_stats["cached_n"] == 5


@pytest.mark.parametrize("kw, word", [
    (dict(temperature=-1), "temperature"), (dict(temperature="hot"), "temperature"),
    (dict(top_p=-0.1), "top_p"), (dict(top_p=1.5), "top_p"), (dict(top_k=-1), "top_k"),
    (dict(min_p=2), "min_p"), (dict(typical_p=0), "typical_p"), (dict(repeat_penalty=0), "repeat_penalty"),
    (dict(frequency_penalty=float("nan")), "frequency_penalty"), (dict(presence_penalty=None), "presence_penalty"),
    (dict(max_tokens="8"), "max_tokens"), (dict(max_tokens=1.5), "max_tokens"), (dict(seed=-2), "seed"),
    (dict(seed=2**64), "seed"), (dict(logprobs=21), "logprobs"), (dict(logprobs=True), "logprobs"),
    (dict(stop=[1]), "stop"), (dict(stop=3), "stop"), (dict(logit_bias={10**9: 1.0}), "logit_bias"),
    (dict(logit_bias={"x": 1.0}), "logit_bias"), (dict(logit_bias={5: float("inf")}), "logit_bias"),
    (dict(stream="yes"), "stream"), (dict(echo=1), "echo"), (dict(suffix=3), "suffix"),
    (dict(penalty_last_n=-2), "penalty_last_n"),
])
def test_completion_parameter_validation(llm, kw, word):
    with pytest.raises(ValueError, match=word):
        llm.create_completion(PROMPT, **kw)


@pytest.mark.parametrize("prompt", ["", [], [10**9], [-1], 3.5, None])
def test_bad_prompts(llm, prompt):
    with pytest.raises((ValueError, TypeError)):
        llm.create_completion(prompt)


def test_prompt_longer_than_context(llm):
    with pytest.raises(pyrt.ContextFullError):
        llm.create_completion("word " * 600)


def test_completion_stops_at_a_full_context(smollm2_path):
    with pyrt.Llama(str(smollm2_path), n_ctx=24) as small:
        out = small.create_completion(PROMPT, max_tokens=None, temperature=0,
                                      logit_bias={small.token_eos(): -math.inf})
        assert out["choices"][0]["finish_reason"] == "length"
        # the cache is full (24 tokens); one more token is sampled from its last logits
        assert small.n_tokens() == 24 and out["usage"]["total_tokens"] == 25


def test_interleaved_streams_raise_instead_of_corrupting(llm):
    s1 = llm.create_completion(PROMPT, max_tokens=10, temperature=0, stream=True)
    next(s1)
    llm.create_completion("Once upon a time", max_tokens=3, temperature=0)
    with pytest.raises(RuntimeError, match="another call"):
        list(s1)


# ---- chat ---------------------------------------------------------------------------------------

def test_chat_completion(llm):
    out = llm.create_chat_completion([{"role": "user", "content": "What is 2+2?"}], max_tokens=32, temperature=0)
    assert out["object"] == "chat.completion" and out["id"].startswith("chatcmpl-")
    (ch,) = out["choices"]
    assert ch["message"]["role"] == "assistant" and "4" in ch["message"]["content"]
    assert ch["finish_reason"] == "stop"               # ended at <|im_end|>
    assert "<|im_end|>" not in ch["message"]["content"]
    assert out["usage"]["prompt_tokens"] == len(llm.chat_tokens([{"role": "user", "content": "What is 2+2?"}]))


def test_chat_stream_shape(llm):
    msgs = [{"role": "user", "content": "What is 2+2?"}]
    chunks = list(llm.create_chat_completion(msgs, max_tokens=32, temperature=0, stream=True))
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[-1]["choices"][0]["delta"] == {} and chunks[-1]["choices"][0]["finish_reason"] == "stop"
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    full = llm.create_chat_completion(msgs, max_tokens=32, temperature=0)
    assert text == full["choices"][0]["message"]["content"]


def test_chat_logprobs(llm):
    out = llm.create_chat_completion([{"role": "user", "content": "What is 2+2?"}], max_tokens=5,
                                     temperature=0, logprobs=True, top_logprobs=2)
    content = out["choices"][0]["logprobs"]["content"]
    assert len(content) == out["usage"]["completion_tokens"] == 5
    for e in content:
        assert set(e) == {"token", "logprob", "bytes", "top_logprobs"} and len(e["top_logprobs"]) == 2
        assert e["logprob"] == pytest.approx(e["top_logprobs"][0]["logprob"])   # greedy
        assert bytes(e["bytes"]).decode("utf-8", "replace") == e["token"]


def test_chat_turns_only_ingest_new_tokens(llm):
    """Prefix reuse across turns: the second turn evaluates only the tokens that
    follow what the cache already holds (previous prompt + reply)."""
    llm.reset()
    msgs = [{"role": "user", "content": "What is 2+2?"}]
    a = llm.create_chat_completion(msgs, max_tokens=32, temperature=0)
    n1, g1 = a["usage"]["prompt_tokens"], a["usage"]["completion_tokens"]
    msgs += [a["choices"][0]["message"], {"role": "user", "content": "And 3+3?"}]
    b = llm.create_chat_completion(msgs, max_tokens=32, temperature=0)
    cached = b["usage"]["prompt_tokens_details"]["cached_tokens"]
    new = b["usage"]["prompt_tokens"] - cached
    # the cache held prompt + reply (the final end-of-turn token is sampled, not evaluated)
    assert cached == n1 + g1
    turn_tail = llm.tokenize("<|im_end|>\n<|im_start|>user\nAnd 3+3?<|im_end|>\n<|im_start|>assistant\n",
                             special=True)
    assert new == len(turn_tail)


@pytest.mark.parametrize("messages", [
    [], "hi", [{"content": "x"}], [{"role": "wizard", "content": "x"}], [{"role": "user"}],
    [{"role": "user", "content": 5}], [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}],
    ["hello"],
])
def test_chat_rejects_bad_messages(llm, messages):
    with pytest.raises(ValueError):
        llm.create_chat_completion(messages)


def test_chat_rejects_unsupported_features(llm):
    msgs = [{"role": "user", "content": "hi"}]
    with pytest.raises(ValueError, match="tools"):
        llm.create_chat_completion(msgs, tools=[{"type": "function"}])
    with pytest.raises(ValueError, match="response_format"):
        llm.create_chat_completion(msgs, response_format={"type": "xml"})
    with pytest.raises(ValueError, match="top_logprobs"):
        llm.create_chat_completion(msgs, top_logprobs=2)


def test_chat_text_parts(llm):
    a = llm.chat_tokens([{"role": "user", "content": [{"type": "text", "text": "What is "},
                                                       {"type": "text", "text": "2+2?"}]}])
    assert a == llm.chat_tokens([{"role": "user", "content": "What is 2+2?"}])


# ---- embeddings ---------------------------------------------------------------------------------

def test_embeddings(llm):
    texts = ["The cat sat on the mat.", "A kitten is sitting on a rug.", "Stock prices fell sharply today."]
    vecs = np.array(llm.embed(texts))
    assert vecs.shape == (3, llm.n_embd())
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    sims = vecs @ vecs.T
    assert sims[0, 1] > sims[0, 2]
    single = np.array(llm.embed(texts[2]))
    assert np.allclose(single, vecs[2], atol=1e-6)
    as_ids = np.array(llm.embed(llm.tokenize(texts[2])))
    assert np.allclose(as_ids, vecs[2], atol=1e-6)
    raw = np.array(llm.embed(texts[2], normalize=False))
    assert np.allclose(raw / np.linalg.norm(raw), single, atol=1e-5)


def test_embedding_is_mean_of_hidden_states(llm):
    from pyrt._native import lib
    ids = llm.tokenize("hello there")
    h = llm._decode(ids, 0, lib.PYRT_OUT_EMBD_ALL, ctx=llm._embd_ctx)
    assert np.allclose(llm.embed(ids, normalize=False), h.mean(axis=0), atol=1e-5)


def test_embeddings_keep_the_chat_cache(llm):
    llm.create_completion(PROMPT, max_tokens=2, temperature=0)
    before = list(llm._tokens)
    llm.embed("something else entirely")
    assert llm._tokens == before
    out = llm.create_completion(PROMPT, max_tokens=2, temperature=0)
    assert out["usage"]["prompt_tokens_details"]["cached_tokens"] == 4


def test_create_embedding_shapes(llm):
    out = llm.create_embedding(["a", "b"])
    assert out["object"] == "list" and [d["index"] for d in out["data"]] == [0, 1]
    assert out["usage"]["prompt_tokens"] == 2
    b64 = llm.create_embedding("a", encoding_format="base64")["data"][0]["embedding"]
    import base64
    assert np.allclose(np.frombuffer(base64.b64decode(b64), "<f4"), out["data"][0]["embedding"])


@pytest.mark.parametrize("bad", ["", [], [""], [1.5], [[10**9]], {"a": 1}, None])
def test_embedding_bad_input(llm, bad):
    with pytest.raises((ValueError, TypeError)):
        llm.embed(bad)


def test_embedding_truncation(smollm2_path):
    with pyrt.Llama(str(smollm2_path), n_ctx=16) as small:
        text = "word " * 40
        assert len(small.embed(text)) == small.n_embd()           # cut to n_ctx
        with pytest.raises(pyrt.ContextFullError):
            small.embed(text, truncate=False)


# ---- state ---------------------------------------------------------------------------------------

def test_save_and_load_state(llm, tmp_path):
    prompt = llm.tokenize("Once upon a time, there was a little")
    llm.eval_prefix(prompt)
    state = llm.save_state(note="hi")
    assert state.tokens == prompt and state.extra == {"note": "hi"}
    expect = llm.create_completion(prompt, max_tokens=8, temperature=0)["choices"][0]["text"]
    path = tmp_path / "s.state"
    state.save(path)
    llm.reset()
    llm.create_completion("Unrelated text to overwrite the cache", max_tokens=3, temperature=0)
    llm.load_state(LlamaState.load(path))
    assert llm.n_tokens() == len(prompt)
    out = llm.create_completion(prompt, max_tokens=8, temperature=0)
    assert out["choices"][0]["text"] == expect
    # the whole prompt came from the loaded cache (the last token is re-evaluated for logits)
    assert out["usage"]["prompt_tokens_details"]["cached_tokens"] == len(prompt) - 1


def test_load_state_rejects_bad_states(llm):
    state = llm.save_state()
    with pytest.raises(ValueError, match="different model"):
        llm.load_state(LlamaState(state.tokens, state.kv, state.n_ctx, "0" * 32))
    with pytest.raises(ValueError):
        llm.load_state(LlamaState(state.tokens + [1], state.kv, state.n_ctx, state.model_fingerprint))
    with pytest.raises(TypeError):
        llm.load_state(b"not a state")
    data = state.to_bytes()
    for bad in (b"", b"garbage" * 10, data[:-1], data[:20], b"PYRTSTATE1\n" + b"\xff" * 8 + data[19:]):
        with pytest.raises(ValueError):
            LlamaState.from_bytes(bad)


def test_accessors(llm):
    assert llm.n_ctx() == 512 and llm.n_vocab() == 49152 and llm.n_embd() == 576
    assert llm.token_eos() == 2 and llm.token_bos() == 1
    assert llm.metadata["general.architecture"] == "llama"
    assert len(llm.model_fingerprint) == 32
