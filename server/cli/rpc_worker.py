"""``hearth rpc-worker``: lend this machine's memory and compute to another's model.

Runs llama.cpp's RPC server (ggml's, from the installed llama-cpp-python) in this
process, bound to one address. The protocol has no authentication and no encryption,
so a public address is refused unless ``--allow-public`` says so (docs/scale-out.md).
"""

from __future__ import annotations

import argparse
import signal
import sys

from backends.base import BackendError
from backends.llamacpp import rpc
from server.settings import Settings

WARNING = (
    "The RPC protocol has no authentication and no encryption: anyone who reaches the port "
    "can read and write this machine's model memory and run work on it. Keep workers on a "
    "private network."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Serve this machine's GPUs (or its CPU and memory) to hearth servers whose "
        f"models.toml lists it in rpc_workers. {WARNING}"
    )
    parser.add_argument(
        "--host", dest="worker_host", default="127.0.0.1", metavar="HOST",
        help="IPv4 address to bind: loopback or private unless --allow-public (default 127.0.0.1)",
    )  # fmt: skip
    parser.add_argument(
        "--port", dest="worker_port", type=int, default=rpc.DEFAULT_PORT, metavar="PORT",
        help="default 50052",
    )  # fmt: skip
    parser.add_argument(
        "--threads", type=int, default=0,
        help="CPU threads for a CPU worker; 0 is one per physical core",
    )  # fmt: skip
    parser.add_argument(
        "--allow-public", action="store_true",
        help="bind a public address or 0.0.0.0 too (no authentication: firewall it)",
    )  # fmt: skip


def run(args: argparse.Namespace, _settings: Settings) -> int:
    try:
        rpc.check_bind_address(args.worker_host, allow_public=args.allow_public)
    except ValueError as exc:
        print(f"hearth rpc-worker: {exc}", file=sys.stderr)
        return 2
    if not 0 < args.worker_port < 65536:
        print(f"hearth rpc-worker: --port {args.worker_port} is not a port", file=sys.stderr)
        return 2
    from backends.hardware import physical_cores

    threads = args.threads or physical_cores()
    print(
        f"hearth rpc-worker on {args.worker_host}:{args.worker_port}. {WARNING}",
        file=sys.stderr,
        flush=True,
    )
    # The server never returns while it serves; the default actions end the process at
    # once on SIGINT or SIGTERM (a Python handler would wait for a return that never comes).
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        rpc.serve(f"{args.worker_host}:{args.worker_port}", threads)
    except (BackendError, OSError) as exc:
        print(f"hearth rpc-worker: {exc}", file=sys.stderr)
        return 1
