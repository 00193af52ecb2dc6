"""Bit identity with llama.cpp, as the README claims it, on every x86 kernel table this CPU runs.

The reference (tests/data/reference/identity/*.npz) is llama.cpp's AVX2 build's raw float32
logits, made by `scripts/llamacpp_reference.py` (rerun it to regenerate; its docstring gives the
format and the llama.cpp settings): for SmolLM2-135M Q4_1 and gemma-3-270m Q4_K_M, the 512-token
reference text in one batch and greedy decoding of nine prompts until an end-of-generation token
(or 64 tokens; SmolLM2's two chat prompts end on <|im_end|>, the Gemma base model's runs all
reach the cap). Asserted, per model and table:

- the whole [512, n_vocab] float32 logits array is bit-identical (sha256 of its bytes; a
  mismatch names the first position that differs and the largest difference in its top 32);
- every greedy step's logits row is bit-identical, the tokens are the same, and generation stops
  where llama.cpp's did: at the same end-of-generation token (not yielded by pyrt) or at the cap.

The tables: `avx512` and `avx2` (PYRT_KERNELS), each with and without the AVX-VNNI GEMMs
(PYRT_NO_VNNI=1), since their matmul code differs. Each runs in its own process, because the
table is chosen once per process. A table the CPU lacks is skipped with the reason; a table that
is the same code as one already checked (same entries: e.g. PYRT_NO_VNNI on a CPU without VNNI)
is skipped saying so. The scalar table is not bit-identical (docs/ARCHITECTURE.md,
'Correctness'); tests/test_kernels.py holds it to its tolerances.
Runtime: ~15 s (SmolLM2) + ~35 s (Gemma) per table on 2 cores.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import REF

import pyrt
from pyrt._native import lib

HERE = Path(__file__).resolve().parent
IDENTITY = REF / "identity"
MODELS = {
    "smollm2-135m-q4_1": "smollm2_path",
    "gemma-3-270m-q4_k_m": "gemma3_path",
}
# models whose reference has greedy runs that end on an end-of-generation token (SmolLM2 is an
# instruct model: its chat prompts end with <|im_end|>; gemma-3-270m is the base model and runs
# to the 64-token cap on every prompt, which is then where both must stop)
ENDS_ON_EOG = {"smollm2-135m-q4_1"}
# label -> (table PYRT_KERNELS selects, extra environment)
TABLES = {
    "avx512": ("avx512", {}),
    "avx512-novnni": ("avx512", {"PYRT_NO_VNNI": "1"}),
    "avx2": ("avx2", {}),
    "avx2-novnni": ("avx2", {"PYRT_NO_VNNI": "1"}),
}
AVAILABLE = {"avx512": bool(lib.pyrt_kernels_available(lib.PYRT_KERNELS_AVX512)),
             "avx2": bool(lib.pyrt_kernels_available(lib.PYRT_KERNELS_AVX2))}


def worker_env(label: str) -> dict:
    table, extra = TABLES[label]
    env = {k: v for k, v in os.environ.items() if k not in ("PYRT_NO_VNNI", "PYRT_NO_AVX512")}
    env.update(extra, PYRT_KERNELS=table)
    root = str(Path(pyrt.__file__).resolve().parent.parent)     # the pyrt this session imports
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    return env


@pytest.fixture(scope="session")
def fingerprints() -> dict:
    """label -> (table name, fingerprint of its entries) for every table the CPU has."""
    out = {}
    for label, (table, _) in TABLES.items():
        if AVAILABLE.get(table):
            r = subprocess.run([sys.executable, str(HERE / "fidelity_worker.py"), "--fingerprint"],
                               env=worker_env(label), capture_output=True, text=True, timeout=300)
            assert r.returncode == 0, r.stderr
            out[label] = tuple(json.loads(r.stdout))
    return out


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@pytest.mark.parametrize("label", list(TABLES))
@pytest.mark.parametrize("model", list(MODELS))
def test_bit_identical_to_llamacpp(request, model, label, fingerprints, tmp_path):
    table = TABLES[label][0]
    if not AVAILABLE.get(table):
        pytest.skip(f"{label}: this CPU/build has no {table} table")
    same = next((other for other in TABLES if other != label and other in fingerprints
                 and list(TABLES).index(other) < list(TABLES).index(label)
                 and fingerprints[other] == fingerprints[label]), None)
    if same:
        pytest.skip(f"{label} is the same table as {same} on this CPU (identical entries), "
                    f"checked there")
    path = request.getfixturevalue(MODELS[model])
    ref_file = IDENTITY / f"{model}.npz"
    ref = np.load(ref_file)
    assert sha256_file(path) == str(ref["sha256"]), f"{ref_file.name} was made from another model file"
    if model in ENDS_ON_EOG:
        assert any(ref["greedy_eog"]), "the reference must hold a run that ends on an EOG token"

    out = tmp_path / "result.json"
    r = subprocess.run([sys.executable, str(HERE / "fidelity_worker.py"), str(path), str(ref_file), str(out)],
                       env=worker_env(label), capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stdout + r.stderr
    res = json.loads(out.read_text())
    t = res["text"]
    print(f"\n{model} on table {label} (pyrt ran '{res['kernels']}', entries {res['fingerprint']}): "
          f"text logits {'identical' if t['whole_equal'] else 'DIFFER'} "
          f"({t['n'] - t['rows_differing']}/{t['n']} rows)")
    assert (res["kernels"], res["fingerprint"]) == fingerprints[label]

    n_ref = len(ref["greedy_eog"])
    if len(res["greedy"]) < n_ref:
        print(f"  (PYRT_IDENTITY_PROMPTS: {len(res['greedy'])} of {n_ref} greedy prompts checked)")
    assert res["greedy"], "no greedy prompt was checked"
    failures = []
    if not t["whole_equal"] or t["rows_differing"]:
        failures.append(f"text logits differ in {t['rows_differing']}/{t['n']} rows, first at position "
                        f"{t['first_bad_row']} (max |Δ| over its top 32: {t.get('max_abs_diff_top32_there')})")
    for g in res["greedy"]:
        want, ours = g["ref"], g["ours"]
        if g["ref_eog"]:
            assert g["eog_is_eog"], f"pyrt does not treat llama.cpp's stop token {want[-1]} as end-of-generation"
            want_yielded = want[:-1]
        else:
            want_yielded = want
        print(f"  prompt {g['prompt_ids'][:6]}...: {len(ours)} tokens, "
              f"{'stopped at EOG' if g['ours_eog'] else 'reached the cap'} "
              f"(llama.cpp: {len(want_yielded)}, {'EOG ' + str(want[-1]) if g['ref_eog'] else 'cap'})")
        if ours != want_yielded:
            k = next((i for i, (a, b) in enumerate(zip(ours + [None], want_yielded + [None])) if a != b))
            failures.append(f"greedy {g['prompt_ids'][:6]}...: tokens differ at step {k}: "
                            f"ours {ours[k:k + 3]} llama.cpp {want_yielded[k:k + 3]}")
        elif g["ours_eog"] != g["ref_eog"]:
            failures.append(f"greedy {g['prompt_ids'][:6]}...: pyrt {'stopped' if g['ours_eog'] else 'went on'} "
                            f"where llama.cpp {'stopped' if g['ref_eog'] else 'went on'}")
        if g["first_bad_step"] is not None:
            failures.append(f"greedy {g['prompt_ids'][:6]}...: logits differ first at step {g['first_bad_step']}")
    assert not failures, f"{model} on {label}:\n" + "\n".join(failures)
