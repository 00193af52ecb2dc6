"""`pyrt --version` and `pyrt quantize`'s user surface: model names as input,
progress and a short summary, no silent overwrite, every type in --help."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

import pyrt
from pyrt.cli import main
from pyrt.quantize.mix import QTYPES


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"pyrt {pyrt.__version__}"


def test_quantize_help_lists_every_type_the_readme_lists(capsys):
    with pytest.raises(SystemExit):
        main(["quantize", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    for t in QTYPES:
        assert re.search(rf"\b{t}\b", help_text), t
    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    line = next(ln for ln in readme.splitlines() if ln.startswith("pyrt quantize "))
    listed = line.split("#", 1)[1].split(":", 1)[1].split()
    for t in listed:                      # "q3_k_s/m/l" -> q3_k_s, q3_k_m, q3_k_l
        head, *alts = t.split("/")
        for name in [head] + [head[: -len(alts[0])] + a for a in alts]:
            assert name in QTYPES and re.search(rf"\b{name}\b", help_text), name


def test_quantize_by_model_name_summary_and_no_overwrite(tmp_path, capsys):
    out = tmp_path / "smol-q8_0.gguf"
    assert main(["quantize", "smollm2-135m", str(out), "--type", "Q8_0"]) == 0
    err = capsys.readouterr().err
    assert f"wrote {out} (q8_0)" in err and "file size" in err and "requantized" in err
    assert re.search(r"Q8_0\s+1\s+211", err)          # types table: in / out counts
    assert len(err) < 2000                              # a summary, not the whole dict
    size = out.stat().st_size
    out.write_bytes(b"keep me")
    assert main(["quantize", "smollm2-135m", str(out), "--type", "q8_0"]) == 1
    assert "exists; pass --force" in capsys.readouterr().err
    assert out.read_bytes() == b"keep me"
    assert main(["quantize", "smollm2-135m", str(out), "-t", "q8_0", "--force"]) == 0
    assert out.stat().st_size == size
    with pytest.raises(SystemExit):
        main(["quantize", "smollm2-135m", str(tmp_path / "x.gguf"), "--type", "q9_9"])
    assert "invalid choice: 'q9_9'" in capsys.readouterr().err
    assert main(["quantize", "no-such-model", str(tmp_path / "y.gguf"), "--type", "q8_0"]) == 1
    assert "known models" in capsys.readouterr().err


def test_generate_sampler_flags(capsys):
    argv = ["generate", "-m", "smollm2-135m", "-n", "6", "--seed", "3", "Once upon a time"]
    assert main(argv[:-1] + ["--mirostat", "2", "--mirostat-ent", "3", "--mirostat-lr", "0.2",
                             argv[-1]]) == 0
    a = capsys.readouterr().out
    assert main(argv[:-1] + ["--mirostat", "2", "--mirostat-ent", "3", "--mirostat-lr", "0.2",
                             argv[-1]]) == 0
    assert capsys.readouterr().out == a and a.strip()          # seeded: the same text
    assert main(argv[:-1] + ["--dry-multiplier", "0.8", "--xtc-probability", "0.5", argv[-1]]) == 0
    with pytest.raises(SystemExit):
        main(argv[:-1] + ["--mirostat", "3", argv[-1]])
    assert main(argv[:-1] + ["--xtc-threshold", "2", argv[-1]]) == 1
    assert "xtc_threshold" in capsys.readouterr().err
