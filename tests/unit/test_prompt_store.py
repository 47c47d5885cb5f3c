"""The prompt store's keys, tiers, bounds and its refusal of files that do not check."""

from __future__ import annotations

import stat
import time
from pathlib import Path

from backends.prompt_store import BLOCK, PromptStore, block_keys, model_key

KEY = model_key("model.gguf", "sha", "f16")
MiB = 2**20


def tokens(n: int, start: int = 0) -> list[int]:
    return list(range(start, start + n))


def store(folder: Path | None, ram: int = 64 * MiB, disk: int = 64 * MiB) -> PromptStore:
    return PromptStore(KEY, folder, ram_bytes=ram, disk_bytes=disk)


def settle(s: PromptStore) -> None:
    """Disk writes run on threads of their own."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(
        e.state is not None and not e.on_disk for e in s._entries.values()
    ):
        time.sleep(0.01)


def test_keys_chain_over_whole_blocks_and_depend_on_the_model() -> None:
    a = block_keys(KEY, tokens(3 * BLOCK + 10))
    assert len(a) == 3
    assert block_keys(KEY, tokens(2 * BLOCK)) == a[:2]  # a prefix shares its keys
    changed = tokens(3 * BLOCK)
    changed[5] = 99999
    assert block_keys(KEY, changed)[2] != a[2]  # a change early changes every later key
    assert block_keys(model_key("other"), tokens(BLOCK)) != a[:1]


def test_the_longest_shared_whole_block_prefix_is_found(tmp_path: Path) -> None:
    s = store(None)
    s.save(tokens(4 * BLOCK), b"state-4")
    prompt = [*tokens(3 * BLOCK), 7, 7, 7]
    hit = s.longest(prompt)
    assert hit is not None and hit.tokens == 3 * BLOCK and hit.tier == "ram"
    assert s.read(hit) == b"state-4"
    assert s.longest(tokens(4 * BLOCK), more_than=4 * BLOCK) is None
    assert s.longest([5] * (2 * BLOCK)) is None
    # A prompt of exactly four blocks keeps one token to feed: three blocks come back.
    exact = s.longest(tokens(4 * BLOCK))
    assert exact is not None and exact.tokens == 3 * BLOCK


def test_a_longer_save_replaces_the_entry_it_extends(tmp_path: Path) -> None:
    s = store(tmp_path)
    s.save(tokens(2 * BLOCK), b"short")
    s.save(tokens(3 * BLOCK), b"long")
    settle(s)
    assert s.stats()["entries"] == 1
    assert len(list((tmp_path / KEY.hex()[:32]).glob("*.kv"))) == 1


def test_the_disk_tier_outlives_the_process_and_the_directory_is_private(tmp_path: Path) -> None:
    first = store(tmp_path)
    first.save(tokens(2 * BLOCK), b"x" * 1000)
    settle(first)
    folder = tmp_path / KEY.hex()[:32]
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE(tmp_path.stat().st_mode) == 0o700
    again = store(tmp_path)  # a new process reads the index from the files
    hit = again.longest([*tokens(2 * BLOCK), 1])
    assert hit is not None and hit.tier == "disk"
    assert again.read(hit) == b"x" * 1000
    assert again.stats()["disk_hits"] == 1
    assert again.longest([*tokens(2 * BLOCK), 1]).tier == "ram"  # type: ignore[union-attr]


def test_a_corrupt_or_truncated_or_foreign_file_is_removed_not_loaded(tmp_path: Path) -> None:
    first = store(tmp_path)
    first.save(tokens(2 * BLOCK), b"y" * 1000)
    first.save(tokens(2 * BLOCK, start=10_000), b"z" * 1000)
    settle(first)
    folder = tmp_path / KEY.hex()[:32]
    flipped, cut = sorted(folder.glob("*.kv"))
    data = bytearray(flipped.read_bytes())
    data[-1] ^= 0xFF  # a bit flipped in the state: only the checksum can tell
    flipped.write_bytes(bytes(data))
    cut.write_bytes(cut.read_bytes()[:-10])
    (folder / "junk.kv").write_bytes(b"not a prompt cache entry")
    (folder / "half.part123").write_bytes(b"an interrupted write")
    again = store(tmp_path)
    assert not cut.exists() and not (folder / "junk.kv").exists()
    assert not (folder / "half.part123").exists()
    hits = [again.longest([*tokens(2 * BLOCK, start=s), 1]) for s in (0, 10_000)]
    found = [h for h in hits if h is not None]
    assert len(found) == 1  # the flipped one: its header checks, its body does not
    assert again.read(found[0]) is None
    assert not flipped.exists() and again.stats()["entries"] == 0


def test_each_tier_is_bounded_least_recently_used_first(tmp_path: Path) -> None:
    s = store(tmp_path, ram=2500, disk=2500)
    for i in range(3):
        s.save(tokens(BLOCK, start=i * 1000), bytes([i]) * 1000)
        settle(s)
    stats = s.stats()
    assert stats["ram_bytes"] <= 2500 and stats["disk_bytes"] <= 2500
    assert s.longest([*tokens(BLOCK, start=0), 1]) is None  # the oldest is gone
    assert s.longest([*tokens(BLOCK, start=2000), 1]) is not None
