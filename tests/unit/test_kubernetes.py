"""deploy/kubernetes/hearth.yaml: valid against Kubernetes' schemas, and its probes,
preStop pause and grace period agree with what hearth does on SIGTERM."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from server.api.security import OPEN_PATHS, host_name

MANIFEST = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes" / "hearth.yaml"
# The oldest release whose kubelet runs a preStop `sleep` by default (beta in 1.30).
OLDEST = "1.30.0"


def documents() -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(MANIFEST.read_text()) if doc]


def container() -> dict[str, Any]:
    (deployment,) = [doc for doc in documents() if doc["kind"] == "Deployment"]
    (main,) = deployment["spec"]["template"]["spec"]["containers"]
    return {"pod": deployment["spec"]["template"]["spec"], **main}


@pytest.mark.parametrize("version", [OLDEST, kubernetes_validate.latest_version()])
def test_every_resource_is_valid_strictly(version: str) -> None:
    kinds = []
    for doc in documents():
        kubernetes_validate.validate(doc, version, strict=True)
        kinds.append(doc["kind"])
    assert sorted(kinds) == ["Deployment", "Service"]


def test_a_misspelled_field_is_caught() -> None:
    doc = documents()[0]
    doc["spec"]["template"]["spec"]["terminationGracePeriod"] = 45
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, OLDEST, strict=True)


def test_the_grace_period_covers_the_pause_and_the_drain() -> None:
    main = container()
    env = {e["name"]: e["value"] for e in main["env"]}
    pause = main["lifecycle"]["preStop"]["sleep"]["seconds"]
    grace = main["pod"]["terminationGracePeriodSeconds"]
    assert pause > main["readinessProbe"]["periodSeconds"]
    assert grace >= pause + float(env["HEARTH_DRAIN_SECONDS"]) + 5


def test_probes_reach_open_routes_with_an_allowed_host() -> None:
    main = container()
    probes = {kind: main[kind]["httpGet"] for kind in ("startupProbe", "livenessProbe")}
    probes["readinessProbe"] = main["readinessProbe"]["httpGet"]
    assert probes["readinessProbe"]["path"] == "/health/ready"
    for probe in probes.values():
        assert probe["path"] in OPEN_PATHS  # no API key needed
        hosts = {h["value"] for h in probe["httpHeaders"] if h["name"] == "Host"}
        assert {host_name(h) for h in hosts} == {"localhost"}
