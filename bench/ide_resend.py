"""IDE-like resends of a ~4,000-token file: time to first token, hearth vs llama-server.

    .venv/bin/python bench/ide_resend.py --rounds 3

An editor chat (or agent) sends the whole file it has open with every question; between
questions the user edits a line near the bottom or appends one. With prefix reuse only
the tail after the edit needs a prefill. This script builds llama-server if needed
(bench/build_llama_server.sh), writes a deterministic Python file of about
``--file-tokens`` tokens (counted with the model's own tokenizer), and for each round
starts hearth and llama-server in turn (never at once; the order alternates per round),
with the same threads, context and parallel sequences, and sends each the same sequence,
one request at a time, streamed, temperature 0, ``ignore_eos``, ``--max-tokens`` tokens:

- ``cold``: the file and a question, nothing cached (a fresh server; a tiny warm-up
  request with another system prompt went first, so the first-request setup is not in it);
- ``warm`` (5): a changed line near the bottom, an appended line, another changed line,
  another appended line, then only a new question;
- ``mid-edit`` (reported apart): a changed line in the middle of the file, to show how much
  each server still reuses.

Time to first token is from sending the request to the first chunk with non-empty content.
Tokens reused come from the servers' own answers (``usage.prompt_tokens_details
.cached_tokens``; llama-server's ``timings.cache_n`` and hearth's
``hearth_prefix_cache_hit_tokens_total`` are kept in the JSON too). The ``infill``
workload sends the same file versions as ``input_extra`` of ``/infill`` (llama.vscode's
shape) with a small current file around the cursor. Results: a Markdown table on stdout and
.bench/ide_resend.json (``--json``); ``--summarize-only`` reprints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.compare import CACHE, LLAMA_BIN, OUT, VENV, free_port, serving

DEFAULT_MODEL = CACHE / "models" / "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
MODEL_NAME = "bench"
FILE_NAME = "inventory/service.py"
SYSTEM = "You are a coding assistant inside an IDE. Answer briefly."
WORKLOADS = ("chat", "infill")
SERVERS = ("hearth", "llama-server")


# -- the file and the edits -------------------------------------------------------------

_NOUNS = ["item", "order", "stock", "price", "supplier", "warehouse", "batch", "invoice",
          "customer", "shipment", "discount", "tax", "report", "ledger", "bin", "sku"]  # fmt: skip
_VERBS = ["load", "save", "check", "update", "merge", "split", "count", "find", "apply",
          "validate", "format", "round", "reserve", "release", "audit", "sync"]  # fmt: skip


def _block(rng: random.Random, i: int) -> list[str]:
    """One function of a plausible inventory service (deterministic for a given rng)."""
    verb, noun, other = rng.choice(_VERBS), rng.choice(_NOUNS), rng.choice(_NOUNS)
    name = f"{verb}_{noun}_{i}"
    k, limit = rng.randint(2, 97), rng.randint(10, 5000)
    body = [
        "",
        "",
        f"def {name}({noun}: dict[str, Any], {other}s: list[dict[str, Any]]) -> int:",
        f'    """{verb.capitalize()} the {noun} against the {other}s; return how many changed."""',
        "    changed = 0",
        f"    for entry in {other}s:",
        f'        if entry.get("{noun}_id") != {noun}.get("id"):',
        "            continue",
    ]
    if rng.random() < 0.5:
        body += [
            f'        qty = int(entry.get("quantity", 0)) * {k}',
            f"        if qty > {limit}:",
            f'            raise InventoryError(f"{name}: {{qty}} over {limit}")',
            '        entry["quantity"] = qty',
        ]
    else:
        body += [
            f'        price = round(float(entry.get("price", 0.0)) * (1 + {k} / 100), 2)',
            f'        entry["price"] = min(price, {limit}.0)',
            f'        log.debug("{name} %s -> %s", entry.get("id"), price)',
        ]
    return [*body, "        changed += 1", "    return changed"]


def make_file(count: Callable[[str], int], target: int) -> list[str]:
    """Lines of a Python module whose token count (``count(text)``) is just over ``target``."""
    rng = random.Random(4000)
    lines = [
        '"""Inventory service: stock levels, prices and orders for the warehouse API."""',
        "",
        "from __future__ import annotations",
        "",
        "import logging",
        "from typing import Any",
        "",
        "log = logging.getLogger(__name__)",
        "",
        "",
        "class InventoryError(Exception):",
        '    """A stock or price rule was broken."""',
    ]
    i = 0
    while count("\n".join(lines)) < target:
        lines += _block(rng, i)
        i += 1
    return lines


@dataclass(frozen=True)
class Step:
    kind: str  # cold, warm or mid-edit
    edit: str
    lines: tuple[str, ...]
    question: str
    cursor: str  # the infill workload's text before the cursor in the current file


def edit_sequence(lines: list[str]) -> list[Step]:
    """The IDE session: cold, five warm resends with edits at the end, one mid-file edit."""
    v = list(lines)
    last_return = max(i for i, line in enumerate(v) if line.startswith("    return changed"))
    steps = [Step("cold", "none", tuple(v), "What does this module do? One sentence.", "qty")]

    def change(at: int, new: str) -> tuple[str, ...]:
        v[at] = new
        return tuple(v)

    def append(new: list[str]) -> tuple[str, ...]:
        v.extend(new)
        return tuple(v)

    steps += [
        Step("warm", "line changed near the end",
             change(last_return - 1, "        changed += 2  # count both sides"),
             "Is the last function still correct?", "qty = "),
        Step("warm", "line appended",
             append(["", "", "def total_changed(counts: list[int]) -> int:"]),
             "Write the body of total_changed.", "qty = int("),
        Step("warm", "line changed near the end",
             change(last_return - 1, "        changed += 1  # one per entry"),
             "Does the last function count each entry once now?", "qty = int(row"),
        Step("warm", "line appended", append(["    return sum(counts)"]),
             "Is total_changed right for an empty list?", 'qty = int(row["q'),
        Step("warm", "question only", tuple(v), "Which function raises InventoryError?",
             'qty = int(row["qty"])'),
        Step("mid-edit", "line changed in the middle",
             change(len(v) // 2, "    changed = -1  # mid-file edit"),
             "What changed in the middle of the file?", 'qty = int(row["qty"]) +'),
    ]  # fmt: skip
    return steps


# -- requests ---------------------------------------------------------------------------


@dataclass
class Result:
    kind: str
    edit: str
    ttft_s: float
    total_s: float
    prompt_tokens: int | None = None
    cached_tokens: int | None = None
    timings: dict[str, Any] = field(default_factory=dict)
    text: str = ""


def chat_body(step: Step, max_tokens: int) -> dict[str, Any]:
    source = "\n".join(step.lines)
    user = f"The file {FILE_NAME}:\n```python\n{source}\n```\n\n{step.question}"
    return {
        "model": MODEL_NAME,
        "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def infill_body(step: Step, max_tokens: int) -> dict[str, Any]:
    return {
        "model": MODEL_NAME,
        "input_extra": [{"filename": FILE_NAME, "text": "\n".join(step.lines) + "\n"}],
        "input_prefix": "from inventory.service import InventoryError\n\n\n"
        "def read_rows(rows):\n    for row in rows:\n        " + step.cursor,
        "input_suffix": "\n        yield qty\n",
        "prompt": "",
        "n_predict": max_tokens,
        "temperature": 0,
        "ignore_eos": True,
        "stream": True,
    }


def send(base: str, workload: str, step: Step, max_tokens: int) -> Result:
    if workload == "chat":
        url, body = f"{base}/v1/chat/completions", chat_body(step, max_tokens)
    else:
        url, body = f"{base}/infill", infill_body(step, max_tokens)
    start = time.perf_counter()
    first: float | None = None
    text: list[str] = []
    result = Result(step.kind, step.edit, float("nan"), float("nan"))
    with httpx.stream("POST", url, json=body, timeout=900) as resp:
        if resp.status_code != 200:
            resp.read()
            raise RuntimeError(f"{url}: HTTP {resp.status_code}: {resp.text[:500]}")
        for line in resp.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if "error" in chunk:
                raise RuntimeError(f"{url}: {chunk['error']}")
            piece = _content(workload, chunk)
            if piece:
                if first is None:
                    first = time.perf_counter()
                text.append(piece)
            _take_counts(workload, chunk, result)
    if first is None:
        raise RuntimeError(f"{url}: no content token")
    result.ttft_s, result.total_s = first - start, time.perf_counter() - start
    result.text = "".join(text)
    return result


def _content(workload: str, chunk: dict[str, Any]) -> str:
    if workload == "infill":
        return str(chunk.get("content") or "")
    choices = chunk.get("choices") or []
    return str(choices[0].get("delta", {}).get("content") or "") if choices else ""


def _take_counts(workload: str, chunk: dict[str, Any], result: Result) -> None:
    if isinstance(chunk.get("timings"), dict):
        result.timings = chunk["timings"]
    if workload == "chat" and isinstance(chunk.get("usage"), dict):
        usage = chunk["usage"]
        result.prompt_tokens = usage.get("prompt_tokens")
        result.cached_tokens = (usage.get("prompt_tokens_details") or {}).get("cached_tokens")
    if workload == "infill" and chunk.get("stop"):
        result.prompt_tokens = chunk.get("tokens_evaluated")
        result.cached_tokens = chunk.get("tokens_cached")
        if "cache_n" in result.timings:  # llama-server: what was reused from the slot
            result.cached_tokens = result.timings["cache_n"]


def warm_up(base: str) -> None:
    """One tiny request so that the cold measurement is not the server's first request."""
    body = {
        "model": MODEL_NAME,
        "messages": [{"role": "user", "content": "Say hi."}],
        "max_tokens": 1,
        "temperature": 0,
    }
    httpx.post(f"{base}/v1/chat/completions", json=body, timeout=300).raise_for_status()


def hearth_hit_tokens(base: str) -> int:
    text = httpx.get(f"{base}/metrics", timeout=10).text
    return sum(
        int(float(line.split()[-1]))
        for line in text.splitlines()
        if line.startswith("hearth_prefix_cache_hit_tokens_total{")
    )


# -- servers ----------------------------------------------------------------------------


def server_command(name: str, args: argparse.Namespace, port: int, tmp: Path) -> list[str]:
    threads, parallel, ctx = str(args.threads), str(args.parallel), str(args.context)
    if name == "hearth":
        toml = tmp / "models.toml"
        toml.write_text(
            f'default = "{MODEL_NAME}"\n[models.{MODEL_NAME}]\npath = "{args.model}"\n'
            f"context_length = {ctx}\nmax_sequences = {parallel}\nthreads = {threads}\n"
        )
        return [str(VENV / "hearth"), "--models-file", str(toml), "serve",
                "--port", str(port), "--no-pull"]  # fmt: skip
    return [str(LLAMA_BIN / "llama-server"), "-m", str(args.model), "--port", str(port),
            "-t", threads, "-tb", threads, "-np", parallel, "-c", ctx, "-kvu",
            "--no-webui", "-a", MODEL_NAME, *shlex.split(args.llama_server_args)]  # fmt: skip


def run_server(name: str, args: argparse.Namespace, steps: list[Step]) -> dict[str, Any]:
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        command = server_command(name, args, port, Path(tmp))
        with serving(command, port, f"ide_resend-{name}") as base:
            warm_up(base)
            out: dict[str, Any] = {"command": command, "workloads": {}}
            for workload in args.workloads:
                hits_before = hearth_hit_tokens(base) if name == "hearth" else 0
                results = []
                for step in steps:
                    r = send(base, workload, step, args.max_tokens)
                    print(
                        f"   {workload:6} {r.kind:8} {r.edit:27} TTFT {r.ttft_s:7.3f} s  "
                        f"prompt {r.prompt_tokens}, cached {r.cached_tokens}",
                        flush=True,
                    )
                    results.append(asdict(r))
                entry: dict[str, Any] = {"requests": results}
                if name == "hearth":
                    entry["metrics_hit_tokens"] = hearth_hit_tokens(base) - hits_before
                out["workloads"][workload] = entry
            return out


# -- summary ----------------------------------------------------------------------------


def _p90(values: list[float]) -> float:
    if len(values) < 2:
        return values[0]
    return statistics.quantiles(values, n=10, method="inclusive")[8]


def summarize(rounds: list[dict[str, Any]], servers: list[str], workloads: list[str]) -> str:
    lines = [
        "| workload | server | prompt tokens | cold TTFT s | warm TTFT median s | warm p90 s "
        "| warm max s | warm tokens reused | mid-edit TTFT s (reused) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    ratios = []
    for workload in workloads:
        medians: dict[str, float] = {}
        colds: dict[str, float] = {}
        for name in servers:
            reqs = [r for rnd in rounds for r in rnd[name]["workloads"][workload]["requests"]]
            cold = [r["ttft_s"] for r in reqs if r["kind"] == "cold"]
            warm = [r for r in reqs if r["kind"] == "warm"]
            mid = [r for r in reqs if r["kind"] == "mid-edit"]
            warm_t = [r["ttft_s"] for r in warm]
            cached = sum(r["cached_tokens"] or 0 for r in warm)
            prompt = sum(r["prompt_tokens"] or 0 for r in warm)
            cold_prompt = statistics.median(
                r["prompt_tokens"] or 0 for r in reqs if r["kind"] == "cold"
            )
            medians[name], colds[name] = statistics.median(warm_t), statistics.median(cold)
            mid_cell = ", ".join(f"{r['ttft_s']:.2f} ({r['cached_tokens']})" for r in mid)
            lines.append(
                f"| {workload} | {name} | {cold_prompt:,.0f} | {colds[name]:.2f} "
                f"| **{medians[name]:.3f}** | {_p90(warm_t):.3f} | {max(warm_t):.3f} "
                f"| {cached:,} / {prompt:,} ({100 * cached / max(prompt, 1):.1f}%) "
                f"| {mid_cell} |"
            )
        if "hearth" in medians and "llama-server" in medians:
            ratios.append(
                f"{workload}: hearth / llama-server warm TTFT median "
                f"{medians['hearth'] / medians['llama-server']:.2f}× "
                f"(cold {colds['hearth'] / colds['llama-server']:.2f}×)"
            )
    return "\n".join([*lines, "", *ratios])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--context", type=int, default=8192)
    parser.add_argument("--file-tokens", type=int, default=4000)
    parser.add_argument("--max-tokens", type=int, default=8)
    parser.add_argument("--servers", default=",".join(SERVERS))
    parser.add_argument(
        "--llama-server-args",
        default="",
        help="extra llama-server flags, e.g. '--cache-reuse 256'",
    )
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help="chat, infill or both")
    parser.add_argument("--json", type=Path, default=OUT / "ide_resend.json", help="results file")
    parser.add_argument("--summarize-only", action="store_true", help="print the table from --json")
    args = parser.parse_args()
    servers = args.servers.split(",")
    args.workloads = args.workloads.split(",")
    OUT.mkdir(exist_ok=True)
    out_path = args.json
    if args.summarize_only:
        data = json.loads(out_path.read_text())
        print(summarize(data["rounds"], data["servers"], data["workloads"]))
        return 0
    if "llama-server" in servers:
        subprocess.run(["bash", str(Path(__file__).parent / "build_llama_server.sh")], check=True)

    import llama_cpp  # the pinned backend: the model's own tokenizer, vocabulary only

    vocab = llama_cpp.Llama(str(args.model), vocab_only=True, verbose=False)

    def count(text: str) -> int:
        return len(vocab.tokenize(text.encode(), add_bos=False, special=False))

    lines = make_file(count, args.file_tokens)
    file_tokens = count("\n".join(lines))
    steps = edit_sequence(lines)
    print(f"file: {len(lines)} lines, {file_tokens} tokens; {len(steps)} requests per workload")
    rounds: list[dict[str, Any]] = []
    for round_no in range(args.rounds):
        order = servers if round_no % 2 == 0 else servers[::-1]
        rnd: dict[str, Any] = {}
        for name in order:
            print(f"== round {round_no + 1}: {name}", flush=True)
            rnd[name] = run_server(name, args, steps)
        rounds.append(rnd)
    data = {
        "model": str(args.model),
        "file_lines": len(lines),
        "file_tokens": file_tokens,
        "threads": args.threads,
        "parallel": args.parallel,
        "context": args.context,
        "max_tokens": args.max_tokens,
        "llama_server_args": args.llama_server_args,
        "servers": servers,
        "workloads": args.workloads,
        "cpu_count": os.cpu_count(),
        "steps": [{"kind": s.kind, "edit": s.edit, "question": s.question} for s in steps],
        "rounds": rounds,
    }
    out_path.write_text(json.dumps(data, indent=2))
    print()
    print(summarize(rounds, servers, args.workloads))
    print(f"\nJSON: {out_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
