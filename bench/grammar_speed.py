"""Decode speed under a JSON-schema grammar, through hearth's llama.cpp backend.

    .venv/bin/python bench/grammar_speed.py [--tokens 96] [--rounds 3] [--batch 4]

Greedy and sampled (temperature 0.7) sequences constrained to a JSON schema, alone and
``--batch`` at once; the same with no constraint for scale. Reports generated tokens per
second (the median of the rounds) and the time to compile one request's grammar.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

from backends.base import Constraint, LoadRequest, SamplingParams, Work
from backends.llamacpp.backend import LlamaCppBackend

CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "hearth" / "models"
MODEL = CACHE / "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer"},
        "languages": {"type": "array", "items": {"type": "string"}},
        "projects": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"title": {"type": "string"}, "stars": {"type": "integer"}},
                "required": ["title", "stars"],
            },
        },
    },
    "required": ["name", "age", "languages", "projects"],
}
PROMPT = (
    "<|im_start|>user\nDescribe a fictional programmer as JSON with a name, age, the "
    "languages they use and many projects.<|im_end|>\n<|im_start|>assistant\n"
)


def run(backend: LlamaCppBackend, sampling: SamplingParams, n: int, tokens: int) -> float:
    prompt = backend.tokenize(PROMPT, add_special=True)
    for i in range(n):
        backend.add(i, prompt, sampling)
    backend.step([Work(i, len(prompt), True) for i in range(n)])
    start = time.perf_counter()
    live = set(range(n))
    made = 0
    for _ in range(tokens):
        deltas, failures = backend.step([Work(i, 1, True) for i in sorted(live)])
        assert not failures, failures
        made += len(deltas)
        live -= {d.seq_id for d in deltas if d.eog}
        if not live:
            break
    elapsed = time.perf_counter() - start
    for i in range(n):
        backend.release(i)
    return made / elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", type=Path, default=MODEL)
    parser.add_argument("--tokens", type=int, default=96)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=4)
    args = parser.parse_args()
    request = LoadRequest(
        name="bench", path=args.model, context_length=4096, max_sequences=args.batch,
        threads=os.cpu_count() or 1, gpu_layers=None, tensor_split=None, chat_template=None,
        batch_tokens=512, options={"prefix_cache": False},
    )  # fmt: skip
    backend = LlamaCppBackend(request)
    schema = Constraint(schema=json.dumps(SCHEMA))
    start = time.perf_counter()
    backend.check_constraint(Constraint(schema=json.dumps({**SCHEMA, "title": "fresh"})))
    print(f"compile one grammar: {1000 * (time.perf_counter() - start):.1f} ms")
    cases = {
        "greedy": SamplingParams(temperature=0.0, ignore_eos=True),
        "sampled": SamplingParams(temperature=0.7, seed=7, ignore_eos=True),
    }
    print("| sampling | sequences | no grammar t/s | json_schema t/s | ratio |")
    print("|---|---|---|---|---|")
    for label, plain in cases.items():
        for n in (1, args.batch):
            rates: dict[str, list[float]] = {"plain": [], "schema": []}
            for _ in range(args.rounds):
                rates["plain"].append(run(backend, plain, n, args.tokens))
                # A finished JSON value ends the sequence, so no ignore_eos here.
                fields = {**_fields(plain), "constraint": schema, "ignore_eos": False}
                constrained = SamplingParams(**fields)
                rates["schema"].append(run(backend, constrained, n, args.tokens))
            a, b = (statistics.median(rates[k]) for k in ("plain", "schema"))
            print(f"| {label} | {n} | {a:.1f} | {b:.1f} | {b / a:.2f} |")
    backend.close()


def _fields(p: SamplingParams) -> dict[str, object]:
    return {f: getattr(p, f) for f in p.__dataclass_fields__}


if __name__ == "__main__":
    main()
