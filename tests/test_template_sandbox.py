"""Chat templates are code from the GGUF file: server-side template injection
payloads must end in a clear TemplateError, quickly, and never run or allocate
what they ask for."""
from __future__ import annotations

import time

import pytest

from pyrt.chat import ChatTemplate, TemplateError

MSGS = [{"role": "user", "content": "hi"}]
TIMEOUT = 1.0          # render-time cap used here (the default is 2 s)
WALL = 10.0            # generous bound: a payload that is not stopped would run for minutes or OOM


def render(src: str, **kw) -> str:
    return ChatTemplate(src, timeout=TIMEOUT, **kw).render(MSGS)


BLOCKED = {
    # attribute walks to Python internals
    "mro": "{{ ''.__class__.__mro__ }}",
    "subclasses": "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "lipsum_globals": "{{ lipsum.__globals__['os'].popen('id').read() }}",
    "cycler_globals": "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "namespace_init": "{{ namespace.__init__.__globals__ }}",
    "self_module": "{{ self._TemplateReference__context.cycler.__init__.__globals__ }}",
    "request_like": "{{ messages.__class__.__base__.__subclasses__() }}",
    "getattr_filter": "{{ (''|attr('__class__')).__mro__ }}",
    # str.format gadgets (jinja < 3.1.6 let |attr('format') bypass the sandbox)
    "attr_format": "{{ ('{0.__class__.__init__.__globals__}'|attr('format'))(namespace) ~ '!' }}",
    "format_globals": "{{ '{0.__init__.__globals__}'.format(cycler) }}",
    "format_width": "{{ '{:>1000000000}'.format(1) }}",
    "format_map": "{{ '{x.__class__}'.format_map({'x': 1}) ~ '!' }}",
    # resource exhaustion
    "range_huge": "{{ range(10**9)|list|length }}",
    "nested_loops": "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    "str_repeat": "{{ 'a' * 10**9 }}",
    "list_repeat": "{{ ([1] * 100000) * 100000 }}",
    "int_power": "{{ 10 ** (10 ** 10) }}",
    "int_square": "{% set ns = namespace(x=2**4000) %}{% for i in range(20) %}{% set ns.x = ns.x * ns.x %}{% endfor %}",
    "pct_width": "{{ '%1000000000d' % 1 }}",
    "pct_star": "{{ '%*d' % (1000000000, 1) }}",
    "center": "{{ 'x'|center(1000000000) }}",
    "ljust": "{{ 'x'.ljust(1000000000) }}",
    "zfill": "{{ '1'.zfill(1000000000) }}",
    "indent": "{% set a = 'x\n' * 1000000 %}{{ a|indent(100000) }}",
    "replace": "{% set a = 'x' * 1000000 %}{{ a|replace('x', 'yyyyyyyyyy') }}",
    "replace_empty": "{% set a = 'x' * 100000 %}{{ a.replace('', a) }}",
    "wordwrap": "{% set a = 'x' * 1000000 %}{{ a|wordwrap(1, true, 'y' * 100) }}",
    "batch": "{{ [1]|batch(100000000, 'x')|list }}",
    "tojson_indent": "{{ messages|tojson(indent=100000) }}",
    "doubling_concat": "{% set ns = namespace(x='ab') %}{% for i in range(60) %}{% set ns.x = ns.x ~ ns.x %}{% endfor %}",
    "doubling_plus": "{% set ns = namespace(x='ab') %}{% for i in range(60) %}{% set ns.x = ns.x + ns.x %}{% endfor %}",
    "nested_refs": ("{% set a = 'x' * 1000000 %}{% set b = [a,a,a,a,a,a,a,a,a,a] %}"
                    "{% set c = [b,b,b,b,b,b,b,b,b,b] %}{{ c }}"),
    "join_refs": "{% set a = 'x' * 1000000 %}{{ [a,a,a,a,a,a,a,a]|join }}",
    "huge_output": "{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}",
    "recursion": "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
    # mutation and escape hatches
    "append": "{{ messages.append(1) }}",
    "dict_update": "{{ messages[0].update({'role': 'system'}) }}",
    "include": "{% include '/etc/passwd' %}",
    "import": "{% import 'os' as os %}",
    "extends": "{% extends '/etc/passwd' %}",
    "encode": "{{ 'x'.encode() }}",
    "raise": "{{ raise_exception('roles must alternate') }}",
    "syntax": "{% for %}",
    "undefined_call": "{{ nothing() }}",
}


@pytest.mark.parametrize("name", sorted(BLOCKED))
def test_payload_is_blocked(name):
    src = BLOCKED[name]
    t0 = time.monotonic()
    with pytest.raises(TemplateError) as ei:
        render(src)
    assert time.monotonic() - t0 < WALL
    msg = str(ei.value)
    assert msg and "chat template" in msg          # says what failed


def test_error_messages_say_why():
    with pytest.raises(TemplateError, match="unsafe"):
        render("{{ ''.__class__ }}")
    with pytest.raises(TemplateError, match="took longer than 1 s"):
        render(BLOCKED["nested_loops"])
    with pytest.raises(TemplateError, match="size limit"):
        render(BLOCKED["str_repeat"])
    with pytest.raises(TemplateError, match="roles must alternate"):
        render(BLOCKED["raise"])
    with pytest.raises(TemplateError, match="syntax error on line 1"):
        render(BLOCKED["syntax"])


def test_output_cap_is_configurable():
    src = "{% for i in range(3000) %}x{% endfor %}"
    assert len(render(src)) == 3000
    with pytest.raises(TemplateError, match="exceeds the limit of 2048"):
        render(src, max_output_chars=2048)


def test_template_source_size_cap():
    with pytest.raises(TemplateError, match="characters"):
        ChatTemplate("x" * ((1 << 20) + 1))


def test_removed_globals_are_undefined():
    assert render("{{ lipsum }}") == ""            # jinja's lorem-ipsum generator is removed
    with pytest.raises(TemplateError, match="unsafe"):
        render("{{ ('{0.__class__}'|attr('format'))(1) }}")


ORDINARY = [
    ("{{ messages|map(attribute='role')|join(',') }}", "user"),
    ("{{ messages[0]['content']|upper }}", "HI"),
    ("{{ messages[0].content.strip().title() }}", "Hi"),
    ("{{ messages|tojson }}", '[{"role": "user", "content": "hi"}]'),
    ("{% set ns = namespace(n=0) %}{% for m in messages %}{% set ns.n = ns.n + 1 %}{% endfor %}{{ ns.n }}", "1"),
    ("{{ '%s|%5d' % ('a', 7) }}", "a|    7"),
    ("{{ '{}-{:>3}'.format('a', 'b') }}", "a-  b"),
    ("{{ messages[0].get('name', 'anon') }}", "anon"),
    ("{% for m in messages %}{{ loop.index }}{% if not loop.last %},{% endif %}{% endfor %}", "1"),
    ("{{ (messages|selectattr('role', 'equalto', 'user')|list|length) }}", "1"),
    ("{{ range(3)|list }}", "[0, 1, 2]"),
    ("{{ 'a b'.split()|reverse|join(' ') }}", "b a"),
    ("{{ strftime_now('%Y')|length }}", "4"),
    ("{% if tools is none %}none{% endif %}", "none"),
    ("{{ 2 ** 10 }}", "1024"),
    ("{{ 'ab' * 3 }}", "ababab"),
]


@pytest.mark.parametrize("src, want", ORDINARY)
def test_ordinary_template_code_still_works(src, want):
    assert render(src) == want
