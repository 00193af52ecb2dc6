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
    # llama.cpp would keep Q6_K (ne0 % 256 == 0); pyrt substitutes Q8_0
    ("output.weight", (512, 1000), QT.F32, "q4_0", True, QT.Q8_0),
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
    _, note = pq.choose_tensor_type("output.weight", (512, 10), QT.F32, "q4_0", has_output=True)
    assert "Q6_K" in note and "Q8_0" in note
    _, note = pq.choose_tensor_type("blk.0.attn_q.weight", (64, 64), QT.F32, "q4_0", has_output=True)
    assert note == ""


def test_unknown_qtype_lists_choices():
    with pytest.raises(ValueError, match=r"q8_0, q4_0, q4_1, f16"):
        pq.choose_tensor_type("x.weight", (32, 32), QT.F32, "q5_k", has_output=False)


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
    with pytest.raises(ValueError, match="q8_0, q4_0, q4_1, f16"):
        pq.quantize_file(src, tmp_path / "o.gguf", "q6_k")
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
        pq.main([str(src), str(tmp_path / "p.gguf"), "--type", "q3_k"])
    assert pq.main([str(src), str(src), "--type", "q8_0"]) == 2
    assert "same file" in capsys.readouterr().err
