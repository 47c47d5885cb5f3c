"""A request's thinking on the engine side: the chat template variables that carry it,
whether the prompt leaves the model inside its reasoning block, and the reasoning budget.

The budget ends thinking after ``budget_tokens`` generated tokens: when the model is
still inside its reasoning block by then, the engine queues the format's close text as
forced tokens (``Scheduler.force``, ``Backend.force``), fed in place of the next sample;
sampling goes on after them, in the answer.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from backends.base import Capabilities
from server.engine.requests import Thinking
from server.errors import InvalidRequest

# Per reasoning format: the text that opens its reasoning block, the text that ends it,
# and what the engine feeds to end it early (the end, then what the model's own answer
# starts after).
OPENS = {"think": "<think>", "harmony": "<|channel|>analysis<|message|>"}
ENDS = {"think": "</think>", "harmony": "<|end|>"}
CLOSES = {
    "think": "</think>\n\n",
    "harmony": "<|end|><|start|>assistant<|channel|>final<|message|>",
}
# Template variables by what they say: on/off switches (Qwen3's enable_thinking,
# DeepSeek-V3.1's thinking) and gpt-oss's effort level.
SWITCHES = ("enable_thinking", "thinking")
EFFORT = "reasoning_effort"
PARAM = "chat_template_kwargs"


def template_variables(
    kwargs: Sequence[tuple[str, str]], thinking: Thinking, caps: Capabilities
) -> dict[str, Any]:
    """The request's template variables (JSON text decoded), plus those that carry its
    thinking where the template reads them; a variable the request set itself wins.

    Raises :class:`InvalidRequest` when thinking is demanded of a model with no
    reasoning format."""
    if thinking.mode == "on" and caps.reasoning_format is None:
        raise InvalidRequest(
            "this model has no reasoning mode, so thinking cannot be turned on for it; "
            "leave it to the model or use a reasoning model",
            param="thinking",
        )
    variables = {}
    for name, text in kwargs:
        try:
            variables[name] = json.loads(text)
        except ValueError as exc:
            raise InvalidRequest(f"{PARAM}: {name!r} is not JSON", param=PARAM) from exc
    reads = caps.template_variables
    if thinking.mode != "auto":
        for name in SWITCHES:
            if name in reads:
                variables.setdefault(name, thinking.mode == "on")
    if thinking.effort is not None and EFFORT in reads:
        variables.setdefault(EFFORT, thinking.effort)
    return variables


def ends_open(prompt_tail: str, reasoning_format: str | None) -> bool:
    """Whether a rendered prompt ending in ``prompt_tail`` opened the reasoning block
    itself (DeepSeek-R1's and Qwen3's newer templates do): the answer starts inside it.
    Harmony's model opens its analysis channel itself, so never there."""
    return reasoning_format == "think" and prompt_tail.rstrip().endswith(OPENS["think"])


class ReasoningBudget:
    """Follows one sequence's generated text in and out of its reasoning block, and says
    when ``budget`` generated tokens have passed with the block still open."""

    def __init__(self, reasoning_format: str, budget: int, *, inside: bool) -> None:
        self.close = CLOSES[reasoning_format]
        self._open, self._end = OPENS[reasoning_format], ENDS[reasoning_format]
        self._budget = budget
        self._inside = inside
        self._window = ""  # the last characters seen, as long as the longer tag
        self._tokens = 0
        self.spent = False  # the close text was forced; the budget does nothing more

    def feed(self, text: str) -> bool:
        """Take one generated token's text; True when the close text is due now."""
        self._tokens += 1
        width = max(len(self._open), len(self._end))
        for char in text:
            self._window = (self._window + char)[-width:]
            if self._window.endswith(self._open):
                self._inside = True
            elif self._window.endswith(self._end):
                self._inside = False
        if self.spent or not self._inside or self._tokens < self._budget:
            return False
        self.spent = True
        return True

    def closed(self) -> None:
        """The close text was fed (forced, or at the end of the prompt)."""
        self._inside = False
        self._window = ""
