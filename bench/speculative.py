"""Speculative decoding: hearth with and without it, llama-server with and without its
n-gram speculators, on one build and GGUF, in one run.

    .venv/bin/python -m bench.speculative [--tokens 256] [--streams 1,4,8,16]

Workloads, greedy (temperature 0), ``--tokens`` tokens each (the answer is cut there):

- edit: a 300-line Python file (the first 300 lines of server/engine/loop.py) and, after
  it, a one-line change ("rename X to Y, reply with the whole file"), so the answer
  mostly copies the prompt; at N streams each asks to rename another name in the same
  file (the prompts share the file: hearth prefills it once, llama-server once a slot).
- chat: a free question whose answer copies nothing ("explain ... in your own words").

Speeds are decode tokens per second: a stream's tokens after its first over the time
from its first token to its last; for N streams their sum over the span from the first
stream's first token to the last stream's last. Every stream's prompt is sent once
before (with ``max_tokens`` 1) so that prefill is not measured, only decoding.

hearth runs once (``speculative: false`` per request turns it off, on the same server);
llama-server runs once without speculation and once per ``--spec-type`` given (the
first run picks the best at one edit stream, which then runs the rest). Both servers:
2 threads, 16 sequences, 65,536 tokens of KV (4,096 a sequence for llama-server).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import time
from pathlib import Path

import httpx

from bench.compare import CACHE, LLAMA_BIN, OUT, ROOT, VENV, free_port, serving

MODEL = CACHE / "models" / "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
SOURCE = ROOT / "server" / "engine" / "loop.py"
RENAMES = [
    ("_drain", "_take_commands"), ("_prepare", "_tokenize_request"), ("_accept", "_enqueue"),
    ("_queue", "_hand_to_scheduler"), ("_reject", "_refuse"), ("_abort", "_drop_request"),
    ("_call", "_run_call"), ("_end", "_finish"), ("_admit", "_start_sequence"),
    ("_step", "_forward"), ("_force", "_force_close"), ("_gauges", "_update_gauges"),
    ("_fail_all", "_fail_everything"), ("_setup", "_configure"), ("_main", "_thread_main"),
    ("_count_step", "_count"),
]  # fmt: skip
CHAT = [
    "Explain in your own words why the sky is blue, in about three paragraphs.",
    "Describe how a hash table works to someone new to programming.",
    "What are the trade-offs between threads and processes? Answer in prose.",
    "Tell a short story about a lighthouse keeper who finds a message in a bottle.",
]
SPEC_TYPES = ("ngram-simple", "ngram-map-k", "ngram-mod")
CONTEXT, SEQUENCES, THREADS = 65536, 16, 2


def edit_prompt(i: int) -> str:
    code = "\n".join(SOURCE.read_text().splitlines()[:300])
    old, new = RENAMES[i % len(RENAMES)]
    return (f"```python\n{code}\n```\n\nRename the method {old} to {new} everywhere in this "
            "file. Reply with the whole file and nothing else.")  # fmt: skip


def stream(
    base: str, prompt: str, tokens: int, extra: dict[str, object]
) -> tuple[float, float, int]:
    """One streamed chat request: (first token time, last token time, tokens)."""
    body = {"model": "bench", "messages": [{"role": "user", "content": prompt}],
            "max_tokens": tokens, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}, **extra}  # fmt: skip
    first = last = 0.0
    used = 0
    with httpx.stream("POST", f"{base}/v1/chat/completions", json=body, timeout=900) as resp:
        resp.raise_for_status()
        for line in resp.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                used = chunk["usage"]["completion_tokens"]
            if chunk.get("choices") and chunk["choices"][0]["delta"].get("content"):
                last = time.perf_counter()
                first = first or last
    return first, last, used


def run(base: str, prompts: list[str], tokens: int, extra: dict[str, object]) -> float:
    """Aggregate decode t/s of ``prompts`` streamed at once (their prompts warmed first)."""
    with concurrent.futures.ThreadPoolExecutor(len(prompts)) as pool:
        list(pool.map(lambda p: stream(base, p, 1, extra), prompts))
        results = list(pool.map(lambda p: stream(base, p, tokens, extra), prompts))
    span = max(r[1] for r in results) - min(r[0] for r in results)
    return sum(max(0, r[2] - 1) for r in results) / span if span > 0 else 0.0


def commands(port: int, spec_type: str | None) -> list[str]:
    if spec_type == "hearth":
        models = OUT / "models-spec.toml"
        models.write_text(f'[models.bench]\npath = "{MODEL}"\ncontext_length = {CONTEXT}\n'
                          f"max_sequences = {SEQUENCES}\nthreads = {THREADS}\n")  # fmt: skip
        return [str(VENV / "hearth"), "--models-file", str(models), "serve", "--port", str(port),
                "--no-pull"]  # fmt: skip
    command = [str(LLAMA_BIN / "llama-server"), "-m", str(MODEL), "--port", str(port),
               "-t", str(THREADS), "-tb", str(THREADS), "-np", str(SEQUENCES), "-c", str(CONTEXT),
               "-kvu", "--no-webui", "-a", "bench"]  # fmt: skip
    return command + (["--spec-type", spec_type] if spec_type else [])


def measure(name: str, spec_type: str | None, plans: list[tuple[str, list[str]]], tokens: int,
            extras: dict[str, dict[str, object]]) -> dict[str, float]:  # fmt: skip
    """Start one server, run every plan for each label of ``extras``; results by key."""
    port = free_port()
    out: dict[str, float] = {}
    with serving(commands(port, spec_type), port, f"spec-{name}", ready_timeout=300) as base:
        for key, prompts in plans:
            for label, extra in extras.items():
                before = drafts(base)
                out[f"{label} {key}"] = rate = run(base, prompts, tokens, extra)
                drafted, accepted = (a - b for a, b in zip(drafts(base), before, strict=True))
                note = f" ({accepted:.0f} of {drafted:.0f} draft tokens taken)" if drafted else ""
                print(f"  {label} {key}: {rate:.1f} t/s{note}", flush=True)
    return out


def drafts(base: str) -> tuple[float, float]:
    """hearth's draft tokens verified and accepted so far (zeros elsewhere)."""
    text = httpx.get(f"{base}/metrics", timeout=10).text
    found = [0.0, 0.0]
    for line in text.splitlines():
        for i, name in enumerate(
            ("hearth_spec_draft_tokens_total{", "hearth_spec_accepted_tokens_total{")
        ):
            if line.startswith(name):
                found[i] += float(line.rsplit(" ", 1)[1])
    return found[0], found[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--streams", default="1,4,8,16")
    parser.add_argument("--spec-types", default=",".join(SPEC_TYPES))
    args = parser.parse_args()
    streams = [int(n) for n in args.streams.split(",")]
    single = [("edit x1", [edit_prompt(0)]), ("chat x1", CHAT[:1])]
    many = [(f"edit x{n}", [edit_prompt(i) for i in range(n)]) for n in streams if n > 1]
    results: dict[str, float] = {}
    print("hearth", flush=True)
    results |= measure("hearth", "hearth", single + many, args.tokens,
                       {"hearth spec": {}, "hearth plain": {"speculative": False}})  # fmt: skip
    print("llama-server", flush=True)
    results |= measure("llama", None, single + many, args.tokens, {"llama plain": {}})
    best, best_rate = None, -1.0
    for spec_type in args.spec_types.split(","):
        print(f"llama-server --spec-type {spec_type}", flush=True)
        found = measure(spec_type, spec_type, single[:1], args.tokens, {spec_type: {}})
        if found[f"{spec_type} edit x1"] > best_rate:
            best, best_rate = spec_type, found[f"{spec_type} edit x1"]
        results |= found
    print(f"llama-server --spec-type {best} (best at one edit stream)", flush=True)
    results |= {k.replace(str(best), "llama spec"): v for k, v in results.items() if best in k}
    results |= measure(f"{best}-rest", best, single[1:] + many, args.tokens, {"llama spec": {}})
    (OUT / "speculative.json").write_text(json.dumps(results, indent=1))
    print(f"\n| workload | hearth spec | hearth plain | llama-server {best} | llama-server plain "
          "| spec / plain | hearth spec / llama-server spec |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for key, _ in single + many:
        h, hp = results[f"hearth spec {key}"], results[f"hearth plain {key}"]
        ls, lp = results[f"llama spec {key}"], results[f"llama plain {key}"]
        print(f"| {key} | {h:.1f} | {hp:.1f} | {ls:.1f} | {lp:.1f} | {h / hp:.2f}x "
              f"| {h / ls:.2f}x |")  # fmt: skip
    metrics = [k for k in results if k.startswith(SPEC_TYPES)]
    speeds = [f"{k.split()[0]} {results[k]:.1f} t/s" for k in metrics if k.endswith("edit x1")]
    print("\nllama-server speculators at one edit stream: " + ", ".join(speeds))


if __name__ == "__main__":
    if not MODEL.exists():
        raise SystemExit(f"{MODEL} is missing: .venv/bin/hearth pull qwen2.5-coder-0.5b")
    Path(OUT).mkdir(exist_ok=True)
    main()
