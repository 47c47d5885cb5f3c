"""Where one decode step's time goes: llama_decode versus hearth's Python around it.

    .venv/bin/python bench/profile_step.py --sequences 1,8,16 --steps 64

Loads the default model through hearth's llama.cpp backend, fills the batch with N
decoding sequences, and times each ``step()``: the share inside ``llama_decode`` (the
forward pass) against the rest (batch filling, sampling, detokenizing in Python and
ctypes). The engine thread adds scheduling and event delivery on top; its share is
measured by running the same steps through a bare loop and through ``Scheduler``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

from backends.base import ChatMessage, LoadRequest, SamplingParams
from backends.llamacpp.backend import LlamaCppBackend
from server.engine.scheduler import Scheduler, SeqState

CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "hearth" / "models"


def load(path: Path, n: int, threads: int) -> LlamaCppBackend:
    request = LoadRequest(
        name="profile", path=path, context_length=32768, max_sequences=n, threads=threads,
        gpu_layers=None, tensor_split=None, chat_template=None, batch_tokens=512,
    )  # fmt: skip
    return LlamaCppBackend(request)


def profile(backend: LlamaCppBackend, n: int, steps: int) -> tuple[float, float, float]:
    """Median per-step seconds: total, inside llama_decode, and scheduler bookkeeping."""
    sched = Scheduler(max_running=n, kv_capacity=32768, step_tokens=512, max_waiting=n)
    for i in range(n):
        prompt = backend.chat_prompt([ChatMessage("user", f"Tell me a story about {i}.")])
        sched.add(SeqState(i, len(prompt), steps + 8))
        sched.admit()
        sched.running[i].fed = backend.add(i, prompt, SamplingParams(ignore_eos=True))
    decode_times: list[float] = []
    batch = backend._batch
    real_decode = batch.decode

    def timed_decode(ctx: object) -> int:
        t = time.perf_counter()
        rc = real_decode(ctx)
        decode_times.append(time.perf_counter() - t)
        return rc

    batch.decode = timed_decode  # type: ignore[method-assign]
    while any(s.prefilling for s in sched.running.values()):
        work = sched.plan()
        backend.step(work)
        sched.advance(work)
    decode_times.clear()
    totals, plans = [], []
    for _ in range(steps):
        t0 = time.perf_counter()
        work = sched.plan()
        t1 = time.perf_counter()
        backend.step(work)
        sched.advance(work)
        totals.append(time.perf_counter() - t0)
        plans.append(t1 - t0)
    batch.decode = real_decode  # type: ignore[method-assign]
    for i in range(n):
        backend.release(i)
    return statistics.median(totals), statistics.median(decode_times), statistics.median(plans)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--model", type=Path, default=CACHE / "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
    )
    parser.add_argument("--sequences", default="1,8,16")
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    print("| sequences | step ms | llama_decode ms | Python ms (share) | of which scheduler ms |")
    print("|---|---|---|---|---|")
    for n in (int(x) for x in args.sequences.split(",")):
        backend = load(args.model, n, args.threads)
        total, decode, plan = profile(backend, n, args.steps)
        backend.close()
        py = total - decode
        print(
            f"| {n} | {total * 1e3:.2f} | {decode * 1e3:.2f} | "
            f"{py * 1e3:.2f} ({py / total:.0%}) | {plan * 1e3:.3f} |"
        )


if __name__ == "__main__":
    main()
