"""Any JSON in the tool, response-format and infill fields is a 200 or a 400, never a 500."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=12,
)
names = st.sampled_from(["type", "function", "name", "parameters", "json_schema", "schema",
                         "arguments", "tool_calls", "$ref", "properties", "required"])  # fmt: skip
shaped = st.recursive(
    json_values,
    lambda inner: st.dictionaries(names, inner, max_size=4) | st.lists(inner, max_size=2),
    max_leaves=16,
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(tools=shaped, choice=shaped, fmt=shaped, calls=shaped, extra=shaped)
def test_fuzzed_fields_never_500(
    client: TestClient, tools: Any, choice: Any, fmt: Any, calls: Any, extra: Any
) -> None:
    messages = [
        {"role": "user", "content": "x"},
        {"role": "assistant", "content": None, "tool_calls": calls},
        {"role": "tool", "tool_call_id": "1", "content": "y"},
    ]
    chat = {"model": "alpha", "messages": messages, "tools": tools, "tool_choice": choice,
            "response_format": fmt}  # fmt: skip
    for path, body in (
        ("/v1/chat/completions", chat),
        ("/v1/completions", {"model": "alpha", "prompt": "a", "suffix": extra}),
        ("/infill", {"input_prefix": "a", "input_extra": extra, "prompt": choice}),
    ):
        r = client.post(path, json=body)
        assert r.status_code in (200, 400), (path, r.text)
