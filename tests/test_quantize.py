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
    with pytest.raises(ValueError, match=r"q8_0, q4_0, q4_1, q5_0, q5_1, q4_k_m, .*q6_k, f16, q2_k, "
                                         r"q3_k_s, q3_k_m, q3_k, q3_k_l, q4_k_s, q5_k_s, iq4_nl, iq4_xs"):
        pq.choose_tensor_type("x.weight", (32, 32), QT.F32, "iq2_xxs", has_output=False)


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
    # ggml_quantize_chunk of the same build without imatrix (what llama-quantize calls):
    # quantize_row_q2_K_ref, quantize_row_q3_K_ref, and quantize_iq4_nl / quantize_iq4_xs
    # (their ntry = 7 search; quantize_row_iq4_nl_ref would use ntry = -1)
    QT.Q2_K: "a93468aee08d38e11403e275a57bd23fd9dca72593c7c6445b0c56913ac9e84e",
    QT.Q3_K: "cb68367e4532b2dce3cda73838864379f9d2f8e3a34aef816656a8aae1051bfa",
    QT.IQ4_NL: "b9bd56e92453cd94451e553efa141e2b87b96bc4c991d28aac38baf04a3ff2d1",
    QT.IQ4_XS: "a4a4b8fccf2fdabd90e8648b2d4adca65d72b28073105c64db2ff39293b4f4eb",
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


@pytest.mark.parametrize("qt", [QT.Q4_K, QT.Q5_K, QT.Q6_K, QT.Q2_K, QT.Q3_K, QT.IQ4_NL, QT.IQ4_XS],
                         ids=lambda t: t.name)
def test_kquant_quantizers_roundtrip(qt):
    """What the blocks mean (gguf.quants' dequantizer): close to the input, and close to
    optimal for the format (the error of plain rounding on the same grid is not better)."""
    rng = np.random.default_rng(int(qt))
    x = rng.standard_normal((16, 1024)).astype(np.float32)
    y = gguf.quants.dequantize(pq.quantize_rows(x, qt), qt)
    nmse = float(np.mean((x - y) ** 2) / np.mean(x ** 2))
    assert nmse < {QT.Q4_K: 0.012, QT.Q5_K: 0.003, QT.Q6_K: 0.0008, QT.Q2_K: 0.1, QT.Q3_K: 0.03,
                   QT.IQ4_NL: 0.007, QT.IQ4_XS: 0.007}[qt]
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


# --------------------------------------------------------------------------------------------
# Q2_K, Q3_K_S/M/L, Q4_K_S, Q5_K_S, IQ4_NL, IQ4_XS files
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,ne,qtype,want", [
    ("blk.0.attn_q.weight", (512, 512), "q2_k", QT.Q2_K),
    ("blk.0.attn_q.weight", (576, 576), "q2_k", QT.Q4_0),          # Q2_K -> Q4_0
    ("blk.0.attn_q.weight", (512, 512), "q3_k", QT.Q3_K),
    ("blk.0.attn_q.weight", (576, 576), "q3_k_s", QT.Q4_0),        # Q3_K -> Q4_0
    ("blk.0.attn_q.weight", (512, 512), "q4_k_s", QT.Q4_K),
    ("blk.0.attn_q.weight", (512, 512), "q5_k_s", QT.Q5_K),
    ("blk.0.attn_q.weight", (576, 576), "iq4_nl", QT.IQ4_NL),
    ("blk.0.attn_q.weight", (512, 512), "iq4_xs", QT.IQ4_XS),
    ("blk.0.attn_q.weight", (576, 576), "iq4_xs", QT.IQ4_NL),      # IQ4_XS -> IQ4_NL
    ("blk.0.attn_q.weight", (48, 48), "iq4_nl", QT.F16),
    ("output.weight", (512, 100), "q2_k", QT.Q6_K),
    ("output.weight", (576, 100), "iq4_nl", QT.Q8_0),              # Q6_K -> Q8_0
    ("output.weight", (512, 100), "iq4_xs", QT.Q6_K),
    ("blk.3.attn_output.weight", (512, 512), "q2_k", QT.Q3_K),
    ("blk.3.attn_output.weight", (512, 512), "q3_k_m", QT.Q4_K),
    ("blk.3.attn_output.weight", (512, 512), "q3_k_l", QT.Q5_K),
    ("blk.3.attn_output.weight", (512, 512), "q3_k_s", QT.Q3_K),
])
def test_choose_tensor_type_low_bit_targets(name, ne, qtype, want):
    assert pq.choose_tensor_type(name, ne, QT.F32, qtype, has_output=True)[0] == want


def _types_by_layer(qtype, tensor, ctx, n=16, ne=(512, 128)):
    return [pq.choose_tensor_type(f"blk.{il}.{tensor}.weight", ne, QT.F32, qtype,
                                  has_output=True, ctx=ctx)[0] for il in range(n)]


def test_low_bit_mix_layer_rules():
    """llama_tensor_get_type's attn_v / ffn_down rules for the new targets (16 layers)."""
    def ctx(gqa):
        return pq.MixContext(arch="llama", n_layer=16, n_attention_wv=16, n_gqa=gqa)
    Q3, Q4, Q5 = QT.Q3_K, QT.Q4_K, QT.Q5_K
    # q2_k: attn_v Q4_K with GQA >= 4, else Q3_K; every ffn_down Q3_K
    assert _types_by_layer("q2_k", "attn_v", ctx(4)) == [Q4] * 16
    assert _types_by_layer("q2_k", "attn_v", ctx(3)) == [Q3] * 16
    assert _types_by_layer("q2_k", "ffn_down", ctx(3)) == [Q3] * 16
    # q3_k_m: the first two attn_v Q5_K, the rest Q4_K; ffn_down Q5_K below n_layer/16, else Q4_K
    c = ctx(1)
    assert _types_by_layer("q3_k_m", "attn_v", c) == [Q5] * 2 + [Q4] * 14
    assert _types_by_layer("q3_k_m", "ffn_down", c) == [Q5] + [Q4] * 15
    # q3_k_l: attn_v and ffn_down Q5_K; q3_k_s: plain Q3_K
    assert _types_by_layer("q3_k_l", "attn_v", ctx(1)) == [Q5] * 16
    assert _types_by_layer("q3_k_s", "attn_v", ctx(8)) == [Q3] * 16
    assert _types_by_layer("q3_k_s", "ffn_down", ctx(8)) == [Q3] * 16
    # q4_k_s: the first four attn_v and the first eighth of ffn_down Q5_K
    c = ctx(1)
    assert _types_by_layer("q4_k_s", "attn_v", c) == [Q5] * 4 + [Q4] * 12
    assert _types_by_layer("q4_k_s", "ffn_down", c) == [Q5] * 2 + [Q4] * 14
    # iq4: attn_v Q5_K with GQA >= 4; the first eighth of ffn_down Q5_K (no imatrix)
    for qtype, base in (("iq4_nl", QT.IQ4_NL), ("iq4_xs", QT.IQ4_XS)):
        assert _types_by_layer(qtype, "attn_v", ctx(4), ne=(256, 64)) == [Q5] * 16
        assert _types_by_layer(qtype, "attn_v", ctx(2), ne=(256, 64)) == [base] * 16
        assert _types_by_layer(qtype, "ffn_down", ctx(2), ne=(256, 64)) == [Q5] * 2 + [base] * 14
    # falcon q3_k_m: ffn_down Q3_K unless use_more_bits
    c = pq.MixContext(arch="falcon", n_layer=16, n_attention_wv=16)
    assert _types_by_layer("q3_k_m", "ffn_down", c) == \
        [Q5] + [Q4 if il in {1, 4, 7, 10, 13, 14, 15} else Q3 for il in range(1, 16)]
    # 8 experts: attn_output Q5_K
    c = pq.MixContext(arch="llama", n_layer=16, n_expert=8, n_attention_wv=16)
    for qtype in ("q2_k", "q3_k_s", "q3_k_m", "q4_k_s", "iq4_nl", "iq4_xs"):
        assert pq.choose_tensor_type("blk.1.attn_output.weight", (512, 512), QT.F32, qtype,
                                     has_output=True, ctx=c)[0] == Q5


def test_mix_context_reads_gqa():
    ctx = pq.mix_context("llama", {"llama.block_count": 4, "llama.attention.head_count": 8,
                                   "llama.attention.head_count_kv": [2, 2, 2, 2]}, [])
    assert ctx.n_gqa == 4 and ctx.n_layer == 4
    assert pq.mix_context("llama", {"llama.attention.head_count": 8}, []).n_gqa == 1
    assert pq.mix_context("llama", {"llama.attention.head_count": 8,
                                    "llama.attention.head_count_kv": 0}, []).n_gqa == 0


# Synthetic llamas whose widths are multiples of 256, so that the K-quant and IQ4 quantizers
# (not their 32-block fallbacks) make nearly every tensor: tests/tiny_model.py's model with
#   A: 16 layers, n_embd 256, n_ff 256, 8 heads / 2 KV heads (GQA 4), tied output, seed 11
#   B:  8 layers, n_embd 256, n_ff 512, 4 heads / 2 KV heads (GQA 2), own output, seed 12
# (source tensors Q8_0, Q4_0 and F32). sha256 of llama-quantize's tensor data (llama-cpp-python
# 0.3.36's llama_model_quantize, allow_requantize), taken in the source file's tensor order;
# every tensor's type and bytes were also compared one by one, identical. Checked the same way
# and identical as well, not run here: A and B in q4_k_m, q5_k_m, q6_k, and A in q3_k_l.
SYNTH = {
    "A": dict(n_layer=16, n_embd=256, n_head=8, n_head_kv=2, n_ff=256, tied_output=True, seed=11),
    "B": dict(n_layer=8, n_embd=256, n_head=4, n_head_kv=2, n_ff=512, tied_output=False, seed=12),
}
LLAMA_QUANTIZE_SYNTH_SHA256 = {
    ("A", "q2_k"): "4127c13269443ab35ad4ee7d6ea89e1bfebc8c9a6b766a701972feaa1137c8eb",
    ("A", "q3_k_s"): "4cebca75421768e0c19a4d35f7056db75138a63b774815ad39339cfe8ea21df8",
    ("A", "q3_k_m"): "a5b503b6a96b67e600ef569e88ae456263666a3ac4fa951031c72b4d888c0981",
    ("A", "q4_k_s"): "58d06a1e60830e41fcbf4d681c229ba553d88bfb26234f2138a3eac597c82637",
    ("A", "q5_k_s"): "e2bb50c97b0adb48355971c6a931b943d90bb9fea742fdb20c3a4ab9ee83be3b",
    ("A", "iq4_nl"): "550c681379963e06649fcdc2f22505f3146b48d7a087079335cdb2fc05d17854",
    ("A", "iq4_xs"): "bf89bec3be5b85ba9bb3a46b20c020dae6c71995d2b5da13374690a6cc9463ce",
    ("B", "q2_k"): "0728806c759322095cfc3a66f99a167b040d6f73b3b48683f17e6aed953e7381",
    ("B", "q3_k_m"): "ba723f19f5ee29b2afb0995417846a69d6ef23e0e1e8646f3643fcb43e51f4a8",
    ("B", "q3_k_l"): "ede8d2b9b5878f100e115b0bb1457b1faaa03571a856e908e10b3f7caa698d57",
    ("B", "q4_k_s"): "509aba17c1ebd992e2a1ebfebdc4fa3312290e854d5054001d758aa984667b93",
    ("B", "iq4_xs"): "ede6fe97ab27564996671060c48b2ca7f5025229e39a18d6ef2654ade867582a",
}
#   also identical: B q3_k_s de8a63db9dc96..., q5_k_s a175d9e2a9da0..., iq4_nl 4d67e262bc6dd...
# The per-tensor type counts llama-quantize wrote (pyrt must agree before the bytes can).
SYNTH_TYPES = {
    ("A", "q2_k"): {"Q6_K": 1, "F32": 33, "Q2_K": 64, "Q4_K": 16, "Q3_K": 32},
    ("A", "q3_k_m"): {"Q6_K": 1, "F32": 33, "Q3_K": 64, "Q5_K": 3, "Q4_K": 45},
    ("A", "q4_k_s"): {"Q6_K": 1, "F32": 33, "Q4_K": 106, "Q5_K": 6},
    ("A", "iq4_nl"): {"Q6_K": 1, "F32": 33, "IQ4_NL": 94, "Q5_K": 18},
    ("A", "iq4_xs"): {"Q6_K": 1, "F32": 33, "IQ4_XS": 94, "Q5_K": 18},
    ("B", "q2_k"): {"Q2_K": 33, "F32": 17, "Q3_K": 24, "Q6_K": 1},
    ("B", "iq4_xs"): {"IQ4_XS": 56, "F32": 17, "Q5_K": 1, "Q6_K": 1},
}


@pytest.fixture(scope="module")
def synth_models(tmp_path_factory):
    from tiny_model import write_tiny_llama
    d = tmp_path_factory.mktemp("synth")
    return {k: write_tiny_llama(d / f"synth{k}.gguf", **kw) for k, kw in SYNTH.items()}


@pytest.mark.parametrize("model,qtype", list(LLAMA_QUANTIZE_SYNTH_SHA256), ids=lambda v: str(v))
def test_synthetic_is_llama_quantize_byte_for_byte(synth_models, tmp_path, model, qtype):
    dst = tmp_path / f"synth{model}.{qtype}.gguf"
    s = pq.quantize_file(synth_models[model], dst, qtype)
    r = gguf.GGUFReader(dst)
    assert r.fields["general.file_type"].contents() == pq.QTYPES[qtype][1]
    if (model, qtype) in SYNTH_TYPES:
        assert s["types_out"] == SYNTH_TYPES[model, qtype]
    h = hashlib.sha256()
    for t in r.tensors:
        h.update(t.data.tobytes())
    assert h.hexdigest() == LLAMA_QUANTIZE_SYNTH_SHA256[model, qtype]
    # IQ4 blocks mean what they should (pyrt's C core may not read them yet): gguf's dequantizer
    src = {t.name: t for t in gguf.GGUFReader(synth_models[model]).tensors}
    for t in r.tensors:
        if t.tensor_type in (QT.IQ4_NL, QT.IQ4_XS):
            x = gguf.quants.dequantize(src[t.name].data, src[t.name].tensor_type)
            y = gguf.quants.dequantize(t.data, t.tensor_type)
            assert float(np.mean((x - y) ** 2) / np.mean(x ** 2)) < 0.01, t.name


# llama-quantize on SmolLM2-135M-Instruct.Q4_1.gguf (as LLAMA_QUANTIZE_SMOLLM2_SHA256), checked
# during development for every new target, tensor by tensor identical (not run here, ~5-20 s each):
#   q2_k fead53a19558748d (Q3_K 30, Q4_0 180, Q8_0 1), q3_k_s fead53a19558748d (the same file:
#   attn_v's Q3_K falls back to Q4_0 as everything else), q3_k_l c9b6988b425cb243,
#   q4_k_s 3be5a6a209f80a91, q5_k_s efa01b957200ef12, iq4_nl 4d4ae1f9a7f50188,
#   iq4_xs 06be42542f5e3084
LLAMA_QUANTIZE_SMOLLM2_SHA256["q3_k_m"] = "4ca3922ea399f96da52ea7373f1388cc67fa7df7c715385e52a64be673981bc7"


@pytest.fixture(scope="module")
def smollm2_q3_k_m_path(smollm2_path):
    return pq.cached_quantize(smollm2_path, "q3_k_m")


def test_smollm2_q3_k_m_is_llama_quantize_byte_for_byte(smollm2_q3_k_m_path, open_gguf):
    out = open_gguf(smollm2_q3_k_m_path)
    types = {t.name: t.tensor_type for t in out.tensors}
    # attn_v: the first two Q5_K -> Q5_1, the rest Q4_K -> Q5_0 (ne0 = 576)
    assert [types[f"blk.{il}.attn_v.weight"] for il in range(4)] == [QT.Q5_1] * 2 + [QT.Q5_0] * 2
    assert types["blk.0.ffn_down.weight"] == QT.Q5_K          # i_layer < 30 / 16
    assert types["blk.1.ffn_down.weight"] == QT.Q4_K          # ne0 = 1536: no fallback
    assert types["blk.5.attn_q.weight"] == QT.Q4_0            # Q3_K -> Q4_0
    assert out.fields["general.file_type"].contents() == 12
    h = hashlib.sha256()
    for t in out.tensors:
        h.update(t.data.tobytes())
    assert h.hexdigest() == LLAMA_QUANTIZE_SMOLLM2_SHA256["q3_k_m"]


def test_smollm2_q3_k_m_runs_with_sane_perplexity(smollm2_q3_k_m_path):
    """The q3_k_m file (Q3_K/Q4_K/Q5_K/Q4_0/Q5_0 tensors) loads in pyrt and predicts the
    reference text about as well as the Q4_1 original (llama.cpp's perplexity 19.3)."""
    import pyrt
    from conftest import load_reference
    L = load_reference("smollm2-135m-q4_1.json")["logits"]
    llm = pyrt.Llama(str(smollm2_q3_k_m_path), n_ctx=1024, n_threads=2, seed=0)
    try:
        x = llm.logits(L["ids"]).astype(np.float64)
    finally:
        llm.close()
    x -= x.max(axis=-1, keepdims=True)
    lp = x - np.log(np.exp(x).sum(axis=-1, keepdims=True))
    n = len(L["next_logprob"])
    ppl = float(np.exp(-lp[np.arange(n), L["ids"][1:n + 1]].mean()))
    assert L["ppl"] * 0.9 < ppl < L["ppl"] * 1.5, ppl
