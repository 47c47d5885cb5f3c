"""``hearth cache ls|clear``: the prompt cache's disk tier, per model key."""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from server.settings import Settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("ls", "clear"), help="list or remove saved prompts")


def run(args: argparse.Namespace, settings: Settings) -> int:
    from server.cli.main import prompt_cache

    folder = prompt_cache(settings)[0]
    assert folder is not None
    if args.action == "clear":
        removed = sum(_size(d) for d in _models(folder))
        for model in _models(folder):
            shutil.rmtree(model)
        print(f"removed {removed / 2**20:.1f} MiB of saved prompts from {folder}")
        return 0
    print(listing(folder))
    return 0


def listing(folder: Path) -> str:
    rows = [f"{folder}:"]
    for model in _models(folder):
        files = sorted(model.glob("*.kv"), key=lambda p: p.stat().st_mtime)
        newest = (
            time.strftime("%Y-%m-%d %H:%M", time.localtime(files[-1].stat().st_mtime))
            if files
            else "-"
        )
        rows.append(f"  {model.name}: {len(files)} saved prompt(s), "
                    f"{_size(model) / 2**20:.1f} MiB, newest {newest}")  # fmt: skip
    if len(rows) == 1:
        rows.append("  (empty)")
    return "\n".join(rows)


def _models(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []


def _size(model: Path) -> int:
    return sum(f.stat().st_size for f in model.glob("*.kv"))
