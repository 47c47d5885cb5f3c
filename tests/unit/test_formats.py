"""A model's output formats from its chat template and architecture, and the template
inputs that carry a request's thinking and an earlier turn's reasoning."""

# ruff: noqa: E501  (chat templates are quoted as models ship them, long lines and all)

from __future__ import annotations

from pathlib import Path

import pytest

from backends.base import ChatMessage
from backends.formats import REASONING_FORMATS, TOOL_FORMATS, choose, detect, renders_special
from backends.llamacpp.gguf_header import read_header
from backends.templates import ChatTemplate
from server.engine.thinking import ends_open

MODELS = Path.home() / ".cache/hearth/models"
DEFAULT_GGUF = MODELS / "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"

# DeepSeek-R1-Distill-Qwen-7B's template as its GGUF ships it (the first release: the
# model opens <think> itself; earlier answers are cut after </think>).
R1_DISTILL = (
    "{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}"
    "{% endif %}{% set ns = namespace(is_first=false, is_tool=false, is_output_first=true, "
    "system_prompt='') %}{%- for message in messages %}{%- if message['role'] == 'system' %}"
    "{% set ns.system_prompt = message['content'] %}{%- endif %}{%- endfor %}{{bos_token}}"
    "{{ns.system_prompt}}{%- for message in messages %}{%- if message['role'] == 'user' %}"
    "{%- set ns.is_tool = false -%}{{'<｜User｜>' + message['content']}}{%- endif %}"
    "{%- if message['role'] == 'assistant' and message['content'] is none %}"
    "{%- set ns.is_tool = false -%}{%- for tool in message['tool_calls']%}"
    "{%- if not ns.is_first %}{{'<｜Assistant｜><｜tool▁calls▁begin｜><｜tool▁call▁begin｜>'"
    " + tool['type'] + '<｜tool▁sep｜>' + tool['function']['name'] + '\\n' + '```json' + "
    "'\\n' + tool['function']['arguments'] + '\\n' + '```' + '<｜tool▁call▁end｜>'}}"
    "{%- set ns.is_first = true -%}{%- endif %}{%- endfor %}{%- endif %}"
    "{%- if message['role'] == 'assistant' and message['content'] is not none %}"
    "{% set content = message['content'] %}{% if '</think>' in content %}"
    "{% set content = content.split('</think>')[-1] %}{% endif %}"
    "{{'<｜Assistant｜>' + content + '<｜end▁of▁sentence｜>'}}{%- endif %}{%- endfor -%}"
    "{% if add_generation_prompt and not ns.is_tool %}{{'<｜Assistant｜>'}}{% endif %}"
)
# Its later release opens the block in the generation prompt.
R1_OPENING = R1_DISTILL.replace(
    "{{'<｜Assistant｜>'}}{% endif %}", "{{'<｜Assistant｜><think>\\n'}}{% endif %}"
)
# Qwen3's template, the parts that matter: tools as Hermes JSON, earlier reasoning kept
# only after the last user turn, enable_thinking=false writing an empty block.
QWEN3 = """{%- if tools %}{{- '<|im_start|>system\\n# Tools\\n<tools>' }}{%- for tool in tools %}
{{- tool | tojson }}{%- endfor %}
{{- '</tools>\\nreturn a json object within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{"name": <function-name>, "arguments": <args-json-object>}\\n</tool_call><|im_end|>\\n' }}
{%- endif %}
{%- for message in messages %}
{%- if message.role == "assistant" %}
{%- set reasoning_content = '' %}
{%- if message.reasoning_content is string %}{%- set reasoning_content = message.reasoning_content %}{%- endif %}
{%- if loop.last or reasoning_content %}
{{- '<|im_start|>assistant\\n<think>\\n' + reasoning_content + '\\n</think>\\n\\n' + message.content + '<|im_end|>\\n' }}
{%- else %}{{- '<|im_start|>assistant\\n' + message.content + '<|im_end|>\\n' }}{%- endif %}
{%- else %}{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}{%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}
{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}
{%- endif %}"""
QWEN3_CODER = """{{- "\\n\\nIf you choose to call a function ONLY reply in the following format:\\n<tool_call>\\n<function=example_function_name>\\n<parameter=example_parameter_1>\\nvalue_1\\n</parameter>\\n</function>\\n</tool_call>" }}
{%- for tool_call in message.tool_calls %}{{- '\\n<tool_call>\\n<function=' + tool_call.name + '>\\n' }}{%- endfor %}"""
LLAMA31 = """{%- if builtin_tools is defined or tools is not none %}{{- "Environment: ipython\\n" }}{%- endif %}
{%- if builtin_tool is defined %}{{- '<|python_tag|>' + tool_call.name + '.call(' }}
{%- else %}{{- '{"name": "' + tool_call.name + '", "parameters": ' }}{%- endif %}
{%- elif message.role == "tool" or message.role == "ipython" %}{{- "<|start_header_id|>ipython<|end_header_id|>\\n\\n" }}"""
LLAMA32 = """{{- "<|start_header_id|>system<|end_header_id|>\\n\\n" }}{{- "Cutting Knowledge Date: December 2023\\n" }}
{%- elif message.role == "tool" or message.role == "ipython" %}{{- "<|start_header_id|>ipython<|end_header_id|>\\n\\n" }}"""
MISTRAL = """{%- if tools is not none and (message == user_messages[-1]) %}{{- "[AVAILABLE_TOOLS] [" }}
{%- elif message.tool_calls is defined and message.tool_calls is not none %}{{- "[TOOL_CALLS] [" }}
{%- elif message["role"] == "tool" %}{{- '[TOOL_RESULTS] {"content": ' + message.content|string + "}[/TOOL_RESULTS]" }}"""
DEEPSEEK_V3 = """{{'<｜Assistant｜><｜tool▁calls▁begin｜><｜tool▁call▁begin｜>' + tool['type'] + '<｜tool▁sep｜>' + tool['function']['name']}}
{%- if add_generation_prompt and not ns.is_tool %}{{'<｜Assistant｜>'}}{% endif %}"""
GPT_OSS = """{%- if reasoning_effort is defined %}{{- "Reasoning: " + reasoning_effort + "\\n\\n" }}{%- else %}{{- "Reasoning: medium\\n\\n" }}{%- endif %}
{{- "# Valid channels: analysis, commentary, final. Channel must be included for every message." }}
{{- "<|start|>assistant<|channel|>analysis<|message|>" + message.thinking + "<|end|>" }}
{{- "<|start|>assistant to=functions." + tool_call.name + "<|channel|>commentary json<|message|>" }}"""
GEMMA3 = """{{ bos_token }}{%- for message in messages %}{{ '<start_of_turn>' + message['role'] + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}{%- endfor %}
{%- if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{%- endif %}"""


@pytest.mark.skipif(not DEFAULT_GGUF.is_file(), reason="the default model is not pulled")
def test_the_default_models_own_template_is_hermes_without_reasoning() -> None:
    header = read_header(DEFAULT_GGUF)
    template = header.metadata["tokenizer.chat_template"]
    assert isinstance(template, str)
    assert detect(template, header.architecture) == (None, "hermes")


@pytest.mark.parametrize(
    ("template", "architecture", "expected"),
    [
        (R1_DISTILL, "qwen2", ("think", "deepseek")),
        (R1_OPENING, "qwen2", ("think", "deepseek")),
        (QWEN3, "qwen3", ("think", "hermes")),
        (QWEN3_CODER, "qwen3moe", (None, "qwen3_coder")),
        (LLAMA31, "llama", (None, "llama3")),
        (LLAMA32, "llama", (None, "llama3")),
        (MISTRAL, "llama", (None, "mistral")),
        (DEEPSEEK_V3, "deepseek2", (None, "deepseek")),
        (GPT_OSS, "gpt-oss", ("harmony", "harmony")),
        (None, "gpt-oss", ("harmony", "harmony")),  # no template: the architecture says
        (GEMMA3, "gemma3", (None, None)),
        (None, "gemma3", (None, None)),
    ],
)
def test_formats_are_read_from_template_markers(
    template: str | None, architecture: str, expected: tuple[str | None, str | None]
) -> None:
    assert detect(template, architecture) == expected
    reasoning, tools = expected
    assert reasoning is None or reasoning in REASONING_FORMATS
    assert tools is None or tools in TOOL_FORMATS


def test_models_toml_overrides_what_is_detected() -> None:
    assert choose(QWEN3, "qwen3", None, None) == ("think", "hermes")
    assert choose(QWEN3, "qwen3", "none", "qwen3_coder") == (None, "qwen3_coder")
    assert choose(GEMMA3, "gemma3", "think", None) == ("think", None)


def test_special_token_markers_are_shown_only_where_a_format_needs_them() -> None:
    assert renders_special("harmony", "harmony")
    assert renders_special(None, "llama3") and renders_special(None, "mistral")
    assert not renders_special("think", "hermes")
    assert not renders_special(None, None)


def test_a_template_says_which_variables_it_reads() -> None:
    assert "enable_thinking" in ChatTemplate(QWEN3).variables
    assert "reasoning_effort" in ChatTemplate(GPT_OSS).variables
    assert not {"enable_thinking", "reasoning_effort"} & ChatTemplate(R1_DISTILL).variables


def test_enable_thinking_reaches_the_template() -> None:
    template, messages = ChatTemplate(QWEN3), [ChatMessage("user", "hi")]
    assert template.render(messages).endswith("<|im_start|>assistant\n")
    off = template.render(messages, variables={"enable_thinking": False})
    assert off.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")


def test_request_variables_cannot_replace_what_the_server_renders_with() -> None:
    template = ChatTemplate(QWEN3)
    text = template.render(
        [ChatMessage("user", "hi")], variables={"messages": [], "bos_token": "X"}
    )
    assert "<|im_start|>user\nhi<|im_end|>" in text


def test_earlier_reasoning_is_given_to_the_template_never_as_content() -> None:
    turn = ChatMessage("assistant", "4", reasoning="2 and 2 make 4")
    messages = [ChatMessage("user", "2+2?"), turn, ChatMessage("user", "and 3+3?")]
    qwen3 = ChatTemplate(QWEN3).render(messages)
    assert "<think>\n2 and 2 make 4\n</think>\n\n4<|im_end|>" in qwen3  # Qwen3 keeps it
    r1 = ChatTemplate(R1_DISTILL).render(messages)
    assert "make 4" not in r1 and "<｜Assistant｜>4<｜end▁of▁sentence｜>" in r1  # R1 drops it


def test_a_template_that_opens_the_reasoning_block_is_seen_to() -> None:
    messages = [ChatMessage("user", "hi")]
    opening = ChatTemplate(R1_OPENING).render(messages)
    assert ends_open(opening, "think")
    assert not ends_open(ChatTemplate(R1_DISTILL).render(messages), "think")
    assert not ends_open(opening, None) and not ends_open(opening, "harmony")
