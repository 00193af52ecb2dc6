"""Chat templates from GGUF files, rendered in a locked-down jinja2 sandbox.

A GGUF file's ``tokenizer.chat_template`` is code written by whoever made the
file; it is compiled and rendered only in the sandbox of
:mod:`pyrt.template_sandbox` (jinja2's ``ImmutableSandboxedEnvironment`` plus
render-time, output-size and call limits). Every violation raises
:class:`TemplateError` (a ``ValueError``) with a message that says what was
blocked.

When a model has no template (or an unusable one), a built-in template is
picked from the model's vocabulary (``<start_of_turn>`` -> gemma,
``<|im_start|>`` -> chatml, ...), else a plain "User:/Assistant:" transcript;
:attr:`ChatTemplate.notice` says which, in one line.

This module: the built-in templates and their detection, ``END_OF_TURN_TEXTS``,
message validation, :class:`ChatTemplate` (GGUF template or fallback, rendered
through the sandbox) and :class:`Conversation` (the REPL's overflow policy).
"""
from __future__ import annotations

import json
import math
from typing import Any, Callable, Mapping, Sequence

from .template_sandbox import (DEFAULT_MAX_OUTPUT_CHARS, DEFAULT_RENDER_TIMEOUT, MAX_TEMPLATE_CHARS,
                               TemplateError, _Blocked, _guarded, _Sandbox)

__all__ = ["TemplateError", "ChatTemplate", "BUILTIN_TEMPLATES", "CHAT_FORMATS", "chat_format_template", "normalize_messages",
           "Conversation", "DEFAULT_MAX_OUTPUT_CHARS", "DEFAULT_RENDER_TIMEOUT"]


# ---------------------------------------------------------------------------------------------
# built-in templates (used when a model has none, or on request)
# ---------------------------------------------------------------------------------------------

BUILTIN_TEMPLATES: dict[str, str] = {
    "chatml": (
        "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}"
        "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"),
    "gemma": (
        "{{ bos_token }}{% if messages and messages[0]['role'] == 'system' %}"
        "{% set first = messages[0]['content'] + '\n\n' %}{% set msgs = messages[1:] %}"
        "{% else %}{% set first = '' %}{% set msgs = messages %}{% endif %}"
        "{% for m in msgs %}{{ '<start_of_turn>' + ('model' if m['role'] == 'assistant' else m['role']) + '\n'"
        " + (first if loop.first else '') + m['content'] | trim + '<end_of_turn>\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"),
    "llama3": (
        "{{ bos_token }}{% for m in messages %}{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\n\n'"
        " + m['content'] | trim + '<|eot_id|>' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"),
    "llama2": (
        "{% if messages and messages[0]['role'] == 'system' %}"
        "{% set first = '<<SYS>>\n' + messages[0]['content'] + '\n<</SYS>>\n\n' %}{% set msgs = messages[1:] %}"
        "{% else %}{% set first = '' %}{% set msgs = messages %}{% endif %}"
        "{% for m in msgs %}{% if m['role'] == 'user' %}"
        "{{ bos_token + '[INST] ' + (first if loop.first else '') + m['content'] | trim + ' [/INST]' }}"
        "{% else %}{{ ' ' + m['content'] | trim + eos_token }}{% endif %}{% endfor %}"),
    "phi3": (
        "{% for m in messages %}{{ '<|' + m['role'] + '|>\n' + m['content'] + '<|end|>\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"),
    "mistral-instruct": (
        "{% for m in messages %}{% if m['role'] == 'user' %}{{ '[INST] ' + m['content'] }}"
        "{% elif m['role'] == 'assistant' %}{{ ' [/INST]' + m['content'] + eos_token }}{% endif %}"
        "{% endfor %}{% if add_generation_prompt %}{{ ' [/INST]' }}{% endif %}"),
    "zephyr": (
        "{% for m in messages %}{{ '<|' + m['role'] + '|>\n' + m['content'] + '</s>\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"),
    "alpaca": (
        "{% for m in messages %}{% if m['role'] == 'system' %}{{ m['content'] + '\n\n' }}"
        "{% elif m['role'] == 'user' %}{{ '### Instruction: ' + m['content'] + '\n\n' }}"
        "{% else %}{{ '### Response: ' + m['content'] + eos_token }}{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}{{ '### Response:' }}{% endif %}"),
    "vicuna": (
        "{% if messages and messages[0]['role'] == 'system' %}{{ messages[0]['content'] + ' ' }}"
        "{% else %}{{ \"A chat between a curious user and an artificial intelligence assistant. The assistant "
        "gives helpful, detailed, and polite answers to the user's questions. \" }}{% endif %}"
        "{% for m in messages %}{% if m['role'] == 'user' %}{{ 'USER: ' + m['content'] + ' ' }}"
        "{% elif m['role'] == 'assistant' %}{{ 'ASSISTANT: ' + m['content'] + eos_token }}{% endif %}"
        "{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"),
    "plain": (
        "{% for m in messages %}{% if m['role'] == 'system' %}{{ m['content'] + '\n\n' }}"
        "{% elif m['role'] == 'user' %}{{ 'User: ' + m['content'] + '\n' }}"
        "{% else %}{{ 'Assistant: ' + m['content'] + '\n' }}{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"),
}
# text stop sequences a template implies (for templates without end-of-turn tokens)
_BUILTIN_STOPS = {"plain": ["\nUser:"], "zephyr": ["</s>"], "alpaca": ["### Instruction"],
                  "vicuna": ["USER:"]}

#: llama-cpp-python's ``chat_format`` names -> built-in template (None: the
#: model's own GGUF template, as "chat_template.default" means there).
CHAT_FORMATS: dict[str, str | None] = {
    "chatml": "chatml", "qwen": "chatml", "llama-3": "llama3", "llama3": "llama3",
    "llama-2": "llama2", "llama2": "llama2", "gemma": "gemma", "phi-3": "phi3", "phi3": "phi3",
    "mistral-instruct": "mistral-instruct", "zephyr": "zephyr", "alpaca": "alpaca",
    "vicuna": "vicuna", "plain": "plain", "chat_template.default": None,
}


def chat_format_template(name: str) -> str | None:
    """The built-in template for a llama-cpp-python ``chat_format`` name
    (None: the model's own template); ValueError names the known ones."""
    if not isinstance(name, str) or name not in CHAT_FORMATS:
        known = ", ".join(sorted(CHAT_FORMATS))
        raise ValueError(f"chat_format {name!r} is not supported by pyrt (supported: {known}; "
                         f"or pass chat_template= with jinja source)")
    return CHAT_FORMATS[name]
# vocabulary markers -> builtin template, most specific first
_DETECT = [
    (("<start_of_turn>", "<end_of_turn>"), "gemma"),
    (("<|start_header_id|>", "<|eot_id|>"), "llama3"),
    (("<|im_start|>", "<|im_end|>"), "chatml"),
    (("<|assistant|>", "<|end|>"), "phi3"),
    (("[INST]", "[/INST]"), "llama2"),
]
#: Token texts that end an assistant turn in common templates (stop tokens when present).
END_OF_TURN_TEXTS = ("<|im_end|>", "<end_of_turn>", "<|eot_id|>", "<|end|>", "<|endoftext|>",
                     "<|end_of_text|>", "</s>", "<|return|>")


def detect_builtin(has_token: Callable[[str], bool]) -> str:
    """Name of the built-in template that fits a vocabulary, 'plain' if none does."""
    for markers, name in _DETECT:
        if all(has_token(m) for m in markers):
            return name
    return "plain"


# ---------------------------------------------------------------------------------------------
# messages
# ---------------------------------------------------------------------------------------------

_ROLES = ("system", "developer", "user", "assistant", "tool")


def normalize_messages(messages: Any) -> list[dict]:
    """Validate OpenAI-style chat messages; return plain dict copies with
    string content (text parts joined; None -> ""). Raises ValueError."""
    if not isinstance(messages, (list, tuple)):
        raise ValueError(f"messages must be a list of {{'role': ..., 'content': ...}} dicts, "
                         f"got {type(messages).__name__}")
    if not messages:
        raise ValueError("messages must not be empty")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping):
            raise ValueError(f"messages[{i}] must be a dict, got {type(m).__name__}")
        role = m.get("role")
        if not isinstance(role, str) or role not in _ROLES:
            raise ValueError(f"messages[{i}].role must be one of {', '.join(_ROLES)}; got {role!r}")
        content = m.get("content")
        tool_calls = _tool_calls(m.get("tool_calls"), i) if role == "assistant" else None
        if content is None:
            if role != "assistant":
                raise ValueError(f"messages[{i}].content is required for role {role!r}")
            content = ""
        elif isinstance(content, (list, tuple)):
            parts = []
            for j, p in enumerate(content):
                if isinstance(p, str):
                    parts.append(p)
                    continue
                if not isinstance(p, Mapping) or p.get("type") != "text" or not isinstance(p.get("text"), str):
                    kind = p.get("type") if isinstance(p, Mapping) else type(p).__name__
                    raise ValueError(f"messages[{i}].content[{j}]: only text parts are supported "
                                     f"(got {kind!r})")
                parts.append(p["text"])
            content = "".join(parts)
        elif not isinstance(content, str):
            raise ValueError(f"messages[{i}].content must be a string or a list of text parts, "
                             f"got {type(content).__name__}")
        msg = {"role": role, "content": content}
        name = m.get("name")
        if name is not None:
            if not isinstance(name, str):
                raise ValueError(f"messages[{i}].name must be a string")
            msg["name"] = name
        if tool_calls:
            msg["tool_calls"] = tool_calls
        if role == "tool":
            tcid = m.get("tool_call_id")
            if tcid is not None:
                if not isinstance(tcid, str):
                    raise ValueError(f"messages[{i}].tool_call_id must be a string")
                msg["tool_call_id"] = tcid
        out.append(msg)
    return out


def _tool_calls(calls: Any, i: int) -> list[dict] | None:
    """An assistant message's OpenAI ``tool_calls``, validated; each call as
    {"id", "type": "function", "function": {"name", "arguments"}} with the
    arguments parsed into an object where they are a JSON object's text
    (templates write them with ``| tojson``, as transformers passes them)."""
    if calls is None:
        return None
    if not isinstance(calls, (list, tuple)):
        raise ValueError(f"messages[{i}].tool_calls must be a list")
    out = []
    for j, c in enumerate(calls):
        where = f"messages[{i}].tool_calls[{j}]"
        if not isinstance(c, Mapping):
            raise ValueError(f"{where} must be a dict")
        if c.get("type", "function") != "function":
            raise ValueError(f"{where}.type must be 'function'")
        f = c.get("function")
        if not isinstance(f, Mapping) or not isinstance(f.get("name"), str):
            raise ValueError(f"{where}.function must be a dict with a string 'name'")
        args = f.get("arguments", {})
        if isinstance(args, str):
            try:
                parsed = json.loads(args) if args.strip() else {}
            except json.JSONDecodeError:
                parsed = None
            if isinstance(parsed, dict):
                args = parsed
        elif not isinstance(args, Mapping):
            raise ValueError(f"{where}.function.arguments must be a JSON string or an object")
        cid = c.get("id")
        if cid is not None and not isinstance(cid, str):
            raise ValueError(f"{where}.id must be a string")
        call = {"type": "function", "function": {"name": f["name"], "arguments": args}}
        if cid is not None:
            call["id"] = cid
        out.append(call)
    return out


# ---------------------------------------------------------------------------------------------
# templates
# ---------------------------------------------------------------------------------------------

class ChatTemplate:
    """A compiled, sandboxed chat template.

    >>> t = ChatTemplate(BUILTIN_TEMPLATES["chatml"], name="chatml")
    >>> t.render([{"role": "user", "content": "hi"}])
    '<|im_start|>user\\nhi<|im_end|>\\n<|im_start|>assistant\\n'
    """

    def __init__(self, source: str, *, name: str = "custom", bos_token: str = "", eos_token: str = "",
                 stop: Sequence[str] = (), notice: str | None = None,
                 max_output_chars: int = DEFAULT_MAX_OUTPUT_CHARS,
                 timeout: float = DEFAULT_RENDER_TIMEOUT):
        if not isinstance(source, str):
            raise TemplateError(f"a chat template must be a string, got {type(source).__name__}")
        if len(source) > MAX_TEMPLATE_CHARS:
            raise TemplateError(f"the chat template has {len(source)} characters; the limit is {MAX_TEMPLATE_CHARS}")
        if not isinstance(max_output_chars, int) or max_output_chars < 1024:
            raise ValueError(f"max_output_chars must be an int >= 1024, got {max_output_chars!r}")
        if not isinstance(timeout, (int, float)) or not 0 < timeout <= 600 or math.isnan(timeout):
            raise ValueError(f"timeout must be a number of seconds in (0, 600], got {timeout!r}")
        self.source = source
        self.name = name
        self.bos_token = bos_token
        self.eos_token = eos_token
        self.stop = list(stop)
        self.notice = notice
        self.max_output_chars = max_output_chars
        self.timeout = float(timeout)
        self._env = _Sandbox(max_output_chars)
        self._template = _guarded(lambda: self._env.from_string(source), self.timeout,
                                  f"compiling the {name} chat template")

    @classmethod
    def builtin(cls, name: str, **kw) -> "ChatTemplate":
        if name not in BUILTIN_TEMPLATES:
            raise ValueError(f"unknown built-in chat template {name!r} (known: {', '.join(BUILTIN_TEMPLATES)})")
        return cls(BUILTIN_TEMPLATES[name], name=name, stop=_BUILTIN_STOPS.get(name, ()), **kw)

    @classmethod
    def for_model(cls, metadata: Mapping[str, Any], tokenizer: Any = None, override: str | None = None,
                  **kw) -> "ChatTemplate":
        """The template a model should use: `override` (a built-in name or jinja
        source), else the GGUF's ``tokenizer.chat_template``, else a built-in
        picked from the vocabulary. A GGUF template that does not compile falls
        back too; :attr:`notice` says so."""
        bos = eos = ""
        has_token: Callable[[str], bool] = lambda t: False  # noqa: E731
        if tokenizer is not None:
            if tokenizer.bos_id is not None:
                bos = tokenizer.token_to_piece(tokenizer.bos_id)
            if tokenizer.eos_id is not None:
                eos = tokenizer.token_to_piece(tokenizer.eos_id)
            has_token = lambda t: tokenizer.token_to_id(t) is not None  # noqa: E731
        kw.update(bos_token=bos, eos_token=eos)
        if override is not None:
            if override in BUILTIN_TEMPLATES:
                return cls.builtin(override, **kw)
            return cls(override, name="custom", **kw)
        src = metadata.get("tokenizer.chat_template")
        fallback = detect_builtin(has_token)
        if isinstance(src, str) and src.strip():
            try:
                return cls(src, name="gguf", **kw)
            except TemplateError as e:
                return cls.builtin(fallback, notice=f"the model's chat template is unusable ({e}); "
                                                    f"using the built-in {fallback!r} template", **kw)
        how = "detected from its vocabulary" if fallback != "plain" else "no chat markers in its vocabulary"
        return cls.builtin(fallback, notice=f"the model has no chat template; using the built-in "
                                            f"{fallback!r} template ({how})", **kw)

    def render(self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = True,
               **extra: Any) -> str:
        """Render `messages` (validated by :func:`normalize_messages`) to prompt text."""
        msgs = normalize_messages(messages)
        ctx = dict(extra)
        ctx.update(messages=msgs, add_generation_prompt=bool(add_generation_prompt),
                   bos_token=self.bos_token, eos_token=self.eos_token)
        ctx.setdefault("tools", None)
        limit = self.max_output_chars

        def run() -> str:
            out: list[str] = []
            n = 0
            for chunk in self._template.generate(**ctx):
                n += len(chunk)
                if n > limit:
                    raise _Blocked(f"the output exceeds the limit of {limit} characters")
                out.append(chunk)
            return "".join(out)

        return _guarded(run, self.timeout, f"rendering the {self.name} chat template")

    def __repr__(self) -> str:
        return f"ChatTemplate(name={self.name!r}, {len(self.source)} chars)"


# ---------------------------------------------------------------------------------------------
# a conversation with a context-overflow policy (used by the chat REPL)
# ---------------------------------------------------------------------------------------------

class Conversation:
    """Messages of a chat: an optional system prompt plus turns.

    Overflow policy (:meth:`fit`): when the rendered conversation plus room for
    the reply does not fit the context, the oldest turns are dropped (a user
    message together with the assistant reply that follows it), the system
    prompt is always kept, and the caller re-ingests the shorter prompt."""

    def __init__(self, system: str | None = None):
        self.system = system
        self.turns: list[dict] = []

    def messages(self) -> list[dict]:
        sys_msg = [{"role": "system", "content": self.system}] if self.system else []
        return sys_msg + [dict(m) for m in self.turns]

    def add(self, role: str, content: str) -> None:
        self.turns.append({"role": role, "content": content})

    def clear(self) -> None:
        self.turns = []

    def fit(self, count_tokens: Callable[[list[dict]], int], budget: int) -> int:
        """Drop oldest turns until ``count_tokens(messages()) <= budget``.
        Returns the number of messages dropped; raises ValueError when even the
        system prompt and the newest message do not fit."""
        dropped = 0
        while count_tokens(self.messages()) > budget:
            if len(self.turns) <= 1:
                raise ValueError("the message does not fit in the context window even without the "
                                 "earlier conversation; shorten it or start pyrt with a larger -c")
            self.turns.pop(0)
            dropped += 1
            while self.turns and self.turns[0]["role"] != "user" and len(self.turns) > 1:
                self.turns.pop(0)
                dropped += 1
        return dropped

    def to_dict(self) -> dict:
        return {"system": self.system, "turns": [dict(m) for m in self.turns]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Conversation":
        if not isinstance(d, Mapping):
            raise ValueError("conversation must be a dict")
        system = d.get("system")
        if system is not None and not isinstance(system, str):
            raise ValueError("conversation.system must be a string or null")
        c = cls(system)
        turns = d.get("turns", [])
        if turns:
            c.turns = normalize_messages(turns)
        return c
