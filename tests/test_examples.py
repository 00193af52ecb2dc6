"""The scripts in examples/ run as documented and print what they promise.

Cost: five short Python processes, ~10 s on 2 cores."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import pyrt

ROOT = Path(pyrt.__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def run_example(name: str, *args: str) -> str:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    p = subprocess.run([sys.executable, str(EXAMPLES / name), *args], capture_output=True, text=True,
                       timeout=300, env=env)
    assert p.returncode == 0, p.stderr
    return p.stdout


def test_hello(smollm2_path):
    out = run_example("hello.py", str(smollm2_path))
    assert out.startswith("Paris.") and "(16 tokens, finish_reason=length)" in out


def test_streaming(smollm2_path):
    out = run_example("streaming.py", str(smollm2_path))
    # greedy continuation, cut just before the first "." by the stop string
    assert out.startswith(" girl named Emma who loved to play in the sun\n")
    assert out.rstrip().endswith("[finish_reason=stop]")


def test_chat(smollm2_path):
    out = run_example("chat.py", str(smollm2_path))
    assert out.count("assistant: ") == 2 and "4" in out
    reused = [int(x) for x in re.findall(r"(\d+) reused from the cache", out)]
    assert reused[0] == 0 and reused[1] > 30          # the second turn reused the first


def test_embeddings(smollm2_path):
    out = run_example("embeddings.py", str(smollm2_path))
    assert "3 embeddings of dimension 576" in out
    sims = [float(x) for x in re.findall(r"= (-?[\d.]+)", out)]
    assert len(sims) == 2 and sims[0] > sims[1]       # the kitten is closer to the cat than stocks are


def test_server_client(smollm2_path):
    pytest.importorskip("openai")
    from pyrt.server import Server
    with pyrt.Llama(str(smollm2_path), n_ctx=512) as llm:
        srv = Server(llm, "127.0.0.1", 0)
        t = threading.Thread(target=srv.serve_forever, daemon=True)
        t.start()
        try:
            out = run_example("server_client.py", srv.url)
        finally:
            srv.shutdown()
    assert "model: SmolLM2-135M-Instruct.Q4_1" in out
    assert re.search(r"chat: .*4", out)
    assert re.search(r"stream: \S", out)
    assert "embeddings: 2 x 576" in out
