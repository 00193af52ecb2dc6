"""Every architecture pyrt runs, against llama.cpp (AVX2 build), on synthetic models.

tests/arch_models.py writes each model (random weights in llama.cpp's exact tensor layout);
tests/data/arch/<case>-<type>.npz holds llama.cpp's outputs on it (scripts/arch_reference.py
regenerates them). For each: logits at all 64 positions of one batch, and 32 greedy tokens.
"""
from __future__ import annotations

import numpy as np
import pytest

from arch_models import (ARCH_CASES, FEATURE_TENSORS, LONG_CTX, PARITY_N_CTX, WEIGHT_TYPES,
                         parity_tokens, write_arch_model)
from pyrt._native import lib
from pyrt.gguf_file import GGUFError
from pyrt.model import ARCHS, Context, Model, expected_tensors
from pathlib import Path

DATA = Path(__file__).parent / "data" / "arch"
# The scalar table is the portable reference for the SIMD kernels, not llama.cpp's x86
# arithmetic (its sums run in another order), so parity is asserted on the x86 tables.
needs_llamacpp_arithmetic = pytest.mark.skipif(
    lib.pyrt_kernels_active() == lib.PYRT_KERNELS_SCALAR,
    reason="PYRT_KERNELS=scalar does not reproduce llama.cpp's AVX2 arithmetic")
CASES = [(c, t) for c in ARCH_CASES for t in WEIGHT_TYPES]
# (case, weight type, context size): llama.cpp's references at the parity context, and at a
# larger one where that changes the model (phi3's LongRoPE long factors)
RUNS = [(c, t, PARITY_N_CTX) for c, t in CASES] + [(c, t, LONG_CTX[c]) for c, t in CASES if c in LONG_CTX]
# Within the gates (top-1 100 %, mean |d log-softmax| <= 1e-3, greedy identical) but not
# bit-identical yet: none. (Both MoE models with IQ4_XS experts were up to 3e-3 off until their
# experts took llama.cpp's tiled order where it has 8+ routed rows: forward.c, expert_shape.)
NOT_YET_IDENTICAL: set = set()


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("arch")
    return {ct: write_arch_model(d / f"{ct[0]}-{ct[1]}.gguf", *ct) for ct in CASES}


def _ref(case, wtype, n_ctx=PARITY_N_CTX):
    return np.load(DATA / (f"{case}-{wtype}.npz" if n_ctx == PARITY_N_CTX else f"{case}-{wtype}-ctx{n_ctx}.npz"))


@pytest.mark.parametrize("case,wtype", CASES)
def test_synthetic_file_is_the_one_llamacpp_saw(models, case, wtype):
    import hashlib
    got = hashlib.sha256(models[case, wtype].read_bytes()).hexdigest()
    assert got == str(_ref(case, wtype)["sha256"]), \
        "tests/arch_models.py no longer writes the file the reference was made on: rerun scripts/arch_reference.py"


@needs_llamacpp_arithmetic
@pytest.mark.parametrize("case,wtype,n_ctx", RUNS)
def test_logits_match_llamacpp(models, case, wtype, n_ctx):
    ref = _ref(case, wtype, n_ctx)
    m = Model(models[case, wtype])
    try:
        assert m.hparams.arch == ARCH_CASES[case][0]
        ctx = Context(m, n_ctx, 2)
        toks = parity_tokens(m.n_vocab)
        assert toks == ref["tokens"].tolist()
        got = ctx.decode(toks, 0, lib.PYRT_OUT_LOGITS_ALL)
        want = ref["logits"]
        assert (got.argmax(-1) == want.argmax(-1)).all()
        diff = np.abs(_log_softmax(got) - _log_softmax(want)).mean()
        assert diff <= 1e-3, diff
        # llama.cpp's arithmetic, reproduced: the logits are identical
        if (case, wtype) not in NOT_YET_IDENTICAL:
            np.testing.assert_array_equal(got, want)
        ctx.close()
    finally:
        m.close()


@needs_llamacpp_arithmetic
@pytest.mark.parametrize("case,wtype,n_ctx", RUNS)
def test_greedy_matches_llamacpp(models, case, wtype, n_ctx):
    ref = _ref(case, wtype, n_ctx)
    m = Model(models[case, wtype])
    try:
        ctx = Context(m, n_ctx, 2)
        prompt = ref["prompt"].tolist()
        logits = ctx.decode(prompt, 0, lib.PYRT_OUT_LOGITS_LAST)
        out, pos = [], len(prompt)
        for _ in range(len(ref["greedy"])):
            nxt = int(np.argmax(logits))
            out.append(nxt)
            logits = ctx.decode([nxt], pos, lib.PYRT_OUT_LOGITS_LAST)
            pos += 1
        assert out == ref["greedy"].tolist()
        ctx.close()
    finally:
        m.close()


@pytest.mark.parametrize("case", ["mixtral", "qwen3moe"])
def test_moe_rows_do_not_depend_on_their_neighbours(models, case):
    """A whole prompt takes llama.cpp's tiled order for experts with 8+ routed rows (IQ4_XS),
    which is where it differs from single-token arithmetic; in per-token numerics and in a
    batch of sequences each expert row keeps the single-token order, so a token's logits are
    the ones it gets alone."""
    m = Model(models[case, "iq4_xs"])
    try:
        toks = parity_tokens(m.n_vocab)[:24]
        ctx = Context(m, 128, 2)
        alone = []
        for i, t in enumerate(toks):
            alone.append(ctx.decode([t], i, lib.PYRT_OUT_LOGITS_LAST))
        alone = np.stack(alone)
        ctx.truncate(0)
        whole = ctx.decode(toks, 0, lib.PYRT_OUT_LOGITS_ALL)
        if lib.pyrt_kernels_active() != lib.PYRT_KERNELS_SCALAR:   # scalar: one order for all shapes
            assert not np.array_equal(whole, alone)   # the batched orders are really taken
        ctx.truncate(0)
        per_token = ctx.decode(toks, 0, lib.PYRT_OUT_LOGITS_ALL, lib.PYRT_NUMERICS_PER_TOKEN)
        np.testing.assert_array_equal(per_token, alone)
        ctx.close()
        # two sequences in one step each: the same rows as alone
        bctx = Context(m, 128, 2, n_seq=2)
        for i in range(12):
            a, b = bctx.decode_batch([(0, [toks[i]], i, lib.PYRT_OUT_LOGITS_LAST, 0),
                                      (1, [toks[12 + i]], i, lib.PYRT_OUT_LOGITS_LAST, 0)])
            np.testing.assert_array_equal(a, alone[i])
            if i == 0:
                ref1 = Context(m, 128, 2)
            want_b = ref1.decode([toks[12 + i]], i, lib.PYRT_OUT_LOGITS_LAST)
            np.testing.assert_array_equal(b, want_b)
        ref1.close()
        bctx.close()
    finally:
        m.close()


@pytest.mark.parametrize("case", sorted(FEATURE_TENSORS))
def test_the_gate_fails_without_the_feature(tmp_path, case):
    """The references can fail: the same model without its architecture's own feature
    (rope factors, biases, q/k norms, soft-capping) misses llama.cpp's top-1 at most positions."""
    m = Model(write_arch_model(tmp_path / "stripped.gguf", case, "q8_0", strip=True))
    try:
        got = Context(m, 128, 2).decode(parity_tokens(m.n_vocab), 0, lib.PYRT_OUT_LOGITS_ALL)
    finally:
        m.close()
    want = _ref(case, "q8_0")["logits"]
    if case != "gemma2":       # final soft-capping is monotonic: it keeps the top-1
        assert (got.argmax(-1) == want.argmax(-1)).mean() < 0.9
    assert np.abs(_log_softmax(got) - _log_softmax(want)).mean() > 1e-2


def test_longrope_factors_follow_the_context_size(models):
    """phi3 LongRoPE: the short and long references differ, and each context size matches only
    its own (llama.cpp switches to the long factors above the original context, rounding n_ctx
    up to 256; 256 = the original context here, so 256 still takes the short ones)."""
    m = Model(models["phi3long", "q8_0"])
    try:
        assert (m.hparams.n_ctx_orig, m.hparams.rope_attn_factor) == (256, pytest.approx(1.19))
        toks = parity_tokens(m.n_vocab)
        short, long_ = _ref("phi3long", "q8_0")["logits"], _ref("phi3long", "q8_0", 512)["logits"]
        for n_ctx, want, other in ((256, short, long_), (257, long_, short)):
            got = Context(m, n_ctx, 2).decode(toks, 0, lib.PYRT_OUT_LOGITS_ALL)
            assert np.abs(_log_softmax(got) - _log_softmax(want)).mean() <= 1e-3
            assert np.abs(_log_softmax(got) - _log_softmax(other)).mean() > 1e-2
    finally:
        m.close()


def test_longrope_needs_both_factor_tensors(tmp_path):
    import gguf
    src = write_arch_model(tmp_path / "full.gguf", "phi3long", "q8_0")
    r = gguf.GGUFReader(src)
    w = gguf.GGUFWriter(tmp_path / "half.gguf", "phi3")
    for f in r.fields.values():
        if f.name.startswith("GGUF.") or f.name == "general.architecture":
            continue
        w.add_key_value(f.name, f.contents(), f.types[0], f.types[-1] if f.types[0] == gguf.GGUFValueType.ARRAY else None)
    for t in r.tensors:
        if t.name != "rope_factors_short.weight":
            w.add_tensor(t.name, t.data, raw_dtype=t.tensor_type)
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
    with pytest.raises(GGUFError, match="come as a pair"):
        Model(tmp_path / "half.gguf")


def test_unsupported_architecture_lists_the_supported_ones(tmp_path):
    import gguf
    from pyrt.gguf_file import GGUFError
    p = tmp_path / "x.gguf"
    w = gguf.GGUFWriter(str(p), "mamba")
    w.add_tensor("token_embd.weight", np.zeros((4, 32), np.float32))
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
    with pytest.raises(GGUFError, match="unsupported architecture 'mamba'.*phi3.*qwen2.*qwen3"):
        Model(p)


def test_fused_and_separate_qkv_together_is_an_error(tmp_path, models):
    """A layer may have attn_qkv or attn_q/k/v, never both."""
    from pyrt.gguf_file import GGUFError
    m = Model(models["phi3", "q8_0"])
    hp = m.hparams
    m.close()
    want = expected_tensors(hp)
    assert "blk.0.attn_qkv.weight" in want and not want["blk.0.attn_q.weight"][1]
    assert want["blk.0.ffn_up.weight"][0] == (hp.n_embd, 2 * hp.n_ff)
    assert "blk.0.ffn_gate.weight" not in want
    assert set(ARCHS) >= {"llama", "gemma3", "qwen2", "qwen3", "phi3"}
    del GGUFError


@pytest.mark.parametrize("case,label", [("qwen2", "q/k/v biases"), ("phi3", "fused qkv"),
                                        ("llama3", "rope_freqs"), ("gemma2", "tied output"),
                                        ("phi3long", "LongRoPE factors")])
def test_info_names_the_architecture_and_its_features(models, capsys, case, label):
    from pyrt.cli import main
    assert main(["info", str(models[case, "q8_0"])]) == 0
    out = capsys.readouterr().out
    arch = ARCH_CASES[case][0]
    assert f"architecture:  {arch} ({ARCHS[arch][2]})" in out
    line = next(ln for ln in out.splitlines() if ln.startswith("in this file:"))
    assert label in line
