"""Whether llama.cpp may repack a model's weights into its extra CPU buffer types.

llama.cpp's CPU backend can lay weights out for the CPU's widest instructions at load
(``use_extra_bufts``): its own repacked layout (``REPACK``), which speeds prompt
processing, and on Intel AMX CPUs an AMX layout, used first where the build has it.
The AMX path of the llama.cpp that hearth pins crashes on the first decode (SIGSEGV in
``ggml_backend_amx_mul_mat``, llama.cpp issue 20824). ``scripts/install`` therefore
builds without AMX (``-mno-amx-*``), which keeps the repacked layout; a build that
still has AMX (one built by hand, or an older cached wheel) on an AMX CPU gets no extra
buffer types at all, so it serves correctly, only slower to prefill.

``weight_repack`` in models.toml: ``"auto"`` (that rule), ``true`` or ``false``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

_FEATURE = re.compile(r"([A-Z0-9_]+) = 1")


@dataclass(frozen=True, slots=True)
class RepackChoice:
    enabled: bool
    reason: str


def build_features(system_info: str) -> frozenset[str]:
    """The features a llama.cpp build was compiled with, from
    ``llama_print_system_info()`` (``"CPU : AVX2 = 1 | AMX_INT8 = 1 | ..."``)."""
    return frozenset(_FEATURE.findall(system_info))


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The CPU's feature flags (Linux); empty where /proc/cpuinfo does not say."""
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def choose(setting: bool | None, build: frozenset[str], cpu: frozenset[str]) -> RepackChoice:
    """``setting`` is models.toml's ``weight_repack`` (``None``: auto)."""
    amx = "AMX_INT8" in build and "amx_int8" in cpu
    if setting is not None:
        state = "on" if setting else "off"
        warn = " (this build's AMX path crashes on this CPU)" if setting and amx else ""
        return RepackChoice(setting, f"{state}: weight_repack = {str(setting).lower()}{warn}")
    if amx:
        return RepackChoice(
            False,
            "off: this llama.cpp build has the AMX buffer type and this CPU has AMX, whose "
            "path crashes (llama.cpp issue 20824); rebuild with scripts/install, which leaves "
            "AMX out, to get repacking back",
        )
    if "REPACK" in build:
        return RepackChoice(True, "on: weights repacked for this CPU (llama.cpp's REPACK)")
    return RepackChoice(True, "on: this build has no extra CPU buffer types to use")
