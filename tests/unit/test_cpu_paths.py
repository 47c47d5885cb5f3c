"""llama.cpp's CPU paths: the weight_repack rule, the SIGILL guard and the build key."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from backends.llamacpp import cpu

ROOT = Path(__file__).resolve().parents[2]
AMX_BUILD = cpu.build_features(
    "CPU : SSE3 = 1 | AVX = 1 | AVX2 = 1 | AVX512 = 1 | AVX512_VNNI = 1 | AMX_INT8 = 1 | "
    "LLAMAFILE = 1 | REPACK = 1 | "
)
NO_AMX_BUILD = AMX_BUILD - {"AMX_INT8"}
SAPPHIRE = frozenset({"pni", "avx", "avx2", "avx512f", "avx512_vnni", "amx_int8", "amx_tile"})
ZEN4 = SAPPHIRE - {"amx_int8", "amx_tile"}


def test_build_features_are_read_from_system_info() -> None:
    assert {"AVX2", "AMX_INT8", "REPACK"} <= AMX_BUILD
    assert "SSSE3" not in AMX_BUILD  # not listed as = 1


def test_an_amx_build_on_an_amx_cpu_loads_without_extra_buffer_types() -> None:
    choice = cpu.choose(None, AMX_BUILD, SAPPHIRE)
    assert not choice.enabled
    assert "20824" in choice.reason and "scripts/install" in choice.reason


def test_the_same_build_without_amx_on_the_cpu_repacks() -> None:
    assert cpu.choose(None, AMX_BUILD, ZEN4).enabled


def test_a_build_without_amx_repacks_on_an_amx_cpu_and_says_why() -> None:
    choice = cpu.choose(None, NO_AMX_BUILD, SAPPHIRE)
    assert choice.enabled
    assert "REPACK" in choice.reason and "leaves out AMX" in choice.reason


@pytest.mark.parametrize("setting", [True, False])
def test_models_toml_overrides_the_rule(setting: bool) -> None:
    choice = cpu.choose(setting, AMX_BUILD, SAPPHIRE)
    assert choice.enabled is setting
    assert f"weight_repack = {str(setting).lower()}" in choice.reason
    assert ("crashes" in choice.reason) is setting  # forcing AMX on is warned about


def test_a_build_for_another_cpu_is_named_by_what_this_one_lacks() -> None:
    assert cpu.missing(NO_AMX_BUILD, frozenset({"pni", "avx", "avx2"})) == [
        "AVX512",
        "AVX512_VNNI",
    ]
    assert cpu.missing(NO_AMX_BUILD, SAPPHIRE) == []
    assert cpu.missing(AMX_BUILD, frozenset()) == []  # flags unknown: no guess


def test_cpu_flags_read_x86_and_arm_cpuinfo(tmp_path: Path) -> None:
    x86 = tmp_path / "x86"
    x86.write_text("processor\t: 0\nflags\t\t: fpu avx2 amx_int8\n\nflags\t\t: other\n")
    assert cpu.cpu_flags(x86) == {"fpu", "avx2", "amx_int8"}
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd asimddp i8mm\n")
    assert "i8mm" in cpu.cpu_flags(arm)
    assert cpu.cpu_flags(tmp_path / "absent") == frozenset()


def _build_key(cpuinfo: Path, **env: str) -> tuple[str, str]:
    script = (
        f". {ROOT / 'scripts/llama-cpp-build.sh'}; "
        'printf "%s\\n%s" "$LLAMA_BUILD_KEY" "$LLAMA_CFLAGS"'
    )
    base = {"PATH": "/usr/bin:/bin", "LLAMA_CPP_VERSION": "0.3.36", "LLAMA_CPUINFO": str(cpuinfo)}
    out = subprocess.run(
        ["bash", "-c", script], env=base | env, capture_output=True, text=True, check=True
    ).stdout
    key, _, flags = out.partition("\n")
    return key, flags


def test_the_wheel_cache_key_changes_with_the_cpu_and_the_build_flags(tmp_path: Path) -> None:
    amx, zen = tmp_path / "amx", tmp_path / "zen"
    amx.write_text("flags\t: " + " ".join(sorted(SAPPHIRE)) + "\n")
    zen.write_text("flags\t: " + " ".join(sorted(ZEN4)) + "\n")
    key_amx, cflags = _build_key(amx)
    assert key_amx == _build_key(amx)[0]  # stable
    assert key_amx != _build_key(zen)[0]  # another CPU: another wheel
    assert key_amx != _build_key(amx, CMAKE_ARGS="-DGGML_CUDA=on")[0]
    assert key_amx != _build_key(amx, HEARTH_LLAMA_AMX="1")[0]
    if subprocess.run(["uname", "-m"], capture_output=True, text=True).stdout.strip() == "x86_64":
        assert "-mno-amx-int8" in cflags


def test_gcc_leaves_amx_out_of_a_native_build_with_those_flags() -> None:
    """The flags scripts/install adds before llama.cpp's own -march=native."""
    if subprocess.run(["uname", "-m"], capture_output=True, text=True).stdout.strip() != "x86_64":
        pytest.skip("AMX is x86-64 only")
    flags = ["-mno-amx-tile", "-mno-amx-int8", "-mno-amx-bf16"]
    macros = subprocess.run(
        ["gcc", *flags, "-march=native", "-dM", "-E", "-"],
        input="",
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "__AMX_INT8__" not in macros and "__AMX_TILE__" not in macros
