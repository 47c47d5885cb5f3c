"""Saved prompt state beyond the live KV cache: a RAM tier and a disk tier, found by the
content of the prompt, for any session, slot or process that produced it.

A saved entry is one sequence's state (whatever the backend's save gives: llama.cpp's
``llama_state_seq_get_data``) with the tokens it holds. Its tokens are cut into blocks
of ``BLOCK`` tokens and each block boundary gets a key: the SHA-256 of the model's key,
the previous key and the block's tokens (vLLM's prefix-caching keys), so a prompt that
starts with the same tokens finds the entry at the longest boundary both share.

The model key covers everything that changes the KV for the same tokens: the model
file's identity, the KV type, the backend's version; it also names the model's folder
under the cache directory, so a different model or setting never reads another's
state. Files are written whole under a temporary name and renamed; a file with a bad
magic, version, key or checksum, or cut short, is removed and never given to a model.
The directory is created 0700. Both tiers are bounded in bytes, least recently used
entries going first; an entry saved again with more tokens replaces the shorter one.
"""

from __future__ import annotations

import array
import hashlib
import logging
import os
import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("hearth.prompt_store")
BLOCK = 256
MAGIC = b"HEARTHKV"
VERSION = 1
_HEAD = struct.Struct("<8sI32sIQ32s")  # magic, version, model key, tokens, state bytes, sum


def model_key(*parts: object) -> bytes:
    """The key of a model and its KV-changing settings."""
    return hashlib.sha256(repr(parts).encode()).digest()


def block_keys(key: bytes, tokens: Sequence[int]) -> list[bytes]:
    """``keys[i]`` stands for ``tokens[: (i + 1) * BLOCK]``."""
    out, h = [], key
    for start in range(0, len(tokens) - BLOCK + 1, BLOCK):
        h = hashlib.sha256(h + array.array("i", tokens[start : start + BLOCK]).tobytes()).digest()
        out.append(h)
    return out


@dataclass(slots=True)
class Entry:
    name: str  # its file's name (the hex of its full-length key)
    tokens: tuple[int, ...]
    size: int  # state bytes
    keys: list[bytes]
    state: bytes | bytearray | None = None  # in the RAM tier
    on_disk: bool = False
    used: float = field(default_factory=time.monotonic)


@dataclass(frozen=True, slots=True)
class Hit:
    entry: Entry
    tokens: int  # how many leading tokens it gives
    tier: str  # "ram" or "disk"


class PromptStore:
    def __init__(
        self, key: bytes, directory: Path | None, *, ram_bytes: int, disk_bytes: int
    ) -> None:
        self._key = key
        self._ram_bytes, self._disk_bytes = ram_bytes, disk_bytes
        self._dir = directory / key.hex()[:32] if directory is not None and disk_bytes else None
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, Entry] = OrderedDict()  # least recently used first
        self._index: dict[bytes, tuple[str, int]] = {}  # block key -> entry, tokens
        self.hits = {"ram": 0, "disk": 0}
        if self._dir is not None:
            self._dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.chmod(self._dir.parent, 0o700)
            os.chmod(self._dir, 0o700)
            self._scan()

    # -- lookup ----------------------------------------------------------------------

    def longest(self, prompt: Sequence[int], more_than: int = 0) -> Hit | None:
        """The entry giving the most leading tokens of ``prompt`` (a whole number of
        blocks, at least one token left to feed), if more than ``more_than``."""
        keys = block_keys(self._key, prompt[: max(len(prompt) - 1, 0)])
        with self._lock:
            for i in range(len(keys) - 1, -1, -1):
                found = self._index.get(keys[i])
                if found is None or found[1] <= more_than:
                    continue
                entry = self._entries[found[0]]
                return Hit(entry, found[1], "ram" if entry.state is not None else "disk")
        return None

    def read(self, hit: Hit) -> bytes | bytearray | None:
        """The entry's state; None (and the entry gone) when its file does not check."""
        entry = hit.entry
        with self._lock:
            state = entry.state
        if state is None:
            state = self._read_file(entry)
            if state is None:
                self._forget(entry.name, remove_file=True)
                return None
        with self._lock:
            entry.used = time.monotonic()
            if entry.name in self._entries:
                self._entries.move_to_end(entry.name)
                if entry.state is None and self._ram_bytes >= entry.size:
                    entry.state = state
                    self._evict_ram()
            self.hits[hit.tier] += 1
        return state

    def covers(self, tokens: Sequence[int]) -> bool:
        """Whether an entry already holds every full block of ``tokens``."""
        keys = block_keys(self._key, tokens)
        with self._lock:
            return bool(keys) and keys[-1] in self._index

    # -- saving ----------------------------------------------------------------------

    def save(self, tokens: Sequence[int], state: bytes | bytearray) -> None:
        """Keep ``state`` for ``tokens`` (RAM now, disk on a thread of its own)."""
        keys = block_keys(self._key, tokens)
        if not keys:
            return
        entry = Entry(keys[-1].hex()[:32], tuple(tokens), len(state), keys, state)
        with self._lock:
            # Shorter entries that this one extends are replaced by it.
            for name in {self._index[k][0] for k in keys if k in self._index}:
                if _is_prefix(self._entries[name].tokens, entry.tokens):
                    self._forget_locked(name, remove_file=True)
            self._add_locked(entry)
            self._evict_ram()
        if self._dir is not None and len(state) <= self._disk_bytes:
            threading.Thread(target=self._write, args=(entry, state), daemon=True).start()

    def _add_locked(self, entry: Entry) -> None:
        self._entries[entry.name] = entry
        for i, key in enumerate(entry.keys):
            self._index[key] = (entry.name, (i + 1) * BLOCK)

    def _write(self, entry: Entry, state: bytes | bytearray) -> None:
        assert self._dir is not None
        tokens = array.array("i", entry.tokens).tobytes()
        hasher = hashlib.sha256(tokens)  # no concatenation: update() lets the GIL go
        hasher.update(state)
        digest = hasher.digest()
        head = _HEAD.pack(MAGIC, VERSION, self._key, len(entry.tokens), len(state), digest)
        final = self._dir / f"{entry.name}.kv"
        part = final.with_suffix(f".part{os.getpid()}")
        try:
            with part.open("wb") as f:
                f.write(head)
                f.write(tokens)
                f.write(state)
            os.replace(part, final)
        except OSError as exc:
            log.warning("prompt cache: could not write %s: %s", final.name, exc)
            part.unlink(missing_ok=True)
            return
        with self._lock:
            if entry.name in self._entries:
                entry.on_disk = True
                self._evict_disk()
            else:  # replaced while it was being written
                final.unlink(missing_ok=True)

    # -- bounds ----------------------------------------------------------------------

    def _evict_ram(self) -> None:
        used = sum(e.size for e in self._entries.values() if e.state is not None)
        for entry in list(self._entries.values()):
            if used <= self._ram_bytes:
                return
            if entry.state is not None:
                entry.state = None
                used -= entry.size
                if not entry.on_disk and self._dir is None:
                    self._forget_locked(entry.name, remove_file=False)

    def _evict_disk(self) -> None:
        used = sum(e.size for e in self._entries.values() if e.on_disk)
        for entry in list(self._entries.values()):
            if used <= self._disk_bytes:
                return
            if entry.on_disk:
                used -= entry.size
                self._forget_locked(entry.name, remove_file=True)

    def _forget(self, name: str, *, remove_file: bool) -> None:
        with self._lock:
            self._forget_locked(name, remove_file=remove_file)

    def _forget_locked(self, name: str, *, remove_file: bool) -> None:
        entry = self._entries.pop(name, None)
        if entry is not None:
            for key in entry.keys:
                if self._index.get(key, ("",))[0] == name:
                    del self._index[key]
        if remove_file and self._dir is not None:
            (self._dir / f"{name}.kv").unlink(missing_ok=True)

    # -- the disk tier ---------------------------------------------------------------

    def _scan(self) -> None:
        """Index the files of a former run; remove what does not check."""
        assert self._dir is not None
        for path in sorted(self._dir.iterdir(), key=lambda p: p.stat().st_mtime):
            if path.suffix != ".kv":
                path.unlink(missing_ok=True)  # a write that never finished
                continue
            tokens = self._read_tokens(path)
            if tokens is None:
                log.warning("prompt cache: removed %s (not a valid entry)", path.name)
                path.unlink(missing_ok=True)
                continue
            keys = block_keys(self._key, tokens[0])
            if not keys or keys[-1].hex()[:32] != path.stem:
                path.unlink(missing_ok=True)
                continue
            entry = Entry(path.stem, tokens[0], tokens[1], keys, on_disk=True)
            self._add_locked(entry)
        self._evict_disk()

    def _read_tokens(self, path: Path) -> tuple[tuple[int, ...], int] | None:
        try:
            with path.open("rb") as f:
                head = f.read(_HEAD.size)
                if len(head) != _HEAD.size:
                    return None
                magic, version, key, n, size, _ = _HEAD.unpack(head)
                if magic != MAGIC or version != VERSION or key != self._key:
                    return None
                raw = f.read(4 * n)
            if len(raw) != 4 * n or path.stat().st_size != _HEAD.size + 4 * n + size:
                return None
        except OSError:
            return None
        return tuple(array.array("i", raw)), size

    def _read_file(self, entry: Entry) -> bytes | bytearray | None:
        if self._dir is None or not entry.on_disk:
            return None
        path = self._dir / f"{entry.name}.kv"
        try:
            with path.open("rb") as f:
                data = bytearray(os.fstat(f.fileno()).st_size)
                got = f.readinto(data)
        except OSError:
            return None
        if got != len(data) or len(data) < _HEAD.size:
            return None
        magic, version, key, n, size, digest = _HEAD.unpack_from(data)
        ok = (magic, version, key) == (MAGIC, VERSION, self._key)
        ok = ok and len(data) == _HEAD.size + 4 * n + size
        with memoryview(data) as view:  # views, not copies, of 100 MB or more
            if not ok or hashlib.sha256(view[_HEAD.size :]).digest() != digest:
                log.warning("prompt cache: removed %s (it does not check)", path.name)
                return None
            ints = array.array("i")
            ints.frombytes(view[_HEAD.size : _HEAD.size + 4 * n])
            tokens = tuple(ints)
        if tokens != entry.tokens:
            return None
        del data[: _HEAD.size + 4 * n]  # the state alone, in place
        return data

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {
                "entries": len(self._entries),
                "ram_bytes": sum(e.size for e in self._entries.values() if e.state is not None),
                "disk_bytes": sum(e.size for e in self._entries.values() if e.on_disk),
                "ram_hits": self.hits["ram"],
                "disk_hits": self.hits["disk"],
            }


def _is_prefix(short: tuple[int, ...], long: tuple[int, ...]) -> bool:
    return len(short) <= len(long) and long[: len(short)] == short
