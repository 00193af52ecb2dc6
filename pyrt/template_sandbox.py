"""The jinja2 sandbox chat templates are rendered in, with its resource limits.

A GGUF file's ``tokenizer.chat_template`` is code written by whoever made the
file. It is rendered only in jinja2's ``ImmutableSandboxedEnvironment``
(jinja2 >= 3.1.6; CVE-2024-34359 was llama-cpp-python rendering such templates
unsandboxed) and, on top of the sandbox, under resource limits:

- a render-time cap (default 2 s): a trace hook stops template code that loops
  past its deadline;
- an output-size cap (default 4 Mi characters), checked while rendering, and
  the same cap on every value a template builds with ``+ * % ~``, filters or
  string methods, estimated *before* the value is allocated (so that
  ``'a' * 10**9`` or ``'x'|center(10**9)`` never allocate);
- calls restricted to an allow-list (string/dict/list query methods, jinja's
  own helpers, ``range`` capped at 100000 items, ``namespace``,
  ``raise_exception``, ``strftime_now``); ``lipsum`` is removed; integer
  arguments are capped; ``**`` is limited to small results.

Every violation raises :class:`TemplateError` (a ``ValueError``) with a
message that says what was blocked.

This module holds the limits, the size weighting of values and format-string
checks, the ``_Sandbox`` environment, the trace-hook deadline and ``_guarded``
(which maps every failure to :class:`TemplateError`); :mod:`pyrt.chat` builds
and renders templates with them.
"""
from __future__ import annotations

import datetime
import functools
import json
import re
import string
import sys
import time
import types
from typing import Any, Callable, Iterable, Mapping, Sequence

import jinja2
from jinja2.compiler import CodeGenerator
from jinja2.exceptions import SecurityError, TemplateSyntaxError, UndefinedError
from jinja2.runtime import BlockReference, LoopContext, Macro, Undefined
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import Cycler, Joiner, Namespace


def _version_tuple(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", v)[:3])


# 3.1.5 and older let |attr('format') escape the sandbox (CVE-2025-27516)
if _version_tuple(jinja2.__version__) < (3, 1, 6):
    raise ImportError(f"pyrt needs jinja2 >= 3.1.6 to render chat templates safely "
                      f"(found {jinja2.__version__}); pip install -U 'jinja2>=3.1.6'")

__all__ = ["TemplateError", "DEFAULT_MAX_OUTPUT_CHARS", "DEFAULT_RENDER_TIMEOUT", "MAX_TEMPLATE_CHARS"]

#: Cap on the rendered prompt and on any single value a template builds (characters).
DEFAULT_MAX_OUTPUT_CHARS = 4 << 20
#: Wall-clock cap on one render, in seconds.
DEFAULT_RENDER_TIMEOUT = 2.0
#: Cap on the size of a template's source text (characters).
MAX_TEMPLATE_CHARS = 1 << 20
_MAX_INT_ARG = 100_000          # integer arguments to filters and methods (= jinja's MAX_RANGE)
_MAX_INT_BITS = 4096            # results of * and ** on integers
_MAX_FORMAT_WIDTH = 10_000      # width / precision in '%' and str.format specs
_MAX_WALK_NODES = 1_000_000     # objects visited when estimating a value's size


class TemplateError(ValueError):
    """A chat template could not be compiled or rendered, or was stopped by a limit."""


class _Blocked(Exception):
    """Raised inside the sandbox; turned into TemplateError by render()."""


class _Timeout(BaseException):
    """Raised by the trace hook at the deadline. BaseException so that no
    `except Exception` inside jinja or a filter swallows it."""


# ---------------------------------------------------------------------------------------------
# size estimates
# ---------------------------------------------------------------------------------------------

def _weight(obj: Any, limit: int) -> int:
    """Approximate length of str(obj) (containers counted recursively); raises
    _Blocked as soon as it exceeds `limit`. Shared references count each time,
    because str() repeats them."""
    total = 0
    nodes = 0
    stack = [obj]
    while stack:
        o = stack.pop()
        nodes += 1
        if nodes > _MAX_WALK_NODES:
            raise _Blocked(f"a value has more than {_MAX_WALK_NODES} parts")
        if isinstance(o, str):
            total += len(o)
        elif isinstance(o, bool) or o is None:
            total += 5
        elif isinstance(o, int):
            total += o.bit_length() // 3 + 2
        elif isinstance(o, (list, tuple, set, frozenset)):
            total += 2 + 2 * len(o)
            if total <= limit:
                stack.extend(o)
        elif isinstance(o, dict):
            total += 2 + 4 * len(o)
            if total <= limit:
                stack.extend(o.keys())
                stack.extend(o.values())
        elif isinstance(o, Namespace):
            total += 16
        else:
            total += 24
        if total > limit:
            raise _Blocked(f"a value would exceed the size limit of {limit} characters")
    return total


_PCT_SPEC = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?[a-zA-Z%]")


def _check_percent_format(fmt: str, args: Any, limit: int) -> None:
    for m in _PCT_SPEC.finditer(fmt):
        for g in m.groups():
            if g == "*":
                raise _Blocked("'*' widths in % formatting are not allowed in chat templates")
            if g is not None and int(g) > _MAX_FORMAT_WIDTH:
                raise _Blocked(f"a % format width of {g} exceeds {_MAX_FORMAT_WIDTH}")
    if len(fmt) + _weight(args, limit) > limit:
        raise _Blocked(f"a formatted string would exceed the size limit of {limit} characters")


def _check_brace_format(fmt: str, args: Sequence, kwargs: Mapping, limit: int) -> None:
    try:
        parsed = list(string.Formatter().parse(fmt))
    except ValueError as e:
        raise _Blocked(f"bad format string: {e}") from None
    for _lit, _field, spec, _conv in parsed:
        if not spec:
            continue
        if "{" in spec:
            raise _Blocked("nested replacement fields in format specs are not allowed in chat templates")
        for num in re.findall(r"\d+", spec):
            if int(num) > _MAX_FORMAT_WIDTH:
                raise _Blocked(f"a format width of {num} exceeds {_MAX_FORMAT_WIDTH}")
    if len(fmt) + _weight(list(args), limit) + _weight(dict(kwargs), limit) > limit:
        raise _Blocked(f"a formatted string would exceed the size limit of {limit} characters")


def _int_arg(v: Any, what: str) -> None:
    if isinstance(v, int) and not isinstance(v, bool) and abs(v) > _MAX_INT_ARG:
        raise _Blocked(f"{what}: integer argument {v} exceeds {_MAX_INT_ARG}")


def _lines(s: str) -> int:
    return s.count("\n") + 1


# ---------------------------------------------------------------------------------------------
# the sandbox
# ---------------------------------------------------------------------------------------------

class _CodeGen(CodeGenerator):
    """Routes the `~` concatenation operator through the environment, so that
    its result size is checked before the string is built."""

    def visit_Concat(self, node, frame) -> None:
        self.write("environment.pyrt_concat((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


# str methods templates may call; None: cannot grow the string beyond its input
_STR_METHODS: dict[str, Callable | None] = {name: None for name in (
    "capitalize", "casefold", "count", "endswith", "find", "index", "isalnum", "isalpha", "isascii",
    "isdecimal", "isdigit", "isidentifier", "islower", "isnumeric", "isprintable", "isspace",
    "istitle", "isupper", "lower", "lstrip", "partition", "removeprefix", "removesuffix", "rfind",
    "rindex", "rpartition", "rsplit", "rstrip", "split", "splitlines", "startswith", "strip",
    "swapcase", "title", "upper")}
_CONTAINER_METHODS = {
    dict: {"get", "items", "keys", "values"},
    list: {"count", "index"},
    tuple: {"count", "index"},
}
# jinja filters that never stringify or grow their input: no size checks needed
_PLAIN_FILTERS = {
    "abs", "attr", "batch", "bool", "count", "default", "d", "dictsort", "first", "float",
    "groupby", "int", "items", "last", "length", "list", "map", "max", "min", "random",
    "reject", "rejectattr", "reverse", "round", "safe", "select", "selectattr", "slice", "sort",
    "unique",
}


class _Sandbox(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**", "+", "%"})
    code_generator_class = _CodeGen

    def __init__(self, max_chars: int):
        self.max_chars = max_chars
        super().__init__(trim_blocks=True, lstrip_blocks=True, autoescape=False,
                         extensions=["jinja2.ext.loopcontrols"], finalize=self._finalize,
                         loader=None)
        self.globals.pop("lipsum", None)
        self.globals["raise_exception"] = _raise_exception
        self.globals["strftime_now"] = _strftime_now
        self.filters["tojson"] = _tojson
        self._safe_functions = {id(f) for f in (self.globals["range"], dict, Namespace, Cycler, Joiner,
                                                _raise_exception, _strftime_now)}
        for name, f in list(self.filters.items()):
            self.filters[name] = self._wrap_filter(name, f)

    def unsafe_undefined(self, obj: Any, attribute: str) -> Undefined:
        # jinja returns an undefined that renders as "" (and only raises when used
        # further); a chat template that reaches for internals gets a clear error.
        raise SecurityError(f"access to attribute {attribute!r} of a {type(obj).__name__!r} "
                            f"object is unsafe")

    # -- values leaving the template or built by it
    def _check(self, value: Any) -> Any:
        _weight(value, self.max_chars)
        return value

    def _finalize(self, value: Any) -> Any:
        if not isinstance(value, str):
            _weight(value, self.max_chars)
        return value

    def pyrt_concat(self, parts: Iterable[Any]) -> str:
        strs = []
        total = 0
        for p in parts:
            if not isinstance(p, str):
                _weight(p, self.max_chars)
                p = str(p)
            total += len(p)
            if total > self.max_chars:
                raise _Blocked(f"a '~' concatenation would exceed the size limit of {self.max_chars} characters")
            strs.append(p)
        return "".join(strs)

    def call_binop(self, context, operator: str, left: Any, right: Any) -> Any:
        lim = self.max_chars
        if operator == "**":
            if isinstance(left, int) and isinstance(right, int):
                if right > 64 or left.bit_length() * max(right, 0) > _MAX_INT_BITS:
                    raise _Blocked(f"{left} ** {right} is too large for a chat template")
        elif operator == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(n, int) and not isinstance(seq, bool):
                    if n > 0 and _weight(seq, lim) * n > lim:
                        raise _Blocked(f"repeating a value {n} times would exceed the size limit of {lim} characters")
            if isinstance(left, int) and isinstance(right, int) and \
                    left.bit_length() + right.bit_length() > _MAX_INT_BITS:
                raise _Blocked("an integer product is too large for a chat template")
        elif operator == "+":
            if isinstance(left, (str, list, tuple)) and isinstance(right, (str, list, tuple)):
                if isinstance(left, str) and isinstance(right, str):
                    if len(left) + len(right) > lim:
                        raise _Blocked(f"a '+' concatenation would exceed the size limit of {lim} characters")
                elif _weight(left, lim) + _weight(right, lim) > lim:
                    raise _Blocked(f"a '+' concatenation would exceed the size limit of {lim} characters")
        elif operator == "%":
            if isinstance(left, str):
                _check_percent_format(left, right, lim)
        return super().call_binop(context, operator, left, right)

    # -- calls
    def call(__self, __context, __obj, *args, **kwargs):  # noqa: N805  (jinja's signature)
        if isinstance(__obj, Undefined):
            return __context.call(__obj, *args, **kwargs)      # raises UndefinedError
        if not __self.is_safe_callable(__obj):
            raise SecurityError(f"{__obj!r} is not safely callable")
        special = __self._check_call(__obj, args, kwargs)
        if special is not None:
            return special()
        out = __context.call(__obj, *args, **kwargs)
        if isinstance(out, str) and len(out) > __self.max_chars:
            raise _Blocked(f"a call returned more than {__self.max_chars} characters")
        return out

    def _check_call(self, obj: Any, args: tuple, kwargs: dict):
        lim = self.max_chars
        if isinstance(obj, (Macro, LoopContext, BlockReference, Cycler, Joiner)) or id(obj) in self._safe_functions:
            return None
        wrapped = getattr(obj, "__wrapped__", None)      # jinja's sandboxed str.format wrapper
        if isinstance(obj, types.FunctionType) and isinstance(wrapped, types.BuiltinMethodType) \
                and isinstance(getattr(wrapped, "__self__", None), str) \
                and wrapped.__name__ in ("format", "format_map"):
            if wrapped.__name__ == "format_map":
                if len(args) != 1 or not isinstance(args[0], Mapping):
                    raise _Blocked("format_map() takes one mapping")
                _check_brace_format(wrapped.__self__, (), args[0], lim)
            else:
                _check_brace_format(wrapped.__self__, args, kwargs, lim)
            return None
        if isinstance(obj, (types.BuiltinMethodType, types.MethodType)):
            owner = getattr(obj, "__self__", None)
            name = getattr(obj, "__name__", "?")
            if isinstance(owner, (LoopContext, Cycler, Joiner, Namespace)):
                return None
            if isinstance(owner, str):
                return self._check_str_method(owner, name, args, kwargs)
            for typ, names in _CONTAINER_METHODS.items():
                if isinstance(owner, typ) and name in names:
                    return None
            raise _Blocked(f"calling {type(owner).__name__}.{name}() is not allowed in a chat template")
        raise _Blocked(f"calling {getattr(obj, '__name__', type(obj).__name__)!r} is not allowed in a chat template")

    def _check_str_method(self, s: str, name: str, args: tuple, kwargs: dict):
        lim = self.max_chars
        for v in (*args, *kwargs.values()):
            _weight(v, lim)
        if name in _STR_METHODS:
            return None
        if name in ("center", "ljust", "rjust", "zfill"):
            width = args[0] if args else kwargs.get("width", 0)
            if isinstance(width, int) and width > lim:
                raise _Blocked(f"str.{name}({width}) exceeds the size limit")
            return None
        if name == "expandtabs":
            tab = args[0] if args else kwargs.get("tabsize", 8)
            if isinstance(tab, int) and len(s) + s.count("\t") * max(tab, 0) > lim:
                raise _Blocked("str.expandtabs() would exceed the size limit")
            return None
        if name == "replace":
            old = args[0] if args else ""
            new = args[1] if len(args) > 1 else ""
            if isinstance(old, str) and isinstance(new, str):
                n = s.count(old) if old else len(s) + 1
                if len(s) + n * max(0, len(new) - len(old)) > lim:
                    raise _Blocked("str.replace() would exceed the size limit")
            return None
        if name == "join":
            if len(args) != 1 or kwargs:
                raise _Blocked("str.join() takes one argument")
            items = list(args[0])
            if len(items) > _MAX_INT_ARG * 10:
                raise _Blocked("str.join() of too many items")
            if _weight(items, lim) + len(s) * len(items) > lim:
                raise _Blocked("str.join() would exceed the size limit")
            return lambda: s.join(items)
        raise _Blocked(f"calling str.{name}() is not allowed in a chat template")

    # -- filters
    def _wrap_filter(self, name: str, f: Callable) -> Callable:
        plain = name in _PLAIN_FILTERS
        lim = self.max_chars
        env = self
        pass_arg = getattr(f, "jinja_pass_arg", None)

        @functools.wraps(f)
        def guarded(*args, **kwargs):
            vals = args[1:] if pass_arg is not None else args
            for v in vals[1:]:
                _int_arg(v, f"filter {name!r}")
            for v in kwargs.values():
                _int_arg(v, f"filter {name!r}")
            if plain:
                return f(*args, **kwargs)
            if name in ("join", "sum") and vals and not isinstance(vals[0], (str, list, tuple, dict, set, frozenset)):
                items = []
                for x in vals[0]:           # materialize a lazy sequence (map, select, ...)
                    items.append(x)
                    if len(items) > _MAX_WALK_NODES:
                        raise _Blocked(f"filter {name!r}: the sequence is too long")
                args = (*args[:len(args) - len(vals)], items, *vals[1:])
                vals = (items, *vals[1:])
            for v in (*vals, *kwargs.values()):
                _weight(v, lim)
            if vals:
                env._estimate_filter(name, vals[0], vals[1:], kwargs)
            out = f(*args, **kwargs)
            if isinstance(out, str) and len(out) > lim:
                raise _Blocked(f"filter {name!r} produced more than {lim} characters")
            return out

        return guarded

    def _estimate_filter(self, name: str, value: Any, args: tuple, kwargs: dict) -> None:
        lim = self.max_chars
        s = value if isinstance(value, str) else None
        if name == "center":
            width = args[0] if args else kwargs.get("width", 80)
            if isinstance(width, int) and width > lim:
                raise _Blocked(f"center({width}) exceeds the size limit")
        elif name == "indent" and s is not None:
            width = args[0] if args else kwargs.get("width", 4)
            w = len(width) if isinstance(width, str) else (width if isinstance(width, int) else 4)
            if len(s) + _lines(s) * max(w, 0) > lim:
                raise _Blocked("indent() would exceed the size limit")
        elif name == "replace" and s is not None:
            old = args[0] if args else kwargs.get("old", "")
            new = args[1] if len(args) > 1 else kwargs.get("new", "")
            old, new = str(old), str(new)
            n = s.count(old) if old else len(s) + 1
            if len(s) + n * max(0, len(new) - len(old)) > lim:
                raise _Blocked("replace() would exceed the size limit")
        elif name == "wordwrap" and s is not None:
            width = args[0] if args else kwargs.get("width", 79)
            wrap = args[2] if len(args) > 2 else kwargs.get("wrapstring", "\n")
            wrap = wrap if isinstance(wrap, str) else "\n"
            width = width if isinstance(width, int) and width > 0 else 1
            if len(s) + (len(s) // width + _lines(s) + 1) * len(wrap) > lim:
                raise _Blocked("wordwrap() would exceed the size limit")
        elif name == "join":
            d = args[0] if args else kwargs.get("d", "")
            if isinstance(d, str) and isinstance(value, (list, tuple)) and len(d) * len(value) > lim:
                raise _Blocked("join() would exceed the size limit")
        elif name == "format" and s is not None:
            _check_percent_format(s, (args, kwargs), lim)
        elif name == "sum":
            pass            # the input weight (checked) bounds the result


def _raise_exception(message: Any = "") -> None:
    raise TemplateError(f"the chat template refused the conversation: {message}")


def _tojson(value: Any, indent: int | None = None, separators=None, sort_keys: bool = False) -> str:
    if indent is not None and (not isinstance(indent, int) or not 0 <= indent <= 16):
        raise _Blocked(f"tojson indent must be an int in [0, 16], got {indent!r}")
    try:
        return json.dumps(value, ensure_ascii=False, indent=indent, separators=separators,
                          sort_keys=sort_keys)
    except (TypeError, ValueError) as e:
        raise _Blocked(f"tojson: {e}") from None


def _strftime_now(fmt: Any) -> str:
    if not isinstance(fmt, str) or len(fmt) > 256:
        raise _Blocked("strftime_now() takes a format string of at most 256 characters")
    return datetime.datetime.now().strftime(fmt)



class _Deadline:
    """sys.settrace hook that raises _Timeout in this thread after `seconds`."""

    def __init__(self, seconds: float):
        self.t_end = time.monotonic() + seconds
        self.seconds = seconds

    def _local(self, frame, event, arg):
        if time.monotonic() > self.t_end:
            raise _Timeout()
        return self._local

    def __call__(self, frame, event, arg):
        if time.monotonic() > self.t_end:
            raise _Timeout()
        # line events only inside template code: that is where loops run
        return self._local if frame.f_code.co_filename == "<template>" else None

    def __enter__(self):
        self._old = sys.gettrace()
        sys.settrace(self)
        return self

    def __exit__(self, *exc):
        sys.settrace(self._old)
        return False


def _guarded(fn: Callable, timeout: float, what: str):
    """Run fn() under the deadline; map every failure to TemplateError."""
    try:
        with _Deadline(timeout):
            return fn()
    except TemplateError:
        raise
    except _Timeout:
        raise TemplateError(f"{what} took longer than {timeout:g} s and was stopped") from None
    except _Blocked as e:
        raise TemplateError(f"{what} was blocked: {e}") from None
    except SecurityError as e:
        raise TemplateError(f"{what} was blocked by the sandbox: {e}") from None
    except TemplateSyntaxError as e:
        raise TemplateError(f"{what}: syntax error on line {e.lineno}: {e.message}") from None
    except UndefinedError as e:
        raise TemplateError(f"{what} failed: {e.message}") from None
    except RecursionError:
        raise TemplateError(f"{what} failed: recursion too deep") from None
    except MemoryError:
        raise TemplateError(f"{what} failed: out of memory") from None
    except Exception as e:  # any other error inside template code
        raise TemplateError(f"{what} failed: {type(e).__name__}: {e}") from None
