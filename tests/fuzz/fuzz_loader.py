#!/usr/bin/env python3
"""Coverage-guided fuzz target (atheris) for the GGUF loader: arbitrary bytes -> parser ->
hyper-parameters / vocabulary / tensor checks -> tokenizer -> C model -> a short generation.

    python tests/fuzz/fuzz_loader.py tests/fuzz/corpus/loader -max_total_time=600 -timeout=2 \
        -rss_limit_mb=4096

Contract checked: every input is rejected with GGUFError / UnsupportedError (or a plain
ValueError from the tokenizer, counted in the log as a gap), or it loads and generates a few
tokens. Any other exception, a crash, a > 2 s input (-timeout) or > 4 GB RSS is a finding.
Plain ValueErrors are logged once per message shape to $PYRT_FUZZ_LOG (default
/tmp/pyrt-fuzz-loader.log) instead of stopping the run.
"""
from __future__ import annotations

import os
import re
import sys
import tempfile

import atheris

with atheris.instrument_imports(include=["pyrt"]):
    import pyrt
    from pyrt._native import ContextFullError, PyrtError, UnsupportedError
    from pyrt.gguf_file import GGUFError, GGUFFile
    from pyrt.model import check_tensors, read_hparams
    from pyrt.tokenizer import load_tokenizer

# one scratch file per process, removed after every input (libFuzzer exits without running
# Python's atexit handlers)
_PATH = os.path.join("/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir(),
                     f"pyrt-fuzz-{os.getpid()}.gguf")
_LOG = os.environ.get("PYRT_FUZZ_LOG", "/tmp/pyrt-fuzz-loader.log")
_SEEN: set[str] = set()
_CLEAN = (GGUFError, UnsupportedError, MemoryError)


def _gap(stage: str, e: BaseException) -> None:
    """A clean but non-GGUFError rejection: log its shape once."""
    shape = re.sub(r"\d+|'[^']*'", "#", str(e))[:120]
    if (stage, shape) not in _SEEN:
        _SEEN.add((stage, shape))
        with open(_LOG, "a") as f:
            f.write(f"{stage}: {type(e).__name__}: {e}\n")


def _plain_value_error(e: BaseException) -> bool:
    return type(e) in (ValueError, PyrtError, ContextFullError)


def TestOneInput(data: bytes) -> None:
    try:
        g = GGUFFile(data)
    except GGUFError:
        return
    try:
        hp = read_hparams(g)
        check_tensors(g, hp)
        load_tokenizer(g.metadata)
    except _CLEAN:
        return
    except Exception as e:
        if _plain_value_error(e):
            _gap("load", e)
            return
        raise
    finally:
        g.close()
    # it passes every Python check: bind it in C and generate
    with open(_PATH, "wb") as f:
        f.write(data)
    try:
        llm = pyrt.Llama(_PATH, n_ctx=32, n_threads=1)
    except _CLEAN:
        return
    except Exception as e:
        if _plain_value_error(e):
            _gap("bind", e)
            return
        raise
    finally:
        os.unlink(_PATH)          # the mapping stays valid until llm.close()
    try:
        ids = llm.tokenize("Hello world! <|im_start|>user 123", special=True)[:8] or [0]
        out = list(llm.generate(ids, max_tokens=3, temperature=0))
        out += list(llm.generate(ids[:2], max_tokens=2, temperature=0.8, seed=1))
        llm.detokenize(out, special=True)
    except _CLEAN:
        pass
    except Exception as e:
        if not _plain_value_error(e):
            raise
        _gap("generate", e)
    finally:
        llm.close()


def main() -> None:
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
