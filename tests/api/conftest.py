from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from backends.hardware import detect
from backends.registry import PluginInfo
from server.api.app import create_app
from server.config import load_models_file
from server.engine.hub import ModelHub
from server.engine.metrics import Metrics
from tests.fakes import FakePlugin

MODELS = """
default = "alpha"

[models.alpha]
aliases = ["a"]
backend = "fake"
path = "alpha.fake"
context_length = 512
max_sequences = 4

[models.beta]
backend = "fake"
path = "beta.fake"
context_length = 256

[models.gamma]
backend = "fake"
path = "missing.fake"
"""


# A host the default allow-list answers for; TestClient's own "testserver" gets 403.
BASE_URL = "http://localhost:8080"


@pytest.fixture
def hub(tmp_path: Path) -> ModelHub:
    path = tmp_path / "models.toml"
    path.write_text(MODELS)
    models = load_models_file(path, tmp_path)
    plugins = {"fake": PluginInfo("fake", FakePlugin(), None)}
    return ModelHub(
        models, ["alpha", "beta", "gamma"], hardware=detect(), metrics=Metrics(),
        max_waiting=4, plugins=plugins,
    )  # fmt: skip


@pytest.fixture
def client(hub: ModelHub) -> Iterator[TestClient]:
    with TestClient(create_app(hub), base_url=BASE_URL, raise_server_exceptions=False) as c:
        yield c
