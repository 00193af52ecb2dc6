"""pyrt.quantize: llama.cpp's per-tensor type rules, exact KV copying, byte-exact numerics.

The real-model tests use SmolLM2 Q4_1 requantized to Q8_0 and Q4_0 (cached fixtures, see
fixtures_quant.py); the rest use tiny synthetic GGUF files written here."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

import gguf
from gguf import GGMLQuantizationType as QT
from gguf import GGUFValueType as VT

from fixtures_quant import smollm2_q4_0_path, smollm2_q8_0_path  # noqa: F401  (fixtures)
from pyrt import quantize as pq

# sha256 over the data of every tensor, in file order, of SmolLM2 Q4_1 requantized with
# ggml's own C reference code (ggml-quants.c of llama-cpp-python 0.3.36's llama.cpp, compiled as
# llama.cpp compiles ggml-base: no -march, so no FMA contraction): dequantize_row_q4_1 followed
# by quantize_row_q8_0_ref / quantize_row_q4_0_ref; non-Q4_1 tensors copied. An oracle
# independent of gguf.quants, pinning byte identity with llama-quantize's output.
GGML_C_TENSOR_DATA_SHA256 = {
    "q8_0": "270a39d46ea0b45e3955f8f3f1c07ceff4e8160e969374286dbc5d610fd78d15",
    "q4_0": "818bf0b365ae6388868d7d45af997b7f7769f57c2d931e7a57f5cf288ed05d26",
}
FTYPE = {"q8_0": 7, "q4_0": 2, "q4_1": 3, "f16": 1}


# --------------------------------------------------------------------------------------------
# per-tensor rule (pure)
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,ne,src,qtype,has_output,want", [
    # 1-D norms are never touched
    ("blk.0.attn_norm.weight", (576,), QT.F32, "q4_0", False, QT.F32),
    ("output_norm.weight", (576,), QT.F32, "f16", False, QT.F32),
    # ordinary 2-D weights get the target type
    ("blk.0.attn_q.weight", (576, 576), QT.Q4_1, "q8_0", False, QT.Q8_0),
    ("blk.3.ffn_down.weight", (1536, 576), QT.Q4_1, "q4_0", False, QT.Q4_0),
    ("blk.3.ffn_up.weight", (576, 1536), QT.F16, "q4_1", False, QT.Q4_1),
    # tied embeddings: token_embd is the output projection: Q8_0 stays, Q6_K wanted -> Q8_0
    ("token_embd.weight", (576, 49152), QT.Q8_0, "q8_0", False, QT.Q8_0),
    ("token_embd.weight", (576, 49152), QT.Q8_0, "q4_0", False, QT.Q8_0),
    ("token_embd.weight", (576, 49152), QT.F32, "q4_1", False, QT.Q8_0),
    # with its own output.weight, token_embd is an ordinary weight
    ("token_embd.weight", (576, 49152), QT.F32, "q4_0", True, QT.Q4_0),
    ("output.weight", (576, 49152), QT.F32, "q4_0", True, QT.Q8_0),
    # the output projection gets Q6_K where ne0 % 256 == 0
    ("output.weight", (512, 1000), QT.F32, "q4_0", True, QT.Q6_K),
    # ne0 not a multiple of 32: F16 fallback, for ordinary and output tensors alike
    ("blk.0.ffn_down.weight", (48, 64), QT.F32, "q8_0", False, QT.F16),
    ("output.weight", (48, 64), QT.F32, "q4_0", True, QT.F16),
    # f16 target: every quantizable tensor F16, the output one included
    ("token_embd.weight", (576, 49152), QT.Q8_0, "f16", False, QT.F16),
    ("blk.0.attn_k.weight", (576, 192), QT.Q4_1, "f16", False, QT.F16),
    # names llama.cpp never quantizes
    ("blk.0.ffn_gate_inp.weight", (576, 8), QT.F32, "q8_0", False, QT.F32),
    ("blk.0.attn_q.bias", (576, 4), QT.F32, "q8_0", False, QT.F32),
    ("position_embd.weight", (576, 512), QT.F32, "q8_0", False, QT.F32),
])
def test_choose_tensor_type(name, ne, src, qtype, has_output, want):
    got, _ = pq.choose_tensor_type(name, ne, src, qtype, has_output=has_output)
    assert got == want


def test_choose_tensor_type_notes_the_fallbacks():
    _, note = pq.choose_tensor_type("token_embd.weight", (576, 10), QT.Q8_0, "q4_0", has_output=False)
    assert "Q6_K" in note and "576" in note
    t, note = pq.choose_tensor_type("output.weight", (512, 10), QT.F32, "q4_0", has_output=True)
    assert t == QT.Q6_K and note == ""
    _, note = pq.choose_tensor_type("blk.0.attn_q.weight", (64, 64), QT.F32, "q4_0", has_output=True)
    assert note == ""


def test_unknown_qtype_lists_choices():
    with pytest.raises(ValueError, match=r"q8_0, q4_0, q4_1, q5_0, q5_1, q4_k_m, .*q6_k, f16"):
        pq.choose_tensor_type("x.weight", (32, 32), QT.F32, "q1_z", has_output=False)


# --------------------------------------------------------------------------------------------
# real model
# --------------------------------------------------------------------------------------------

def _kv(reader: gguf.GGUFReader) -> dict:
    """Every KV pair as (types, raw bytes of its value parts): exact type and content."""
    return {k: ([int(t) for t in f.types], b"".join(p.tobytes() for p in f.parts[3:]))
            for k, f in reader.fields.items() if not k.startswith("GGUF.")}


@pytest.fixture(scope="module")
def open_gguf():
    """Memoized GGUFReader: opening SmolLM2 parses ~100k tokenizer strings (seconds)."""
    cache: dict = {}

    def get(path) -> gguf.GGUFReader:
        key = str(path)
        if key not in cache:
            cache[key] = gguf.GGUFReader(path)
        return cache[key]
    return get


@pytest.fixture(scope="module")
def smollm2_reader(smollm2_path, open_gguf):
    return open_gguf(smollm2_path)


@pytest.mark.parametrize("qtype", ["q8_0", "q4_0"])
def test_smollm2_requantized(qtype, request, smollm2_reader, open_gguf):
    path = request.getfixturevalue(f"smollm2_{qtype}_path")
    src = smollm2_reader
    out = open_gguf(path)
    target = pq.QTYPES[qtype][0]

    # same tensors, same order, same shapes; types by the rule
    assert [t.name for t in out.tensors] == [t.name for t in src.tensors]
    for s, o in zip(src.tensors, out.tensors):
        assert list(o.shape) == list(s.shape), s.name
        if len(s.shape) == 1:
            assert o.tensor_type == QT.F32 and o.data.tobytes() == s.data.tobytes(), s.name
        elif s.name == "token_embd.weight":   # tied output: Q8_0 kept, copied as is
            assert o.tensor_type == QT.Q8_0 and o.data.tobytes() == s.data.tobytes()
        else:
            assert s.tensor_type == QT.Q4_1 and o.tensor_type == target, s.name

    # KV pairs: all kept with exact types and values, file_type set
    kv_src, kv_out = _kv(src), _kv(out)
    assert list(kv_out) == list(kv_src)
    for key in kv_src:
        if key != "general.file_type":
            assert kv_out[key] == kv_src[key], key
    assert out.fields["general.file_type"].contents() == FTYPE[qtype]
    assert out.fields["general.file_type"].types == [VT.UINT32]
    assert len(out.fields["tokenizer.ggml.tokens"].data) == 49152

    # numerics: identical to gguf.quants on a few tensors ...
    by_name = {t.name: t for t in out.tensors}
    for s in (src.tensors[2], src.tensors[6], src.tensors[-1]):
        if s.tensor_type != QT.Q4_1:
            continue
        want = gguf.quants.quantize(gguf.quants.dequantize(s.data, QT.Q4_1), target)
        assert by_name[s.name].data.tobytes() == want.tobytes(), s.name
    # ... and, for all tensors, to ggml's C reference code (pinned digest)
    h = hashlib.sha256()
    for o in out.tensors:
        h.update(o.data.tobytes())
    assert h.hexdigest() == GGML_C_TENSOR_DATA_SHA256[qtype]


def test_smollm2_q4_0_is_close_to_source(smollm2_q4_0_path, smollm2_reader, open_gguf):  # noqa: F811
    """Sanity of the values, not only the bytes: requantizing adds only Q4_0-sized error."""
    out = {t.name: t for t in open_gguf(smollm2_q4_0_path).tensors}
    s = next(t for t in smollm2_reader.tensors if t.name == "blk.5.ffn_gate.weight")
    a = gguf.quants.dequantize(s.data, s.tensor_type)
    b = gguf.quants.dequantize(out[s.name].data, out[s.name].tensor_type)
    nmse = float(np.mean((a - b) ** 2) / np.mean(a ** 2))
    assert 0 < nmse < 0.02


# --------------------------------------------------------------------------------------------
# synthetic files: KV fidelity, alignment, fallbacks, errors
# --------------------------------------------------------------------------------------------

def _write_tiny(path: Path, *, with_output: bool = True, extra_tensor=None, alignment=None) -> Path:
    rng = np.random.default_rng(0)
    w = gguf.GGUFWriter(path, "llama")
    w.add_key_value("general.name", "tiny", VT.STRING)
    w.add_key_value("llama.block_count", 1, VT.UINT32)
    w.add_key_value("llama.rope.freq_base", 10000.5, VT.FLOAT32)
    w.add_key_value("test.i64", -(2 ** 40), VT.INT64)
    w.add_key_value("test.f64", 0.1, VT.FLOAT64)
    w.add_key_value("test.bool", True, VT.BOOL)
    # a token that is not valid UTF-8 must survive byte for byte
    w.add_key_value("tokenizer.ggml.tokens", [b"a", b"\xff\xfe", "é".encode()], VT.ARRAY, sub_type=VT.STRING)
    w.add_key_value("tokenizer.ggml.scores", [0.5, -1.25, 3.0], VT.ARRAY, sub_type=VT.FLOAT32)
    w.add_key_value("tokenizer.ggml.token_type", [1, 2, 3], VT.ARRAY, sub_type=VT.INT32)
    w.add_key_value("general.file_type", 0, VT.UINT32)
    if alignment:
        w.add_key_value("general.alignment", alignment, VT.UINT32)
        w.data_alignment = alignment
    w.add_tensor("token_embd.weight", rng.standard_normal((40, 64), dtype=np.float32))
    w.add_tensor("blk.0.attn_norm.weight", rng.standard_normal(64, dtype=np.float32))
    w.add_tensor("blk.0.attn_q.weight", rng.standard_normal((64, 64), dtype=np.float32))
    w.add_tensor("blk.0.ffn_down.weight", rng.standard_normal((64, 48), dtype=np.float32))  # ne0=48
    w.add_tensor("blk.0.attn_k.weight",
                 rng.standard_normal((32, 64), dtype=np.float32).astype(np.float16))
    if with_output:
        w.add_tensor("output.weight", rng.standard_normal((40, 64), dtype=np.float32))
    if extra_tensor is not None:
        w.add_tensor(*extra_tensor)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.mark.parametrize("qtype", ["q8_0", "q4_0", "q4_1", "f16"])
def test_tiny_roundtrip(tmp_path, qtype):
    src = _write_tiny(tmp_path / "tiny.gguf", alignment=64)
    dst = tmp_path / f"tiny-{qtype}.gguf"
    calls = []
    summary = pq.quantize_file(src, dst, qtype, progress=lambda i, n, name: calls.append((i, n, name)))
    assert [c[0] for c in calls] == list(range(1, 7)) and calls[-1][1] == 6

    r_src, r = gguf.GGUFReader(src), gguf.GGUFReader(dst)
    kv_src, kv = _kv(r_src), _kv(r)
    assert list(kv) == list(kv_src) + ["general.quantization_version"]
    for key in kv_src:
        if key != "general.file_type":
            assert kv[key] == kv_src[key], key
    assert r.fields["general.file_type"].contents() == FTYPE[qtype]
    assert [bytes(r.fields["tokenizer.ggml.tokens"].parts[i]) for i in r.fields["tokenizer.ggml.tokens"].data] \
        == [b"a", b"\xff\xfe", "é".encode()]
    assert r.alignment == 64 and all(t.data_offset % 64 == 0 for t in r.tensors)

    types = {t.name: t.tensor_type for t in r.tensors}
    target = pq.QTYPES[qtype][0]
    assert types["blk.0.attn_norm.weight"] == QT.F32
    assert types["blk.0.attn_q.weight"] == target
    assert types["blk.0.attn_k.weight"] == target
    assert types["token_embd.weight"] == target          # not tied: ordinary weight
    assert types["output.weight"] == (QT.F16 if qtype == "f16" else QT.Q8_0)
    assert types["blk.0.ffn_down.weight"] == QT.F16      # ne0 = 48
    assert summary["types_in"] == {"F32": 5, "F16": 1}
    assert sum(summary["types_out"].values()) == 6
    assert summary["file_bytes_out"] == dst.stat().st_size

    # every converted tensor equals gguf.quants applied to the source
    src_t = {t.name: t for t in r_src.tensors}
    for t in r.tensors:
        s = src_t[t.name]
        want = gguf.quants.quantize(gguf.quants.dequantize(s.data, s.tensor_type), t.tensor_type)
        assert t.data.tobytes() == want.tobytes(), t.name


def test_tied_embeddings_get_output_type(tmp_path):
    src = _write_tiny(tmp_path / "tied.gguf", with_output=False)
    dst = tmp_path / "tied-q4_0.gguf"
    s = pq.quantize_file(src, dst, "q4_0")
    types = {t.name: t.tensor_type for t in gguf.GGUFReader(dst).tensors}
    assert types["token_embd.weight"] == QT.Q8_0 and types["blk.0.attn_q.weight"] == QT.Q4_0
    assert "token_embd.weight" in s["notes"]
    assert [p.dst_type for p in pq.plan(src, "q4_0")] == list(types.values())


def test_bad_arguments(tmp_path):
    src = _write_tiny(tmp_path / "tiny.gguf")
    with pytest.raises(ValueError, match="q8_0, q4_0, q4_1, q5_0"):
        pq.quantize_file(src, tmp_path / "o.gguf", "iq2_xxs")
    with pytest.raises(ValueError, match="same file"):
        pq.quantize_file(src, src, "q8_0")
    with pytest.raises(ValueError, match="same file"):
        pq.quantize_file(src, tmp_path / "." / "tiny.gguf", "q8_0")
    with pytest.raises(FileNotFoundError):
        pq.quantize_file(tmp_path / "missing.gguf", tmp_path / "o.gguf", "q8_0")
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a gguf file at all" * 10)
    with pytest.raises(ValueError, match="not a readable GGUF"):
        pq.quantize_file(junk, tmp_path / "o.gguf", "q8_0")
    assert not (tmp_path / "o.gguf").exists()


def test_unsupported_source_type_is_a_clear_error(tmp_path):
    src = _write_tiny(tmp_path / "i32.gguf",
                      extra_tensor=("blk.0.ffn_up.weight", np.arange(64 * 4, dtype=np.int32).reshape(4, 64)))
    dst = tmp_path / "o.gguf"
    with pytest.raises(ValueError, match=r"I32.*blk\.0\.ffn_up\.weight"):
        pq.quantize_file(src, dst, "q8_0")
    assert list(tmp_path.iterdir()) == [src]   # neither output nor temp file left behind


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    src = _write_tiny(tmp_path / "tiny.gguf")

    def boom(data, p, chunk_elems=0):
        raise RuntimeError("disk on fire")
    monkeypatch.setattr(pq, "_convert", boom)
    with pytest.raises(RuntimeError, match="disk on fire"):
        pq.quantize_file(src, tmp_path / "o.gguf", "q8_0")
    assert list(tmp_path.iterdir()) == [src]


def test_cached_quantize_reuses_and_keys_by_source(tmp_path, monkeypatch):
    monkeypatch.setenv("PYRT_CACHE_DIR", str(tmp_path / "cache"))
    src = _write_tiny(tmp_path / "tiny.gguf")
    first = pq.cached_quantize(src, "q8_0")
    assert first.is_file() and first.parent == tmp_path / "cache" / "quantized"

    def fail(*a, **k):
        raise AssertionError("must not quantize again")
    monkeypatch.setattr(pq, "quantize_file", fail)
    assert pq.cached_quantize(src, "q8_0") == first
    other = _write_tiny(tmp_path / "tiny2.gguf", with_output=False)
    with pytest.raises(AssertionError):
        pq.cached_quantize(other, "q8_0")   # different source bytes: a different cache entry


def test_cli_main(tmp_path, capsys):
    src = _write_tiny(tmp_path / "tiny.gguf")
    assert pq.main([str(src), str(tmp_path / "o.gguf"), "--type", "Q4_0"]) == 0
    assert "6 tensors" in capsys.readouterr().out
    assert gguf.GGUFReader(tmp_path / "o.gguf").fields["general.file_type"].contents() == 2
    with pytest.raises(SystemExit):
        pq.main([str(src), str(tmp_path / "p.gguf"), "--type", "iq2_xxs"])
    assert pq.main([str(src), str(src), "--type", "q8_0"]) == 2
    assert "same file" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# Q5_0/Q5_1 and the K-quant files (issue #4)
# --------------------------------------------------------------------------------------------

# ggml's C reference quantizers (quantize_row_*_ref of llama-cpp-python 0.3.36's ggml-base, which
# llama.cpp compiles without -march, so without FMA contraction) on _kq_rows(): sha256 of the
# blocks. Pins pyrt's numpy ports of the K-quant searches to ggml's bytes.
GGML_C_QUANT_SHA256 = {
    QT.Q4_K: "3cd9b246a262f81fb55e643f1da2bd8f2a58a9e4402f7b18e68ce8004b45103c",
    QT.Q5_K: "d68f81499db3bf7a82f9f14d9577d03fbb774cb687bb2ea2d2432d736d85557d",
    QT.Q6_K: "14ddc40b698a708b4d1693777c4085444fe2ca79ccd5c9bb0b0c6fa323c55a8b",
    QT.Q5_0: "46181d07bff8fb68dd5c8ec10cb281171e70a1fbdbc7e2af52d8dd8518d40319",
    QT.Q5_1: "fdcba23b5ac5d302b58288c9994ef7583348cb9c2decf175c1297eda08435b96",
}
# llama-quantize (llama-cpp-python 0.3.36) on SmolLM2-135M-Instruct.Q4_1.gguf with
# --allow-requantize: sha256 of its tensor data, taken in the source file's tensor order
# (llama-quantize writes the tensors sorted by layer and name; pyrt keeps the source order).
LLAMA_QUANTIZE_SMOLLM2_SHA256 = {
    "q4_k_m": "2b6d51c92e85b0154151b924e7cd4157208b50941c0feb8126f391e6d3555e78",
}
# the same check made during development for the other new types (not run here: ~20 s each)
#   q5_k_m 9ab080ac0c8e4b83..., q6_k 718fa7c8b2cd136d..., q5_0 666dd0ec66f52af4..., q5_1 d264760cce6317ec...


def _kq_rows() -> np.ndarray:
    rng = np.random.default_rng(7)
    x = rng.standard_normal((24, 512)) * np.exp(rng.uniform(-4, 2, (24, 1)))
    x[3] = 0
    x[5, :256] = 0
    x[7] = np.abs(x[7])
    x[9] = -np.abs(x[9])
    x[11, ::5] = 0
    x[13] = rng.integers(-3, 4, 512)
    x[15] *= 1e-20
    x[17] *= 1e20
    return x.astype(np.float32)


@pytest.mark.parametrize("qt", list(GGML_C_QUANT_SHA256), ids=lambda t: t.name)
def test_quantizers_match_ggml_c_reference(qt):
    got = pq.quantize_rows(_kq_rows(), qt)
    assert got.shape == (24, 512 // gguf.GGML_QUANT_SIZES[qt][0] * gguf.GGML_QUANT_SIZES[qt][1])
    assert hashlib.sha256(got.tobytes()).hexdigest() == GGML_C_QUANT_SHA256[qt]


@pytest.mark.parametrize("qt", [QT.Q4_K, QT.Q5_K, QT.Q6_K], ids=lambda t: t.name)
def test_kquant_quantizers_roundtrip(qt):
    """What the blocks mean (gguf.quants' dequantizer): close to the input, and close to
    optimal for the format (the error of plain rounding on the same grid is not better)."""
    rng = np.random.default_rng(int(qt))
    x = rng.standard_normal((16, 1024)).astype(np.float32)
    y = gguf.quants.dequantize(pq.quantize_rows(x, qt), qt)
    nmse = float(np.mean((x - y) ** 2) / np.mean(x ** 2))
    assert nmse < {QT.Q4_K: 0.012, QT.Q5_K: 0.003, QT.Q6_K: 0.0008}[qt]
    with pytest.raises(ValueError, match="cannot be quantized"):
        pq.quantize_rows(x[:, :100], qt)


@pytest.mark.parametrize("name,ne,qtype,want", [
    # 32-element targets: every weight, output to Q6_K, or Q8_0 where 256 does not divide
    ("blk.0.attn_q.weight", (576, 576), "q5_0", QT.Q5_0),
    ("blk.0.attn_v.weight", (576, 192), "q5_1", QT.Q5_1),
    ("output.weight", (576, 100), "q5_0", QT.Q8_0),
    ("output.weight", (512, 100), "q5_1", QT.Q6_K),
    ("blk.0.ffn_down.weight", (48, 64), "q5_0", QT.F16),
    # K files: the default type, and llama.cpp's fallbacks where ne0 % 256 != 0
    ("blk.0.attn_q.weight", (512, 512), "q4_k_m", QT.Q4_K),
    ("blk.0.attn_q.weight", (576, 576), "q4_k_m", QT.Q5_0),
    ("blk.0.attn_q.weight", (576, 576), "q4_k", QT.Q5_0),
    ("blk.0.attn_q.weight", (576, 576), "q5_k_m", QT.Q5_1),
    ("blk.0.attn_q.weight", (576, 576), "q6_k", QT.Q8_0),
    ("blk.0.attn_q.weight", (512, 512), "q6_k", QT.Q6_K),
    ("blk.0.attn_q.weight", (48, 48), "q4_k_m", QT.F16),
    ("token_embd.weight", (512, 1000), "q4_k_m", QT.Q4_K),       # own output.weight: ordinary
    ("output.weight", (512, 1000), "q4_k_m", QT.Q6_K),
    ("output.weight", (576, 1000), "q4_k_m", QT.Q8_0),
    ("output.weight", (512, 1000), "q8_0", QT.Q8_0),
])
def test_choose_tensor_type_new_targets(name, ne, qtype, want):
    assert pq.choose_tensor_type(name, ne, QT.F32, qtype, has_output=True)[0] == want


def test_k_mix_layer_rules():
    """use_more_bits: the first and last eighth of the layers and every third in between get
    Q6_K for attn_v and ffn_down (q4_k_m and q5_k_m); counters run in llama.cpp's order."""
    more = {0, 1, 2, 5, 8, 11, 14, 17, 20, 23, 26, 27, 28, 29}          # n_layer = 30
    for qtype, base in (("q4_k_m", QT.Q4_K), ("q5_k_m", QT.Q5_K)):
        ctx = pq.MixContext(arch="llama", n_layer=30, n_attention_wv=30)
        got = [pq.choose_tensor_type(f"blk.{il}.attn_v.weight", (512, 128), QT.F32, qtype,
                                     has_output=True, ctx=ctx)[0] for il in range(30)]
        assert got == [QT.Q6_K if il in more else base for il in range(30)]
        got = [pq.choose_tensor_type(f"blk.{il}.ffn_down.weight", (1024, 512), QT.F32, qtype,
                                     has_output=True, ctx=ctx)[0] for il in range(30)]
        assert got == [QT.Q6_K if il in more else base for il in range(30)]
    # 8-expert models: attn_v and attn_k in Q8_0, attn_output Q5_K (q4_k_m)
    ctx = pq.MixContext(arch="llama", n_layer=32, n_expert=8, n_attention_wv=32)
    assert pq.choose_tensor_type("blk.3.attn_v.weight", (512, 128), QT.F32, "q4_k_m", has_output=True, ctx=ctx)[0] == QT.Q8_0
    assert pq.choose_tensor_type("blk.3.attn_k.weight", (512, 128), QT.F32, "q4_k_m", has_output=True, ctx=ctx)[0] == QT.Q8_0
    assert pq.choose_tensor_type("blk.3.attn_output.weight", (512, 512), QT.F32, "q4_k_m", has_output=True, ctx=ctx)[0] == QT.Q5_K
    # falcon: output Q8_0; ffn_down by layer position
    ctx = pq.MixContext(arch="falcon", n_layer=32, n_attention_wv=32)
    assert pq.choose_tensor_type("output.weight", (512, 100), QT.F32, "q4_k_m", has_output=True, ctx=ctx)[0] == QT.Q8_0
    got = [pq.choose_tensor_type(f"blk.{il}.ffn_down.weight", (1024, 512), QT.F32, "q4_k_m",
                                 has_output=True, ctx=ctx)[0] for il in range(4)]
    assert got == [QT.Q6_K, QT.Q6_K, QT.Q5_K, QT.Q5_K]


@pytest.fixture(scope="module")
def smollm2_q4_k_m_path(smollm2_path):
    return pq.cached_quantize(smollm2_path, "q4_k_m")


def test_smollm2_q4_k_m_is_llama_quantize_byte_for_byte(smollm2_q4_k_m_path, smollm2_reader, open_gguf):
    out = open_gguf(smollm2_q4_k_m_path)
    assert [t.name for t in out.tensors] == [t.name for t in smollm2_reader.tensors]
    types = {t.name: t.tensor_type for t in out.tensors}
    more = {0, 1, 2, 5, 8, 11, 14, 17, 20, 23, 26, 27, 28, 29}
    for il in range(30):
        assert types[f"blk.{il}.attn_v.weight"] == (QT.Q8_0 if il in more else QT.Q5_0)   # Q6_K -> Q8_0
        assert types[f"blk.{il}.ffn_down.weight"] == (QT.Q6_K if il in more else QT.Q4_K)  # ne0 = 1536
        assert types[f"blk.{il}.attn_q.weight"] == QT.Q5_0                                  # Q4_K -> Q5_0
    assert types["token_embd.weight"] == QT.Q8_0
    assert out.fields["general.file_type"].contents() == 15
    h = hashlib.sha256()
    for t in out.tensors:
        h.update(t.data.tobytes())
    assert h.hexdigest() == LLAMA_QUANTIZE_SMOLLM2_SHA256["q4_k_m"]


@pytest.mark.parametrize("qtype", ["q5_0", "q5_1", "q6_k", "q4_k_m", "q5_k_m"])
def test_tiny_roundtrip_new_types(tmp_path, qtype):
    src = tmp_path / "tiny256.gguf"
    rng = np.random.default_rng(3)
    w = gguf.GGUFWriter(src, "llama")
    w.add_key_value("llama.block_count", 1, VT.UINT32)
    w.add_tensor("token_embd.weight", rng.standard_normal((8, 256), dtype=np.float32))
    w.add_tensor("blk.0.attn_norm.weight", rng.standard_normal(256, dtype=np.float32))
    w.add_tensor("blk.0.attn_q.weight", rng.standard_normal((64, 256), dtype=np.float32))
    w.add_tensor("blk.0.attn_v.weight", rng.standard_normal((16, 256), dtype=np.float32))
    w.add_tensor("blk.0.ffn_down.weight", rng.standard_normal((256, 96), dtype=np.float32))   # ne0 = 96
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    dst = tmp_path / f"tiny-{qtype}.gguf"
    pq.quantize_file(src, dst, qtype)
    r, r_src = gguf.GGUFReader(dst), gguf.GGUFReader(src)
    assert r.fields["general.file_type"].contents() == pq.QTYPES[qtype][1]
    base = pq.QTYPES[qtype][0]
    types = {t.name: t.tensor_type for t in r.tensors}
    fallback = {QT.Q4_K: QT.Q5_0, QT.Q5_K: QT.Q5_1, QT.Q6_K: QT.Q8_0}.get(base, base)
    assert types["blk.0.attn_q.weight"] == base
    assert types["token_embd.weight"] == QT.Q6_K                      # tied: the output rule
    # one layer: it is in the first eighth, so the K mixes raise attn_v and ffn_down
    assert types["blk.0.attn_v.weight"] == (QT.Q6_K if qtype in ("q4_k_m", "q5_k_m") else base)
    assert types["blk.0.ffn_down.weight"] == (QT.Q8_0 if qtype in ("q4_k_m", "q5_k_m", "q6_k") else fallback)
    src_t = {t.name: t for t in r_src.tensors}
    for t in r.tensors:
        if t.tensor_type in (QT.F32,):
            continue
        rows = gguf.quants.dequantize(src_t[t.name].data, src_t[t.name].tensor_type).reshape(t.shape[1] if len(t.shape) > 1 else 1, -1)
        assert t.data.tobytes() == pq.quantize_rows(rows, t.tensor_type).tobytes(), t.name
