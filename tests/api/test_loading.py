"""An app that loads its models in the background answers at once: liveness 200 and
readiness 503 with Retry-After until the load ends, while a request for the loading
model waits for that load and is then served."""

from __future__ import annotations

import concurrent.futures
import threading
import time
from pathlib import Path

from starlette.testclient import TestClient

from backends.base import Backend, LoadRequest
from backends.hardware import detect
from backends.registry import PluginInfo
from server.api.app import create_app
from server.config import load_models_file
from server.engine.hub import ModelHub
from server.engine.metrics import Metrics
from tests.api.conftest import BASE_URL, MODELS
from tests.fakes import FakePlugin

CHAT = {"model": "alpha", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


class HeldPlugin(FakePlugin):
    """Loads a model only once ``release`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def load(self, request: LoadRequest) -> Backend:
        self.release.wait(30)
        return super().load(request)


def test_the_app_answers_while_its_models_load(tmp_path: Path) -> None:
    path = tmp_path / "models.toml"
    path.write_text(MODELS)
    plugin = HeldPlugin()
    hub = ModelHub(
        load_models_file(path, tmp_path), ["alpha", "gamma"], hardware=detect(),
        metrics=Metrics(), max_waiting=4, plugins={"fake": PluginInfo("fake", plugin, None)},
    )  # fmt: skip
    app = create_app(hub, load_in_background=True)
    with TestClient(app, base_url=BASE_URL, raise_server_exceptions=False) as client:
        try:
            assert client.get("/health").status_code == 200
            ready = client.get("/health/ready")
            assert ready.status_code == 503 and ready.headers["Retry-After"]
            assert "loading: alpha, gamma" in ready.json()["error"]["message"]
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                waiting = pool.submit(client.post, "/v1/chat/completions", json=CHAT)
                models = {m["id"]: m["state"] for m in client.get("/v1/models").json()["data"]}
                assert models["alpha"] == "loading"
                time.sleep(0.3)
                assert not waiting.done()  # it waits for the load, not a 503
                plugin.release.set()
                assert waiting.result(timeout=30).status_code == 200
            assert len(plugin.loaded) == 1  # alpha, once (gamma has no file)
        finally:
            plugin.release.set()
        hub.wait_loaded()
        ready = client.get("/health/ready")
        assert ready.status_code == 503
        assert "loading" not in ready.json()["error"]["message"]
        assert "missing.fake" in ready.json()["error"]["message"]
        assert hub.dead_engines() == []  # a model that failed to load did not die serving
        reply = client.post("/v1/chat/completions", json=CHAT)
        assert reply.status_code == 200, reply.text
