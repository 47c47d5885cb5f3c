"""What the runner channel costs per step: one step's batch of events and metric updates
sent from one process to another over the socket pair and ``multiprocessing.connection``
that the runner uses, and handed out as the HTTP side does.

    .venv/bin/python -m bench.channel_cost [--sequences 16] [--steps 2000]

A batch as a decode step of N sequences makes it: N text deltas and the engine's metric
updates for them (about 4 per sequence and 8 per step). Reported: microseconds per
step on the sending side (pickle and send), the receiving side (receive, unpickle,
apply the metric updates) and the round trip, to set beside a step's own time.
"""

from __future__ import annotations

import argparse
import multiprocessing
import time
from multiprocessing.connection import Connection
from typing import Any

from server.engine.metrics import Metrics
from server.engine.requests import TextDelta


def batch(n: int) -> tuple[Any, ...]:
    events = [(f"{i:024x}", TextDelta(" word")) for i in range(n)]
    metrics: list[Any] = []
    token = ("inc", ("hearth_generation_tokens_total",), {"model": "m"})
    latency = ("observe", ("hearth_inter_token_latency_seconds", 0.04), {"model": "m"})
    for _ in range(n):
        metrics += [token, latency]
    metrics += [("inc", ("hearth_steps_total",), {"model": "m"}),
                ("set", ("hearth_requests_running", n), {"model": "m"})] * 4  # fmt: skip
    return ("batch", events, metrics)


def echo(conn: Connection, steps: int) -> None:
    metrics = Metrics()
    for _ in range(steps):
        _, events, ops = conn.recv()
        for op, args, labels in ops:
            getattr(metrics, op)(*args, **labels)
        conn.send(len(events))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sequences", type=int, default=16)
    parser.add_argument("--steps", type=int, default=2000)
    args = parser.parse_args()
    ours, theirs = multiprocessing.get_context("spawn").Pipe()
    child = multiprocessing.get_context("spawn").Process(target=echo, args=(theirs, args.steps))
    child.start()
    message = batch(args.sequences)
    sending = 0.0
    start = time.perf_counter()
    for _ in range(args.steps):
        t = time.perf_counter()
        ours.send(message)
        sending += time.perf_counter() - t
        ours.recv()
    total = time.perf_counter() - start
    child.join()
    per = total / args.steps * 1e6
    print(f"{args.sequences} sequences a step: round trip {per:.0f} us per step, of which "
          f"pickling and sending {sending / args.steps * 1e6:.0f} us")  # fmt: skip


if __name__ == "__main__":
    main()
