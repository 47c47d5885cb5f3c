"""hearth service: the rendered systemd unit and launchd plist, and install without side effects."""

from __future__ import annotations

import os
import plistlib
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from server.cli import main as cli
from server.cli import service
from server.cli.service import Target, render_launchd, render_systemd

REPO = Path(__file__).resolve().parents[2]
HEARTH = Path(sys.executable).parent / "hearth"  # exists: systemd-analyze checks ExecStart
MODELS = REPO / "models.toml"
PLACEHOLDER = re.compile(r"@[A-Z_]+@")
HARDENING = (
    "NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=read-only", "PrivateTmp=yes",
    "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6", "SystemCallFilter=@system-service",
    "SystemCallArchitectures=native", "LockPersonality=yes", "RestrictRealtime=yes",
    "ProtectKernelTunables=yes", "ProtectKernelModules=yes", "ProtectControlGroups=yes",
)  # fmt: skip


def target(tmp_path: Path, *, system: bool = False, key: Path | None = None) -> Target:
    logs = tmp_path / "Library" / "Logs" / "hearth"
    return Target(HEARTH, MODELS, "127.0.0.1", 8123, "alice", logs, system, key)


def directives(unit: str) -> dict[str, list[str]]:
    """Each ``Key=value`` of a unit, every value kept, comments dropped."""
    found: dict[str, list[str]] = {}
    for line in unit.splitlines():
        if "=" in line and not line.startswith(("#", ";")):
            key, _, value = line.partition("=")
            found.setdefault(key, []).append(value)
    return found


def environment(unit: str) -> dict[str, str]:
    return dict(value.partition("=")[::2] for value in directives(unit)["Environment"])


@pytest.mark.parametrize("system", [False, True])
@pytest.mark.parametrize("with_key", [False, True])
def test_systemd_unit_fills_every_placeholder(tmp_path: Path, system: bool, with_key: bool) -> None:
    key = tmp_path / "api-keys" if with_key else None
    unit = render_systemd(target(tmp_path, system=system, key=key))
    assert PLACEHOLDER.search(unit) is None
    assert "##" not in unit
    found = directives(unit)
    exec_start = shlex.split(found["ExecStart"][0])
    assert exec_start == [
        str(HEARTH), "--models-file", str(MODELS), "serve", "--host", "127.0.0.1", "--port", "8123"
    ]  # fmt: skip
    assert found["WantedBy"] == ["multi-user.target" if system else "default.target"]
    assert found.get("User") == (["alice"] if system else None)
    assert found.get("PrivateUsers") == (None if system else ["yes"])


def test_systemd_unit_restarts_on_failure_within_bounds(tmp_path: Path) -> None:
    found = directives(render_systemd(target(tmp_path)))
    assert found["Type"] == ["exec"]
    assert found["Restart"] == ["on-failure"]
    assert int(found["RestartSec"][0]) > 0
    assert int(found["StartLimitBurst"][0]) > 1 and int(found["StartLimitIntervalSec"][0]) > 0
    unit = render_systemd(target(tmp_path))
    unit_section = unit.split("[Service]")[0]
    assert "StartLimitBurst=" in unit_section and "StartLimitIntervalSec=" in unit_section


def test_systemd_unit_stops_after_the_drain(tmp_path: Path) -> None:
    unit = render_systemd(target(tmp_path))
    found = directives(unit)
    assert found["KillSignal"] == ["SIGTERM"]
    drain = int(environment(unit)["HEARTH_DRAIN_SECONDS"])
    assert int(found["TimeoutStopSec"][0]) > drain


def test_systemd_unit_is_sandboxed_but_sees_the_gpu(tmp_path: Path) -> None:
    unit = render_systemd(target(tmp_path))
    lines = unit.splitlines()
    for line in HARDENING:
        assert line in lines
    found = directives(unit)
    assert any("nvidia" in value and value.endswith(" rw") for value in found["DeviceAllow"])
    assert "PrivateDevices" not in found
    assert "MemoryDenyWriteExecute" not in found
    assert found["StateDirectory"] == ["hearth"] and found["CacheDirectory"] == ["hearth"]
    assert environment(unit)["HEARTH_CACHE_DIR"] == "%C/hearth/models"


def test_systemd_unit_loads_the_key_as_a_credential_only_when_there_is_one(tmp_path: Path) -> None:
    keys = tmp_path / "api-keys"
    with_key = render_systemd(target(tmp_path, system=True, key=keys))
    assert directives(with_key)["LoadCredential"] == [f"api-keys:{keys}"]
    assert environment(with_key)["HEARTH_API_KEY_FILE"] == "%d/api-keys"
    without = render_systemd(target(tmp_path, system=True))
    assert "LoadCredential" not in directives(without)
    assert "HEARTH_API_KEY_FILE" not in environment(without)


def test_systemd_words_are_quoted_and_escaped() -> None:
    assert service._unit_word("/opt/my models/m.toml") == '"/opt/my models/m.toml"'
    assert service._unit_word("/opt/100%/$HOME") == "/opt/100%%/$$HOME"


def _verify(unit_file: Path, user: bool, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    command = ["systemd-analyze", *(["--user"] if user else []), "verify", str(unit_file)]
    runtime = tmp_path / "runtime"  # a user manager needs one, even a throwaway one
    runtime.mkdir(mode=0o700, exist_ok=True)
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime)}
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)


def _complaints(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stderr.splitlines() if "hearth.service" in line]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="systemd runs on Linux only")
@pytest.mark.parametrize("system", [False, True])
def test_systemd_analyze_accepts_the_unit(tmp_path: Path, system: bool) -> None:
    assert shutil.which("systemd-analyze"), "scripts/test installs systemd for systemd-analyze"
    unit_file = tmp_path / "hearth.service"
    unit_file.write_text(render_systemd(target(tmp_path, system=system, key=tmp_path / "k")))
    result = _verify(unit_file, not system, tmp_path)
    assert result.returncode == 0, result.stderr
    assert _complaints(result) == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="systemd runs on Linux only")
def test_systemd_analyze_would_catch_a_mistake(tmp_path: Path) -> None:
    unit_file = tmp_path / "hearth.service"
    unit_file.write_text(render_systemd(target(tmp_path)).replace("Type=exec", "Tpye=exec"))
    assert any("Tpye" in line for line in _complaints(_verify(unit_file, False, tmp_path)))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="systemd runs on Linux only")
def test_systemd_analyze_accepts_a_path_with_a_space(tmp_path: Path) -> None:
    folder = tmp_path / "my venv"
    folder.mkdir()
    (folder / "hearth").symlink_to(HEARTH)
    unit = render_systemd(Target(folder / "hearth", MODELS, "::1", 8123, "alice"))
    assert shlex.split(directives(unit)["ExecStart"][0])[0] == str(folder / "hearth")
    unit_file = tmp_path / "hearth.service"
    unit_file.write_text(unit)
    result = _verify(unit_file, True, tmp_path)
    assert result.returncode == 0 and _complaints(result) == [], result.stderr


@pytest.mark.parametrize("with_key", [False, True])
def test_launchd_plist_parses_and_has_every_key(tmp_path: Path, with_key: bool) -> None:
    key = tmp_path / "Library" / "Application Support" / "hearth" / "api-keys"
    text = render_launchd(target(tmp_path, key=key if with_key else None))
    assert PLACEHOLDER.search(text) is None
    plist = plistlib.loads(text.encode())
    assert plist["Label"] == "dev.hearth.server"
    assert plist["ProgramArguments"] == [
        str(HEARTH), "--models-file", str(MODELS), "serve", "--host", "127.0.0.1", "--port", "8123"
    ]  # fmt: skip
    assert plist["RunAtLoad"] is True
    assert plist["KeepAlive"] == {"SuccessfulExit": False}
    assert plist["ThrottleInterval"] == 10
    env = plist["EnvironmentVariables"]
    assert plist["ExitTimeOut"] > int(env["HEARTH_DRAIN_SECONDS"])
    assert plist["ProcessType"] == "Interactive"
    for log in (plist["StandardOutPath"], plist["StandardErrorPath"]):
        assert Path(log).parent == tmp_path / "Library" / "Logs" / "hearth"
    assert env.get("HEARTH_API_KEY_FILE") == (str(key) if with_key else None)


def test_launchd_values_are_xml_escaped(tmp_path: Path) -> None:
    odd = tmp_path / "a & <b>" / "models.toml"
    text = render_launchd(Target(HEARTH, odd, "127.0.0.1", 8123, "alice", tmp_path))
    assert plistlib.loads(text.encode())["ProgramArguments"][2] == str(odd)


class Recorder:
    """Stands in for run_command: remembers each command, runs none."""

    def __init__(self) -> None:
        self.commands: list[list[str]] = []

    def __call__(self, argv: Sequence[str]) -> int:
        self.commands.append(list(argv))
        return 0


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "home"
    folder.mkdir()
    monkeypatch.setenv("HOME", str(folder))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.delenv("HEARTH_HOST", raising=False)
    monkeypatch.delenv("HEARTH_PORT", raising=False)
    return folder


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    fake = Recorder()
    monkeypatch.setattr(service, "run_command", fake)
    return fake


def hearth(*args: str) -> int:
    return cli.main(["--models-file", str(MODELS), "service", *args])


def _tree(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*"))


@pytest.mark.parametrize("platform", ["linux", "darwin"])
def test_install_dry_run_changes_nothing(
    home: Path, recorder: Recorder, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str], platform: str,
) -> None:  # fmt: skip
    monkeypatch.setattr(sys, "platform", platform)
    assert hearth("install", "--dry-run", "--port", "8123") == 0
    assert _tree(home) == []
    assert recorder.commands == []
    out = capsys.readouterr().out
    if platform == "linux":
        assert f"would write {home}/.config/systemd/user/hearth.service:" in out
        assert "would run: systemctl --user enable hearth" in out
        command = f"{HEARTH} --models-file {MODELS} serve --host 127.0.0.1 --port 8123"
        assert f"\nExecStart={command}\n" in out
    else:
        assert f"would write {home}/Library/LaunchAgents/dev.hearth.server.plist:" in out
        assert f"would run: launchctl bootstrap gui/{os.getuid()} " in out
        assert "<string>8123</string>" in out


def test_install_and_uninstall_a_user_unit(
    home: Path, recorder: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "platform", "linux")
    assert hearth("install", "--port", "8123") == 0
    unit = home / ".config" / "systemd" / "user" / "hearth.service"
    assert "--port 8123" in unit.read_text()
    assert recorder.commands == [
        ["systemctl", "--user", "daemon-reload"],
        ["systemctl", "--user", "enable", "hearth"],
        ["systemctl", "--user", "restart", "hearth"],
    ]
    recorder.commands.clear()
    assert hearth("uninstall") == 0
    assert not unit.exists()
    assert recorder.commands == [
        ["systemctl", "--user", "disable", "--now", "hearth"],
        ["systemctl", "--user", "daemon-reload"],
    ]


def test_install_a_launch_agent_with_a_key(
    home: Path, recorder: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "platform", "darwin")
    key = home / "Library" / "Application Support" / "hearth" / "api-keys"
    key.parent.mkdir(parents=True)
    key.write_text("sk-test\n")
    assert hearth("install") == 0
    plist_file = home / "Library" / "LaunchAgents" / "dev.hearth.server.plist"
    plist = plistlib.loads(plist_file.read_bytes())
    assert plist["EnvironmentVariables"]["HEARTH_API_KEY_FILE"] == str(key)
    assert (home / "Library" / "Logs" / "hearth").is_dir()
    domain = f"gui/{os.getuid()}"
    assert recorder.commands[-1] == ["launchctl", "bootstrap", domain, str(plist_file)]
    recorder.commands.clear()
    assert hearth("install") == 0  # a reinstall stops the old agent first
    assert recorder.commands[0] == ["launchctl", "bootout", f"{domain}/dev.hearth.server"]


def test_a_failing_command_stops_the_install(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(service, "run_command", lambda argv: 1 if "enable" in argv else 0)
    assert hearth("install") == 1
    assert "`systemctl --user enable hearth` failed" in capsys.readouterr().err


def test_install_refuses_an_open_address_without_a_key(
    home: Path, recorder: Recorder, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    monkeypatch.setattr(sys, "platform", "linux")
    assert hearth("install", "--dry-run", "--host", "0.0.0.0") == 1
    assert "hearth/api-keys (chmod 600) first" in capsys.readouterr().err
    assert _tree(home) == []


def test_system_install_needs_root_and_linux(
    home: Path, recorder: Recorder, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    monkeypatch.setattr(sys, "platform", "darwin")
    assert hearth("install", "--system", "--dry-run") == 1
    assert "--system is for Linux" in capsys.readouterr().err
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert hearth("install", "--system") == 1
    assert "sudo" in capsys.readouterr().err
    assert hearth("install", "--system", "--dry-run") == 0
    out = capsys.readouterr().out
    assert "would write /etc/systemd/system/hearth.service:" in out
    assert "WantedBy=multi-user.target" in out and "would run: systemctl enable hearth" in out
    assert recorder.commands == []


@pytest.mark.parametrize(
    ("platform", "args", "expected"),
    [
        ("linux", ["status"], ["systemctl", "--user", "status", "--no-pager", "hearth"]),
        ("linux", ["logs", "-n", "5", "-f"],
         ["journalctl", "--user", "-u", "hearth", "-n", "5", "--no-pager", "-f"]),
        ("linux", ["logs", "--system"], ["journalctl", "-u", "hearth", "-n", "50", "--no-pager"]),
        ("darwin", ["status"], ["launchctl", "print", f"gui/{os.getuid()}/dev.hearth.server"]),
    ],
)  # fmt: skip
def test_status_and_logs_ask_the_service_manager(
    home: Path, recorder: Recorder, monkeypatch: pytest.MonkeyPatch,
    platform: str, args: list[str], expected: list[str],
) -> None:  # fmt: skip
    monkeypatch.setattr(sys, "platform", platform)
    assert hearth(*args) == 0
    assert recorder.commands == [expected]


def test_launchd_logs_tail_the_log_file(
    home: Path, recorder: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "platform", "darwin")
    assert hearth("logs", "-n", "20") == 0
    assert recorder.commands == [["tail", "-n", "20", f"{home}/Library/Logs/hearth/hearth.log"]]
