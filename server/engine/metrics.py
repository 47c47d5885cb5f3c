"""Prometheus text-format metrics, written by engine threads and read by ``/metrics``."""

from __future__ import annotations

import bisect
import threading
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

_HELP = {
    "hearth_requests_running": ("gauge", "Sequences in the running batch."),
    "hearth_requests_waiting": ("gauge", "Requests queued for admission."),
    "hearth_kv_cache_used_tokens": ("gauge", "KV cache cells in use, prefix cache included."),
    "hearth_kv_cache_reserved_tokens": ("gauge", "KV cache reserved by running sequences."),
    "hearth_kv_cache_capacity_tokens": ("gauge", "KV cache size in tokens."),
    "hearth_model_resident_bytes": ("gauge", "Resident memory of the model's runner process."),
    "hearth_model_loads_total": ("counter", "Model loads started."),
    "hearth_model_unloads_total": ("counter", "Models unloaded, by reason."),
    "hearth_model_load_seconds": ("histogram", "Time from a load's start to ready or failed."),
    "hearth_prompt_cache_entries": ("gauge", "Saved prompt states, RAM and disk tiers."),
    "hearth_prompt_cache_ram_bytes": ("gauge", "Bytes of saved prompt state in RAM."),
    "hearth_prompt_cache_disk_bytes": ("gauge", "Bytes of saved prompt state on disk."),
    "hearth_prompt_cache_ram_hits": ("counter", "Prompts started from state saved in RAM."),
    "hearth_prompt_cache_disk_hits": ("counter", "Prompts started from state saved on disk."),
    "hearth_steps_total": ("counter", "Forward passes (engine steps) run."),
    "hearth_step_sequences_total": ("counter", "Sequences advanced, summed over steps."),
    "hearth_step_sequences_max": ("gauge", "The most sequences one step has advanced."),
    "hearth_prompt_tokens_total": ("counter", "Prompt tokens received."),
    "hearth_generation_tokens_total": ("counter", "Tokens generated."),
    "hearth_prefix_cache_hits_total": ("counter", "Requests that reused cached prefix KV."),
    "hearth_prefix_cache_hit_tokens_total": ("counter", "Prompt tokens served from the cache."),
    "hearth_embedding_inputs_total": ("counter", "Inputs embedded or reranked."),
    "hearth_embedding_tokens_total": ("counter", "Tokens of the inputs embedded or reranked."),
    "hearth_requests_total": ("counter", "Requests finished, by finish reason."),
    "hearth_requests_rejected_total": ("counter", "Requests refused, by reason."),
    "hearth_tool_call_parse_failures_total": (
        "counter",
        "Tool calls returned whose JSON or arguments did not parse or match the tool.",
    ),
    "hearth_time_to_first_token_seconds": ("histogram", "Time from arrival to first token."),
    "hearth_inter_token_latency_seconds": ("histogram", "Time between tokens of a stream."),
    "hearth_spec_drafts_total": ("counter", "Speculative drafts verified, by drafter."),
    "hearth_spec_draft_tokens_total": ("counter", "Draft tokens verified, by drafter."),
    "hearth_spec_accepted_tokens_total": ("counter", "Draft tokens accepted, by drafter."),
    "hearth_spec_acceptance_rate": ("gauge", "Draft tokens accepted per draft token verified."),
}

# The names LLM-aware routers read by default: the Gateway API Inference Extension's
# endpoint picker takes vLLM's. Each is one of hearth's own figures per model, labelled
# ``model_name`` as vLLM labels it; docs/scale-out.md has the mapping.
_VLLM_HELP = {
    "vllm:num_requests_running": "Requests in the running batch (hearth_requests_running).",
    "vllm:num_requests_waiting": "Requests queued for admission (hearth_requests_waiting).",
    "vllm:kv_cache_usage_perc": "KV cache reserved by running requests, 0 to 1.",
    "vllm:gpu_cache_usage_perc": "The same as vllm:kv_cache_usage_perc (vLLM's older name).",
}

Labels = tuple[tuple[str, str], ...]


@dataclass(slots=True)
class _Histogram:
    counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    total: float = 0.0
    n: int = 0


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, dict[Labels, float]] = defaultdict(dict)
        self._hists: dict[str, dict[Labels, _Histogram]] = defaultdict(dict)

    def set(self, name: str, value: float, **labels: str) -> None:
        with self._lock:
            self._values[name][_key(labels)] = value

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        key = _key(labels)
        with self._lock:
            series = self._values[name]
            series[key] = series.get(key, 0.0) + amount

    def observe(self, name: str, value: float, **labels: str) -> None:
        key = _key(labels)
        with self._lock:
            hist = self._hists[name].setdefault(key, _Histogram())
            hist.counts[bisect.bisect_left(LATENCY_BUCKETS, value)] += 1
            hist.total += value
            hist.n += 1

    def get(self, name: str, **labels: str) -> float:
        with self._lock:
            return self._values[name].get(_key(labels), 0.0)

    def render(self) -> str:
        lines: list[str] = []
        with self._lock:
            for name, (kind, text) in _HELP.items():
                lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
                for labels, value in sorted(self._values.get(name, {}).items()):
                    lines.append(f"{name}{_fmt(labels)} {value:g}")
                for labels, hist in sorted(self._hists.get(name, {}).items()):
                    lines += _histogram_lines(name, labels, hist)
        return "\n".join(lines) + "\n"


def vllm_names(metrics: Metrics, models: Iterable[str]) -> str:
    """The router figures of each model under vLLM's names. KV use counts the cells that
    running requests reserve, as admission does, not the prefix cache they may evict."""
    values: dict[str, list[str]] = {name: [] for name in _VLLM_HELP}
    for model in sorted(models):
        label = _fmt((("model_name", model),))
        capacity = metrics.get("hearth_kv_cache_capacity_tokens", model=model)
        reserved = metrics.get("hearth_kv_cache_reserved_tokens", model=model)
        usage = min(reserved / capacity, 1.0) if capacity else 0.0
        figures = {
            "vllm:num_requests_running": metrics.get("hearth_requests_running", model=model),
            "vllm:num_requests_waiting": metrics.get("hearth_requests_waiting", model=model),
            "vllm:kv_cache_usage_perc": usage,
            "vllm:gpu_cache_usage_perc": usage,
        }
        for name, value in figures.items():
            values[name].append(f"{name}{label} {value:g}")
    lines: list[str] = []
    for name, text in _VLLM_HELP.items():
        lines += [f"# HELP {name} {text}", f"# TYPE {name} gauge", *values[name]]
    return "\n".join(lines) + "\n"


def _histogram_lines(name: str, labels: Labels, hist: _Histogram) -> list[str]:
    lines, running = [], 0
    for bound, count in zip((*LATENCY_BUCKETS, float("inf")), hist.counts, strict=True):
        running += count
        le = "+Inf" if bound == float("inf") else f"{bound:g}"
        lines.append(f"{name}_bucket{_fmt((*labels, ('le', le)))} {running}")
    lines.append(f"{name}_sum{_fmt(labels)} {hist.total:g}")
    lines.append(f"{name}_count{_fmt(labels)} {hist.n}")
    return lines


def _key(labels: dict[str, str]) -> Labels:
    return tuple(sorted(labels.items()))


def _fmt(labels: Labels) -> str:
    if not labels:
        return ""
    body = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
    return "{" + body + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
