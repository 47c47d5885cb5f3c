"""Two hearth replicas behind HAProxy (deploy/haproxy/hearth.cfg): a minute of streamed
load with one replica drained and one killed, then what session affinity buys on a
conversation's second turn.

    .venv/bin/python -m bench.haproxy [--seconds 60] [--conversations 6]

Part 1 runs :func:`bench.replicas.drain_then_kill` for ``--seconds`` and counts the
streams served whole and failed, and the seconds HAProxy took to stop sending to a
replica after its SIGTERM (readiness 503) and after its SIGKILL (health checks fail).
Part 2, on fresh replicas, sends conversations behind a file of their own (160 short
functions, about 2,500 tokens) through HAProxy, two turns each, with an
``X-Session-Affinity`` header and without one, and reports the second turn's time to
first token and where it landed. It prints Markdown for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from bench.replicas import Load, Outcome, Replicas, during, haproxy, run_under_load

SESSIONS = {0: ("X-Session-Affinity", "bench-a"), 1: ("session-id", "bench-b")}


def fault_report(load: Load, t: dict[str, float], seconds: float) -> list[str]:
    outcomes = load.outcomes
    failed = [o for o in outcomes if not o.whole]
    after_kill = during(outcomes, t["sigkill"], float("inf"))

    def on(replica: str, group: list[Outcome]) -> int:
        return len([o for o in group if o.replica == replica])

    return [
        f"{load.workers} clients, {load.max_tokens}-token streams back to back, "
        f"{seconds:.0f} s; hearth1 drained (SIGTERM) and started again, then hearth2 "
        "killed (SIGKILL) mid-stream.",
        "",
        "| figure | value |",
        "| --- | --- |",
        f"| streams served whole | {len(outcomes) - len(failed)} |",
        f"| streams failed | {len(failed)}: {on('hearth2', failed)} on the killed replica, "
        f"{len([o for o in failed if o.error])} with an error the client saw |",
        *(
            f"| a failure elsewhere | {o.replica}: {o.error} |"
            for o in failed
            if o.replica != "hearth2"
        ),
        f"| streams lost to the drain | {on('hearth1', failed)} |",
        f"| drained replica's exit code | {t['first_exit_code']:.0f} |",
        f"| SIGTERM to HAProxy marking it down | {t['first_down'] - t['sigterm']:.1f} s |",
        f"| SIGKILL to HAProxy marking it down | {t['second_down'] - t['sigkill']:.1f} s |",
        f"| streams started after the kill that failed | "
        f"{len([o for o in after_kill if not o.whole])} of {len(after_kill)} |",
    ]


def faults(folder: Path, seconds: float) -> list[str]:
    with contextlib.ExitStack() as stack:
        replicas = Replicas(folder, stack)
        proxy = stack.enter_context(haproxy(folder, replicas.ports))
        load = Load(proxy.base, workers=4, max_tokens=48, sessions=SESSIONS)
        t = run_under_load(replicas, proxy, load, before=seconds / 4, total=seconds)
    return fault_report(load, t, seconds)


def conversation(i: int) -> list[dict[str, str]]:
    """A first turn behind a file (about 2,500 tokens) that no other conversation shares."""
    lines = [f"def helper_{i}_{k}(x):\n    return x * {k + i} + {k % 7}\n" for k in range(160)]
    return [
        {"role": "system", "content": "You are a coding assistant. The file:\n" + "".join(lines)},
        {"role": "user", "content": f"What does helper_{i}_3 return for x = 2?"},
    ]


def turn(
    client: httpx.Client, messages: list[dict[str, str]], headers: dict[str, str]
) -> tuple[float, str, str]:
    """Time to first token, the reply, and the replica that answered."""
    body = {"model": "default", "stream": True, "max_tokens": 24, "temperature": 0,
            "messages": messages}  # fmt: skip
    start, first, text = time.perf_counter(), 0.0, []
    with client.stream("POST", "/v1/chat/completions", json=body, headers=headers) as resp:
        resp.raise_for_status()
        replica = resp.headers["hearth-replica"]
        for line in resp.iter_lines():
            if not line.startswith("data: {"):
                continue
            choices = json.loads(line[6:]).get("choices") or [{}]
            piece = choices[0].get("delta", {}).get("content") or ""
            if piece and not first:
                first = time.perf_counter() - start
            text.append(piece)
    return first, "".join(text), replica


def affinity(folder: Path, conversations: int) -> list[str]:
    rows = []
    with contextlib.ExitStack() as stack:
        replicas = Replicas(folder, stack)
        proxy = stack.enter_context(haproxy(folder, replicas.ports))
        client = stack.enter_context(httpx.Client(base_url=proxy.base, timeout=600))
        for mode, offset in (("with X-Session-Affinity", 0), ("without a session key", 1000)):
            seconds, same = [], 0
            for i in range(offset, offset + conversations):
                headers = {"X-Session-Affinity": f"conversation-{i}"} if offset == 0 else {}
                messages = conversation(i)
                _, reply, first_replica = turn(client, messages, headers)
                messages += [
                    {"role": "assistant", "content": reply},
                    {"role": "user", "content": "And for x = 3?"},
                ]
                ttft, _, second_replica = turn(client, messages, headers)
                seconds.append(ttft)
                same += second_replica == first_replica
            rows.append(
                f"| {mode} | {statistics.median(seconds):.2f} s | {min(seconds):.2f} s | "
                f"{max(seconds):.2f} s | {same} of {conversations} |"
            )
    return [
        f"{conversations} conversations each way, one at a time, each behind a file of "
        "its own; the second turn resends the first with the reply and a new "
        "question.",
        "",
        "| second turn | median TTFT | fastest | slowest | on the first turn's replica |",
        "| --- | --- | --- | --- | --- |",
        *rows,
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--conversations", type=int, default=6)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "faults").mkdir()
        (Path(tmp) / "affinity").mkdir()
        report = faults(Path(tmp) / "faults", args.seconds)
        report += ["", *affinity(Path(tmp) / "affinity", args.conversations)]
    print("\n".join(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
