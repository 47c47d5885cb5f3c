"""Parse OpenAI request bodies into frozen values at the route boundary.

Every field is checked here and named in the error; a field we do not support is
refused, never silently ignored. Nothing past the routes sees a dict from the wire.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from backends.base import SamplingParams
from server.api import fields as f
from server.api import thinking, toolchoice
from server.api.openai.formats import parse_response_format
from server.api.openai.messages import MAX_PROMPT_CHARS, parse_messages
from server.api.openai.tools import parse_tools
from server.engine.requests import INTERACTIVE, Fim, GenerationRequest
from server.errors import InvalidRequest, UnsupportedParameter

MAX_LOGIT_BIAS = 1024
MAX_TOP_LOGPROBS = 20
MAX_TOKEN_ID = 2**31 - 1

_SAMPLING_FIELDS = {
    "temperature", "top_p", "top_k", "min_p", "presence_penalty", "frequency_penalty", "seed",
}  # fmt: skip
_COMMON = _SAMPLING_FIELDS | {
    "model", "max_tokens", "stop", "stream", "stream_options", "user", "n", "logprobs",
    "ignore_eos", "interactive", "response_format", "speculative",
}  # fmt: skip
CHAT_FIELDS = _COMMON | {
    "messages", "max_completion_tokens", "top_logprobs", "logit_bias", "tools", "tool_choice",
    "parallel_tool_calls", "reasoning_effort", "chat_template_kwargs",
}  # fmt: skip
COMPLETION_FIELDS = _COMMON | {"prompt", "echo", "suffix", "best_of"}
# Known OpenAI fields we cannot honour yet: a clear 400 rather than silence.
_UNSUPPORTED = {
    "functions": "function calls are not supported",
    "function_call": "function calls are not supported",
    "audio": "audio output is not supported",
    "modalities": "only text output is supported",
    "prediction": "predicted outputs are not supported",
}


@dataclass(frozen=True, slots=True)
class ParsedRequest:
    generation: GenerationRequest
    stream: bool
    include_usage: bool


def parse_chat(
    body: Any, defaults: SamplingParams, *, model: str, vocab_size: int = MAX_TOKEN_ID,
    tool_format: str = "hermes",
) -> ParsedRequest:  # fmt: skip
    """``tool_format``: how the model writes a call, for a forced one and a single one."""
    fields = f.as_object(body)
    _check_fields(fields, CHAT_FIELDS)
    messages = parse_messages(fields.get("messages"))
    max_tokens = f.positive_int(fields, "max_completion_tokens") or f.positive_int(
        fields, "max_tokens"
    )
    # Checked against their limits first, so the limits hold once they are supported.
    if check_top_logprobs(fields.get("top_logprobs")) is not None:
        raise UnsupportedParameter("top_logprobs is not supported yet", param="top_logprobs")
    if check_logit_bias(fields.get("logit_bias"), vocab_size):
        raise UnsupportedParameter("logit_bias is not supported yet", param="logit_bias")
    choice = parse_tools(
        fields.get("tools"), fields.get("tool_choice"), fields.get("parallel_tool_calls")
    )
    parsed = _parsed(fields, defaults, model, max_tokens, messages=messages)
    gen = replace(parsed.generation, **_thinking(fields))
    return replace(parsed, generation=toolchoice.apply(gen, choice, tool_format))


def _thinking(fields: Mapping[str, Any]) -> dict[str, Any]:
    """``reasoning_effort`` and ``chat_template_kwargs`` (whose ``enable_thinking``
    turns thinking on or off), as the request's ``thinking`` and ``template_kwargs``."""
    kwargs = fields.get("chat_template_kwargs")
    pairs = thinking.template_kwargs(kwargs)
    asked = thinking.effort(fields.get("reasoning_effort"), "reasoning_effort")
    enabled = kwargs.get("enable_thinking") if kwargs else None
    name = "chat_template_kwargs.enable_thinking"
    asked = thinking.switched(asked, enabled, name, "chat_template_kwargs")
    return {"thinking": asked, "template_kwargs": pairs}


def parse_completion(body: Any, defaults: SamplingParams, *, model: str) -> ParsedRequest:
    fields = f.as_object(body)
    _check_fields(fields, COMPLETION_FIELDS)
    prompt = fields.get("prompt")
    if prompt is None:
        raise InvalidRequest(
            "'prompt' is required", param="prompt", code="missing_required_parameter"
        )
    if not isinstance(prompt, str):
        raise InvalidRequest("'prompt' must be a string", param="prompt")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise InvalidRequest(
            f"'prompt' exceeds {MAX_PROMPT_CHARS} characters", param="prompt", code="too_long"
        )
    if fields.get("echo") not in (None, False):
        raise UnsupportedParameter("'echo' is not supported yet", param="echo")
    if fields.get("best_of") not in (None, 1):
        raise UnsupportedParameter("best_of > 1 is not supported", param="best_of")
    max_tokens = f.positive_int(fields, "max_tokens")
    suffix = fields.get("suffix")
    if suffix is None or suffix == "":
        return _parsed(fields, defaults, model, max_tokens, prompt=prompt)
    if not isinstance(suffix, str) or len(suffix) > MAX_PROMPT_CHARS:
        raise InvalidRequest(
            f"'suffix' must be a string of at most {MAX_PROMPT_CHARS} characters", param="suffix"
        )
    # A suffix makes this fill-in-the-middle: an IDE completion, so interactive.
    fim = Fim(prefix=prompt, suffix=suffix)
    return _parsed(fields, defaults, model, max_tokens, fim=fim, priority=INTERACTIVE)


def model_name(body: Any) -> str:
    value = f.as_object(body).get("model")
    if value is None:
        raise InvalidRequest(
            "'model' is required", param="model", code="missing_required_parameter"
        )
    if not isinstance(value, str) or not value:
        raise InvalidRequest("'model' must be a non-empty string", param="model")
    return value


def _parsed(
    fields: Mapping[str, Any],
    defaults: SamplingParams,
    model: str,
    max_tokens: int | None,
    **prompt: Any,
) -> ParsedRequest:
    n = fields.get("n")
    if n is not None and (type(n) is not int or n != 1):
        raise UnsupportedParameter("n > 1 is not supported; send separate requests", param="n")
    if fields.get("logprobs") not in (None, False):
        raise UnsupportedParameter("logprobs are not supported yet", param="logprobs")
    stream = f.boolean(fields, "stream")
    if f.boolean(fields, "interactive"):
        prompt.setdefault("priority", INTERACTIVE)
    sampling = f.sampling(fields, defaults)
    constraint = parse_response_format(fields.get("response_format"))
    if constraint is not None:
        sampling = replace(sampling, constraint=constraint)
    generation = GenerationRequest(
        request_id=f.request_id(),
        model=model,
        sampling=sampling,
        max_tokens=max_tokens,
        stop=f.stop_strings(fields.get("stop")),
        arrival=time.monotonic(),
        speculative=None if fields.get("speculative") is None else f.boolean(fields, "speculative"),
        **prompt,
    )
    return ParsedRequest(generation, stream, _include_usage(fields, stream))


def _check_fields(fields: Mapping[str, Any], allowed: set[str]) -> None:
    for name in fields:
        if name in _UNSUPPORTED and fields[name] is not None:
            raise UnsupportedParameter(f"'{name}': {_UNSUPPORTED[name]}", param=name)
        if name not in allowed and name not in _UNSUPPORTED:
            raise UnsupportedParameter(f"unrecognized request argument: '{name}'", param=name)


def check_top_logprobs(value: Any) -> int | None:
    """``top_logprobs``: an integer from 0 to MAX_TOP_LOGPROBS."""
    if value is None:
        return None
    if type(value) is not int or not 0 <= value <= MAX_TOP_LOGPROBS:
        raise InvalidRequest(
            f"'top_logprobs' must be an integer from 0 to {MAX_TOP_LOGPROBS}", param="top_logprobs"
        )
    return value


def check_logit_bias(value: Any, vocab_size: int) -> dict[int, float]:
    """``logit_bias``: at most MAX_LOGIT_BIAS token ids of the vocabulary → -100..100."""
    if value is None:
        return {}
    if not isinstance(value, dict) or len(value) > MAX_LOGIT_BIAS:
        raise InvalidRequest(
            f"'logit_bias' must be an object of at most {MAX_LOGIT_BIAS} entries",
            param="logit_bias",
        )
    bias: dict[int, float] = {}
    for key, number in value.items():
        digits = isinstance(key, str) and 0 < len(key) <= 10 and key.isascii() and key.isdigit()
        token = int(key) if digits else -1
        ok = isinstance(number, int | float) and not isinstance(number, bool)
        if not 0 <= token < vocab_size or not ok or not -100 <= number <= 100:
            raise InvalidRequest(
                f"'logit_bias' maps token ids from 0 to {vocab_size - 1} to numbers from "
                f"-100 to 100; {str(key)[:40]!r} is not one",
                param="logit_bias",
            )
        bias[token] = float(number)
    return bias


def _include_usage(fields: Mapping[str, Any], stream: bool) -> bool:
    options = fields.get("stream_options")
    if options is None:
        return False
    if not stream:
        raise InvalidRequest(
            "'stream_options' is only allowed with stream: true", param="stream_options"
        )
    if not isinstance(options, dict) or set(options) - {"include_usage"}:
        raise InvalidRequest("'stream_options' supports only include_usage", param="stream_options")
    return f.boolean(options, "include_usage")


def parse_tokenize(body: Any) -> tuple[str, bool]:
    fields = f.as_object(body)
    _check_fields(fields, {"model", "content", "add_special"})
    content = fields.get("content")
    if not isinstance(content, str):
        raise InvalidRequest("'content' must be a string", param="content")
    return content, f.boolean(fields, "add_special")


def parse_detokenize(body: Any, vocab_size: int) -> list[int]:
    fields = f.as_object(body)
    _check_fields(fields, {"model", "tokens"})
    tokens = fields.get("tokens")
    valid = isinstance(tokens, list) and all(
        isinstance(t, int) and not isinstance(t, bool) and 0 <= t < vocab_size for t in tokens
    )
    if not valid:
        raise InvalidRequest(
            f"'tokens' must be an array of token ids from 0 to {vocab_size - 1}", param="tokens"
        )
    assert isinstance(tokens, list)
    return tokens
