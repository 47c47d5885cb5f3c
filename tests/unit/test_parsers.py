"""The output parsers on transcripts of each format, run through an OutputStream whole,
one character at a time, and cut in two and three pieces: the streamed result (content,
reasoning, calls) equals the whole one, the streamed arguments begin the final ones,
and no markup reaches the content."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pytest

from server.engine.metrics import Metrics
from server.engine.parsers import OutputStream
from server.engine.requests import (
    Finished,
    FinishReason,
    ReasoningDelta,
    TextDelta,
    ToolCallArguments,
    ToolCallDelta,
    ToolCallStarted,
)
from tests.unit.parsing import (
    USAGE,
    Canned,
    Result,
    drive,
    events,
    run,
    same_when_cut,
    summary,
)

MARKUP = (
    "<tool_call>", "</tool_call>", "<function=", "</function>", "<parameter=", "<think>",
    "</think>", "<|", "[TOOL_CALLS]", "[ARGS]", "<｜", "｜>", "</s>",
)  # fmt: skip
PARIS = '{"city": "Paris"}'
OSLO = '{"city": "Oslo", "unit": "c"}'


def no_markup(text: str) -> bool:
    return not any(tag in text for tag in MARKUP)


def check(
    text: str,
    *,
    content: str = "",
    reasoning: str = "",
    calls: Sequence[tuple[str, str]] = (),
    failures: int = 0,
    **options: Any,
) -> Result:
    """The text's result, the same however it is cut, checked against what is given."""
    result = same_when_cut(text, **options)
    assert (result.content, result.reasoning) == (content, reasoning)
    assert list(result.calls) == list(calls)
    assert result.failures == failures
    assert no_markup(result.content)
    expected = "tool_calls" if calls else "stop"
    assert result.reason.value == expected
    return result


# --- think + hermes (Qwen3, QwQ) --------------------------------------------------------

QWEN3 = (
    "<think>\nThe user wants Paris and Oslo. A <tool_call> here is only a thought.\n"
    "</think>\n\nLet me check both.\n<tool_call>\n"
    '{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n<tool_call>\n'
    '{"name": "get_weather", "arguments": {"city": "Oslo", "unit": "c"}}\n</tool_call>'
)
QWEN3_THOUGHT = "The user wants Paris and Oslo. A <tool_call> here is only a thought."


def test_qwen3_reasoning_then_two_hermes_calls() -> None:
    check(
        QWEN3, content="Let me check both.", reasoning=QWEN3_THOUGHT,
        calls=[("get_weather", PARIS), ("get_weather", OSLO)], reasoning_format="think",
    )  # fmt: skip


def test_reasoning_and_content_without_tools() -> None:
    text = "<think>\nTwo and two.\n</think>\n\n2 + 2 = 4, see <tool_call> docs."
    result = same_when_cut(text, tools=(), reasoning_format="think")
    assert result.reasoning == "Two and two."
    assert result.content == "2 + 2 = 4, see <tool_call> docs." and not result.calls


def test_without_a_reasoning_format_the_tags_stay_content() -> None:
    result = same_when_cut("<think>hm</think>Hi", tools=())
    assert result.content == "<think>hm</think>Hi" and result.reasoning == ""


def test_r1_prompt_opened_the_reasoning() -> None:
    text = "Okay, so 2 + 2.\nThat is 4.\n</think>\n\nThe answer is **4**."
    check(
        text, content="The answer is **4**.", reasoning="Okay, so 2 + 2.\nThat is 4.",
        tools=(), reasoning_format="think", reasoning_open=True,
    )  # fmt: skip


def test_an_open_prompt_and_the_model_opening_again() -> None:
    check(
        "<think>\nHm.</think>Yes.", content="Yes.", reasoning="Hm.", tools=(),
        reasoning_format="think", reasoning_open=True,
    )  # fmt: skip


def test_a_stray_close_at_the_start_is_dropped() -> None:
    check("\n</think>\n\nHello.", content="Hello.", tools=(), reasoning_format="think")


def test_a_close_repeated_after_the_block_is_dropped() -> None:
    """The engine closes the block for a thinking budget; the model then writes its own
    close: the answer does not begin with it (seen on the real model)."""
    check(
        "The answer to 2 +</think>\n\n</think>\n2 + 3 = 5", content="2 + 3 = 5",
        reasoning="The answer to 2 +", tools=(), reasoning_format="think", reasoning_open=True,
    )  # fmt: skip
    check(
        "Hm.</think>\n\n</thin", content="</thin", reasoning="Hm.", tools=(),
        reasoning_format="think", reasoning_open=True,
    )  # fmt: skip


def test_reasoning_cut_by_the_length_limit() -> None:
    check(
        "<think>\nStill thinking about <", reasoning="Still thinking about <", tools=(),
        reasoning_format="think",
    )  # fmt: skip


def test_thinking_switched_off_leaves_plain_content() -> None:
    check("Hello <b>there</b>.", content="Hello <b>there</b>.", tools=(), reasoning_format="think")


def test_malformed_hermes_call_is_counted_and_leaks_nothing() -> None:
    text = 'Sure.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Par</tool_call>'
    result = check(text, content="Sure.", calls=[("get_weather", '{"city": "Par')], failures=1)
    assert result.calls[0][1].startswith('{"city"')


def test_hermes_call_with_arguments_before_the_name() -> None:
    text = '<tool_call>{"arguments": {"city": "Paris"}, "name": "get_weather"}</tool_call>'
    check(text, calls=[("get_weather", PARIS)])


def test_hermes_garbage_between_tags() -> None:
    check(
        "<tool_call>get_weather(Paris)</tool_call>", calls=[("", "get_weather(Paris)")], failures=1
    )


def test_hermes_bare_json_calls() -> None:
    text = '{"name": "get_weather", "arguments": {"city": "Paris"}}\n' + (
        '{"name": "get_weather", "arguments": {"city": "Oslo", "unit": "c"}}'
    )
    check(text, calls=[("get_weather", PARIS), ("get_weather", OSLO)])


# --- qwen3_coder ----------------------------------------------------------------------

CODE = 'def f():\n    return "x\\ty"\n'
CODER = (
    "I'll look that up.\n<tool_call>\n<function=get_weather>\n<parameter=city>\n"
    "San Francisco\n</parameter>\n<parameter=days>\n3\n</parameter>\n</function>\n"
    "</tool_call>\n<tool_call>\n<function=write_file>\n<parameter=path>\n/tmp/a.py\n"
    f"</parameter>\n<parameter=content>\n{CODE}\n</parameter>\n<parameter=overwrite>\n"
    'True\n</parameter>\n<parameter=mode>\n{"x": [1, 2]}\n</parameter>\n</function>\n'
    "</tool_call>"
)


def test_qwen3_coder_two_calls_typed_by_the_schema() -> None:
    result = check(
        CODER, content="I'll look that up.",
        calls=[
            ("get_weather", '{"city": "San Francisco", "days": 3}'),
            ("write_file", '{"path": "/tmp/a.py", "content": ' + json.dumps(CODE)
             + ', "overwrite": true, "mode": {"x": [1, 2]}}'),
        ],
        tool_format="qwen3_coder",
    )  # fmt: skip
    assert json.loads(result.calls[1][1])["content"] == CODE


def test_qwen3_coder_function_without_tool_call_tags_and_no_parameters() -> None:
    check(
        "Ok. <function=get_weather>\n</function>", content="Ok.", calls=[("get_weather", "{}")],
        failures=1, tool_format="qwen3_coder",
    )  # fmt: skip


def test_qwen3_coder_value_not_matching_its_type_is_counted() -> None:
    text = "<tool_call>\n<function=get_weather>\n<parameter=city>\nOslo\n</parameter>\n"
    text += "<parameter=days>\nthree\n</parameter>\n</function>\n</tool_call>"
    check(
        text, calls=[("get_weather", '{"city": "Oslo", "days": "three"}')], failures=1,
        tool_format="qwen3_coder",
    )  # fmt: skip


def test_qwen3_coder_missing_closing_tags_and_truncation() -> None:
    text = "<tool_call>\n<function=get_weather>\n<parameter=city>\nOslo\n<parameter=days>\n2"
    check(text, calls=[("get_weather", '{"city": "Oslo", "days": 2}')], tool_format="qwen3_coder")
    check(
        "Hm <tool_call>\n<function=get_wea", content="Hm", calls=[("get_wea", "{}")],
        failures=1, tool_format="qwen3_coder",
    )  # fmt: skip


def test_qwen3_coder_reads_a_hermes_json_call_too() -> None:
    text = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    check(text, calls=[("get_weather", PARIS)], tool_format="qwen3_coder")


# --- llama3 ---------------------------------------------------------------------------


def test_llama3_bare_call() -> None:
    text = '{"name": "get_weather", "parameters": {"city": "Paris"}}'
    check(text, calls=[("get_weather", PARIS)], tool_format="llama3")


LLAMA3 = (
    'Sure.<|python_tag|>{"type": "function", "name": "get_weather", "parameters": '
    '{"city": "Paris"}}; {"name": "get_weather", "parameters": {"city": "Oslo", '
    '"unit": "c"}}<|eom_id|>'
)


def test_llama3_python_tag_calls_apart_by_semicolons() -> None:
    check(
        LLAMA3, content="Sure.", calls=[("get_weather", PARIS), ("get_weather", OSLO)],
        tool_format="llama3",
    )  # fmt: skip


@pytest.mark.parametrize(
    "text",
    ['{"answer": 42}', '{"name": "Bob", "parameters": {}}', "{not json", "Use {x} here."],
)
def test_llama3_json_that_is_no_call_stays_content(text: str) -> None:
    check(text, content=text, tool_format="llama3")


def test_llama3_call_then_text_and_a_broken_call() -> None:
    text = '{"name": "get_weather", "parameters": {"city": "Paris"}}\nDone.'
    check(text, content="Done.", calls=[("get_weather", PARIS)], tool_format="llama3")
    text = '<|python_tag|>brave_search.call(query="x")'
    check(text, calls=[("", 'brave_search.call(query="x")')], failures=1, tool_format="llama3")


# --- mistral --------------------------------------------------------------------------


MISTRAL_ARRAY = (
    '[TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Paris"}}, '
    '{"name": "get_weather", "arguments": {"city": "Oslo", "unit": "c"}, '
    '"id": "abc123xyz"}]</s>'
)
MISTRAL = (
    'I\'ll check.[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}'
    '[TOOL_CALLS]get_weather[CALL_ID]a1B2c3D4e[ARGS]{"city": "Oslo", "unit": "c"}'
)


def test_mistral_array_of_calls() -> None:
    calls = [("get_weather", PARIS), ("get_weather", OSLO)]
    check(MISTRAL_ARRAY, calls=calls, tool_format="mistral")


def test_mistral_named_calls() -> None:
    check(
        MISTRAL, content="I'll check.", calls=[("get_weather", PARIS), ("get_weather", OSLO)],
        tool_format="mistral",
    )  # fmt: skip


def test_mistral_reasoning_and_a_broken_call() -> None:
    text = '[TOOL_CALLS]get_weather[ARGS]{"city": "Par'
    check(text, calls=[("get_weather", '{"city": "Par')], failures=1, tool_format="mistral")
    check("[TOOL_CALLS]get_wea", calls=[("get_wea", "")], failures=1, tool_format="mistral")


# --- deepseek -------------------------------------------------------------------------

BEGIN, END = "<｜tool▁calls▁begin｜>", "<｜tool▁calls▁end｜>"
CALL, SEP, CALL_END = "<｜tool▁call▁begin｜>", "<｜tool▁sep｜>", "<｜tool▁call▁end｜>"


DEEPSEEK_R1 = (
    "The user wants two cities.\n</think>\n\n"
    f"{BEGIN}{CALL}function{SEP}get_weather\n```json\n{PARIS}\n```{CALL_END}\n"
    f"{CALL}function{SEP}get_weather\n```json\n{OSLO}\n```{CALL_END}{END}"
    "<｜end▁of▁sentence｜>"
)
DEEPSEEK_V31 = (
    f"Checking.{BEGIN}{CALL}get_weather{SEP}{PARIS}{CALL_END}{CALL}get_weather{SEP}"
    f"{OSLO}{CALL_END}{END}"
)


def test_deepseek_r1_reasoning_then_two_calls() -> None:
    check(
        DEEPSEEK_R1, reasoning="The user wants two cities.",
        calls=[("get_weather", PARIS), ("get_weather", OSLO)],
        reasoning_format="think", reasoning_open=True, tool_format="deepseek",
    )  # fmt: skip


def test_deepseek_v31_calls() -> None:
    check(
        DEEPSEEK_V31, content="Checking.", calls=[("get_weather", PARIS), ("get_weather", OSLO)],
        tool_format="deepseek",
    )  # fmt: skip


def test_deepseek_distill_spelling_and_truncated_call() -> None:
    text = f"<｜tool_calls_begin｜>{CALL}function{SEP}get_weather\n```json\n" + '{"city": '
    check(text, calls=[("get_weather", '{"city": ')], failures=1, tool_format="deepseek")
    check(f"{BEGIN}{CALL}get_wea", calls=[("get_wea", "")], failures=1, tool_format="deepseek")


# --- harmony --------------------------------------------------------------------------

ANALYSIS = "<|channel|>analysis<|message|>User asks for the weather. Need get_weather.<|end|>"


def test_harmony_reasoning_then_a_call() -> None:
    text = (
        ANALYSIS + "<|start|>assistant<|channel|>commentary to=functions.get_weather "
        '<|constrain|>json<|message|>{"city":"Paris"}<|call|>'
    )
    check(
        text, reasoning="User asks for the weather. Need get_weather.",
        calls=[("get_weather", '{"city":"Paris"}')], reasoning_format="harmony",
        tool_format="harmony",
    )  # fmt: skip


def test_harmony_final_answer() -> None:
    text = (
        "<|channel|>analysis<|message|>Simple math.<|end|><|start|>assistant"
        "<|channel|>final<|message|>2 + 2 = 4.<|return|>"
    )
    check(
        text, content="2 + 2 = 4.", reasoning="Simple math.", tools=(), reasoning_format="harmony"
    )


HARMONY = (
    '<|channel|>analysis to=browser.search code<|message|>{"query": "x"}<|call|>'
    "<|start|>assistant<|channel|>commentary<|message|>Checking both.<|end|>"
    "<|start|>assistant to=functions.get_weather<|channel|>commentary json<|message|>"
    f"{PARIS}<|call|><|start|>assistant<|channel|>commentary to=functions.get_weather"
    f"<|constrain|>json<|message|> {OSLO}\n<|call|>"
)


def test_harmony_preamble_recipient_in_the_role_and_builtin_tools() -> None:
    check(
        HARMONY, content="Checking both.", reasoning='{"query": "x"}',
        calls=[("get_weather", PARIS), ("get_weather", OSLO)], tool_format="harmony",
    )  # fmt: skip


def test_harmony_prompt_opened_the_analysis_and_a_broken_call() -> None:
    text = "Thinking.<|end|><|start|>assistant<|channel|>commentary to=functions.get_weather"
    text += '<|message|>{"city": "Par'
    check(
        text, reasoning="Thinking.", calls=[("get_weather", '{"city": "Par')], failures=1,
        tool_format="harmony", reasoning_open=True,
    )  # fmt: skip


def test_harmony_plain_text_and_no_tools() -> None:
    check("Just text.", content="Just text.", tool_format="harmony")
    text = "<|channel|>commentary to=functions.get_weather<|message|>{}<|call|>"
    check(text, reasoning="{}", tools=(), tool_format="harmony")


# --- every format -------------------------------------------------------------------

TWO_CALLS = [
    (QWEN3.split("</think>")[1], {}),
    (CODER, {"tool_format": "qwen3_coder"}),
    (LLAMA3, {"tool_format": "llama3"}),
    (MISTRAL_ARRAY, {"tool_format": "mistral"}),
    (MISTRAL, {"tool_format": "mistral"}),
    (DEEPSEEK_R1.split("</think>")[1], {"tool_format": "deepseek"}),
    (DEEPSEEK_V31, {"tool_format": "deepseek"}),
    (HARMONY, {"tool_format": "harmony"}),
]


@pytest.mark.parametrize(("text", "options"), TWO_CALLS)
def test_arguments_stream_as_generated(text: str, options: dict[str, str]) -> None:
    out = events(list(text), **options)  # type: ignore[arg-type]
    pieces = [e for e in out if isinstance(e, ToolCallArguments)]
    for index in (0, 1):
        assert sum(p.index == index for p in pieces) >= 5
    starts = [i for i, e in enumerate(out) if isinstance(e, ToolCallStarted)]
    ends = [i for i, e in enumerate(out) if isinstance(e, ToolCallDelta)]
    assert len(starts) == len(ends) == 2 and starts[1] > ends[0]


@pytest.mark.parametrize(("text", "options"), TWO_CALLS)
def test_parallel_calls_off_keeps_the_first(text: str, options: dict[str, str]) -> None:
    whole = same_when_cut(text, **options)
    one = same_when_cut(text, parallel=False, **options)
    assert one.calls == whole.calls[:1] and one.content == whole.content
    assert one.reason is FinishReason.TOOL_CALLS


# --- the stream -----------------------------------------------------------------------


def test_first_token_is_an_empty_text_when_held() -> None:
    out = events(["<tool", "_call>"])
    assert [type(e).__name__ for e in out[:2]] == ["Accepted", "TextDelta"]
    assert out[1] == TextDelta("")


def test_no_tools_no_tool_parsing() -> None:
    result = run(QWEN3, tools=(), reasoning_format="think")
    assert not result.calls and result.content.startswith("Let me check both.\n<tool_call>")


def test_a_length_finish_stays_length() -> None:
    out = events([QWEN3.split("</think>")[1]], reason=FinishReason.LENGTH)
    assert out[-1] == Finished(FinishReason.LENGTH, USAGE)
    assert summary(out).calls


def test_reasoning_open_told_by_the_constructor() -> None:
    inner = Canned([TextDelta("Hm.</think>Yes."), Finished(FinishReason.STOP, USAGE)])
    stream = OutputStream(
        inner,  # type: ignore[arg-type]
        tools=(), metrics=Metrics(), model="m", reasoning_format="think", reasoning_open=True,
    )  # fmt: skip
    out = [drive(stream.next()) for _ in range(3)]
    assert out[:2] == [ReasoningDelta("Hm."), TextDelta("Yes.")]


TAGS = (
    "<tool_call>", "</tool_call>", "<function=", "</function>", "<parameter=", "</parameter>",
    "<think>", "</think>", "<|python_tag|>", "<|eom_id|>", "<|channel|>", "<|message|>",
    "<|start|>", "<|end|>", "<|call|>", "[TOOL_CALLS]", "[ARGS]", "[CALL_ID]", "</s>",
    BEGIN, END, CALL, SEP, CALL_END,
)  # fmt: skip
TRUNCATED = [
    *TWO_CALLS,
    (QWEN3, {"reasoning_format": "think"}),
    (DEEPSEEK_R1, {"reasoning_format": "think", "reasoning_open": True, "tool_format": "deepseek"}),
    (ANALYSIS + "<|start|>assistant<|channel|>final<|message|>Hi.", {"tool_format": "harmony"}),
]


@pytest.mark.parametrize(("text", "options"), TRUNCATED)
def test_every_truncation_streams_as_it_reads_whole(text: str, options: dict[str, Any]) -> None:
    # The answer cut short (by the length limit) anywhere: no tag reaches the content.
    for end in range(len(text) + 1):
        whole = run(text[:end], **options)
        assert run(text[:end], list(text[:end]), **options) == whole
        assert not any(tag in whole.content for tag in TAGS), (end, whole.content)
