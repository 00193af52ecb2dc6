"""Hostile GGUF files: every crafted case of tests/make_malformed.py (one per item of the
docs/ARCHITECTURE.md, 'Untrusted input' checklist plus the shapes of real loader CVEs) is rejected with a GGUFError
that names the field and the offending value — by the parser for file-structure damage, by
the model loader for vocabulary / hyper-parameter / shape damage, and end to end by
pyrt.Llama either way. Costs ~3 s."""
from __future__ import annotations

import os
import re
from collections import Counter

import numpy as np
import pytest

from make_malformed import CASES, seed_doc, serialize
from tiny_model import tiny_llama_bytes

import pyrt
from pyrt.gguf_file import GGUFError, GGUFFile

CHECKLIST = (  # docs/ARCHITECTURE.md, 'Untrusted input', in order
    "magic", "version 2 or 3", "counts bounded by remaining bytes", "string lengths capped",
    "array lengths capped", "known KV types", "known tensor types", "no duplicate keys",
    "no duplicate tensor names", "1 <= n_dims <= 4", "no zero dims", "no negative dims",
    "overflow-checked element counts", "overflow-checked byte counts",
    "ne[0] divisible by the block size", "alignment a power of two", "byte range inside the file",
    "no overlapping tensors", "vocabulary arrays of the expected element types",
    "special token ids < n_vocab", "hparams in sane ranges", "hparams consistent with tensor shapes",
)
CVES = ("CVE-2025-53630", "CVE-2026-27940", "CVE-2025-49847", "CVE-2026-7482")


def test_corpus_covers_checklist_and_cves():
    assert len(CASES) >= 40
    items = " | ".join(c.item for c in CASES)
    for item in CHECKLIST:
        assert item in items, f"no malformed case for checklist item {item!r}"
    for cve in CVES:
        assert cve in items, f"no malformed case for {cve}"
    # at least the shapes the issue lists by name
    for name in ("token_string_u64_max", "elements_wrap_2p64", "bytes_wrap_2p64", "n_dims_5",
                 "zero_dim", "offset_past_eof", "overlapping_tensors", "tokens_wrong_elem_type",
                 "bos_id_eq_n_vocab", "n_layer_1e6", "n_ff_mismatch", "tensor_1e12_elements"):
        assert name in {c.name for c in CASES}
    assert Counter(c.level for c in CASES)["model"] >= 20


def test_seed_is_valid_and_generates(tmp_path):
    """The base every case starts from must load and run: otherwise every rejection
    below would prove nothing."""
    path = tmp_path / "seed.gguf"
    path.write_bytes(serialize(seed_doc()))
    assert path.read_bytes() == tiny_llama_bytes()
    with pyrt.Llama(str(path), n_ctx=32, n_threads=1) as llm:
        ids = llm.tokenize("Hello world")
        logits = llm.logits(ids)
        assert logits.shape == (len(ids), llm.n_vocab()) and np.isfinite(logits).all()
        no_eog = {t: float("-inf") for t in llm.tokenizer.eog_ids}
        out = list(llm.generate(ids, max_tokens=4, temperature=0, logit_bias=no_eog))
        assert len(out) == 4 and all(0 <= t < llm.n_vocab() for t in out)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_malformed_rejected(case, tmp_path):
    data = case.build()
    path = tmp_path / f"{case.name}.gguf"
    path.write_bytes(data)
    if case.level == "parse":
        with pytest.raises(GGUFError, match=case.match):
            GGUFFile(path)
        with pytest.raises(GGUFError, match=case.match):
            GGUFFile(data)                     # the in-memory path gives the same verdict
    else:
        GGUFFile(path).close()                 # structurally fine ...
    with pytest.raises(GGUFError, match=case.match):   # ... and refused by the loader
        pyrt.Llama(str(path), n_ctx=16, n_threads=1)


def test_messages_name_field_and_value(tmp_path):
    """Spot-check the wording on a few cases (the per-case regexes check them all)."""
    by_name = {c.name: c for c in CASES}
    for name, words in (("n_dims_5", ("token_embd.weight", "n_dims", "5")),
                        ("offset_past_eof", ("output.weight", "offset", "1073741824", "end of the file")),
                        ("eos_id_u32_max", ("eos_token_id", "4294967295")),
                        ("alignment_3", ("general.alignment", "3"))):
        p = tmp_path / f"{name}.gguf"
        p.write_bytes(by_name[name].build())
        with pytest.raises(GGUFError) as ei:
            pyrt.Llama(str(p), n_ctx=16, n_threads=1)
        for w in words:
            assert w in str(ei.value)


def test_gguf_error_is_value_error():
    assert issubclass(pyrt.GGUFError, ValueError)
    assert pyrt.GGUFError is GGUFError


def test_not_a_regular_file(tmp_path):
    with pytest.raises(GGUFError, match="not a regular file"):
        GGUFFile(tmp_path)
    fifo = tmp_path / "fifo.gguf"
    os.mkfifo(fifo)
    with pytest.raises(GGUFError, match="not a regular file"):   # would block in open()
        GGUFFile(fifo)
    with pytest.raises(FileNotFoundError):
        GGUFFile(tmp_path / "missing.gguf")


def test_truncation_at_every_section_boundary(tmp_path):
    """Cut the seed after the header, after each metadata entry, inside and after the tensor
    table and before each tensor's data: every prefix is rejected by the parser."""
    data = tiny_llama_bytes()
    g = GGUFFile(data)
    cuts = {0, 4, 8, 16, 24, g.data_offset, g.data_offset - 1}
    cuts |= {t.offset for t in g.tensors.values()} | {t.offset + t.nbytes - 1 for t in g.tensors.values()}
    d = seed_doc()
    pos = 24
    from make_malformed import _enc_str, _enc_value
    for e in d.kvs:
        cuts |= {pos, pos + 8, pos + 8 + len(e.key) + 4}
        pos += len(_enc_str(e.key)) + 4 + len(_enc_value(e.vtype, e.value, e.etype))
    for t in d.tensors:
        cuts.add(pos)
        pos += 8 + len(t.name) + 4 + 8 * len(t.shape) + 12
    g.close()
    assert len(cuts) > 70
    for n in sorted(cuts):
        with pytest.raises(GGUFError, match=r"truncated|runs past|cannot fit|impossible|past the end|"
                                            r"only \d+ bytes|bad magic"):
            GGUFFile(data[:n])


def test_context_that_cannot_fit_is_memory_error(smollm2_path):
    """A context of 2^24 positions needs ~390 GB of KV cache for SmolLM2: refused with a
    MemoryError instead of crashing (or being OOM-killed later)."""
    with pytest.raises(MemoryError, match=re.escape("n_ctx=16777216")):
        pyrt.Llama(str(smollm2_path), n_ctx=1 << 24, n_threads=1)


def test_real_models_still_load(smollm2_path):
    """The checks must not reject real files."""
    from pyrt.model import Model
    m = Model(smollm2_path)
    assert m.hparams.n_vocab == 49152 and m.hparams.n_layer == 30
    m.close()


def test_block_sizes_agree_with_c():
    """The parser sizes tensors with the table the C core checks against (a mismatch made
    every Q8_1 tensor fail in C with a bare byte-count error: gguf-py says 40 bytes per
    block, ggml 36)."""
    from pyrt._native import lib
    from pyrt.gguf_file import BLOCK_SIZES
    checked = 0
    for t, (block, nbytes) in BLOCK_SIZES.items():
        if lib.pyrt_type_block_size(int(t)):
            assert (lib.pyrt_type_block_size(int(t)), lib.pyrt_type_block_bytes(int(t))) == (block, nbytes), t.name
            checked += 1
    assert checked >= 14
