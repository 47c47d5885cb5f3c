"""The command line `hearth service install` renders starts a server that answers."""

from __future__ import annotations

import os
import plistlib
import re
import shlex
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import HEARTH, MODELS_FILE, _free_port, _stop, _wait_ready

pytestmark = pytest.mark.e2e


def rendered_service(tmp_path: Path, port: int) -> tuple[list[str], dict[str, str], int]:
    """The command, environment and stop timeout of the service that `install --dry-run`
    prints, rendered for a throwaway home folder."""
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "XDG_CONFIG_HOME"} | {"HOME": str(home)}
    command = [str(HEARTH), "--models-file", str(MODELS_FILE), "service", "install"]
    command += ["--dry-run", "--port", str(port)]
    out = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60, check=True)
    assert list(home.iterdir()) == []
    if sys.platform == "darwin":
        plist_text = re.search(r"<\?xml.*</plist>", out.stdout, re.S)
        assert plist_text, out.stdout
        plist = plistlib.loads(plist_text[0].encode())
        return plist["ProgramArguments"], plist["EnvironmentVariables"], plist["ExitTimeOut"]
    exec_start = re.search(r"^ExecStart=(.*)$", out.stdout, re.M)
    stop = re.search(r"^TimeoutStopSec=(\d+)$", out.stdout, re.M)
    assert exec_start and stop, out.stdout
    # Values with systemd specifiers (%C, %d) only mean something under systemd.
    assignments = re.findall(r"^Environment=(\w+)=([^%\n]*)$", out.stdout, re.M)
    return shlex.split(exec_start[1]), dict(assignments), int(stop[1])


def test_the_rendered_command_serves_and_stops_cleanly(tmp_path: Path) -> None:
    port = _free_port()
    command, env, stop_timeout = rendered_service(tmp_path, port)
    assert Path(command[0]).samefile(HEARTH)
    assert "HEARTH_DRAIN_SECONDS" in env
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "server.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            command, stdout=sink, stderr=subprocess.STDOUT, env={**os.environ, **env}
        )
        try:
            _wait_ready(proc, base, log, ("qwen2.5-coder-0.5b",))
            assert httpx.get(f"{base}/health", timeout=10).status_code == 200
            # What systemd and launchd do on stop: SIGTERM, then SIGKILL after the timeout.
            proc.terminate()
            status = proc.wait(timeout=stop_timeout)
        finally:
            _stop(proc)
    # A clean stop, so neither Restart=on-failure nor KeepAlive restarts it.
    assert status == 0, log.read_text(errors="replace")
