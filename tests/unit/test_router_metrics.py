"""Load figures under the names LLM-aware routers read (vLLM's), from hearth's own."""

from __future__ import annotations

import re

from server.engine.metrics import Metrics, vllm_names


def _series(text: str) -> dict[str, float]:
    return {m[1]: float(m[2]) for m in re.finditer(r"^(\S+) (\S+)$", text, re.M) if m[1][0] != "#"}


def test_each_model_gets_queue_and_kv_figures_labelled_as_vllm_labels_them() -> None:
    metrics = Metrics()
    for model, running, waiting, reserved in (("alpha", 3, 2, 128), ("beta", 1, 0, 0)):
        metrics.set("hearth_requests_running", running, model=model)
        metrics.set("hearth_requests_waiting", waiting, model=model)
        metrics.set("hearth_kv_cache_reserved_tokens", reserved, model=model)
        metrics.set("hearth_kv_cache_used_tokens", 500, model=model)  # prefix cache: not counted
        metrics.set("hearth_kv_cache_capacity_tokens", 512, model=model)
    series = _series(vllm_names(metrics, ["beta", "alpha"]))
    assert series == {
        'vllm:num_requests_running{model_name="alpha"}': 3,
        'vllm:num_requests_running{model_name="beta"}': 1,
        'vllm:num_requests_waiting{model_name="alpha"}': 2,
        'vllm:num_requests_waiting{model_name="beta"}': 0,
        'vllm:kv_cache_usage_perc{model_name="alpha"}': 0.25,
        'vllm:kv_cache_usage_perc{model_name="beta"}': 0,
        'vllm:gpu_cache_usage_perc{model_name="alpha"}': 0.25,
        'vllm:gpu_cache_usage_perc{model_name="beta"}': 0,
    }


def test_a_model_without_a_kv_cache_reads_as_empty_and_every_name_is_typed() -> None:
    metrics = Metrics()
    metrics.set("hearth_requests_waiting", 4, model="embedder")
    text = vllm_names(metrics, ["embedder"])
    assert 'vllm:kv_cache_usage_perc{model_name="embedder"} 0\n' in text
    assert 'vllm:num_requests_waiting{model_name="embedder"} 4\n' in text
    for name in ("num_requests_running", "num_requests_waiting", "kv_cache_usage_perc"):
        assert f"# TYPE vllm:{name} gauge\n" in text
