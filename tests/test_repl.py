"""`pyrt chat` driven as a person would: the real command in a pseudo-terminal
(pexpect), typing, reading the streamed reply, Ctrl-C mid-reply, the commands,
sessions on disk, history across sessions and the context-overflow policy.

Cost: three chat processes, ~25-40 s in all on 2 cores (replies are capped by -n)."""
from __future__ import annotations

import os
import re
import sys
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
    child.sendintr()


def readline_ready(child) -> None:
    """Wait until readline is reading keys at an (empty) prompt: a typed key
    echoes and its rubout erases it. A ^C sent before readline sets up the
    terminal could be lost; after this event it is not."""
    child.send("x")
    child.expect_exact("x")
    child.send("\x7f")
    child.expect(r"\x08(\x1b\[K| \x08)")


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
    c.expect_exact("/bye")              # readline is reading keys: the recalled line echoed
    interrupt(c)
    c.expect_exact(PROMPT)
    readline_ready(c)
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


# ---- added: pasting, /set shortcuts, colors, base-model warning -----------------------------------

def test_a_paste_is_one_message(smollm2_path, tmp_path):
    cache = tmp_path / "cache"
    c = spawn(smollm2_path, cache, "-n", "4")
    assert "\x1b[?2004h" not in c.before            # the inputrc turned bracketed paste off
    c.send("Line one of a paste.\nLine two of it.\nLine three.\n")     # arrives at once, as a paste does
    c.expect_exact(PROMPT)
    out = send(c, "/save pasted")
    assert "Created new session 'pasted' (2 messages" in out           # one user turn, one reply
    turns = LlamaState.load(cache / "sessions" / "pasted.session").extra["conversation"]["turns"]
    assert turns[0] == {"role": "user", "content": "Line one of a paste.\nLine two of it.\nLine three."}
    c.sendline("/bye")
    c.expect(pexpect.EOF)


def test_bracketed_paste_is_one_message(smollm2_path, tmp_path):
    """With readline's bracketed paste on (pyrt turns it on unless an inputrc says
    otherwise), the terminal marks the paste and readline returns it whole."""
    cache = tmp_path / "cache"
    cache.mkdir(parents=True)
    env = env_for(cache)
    (cache / "inputrc").write_text("set editing-mode emacs\n")
    child = pexpect.spawn(sys.executable, ["-m", "pyrt", "chat", "-m", str(smollm2_path), "--temp", "0",
                                           "-n", "4"], env=env, encoding="utf-8", timeout=T,
                          dimensions=(40, 200))
    child.expect_exact(PROMPT)
    assert "\x1b[?2004h" in child.before          # readline asked the terminal to mark pastes
    child.send("\x1b[200~First pasted line.\nSecond pasted line.\x1b[201~")
    child.expect_exact("Second pasted line.")     # readline has taken the paste
    child.send("\r")
    child.expect_exact(PROMPT)
    child.sendline("/save bp")
    child.expect_exact(PROMPT)
    turns = LlamaState.load(cache / "sessions" / "bp.session").extra["conversation"]["turns"]
    assert turns[0]["content"] == "First pasted line.\nSecond pasted line."
    assert len(turns) == 2
    child.sendline("/bye")
    child.expect(pexpect.EOF)


class _FakeLlm:
    def __init__(self, metadata=None, path="base.gguf"):
        self.metadata = metadata or {}
        self.model_path = path


def _repl(**kw):
    import io
    from pyrt.repl import ChatREPL
    params = {"temperature": 0.8, "top_k": 40, "top_p": 0.95, "min_p": 0.05, "typical_p": 1.0,
              "repeat_penalty": 1.0, "repeat_last_n": 64, "presence_penalty": 0.0, "frequency_penalty": 0.0,
              "seed": -1, "num_predict": -1, "stop": []}
    out = io.StringIO()
    r = ChatREPL(_FakeLlm(), params=params, stdin=io.StringIO(), stdout=out, **kw)
    return r, out


def test_set_shortcuts_and_clear_errors():
    r, out = _repl()
    r.command("/set temperature 0.2")
    assert r.params["temperature"] == 0.2 and "Set parameter 'temperature' to '0.2'" in out.getvalue()
    r.command("/set temp 0.3")
    assert r.params["temperature"] == 0.3
    r.command("/set top_k many")
    assert "'many' is not a valid int" in out.getvalue() and r.params["top_k"] == 40
    r.command("/set temperature -1")
    assert "Couldn't set parameter: temperature must be >= 0" in out.getvalue()
    r.command("/set temperature")
    assert "Usage: /set parameter temperature <value>" in out.getvalue()
    r.command("/set tempreature 0.2")
    assert "Unknown /set option 'tempreature'" in out.getvalue()
    r.command('/set system "You are a pirate."')
    assert r.conv.system == "You are a pirate."
    r.command("/set system You are 'quoted' inside.")
    assert r.conv.system == "You are 'quoted' inside."
    r.command("/set mirostat 2")
    r.command("/set dry_multiplier 0.8")
    assert r._api_params()["mirostat_mode"] == 2 and r._api_params()["dry_multiplier"] == 0.8
    r.command("/set mirostat 3")
    assert "mirostat_mode must be 0 (off), 1 (Mirostat) or 2" in out.getvalue()


def test_paste_lines_are_joined_when_more_input_is_waiting(monkeypatch):
    r, _ = _repl()
    r.interactive = True
    typed = ["first line", "second line", "third line", "next message"]
    waiting = [True, True, False]          # the first three arrive together
    monkeypatch.setattr(r, "_input", lambda prompt: typed.pop(0))
    monkeypatch.setattr(r, "_pending_input", lambda: waiting.pop(0) if waiting else False)
    assert r.read_message() == "first line\nsecond line\nthird line"
    assert r.read_message() == "next message"


def test_color_follows_the_terminal_and_no_color(monkeypatch):
    import io
    from pyrt.repl import use_color

    class Tty(io.StringIO):
        def isatty(self):
            return True
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    assert use_color(Tty()) and not use_color(io.StringIO())
    monkeypatch.setenv("NO_COLOR", "1")
    assert not use_color(Tty())
    monkeypatch.delenv("NO_COLOR")
    monkeypatch.setenv("TERM", "dumb")
    assert not use_color(Tty())
    r, out = _repl()
    r.color = True
    r.note("prompt: 3 tokens")
    assert out.getvalue() == "\x1b[2mprompt: 3 tokens\x1b[0m\n"
    r.color = False
    r.note("plain")
    assert out.getvalue().endswith("plain\n")


def test_colored_prompt_in_a_terminal_and_no_color(smollm2_path, tmp_path):
    for no_color, want in (("", True), ("1", False)):
        cache = tmp_path / f"cache{no_color}"
        cache.mkdir(parents=True)
        env = dict(env_for(cache), NO_COLOR=no_color)
        child = pexpect.spawn(sys.executable, ["-m", "pyrt", "chat", "-m", str(smollm2_path)], env=env,
                              encoding="utf-8", timeout=T, dimensions=(40, 200))
        child.expect_exact(PROMPT)
        assert ("\x1b[1m" in child.before) == want
        child.sendline("/bye")
        child.expect(pexpect.EOF)


def test_base_model_warning():
    from pyrt.registry import ensure_model
    from pyrt.repl import base_model_warning
    with pyrt.Llama(str(ensure_model("gemma3-270m")), n_ctx=64) as g:
        w = base_model_warning(g, None)
        assert w and "no chat template" in w and "base model" in w and "smollm2-135m" in w
        assert base_model_warning(g, "gemma") is None          # an explicit template: the user chose
    with pyrt.Llama(str(ensure_model("smollm2-135m")), n_ctx=64) as s:
        assert base_model_warning(s, None) is None


def test_base_model_warning_at_start(tmp_path):
    from pyrt.registry import ensure_model
    cache = tmp_path / "cache"
    c = spawn(ensure_model("gemma3-270m"), cache)
    assert "warning:" in c.before and "base model" in c.before
    c.sendline("/bye")
    c.expect(pexpect.EOF)
