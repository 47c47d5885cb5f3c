"""The ``options`` a backend shares with others in models.toml: prefix caching."""

from __future__ import annotations

from dataclasses import dataclass

from backends.base import LoadRequest, ModelLoadError


@dataclass(frozen=True, slots=True)
class PrefixOptions:
    enabled: bool
    entries: int  # finished sequences kept as reusable prefixes


def prefix_options(
    request: LoadRequest, backend: str, entries_key: str, others: tuple[str, ...] = ()
) -> PrefixOptions:
    """``prefix_cache`` and ``entries_key`` from ``options``; any other key but the
    backend's ``others``, or a value out of range, is a load error naming the key."""
    known = {"prefix_cache", entries_key, *others}
    unknown = set(request.options) - known
    name = request.name
    if unknown:
        raise ModelLoadError(
            f"model {name!r}: unknown {backend} option(s) {', '.join(sorted(unknown))}; "
            f"known: {', '.join(sorted(known))}"
        )
    enabled = request.options.get("prefix_cache", True)
    entries = request.options.get(entries_key, min(request.max_sequences, 256))
    if not isinstance(enabled, bool):
        raise ModelLoadError(f"model {name!r}: options.prefix_cache must be true or false")
    if not isinstance(entries, int) or isinstance(entries, bool) or not 0 <= entries <= 256:
        raise ModelLoadError(f"model {name!r}: options.{entries_key} must be 0..256")
    return PrefixOptions(enabled, entries)
