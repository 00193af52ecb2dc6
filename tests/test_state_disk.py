"""KV state on disk: Llama.save_state(path) / load_state(path) across Llama
objects, validation of corrupted, truncated, foreign and other-model files,
and `pyrt generate --prompt-cache FILE`."""
from __future__ import annotations

import pytest

import pyrt
from pyrt.cli import main

SYSTEM = "You are a careful assistant who answers in one short sentence. " * 20


@pytest.fixture(scope="module")
def path(smollm2_path):
    return str(smollm2_path)


def test_save_to_disk_and_continue_in_another_llama(path, tmp_path):
    f = tmp_path / "prompt.state"
    with pyrt.Llama(path, n_ctx=512, seed=0) as a:
        ids = a.tokenize(SYSTEM + "Q: What is the capital of France? A:")
        want = list(a.generate(ids, max_tokens=8, temperature=0))
        a.reset()
        a.eval_prefix(ids)
        state = a.save_state(f)
        assert state.tokens == ids and f.stat().st_mode & 0o077 == 0
    with pyrt.Llama(path, n_ctx=512, seed=0) as b:
        b.load_state(str(f))
        assert b.n_tokens == len(ids)
        assert list(b.generate(ids, max_tokens=8, temperature=0)) == want
        out = b.create_completion(ids, max_tokens=1, temperature=0)
        assert out["usage"]["prompt_tokens_details"]["cached_tokens"] == len(ids) - 1


def test_bad_files_are_clear_errors(path, tmp_path):
    f = tmp_path / "s.state"
    with pyrt.Llama(path, n_ctx=256) as llm:
        llm.eval_prefix(llm.tokenize("Hello there, how are you today?"))
        llm.save_state(f)
        data = f.read_bytes()

        bad = tmp_path / "flipped.state"
        bad.write_bytes(data[:-100] + bytes([data[-100] ^ 0xFF]) + data[-99:])
        with pytest.raises(ValueError, match="checksum"):
            llm.load_state(bad)
        short = tmp_path / "short.state"
        short.write_bytes(data[:-10])
        with pytest.raises(ValueError, match="truncated"):
            llm.load_state(short)
        foreign = tmp_path / "foreign.state"
        foreign.write_bytes(b"GGUF" + bytes(200))
        with pytest.raises(ValueError, match="not a pyrt state file"):
            llm.load_state(foreign)
        with pytest.raises(FileNotFoundError):
            llm.load_state(tmp_path / "missing.state")
        assert llm.n_tokens > 0                             # a failed load leaves the cache alone

    from pyrt.registry import ensure_model
    with pyrt.Llama(str(ensure_model("gemma3-270m")), n_ctx=256) as other:
        with pytest.raises(ValueError, match="different model file"):
            other.load_state(f)
    with pyrt.Llama(path, n_ctx=4) as small:
        with pytest.raises(pyrt.ContextFullError):
            small.load_state(f)


def test_generate_prompt_cache(path, tmp_path, capsys):
    cache = tmp_path / "prompt.cache"
    prompt = SYSTEM + "Q: Name a color. A:"
    argv = ["generate", "-m", path, "-n", "6", "--temp", "0", "-v", prompt]
    assert main(argv) == 0
    plain = capsys.readouterr().out
    assert main(argv[:-1] + ["--prompt-cache", str(cache), prompt]) == 0
    first = capsys.readouterr()
    assert first.out == plain and cache.is_file()
    assert "0 of" in first.err and "saved" in first.err
    assert main(argv[:-1] + ["--prompt-cache", str(cache), prompt]) == 0
    second = capsys.readouterr()
    assert second.out == plain
    with pyrt.Llama(path, n_ctx=64) as m:
        n = len(m.tokenize(prompt, special=True))
    assert f": {n} of {n} prompt tokens reused, 0 evaluated" in second.err and "saved" not in second.err
    # another prompt with the same system part reuses that part
    other = SYSTEM + "Q: Name an animal. A:"
    assert main(argv[:-1] + ["--prompt-cache", str(cache), other]) == 0
    third = capsys.readouterr().err
    reused = int(third.split("prompt cache ")[1].split(": ")[1].split(" of ")[0])
    assert reused > 200
    cache.write_bytes(b"garbage")
    assert main(argv[:-1] + ["--prompt-cache", str(cache), prompt]) == 1
    assert "not a pyrt state file" in capsys.readouterr().err
