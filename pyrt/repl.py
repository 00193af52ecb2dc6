"""`pyrt chat`: an interactive chat in the terminal (ollama-style commands).

The conversation is rendered with the model's chat template every turn; the
KV cache keeps the longest common prefix, so a turn only evaluates its new
tokens. Ctrl-C during a reply stops it (the partial reply stays in the
conversation); Ctrl-C or Ctrl-D at an empty prompt exits. When the
conversation would not fit the context, the oldest turns are dropped (the
system prompt is kept) and a one-line notice says so.
"""
from __future__ import annotations

import json
import os
import re
import sys
import threading
import time
from pathlib import Path
from typing import Any, TextIO

HELP = """Available commands:
  /set            Set session variables
  /show           Show model information
  /clear          Clear the conversation (the system prompt stays)
  /save <name>    Save the conversation and its KV cache as a session
  /load <name>    Load a saved session
  /bye            Exit
  /?, /help       Help for a command
  /? shortcuts    Help for keyboard shortcuts

Use \"\"\" to begin a multi-line message."""

HELP_SET = """Available /set commands:
  /set parameter <name> <value>  Set a sampling parameter (/set parameter: list them);
                                 /set <name> <value> works too (/set temperature 0.2)
  /set system <string>           Set the system message (quotes optional; \"\"\" for several lines)
  /set history                   Save input history to disk
  /set nohistory                 Do not save input history
  /set format json               Make every reply a JSON object (as ollama)
  /set noformat                  Free-form replies again
  /set verbose                   Show timings after each reply
  /set quiet                     Hide timings"""

HELP_SHOW = """Available /show commands:
  /show info          Model details
  /show parameters    Sampling parameters of this session
  /show template      The chat template
  /show system        The system message"""

HELP_SHORTCUTS = """Available keyboard shortcuts:
  Ctrl + c            Stop the reply / clear the line / exit at an empty prompt
  Ctrl + d            Exit (at an empty prompt)
  Ctrl + a / Ctrl + e Move to the beginning / end of the line
  Ctrl + r            Search the input history
  Up / Down           Previous / next input"""

# name -> (type, description); names follow ollama's Modelfile parameters
PARAMETERS: dict[str, tuple[type, str]] = {
    "temperature": (float, "randomness; 0 = greedy"),
    "top_k": (int, "keep the k most likely tokens (0: off)"),
    "top_p": (float, "nucleus sampling (1: off)"),
    "min_p": (float, "drop tokens below min_p x the top probability (0: off)"),
    "typical_p": (float, "locally typical sampling (1: off)"),
    "repeat_penalty": (float, "penalty for repeated tokens (1: off)"),
    "repeat_last_n": (int, "how many recent tokens the penalties look at"),
    "presence_penalty": (float, "penalty for tokens already present"),
    "frequency_penalty": (float, "penalty proportional to token counts"),
    "seed": (int, "random seed (-1: a new random seed each reply)"),
    "num_predict": (int, "most tokens per reply (-1: until the context is full)"),
    "stop": (str, "stop sequence(s), space separated"),
    "mirostat": (int, "Mirostat sampling: 0 off, 1 Mirostat, 2 Mirostat 2.0"),
    "mirostat_tau": (float, "Mirostat target entropy"),
    "mirostat_eta": (float, "Mirostat learning rate"),
    "dry_multiplier": (float, "DRY repetition penalty (0: off)"),
    "xtc_probability": (float, "XTC: chance to drop the top choices (0: off)"),
    "xtc_threshold": (float, "XTC: probability that makes a choice 'top'"),
    "speculative": (str, "speculative decoding: lookup, draft or off (the same replies, sooner)"),
}
_API_NAMES = {"repeat_last_n": "penalty_last_n", "num_predict": "max_tokens", "mirostat": "mirostat_mode"}
# other spellings people type (llama.cpp / llama-cpp-python names) -> PARAMETERS
_PARAM_ALIASES = {"temp": "temperature", "penalty_last_n": "repeat_last_n", "max_tokens": "num_predict",
                  "n_predict": "num_predict", "last_n_tokens_size": "repeat_last_n"}


def use_color(stream: TextIO) -> bool:
    """Color only on a terminal, never with NO_COLOR set (no-color.org) or TERM=dumb."""
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _inputrc_sets(variable: str) -> bool:
    path = os.environ.get("INPUTRC") or os.path.expanduser("~/.inputrc")
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return variable in f.read()
    except OSError:
        return False


# SGR codes: subtle styling only (bold prompt, dim notes and statistics)
_BOLD, _DIM, _RESET = "\x1b[1m", "\x1b[2m", "\x1b[0m"
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class Progress:
    """A one-line progress indicator on stderr that appears only when the work
    takes longer than `delay` seconds (and stderr is a terminal)."""

    FRAMES = "|/-\\"

    def __init__(self, label: str, delay: float = 1.0, stream: TextIO | None = None):
        self.label = label
        self.delay = delay
        self.stream = stream or sys.stderr
        self.done = 0
        self.total = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._shown = False

    def update(self, done: int, total: int) -> None:
        self.done, self.total = done, total

    def _run(self) -> None:
        if self._stop.wait(self.delay):
            return
        i = 0
        while not self._stop.is_set():
            extra = f" {self.done}/{self.total} tokens" if self.total else ""
            self.stream.write(f"\r{self.FRAMES[i % 4]} {self.label}{extra} ")
            self.stream.flush()
            self._shown = True
            i += 1
            self._stop.wait(0.1)

    def start(self) -> "Progress":
        if self.stream.isatty():
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self._thread = None
        if self._shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()

    def __enter__(self) -> "Progress":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def sessions_dir() -> Path:
    from .registry import cache_root
    return cache_root() / "sessions"


def history_path() -> Path:
    from .registry import cache_root
    return cache_root() / "chat_history"


class ChatREPL:
    def __init__(self, llm, *, params: dict[str, Any], system: str | None = None,
                 verbose: bool = False, history_file: Path | None = None,
                 stdin: TextIO | None = None, stdout: TextIO | None = None):
        from .chat import Conversation
        self.llm = llm
        self.params = dict(params)
        self.conv = Conversation(system)
        self.verbose = verbose
        self.format: str | None = None        # "json": replies constrained to a JSON object
        self.history_file = history_file
        self.out = stdout or sys.stdout
        self.interactive = sys.stdin.isatty() if stdin is None else False
        self.color = self.interactive and use_color(self.out)
        self._readline = None
        if self.interactive:
            try:
                import readline
                self._readline = readline
                # a paste arrives as one input (newlines kept) instead of one per line;
                # Python turns this off by default, GNU readline >= 8.0 supports it.
                # An inputrc that sets it has the last word.
                if not _inputrc_sets("enable-bracketed-paste"):
                    readline.parse_and_bind("set enable-bracketed-paste on")
                    readline.parse_and_bind("set enable-active-region off")
            except ImportError:   # Windows without pyreadline: plain input()
                pass
        self._history_loaded = False

    # ---- output ---------------------------------------------------------------
    def say(self, text: str = "") -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def note(self, text: str) -> None:
        """A line that is not part of the conversation (statistics, notices): dim."""
        self.say(f"{_DIM}{text}{_RESET}" if self.color else text)

    def _prompt(self, text: str) -> str:
        if not self.color:
            return text
        if self._readline is not None:      # \001..\002: zero-width for readline's line editing
            return f"\001{_BOLD}\002{text}\001{_RESET}\002"
        return f"{_BOLD}{text}{_RESET}"

    # ---- history ---------------------------------------------------------------
    def _load_history(self) -> None:
        rl = self._readline
        if rl is None or self.history_file is None:
            return
        rl.set_history_length(2000)
        try:
            if self.history_file.is_file():
                rl.read_history_file(str(self.history_file))
        except OSError:
            pass
        self._history_loaded = True

    def _save_history_line(self) -> None:
        rl = self._readline
        if rl is None or self.history_file is None:
            return
        try:
            self.history_file.parent.mkdir(parents=True, exist_ok=True)
            if not self.history_file.exists():
                self.history_file.touch(mode=0o600)
            rl.append_history_file(1, str(self.history_file))
        except (OSError, AttributeError):
            pass

    # ---- input ---------------------------------------------------------------
    def _input(self, prompt: str) -> str:
        if self.interactive:
            return input(self._prompt(prompt))
        line = sys.stdin.readline()
        if not line:
            raise EOFError
        return line.rstrip("\n")

    def _pending_input(self) -> bool:
        """More input already waiting right after a line was read: the rest of
        a paste (a typist cannot press Enter and type within 30 ms). Only on a
        terminal; piped input is one message per line."""
        if not self.interactive:
            return False
        try:
            import select
            return bool(select.select([sys.stdin], [], [], 0.03)[0])
        except (OSError, ValueError, ImportError):
            return False

    def _read_pasted(self, line: str) -> str:
        """`line` plus the lines of the same paste (where the terminal or
        readline did not deliver the paste as one input)."""
        lines = [line]
        while self._pending_input():
            try:
                lines.append(self._input(""))
            except (EOFError, KeyboardInterrupt):
                break
        return "\n".join(lines)

    def read_message(self) -> str | None:
        """One message (multi-line between triple quotes); None at EOF/exit."""
        while True:
            try:
                line = self._input(">>> ")
            except EOFError:
                self.say()
                return None
            except KeyboardInterrupt:
                buf = self._readline.get_line_buffer() if self._readline else ""
                self.say()
                if buf:
                    continue           # Ctrl-C with text typed: drop the line
                return None            # Ctrl-C at an empty prompt: exit
            self._save_history_line()
            if line.lstrip().startswith('"""') or re.match(r"^/set system\s+\"\"\"", line):
                return self._read_multiline(line)
            if not line.startswith("/"):
                line = self._read_pasted(line)
            return line

    def _read_multiline(self, first: str) -> str | None:
        head, _, rest = first.partition('"""')
        if rest.endswith('"""') and len(rest) >= 3:
            return head + rest[:-3]
        lines = [rest] if rest else []
        while True:
            try:
                line = self._input("... ")
            except EOFError:
                self.say()
                return None
            except KeyboardInterrupt:
                self.say()
                return ""               # abandon the multi-line message
            self._save_history_line()
            if line.rstrip().endswith('"""'):
                lines.append(line.rstrip()[:-3])
                break
            lines.append(line)
        return head + "\n".join(lines)

    # ---- main loop ---------------------------------------------------------------
    def loop(self) -> int:
        self._load_history()
        while True:
            msg = self.read_message()
            if msg is None:
                return 0
            if not msg.strip():
                continue
            if msg.startswith("/"):
                if self.command(msg) == "exit":
                    return 0
                continue
            self.chat(msg)

    # ---- a chat turn ---------------------------------------------------------------
    def _api_params(self) -> dict:
        p = {}
        for k, v in self.params.items():
            if k == "seed":
                p["seed"] = None if v is None or v < 0 else v
            elif k == "num_predict":
                p["max_tokens"] = None if v is None or v < 0 else v
            elif k == "stop":
                p["stop"] = v or None
            else:
                p[_API_NAMES.get(k, k)] = v
        return p

    def chat(self, text: str) -> None:
        llm = self.llm
        self.conv.add("user", text)
        params = self._api_params()
        if self.format == "json":
            params["response_format"] = {"type": "json_object"}
        n_ctx = llm.n_ctx()
        max_tokens = params.get("max_tokens")
        reserve = min(max_tokens, n_ctx // 2) if max_tokens else n_ctx // 4
        try:
            dropped = self.conv.fit(lambda msgs: len(llm.chat_tokens(msgs)), n_ctx - reserve)
        except ValueError as e:
            self.conv.turns.pop()
            self.say(f"error: {e}")
            return
        if dropped:
            self.say(f"[context full: dropped the {dropped} oldest message{'s' if dropped != 1 else ''} "
                     f"(the system prompt is kept) and re-read the conversation]")
        progress = Progress("reading the prompt")
        llm.last_stats = {}
        reply: list[str] = []
        finish = None
        t0 = time.perf_counter()
        try:
            progress.start()
            stream = llm.create_chat_completion(self.conv.messages(), stream=True, progress=progress.update,
                                                **params)
            for chunk in stream:
                progress.stop()
                ch = chunk["choices"][0]
                piece = ch["delta"].get("content")
                if piece:
                    reply.append(piece)
                    self.out.write(piece)
                    self.out.flush()
                if ch["finish_reason"]:
                    finish = ch["finish_reason"]
        except KeyboardInterrupt:
            progress.stop()
            self.out.write("\n")
            self.say("[reply stopped]")
            finish = "interrupted"
        except (ValueError, RuntimeError, MemoryError) as e:   # template, context, C errors
            progress.stop()
            self.conv.turns.pop()
            self.say(f"\nerror: {e}")
            return
        finally:
            progress.stop()
        if finish == "interrupted" and not reply:
            self.conv.turns.pop()        # nothing was said: the turn did not happen
        else:
            self.conv.add("assistant", "".join(reply))
        if finish != "interrupted":
            self.say()
            if finish == "length" and llm.n_tokens() >= n_ctx - 1:
                self.say("[the reply was cut: the context is full; older turns will be dropped next time]")
            self.say()
        if self.verbose:
            self.print_stats(time.perf_counter() - t0)

    def print_stats(self, wall: float) -> None:
        s = self.llm.last_stats
        if not s:
            return
        pn, cn = int(s["prompt_n"]), int(s["cached_n"])
        new = pn - cn
        pms, gms, gn = s["prompt_ms"], s["predicted_ms"], int(s["predicted_n"])
        self.note(f"prompt: {pn} tokens ({cn} cached, {new} new) in {pms:.0f} ms, "
                  f"{new / (pms / 1e3) if pms > 0 else 0:.1f} tokens/s")
        self.note(f"reply:  {gn} tokens in {gms:.0f} ms, {gn / (gms / 1e3) if gms > 0 else 0:.1f} tokens/s")
        if "drafted_n" in s:
            self.note(f"speculative: {int(s['accepted_n'])} of {int(s['drafted_n'])} drafted tokens accepted")

    # ---- commands ---------------------------------------------------------------
    def command(self, line: str) -> str | None:
        parts = line.split(None, 1)
        cmd = parts[0]
        arg = parts[1] if len(parts) > 1 else ""
        if cmd in ("/bye", "/exit", "/quit"):
            return "exit"
        if cmd in ("/?", "/help"):
            topic = arg.strip()
            self.say({"set": HELP_SET, "/set": HELP_SET, "show": HELP_SHOW, "/show": HELP_SHOW,
                      "shortcuts": HELP_SHORTCUTS, "shortcut": HELP_SHORTCUTS}.get(topic, HELP))
            return None
        if cmd == "/set":
            self.cmd_set(arg)
        elif cmd == "/show":
            self.cmd_show(arg.strip())
        elif cmd == "/clear":
            self.conv.clear()
            self.say("Cleared session context.")
        elif cmd == "/save":
            self.cmd_save(arg.strip())
        elif cmd == "/load":
            self.cmd_load(arg.strip())
        else:
            self.say(f"Unknown command '{cmd}'. Type /? for help")
        return None

    def cmd_set(self, arg: str) -> None:
        sub, _, rest = arg.strip().partition(" ")
        rest = rest.strip()
        if sub == "parameter":
            self.set_parameter(rest)
        elif sub in PARAMETERS or sub in _PARAM_ALIASES:
            self.set_parameter(f"{sub} {rest}".strip())
        elif sub == "system":
            if rest.startswith('"""'):
                rest = rest[3:]
                if rest.endswith('"""'):
                    rest = rest[:-3]
            elif len(rest) >= 2 and rest[0] == rest[-1] and rest[0] in "\"'":
                rest = rest[1:-1]        # /set system "You are a pirate." -> without the quotes
            if not rest.strip():
                self.conv.system = None
                self.say("Cleared system message.")
            else:
                self.conv.system = rest
                self.say("Set system message.")
        elif sub == "format":
            if rest != "json":
                self.say("Usage: /set format json (or /set noformat)")
            else:
                self.format = "json"
                self.say("Set format to 'json' mode.")
        elif sub == "noformat":
            self.format = None
            self.say("Disabled format.")
        elif sub == "verbose":
            self.verbose = True
            self.say("Set 'verbose' mode.")
        elif sub == "quiet":
            self.verbose = False
            self.say("Set 'quiet' mode.")
        elif sub == "history":
            self.history_file = self.history_file or history_path()
            self.say("History will be saved.")
        elif sub == "nohistory":
            self.history_file = None
            self.say("History will not be saved.")
        elif not sub:
            self.say(HELP_SET)
        else:
            self.say(f"Unknown /set option '{sub}'. {HELP_SET}")

    def set_parameter(self, rest: str) -> None:
        name, _, value = rest.partition(" ")
        value = value.strip()
        name = _PARAM_ALIASES.get(name, name)
        if name and not value and name in PARAMETERS:
            self.say(f"Usage: /set parameter {name} <value>  ({PARAMETERS[name][1]}; "
                     f"now {self.params.get(name)!r})")
            return
        if not name or not value:
            self.say("Usage: /set parameter <name> <value>. Parameters:")
            for k, (_t, d) in PARAMETERS.items():
                self.say(f"  {k:18} {d}")
            return
        if name not in PARAMETERS:
            self.say(f"Unknown parameter '{name}'. Type /set parameter to list them")
            return
        typ = PARAMETERS[name][0]
        try:
            if typ is str:
                v: Any = value if name == "speculative" else value.split()
            else:
                v = typ(value)
        except ValueError:
            self.say(f"Couldn't set parameter: '{value}' is not a valid {typ.__name__}")
            return
        trial = dict(self.params)
        trial[name] = v
        err = _validate(trial)
        if err:
            self.say(f"Couldn't set parameter: {err}")
            return
        self.params = trial
        self.say(f"Set parameter '{name}' to '{value}'")

    def cmd_show(self, what: str) -> None:
        llm = self.llm
        if what == "info":
            md = llm.metadata
            hp = llm.hparams
            n_params = llm.n_params()
            self.say("  Model")
            rows = [("name", md.get("general.name", "?")), ("file", llm.model_path),
                    ("architecture", hp.arch), ("parameters", f"{n_params / 1e6:.1f}M"),
                    ("context length", f"{hp.n_ctx_train} (this session: {llm.n_ctx()})"),
                    ("embedding length", hp.n_embd), ("layers", hp.n_layer),
                    ("chat template", llm.chat_template.name), ("device", llm.device),
                    ("threads", llm.n_threads())]
            for k, v in rows:
                self.say(f"    {k:18}{v}")
        elif what in ("parameters", "params"):
            self.say("Session parameters:")
            for k, v in self.params.items():
                if k == "stop":
                    v = " ".join(json.dumps(s) for s in v) if v else "(none)"
                self.say(f"  {k:20}{v}")
        elif what == "template":
            t = llm.chat_template
            if t.notice:
                self.say(f"# {t.notice}")
            self.say(t.source)
        elif what == "system":
            self.say(self.conv.system if self.conv.system else
                     "No system message was specified (the chat template may add a default one).")
        else:
            self.say(HELP_SHOW)

    def _session_path(self, name: str) -> Path | None:
        if not _NAME_RE.fullmatch(name):
            self.say("Usage: /save <name> and /load <name>, with a name of letters, digits, '.', '_', '-'")
            return None
        return sessions_dir() / f"{name}.session"

    def cmd_save(self, name: str) -> None:
        path = self._session_path(name)
        if path is None:
            return
        state = self.llm.save_state(conversation=self.conv.to_dict(), parameters=self.params,
                                    model_path=self.llm.model_path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            state.save(path)
        except OSError as e:
            self.say(f"error: could not save the session: {e}")
            return
        self.say(f"Created new session '{name}' ({len(self.conv.turns)} messages, "
                 f"{len(state.tokens)} cached tokens)")

    def cmd_load(self, name: str) -> None:
        from .api import LlamaState
        from .chat import Conversation
        path = self._session_path(name)
        if path is None:
            return
        if not path.is_file():
            self.say(f"error: no session named '{name}' (in {path.parent})")
            return
        try:
            state = LlamaState.load(path)
            conv = Conversation.from_dict(state.extra.get("conversation", {}))
            params = state.extra.get("parameters", self.params)
            err = _validate(params) if isinstance(params, dict) and set(params) <= set(PARAMETERS) else "bad parameters"
            if err:
                raise ValueError(f"saved parameters are invalid: {err}")
            self.llm.load_state(state)
        except (OSError, ValueError) as e:
            self.say(f"error: could not load session '{name}': {e}")
            return
        self.conv = conv
        self.params = dict(params)
        self.say(f"Loaded session '{name}' ({len(conv.turns)} messages, {len(state.tokens)} cached tokens)")


def _validate(params: dict) -> str | None:
    """None if the parameters are valid, else the message of the first error."""
    from .sampling import SamplingParams
    try:
        for k, v in params.items():
            if k == "stop":
                if not isinstance(v, list) or not all(isinstance(s, str) for s in v):
                    return "stop must be a list of strings"
                continue
            if k == "speculative":
                if v not in ("lookup", "draft", "off"):
                    return "speculative must be lookup, draft or off"
                continue
            typ = PARAMETERS[k][0]
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float) if typ is float else int)):
                return f"{k} must be a number"
        seed = params.get("seed")
        if seed is not None and seed < -1:
            return "seed must be -1 (random) or an int >= 0"
        n = params.get("num_predict")
        if n is not None and n < -1:
            return "num_predict must be -1 (no limit) or an int >= 0"
        SamplingParams(temperature=params.get("temperature", 0.8), top_k=params.get("top_k", 40),
                       top_p=params.get("top_p", 0.95), min_p=params.get("min_p", 0.05),
                       typical_p=params.get("typical_p", 1.0),
                       repeat_penalty=params.get("repeat_penalty", 1.0),
                       frequency_penalty=params.get("frequency_penalty", 0.0),
                       presence_penalty=params.get("presence_penalty", 0.0),
                       penalty_last_n=params.get("repeat_last_n", 64),
                       seed=seed if seed is not None and seed >= 0 else None,
                       mirostat_mode=params.get("mirostat", 0), mirostat_tau=params.get("mirostat_tau", 5.0),
                       mirostat_eta=params.get("mirostat_eta", 0.1),
                       dry_multiplier=params.get("dry_multiplier", 0.0),
                       xtc_probability=params.get("xtc_probability", 0.0),
                       xtc_threshold=params.get("xtc_threshold", 0.1)).validate()
    except ValueError as e:
        return str(e)
    return None


def run_chat(args) -> int:
    """Entry point of `pyrt chat`."""
    from . import cli_args
    from .api import Llama
    params = {"temperature": args.temp, "top_k": args.top_k, "top_p": args.top_p, "min_p": args.min_p,
              "typical_p": 1.0, "repeat_penalty": args.repeat_penalty, "repeat_last_n": 64,
              "presence_penalty": 0.0, "frequency_penalty": 0.0,
              "seed": -1 if args.seed is None else args.seed,
              "num_predict": -1 if args.n_predict is None else args.n_predict, "stop": [],
              "mirostat": args.mirostat, "mirostat_tau": args.mirostat_ent, "mirostat_eta": args.mirostat_lr,
              "dry_multiplier": args.dry_multiplier, "xtc_probability": args.xtc_probability,
              "xtc_threshold": args.xtc_threshold}
    err = _validate(params)
    if err:
        print(f"pyrt: error: {err}", file=sys.stderr)
        return 2
    template = args.chat_template
    if template and template not in _builtin_names() and os.path.isfile(template):
        with open(template, encoding="utf-8") as f:
            template = f.read()
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(8), "little")
    with Progress("loading the model"):
        llm = Llama(args.model, n_ctx=args.ctx_size, n_threads=args.threads, seed=seed,
                    chat_template=template, device=args.device, verbose=args.verbose,
                    **cli_args.cache_type_kwargs(args))
    try:
        llm.model_name = os.path.basename(llm.model_path)
        tmpl = llm.chat_template
        if tmpl.notice:
            print(f"note: {tmpl.notice}", file=sys.stderr)
        warning = base_model_warning(llm, template)
        if warning:
            print(f"warning: {warning}", file=sys.stderr)
        hist = None if args.no_history else (Path(args.history_file) if args.history_file else history_path())
        repl = ChatREPL(llm, params=params, system=args.system, verbose=args.verbose, history_file=hist)
        if repl.interactive:
            print(f"pyrt chat with {os.path.basename(llm.model_path)} (n_ctx {llm.n_ctx()}). "
                  f"Type /? for help, /bye to exit.", file=sys.stderr)
        return repl.loop()
    finally:
        llm.close()


def base_model_warning(llm, template_override: str | None) -> str | None:
    """A warning when the model looks like a base (pretrained, not chat-tuned)
    model: its GGUF has no chat template, so replies tend to ramble or loop."""
    if template_override:
        return None
    src = llm.metadata.get("tokenizer.chat_template")
    if isinstance(src, str) and src.strip():
        return None
    name = str(llm.metadata.get("general.name") or os.path.basename(llm.model_path))
    return (f"{name} has no chat template: it is probably a base model (pretrained, not tuned for "
            f"chat), so replies may ramble or repeat. For chat, use an instruct model (e.g. "
            f"`pyrt chat -m smollm2-135m`); for plain text continuation, `pyrt generate`")


def _builtin_names() -> list[str]:
    from .chat import BUILTIN_TEMPLATES
    return list(BUILTIN_TEMPLATES)
