"""Side-by-side throughput: hearth vs llama.cpp's llama-server vs llama_cpp.server.

One command reproduces the table in docs/benchmarks.md:

    .venv/bin/python bench/compare.py --rounds 3

It builds llama-server from the llama.cpp that the pinned llama-cpp-python vendors
(bench/build_llama_server.sh), makes a venv for llama-cpp-python's own server from the
same cached wheel, then for each round starts each server in turn on the same GGUF with
the same threads and parallel sequences, runs `hearth bench` against it, and stops it:
the servers are interleaved, never run at once. Results go to .bench/ as JSON; the
summary (medians, spread, ratios) is printed as Markdown.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / ".bench"
VENV = ROOT / ".venv" / "bin"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "hearth"
LLAMA_CPP_VERSION = "0.3.36"


def _build_key() -> str:
    """This machine's llama.cpp build key (scripts/llama-cpp-build.sh): the wheel cache
    and bench/build_llama_server.sh file their builds under it."""
    return subprocess.run(
        ["bash", "-c", '. scripts/llama-cpp-build.sh && printf %s "$LLAMA_BUILD_KEY"'],
        cwd=ROOT, env={**os.environ, "LLAMA_CPP_VERSION": LLAMA_CPP_VERSION},
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip


BUILD_KEY = _build_key()
# HEARTH_LLAMA_BIN: a llama-server built elsewhere.
LLAMA_BIN = Path(
    os.environ.get("HEARTH_LLAMA_BIN")
    or CACHE / f"llama.cpp-{LLAMA_CPP_VERSION}-{BUILD_KEY}" / "bin"
)
# Keep the EOG tokens of Qwen2.5 out of the answer on a server without ignore_eos.
QWEN_EOG_BIAS = {"151643": -100, "151645": -100}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def server_commands(args: argparse.Namespace, model: Path, port: int) -> dict[str, list[str]]:
    threads, parallel, ctx = str(args.threads), str(args.parallel), str(args.context)
    models_toml = OUT / "models.toml"
    models_toml.write_text(
        f'[models.bench]\npath = "{model}"\ncontext_length = {ctx}\n'
        f"max_sequences = {parallel}\nthreads = {threads}\n"
    )
    hearth = [str(VENV / "hearth"), "--models-file", str(models_toml), "serve",
              "--port", str(port), "--no-pull"]  # fmt: skip
    return {
        "hearth": hearth,
        # The engine in the server's own process, as before runner processes.
        "hearth-thread": ["env", "HEARTH_ENGINE_ISOLATION=thread", *hearth],
        "llama-server": [str(LLAMA_BIN / "llama-server"), "-m", str(model), "--port", str(port),
                         "-t", threads, "-tb", threads, "-np", parallel, "-c", ctx, "-kvu",
                         "--no-webui", "-a", "bench"],
        "llama_cpp.server": [str(OUT / "venv" / "bin" / "python"), "-m", "llama_cpp.server",
                             "--model", str(model), "--port", str(port), "--n_threads", threads,
                             "--n_ctx", "4096", "--model_alias", "bench",
                             # its default cancels a running answer when another arrives
                             "--interrupt_requests", "False"],
    }  # fmt: skip


EXTRA_BODY = {
    "hearth": {"ignore_eos": True},
    "hearth-thread": {"ignore_eos": True},
    "llama-server": {"ignore_eos": True},
    "llama_cpp.server": {"logit_bias": QWEN_EOG_BIAS},
}


def prepare_peers(names: list[str]) -> None:
    subprocess.run(["bash", str(ROOT / "bench" / "build_llama_server.sh")], check=True)
    venv = OUT / "venv"
    ready = venv / ".llama-cpp-server-installed"
    if "llama_cpp.server" in names and not ready.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        wheels = CACHE / "wheels" / BUILD_KEY
        wheel = next(wheels.glob(f"llama_cpp_python-{LLAMA_CPP_VERSION}-*.whl"))
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
        subprocess.run([*pip, f"{wheel}[server]"], check=True)
        ready.touch()


def wait_ready(base: str, proc: subprocess.Popen[bytes], timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            # hearth listens while it loads: its readiness route says when it is done.
            # llama-server answers 503 to everything until then; others have no such route.
            ready = httpx.get(f"{base}/health/ready", timeout=2).status_code
            models = httpx.get(f"{base}/v1/models", timeout=2).status_code
            if models == 200 and ready in (200, 404):
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError("server not ready")


def run_one(name: str, args: argparse.Namespace, model: Path, round_no: int) -> dict[str, object]:
    port = free_port()
    bench = ["--model", "bench", "--concurrency", args.concurrency,
             "--prompt-tokens", str(args.prompt_tokens), "--max-tokens", str(args.max_tokens),
             "--extra-body", json.dumps(EXTRA_BODY[name]), "--label", name]  # fmt: skip
    command = server_commands(args, model, port)[name]
    return serve_and_bench(command, port, name, OUT / f"{name}-r{round_no}.json", bench)


@contextlib.contextmanager
def serving(
    command: list[str],
    port: int,
    log_name: str,
    *,
    cwd: Path | None = None,
    ready_timeout: float = 180,
) -> Iterator[str]:
    """A server started from ``command`` (its output in .bench/LOG_NAME.log), ready on
    ``port``; yields its base URL and stops it afterwards."""
    with (OUT / f"{log_name}.log").open("ab") as log:
        proc = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=cwd
        )
        try:
            base = f"http://127.0.0.1:{port}"
            wait_ready(base, proc, ready_timeout)
            yield base
        finally:
            stop(proc)


def serve_and_bench(
    command: list[str],
    port: int,
    log_name: str,
    result: Path,
    bench_args: list[str],
    *,
    ready_timeout: float = 180,
    check: bool = False,
) -> dict[str, object]:
    """Start one server, run `hearth bench` against it with ``bench_args``, stop it; the
    results `hearth bench` wrote to ``result``."""
    with serving(command, port, log_name, ready_timeout=ready_timeout) as base:
        bench = [str(VENV / "hearth"), "bench", "--url", f"{base}/v1", *bench_args]
        subprocess.run([*bench, "--json", str(result)], check=check)
    data: dict[str, object] = json.loads(result.read_text())
    return data


def levels(data: dict[str, object]) -> list[dict[str, float]]:
    """The per-concurrency results of one `hearth bench` run."""
    found = data["levels"]
    assert isinstance(found, list)
    return found


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


def summarize(runs: dict[str, list[dict[str, object]]]) -> str:
    names = list(runs)
    peers = [n for n in names if n != "hearth"]
    conc = [int(lv["concurrency"]) for lv in levels(runs[names[0]][0])]
    lines = ["| concurrency | " + " | ".join(f"{n} agg t/s" for n in names)
             + "".join(f" | hearth / {p}" for p in peers)
             + " | TTFT p50 s (" + ", ".join(names) + ") |",
             "|" + "---|" * (len(names) + len(peers) + 2)]  # fmt: skip
    for i, c in enumerate(conc):
        agg = {n: [levels(r)[i]["aggregate_tps"] for r in runs[n]] for n in names}
        ttft = {n: statistics.median(levels(r)[i]["ttft_p50_s"] for r in runs[n]) for n in names}
        med = {n: statistics.median(v) for n, v in agg.items()}
        cells = [f"{med[n]:.1f} ({min(agg[n]):.1f}–{max(agg[n]):.1f})" for n in names]
        ratios = [med.get("hearth", float("nan")) / med[p] for p in peers]
        lines.append(
            f"| {c} | " + " | ".join(cells) + "".join(f" | {r:.2f}×" for r in ratios)
            + " | " + ", ".join(f"{ttft[n]:.2f}" for n in names) + " |"
        )  # fmt: skip
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", type=Path, default=CACHE / "models" / "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", default="1,4,8,16")
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--parallel", type=int, default=16)
    parser.add_argument("--context", type=int, default=32768)
    parser.add_argument("--servers", default="hearth,llama-server,llama_cpp.server")
    parser.add_argument(
        "--summarize-only",
        action="store_true",
        help="only print the table from the JSON files already in .bench/",
    )
    args = parser.parse_args()  # fmt: skip
    OUT.mkdir(exist_ok=True)
    names = args.servers.split(",")
    runs: dict[str, list[dict[str, object]]] = {n: [] for n in names}
    if args.summarize_only:
        for name in names:
            for path in sorted(OUT.glob(f"{name}-r*.json")):
                runs[name].append(json.loads(path.read_text()))
        print(summarize(runs))
        return 0
    prepare_peers(names)
    for round_no in range(args.rounds):
        for name in names:
            print(f"== round {round_no + 1}: {name}", flush=True)
            runs[name].append(run_one(name, args, args.model, round_no))
    (OUT / "summary.json").write_text(json.dumps(runs, indent=2))
    print(summarize(runs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
