"""Side-by-side throughput on an MLX model: hearth's MLX backend vs mlx-lm's own server.

    .venv/bin/python -m bench.mlx_compare --rounds 2

The default model is the default GGUF converted by bench/gguf_to_mlx.py. For each
round it starts hearth (backend "mlx") and then ``mlx_lm.server`` on the same
model folder, one at a time, runs `hearth bench` against each at concurrency 1, 4 and 8
with the same prompts, and stops it. Both generate exactly ``--max-tokens`` (hearth
with ``ignore_eos``, mlx_lm.server with the end tokens biased away). Results go to
.bench/mlx-*.json; the summary is printed as Markdown ratios. On Linux this measures
MLX's CPU backend; Apple Silicon numbers need a Mac.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from bench.compare import CACHE, OUT, VENV, free_port, levels, serve_and_bench

EOG_BIAS = {"151643": -100, "151645": -100}  # Qwen2.5's end tokens


def commands(args: argparse.Namespace, port: int) -> dict[str, list[str]]:
    toml = OUT / "mlx-models.toml"
    toml.write_text(
        f'[models.bench]\npath = "{args.model}"\nbackend = "mlx"\n'
        f"context_length = {args.context}\nmax_sequences = {args.parallel}\n"
    )
    return {
        "hearth": [str(VENV / "hearth"), "--models-file", str(toml), "serve",
                   "--port", str(port), "--no-pull"],
        "mlx_lm.server": [sys.executable, "-m", "mlx_lm", "server", "--model", str(args.model),
                          "--port", str(port), "--decode-concurrency", str(args.parallel),
                          "--prompt-concurrency", str(args.parallel)],
    }  # fmt: skip


def run_one(name: str, args: argparse.Namespace, round_no: int) -> dict[str, object]:
    port = free_port()
    extra = {"ignore_eos": True} if name == "hearth" else {"logit_bias": EOG_BIAS}
    model = "bench" if name == "hearth" else str(args.model)
    bench = ["--model", model, "--concurrency", args.concurrency,
             "--prompt-tokens", str(args.prompt_tokens), "--max-tokens", str(args.max_tokens),
             *(["--requests-per-level", str(args.requests)] if args.requests else []),
             "--extra-body", json.dumps(extra), "--label", name]  # fmt: skip
    result = OUT / f"mlx-{name}-r{round_no}.json"
    command = commands(args, port)[name]
    log_name = f"mlx-{name}"
    return serve_and_bench(command, port, log_name, result, bench, ready_timeout=600, check=True)


def summarize(runs: dict[str, list[dict[str, object]]]) -> str:
    lines = [
        "| concurrency | hearth agg t/s | mlx_lm.server agg t/s | hearth / mlx_lm.server "
        "| TTFT p50 s (hearth, mlx_lm.server) | TTFT ratio |",
        "|---|---|---|---|---|---|",
    ]
    first = runs["hearth"][0]
    for i, level in enumerate(levels(first)):
        agg = {n: [levels(r)[i]["aggregate_tps"] for r in rs] for n, rs in runs.items()}
        ttft = {
            n: statistics.median(levels(r)[i]["ttft_p50_s"] for r in rs) for n, rs in runs.items()
        }
        med = {n: statistics.median(v) for n, v in agg.items()}
        cells = [f"{med[n]:.2f} ({min(agg[n]):.2f}–{max(agg[n]):.2f})" for n in runs]
        lines.append(
            f"| {int(level['concurrency'])} | {cells[0]} | {cells[1]} "
            f"| {med['hearth'] / med['mlx_lm.server']:.2f}× "
            f"| {ttft['hearth']:.2f}, {ttft['mlx_lm.server']:.2f} "
            f"| {ttft['mlx_lm.server'] / ttft['hearth']:.2f}× faster |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", type=Path, default=CACHE / "models" / "qwen2.5-coder-0.5b-instruct-mlx"
    )
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--concurrency", default="1,4,8")
    parser.add_argument("--prompt-tokens", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--requests", type=int, default=0, help="per level; 0: the bench default")
    parser.add_argument("--parallel", type=int, default=8)
    parser.add_argument("--context", type=int, default=8192)
    args = parser.parse_args()
    OUT.mkdir(exist_ok=True)
    runs: dict[str, list[dict[str, object]]] = {"hearth": [], "mlx_lm.server": []}
    for round_no in range(args.rounds):
        for name in runs:
            print(f"== round {round_no + 1}: {name}", flush=True)
            runs[name].append(run_one(name, args, round_no))
    (OUT / "mlx-summary.json").write_text(json.dumps(runs, indent=2))
    print(summarize(runs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
