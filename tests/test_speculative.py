"""Speculative decoding (pyrt/speculative.py): drafts verified in batches give exactly the
tokens plain decoding gives, greedy and sampled, on SmolLM2 and Gemma-3."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import public_prompts
from pyrt import Llama
from pyrt._native import lib
from pyrt.generate import generate_tokens
from pyrt.model import Context, Model
from pyrt.sampling import SamplingParams
from pyrt.speculative import DraftModel, LlamaPromptLookupDecoding, PromptLookup, Speculator

CODE = '''def mean(xs):
    total = 0
    for x in xs:
        total += x
    return total / len(xs)

def variance(xs):
    m = mean(xs)
    total = 0
    for x in xs:
        total += (x - m) ** 2
    return total / len(xs)
'''
# input-grounded prompts (drafts from the prompt pay off) and free-form ones (they rarely do)
GROUNDED = [f"Rewrite this Python code with type hints:\n\n{CODE}",
            f"Copy this code exactly, then explain it in one sentence:\n\n{CODE}",
            "Extract the names from: 'Alice met Bob and Carol in Paris; later Bob met Dave.' "
            "Answer as a list of names."]
PARAMS = {
    "greedy": SamplingParams(temperature=0.0),
    "sampled": SamplingParams(temperature=0.9, top_k=50, top_p=0.9, min_p=0.02, seed=1234),
    "penalties": SamplingParams(temperature=0.7, repeat_penalty=1.3, frequency_penalty=0.2,
                                presence_penalty=0.1, seed=99),
}


# ---- the drafter and the controller (no model) ------------------------------------------------

def test_lookup_proposes_the_continuation_of_the_longest_recent_match():
    pl = PromptLookup(max_ngram=3, min_ngram=1)
    h = [1, 2, 3, 4, 5, 9, 2, 3, 7, 8, 1, 2, 3]
    # "1 2 3" occurred at 0 (-> 4 5 9); "2 3" more recently at 6 (-> 7 8), but longer wins
    assert pl.propose(h, 3) == [4, 5, 9]
    assert pl.propose(h, 1) == [4]
    assert pl.propose([5, 6, 7, 8], 4) == []                 # nothing recurs
    assert pl.propose([4, 1, 4, 2, 4], 2) == [2, 4]          # 1-gram, most recent occurrence
    assert pl.propose([1, 2, 3], 0) == []
    with pytest.raises(ValueError, match="n-gram"):
        PromptLookup(max_ngram=0)
    # the defaults (4 down to 2) do not guess from a single recurring token
    assert PromptLookup().propose([4, 1, 4, 2, 4], 2) == []
    assert PromptLookup().propose([7, 1, 2, 3, 4, 5, 9, 1, 2, 3, 4], 2) == [5, 9]
    assert LlamaPromptLookupDecoding(max_ngram_size=1).propose([4, 1, 4, 2, 4], 2) == [2, 4]


def test_lookup_equals_a_scan_from_the_latest_start():
    """The vectorized search proposes what a plain scan (longest n first, latest start
    first) proposes."""
    def scan(h, k, mx, mn):
        for n in range(min(mx, len(h) - 1), mn - 1, -1):
            for s in range(len(h) - n - 1, -1, -1):
                if h[s:s + n] == h[len(h) - n:]:
                    return h[s + n:s + n + k]
        return []
    rng = np.random.default_rng(5)
    for _ in range(500):
        h = rng.integers(0, int(rng.integers(2, 6)), int(rng.integers(0, 40))).tolist()
        k = int(rng.integers(1, 5))
        for mx, mn in ((3, 1), (4, 2), (1, 1)):
            assert PromptLookup(mx, mn).propose(h, k) == (scan(h, k, mx, mn) if len(h) >= 2 else [])


def test_lookup_match_reports_where_and_how_long():
    """match(): the continuation's start and the matched length; bounded by max_ngram, a
    continuation must follow, and the suffix may overlap its earlier occurrence."""
    pl = PromptLookup(max_ngram=4, min_ngram=2)
    assert pl.match([]) == (0, 0) and pl.match([3]) == (0, 0)
    assert pl.match([1, 2, 3, 4]) == (0, 0)                     # nothing recurs
    assert pl.match([5, 1, 2, 9, 1, 2]) == (3, 2)               # "1 2" at 1..2 -> 9 at 3
    assert pl.match([1, 2, 3, 4, 5, 1, 2, 3, 4, 5]) == (5, 4)   # capped at max_ngram
    assert pl.match([7, 7, 7, 7, 7]) == (4, 4)                  # overlapping occurrence
    assert pl.match([4, 1, 4]) == (0, 0)                        # 1-gram below min_ngram
    assert PromptLookup(min_ngram=1).match([4, 1, 4]) == (1, 1)


def test_lookup_by_match_drafts_as_far_as_the_match_supports():
    """by_match: after a match of n tokens at most n - 1 drafted (at least 1); without it the
    whole k (llama-cpp-python's class keeps that rule)."""
    h = [9, 1, 2, 3, 4, 5, 6, 7, 8, 0, 3, 4]                    # "3 4" (n=2) -> 5 6 7 ...
    assert PromptLookup(by_match=True).propose(h, 3) == [5]
    assert PromptLookup().propose(h, 3) == [5, 6, 7]
    h3 = [9, 2, 3, 4, 5, 6, 7, 8, 0, 2, 3, 4]                   # n=3 -> two tokens
    assert PromptLookup(by_match=True).propose(h3, 3) == [5, 6]
    assert PromptLookup(by_match=True).propose(h3, 1) == [5]    # k still bounds it
    h4 = [1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 2, 3, 4]                # n=4 -> the full k
    assert PromptLookup(by_match=True).propose(h4, 3) == [5, 6, 7]
    assert PromptLookup(min_ngram=1, by_match=True).propose([4, 1, 4], 3) == [1]    # n=1: one
    assert PromptLookup(by_match=True).propose(h4, 0) == []
    assert not LlamaPromptLookupDecoding().by_match


def test_lookup_by_match_equals_a_bounded_scan():
    def scan(h, k, mx, mn):
        for n in range(min(mx, len(h) - 1), mn - 1, -1):
            for s in range(len(h) - n - 1, -1, -1):
                if h[s:s + n] == h[len(h) - n:]:
                    return h[s + n:s + n + min(k, max(1, n - 1))]
        return []
    rng = np.random.default_rng(7)
    for _ in range(500):
        h = rng.integers(0, int(rng.integers(2, 6)), int(rng.integers(0, 40))).tolist()
        k = int(rng.integers(1, 5))
        for mx, mn in ((3, 1), (4, 2), (6, 2)):
            assert PromptLookup(mx, mn, by_match=True).propose(h, k) == scan(h, k, mx, mn)


class _Fixed:
    name = "fixed"

    def __init__(self, out):
        self.out = out

    def propose(self, history, k):
        return self.out[:k]

    def close(self):
        pass


def test_speculator_adapts_and_backs_off():
    sp = Speculator(_Fixed([1] * 64), max_draft=16, k=4, grow_max=6)
    assert len(sp.propose([0], room=100)) == 4
    sp.record(4, 4)                                   # all accepted: longer drafts
    assert sp.k == 6
    sp.record(6, 6)
    assert sp.k == 6                                  # up to grow_max
    assert len(sp.propose([0], room=3)) == 3          # never past the room left
    for _ in range(4):                                # drafts keep failing: shorter, then a pause
        sp.record(sp.k, 0)
    assert sp.k == 1
    assert sp.propose([0], room=100) == []            # paused
    paused = 1
    while sp.propose([0], room=100) == []:
        paused += 1
        assert paused < 100
    assert paused >= 4
    assert (sp.stats.n_calls, sp.stats.n_accepted) == (6, 10)
    with pytest.raises(ValueError, match="draft length"):
        Speculator(_Fixed([]), max_draft=0)
    with pytest.raises(ValueError, match="growth limit"):
        Speculator(_Fixed([]), grow_max=0)
    sp = Speculator(_Fixed([1] * 64))                 # default: drafts grow to 3 tokens
    for _ in range(3):
        sp.record(sp.k, sp.k)
    assert sp.k == 3
    assert Speculator(_Fixed([1] * 64), k=8).k == 8   # a longer start asked for is kept


# ---- per-token numerics: the verifier sees plain decoding's logits ---------------------------

@pytest.fixture(scope="module", params=["smollm2", "gemma3"])
def model_path(request, smollm2_path, gemma3_path):
    return {"smollm2": smollm2_path, "gemma3": gemma3_path}[request.param]


@pytest.fixture(scope="session")
def gemma3_path():
    from pyrt.registry import ensure_model
    return ensure_model("gemma3-270m")


def test_per_token_numerics_reproduce_single_token_decoding(model_path):
    m = Model(model_path)
    try:
        ctx = Context(m, 256, 2)
        prompt = m.tokenizer.tokenize("The capital of France is Paris. The capital of Italy is")
        first = ctx.decode(prompt, 0, lib.PYRT_OUT_LOGITS_LAST, len(prompt))
        seq, singles, pos = [int(np.argmax(first))], [], len(prompt)
        for _ in range(12):
            row = ctx.decode([seq[-1]], pos, lib.PYRT_OUT_LOGITS_LAST)
            singles.append(row)
            seq.append(int(np.argmax(row)))
            pos += 1
        ctx.truncate(len(prompt))
        batch = ctx.decode(seq[:12], len(prompt), lib.PYRT_OUT_LOGITS_ALL, lib.PYRT_NUMERICS_PER_TOKEN)
        np.testing.assert_array_equal(batch, np.array(singles))
        ctx.truncate(len(prompt))
        shaped = ctx.decode(seq[:12], len(prompt), lib.PYRT_OUT_LOGITS_ALL)
        if model_path.name.startswith("gemma"):  # batch arithmetic differs: the test can fail
            assert not np.array_equal(shaped, np.array(singles))
        with pytest.raises(Exception, match="n_shape -2"):
            ctx.decode(seq[:2], len(prompt), lib.PYRT_OUT_LOGITS_ALL, -2)
        ctx.close()
    finally:
        m.close()


# ---- same tokens as plain decoding ----------------------------------------------------------

def _both(llm, toks, params, speculator, max_tokens=64):
    llm.reset()
    plain = list(generate_tokens(llm, toks, params, max_tokens=max_tokens))
    llm.reset()
    spec = list(generate_tokens(llm, toks, params, max_tokens=max_tokens, speculator=speculator))
    return plain, spec


@pytest.fixture(scope="module")
def llm(model_path):
    with Llama(model_path, n_ctx=2048, n_threads=2) as llm:
        yield llm


@pytest.mark.parametrize("mode", sorted(PARAMS))
def test_lookup_gives_the_plain_tokens(llm, mode):
    prompts = GROUNDED[:2] + public_prompts()[:2]
    drafted = accepted = 0
    for text in prompts:
        toks = (llm.chat_tokens([{"role": "user", "content": text}]) if llm.chat_template
                else llm.tokenize(text))
        sp = Speculator(PromptLookup(min_ngram=1))      # 1-grams too: drafts even under penalties
        plain, spec = _both(llm, toks, PARAMS[mode], sp, max_tokens=40)
        assert spec == plain, text
        assert len(llm._tokens) == llm._ctx.n_past       # no unconfirmed draft left in the cache
        drafted += sp.stats.n_drafted
        accepted += sp.stats.n_accepted
    assert drafted > 0                                   # the verifier was exercised
    if mode == "greedy":                                 # and accepted drafts (penalties discourage copying)
        assert accepted > 0


def test_speculative_cache_is_reused_like_plain(llm):
    toks = llm.tokenize(GROUNDED[0])
    params = PARAMS["greedy"]
    first = list(generate_tokens(llm, toks, params, max_tokens=40,
                                 speculator=Speculator(PromptLookup())))
    # a follow-up that extends the conversation reuses the cache the speculative run left
    follow = toks + first + llm.tokenize(" And once more:", add_bos=False)
    again = list(generate_tokens(llm, follow, params, max_tokens=24))
    llm.reset()
    fresh = list(generate_tokens(llm, follow, params, max_tokens=24))
    assert again == fresh


def test_max_tokens_and_stop_inside_a_draft(llm):
    toks = llm.tokenize(GROUNDED[1])
    for n in (1, 2, 9):
        plain, spec = _both(llm, toks, PARAMS["greedy"], Speculator(PromptLookup(), k=8), max_tokens=n)
        assert spec == plain and len(spec) <= n


def test_stats_are_recorded(llm):
    toks = llm.tokenize(GROUNDED[1])
    llm.reset()
    from pyrt.generate import stream_generate
    sp = Speculator(PromptLookup())
    text = "".join(p.text for p in stream_generate(llm, toks, PARAMS["greedy"], max_tokens=48,
                                                   speculator=sp))
    assert text
    st = llm.last_stats
    assert st["drafted_n"] == sp.stats.n_drafted and st["accepted_n"] == sp.stats.n_accepted
    assert 0 <= st["accepted_n"] <= st["drafted_n"]


# ---- draft model ----------------------------------------------------------------------------

def test_draft_model_gives_the_plain_tokens(smollm2_q8_0_path, smollm2_q4_0_path):
    with Llama(smollm2_q8_0_path, n_ctx=1024, n_threads=2) as target:
        for mode, text in (("greedy", GROUNDED[0]), ("sampled", public_prompts()[0])):
            if True:
                toks = target.chat_tokens([{"role": "user", "content": text}])
                sp = Speculator(DraftModel(smollm2_q4_0_path, target))
                try:
                    plain, spec = _both(target, toks, PARAMS[mode], sp, max_tokens=48)
                finally:
                    sp.close()
                assert spec == plain
                assert sp.stats.n_accepted > 0


def test_draft_model_must_share_the_vocabulary(smollm2_path, gemma3_path):
    with Llama(smollm2_path, n_ctx=256, n_threads=1) as target:
        with pytest.raises(ValueError, match="draft model"):
            DraftModel(gemma3_path, target)


# ---- surfaces -------------------------------------------------------------------------------

def test_api_speculative_argument(smollm2_path):
    from pyrt import LlamaPromptLookupDecoding
    with Llama(smollm2_path, n_ctx=1024, n_threads=2, seed=5) as llm:
        msgs = [{"role": "user", "content": GROUNDED[0]}]
        a = llm.create_chat_completion(msgs, max_tokens=40, temperature=0.0)
        b = llm.create_chat_completion(msgs, max_tokens=40, temperature=0.0, speculative="lookup")
        assert a["choices"][0]["message"]["content"] == b["choices"][0]["message"]["content"]
        assert llm.last_stats["drafted_n"] > 0
        c = llm.create_completion(GROUNDED[1], max_tokens=24, temperature=0.7, seed=3)
        d = llm.create_completion(GROUNDED[1], max_tokens=24, temperature=0.7, seed=3, speculative="lookup")
        assert c["choices"][0]["text"] == d["choices"][0]["text"]
        toks = llm.tokenize(GROUNDED[1])
        assert list(llm.generate(toks, max_tokens=16, temperature=0.0)) == \
            list(llm.generate(toks, max_tokens=16, temperature=0.0, speculative="lookup"))
        with pytest.raises(ValueError, match="needs a draft model"):
            llm.create_completion("x", max_tokens=1, speculative="draft")
        with pytest.raises(ValueError, match="speculative must be"):
            llm.create_completion("x", max_tokens=1, speculative="medusa")
    # llama-cpp-python's spelling: a prompt-lookup object as the draft model
    with Llama(smollm2_path, n_ctx=512, n_threads=2,
               draft_model=LlamaPromptLookupDecoding(num_pred_tokens=4)) as llm:
        llm.create_completion(GROUNDED[1], max_tokens=16, temperature=0.0)
        assert llm.last_stats["drafted_n"] > 0
    with pytest.raises(ValueError, match="draft_max"):
        Llama(smollm2_path, n_ctx=64, draft_max=0)


def test_draft_max_sets_how_far_drafts_grow(smollm2_path):
    """Default: drafts grow to 3 tokens; draft_max=N lets them grow to N (and no further);
    LlamaPromptLookupDecoding(num_pred_tokens) bounds an explicit draft_max."""
    with Llama(smollm2_path, n_ctx=64, n_threads=1) as llm:
        sp = llm._speculator("lookup")
        assert (sp.max_draft, sp.grow_max) == (16, 3)
    with Llama(smollm2_path, n_ctx=64, n_threads=1, draft_max=8) as llm:
        sp = llm._speculator("lookup")
        assert (sp.max_draft, sp.grow_max) == (8, 8)
        for _ in range(8):
            sp.record(sp.k, sp.k)           # everything accepted: the draft grows
        assert sp.k == 8
    with Llama(smollm2_path, n_ctx=64, n_threads=1, draft_max=8,
               draft_model=LlamaPromptLookupDecoding(num_pred_tokens=5)) as llm:
        assert llm._speculator(None).max_draft == 5


def test_own_lookup_drafts_by_match(smollm2_path):
    """speculative="lookup" bounds drafts by the match; llama-cpp-python's object keeps its rule."""
    from pyrt import LlamaPromptLookupDecoding
    with Llama(smollm2_path, n_ctx=64, n_threads=1) as llm:
        assert llm._speculator("lookup").drafter.by_match
    with Llama(smollm2_path, n_ctx=64, n_threads=1,
               draft_model=LlamaPromptLookupDecoding(num_pred_tokens=4)) as llm:
        assert not llm._speculator(None).drafter.by_match


def test_cli_lookup_prints_the_plain_text(smollm2_path, capsys):
    from pyrt.cli import main
    args = ["generate", "-m", str(smollm2_path), "-n", "24", "--temp", "0", "-c", "512", GROUNDED[1]]
    assert main(args) == 0
    plain = capsys.readouterr().out
    assert main(args + ["--lookup", "-v"]) == 0
    cap = capsys.readouterr()
    assert cap.out == plain
    assert "drafted" in cap.err


def test_server_and_repl_accept_the_speculative_field():
    from pyrt.repl import _validate
    from pyrt.server import APIError, _common
    assert _common({"speculative": "lookup"})["speculative"] == "lookup"
    assert "speculative" not in _common({})
    with pytest.raises(APIError) as e:
        _common({"speculative": "medusa"})
    assert e.value.param == "speculative"
    assert _validate({"speculative": "lookup"}) is None
    assert "lookup, draft or off" in _validate({"speculative": "fast"})
