"""Stop strings over a stream of text deltas.

Text that could be the start of a stop string is held back until it is known not to
be one, so a stop string split across tokens never reaches the client.
"""

from __future__ import annotations

from collections.abc import Sequence


class StopMatcher:
    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = tuple(s for s in stops if s)
        self._held = ""
        self.stopped = False
        self.matched: str | None = None  # the stop string found

    def feed(self, text: str) -> str:
        """Add generated text; return what is safe to send now. After a stop string is
        found, ``stopped`` is set and the text before it is the last returned."""
        if self.stopped:
            return ""
        buf = self._held + text
        if not self._stops:
            return buf
        found = [(i, s) for s, i in ((s, buf.find(s)) for s in self._stops) if i >= 0]
        if found:
            cut, self.matched = min(found)
            self.stopped = True
            self._held = ""
            return buf[:cut]
        keep = self._partial_suffix(buf)
        self._held = buf[len(buf) - keep :]
        return buf[: len(buf) - keep]

    def flush(self) -> str:
        """The end of generation: held text was no stop string after all."""
        held, self._held = self._held, ""
        return "" if self.stopped else held

    def _partial_suffix(self, buf: str) -> int:
        """Length of the longest suffix of ``buf`` that is a proper prefix of a stop."""
        best = 0
        for stop in self._stops:
            for n in range(min(len(stop) - 1, len(buf)), best, -1):
                if buf.endswith(stop[:n]):
                    best = n
                    break
        return best
