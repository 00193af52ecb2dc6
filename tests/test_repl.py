"""`pyrt chat` driven as a person would: the real command in a pseudo-terminal
(pexpect), typing, reading the streamed reply, Ctrl-C mid-reply, the commands,
sessions on disk, history across sessions and the context-overflow policy.

Cost: three chat processes, ~25-40 s in all on 2 cores (replies are capped by -n)."""
from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path

import pytest

pexpect = pytest.importorskip("pexpect")

import pyrt  # noqa: E402
from pyrt.api import LlamaState  # noqa: E402

PROMPT = ">>> "
T = 60       # seconds per expect: generous; a hang fails instead of blocking CI


def env_for(cache: Path) -> dict:
    root = str(Path(pyrt.__file__).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    env["PYRT_CACHE_DIR"] = str(cache)          # history and sessions go here
    env["TERM"] = "xterm"
    inputrc = cache / "inputrc"
    inputrc.write_text("set enable-bracketed-paste off\n")
    env["INPUTRC"] = str(inputrc)
    return env


def spawn(model: Path, cache: Path, *args: str):
    cache.mkdir(parents=True, exist_ok=True)
    child = pexpect.spawn(sys.executable, ["-m", "pyrt", "chat", "-m", str(model), "--temp", "0", *args],
                          env=env_for(cache), encoding="utf-8", timeout=T, dimensions=(40, 200))
    child.expect_exact(PROMPT)
    return child


def send(child, line: str) -> str:
    """Type a line; return what was printed before the next prompt."""
    child.sendline(line)
    child.expect_exact(PROMPT)
    return child.before


def interrupt(child) -> None:
    time.sleep(0.3)               # readline needs a moment before it sees ^C as an interrupt
    child.sendintr()


@pytest.fixture(scope="module")
def tail_tokens(smollm2_path):
    """Tokens a follow-up turn adds after the cached previous reply (ChatML)."""
    with pyrt.Llama(str(smollm2_path), n_ctx=64) as llm:
        return len(llm.tokenize("<|im_end|>\n<|im_start|>user\nAnd 3+3?<|im_end|>\n<|im_start|>assistant\n",
                                special=True))


def test_chat_session(smollm2_path, tmp_path, tail_tokens):
    cache = tmp_path / "cache"
    c = spawn(smollm2_path, cache, "-n", "32", "-c", "1024")

    out = send(c, "What is 2+2?")
    assert "4" in out                                    # greedy: "The answer ... is 4."

    assert "Set 'verbose' mode." in send(c, "/set verbose")
    out = send(c, "And 3+3?")
    m = re.search(r"prompt: (\d+) tokens \((\d+) cached, (\d+) new\)", out)
    assert m, out
    total, cached, new = map(int, m.groups())
    assert cached > 0 and new == tail_tokens and total == cached + new   # only the new turn was read
    assert re.search(r"reply:  \d+ tokens in \d+ ms", out)

    # Ctrl-C mid-reply: back at the prompt, partial reply kept
    assert "Set parameter 'num_predict' to '400'" in send(c, "/set parameter num_predict 400")
    c.sendline("Write a long story about a dragon.")
    c.expect_exact("dragon.\r\n")      # the echo of the typed line
    c.expect(r"\w+ \w+ \w+")           # a few streamed words of the reply
    interrupt(c)
    c.expect_exact("[reply stopped]")
    c.expect_exact(PROMPT)

    out = send(c, "/save s1")
    assert "Created new session 's1' (6 messages" in out
    state = LlamaState.load(cache / "sessions" / "s1.session")
    turns = state.extra["conversation"]["turns"]
    assert turns[-2] == {"role": "user", "content": "Write a long story about a dragon."}
    assert turns[-1]["role"] == "assistant" and 0 < len(turns[-1]["content"])
    assert state.extra["parameters"]["num_predict"] == 400
    n_saved = len(state.tokens)

    assert "Cleared session context." in send(c, "/clear")
    out = send(c, "/load s1")
    assert f"Loaded session 's1' (6 messages, {n_saved} cached tokens)" in out
    assert "Set parameter 'num_predict' to '8'" in send(c, "/set parameter num_predict 8")
    out = send(c, "Thanks!")
    cached = int(re.search(r"\((\d+) cached", out).group(1))
    assert cached > n_saved // 2            # the loaded KV cache was reused, not recomputed

    out = send(c, "/show info")
    assert "architecture" in out and "llama" in out and "chat template" in out
    out = send(c, "/show parameters")
    assert re.search(r"num_predict\s+8", out) and re.search(r"temperature\s+0\.0", out)
    assert "<|im_start|>" in send(c, "/show template")
    assert "No system message" in send(c, "/show system")
    assert "Set system message." in send(c, "/set system You are a pirate.")
    assert "You are a pirate." in send(c, "/show system")
    assert "Couldn't set parameter" in send(c, "/set parameter temperature -1")
    assert "Couldn't set parameter" in send(c, "/set parameter top_k many")
    assert "Unknown parameter 'bogus'" in send(c, "/set parameter bogus 1")
    assert "Unknown command '/foo'" in send(c, "/foo")
    assert "Available commands" in send(c, "/?")
    assert "Available /set commands" in send(c, "/? set")
    assert "Ctrl + c" in send(c, "/? shortcuts")
    assert "error: no session named 'nope'" in send(c, "/load nope")
    assert "Usage" in send(c, "/save ../escape")

    # multi-line message
    c.sendline('"""')
    c.expect_exact("... ")
    c.sendline("Say hello")
    c.expect_exact("... ")
    c.sendline('in French."""')
    c.expect_exact(PROMPT)

    c.sendline("/bye")
    c.expect(pexpect.EOF)
    c.close()
    assert c.exitstatus == 0
    history = (cache / "chat_history").read_text()
    assert "What is 2+2?" in history and "/bye" in history

    # history persists across sessions: Up recalls the last line of the previous session;
    # Ctrl-C with text on the line clears it; Ctrl-C at an empty prompt exits cleanly
    c = spawn(smollm2_path, cache, "-n", "8")
    c.send("\x1b[A")
    c.expect_exact("/bye")
    interrupt(c)
    c.expect_exact(PROMPT)
    interrupt(c)
    c.expect(pexpect.EOF)
    c.close()
    assert c.exitstatus == 0


def test_context_overflow_policy(smollm2_path, tmp_path):
    """A small context: older turns are dropped with a one-line notice, the system
    prompt stays, the chat goes on; Ctrl-D exits."""
    c = spawn(smollm2_path, tmp_path / "cache", "-c", "160", "-n", "24", "--system", "You are terse.",
              "--no-history")
    for i in range(8):        # each exchange is ~35 tokens: the 4th or 5th overflows
        out = send(c, f"Tell me fact number {i} about the ocean.")
        if "[context full: dropped the" in out:
            break
    else:
        pytest.fail("8 exchanges fit in 160 tokens: no overflow notice")
    assert len(re.findall(r"\[context full: dropped the \d+ oldest messages \(the system prompt is "
                          r"kept\) and re-read the conversation\]", out)) == 1
    assert re.search(r"\]\r?\n.*\w", out)                 # and a reply followed
    out = send(c, "One more fact, please.")               # the chat goes on
    assert "error" not in out
    assert "You are terse." in send(c, "/show system")
    out = send(c, "/save o")
    n = int(re.search(r"\((\d+) messages", out).group(1))
    assert n < 2 * (i + 2)                                # not every exchange was kept
    c.sendeof()
    c.expect(pexpect.EOF)
    c.close()
    assert c.exitstatus == 0
    assert not (tmp_path / "cache" / "chat_history").exists()      # --no-history


def test_message_too_long_for_the_context(smollm2_path, tmp_path):
    c = spawn(smollm2_path, tmp_path / "cache", "-c", "64", "-n", "8", "--no-history")
    out = send(c, "word " * 80)
    assert "error:" in out and "does not fit in the context window" in out
    out = send(c, "Hi")                # still usable afterwards
    c.sendline("/bye")
    c.expect(pexpect.EOF)
    c.close()
    assert c.exitstatus == 0
