"""Detokenization helpers shared by backends."""

from __future__ import annotations

import codecs


class Utf8Stream:
    """Turns token bytes into whole characters; a split character waits for its rest."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, data: bytes) -> str:
        return self._decoder.decode(data)

    def flush(self) -> str:
        return self._decoder.decode(b"", final=True)
