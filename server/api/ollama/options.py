"""The fields Ollama's ``/api/chat`` and ``/api/generate`` share: ``options``,
``format``, ``keep_alive``, ``think``, and the ones refused on both.

Each option is honoured, refused with a 400 naming it, or accepted with no effect
because it cannot change the answer here (docs/ollama.md has the table): the load-time
ones are models.toml's to decide, and those that only matter with a sampler hearth does
not have (repeat penalty, mirostat, tail-free, typical) are refused unless they hold
the value that turns that sampler off.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from backends.base import SAMPLING_RANGES, Constraint, SamplingParams
from server.api import fields as f
from server.engine.requests import Thinking
from server.errors import InvalidRequest, UnsupportedParameter

SAMPLING = {"temperature", "top_p", "top_k", "min_p", "seed", "presence_penalty",
            "frequency_penalty"}  # fmt: skip
OWN = {"num_predict", "num_ctx", "stop"}
# A sampler hearth does not have: accepted only at the value that turns it off.
OFF_AT = {"repeat_penalty": 1.0, "mirostat": 0, "tfs_z": 1.0, "typical_p": 1.0}
# No effect here: they tune the samplers above, or Ollama's context shifting (hearth ends
# an answer at the context's end instead of shifting).
NO_EFFECT = {"repeat_last_n", "penalize_newline", "mirostat_tau", "mirostat_eta", "num_keep"}
# How Ollama loads the model: models.toml decides that here.
LOAD_TIME = {
    "numa", "num_batch", "num_gpu", "main_gpu", "low_vram", "f16_kv", "logits_all",
    "vocab_only", "use_mmap", "use_mlock", "embedding_only", "num_thread",
}  # fmt: skip
KNOWN = SAMPLING | OWN | set(OFF_AT) | NO_EFFECT | LOAD_TIME
RANDOM_SEED = -1  # Ollama's default seed: a new one each time
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION = re.compile(r"([-+]?)((?:(?:\d+\.?\d*|\.\d+)(?:ns|us|µs|ms|s|m|h))+)")
_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|ms|s|m|h)")
_SECONDS = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)")


@dataclass(frozen=True, slots=True)
class Options:
    sampling: SamplingParams
    max_tokens: int | None  # num_predict; None: up to the model's default_max_tokens
    context_limit: int | None  # num_ctx
    stop: tuple[str, ...]


def parse_options(value: Any, defaults: SamplingParams) -> Options:
    if value is None:
        return Options(defaults, None, None, ())
    options = f.as_object(value, "'options'")
    for name, setting in options.items():
        if name not in KNOWN:
            raise UnsupportedParameter(f"options: unknown option {name!r}", param=name)
        if name in OFF_AT and setting is not None and setting != OFF_AT[name]:
            raise UnsupportedParameter(
                f"options.{name}: this server has no such sampler; only {OFF_AT[name]:g}, "
                "which turns it off, is accepted",
                param=name,
            )
        if (name in NO_EFFECT or name in LOAD_TIME) and isinstance(setting, dict | list | str):
            raise InvalidRequest(f"options.{name} must be a number or a boolean", param=name)
    sampling = {k: v for k, v in options.items() if k in SAMPLING and v is not None}
    if sampling.get("seed") == RANDOM_SEED:
        del sampling["seed"]
    return Options(
        sampling=f.sampling(sampling, defaults, SAMPLING_RANGES),
        max_tokens=_num_predict(options.get("num_predict")),
        context_limit=f.positive_int(options, "num_ctx"),
        stop=f.stop_strings(options.get("stop"), "options.stop"),
    )


def _num_predict(value: Any) -> int | None:
    """A positive count, or -1 (no limit) and -2 (fill the context): hearth's default
    for both, up to the model's default_max_tokens and the context's end."""
    if value is None or (type(value) is int and value in (-1, -2)):
        return None
    return f.positive_int({"num_predict": value}, "num_predict")


def parse_format(value: Any) -> Constraint | None:
    """``"json"``: any JSON object; a JSON schema: JSON that matches it."""
    if value is None or value == "":
        return None
    if value == "json":
        return Constraint()
    if isinstance(value, dict):
        return Constraint(schema=f.schema_text(value, "format"))
    raise InvalidRequest("'format' must be \"json\" or a JSON schema", param="format")


def parse_keep_alive(value: Any) -> float | None:
    """Seconds: a number, or a Go duration (``"5m"``, ``"1h30m"``, ``"0"``); a negative
    one means for good (``math.inf``), as in Ollama."""
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        seconds = float(value)
    elif isinstance(value, str) and _SECONDS.fullmatch(value):
        seconds = float(value)  # Ollama wants a unit; a bare number is taken as seconds
    elif isinstance(value, str) and _DURATION.fullmatch(value):
        seconds = sum(float(n) * _UNITS[unit] for n, unit in _PART.findall(value))
        seconds = -seconds if value.startswith("-") else seconds
    else:
        raise InvalidRequest(
            '\'keep_alive\' must be a number of seconds or a duration such as "5m" or "1h"',
            param="keep_alive",
        )
    return math.inf if seconds < 0 else seconds


def parse_think(value: Any) -> Thinking:
    """``think``: ``true`` or a level (``low``, ``medium``, ``high``) demands thinking, so
    a model without a reasoning mode refuses it, as Ollama does; ``false`` asks for none;
    absent leaves it to the model."""
    if value is None:
        return Thinking()
    if isinstance(value, bool):
        return Thinking("on" if value else "off")
    if value in ("low", "medium", "high"):
        return Thinking("on", value)
    raise InvalidRequest("'think' must be a boolean or low, medium or high", param="think")


def check_refused(fields: Mapping[str, Any]) -> None:
    """Fields of both endpoints this server cannot honour, refused where they would
    change the answer."""
    images = fields.get("images")
    if images not in (None, []):
        raise UnsupportedParameter("images: this server's models read text only", param="images")
    if f.boolean(fields, "logprobs"):
        raise UnsupportedParameter("logprobs are not supported yet", param="logprobs")
    if fields.get("top_logprobs") not in (None, 0):
        raise UnsupportedParameter("top_logprobs are not supported yet", param="top_logprobs")
