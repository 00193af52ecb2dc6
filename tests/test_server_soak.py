"""A short run of benchmarks/soak.py in the normal suite: 40 mixed requests
(OpenAI and ollama, streamed or not, some hung up midway, some invalid) from 4
clients against a `pyrt serve` process on SmolLM2, with at most 8 tokens each.
Every request that should succeed must, every stream must be well-formed, the
server must stay healthy, count every request in /metrics, keep its RSS within
5 % from request 10 on, and exit 0 on SIGTERM. Cost: ~15 s on 2 cores."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SOAK = Path(__file__).resolve().parent.parent / "benchmarks" / "soak.py"


def load_soak():
    spec = importlib.util.spec_from_file_location("pyrt_soak", SOAK)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["pyrt_soak"] = mod            # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def test_soak_short(smollm2_path):
    soak = load_soak()
    rep = soak.soak(str(smollm2_path), n_requests=40, clients=4, max_tokens=8, seed=1, cancel_rate=0.2,
                    bad_rate=0.1, ctx=1024, rss_mark=10)
    print(rep.summary())
    assert rep.problems == [], rep.summary() + "\n" + rep.server_tail
    assert rep.ok + rep.cancelled + rep.rejected == 40
    assert rep.ok >= 20 and rep.cancelled >= 1 and rep.rejected >= 1     # the mix really happened
    assert rep.exit_code == 0 and rep.rss_mark_kib > 0


def test_soak_checks_can_fail():
    """The stream checks reject what a broken server could send."""
    soak = load_soak()
    good = 'data: {"choices": [{"finish_reason": null}]}\n\ndata: {"choices": [{"finish_reason": "stop"}]}\n\n' \
           'data: [DONE]\n\n'
    assert soak.check_sse(good, 8) == (None, 0)
    assert soak.check_sse(good.replace("data: [DONE]\n\n", ""), 8)[0]                   # no [DONE]
    assert soak.check_sse(good.replace('"stop"', "null"), 8)[0]                         # no finish_reason
    assert soak.check_sse(good.replace("{\"choices\"", "{choices", 1), 8)[0]            # not JSON
    final = {"done": True, "done_reason": "stop", "total_duration": 5, "load_duration": 0,
             "prompt_eval_count": 3, "prompt_eval_duration": 1, "eval_count": 2, "eval_duration": 1}
    import json
    lines = json.dumps({"done": False, "response": "a"}) + "\n" + json.dumps(final) + "\n"
    assert soak.check_ndjson(lines, 8) == (None, 2)
    assert soak.check_ndjson(lines, 1)[0]                                               # over num_predict
    assert soak.check_ndjson(lines.replace('"done": false', '"done": true'), 8)[0]      # done too early
    assert soak.check_ndjson(lines.rstrip("\n"), 8)[0]
    assert soak.check_ndjson(json.dumps({"error": "boom"}) + "\n", 8)[0]
    rep = soak.Report(rss_mark_kib=100_000, rss_end_kib=106_000, exit_code=0)
    assert rep.problems and "RSS grew" in rep.problems[0]


def test_soak_cli_help(capsys):
    soak = load_soak()
    with pytest.raises(SystemExit) as e:
        soak.main(["--help"])
    assert e.value.code == 0 and "--cancel-rate" in capsys.readouterr().out
