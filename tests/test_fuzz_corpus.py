"""Replay the committed fuzz corpus (tests/fuzz/corpus, see tests/fuzz/README.md) in CI.

Loader inputs go through the mutation sweep's contract (tests/mutation.py `run_one`): each
file is rejected with a clean exception, or loads and generates sane output. They run in one
worker process, so a crash fails the test naming the input that was running. The tokenizer
inputs are atheris FuzzedDataProvider streams: they are replayed through
tests/fuzz/fuzz_tokenizer.py (atheris is a test dependency where it has wheels: x86-64 Linux,
CPython < 3.13); elsewhere that test is skipped saying so."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import pyrt
from mutation import CLEAN

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "fuzz" / "corpus"
WORKER = """
import json, sys
sys.path.insert(0, {tests!r})
from mutation import run_one
for path in sys.argv[1:]:
    print(json.dumps({{"start": path}}), flush=True)
    outcome, msg = run_one(path)
    print(json.dumps({{"path": path, "outcome": outcome, "msg": msg}}), flush=True)
"""


def _env() -> dict:
    env = dict(os.environ)
    root = str(Path(pyrt.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    return env


def test_loader_corpus_replays_cleanly():
    files = sorted(str(f) for f in (CORPUS / "loader").iterdir() if f.is_file())
    assert len(files) >= 10, "the loader corpus is missing"
    r = subprocess.run([sys.executable, "-c", WORKER.format(tests=str(HERE)), *files], env=_env(),
                       capture_output=True, text=True, timeout=600)
    lines = [json.loads(ln) for ln in r.stdout.splitlines() if ln.startswith("{")]
    started = [d["start"] for d in lines if "start" in d]
    assert r.returncode == 0, (f"the worker died (status {r.returncode}) on {started[-1] if started else '?'}:\n"
                               f"{r.stderr[-3000:]}")
    done = {d["path"]: d for d in lines if "path" in d}
    assert sorted(done) == files
    bad = [f"{Path(p).name}: {d['outcome']}: {d['msg']}" for p, d in done.items() if d["outcome"] not in CLEAN]
    counts = {}
    for d in done.values():
        counts[d["outcome"]] = counts.get(d["outcome"], 0) + 1
    print(f"\nfuzz corpus (loader): {len(files)} inputs: {counts}")
    assert not bad, "\n".join(bad)


def test_tokenizer_corpus_replays_cleanly(smollm2_path):
    pytest.importorskip("atheris", reason="atheris is not installed: the tokenizer corpus is "
                        "FuzzedDataProvider input and cannot be decoded without it")
    files = sorted(str(f) for f in (CORPUS / "tokenizer").iterdir() if f.is_file())
    assert len(files) >= 10, "the tokenizer corpus is missing"
    # libFuzzer runs every file given on its command line, in one process, and
    # names the input it was running when one fails
    r = subprocess.run([sys.executable, str(HERE / "fuzz" / "fuzz_tokenizer.py"), *files], env=_env(),
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    ran = r.stderr.count("Running: ")
    print(f"\nfuzz corpus (tokenizer): {ran} inputs replayed")
    assert ran == len(files), r.stderr[-3000:]
