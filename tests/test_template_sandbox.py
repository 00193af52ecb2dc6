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


# Constructs used by widely published chat templates (Llama 3.1, Qwen 2.5/3, Mistral, Gemma 3):
# the sandbox's limits must not break them.
LLAMA31_LIKE = """{{- bos_token }}
{%- set date_string = strftime_now("%d %b %Y") %}
{%- set builtin_tools = ['brave_search', 'code_interpreter', 'wolfram_alpha'] %}
{%- if messages[0]['role'] == 'system' %}{%- set system_message = messages[0]['content']|trim %}
{%- set messages = messages[1:] %}{%- else %}{%- set system_message = "" %}{%- endif %}
{{- "<|start_header_id|>system<|end_header_id|>\\n\\n" }}
{{- "Tools: " + builtin_tools | reject('equalto', 'code_interpreter') | join(", ") + "\\n" }}
{{- "Today Date: " + date_string|length|string + "\\n\\n" }}{{- system_message }}{{- "<|eot_id|>" }}
{%- for message in messages %}
{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}
{%- endfor %}
{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"""

QWEN_LIKE = """{%- if tools %}{{- '<|im_start|>system\\n# Tools\\n<tools>' }}{%- for tool in tools %}{{- "\\n" }}
{{- tool | tojson }}{%- endfor %}{{- "\\n</tools><|im_end|>\\n" }}{%- endif %}
{%- set ns = namespace(multi_step_tool=true, last_query_index=messages|length - 1) %}
{%- for message in messages[::-1] %}{%- set index = (messages|length - 1) - loop.index0 %}
{%- if ns.multi_step_tool and message.role == "user" and message.content is string
      and not(message.content.startswith('<tool_response>') and message.content.endswith('</tool_response>')) %}
{%- set ns.multi_step_tool = false %}{%- set ns.last_query_index = index %}{%- endif %}{%- endfor %}
{%- for message in messages %}
{%- if message.role == "assistant" and not message.tool_calls %}
{%- set content = message.content.split('</think>')[-1].lstrip('\\n') %}
{{- '<|im_start|>' + message.role + '\\n' + content + '<|im_end|>\\n' }}
{%- else %}{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}{%- endif %}
{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}
{{- '[last query ' ~ ns.last_query_index ~ ']' }}"""

MISTRAL_LIKE = """{%- if messages[0]["role"] == "system" %}{%- set system_message = messages[0]["content"] %}
{%- set loop_messages = messages[1:] %}{%- else %}{%- set loop_messages = messages %}{%- endif %}
{{- bos_token }}{%- for message in loop_messages %}
{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}
{{- raise_exception('After the optional system message, conversation roles must alternate user/assistant/user/assistant/...') }}
{%- endif %}{%- if message["role"] == "user" %}
{%- if loop.last and system_message is defined %}{{- "[INST] " + system_message + "\\n\\n" + message["content"] + "[/INST]" }}
{%- else %}{{- "[INST] " + message["content"] + "[/INST]" }}{%- endif %}
{%- else %}{{- " " + message["content"] + eos_token }}{%- endif %}{%- endfor %}"""

CONV = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "<think>hmm</think>\nhello"}, {"role": "user", "content": "bye"}]


def test_published_template_constructs_render():
    t = ChatTemplate(LLAMA31_LIKE, bos_token="<|begin_of_text|>")
    out = t.render(CONV)
    assert out.startswith("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nTools: brave_search, "
                          "wolfram_alpha\nToday Date: ")
    assert out.endswith("bye<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    out = ChatTemplate(QWEN_LIKE).render(CONV, tools=tools)
    assert '<tools>\n{"type": "function", "function": {"name": "f"' in out
    assert "<|im_start|>assistant\nhello<|im_end|>" in out and out.endswith("[last query 3]")
    t = ChatTemplate(MISTRAL_LIKE, bos_token="<s>", eos_token="</s>")
    assert t.render(CONV) == "<s>[INST] hi[/INST] <think>hmm</think>\nhello</s>[INST] Be brief.\n\nbye[/INST]"
    with pytest.raises(TemplateError, match="roles must alternate"):
        t.render([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])
