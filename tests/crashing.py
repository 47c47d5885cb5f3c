"""A backend that fails natively on a trigger, for the runner-process fault tests: the
fake model (tests/fakes.py) echoes the last message; an answer holding ``CRASH``
segfaults the process at its first step, one holding ``HANG`` never finishes it.
Registered in a real server with ``HEARTH_PLUGINS=crashing=tests.crashing:CrashingPlugin``."""

from __future__ import annotations

import ctypes
import time
from collections.abc import Sequence

from backends.base import Backend, Delta, LoadRequest, StepFailure, Work
from tests.fakes import FakeBackend, FakePlugin


class CrashingBackend(FakeBackend):
    def step(self, work: Sequence[Work]) -> tuple[list[Delta], list[StepFailure]]:
        for w in work:
            reply = bytes(b for b in self._seqs[w.seq_id].reply if b < 256)
            if b"CRASH" in reply:
                ctypes.string_at(0)  # SIGSEGV, as a native bug in a backend would
            if b"HANG" in reply:
                time.sleep(3600)
        return super().step(work)


class CrashingPlugin(FakePlugin):
    name = "crashing"

    def load(self, request: LoadRequest) -> Backend:
        return CrashingBackend(request)
