"""A model's output formats: how it writes its reasoning and its tool calls.

Read from the chat template's own markers (what the template renders is what the model
was trained to write) and the architecture, so a GGUF and an MLX folder of the same
model agree. The names are those of the output parsers (``server.engine.parsers``);
models.toml's ``reasoning_parser`` and ``tool_parser`` override what is detected here.
"""

from __future__ import annotations

REASONING_FORMATS = frozenset({"think", "harmony"})
TOOL_FORMATS = frozenset({"hermes", "qwen3_coder", "llama3", "mistral", "deepseek", "harmony"})

# OpenAI's harmony format (gpt-oss): channels for analysis, tool calls and the answer.
_HARMONY_MARKERS = ("<|channel|>",)
_HARMONY_ARCHITECTURES = frozenset({"gpt-oss", "gptoss"})
# The tool formats, first match wins: Qwen3-Coder's XML calls sit in the same
# <tool_call> tags as Hermes' JSON ones, so they are told apart by <function=.
_TOOL_MARKERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("qwen3_coder", ("<function=",)),
    ("hermes", ("<tool_call>",)),
    ("deepseek", ("<｜tool▁calls▁begin｜>", "<｜tool▁call▁begin｜>")),
    ("mistral", ("[TOOL_CALLS]",)),
    ("llama3", ("<|python_tag|>", "<|start_header_id|>ipython")),
)
# Formats whose markers are special (control) tokens in their models' vocabularies:
# a backend renders special tokens in these models' output, so the parsers see them.
SPECIAL_MARKERS = frozenset({"harmony", "llama3", "mistral", "deepseek"})
NONE = "none"  # models.toml: no parser, whatever is detected


def detect(template: str | None, architecture: str | None) -> tuple[str | None, str | None]:
    """The reasoning and tool formats of a model with this chat template (its Jinja
    source) and architecture (GGUF ``general.architecture`` or HF ``model_type``):
    ``None`` for what it has not."""
    text = template or ""
    if architecture in _HARMONY_ARCHITECTURES or any(m in text for m in _HARMONY_MARKERS):
        return "harmony", "harmony"
    reasoning = "think" if "<think>" in text or "</think>" in text else None
    return reasoning, _tool_format(text)


def _tool_format(template: str) -> str | None:
    for name, markers in _TOOL_MARKERS:
        if name == "qwen3_coder" and "<tool_call>" not in template:
            continue
        if any(marker in template for marker in markers):
            return name
    return None


def choose(
    template: str | None,
    architecture: str | None,
    reasoning_parser: str | None,
    tool_parser: str | None,
) -> tuple[str | None, str | None]:
    """The formats a loaded model gets: models.toml's ``reasoning_parser`` and
    ``tool_parser`` where set (``"none"``: no parser), else what :func:`detect` finds."""
    reasoning, tools = detect(template, architecture)
    return _override(reasoning_parser, reasoning), _override(tool_parser, tools)


def _override(setting: str | None, detected: str | None) -> str | None:
    if setting is None:
        return detected
    return None if setting == NONE else setting


def renders_special(reasoning_format: str | None, tool_format: str | None) -> bool:
    """Whether the model's output must show its special tokens for its parsers."""
    return reasoning_format in SPECIAL_MARKERS or tool_format in SPECIAL_MARKERS
