"""``hearth ps``: the models a running server has loaded, as ``ollama ps`` lists them."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import httpx

from server.settings import Settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url", help="the server (default http://HEARTH_HOST:HEARTH_PORT, 127.0.0.1:8080)"
    )
    parser.add_argument("--all", action="store_true", help="every model, loaded or not")


def run(args: argparse.Namespace, settings: Settings) -> int:
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    url = (args.url or f"http://{host}:{settings.port}").rstrip("/")
    key = settings.api_keys[0] if settings.api_keys else None
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        reply = httpx.get(f"{url}/v1/models", headers=headers, timeout=10)
    except httpx.HTTPError as exc:
        print(f"hearth: no server at {url}: {exc}", file=sys.stderr)
        return 1
    if reply.status_code != 200:
        print(f"hearth: {url} answered {reply.status_code}: {reply.text[:200]}", file=sys.stderr)
        return 1
    models = [m for m in reply.json()["data"] if args.all or m["state"] != "not_loaded"]
    print(table(models))
    return 0


def table(models: list[dict[str, Any]]) -> str:
    rows = [("NAME", "TASK", "STATE", "MEMORY", "REQUESTS", "UNTIL", "PID")]
    for m in models:
        memory = m.get("resident_bytes") or m.get("footprint_bytes")
        rows.append((
            m["id"], _task(m), m["state"], f"{memory / 2**30:.1f} GiB" if memory else "-",
            str(m.get("requests_in_flight") or 0), _until(m), str(m.get("runner_pid") or "-"),
        ))  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
                     for row in rows)  # fmt: skip


def _task(model: dict[str, Any]) -> str:
    """``generate``, or ``embed (mean)`` / ``rerank (rank)`` with the pooling."""
    task = str(model.get("task") or "generate")
    pooling = model.get("pooling")
    return f"{task} ({pooling})" if pooling and task != "generate" else task


def _until(model: dict[str, Any]) -> str:
    seconds = model.get("unload_in_seconds")
    if seconds is None:
        return "forever" if model["state"] in ("ready", "idle") else "-"
    return f"{seconds:.0f} s"
