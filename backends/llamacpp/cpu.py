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

# llama.cpp's names for the instructions a build was compiled to use, and the CPU flag
# (/proc/cpuinfo) each needs: x86-64, then ARM.
_NEEDS = {
    "SSE3": "pni", "SSSE3": "ssse3", "AVX": "avx", "AVX2": "avx2", "F16C": "f16c",
    "FMA": "fma", "BMI2": "bmi2", "AVX_VNNI": "avx_vnni", "AVX512": "avx512f",
    "AVX512_VBMI": "avx512vbmi", "AVX512_VNNI": "avx512_vnni", "AVX512_BF16": "avx512_bf16",
    "AMX_INT8": "amx_int8", "SVE": "sve", "DOTPROD": "asimddp", "MATMUL_INT8": "i8mm",
}  # fmt: skip


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


def missing(build: frozenset[str], cpu: frozenset[str]) -> list[str]:
    """Instructions the build uses that this CPU lacks: such a build dies of SIGILL
    (one compiled on another machine and copied here). Empty where the CPU's flags are
    unknown (no /proc/cpuinfo: macOS, where builds are made on the machine)."""
    if not cpu:
        return []
    return sorted(f for f in build if f in _NEEDS and _NEEDS[f] not in cpu)


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
        note = "; this build leaves out AMX, whose path crashes" if "amx_int8" in cpu else ""
        return RepackChoice(True, f"on: weights repacked for this CPU (llama.cpp's REPACK{note})")
    return RepackChoice(True, "on: this build has no extra CPU buffer types to use")
