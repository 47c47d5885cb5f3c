"""A GGUF file's header: metadata and the tensor-info table, never the weights.

Reads the magic, version, key/value metadata and each tensor's name, shape and ggml
type, and stops at the end of the tensor-info table. Every count and length is
checked against a hard limit before anything is allocated, so a hostile file gets a
:class:`GGUFHeaderError` instead of a multi-gigabyte allocation. Arrays longer than
``SMALL_ARRAY`` (token lists, merges) are skipped and kept only as their length.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

MAGIC = b"GGUF"
MAX_TENSORS = 65_536
MAX_KV = 65_536
MAX_KEY_BYTES = 65_535
MAX_STRING_BYTES = 16 * 2**20
MAX_ARRAY_LENGTH = 2**24
MAX_DIMS = 4
MAX_DEPTH = 2
SMALL_ARRAY = 4096

# ggml type id: (name, weights per block, bytes per block); types stored in files only
GGML_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("F32", 1, 4), 1: ("F16", 1, 2), 2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22), 7: ("Q5_1", 32, 24), 8: ("Q8_0", 32, 34),
    10: ("Q2_K", 256, 84), 11: ("Q3_K", 256, 110), 12: ("Q4_K", 256, 144),
    13: ("Q5_K", 256, 176), 14: ("Q6_K", 256, 210), 15: ("Q8_K", 256, 292),
    16: ("IQ2_XXS", 256, 66), 17: ("IQ2_XS", 256, 74), 18: ("IQ3_XXS", 256, 98),
    19: ("IQ1_S", 256, 50), 20: ("IQ4_NL", 32, 18), 21: ("IQ3_S", 256, 110),
    22: ("IQ2_S", 256, 82), 23: ("IQ4_XS", 256, 136), 24: ("I8", 1, 1), 25: ("I16", 1, 2),
    26: ("I32", 1, 4), 27: ("I64", 1, 8), 28: ("F64", 1, 8), 29: ("IQ1_M", 256, 56),
    30: ("BF16", 1, 2), 34: ("TQ1_0", 256, 54), 35: ("TQ2_0", 256, 66),
    39: ("MXFP4", 32, 17),
}  # fmt: skip

# GGUF value type id: struct format of a fixed-size scalar
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
            10: "<Q", 11: "<q", 12: "<d"}  # fmt: skip
_STRING, _ARRAY = 8, 9
_LAYER = re.compile(r"blk\.(\d+)\.")


class GGUFHeaderError(ValueError):
    """The file is not a GGUF file, is truncated, or exceeds a reader limit."""


@dataclass(frozen=True, slots=True)
class SkippedArray:
    """An array too long to keep (a token list): only its element type and length."""

    element_type: int
    length: int


@dataclass(frozen=True, slots=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    ggml_type: int
    offset: int

    @property
    def n_elements(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def type_name(self) -> str:
        return GGML_TYPES[self.ggml_type][0]

    @property
    def nbytes(self) -> int:
        _, block, size = GGML_TYPES[self.ggml_type]
        return self.n_elements // block * size

    @property
    def layer(self) -> int | None:
        """The repeating block (``blk.N.``) this tensor belongs to, if any."""
        match = _LAYER.match(self.name)
        return int(match.group(1)) if match else None


@dataclass(frozen=True, slots=True)
class GGUFHeader:
    version: int
    metadata: dict[str, Any]
    tensors: tuple[TensorInfo, ...]
    header_bytes: int  # where the tensor-info table ends (data starts after alignment)

    @property
    def architecture(self) -> str:
        arch = self.metadata.get("general.architecture")
        return arch if isinstance(arch, str) else ""

    def arch_int(self, key: str) -> int | None:
        """``<arch>.<key>`` as an int; a per-layer array gives its largest value."""
        value = self.metadata.get(f"{self.architecture}.{key}")
        if isinstance(value, tuple) and value and all(isinstance(v, int) for v in value):
            return int(max(value))
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        return None

    @property
    def tensor_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)


def read_header(path: Path) -> GGUFHeader:
    """Read the header of the GGUF file at ``path``. Raises :class:`GGUFHeaderError`."""
    try:
        with path.open("rb") as f:
            return _Reader(f).header()
    except OSError as exc:
        raise GGUFHeaderError(f"cannot read {path}: {exc.strerror}") from exc


class _Reader:
    def __init__(self, f: BinaryIO) -> None:
        self._f = f
        self._size = f.seek(0, 2)
        f.seek(0)

    def header(self) -> GGUFHeader:
        magic = self._f.read(4)
        if magic != MAGIC:
            raise GGUFHeaderError(f"not a GGUF file (magic {magic!r})")
        version = self._unpack("<I")
        if version not in (2, 3):
            raise GGUFHeaderError(f"unsupported GGUF version {version}")
        n_tensors = self._count("<Q", MAX_TENSORS, "tensor count")
        n_kv = self._count("<Q", MAX_KV, "metadata key count")
        metadata = {}
        for _ in range(n_kv):
            key = self._string(MAX_KEY_BYTES, "metadata key")
            metadata[key] = self._value(self._unpack("<I"), depth=0)
        tensors = tuple(self._tensor() for _ in range(n_tensors))
        for t in tensors:
            if t.ggml_type not in GGML_TYPES:
                raise GGUFHeaderError(f"tensor {t.name!r}: unknown ggml type {t.ggml_type}")
        return GGUFHeader(version, metadata, tensors, self._f.tell())

    def _read(self, n: int) -> bytes:
        data = self._f.read(n)
        if len(data) != n:
            raise GGUFHeaderError("truncated GGUF header")
        return data

    def _unpack(self, fmt: str) -> Any:
        return struct.unpack(fmt, self._read(struct.calcsize(fmt)))[0]

    def _count(self, fmt: str, limit: int, what: str) -> int:
        n: int = self._unpack(fmt)
        if n > limit:
            raise GGUFHeaderError(f"{what} {n} exceeds the limit of {limit}")
        return n

    def _string(self, limit: int, what: str = "string") -> str:
        n = self._count("<Q", limit, f"{what} length")
        return self._read(n).decode("utf-8", "replace")

    def _value(self, vtype: int, depth: int) -> Any:
        if vtype in _SCALARS:
            return self._unpack(_SCALARS[vtype])
        if vtype == _STRING:
            return self._string(MAX_STRING_BYTES)
        if vtype == _ARRAY:
            return self._array(depth + 1)
        raise GGUFHeaderError(f"unknown metadata value type {vtype}")

    def _array(self, depth: int) -> tuple[Any, ...] | SkippedArray:
        if depth > MAX_DEPTH:
            raise GGUFHeaderError(f"metadata arrays nested deeper than {MAX_DEPTH}")
        etype: int = self._unpack("<I")
        n = self._count("<Q", MAX_ARRAY_LENGTH, "array length")
        if n <= SMALL_ARRAY:
            return tuple(self._value(etype, depth) for _ in range(n))
        if etype in _SCALARS:
            self._skip(n * struct.calcsize(_SCALARS[etype]))
        else:
            for _ in range(n):
                self._skip_value(etype, depth)
        return SkippedArray(etype, n)

    def _skip_value(self, vtype: int, depth: int) -> None:
        if vtype == _STRING:
            self._skip(self._count("<Q", MAX_STRING_BYTES, "string length"))
        else:
            self._value(vtype, depth)

    def _skip(self, n: int) -> None:
        target = self._f.tell() + n
        if target > self._size:
            raise GGUFHeaderError("truncated GGUF header")
        self._f.seek(target)

    def _tensor(self) -> TensorInfo:
        name = self._string(MAX_KEY_BYTES, "tensor name")
        n_dims = self._count("<I", MAX_DIMS, f"tensor {name!r} dimension count")
        shape = tuple(self._count("<Q", 2**50, f"tensor {name!r} dimension") for _ in range(n_dims))
        ggml_type = self._unpack("<I")
        offset = self._unpack("<Q")
        return TensorInfo(name, shape, ggml_type, offset)
