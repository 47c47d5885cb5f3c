"""A real server with API keys: the openai client, curl, and a DNS-rebinding request."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.e2e.conftest import serve

pytestmark = pytest.mark.e2e

FILE_KEY = "sk-hearth-e2e-from-the-file-5b1f"
ENV_KEY = "sk-hearth-e2e-from-the-env-9c2e"
MODEL = "qwen2.5-coder-0.5b"


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """(base URL, server log) of a server that reads a 0600 key file and HEARTH_API_KEYS."""
    folder = tmp_path_factory.mktemp("keyed")
    keys = folder / "keys"
    keys.write_text(f"# e2e\n\n{FILE_KEY}\n")
    keys.chmod(0o600)
    log = folder / "server.log"
    env = {"HEARTH_API_KEY_FILE": str(keys), "HEARTH_API_KEYS": ENV_KEY}
    with serve(log, models=(MODEL,), env=env, api_key=FILE_KEY) as base:
        yield base, log


def test_the_openai_client_with_a_key(keyed: tuple[str, Path]) -> None:
    base, _ = keyed
    for key in (FILE_KEY, ENV_KEY):
        with openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0) as client:
            reply = client.chat.completions.create(
                model="default",
                messages=[{"role": "user", "content": "Say hello."}],
                temperature=0,
                max_tokens=4,
            )
        assert reply.choices[0].finish_reason in ("stop", "length")
        assert reply.usage is not None and 0 < reply.usage.completion_tokens <= 4


def test_a_wrong_key_is_refused(keyed: tuple[str, Path]) -> None:
    base, _ = keyed
    client = openai.OpenAI(base_url=f"{base}/v1", api_key="sk-wrong", max_retries=0)
    with client, pytest.raises(openai.AuthenticationError) as info:
        client.models.list()
    assert info.value.status_code == 401
    assert info.value.code == "invalid_api_key"


def test_curl_without_a_key(keyed: tuple[str, Path]) -> None:
    base, _ = keyed
    refused = curl(f"{base}/v1/models")
    assert refused.startswith("HTTP/1.1 401"), refused
    assert "\nwww-authenticate: bearer\n" in refused.lower()
    assert '"code":"invalid_api_key"' in refused
    assert curl(f"{base}/health").startswith("HTTP/1.1 200")
    assert curl(f"{base}/v1/models", "-H", f"Authorization: Bearer {ENV_KEY}").startswith(
        "HTTP/1.1 200"
    )


def test_a_dns_rebinding_request_is_refused(keyed: tuple[str, Path]) -> None:
    """A page on attacker.example that rebinds its name to 127.0.0.1 still sends its Host."""
    base, log = keyed
    headers = {"Host": "attacker.example", "Authorization": f"Bearer {FILE_KEY}"}
    for path in ("/health", "/v1/models"):
        resp = httpx.get(f"{base}{path}", headers=headers)
        assert resp.status_code == 403
        error = resp.json()["error"]
        assert (error["type"], error["code"]) == ("permission_error", "host_not_allowed")
    assert curl(f"{base}/health", "-H", "Host: attacker.example:8080").startswith("HTTP/1.1 403")
    text = log.read_text(errors="replace")
    assert FILE_KEY not in text and ENV_KEY not in text
    assert "API keys required" in text


def curl(url: str, *flags: str) -> str:
    """The status line, headers and body."""
    command = ["curl", "--silent", "--show-error", "--include", *flags, url]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=True).stdout
