"""Chat templates render under a budget: loops, blow-ups and Python internals fail fast."""

from __future__ import annotations

import time

import pytest

from backends.base import ChatMessage, TemplateError
from backends.templates import ChatTemplate

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
HOSTILE = {
    "nested range loops": "{% for i in range(100000) %}{% for j in range(100000) %}"
    "{% endfor %}{% endfor %}",
    "output loop": "{% for i in range(100000) %}{% for j in range(100000) %}x"
    "{% endfor %}{% endfor %}",
    "nested message loops": "{% for a in messages %}{% for b in messages %}"
    "{% for c in messages %}{% endfor %}{% endfor %}{% endfor %}",
    "recursive macro": "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
    "string repetition": "{{ 'x' * 1000000000 }}",
    "doubling with ~": "{% set ns = namespace(s='x') %}{% for i in range(60) %}"
    "{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
    "doubling with +": "{% set ns = namespace(s='x') %}{% for i in range(60) %}"
    "{% set ns.s = ns.s + ns.s %}{% endfor %}",
    "huge exponent": "{{ 2 ** 100000000 }}",
    "center width": "{{ 'x'|center(1000000000) }}",
    "printf width": "{{ '%999999999d' % 1 }}",
    "format filter width": "{{ '%999999999d'|format(1) }}",
    "str.format width": "{{ '{:>999999999}'.format(1) }}",
    "tojson indent": "{{ messages|tojson(indent=1000000000) }}",
    "python internals": "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "mutation": "{% set x = [] %}{{ x.append(1) }}",
}


@pytest.mark.parametrize("source", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_templates_fail_that_render_quickly(source: str) -> None:
    template = ChatTemplate(source)
    started = time.monotonic()
    with pytest.raises(TemplateError):
        template.render([ChatMessage("user", "hi")] * 200)
    assert time.monotonic() - started < 10  # a budget, not a timing assertion: 2 s + slack


def test_an_ordinary_template_renders_a_long_conversation() -> None:
    messages = [ChatMessage("user" if i % 2 else "assistant", f"m{i}") for i in range(1024)]
    text = ChatTemplate(CHATML).render(messages)
    assert text.count("<|im_start|>") == 1025
    assert text.endswith("<|im_start|>assistant\n")


def test_the_budget_is_per_render() -> None:
    template = ChatTemplate("{% for i in range(90000) %}{% endfor %}{{ messages[0].content }}")
    for _ in range(20):  # 20 × 90,000 operations: far past one budget in all
        assert template.render([ChatMessage("user", "ok")]) == "ok"
