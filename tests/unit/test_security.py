"""Access-control configuration: API key files, the bind check, the Host allow-list."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from server.api.security import (
    SecurityConfigError,
    allowed_hosts,
    check_bind,
    host_name,
    load_api_keys,
    read_key_file,
)
from server.cli import main as cli
from server.settings import Settings

KEYS_TEXT = "# the team's keys\n\nsk-one\n   sk-two  \n# revoked: sk-zero\n\n"


def key_file(tmp_path: Path, text: str = KEYS_TEXT, mode: int = 0o600) -> Path:
    path = tmp_path / "keys"
    path.write_text(text)
    path.chmod(mode)
    return path


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_key_file_skips_comments_and_blank_lines(tmp_path: Path, mode: int) -> None:
    assert read_key_file(key_file(tmp_path, mode=mode)) == ["sk-one", "sk-two"]


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620, 0o666])
def test_key_file_open_to_group_or_others_is_refused(tmp_path: Path, mode: int) -> None:
    path = key_file(tmp_path, mode=mode)
    with pytest.raises(SecurityConfigError) as info:
        read_key_file(path)
    message = str(info.value)
    assert f"mode {mode:04o}" in message and "0600 or 0400" in message
    assert f"chmod 600 {path}" in message
    assert "sk-one" not in message


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n   \n"])
def test_key_file_without_a_key_is_refused(tmp_path: Path, text: str) -> None:
    with pytest.raises(SecurityConfigError, match="holds no key"):
        read_key_file(key_file(tmp_path, text))


def test_missing_key_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SecurityConfigError, match=r"API key file .*missing: cannot read it"):
        read_key_file(tmp_path / "missing")


def test_keys_from_the_environment_and_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HEARTH_API_KEYS", " sk-env, sk-one,,")
    monkeypatch.setenv("HEARTH_API_KEY_FILE", str(key_file(tmp_path)))
    settings = Settings()
    assert settings.api_keys == ("sk-env", "sk-one")
    assert load_api_keys(settings) == ("sk-env", "sk-one", "sk-two")
    assert "sk-env" not in repr(settings)


def test_comma_lists_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEARTH_ALLOWED_HOSTS", "box.lan, 192.168.1.5")
    monkeypatch.setenv("HEARTH_CORS_ORIGINS", "https://app.example")
    monkeypatch.setenv("HEARTH_INSECURE_NO_AUTH", "1")
    settings = Settings()
    assert settings.allowed_hosts == ("box.lan", "192.168.1.5")
    assert settings.cors_origins == ("https://app.example",)
    assert settings.insecure_no_auth is True


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.10", "localhost", "LocalHost", "::1"])
def test_loopback_bind_needs_no_key(host: str) -> None:
    assert check_bind(Settings(host=host)) is None


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "", "192.168.1.5", "fe80::1", "box.lan"])
def test_open_bind_without_a_key_is_refused(host: str) -> None:
    with pytest.raises(SecurityConfigError) as info:
        check_bind(Settings(host=host, port=9000))
    message = str(info.value)
    assert message.startswith("refusing to serve ") and ":9000 without an API key" in message
    assert "--api-key-file" in message and "--insecure-no-auth" in message


def test_open_bind_is_allowed_with_a_key_or_forced_with_a_warning(tmp_path: Path) -> None:
    assert check_bind(Settings(host="0.0.0.0", api_keys=("sk-a",))) is None
    assert check_bind(Settings(host="0.0.0.0", api_key_file=key_file(tmp_path))) is None
    warning = check_bind(Settings(host="0.0.0.0", port=9000, insecure_no_auth=True))
    assert warning == "serving 0.0.0.0:9000 without API keys: anyone who can reach it can use it"


def test_open_bind_with_an_unsafe_key_file_is_refused_for_the_file(tmp_path: Path) -> None:
    with pytest.raises(SecurityConfigError, match="open to group or others"):
        check_bind(Settings(host="0.0.0.0", api_key_file=key_file(tmp_path, mode=0o644)))


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ("localhost:8080", "localhost"),
        ("LOCALHOST", "localhost"),
        ("127.0.0.1:80", "127.0.0.1"),
        ("[::1]:8080", "[::1]"),
        ("[::1]", "[::1]"),
        ("::1", "[::1]"),
        ("evil.example:8080", "evil.example"),
        ("", ""),
    ],
)
def test_host_name_drops_the_port(header: str, name: str) -> None:
    assert host_name(header) == name


def test_allowed_hosts() -> None:
    def hosts(**fields: Any) -> set[str] | None:
        allowed = allowed_hosts(Settings(**fields))
        return None if allowed is None else set(allowed)

    local = {"localhost", "127.0.0.1", "[::1]"}
    assert hosts() == local
    assert hosts(host="0.0.0.0", allowed_hosts=("Box.lan",)) == {*local, "box.lan"}
    assert hosts(host="192.168.1.5") == {*local, "192.168.1.5"}
    assert hosts(host="fe80::1") == {*local, "[fe80::1]"}
    assert hosts(allowed_hosts=("box.lan", "*")) is None


def test_serve_flags_reach_the_settings(tmp_path: Path) -> None:
    path = key_file(tmp_path)
    args = cli._parser().parse_args(["serve", "--api-key-file", str(path), "--insecure-no-auth"])
    settings = cli._settings(args)
    assert settings.api_key_file == path and settings.insecure_no_auth is True


def test_serve_refuses_an_open_bind_before_loading_anything(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setattr(logging, "basicConfig", lambda **kw: None)
    missing = str(tmp_path / "no-models.toml")  # never read: the refusal comes first
    status = cli.main(["--models-file", missing, "serve", "--host", "0.0.0.0", "--no-pull"])
    assert status == 2
    err = capsys.readouterr().err
    assert err.startswith("hearth: refusing to serve 0.0.0.0:8080 without an API key")
