"""`hearth bench`: measure any OpenAI-compatible server under concurrent load.

It answers the project's founding question: how many people can this box serve
at an interactive speed? The load is generated in `server.cli.bench.load`, the numbers
computed in `server.cli.bench.stats`; this module is the command line and the report
(table, JSON, PNG chart).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from server.cli.bench.load import BenchConfig, run_levels
from server.cli.bench.stats import (
    INTERACTIVE_TPS,
    LevelSummary,
    format_table,
    founding_answer,
    interactive_concurrency,
    registered_users,
)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {value}")
    return value


def _int_list(text: str) -> list[int]:
    return [_positive_int(part.strip()) for part in text.split(",") if part.strip()]


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the `bench` options to ``parser``."""
    add = parser.add_argument
    add("--url", default="http://127.0.0.1:8080/v1", help="base URL, up to and including /v1")
    add("--model", help="model id to request (default: the first one GET /models lists)")
    add("--api-key", help="sent as a Bearer token")
    add("--concurrency", type=_int_list, default=[1, 2, 4, 8, 16], metavar="N,N,...")
    add("--prompt-tokens", type=_positive_int, default=256, help="approximate prompt length")
    add("--max-tokens", type=_positive_int, default=128)
    add(
        "--requests-per-level",
        type=_positive_int,
        help="requests per level (default: 2 x concurrency, at least 4)",
    )
    add("--endpoint", choices=["chat", "completions"], default="chat")
    add("--shared-prefix", action="store_true", help="let all prompts share their long prefix")
    add(
        "--extra-body",
        type=_json_object,
        default=None,
        metavar="JSON",
        help="fields merged into every request body, e.g. '{\"ignore_eos\": true}'",
    )
    add("--seed", type=int, help="prompt seed (default: random, so no run reuses a cached prompt)")
    add("--warmup", type=int, default=1, help="unmeasured requests sent first")
    add("--json", type=Path, metavar="PATH", help="write the results as JSON")
    add("--png", type=Path, metavar="PATH", help="write a chart of the results")
    add("--label", help="name of this run in the chart and JSON (default: the model)")
    add("--timeout", type=float, default=600.0, help="seconds per request (default 600)")


def run(args: argparse.Namespace) -> int:
    """Run the benchmark; 0 when every request succeeded, 1 if any failed, 2 if none could run."""
    return asyncio.run(_bench(args))


async def _bench(args: argparse.Namespace) -> int:
    levels: list[int] = args.concurrency
    if args.seed is None:
        args.seed = secrets.randbelow(1_000_000)
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    # A fresh connection per request: llama-server closes kept-alive connections after a
    # stream, and reusing one then fails as "Server disconnected without sending a response".
    limits = httpx.Limits(max_connections=max(levels) + 4, max_keepalive_connections=0)
    async with httpx.AsyncClient(
        base_url=args.url, headers=headers, limits=limits, timeout=httpx.Timeout(args.timeout)
    ) as client:
        try:
            model = args.model or await first_model(client)
        except (httpx.HTTPError, LookupError, TypeError, ValueError) as exc:
            print(f"bench: cannot list models at {args.url}: {exc!r}", file=sys.stderr)
            return 2
        config = BenchConfig(
            model=model,
            endpoint=args.endpoint,
            prompt_tokens=args.prompt_tokens,
            max_tokens=args.max_tokens,
            shared_prefix=args.shared_prefix,
            seed=args.seed,
            extra_body=args.extra_body or {},
        )
        print(f"bench: {args.url} model={model} levels={levels} seed={args.seed}", file=sys.stderr)
        summaries = await run_levels(
            client, config, levels, args.requests_per_level, max(0, args.warmup)
        )
    report(args, model, summaries)
    return 1 if any(s.errors for s in summaries) else 0


async def first_model(client: httpx.AsyncClient) -> str:
    """The first model id that GET /models lists."""
    response = await client.get("models")
    response.raise_for_status()
    return str(response.json()["data"][0]["id"])


def report(args: argparse.Namespace, model: str, levels: Sequence[LevelSummary]) -> None:
    """Print the table and the answer; write the JSON and PNG files asked for."""
    print(format_table(levels))
    print()
    print(founding_answer(levels))
    label = args.label or model.rstrip("/").rsplit("/", 1)[-1]
    if args.json:
        write_json(args.json, results_document(args, model, label, levels))
        print(f"wrote {args.json}", file=sys.stderr)
    if args.png:
        write_png(args.png, levels, f"{label} — {args.url}")
        print(f"wrote {args.png}", file=sys.stderr)


def results_document(
    args: argparse.Namespace, model: str, label: str, levels: Sequence[LevelSummary]
) -> dict[str, Any]:
    """The JSON document: metadata, one dict per level, and the founding answer."""
    options = {
        key: str(value) if isinstance(value, Path) else value
        for key, value in vars(args).items()
        if key != "api_key" and isinstance(value, str | int | float | bool | list | dict | Path)
    }
    best = interactive_concurrency(levels)
    return {
        "metadata": {
            "url": args.url,
            "model": model,
            "label": label,
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "args": options,
        },
        "levels": [asdict(level) for level in levels],
        "answer": {
            "threshold_tps": INTERACTIVE_TPS,
            "concurrency": best,
            "registered_users": None if best is None else registered_users(best),
            "text": founding_answer(levels),
        },
    }


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n")


def write_png(path: Path, levels: Sequence[LevelSummary], title: str) -> None:
    """Aggregate and 10th-percentile per-user t/s against concurrency, on a log2 axis."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 4.8))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    xs = [lv.concurrency for lv in levels]
    ax.plot(xs, [lv.aggregate_tps for lv in levels], marker="o", label="aggregate t/s")
    p10 = [(lv.concurrency, v) for lv in levels if (v := lv.per_user_tps_p10) is not None]
    ax.plot([c for c, _ in p10], [v for _, v in p10], marker="s", label="per-user t/s, p10")
    line_label = f"{INTERACTIVE_TPS:g} t/s per user"
    ax.axhline(INTERACTIVE_TPS, color="tab:red", linestyle="--", label=line_label)
    ax.set_xscale("log", base=2)
    ax.set_xticks(xs, [str(x) for x in xs])
    ax.set_xlabel("concurrent requests")
    ax.set_ylabel("tokens / s")
    ax.set_ylim(bottom=0)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hearth bench", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
