"""Codex itself (``codex exec``) against a real server and the default model, through
the Responses API. scripts/test installs it from npm into the cache; ``CODEX_HOME`` is
the test's own folder, with a provider whose base_url is the server. Its instructions
are replaced by one line so that a turn is about 2,500 tokens rather than 10,000."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.e2e.test_claude_code import CLIENTS

pytestmark = pytest.mark.e2e

CODEX = CLIENTS / "node_modules" / ".bin" / "codex"


def codex_exec(
    base_url: str, tmp_path: Path, prompt: str, *, model: str = "default", settings: str = ""
) -> subprocess.CompletedProcess[str]:
    """One ``codex exec`` turn in its own CODEX_HOME; ``settings``: more config.toml lines."""
    if shutil.which("node") is None:
        pytest.skip("Codex is installed from npm and started by Node.js, which this machine lacks")
    assert CODEX.exists(), f"{CODEX} is missing: scripts/test installs it with npm"
    home = tmp_path / "codex"
    home.mkdir()
    (home / "instructions.md").write_text("You are a terse assistant. Answer in one line.\n")
    (home / "config.toml").write_text(
        f'model = "{model}"\nmodel_provider = "hearth"\n{settings}'
        f'model_instructions_file = "{home / "instructions.md"}"\n'
        "[model_providers.hearth]\n"
        f'name = "hearth"\nbase_url = "{base_url}/v1"\nwire_api = "responses"\n'
        "request_max_retries = 0\nstream_max_retries = 0\n"
    )
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "CODEX_HOME": str(home)}
    done = subprocess.run(
        [str(CODEX), "exec", "--skip-git-repo-check", "--disable", "multi_agent", prompt],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done


def test_codex_exec_completes_a_turn(base_url: str, tmp_path: Path) -> None:
    done = codex_exec(base_url, tmp_path, "What is the capital of France? One word.")
    assert "paris" in done.stdout.lower(), done.stdout[-2000:]
