"""llama.cpp's RPC backend without a worker: the address policy of ``hearth rpc-worker``,
``rpc_workers`` in models.toml, and how a model's devices and plan follow its workers."""

from __future__ import annotations

import ctypes
from pathlib import Path

import pytest

from backends import hardware
from backends.llamacpp import gpu as llamacpp_gpu
from backends.llamacpp import rpc
from server.cli.main import main
from server.config import ConfigError, load_models_file
from tests.gguf_files import llama_header
from tests.unit import test_offload as offload_tests

GB = 10**9


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "10.0.0.2", "172.16.4.1", "192.168.1.5", "169.254.3.3"]
)
def test_a_worker_binds_loopback_private_and_link_local_addresses(host: str) -> None:
    rpc.check_bind_address(host, allow_public=False)


@pytest.mark.parametrize(
    ("host", "why"),
    [
        ("8.8.8.8", "a public address"),
        ("100.64.0.1", "a public address"),  # carrier-grade NAT: not this network's own
        ("0.0.0.0", "every interface"),
    ],
)
def test_a_public_address_needs_allow_public(host: str, why: str) -> None:
    with pytest.raises(ValueError, match=f"{why}; the RPC protocol has no authentication"):
        rpc.check_bind_address(host, allow_public=False)
    rpc.check_bind_address(host, allow_public=True)


@pytest.mark.parametrize("host", ["localhost", "gpu-box", "::1", "10.0.0"])
def test_a_worker_binds_an_ipv4_address_only(host: str) -> None:
    with pytest.raises(ValueError, match="must be an IPv4 address"):
        rpc.check_bind_address(host, allow_public=True)


def test_the_command_refuses_a_public_address_before_serving(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["rpc-worker", "--host", "0.0.0.0"]) == 2
    err = capsys.readouterr().err
    assert "every interface" in err and "--allow-public" in err
    assert main(["rpc-worker", "--port", "70000"]) == 2
    assert "--port 70000 is not a port" in capsys.readouterr().err


def test_the_help_says_there_is_no_authentication(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["rpc-worker", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "no authentication" in out and "private network" in out and "--allow-public" in out


@pytest.mark.parametrize(
    ("text", "expected"),
    [("10.0.0.2:50052", ("10.0.0.2", 50052)), ("gpu-box:1", ("gpu-box", 1))],
)
def test_split_endpoint(text: str, expected: tuple[str, int]) -> None:
    assert rpc.split_endpoint(text) == expected


@pytest.mark.parametrize(
    "text", ["10.0.0.2", "10.0.0.2:", ":50052", "10.0.0.2:0", "10.0.0.2:65536", "h:x", "[::1]:5"]
)
def test_split_endpoint_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        rpc.split_endpoint(text)


def _models(tmp_path: Path, line: str) -> Path:
    path = tmp_path / "models.toml"
    path.write_text(f'[models.m]\npath = "m.gguf"\n{line}\n')
    return path


def test_rpc_workers_in_models_toml(tmp_path: Path) -> None:
    path = _models(tmp_path, 'rpc_workers = ["10.0.0.2:50052", "gpu-box:50053"]')
    model = load_models_file(path, tmp_path).models["m"]
    assert model.rpc_workers == ("10.0.0.2:50052", "gpu-box:50053")
    plain = load_models_file(_models(tmp_path, ""), tmp_path).models["m"]
    assert plain.rpc_workers == ()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ('"10.0.0.2:50052"', "a list of strings"),
        ('["10.0.0.2"]', "not HOST:PORT"),
        ('["[fd00::2]:50052"]', "IPv4 only"),
        ('["a:1", "a:1"]', "each named once"),
        ("[" + ", ".join(f'"h:{p}"' for p in range(1, 18)) + "]", "at most 16"),
    ],
)
def test_rpc_workers_mistakes_name_the_key(tmp_path: Path, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=f"model 'm': key 'rpc_workers' .*{message}"):
        load_models_file(_models(tmp_path, f"rpc_workers = {value}"), tmp_path)


class FakeParams(offload_tests.FakeParams):
    devices = None


class RpcBuild(offload_tests.FakeLlama):
    """llama_cpp as a CPU build with the RPC backend answers (every scripts/install build):
    llama.cpp says it "supports GPU offload" because of RPC alone."""

    def __init__(self) -> None:
        super().__init__(gpu=True)

    def llama_supports_rpc(self) -> bool:
        return True


_request = offload_tests.load_request


def test_a_cpu_build_with_rpc_is_no_gpu_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rpc, "local_gpus", list)
    monkeypatch.setattr(hardware, "gpu_free_bytes", lambda: (80 * GB,))  # a CPU build on a GPU box
    params = FakeParams()
    placed = llamacpp_gpu.apply_model(RpcBuild(), params, _request(tmp_path / "m.gguf"))
    assert params.n_gpu_layers == 0 and placed.plan is None and params.devices is None
    assert not llamacpp_gpu.gpu_offload(RpcBuild())


def test_workers_memory_is_planned_and_their_devices_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two workers of 12 GB each hold part of a 70B model, as a 24 GB GPU would; the
    devices list handed to llama.cpp is the workers' (NULL-terminated)."""
    path = llama_header(tmp_path / "70b.gguf", "70b")
    monkeypatch.setattr(rpc, "local_gpus", list)
    devices = (ctypes.c_void_p * 3)(0x1000, 0x2000, None)
    attached = rpc.Attached(("RPC0", "RPC1"), (12 * GB, 12 * GB), devices)
    seen: list[tuple[tuple[str, ...], str]] = []

    def attach(workers: tuple[str, ...], model: str) -> rpc.Attached:
        seen.append((workers, model))
        return attached

    monkeypatch.setattr(rpc, "attach", attach)
    workers = ("10.0.0.2:50052", "10.0.0.3:50052")
    params = FakeParams()
    placed = llamacpp_gpu.apply_model(RpcBuild(), params, _request(path, rpc_workers=workers))
    assert seen == [(workers, "m")]
    assert placed.plan is not None and placed.devices is attached
    assert 0 < params.n_gpu_layers == placed.plan.layers_on_gpu < 80
    assert placed.plan.budget_bytes == 24 * GB - 512 * 2**20
    assert params.devices == ctypes.addressof(devices)
    more = FakeParams()
    monkeypatch.setattr(rpc, "attach", lambda w, m: rpc.Attached(("RPC0",), (200 * GB,), devices))
    llamacpp_gpu.apply_model(RpcBuild(), more, _request(path, rpc_workers=workers[:1]))
    assert more.n_gpu_layers == 81  # every layer and the output on the worker
