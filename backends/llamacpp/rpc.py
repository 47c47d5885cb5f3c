"""llama.cpp's RPC backend: a model's layers on other machines' memory.

A worker (``hearth rpc-worker``) runs ggml's RPC server in-process; a model whose
models.toml lists ``rpc_workers`` gets each worker's devices in its ``devices`` list,
ahead of the local GPUs (llama.cpp's own order for ``--rpc``: the layers nearest the
input go furthest away, so the activations cross the network once per boundary). The
devices are created for that model only and never registered with ggml, so a model
without workers in the same process never sees them.

The protocol has no authentication and no encryption: whoever reaches a worker's port
can read and write its memory and run graphs on it. Keep workers on a private network.

Everything here is ctypes over the ggml library that llama-cpp-python ships; nothing is
imported from llama_cpp until a function is called.
"""

from __future__ import annotations

import ctypes
import ipaddress
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, NoReturn

from backends.base import ModelLoadError

DEFAULT_PORT = 50052  # llama.cpp's rpc-server default
MAX_WORKERS = 16  # GGML_RPC_MAX_SERVERS
CONNECT_TIMEOUT_S = 5.0
_CPU, _GPU, _IGPU = 0, 1, 2  # enum ggml_backend_dev_type


def split_endpoint(text: str) -> tuple[str, int]:
    """``"10.0.0.2:50052"`` or ``"gpu-box:50052"`` as (host, port); ggml's RPC speaks IPv4
    only. Raises ValueError."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"not HOST:PORT: {text!r}")
    if ":" in host or host.startswith("["):
        raise ValueError(f"llama.cpp's RPC backend speaks IPv4 only, not {text!r}")
    return host, int(port)


def check_bind_address(host: str, *, allow_public: bool) -> None:
    """A worker binds an IPv4 address (ggml takes no name): a loopback, private (RFC 1918)
    or link-local one, or with ``allow_public`` any other, including 0.0.0.0 (every
    interface). Raises ValueError saying why not."""
    try:
        address = ipaddress.IPv4Address(host)
    except ValueError:
        raise ValueError(f"--host must be an IPv4 address such as 10.0.0.2, not {host!r}") from None
    private = address.is_loopback or address.is_private or address.is_link_local
    if (address.is_unspecified or not private) and not allow_public:
        where = "every interface" if address.is_unspecified else "a public address"
        raise ValueError(
            f"{host} is {where}; the RPC protocol has no authentication, so anyone who reaches "
            "the port can use this machine's memory and compute. Bind a private address, or "
            "pass --allow-public behind a firewall"
        )


@dataclass(frozen=True, slots=True)
class Attached:
    """The devices a model is offered, workers' first, and each one's free bytes.
    ``array`` is the NULL-terminated list for ``llama_model_params.devices``; it must
    outlive the model load."""

    names: tuple[str, ...]
    free: tuple[int, ...]
    array: Any


def attach(workers: Sequence[str], model: str) -> Attached:
    """Connect to each worker and return its devices with the local GPUs after them.

    A worker that does not answer is a :class:`ModelLoadError` naming it, found before
    ggml connects: ggml aborts the process on a failed connection.
    """
    lib = _ggml()
    add_server = _proc(lib, "ggml_backend_rpc_add_server", ctypes.c_void_p, ctypes.c_char_p)
    devices: list[int] = []
    for worker in workers:
        _probe(worker, model)
        reg = add_server(worker.encode())
        count = lib.ggml_backend_reg_dev_count(reg) if reg else 0
        if not count:
            raise ModelLoadError(f"model {model!r}: RPC worker {worker} offers no device")
        devices += [lib.ggml_backend_reg_dev_get(reg, i) for i in range(count)]
    devices += local_gpus()
    array = (ctypes.c_void_p * (len(devices) + 1))(*devices, None)
    names = tuple(lib.ggml_backend_dev_name(d).decode() for d in devices)
    return Attached(names, tuple(device_memory(d)[0] for d in devices), array)


def local_gpus() -> list[int]:
    """This build's GPU devices here (integrated ones where there is no discrete one), as
    llama.cpp picks them by default; none on a CPU build."""
    lib = _ggml()
    devices = [lib.ggml_backend_dev_get(i) for i in range(lib.ggml_backend_dev_count())]
    gpus = [d for d in devices if lib.ggml_backend_dev_type(d) == _GPU]
    return gpus or [d for d in devices if lib.ggml_backend_dev_type(d) == _IGPU][:1]


def device_memory(device: int) -> tuple[int, int]:
    """A device's (free, total) bytes; for a worker's, as the worker reports them."""
    free, total = ctypes.c_size_t(), ctypes.c_size_t()
    _ggml().ggml_backend_dev_memory(device, ctypes.byref(free), ctypes.byref(total))
    return free.value, total.value


def serve(endpoint: str, threads: int) -> NoReturn:
    """Run ggml's RPC server on ``endpoint`` (HOST:PORT) with this machine's GPUs, or
    its CPU, until the process is killed; the server accepts one client at a time.
    Raises OSError when it cannot run (the address is taken or not local)."""
    lib = _ggml()
    start = _proc(
        lib, "ggml_backend_rpc_start_server", None,
        ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_void_p,
    )  # fmt: skip
    devices = local_gpus() or [lib.ggml_backend_dev_by_type(_CPU)]
    array = (ctypes.c_void_p * len(devices))(*devices)
    start(endpoint.encode(), None, threads, len(devices), array)
    raise OSError(f"the RPC server on {endpoint} stopped (is the address in use?)")


def _probe(worker: str, model: str) -> None:
    try:
        host, port = split_endpoint(worker)
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S):
            pass
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"model {model!r}: RPC worker {worker} does not answer: {exc}"
        ) from exc


def _proc(lib: Any, name: str, restype: Any, *argtypes: Any) -> Any:
    reg = lib.ggml_backend_reg_by_name(b"RPC")
    address = lib.ggml_backend_reg_get_proc_address(reg, name.encode()) if reg else None
    if not address:
        raise ModelLoadError(
            "this llama-cpp-python was built without llama.cpp's RPC backend; rebuild it with "
            "scripts/install (HEARTH_LLAMA_RPC unset)"
        )
    return ctypes.CFUNCTYPE(restype, *argtypes)(address)


@cache
def _ggml() -> Any:
    from llama_cpp._ggml import libggml

    vp, size = ctypes.c_void_p, ctypes.c_size_t
    signatures: dict[str, tuple[Any, list[Any]]] = {
        "ggml_backend_reg_by_name": (vp, [ctypes.c_char_p]),
        "ggml_backend_reg_get_proc_address": (vp, [vp, ctypes.c_char_p]),
        "ggml_backend_reg_dev_count": (size, [vp]),
        "ggml_backend_reg_dev_get": (vp, [vp, size]),
        "ggml_backend_dev_count": (size, []),
        "ggml_backend_dev_get": (vp, [size]),
        "ggml_backend_dev_by_type": (vp, [ctypes.c_int]),
        "ggml_backend_dev_type": (ctypes.c_int, [vp]),
        "ggml_backend_dev_name": (ctypes.c_char_p, [vp]),
        "ggml_backend_dev_memory": (None, [vp, ctypes.POINTER(size), ctypes.POINTER(size)]),
    }
    for name, (restype, argtypes) in signatures.items():
        function = getattr(libggml, name)
        function.restype, function.argtypes = restype, argtypes
    return libggml
