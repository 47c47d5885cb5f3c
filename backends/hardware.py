"""What this machine is: platform, physical cores, memory, GPUs."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Gpu:
    name: str
    memory_bytes: int


@dataclass(frozen=True, slots=True)
class Hardware:
    system: str
    machine: str
    physical_cores: int
    logical_cpus: int
    memory_bytes: int
    gpus: tuple[Gpu, ...]

    @property
    def apple_silicon(self) -> bool:
        return self.system == "Darwin" and self.machine == "arm64"


def detect() -> Hardware:
    return Hardware(
        system=platform.system(),
        machine=platform.machine(),
        physical_cores=physical_cores(),
        logical_cpus=os.cpu_count() or 1,
        memory_bytes=_memory_bytes(),
        gpus=_nvidia_gpus(),
    )


def physical_cores() -> int:
    """Physical cores (not hyper-threads): llama.cpp decodes fastest with one thread each."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        cores: set[tuple[str, str]] = set()
        physical = "0"
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "physical id":
                physical = value.strip()
            elif key == "core id":
                cores.add((physical, value.strip()))
        if cores:
            return len(cores)
    if platform.system() == "Darwin":
        count = _sysctl("hw.perflevel0.physicalcpu") or _sysctl("hw.physicalcpu")
        if count:
            return int(count)
    return os.cpu_count() or 1


def _memory_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        value = _sysctl("hw.memsize")
        return int(value) if value else 0


def _sysctl(name: str) -> str | None:
    try:
        out = subprocess.run(["sysctl", "-n", name], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _nvidia_gpus() -> tuple[Gpu, ...]:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return ()
    query = [exe, "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"]
    try:
        out = subprocess.run(query, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return ()
    gpus = []
    for line in out.stdout.splitlines():
        name, _, mib = line.rpartition(",")
        if name and mib.strip().isdigit():
            gpus.append(Gpu(name.strip(), int(mib) * 1024 * 1024))
    return tuple(gpus)


def gpu_free_bytes() -> tuple[int, ...]:
    """Free memory of each NVIDIA GPU now, in nvidia-smi's order; ``()`` without one."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return ()
    query = [exe, "--query-gpu=memory.free", "--format=csv,noheader,nounits"]
    try:
        out = subprocess.run(query, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return ()
    lines = [line.strip() for line in out.stdout.splitlines() if line.strip()]
    if out.returncode != 0 or not all(line.isdigit() for line in lines):
        return ()
    return tuple(int(mib) * 1024 * 1024 for mib in lines)
