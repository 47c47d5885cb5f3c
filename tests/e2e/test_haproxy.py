"""Two real hearth replicas behind a real HAProxy on the shipped configuration, under a
steady load of streams: one replica drained with SIGTERM, started again, then the other
killed with SIGKILL. bench/haproxy.py runs the same for a minute and counts."""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

import pytest

from bench.replicas import Load, Replicas, during, haproxy, run_under_load

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        shutil.which("haproxy") is None and not os.path.exists("/usr/sbin/haproxy"),
        reason="haproxy is not installed (scripts/test installs Debian's package)",
    ),
]

SESSIONS = {0: ("X-Session-Affinity", "conversation-a"), 1: ("session-id", "conversation-b")}


def test_a_drain_loses_no_stream_and_a_kill_fails_only_its_own(tmp_path: Path) -> None:
    with contextlib.ExitStack() as stack:
        replicas = Replicas(tmp_path, stack)
        proxy = stack.enter_context(haproxy(tmp_path, replicas.ports))
        load = Load(proxy.base, workers=4, max_tokens=24, sessions=SESSIONS)
        t = run_under_load(replicas, proxy, load)
    outcomes = load.outcomes

    # Nothing ends cut without a word: every stream is whole or failed loudly.
    assert not [o for o in outcomes if o.silent], outcomes
    # The drained replica finished every stream it had and exited 0.
    assert t["first_exit_code"] == 0
    # Until the kill, every stream was whole, the drain included.
    before_kill = during(outcomes, 0, t["sigkill"])
    assert all(o.whole for o in before_kill if o.ended < t["sigkill"]), before_kill
    # Once HAProxy counted hearth1 down, new streams went to hearth2 until it came back.
    gone = during(outcomes, t["first_down"], t["restart"])
    assert gone and {o.replica for o in gone} == {"hearth2"}, gone
    # While both served, each session stayed on one replica.
    for worker in SESSIONS:
        steady = [o for o in during(outcomes, 0, t["sigterm"]) if o.worker == worker]
        assert len({o.replica for o in steady}) == 1, steady
    # The kill failed only streams that hearth2 was serving then, and the one picked
    # mid-stream did fail, loudly.
    failed = [o for o in outcomes if not o.whole]
    assert failed and all(o.replica == "hearth2" for o in failed), failed
    assert all(o.started < t["sigkill"] < o.ended for o in failed), failed
    assert any(o.started == t["victim_started"] for o in failed)
    # Once HAProxy counted hearth2 down, every new stream went to hearth1, whole.
    after = during(outcomes, t["second_down"], float("inf"))
    assert after and all(o.whole and o.replica == "hearth1" for o in after), after
