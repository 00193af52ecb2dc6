"""Session fixtures: SmolLM2 requantized by pyrt to Q8_0 / Q4_0 (the files the llama.cpp
references smollm2-135m-q8_0.json / -q4_0.json were made from, byte for byte in tensor data).

Made once by `pyrt.quantize.cached_quantize` and kept under <pyrt cache>/quantized/, keyed by the
source file's sha256, QUANTIZE_VERSION and a digest of the quantizer code, so CI can cache the
directory and a changed quantizer never serves a stale file. Import into conftest.py:

    from fixtures_quant import smollm2_q8_0_path, smollm2_q4_0_path  # noqa: F401
"""
from __future__ import annotations

from pathlib import Path

import pytest


def _quantized(src: Path, qtype: str) -> Path:
    from pyrt.quantize import cached_quantize
    return cached_quantize(src, qtype)


@pytest.fixture(scope="session")
def smollm2_q8_0_path(smollm2_path: Path) -> Path:
    """SmolLM2-135M-Instruct requantized Q4_1 -> Q8_0 by pyrt (token_embd stays Q8_0)."""
    return _quantized(smollm2_path, "q8_0")


@pytest.fixture(scope="session")
def smollm2_q4_0_path(smollm2_path: Path) -> Path:
    """SmolLM2-135M-Instruct requantized Q4_1 -> Q4_0 by pyrt (token_embd stays Q8_0)."""
    return _quantized(smollm2_path, "q4_0")
