"""Sampler (csrc/core/sampler.c + pyrt/sampling.py): the llama.cpp chain, seeded
determinism, distributions, penalties, bias and parameter validation.

Statistical tests use fixed seeds, so they are deterministic; their bounds
are loose enough for a correct sampler (p < 1e-6 of failing by chance for
some seed) yet fail for a wrong distribution."""
from __future__ import annotations

import math

import numpy as np
import pytest

from pyrt._native import ffi, lib
from pyrt.sampling import Sampler, SamplingParams

OFF = dict(top_k=0, top_p=1.0, min_p=0.0, typical_p=1.0)   # all filters off


def make(n_vocab: int, **kw) -> Sampler:
    kw.setdefault("seed", 1234)
    return Sampler(SamplingParams(**kw), n_vocab)


def draws(s: Sampler, logits, n: int) -> np.ndarray:
    logits = np.asarray(logits, dtype=np.float32)
    return np.array([s.sample(logits) for _ in range(n)])


def softmax(x, t: float = 1.0) -> np.ndarray:
    z = np.asarray(x, dtype=np.float64) / t
    e = np.exp(z - z.max())
    return e / e.sum()


def chi2(counts: np.ndarray, probs: np.ndarray) -> float:
    n = counts.sum()
    keep = probs > 0
    assert counts[~keep].sum() == 0, "drew a token of probability 0"
    exp = n * probs[keep]
    return float((((counts[keep] - exp) ** 2) / exp).sum())


# chi-square critical values at p = 1e-6 for df = 1..15
CHI2_1E6 = [23.9, 27.6, 30.7, 33.4, 35.9, 38.3, 40.5, 42.7, 44.8, 46.9, 48.8, 50.8, 52.7, 54.6, 56.4]


def assert_matches(samples: np.ndarray, probs: np.ndarray) -> None:
    counts = np.bincount(samples, minlength=len(probs))
    df = int((probs > 0).sum()) - 1
    stat = chi2(counts, probs)
    assert stat < CHI2_1E6[df - 1], (stat, counts, probs * len(samples))


# ---- greedy ------------------------------------------------------------------


def test_greedy_is_argmax_with_lowest_id_on_ties():
    rng = np.random.default_rng(0)
    s = make(100, temperature=0.0)
    for _ in range(50):
        x = rng.standard_normal(100).astype(np.float32)
        assert s.sample(x) == int(np.argmax(x))
    x = np.zeros(100, np.float32)
    x[[7, 3, 55]] = 5.0
    assert s.sample(x) == 3
    assert make(4, temperature=0.0).sample(np.full(4, -2.0, np.float32)) == 0


def test_greedy_ignores_seed():
    x = np.random.default_rng(1).standard_normal(1000).astype(np.float32)
    outs = {make(1000, temperature=0.0, seed=seed).sample(x) for seed in range(20)}
    assert outs == {int(np.argmax(x))}


def test_top_k_1_is_greedy():
    rng = np.random.default_rng(2)
    s = make(500, temperature=1.5, top_k=1, top_p=1.0, min_p=0.0)
    for _ in range(100):
        x = rng.standard_normal(500).astype(np.float32)
        assert s.sample(x) == int(np.argmax(x))
    x = np.zeros(500, np.float32)
    x[[400, 9]] = 1.0
    assert s.sample(x) == 9
    x[[10, 13]] = 2.0     # a tie inside one 8-wide block of the vector scan
    assert s.sample(x) == 10


# ---- determinism -------------------------------------------------------------


def test_same_seed_same_sequence_different_seed_different():
    flat = np.zeros(1000, np.float32)
    a = draws(make(1000, seed=42, **OFF), flat, 200)
    b = draws(make(1000, seed=42, **OFF), flat, 200)
    c = draws(make(1000, seed=43, **OFF), flat, 200)
    assert (a == b).all()
    assert (a != c).sum() > 150


def test_determinism_with_default_chain_and_changing_logits():
    rng = np.random.default_rng(3)
    rows = rng.standard_normal((100, 2000)).astype(np.float32) * 3

    def run(seed):
        s = make(2000, seed=seed, temperature=1.0, repeat_penalty=1.1)   # defaults otherwise
        out = []
        for r in rows:
            t = s.sample(r)
            s.accept(t)
            out.append(t)
        return out

    assert run(7) == run(7)
    assert run(7) != run(8)


def test_reset_replays_and_reseeds():
    flat = np.zeros(300, np.float32)
    s = make(300, seed=5, **OFF)
    a = draws(s, flat, 50)
    s.reset()
    assert (draws(s, flat, 50) == a).all()
    s.reset(seed=6)
    assert (draws(s, flat, 50) == draws(make(300, seed=6, **OFF), flat, 50)).all()


def test_seed_none_is_random():
    flat = np.zeros(10_000, np.float32)
    a = draws(make(10_000, seed=None, **OFF), flat, 20)
    b = draws(make(10_000, seed=None, **OFF), flat, 20)
    assert (a != b).any()


def test_full_64bit_seed_accepted():
    flat = np.zeros(50, np.float32)
    a = draws(make(50, seed=2**64 - 1, **OFF), flat, 30)
    b = draws(make(50, seed=2**63 - 1, **OFF), flat, 30)
    assert (a != b).any()


# ---- distributions -----------------------------------------------------------

LOGITS8 = np.array([1.0, 0.5, 0.0, -0.5, 2.0, -1.0, 0.3, 1.2], np.float32)


@pytest.mark.parametrize("temp", [1.0, 0.5, 2.0])
def test_frequencies_match_softmax(temp):
    s = make(8, seed=11, temperature=temp, **OFF)
    assert_matches(draws(s, LOGITS8, 20_000), softmax(LOGITS8, temp))


def test_frequencies_match_softmax_across_blocks():
    # 1000 candidates: the draw skips whole blocks of partial sums before
    # walking single tokens; likely tokens sit in early, middle and tail blocks
    x = np.full(1000, -30.0, np.float32)
    hot = np.array([3, 64, 127, 500, 700, 958, 990, 999])
    x[hot] = np.linspace(-1.0, 1.0, len(hot)).astype(np.float32)
    got = draws(make(1000, seed=23, temperature=1.0, **OFF), x, 20_000)
    assert set(got.tolist()) <= set(hot.tolist())
    assert_matches(np.searchsorted(hot, got), softmax(x[hot]))


def test_temperature_orders_entropy():
    def entropy(t):
        c = np.bincount(draws(make(8, seed=12, temperature=t, **OFF), LOGITS8, 5000), minlength=8)
        p = c / c.sum()
        return -(p[p > 0] * np.log(p[p > 0])).sum()

    assert entropy(0.3) < entropy(1.0) < entropy(3.0)


@pytest.mark.parametrize("k", [5, 600])   # 600 takes the quickselect path
def test_top_k_yields_only_the_k_best(k):
    rng = np.random.default_rng(4)
    x = (rng.standard_normal(3000) * 0.1).astype(np.float32)
    s = make(3000, seed=13, temperature=1.0, top_k=k, top_p=1.0, min_p=0.0)
    got = set(draws(s, x, 20 * k).tolist())
    best = set(np.argsort(-x, kind="stable")[:k].tolist())
    assert got <= best
    assert len(got) > 0.9 * k


@pytest.mark.parametrize("k", [5, 600])
def test_top_k_ties_keep_lowest_ids(k):
    s = make(3000, seed=22, temperature=1.0, top_k=k, top_p=1.0, min_p=0.0)
    got = set(draws(s, np.zeros(3000, np.float32), 20 * k).tolist())
    assert got <= set(range(k)) and len(got) > 0.9 * k


def test_top_k_distribution_is_renormalised():
    s = make(8, seed=14, temperature=1.0, top_k=3, top_p=1.0, min_p=0.0)
    p = softmax(LOGITS8)
    p[np.argsort(-LOGITS8)[3:]] = 0
    assert_matches(draws(s, LOGITS8, 20_000), p / p.sum())


@pytest.mark.parametrize("top_p,nucleus", [(0.4, {0}), (0.7, {0, 1}), (0.8, {0, 1, 2}), (0.95, {0, 1, 2, 3})])
def test_top_p_keeps_minimal_nucleus(top_p, nucleus):
    probs = np.array([0.5, 0.25, 0.15, 0.06, 0.04])
    x = np.log(probs).astype(np.float32)
    s = make(5, seed=15, temperature=1.0, top_k=0, top_p=top_p, min_p=0.0)
    got = draws(s, x, 5000)
    assert set(got.tolist()) == nucleus
    p = np.where(np.isin(np.arange(5), list(nucleus)), probs, 0)
    assert_matches(got, p / p.sum())


def test_top_p_large_vocab_without_top_k():
    # a nucleus of ~270 tokens among 5000: more than the first selection round
    n = 5000
    x = np.full(n, -3.0, np.float32)
    hi = np.random.default_rng(5).permutation(n)[:300]
    x[hi] = (np.arange(300) * 1e-3).astype(np.float32)
    order = np.argsort(-x.astype(np.float64), kind="stable")
    p = softmax(x)[order]
    cum = np.cumsum(p)
    top_p = 0.56
    size = int(np.searchsorted(cum, top_p) + 1)
    assert np.abs(cum - top_p).min() > 1e-4 and size > 256
    s = make(n, seed=16, temperature=1.0, top_k=0, top_p=top_p, min_p=0.0)
    got = set(draws(s, x, 20_000).tolist())
    assert got == set(order[:size].tolist())


@pytest.mark.parametrize("min_p,kept", [(0.2, {0, 1}), (0.1, {0, 1, 2}), (0.5, {0}), (0.01, {0, 1, 2, 3, 4})])
def test_min_p_drops_tokens_below_fraction_of_max(min_p, kept):
    x = np.array([0.0, -1.0, -2.0, -3.0, -4.0], np.float32)   # p_i / p_max = e^-i
    s = make(5, seed=17, temperature=1.0, top_k=0, top_p=1.0, min_p=min_p)
    got = draws(s, x, 5000)
    assert set(got.tolist()) == kept
    p = np.where(np.isin(np.arange(5), list(kept)), softmax(x), 0)
    assert_matches(got, p / p.sum())


def test_min_p_applies_before_temperature():
    # llama.cpp filters on the untempered logits: a high temperature must not
    # bring back a token that min_p removed
    x = np.array([0.0, -1.0, -3.0], np.float32)
    s = make(3, seed=18, temperature=5.0, top_k=0, top_p=1.0, min_p=0.2)
    assert set(draws(s, x, 3000).tolist()) == {0, 1}


def test_typical_keeps_the_locally_typical_token():
    # p = (.5, .3, .2): H = 1.03 nats; |-log p - H| = (.34, .17, .58) -> token 1
    # is the most typical, and its mass .3 already exceeds typical_p = .2
    x = np.log([0.5, 0.3, 0.2]).astype(np.float32)
    s = make(3, seed=19, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, typical_p=0.2)
    assert set(draws(s, x, 500).tolist()) == {1}
    s = make(3, seed=19, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, typical_p=0.7)
    assert set(draws(s, x, 2000).tolist()) == {0, 1}


def ref_chain_probs(x, *, top_k, typical_p, top_p, min_p, temperature):
    """float64 model of the llama.cpp chain; returns the final distribution
    and the smallest distance of any cut-off test from its threshold."""
    x = np.asarray(x, np.float64)
    ids = np.argsort(-x, kind="stable")
    margins = []
    if 0 < top_k < len(ids):
        ids = ids[:top_k]
    assert typical_p >= 1.0
    if top_p < 1.0:
        p = softmax(x[ids])
        cum = np.cumsum(p)
        margins.append(np.abs(cum - top_p).min())
        ids = ids[: int(np.searchsorted(cum, top_p) + 1)]
    if min_p > 0:
        thr = x[ids].max() + math.log(min_p)
        margins.append(np.abs(x[ids] - thr).min())
        ids = ids[x[ids] >= thr]
    out = np.zeros(len(x))
    out[ids] = softmax(x[ids], temperature)
    return out, min(margins, default=1.0)


def test_full_chain_matches_reference_distribution():
    x = np.random.default_rng(6).standard_normal(30).astype(np.float32) * 1.5
    kw = dict(top_k=12, top_p=0.9, min_p=0.1, temperature=0.7, typical_p=1.0)
    probs, margin = ref_chain_probs(x, **kw)
    assert margin > 1e-3 and 3 <= (probs > 0).sum() <= 15
    assert_matches(draws(make(30, seed=20, **kw), x, 20_000), probs)


# ---- penalties ---------------------------------------------------------------


def test_repeat_penalty_divides_positive_logits():
    x = np.array([2.0, 1.8, -1.0], np.float32)
    s = make(3, temperature=0.0, repeat_penalty=1.5)
    assert s.sample(x) == 0
    s.accept(0)
    assert s.sample(x) == 1   # 2.0 / 1.5 = 1.33 < 1.8
    s = make(3, temperature=0.0, repeat_penalty=1.05)
    s.accept(0)
    assert s.sample(x) == 0   # 2.0 / 1.05 = 1.90 > 1.8


def test_repeat_penalty_multiplies_negative_logits():
    x = np.array([-1.0, -1.2, -5.0], np.float32)
    s = make(3, temperature=0.0, repeat_penalty=1.5)
    s.accept(0)
    assert s.sample(x) == 1   # -1.0 * 1.5 = -1.5 < -1.2 (dividing would keep 0)


def test_frequency_penalty_scales_with_count():
    x = np.array([1.0, 0.5, 0.0], np.float32)
    s = make(3, temperature=0.0, frequency_penalty=0.2)
    s.accept(0)
    s.accept(0)
    assert s.sample(x) == 0   # 1.0 - 2 * 0.2 = 0.6 > 0.5
    s.accept(0)
    assert s.sample(x) == 1   # 1.0 - 3 * 0.2 = 0.4 < 0.5


def test_presence_penalty_ignores_count():
    x = np.array([1.0, 0.5, 0.0], np.float32)
    s = make(3, temperature=0.0, presence_penalty=0.45)
    for _ in range(5):
        s.accept(0)
    assert s.sample(x) == 0   # 1.0 - 0.45 = 0.55 > 0.5, however often seen
    s = make(3, temperature=0.0, presence_penalty=0.55)
    s.accept(0)
    assert s.sample(x) == 1


def test_penalty_window():
    x = np.array([1.0, 0.9, 0.0, 0.0, 0.0], np.float32)
    for last_n, penalised in [(2, False), (3, True), (-1, True), (0, False)]:
        s = make(5, temperature=0.0, repeat_penalty=2.0, penalty_last_n=last_n)
        s.accept(0)
        s.accept(2)
        s.accept(3)
        assert s.sample(x) == (1 if penalised else 0), last_n


def test_whole_history_window():
    x = np.array([1.0, 0.9] + [0.0] * 8, np.float32)
    s = make(10, temperature=0.0, repeat_penalty=2.0, penalty_last_n=-1)
    s.accept(0)
    for i in range(1000):
        s.accept(2 + i % 8)
    assert s.sample(x) == 1     # token 0 is 1000 tokens back, still penalised


def test_ring_counts_follow_the_window():
    x = np.array([1.0, 0.9] + [0.0] * 8, np.float32)
    # 0.04 per occurrence: 3 in the window -> 0.88 (< 0.9, token 1 wins);
    # 2 in the window -> 0.92 (token 0 wins)
    s = make(10, temperature=0.0, frequency_penalty=0.04, penalty_last_n=4)
    for t in [0, 0, 0, 0, 0, 0, 2]:   # window: 0 0 0 2
        s.accept(t)
    assert s.sample(x) == 1
    s.accept(3)                       # window: 0 0 2 3
    assert s.sample(x) == 0


def test_reset_clears_history():
    x = np.array([2.0, 1.8], np.float32)
    s = make(2, temperature=0.0, repeat_penalty=1.5)
    s.accept(0)
    assert s.sample(x) == 1
    s.reset()
    assert s.sample(x) == 0


def test_penalties_apply_before_filters():
    # with top_k=1 the penalised token must lose its place to the runner-up
    x = np.array([2.0, 1.8, 0.0], np.float32)
    s = make(3, temperature=1.0, top_k=1, repeat_penalty=1.5)
    s.accept(0)
    assert set(draws(s, x, 100).tolist()) == {1}


# ---- logit bias ----------------------------------------------------------------


def test_logit_bias_bans_and_forces():
    x = np.array([3.0, 1.0, 0.0, -1.0], np.float32)
    assert make(4, temperature=0.0, logit_bias={0: -math.inf}).sample(x) == 1
    s = make(4, temperature=1.0, **OFF, logit_bias={0: -math.inf})
    assert 0 not in set(draws(s, x, 2000).tolist())
    s = make(4, temperature=1.0, **OFF, logit_bias={3: 100.0})
    assert set(draws(s, x, 500).tolist()) == {3}


def test_logit_bias_is_additive_and_reproduces_distribution():
    s = make(8, seed=21, temperature=1.0, **OFF, logit_bias={5: 2.0, 4: -1.5})
    y = LOGITS8.copy()
    y[5] += 2.0
    y[4] -= 1.5
    assert_matches(draws(s, LOGITS8, 20_000), softmax(y))


def test_all_tokens_banned_is_an_error():
    s = make(3, temperature=1.0, logit_bias={0: -math.inf, 1: -math.inf, 2: -math.inf})
    with pytest.raises(ValueError, match="-inf"):
        s.sample(np.zeros(3, np.float32))


# ---- NaN / inf logits --------------------------------------------------------------


@pytest.mark.parametrize("temp", [0.0, 1.0])
def test_nan_logits_are_minus_inf(temp):
    x = np.array([np.nan, 1.0, np.nan, 0.5], np.float32)
    s = make(4, temperature=temp, top_k=0, top_p=1.0, min_p=0.0)
    got = set(draws(s, x, 500).tolist())
    assert got <= {1, 3} and 1 in got


@pytest.mark.parametrize("temp", [0.0, 0.8])
@pytest.mark.parametrize("fill", [-np.inf, np.nan])
def test_all_masked_logits_raise(temp, fill):
    s = make(16, temperature=temp)
    with pytest.raises(ValueError, match="-inf or NaN"):
        s.sample(np.full(16, fill, np.float32))
    assert s.sample(np.arange(16, dtype=np.float32)) in range(16)   # still usable


def test_plus_inf_logit_wins():
    x = np.array([0.0, np.inf, 1.0], np.float32)
    assert make(3, temperature=0.0).sample(x) == 1
    assert set(draws(make(3, temperature=1.0, **OFF), x, 200).tolist()) == {1}


def test_logits_not_modified():
    x = np.random.default_rng(7).standard_normal(100).astype(np.float32)
    x[3] = np.nan
    before = x.copy()
    s = make(100, temperature=0.9, repeat_penalty=1.3, logit_bias={1: 2.0})
    s.accept(5)
    s.sample(x)
    np.testing.assert_array_equal(x, before)


# ---- validation ------------------------------------------------------------------


@pytest.mark.parametrize("name,value", [
    ("temperature", -0.1), ("temperature", math.nan), ("temperature", math.inf),
    ("top_k", -1), ("top_k", 2.5),
    ("top_p", -0.5), ("top_p", 1.5), ("top_p", math.nan),
    ("min_p", -0.1), ("min_p", 1.1),
    ("typical_p", 0.0), ("typical_p", 1.01),
    ("repeat_penalty", 0.0), ("repeat_penalty", -1.0),
    ("frequency_penalty", math.inf), ("presence_penalty", math.nan),
    ("penalty_last_n", -2), ("penalty_last_n", 1.5),
    ("seed", -1), ("seed", 2**64), ("seed", "7"),
])
def test_bad_parameter_names_itself(name, value):
    p = SamplingParams(**{name: value})
    with pytest.raises(ValueError, match=name):
        p.validate(100)
    with pytest.raises(ValueError, match=name):
        Sampler(p, 100)


@pytest.mark.parametrize("bias", [{100: 1.0}, {-1: 1.0}, {1: math.nan}, {1: math.inf}, {"a": 1.0}])
def test_bad_logit_bias(bias):
    with pytest.raises(ValueError, match="logit_bias"):
        Sampler(SamplingParams(logit_bias=bias), 100)


def test_bad_n_vocab():
    for n in (0, -5):
        with pytest.raises(ValueError, match="n_vocab"):
            Sampler(SamplingParams(), n)


def test_defaults_are_valid_and_match_llama_cpp_python():
    p = SamplingParams()
    p.validate(10)
    assert (p.temperature, p.top_k, p.top_p, p.min_p, p.typical_p, p.repeat_penalty) == (0.8, 40, 0.95, 0.05, 1.0, 1.0)


def test_bad_logits_array():
    s = make(10)
    with pytest.raises(ValueError, match="float32"):
        s.sample(np.zeros(10, np.float64))
    with pytest.raises(ValueError, match="shape"):
        s.sample(np.zeros(11, np.float32))
    with pytest.raises(ValueError, match="shape"):
        s.sample(np.zeros((1, 10), np.float32))
    with pytest.raises(ValueError, match="contiguous"):
        s.sample(np.zeros(20, np.float32)[::2])
    with pytest.raises(TypeError):
        s.sample([0.0] * 10)


def test_accept_out_of_range_and_closed_sampler():
    s = make(10)
    for t in (-1, 10, 2.0):
        with pytest.raises(ValueError, match="token"):
            s.accept(t)
    with make(10) as s2:
        s2.accept(3)
    with pytest.raises(ValueError, match="closed"):
        s2.sample(np.zeros(10, np.float32))
    s2.close()   # idempotent


# ---- the C ABI validates on its own ---------------------------------------------------


def _c_params(**kw):
    p = ffi.new("pyrt_sampler_params *")
    p.temperature, p.top_k, p.top_p, p.min_p, p.typical_p = 0.8, 40, 0.95, 0.05, 1.0
    p.repeat_penalty, p.penalty_last_n, p.seed = 1.1, 64, 1
    for k, v in kw.items():
        setattr(p, k, v)
    return p


def test_c_rejects_bad_arguments():
    out = ffi.new("pyrt_sampler **")
    E = lib.PYRT_ERR_INVALID_ARG
    assert lib.pyrt_sampler_create(ffi.NULL, 10, out) == E
    assert lib.pyrt_sampler_create(_c_params(), 10, ffi.NULL) == E
    assert lib.pyrt_sampler_create(_c_params(), 0, out) == E
    for bad in (dict(repeat_penalty=0.0), dict(penalty_last_n=-2), dict(temperature=math.nan),
                dict(top_p=math.nan), dict(frequency_penalty=math.inf)):
        assert lib.pyrt_sampler_create(_c_params(**bad), 10, out) == E, bad
    assert out[0] == ffi.NULL

    assert lib.pyrt_sampler_create(_c_params(), 10, out) == lib.PYRT_OK
    s = out[0]
    try:
        tok = ffi.new("int32_t *")
        logits = ffi.new("float[]", 10)
        assert lib.pyrt_sampler_accept(s, 10) == E
        assert lib.pyrt_sampler_accept(s, -1) == E
        assert lib.pyrt_sampler_accept(ffi.NULL, 1) == E
        assert lib.pyrt_sampler_sample(s, ffi.NULL, tok) == E
        assert lib.pyrt_sampler_sample(s, logits, ffi.NULL) == E
        assert lib.pyrt_sampler_sample(ffi.NULL, logits, tok) == E
        assert lib.pyrt_sampler_reset(ffi.NULL, 1) == E
        ids = ffi.new("int32_t[]", [3, 10])
        vals = ffi.new("float[]", [1.0, 1.0])
        assert lib.pyrt_sampler_set_bias(s, ids, vals, 2) == E
        assert lib.pyrt_sampler_set_bias(s, ffi.NULL, vals, 1) == E
        assert lib.pyrt_sampler_set_bias(s, ids, vals, -1) == E
        assert lib.pyrt_sampler_set_bias(s, ffi.NULL, ffi.NULL, 0) == lib.PYRT_OK
        assert lib.pyrt_sampler_sample(s, logits, tok) == lib.PYRT_OK
    finally:
        lib.pyrt_sampler_free(s)
    lib.pyrt_sampler_free(ffi.NULL)


# ---- Mirostat, DRY, XTC (llama.cpp's samplers) ------------------------------------------


def _mirostat_v2_reference(logits, t, mu):
    """Kept set and probabilities of Mirostat 2.0 at one step (llama.cpp's rule)."""
    p = softmax(logits, t)
    order = np.argsort(-p, kind="stable")
    ps = p[order]
    keep = max(1, int(np.sum(np.cumprod(-np.log2(ps) <= mu))))
    kept = ps[:keep] / ps[:keep].sum()
    return order[:keep], kept


def test_mirostat_v2_truncates_by_surprise_and_learns_mu():
    rng = np.random.default_rng(5)
    logits = (rng.standard_normal(300) * 2.5).astype(np.float32)
    tau, eta, t = 3.0, 0.3, 0.9
    s = make(300, temperature=t, mirostat_mode=2, mirostat_tau=tau, mirostat_eta=eta, seed=9)
    mu = s.mirostat_mu
    assert mu == pytest.approx(2 * tau)
    mus = []
    for _ in range(300):
        ids, kept = _mirostat_v2_reference(logits, t, mu)
        tok = s.sample(logits)
        assert tok in ids, (tok, ids, mu)
        surprise = -math.log2(kept[list(ids).index(tok)])
        mu = mu - eta * (surprise - tau)
        assert s.mirostat_mu == pytest.approx(mu, rel=1e-4, abs=1e-4)
        mus.append(mu)
    # the learned mu settles near the level where the average surprise is tau
    assert abs(np.mean(mus[100:]) - mus[-1]) < 2.0
    s.reset()
    assert s.mirostat_mu == pytest.approx(2 * tau)


def test_mirostat_v1_keeps_k_from_the_zipf_estimate():
    rng = np.random.default_rng(6)
    n = 2000
    logits = np.sort(rng.standard_normal(n) * 3)[::-1].astype(np.float32)
    tau, eta = 5.0, 0.1
    s = make(n, temperature=1.0, mirostat_mode=1, mirostat_tau=tau, mirostat_eta=eta, seed=3)
    p = softmax(logits)                  # already sorted: ids are ranks
    t_i = np.log(np.arange(2, 101) / np.arange(1, 100))
    b_i = np.log(p[:99] / p[1:100])
    s_hat = float((t_i * b_i).sum() / (t_i * t_i).sum())
    mu = 2 * tau
    for _ in range(100):
        eps = s_hat - 1
        k = max(1, int((eps * 2 ** mu / (1 - n ** -eps)) ** (1 / s_hat)))
        tok = s.sample(logits)
        assert tok < k + 1, (tok, k)
        kept = p[:k] / p[:k].sum()
        mu -= eta * (-math.log2(kept[tok]) - tau)
        assert s.mirostat_mu == pytest.approx(mu, rel=1e-3, abs=1e-3)


def _dry_reference(hist, n_vocab, mult, base, allowed, last_n, single_breakers=()):
    """DRY penalties by brute force: for each earlier position, the longest
    common suffix of the history and the history up to there (not reaching
    back past the last breaker); the token that followed gets the penalty."""
    h = list(hist[-last_n:]) if last_n > 0 else list(hist)
    n = len(h)
    out = np.zeros(n_vocab)
    if n <= allowed:
        return out
    rep_limit = n
    for i in range(n):                        # most recent breaker
        if h[n - 1 - i] in single_breakers:
            rep_limit = i
            break
    if rep_limit < allowed:
        return out
    best = {}
    for end in range(n - 1):                  # h[:end + 1] ends an earlier occurrence
        L = 0
        while L <= end and h[end - L] == h[n - 1 - L]:
            L += 1
        L = min(L, rep_limit)
        if L >= allowed:
            tok = h[end + 1]
            best[tok] = max(best.get(tok, -1), L)
    for tok, L in best.items():
        if tok in single_breakers:
            continue
        out[tok] = mult * base ** (L - allowed)
    return out


@pytest.mark.parametrize("seed", range(6))
def test_dry_penalties_match_a_brute_force_reference(seed):
    rng = np.random.default_rng(seed)
    V = 6
    hist = list(rng.integers(0, V, size=int(rng.integers(5, 60))))
    hist += hist[-int(rng.integers(2, 6)):]          # make a repeat likely
    allowed, last_n, mult, base = int(rng.integers(0, 4)), int(rng.integers(8, 70)), 0.8, 1.75
    breakers = (5,) if seed % 2 else ()
    # token V never occurs in the history, so it is never penalised: the probe
    s = make(V + 1, temperature=0.0, penalty_last_n=0, dry_multiplier=mult, dry_base=base,
             dry_allowed_length=allowed, dry_penalty_last_n=last_n,
             dry_breaker_tokens=[(b,) for b in breakers])
    for t in hist:
        s.accept(int(t))
    want = _dry_reference(hist, V, mult, base, allowed, last_n, breakers)
    assert want.any() or seed % 2          # the test has something to check
    # read each penalty back through greedy picks against the probe token,
    # set just below and just above where j's penalised logit lands
    for j in range(V):
        for delta, expect in ((0.02, V), (-0.02, j)):
            logits = np.full(V + 1, -1000.0, np.float32)
            logits[j] = 100.0
            logits[V] = 100.0 - want[j] + delta
            assert s.sample(logits) == expect, (j, delta, want, hist)


def test_dry_multi_token_breakers_from_strings():
    from pyrt.registry import ensure_model
    from pyrt.model import Model
    from pyrt.sampling import dry_breaker_sequences
    m = Model(ensure_model("smollm2-135m"))
    try:
        tok = m.tokenizer
        seqs = dry_breaker_sequences(["\n", "Question:"], tok)
        nl = tok.tokenize("\n", add_bos=False)
        assert (nl[0],) in seqs                          # a token holding "\n" is a breaker alone
        heads = {q[0] for q in seqs if len(q) > 1}
        assert heads, "a token that ends with the start of 'Question:' heads a longer breaker"
        assert all(len(q) <= 21 for q in seqs)
        assert dry_breaker_sequences(["\n", "Question:"], tok) is seqs   # cached
    finally:
        m.close()


def test_dry_is_off_at_its_neutral_values():
    logits = np.array([1.0, 0.9, 0.0, 0.0], np.float32)
    for kw in (dict(dry_multiplier=0.0), dict(dry_multiplier=1.0, dry_base=0.5),
               dict(dry_multiplier=1.0, dry_penalty_last_n=0)):
        s = make(4, temperature=0.0, **kw)
        for t in [0, 1, 0, 1, 0]:
            s.accept(t)
        assert s.sample(logits) == 0, kw


def test_xtc_removes_top_choices_but_the_least_likely_of_them():
    probs = np.array([0.45, 0.3, 0.15, 0.06, 0.04])
    logits = np.log(probs).astype(np.float32)
    s = make(5, temperature=1.0, **OFF, xtc_probability=1.0, xtc_threshold=0.1, seed=4)
    got = draws(s, logits, 4000)
    assert set(got) <= {2, 3, 4}
    assert_matches(got, np.array([0, 0, 0.15, 0.06, 0.04]) / 0.25)
    # probability 0.5: half of the steps are plain sampling
    s = make(5, temperature=1.0, **OFF, xtc_probability=0.5, xtc_threshold=0.1, seed=5)
    got = draws(s, logits, 4000)
    share_top = np.mean(got == 0)
    assert 0.5 * 0.45 - 0.04 < share_top < 0.5 * 0.45 + 0.04
    # threshold > 0.5 or probability 0: off
    for kw in (dict(xtc_probability=1.0, xtc_threshold=0.6), dict(xtc_probability=0.0)):
        s = make(5, temperature=1.0, **OFF, seed=6, **kw)
        assert_matches(draws(s, logits, 4000), probs / probs.sum())


@pytest.mark.parametrize("name,value", [
    ("mirostat_mode", 3), ("mirostat_tau", -1.0), ("mirostat_eta", math.nan), ("dry_multiplier", -1.0),
    ("dry_allowed_length", -1), ("dry_penalty_last_n", -2), ("dry_sequence_breakers", "\n"),
    ("xtc_probability", 1.5), ("xtc_threshold", -0.1),
])
def test_new_sampler_parameters_are_validated(name, value):
    with pytest.raises(ValueError, match=name):
        make(10, **{name: value})


def test_c_validates_the_new_parameters():
    out = ffi.new("pyrt_sampler **")
    E = lib.PYRT_ERR_INVALID_ARG
    for bad in (dict(mirostat=3), dict(mirostat_tau=math.nan), dict(dry_allowed_length=-1),
                dict(dry_penalty_last_n=-2), dict(xtc_threshold=math.inf)):
        assert lib.pyrt_sampler_create(_c_params(**bad), 10, out) == E, bad
    assert lib.pyrt_sampler_create(_c_params(dry_multiplier=1.0, dry_base=2.0, dry_penalty_last_n=8), 10,
                                   out) == lib.PYRT_OK
    s = out[0]
    try:
        toks = ffi.new("int32_t[]", [1, 2, 3])
        assert lib.pyrt_sampler_set_dry_breakers(s, toks, ffi.new("int32_t[]", [0]), 1) == E
        assert lib.pyrt_sampler_set_dry_breakers(s, ffi.new("int32_t[]", [1, 99]),
                                                 ffi.new("int32_t[]", [2]), 1) == E
        assert lib.pyrt_sampler_set_dry_breakers(s, toks, ffi.new("int32_t[]", [1, 2]), 2) == lib.PYRT_OK
        assert math.isnan(lib.pyrt_sampler_mirostat_mu(s))
    finally:
        lib.pyrt_sampler_free(s)


def test_dry_matches_llama_cpp_on_the_real_vocabulary(smollm2_path):
    """tests/data/dry_reference.json (scripts/dry_reference.py): llama.cpp's DRY penalties
    after real token histories, with its default breakers resolved by llama.cpp."""
    import json
    from pathlib import Path

    import pyrt
    from pyrt.sampling import dry_breaker_sequences
    ref = json.loads((Path(__file__).parent / "data" / "dry_reference.json").read_text())
    with pyrt.Llama(str(smollm2_path), n_ctx=16) as llm:
        tok = llm.tokenizer
        assert ref["n_vocab"] == llm.n_vocab()
        seqs = dry_breaker_sequences(ref["breakers"], tok)
        n_checked = 0
        for case in ref["cases"]:
            hist = case["history"]
            want = {int(k): v for k, v in case["penalties"].items()}
            s = make(ref["n_vocab"], temperature=0.0, penalty_last_n=0, dry_multiplier=case["multiplier"],
                     dry_base=case["base"], dry_allowed_length=case["allowed_length"],
                     dry_penalty_last_n=case["penalty_last_n"], dry_breaker_tokens=seqs)
            for t in hist:
                s.accept(t)
            probe = next(i for i in range(ref["n_vocab"]) if i not in set(hist))
            for t in sorted(set(hist) | set(want)):
                p = want.get(t, 0.0)
                for delta, expect in ((0.01 + 1e-4 * p, probe), (-0.01 - 1e-4 * p, t)):
                    logits = np.full(ref["n_vocab"], -1e4, np.float32)
                    logits[t] = 100.0
                    logits[probe] = 100.0 - p + delta
                    assert s.sample(logits) == expect, (case["history"][:8], t, p)
                n_checked += 1
    assert n_checked > 200 and sum(bool(c["penalties"]) for c in ref["cases"]) >= 15
