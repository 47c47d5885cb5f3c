"""Model files from the Hugging Face hub, through the optional ``huggingface_hub``.

``hf:org/repo/file.gguf[@rev]`` is one file, copied into place and checked like any pull;
``hf:org/repo[@rev]`` is a whole repo, an MLX model folder, pinned by its revision.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TextIO

from server.cli.pull import PullError, Source, install

# What an MLX folder needs from its repo (weights, configs, tokenizer, template).
_FOLDER_FILES = ["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja", "*.tiktoken"]


def _hub(source: Source) -> Any:
    try:
        import huggingface_hub
    except ImportError as exc:
        raise PullError(
            f"model source hf:{source.repo} needs huggingface_hub: pip install 'hearth[hf]'"
        ) from exc
    return huggingface_hub


def pull_file(path: Path, source: Source, sha256: str | None, out: TextIO) -> None:
    hf_hub_download = _hub(source).hf_hub_download
    print(f"fetching {source.filename} from huggingface.co/{source.repo}", file=out, flush=True)
    try:
        cached = Path(
            hf_hub_download(repo_id=source.repo, filename=source.filename, revision=source.revision)
        )
    except Exception as exc:  # huggingface_hub raises many unrelated types (HTTP, OS, auth)
        raise PullError(f"cannot download {source.filename} from {source.repo}: {exc}") from exc
    # Copied rather than linked: the HF cache may be pruned, and the copy is hashed as it goes.
    with cached.open("rb") as reader:
        install(path, [reader], cached.stat().st_size, sha256, out)


def pull_folder(path: Path, source: Source, out: TextIO) -> None:
    """A whole repo (an MLX model folder) into ``path``, through ``<path>.part``."""
    snapshot_download = _hub(source).snapshot_download
    print(f"fetching huggingface.co/{source.repo} into {path}", file=out, flush=True)
    part = path.with_name(path.name + ".part")
    try:
        snapshot_download(
            repo_id=source.repo,
            revision=source.revision,
            local_dir=str(part),
            allow_patterns=_FOLDER_FILES,
        )
    except Exception as exc:  # huggingface_hub raises many unrelated types (HTTP, OS, auth)
        raise PullError(f"cannot download {source.repo}: {exc}") from exc
    if not (part / "config.json").is_file():
        raise PullError(f"{source.repo} has no config.json: not an MLX model repo")
    part.rename(path)
    print(f"{path}: ready", file=out, flush=True)
