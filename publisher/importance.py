"""Importance matrices in llama.cpp's GGUF format: locate the tools, read, check and hand to the quantizer.

An imatrix file (``general.type = imatrix``) holds, for every matmul weight llama-imatrix saw,
``<tensor>.in_sum2`` (the sum of squared input activations per column, one row per expert) and
``<tensor>.counts`` (how many tokens reached each expert). The quantizer weighs each column's
rounding error by the mean, ``in_sum2 / counts``. ``quantizer_data`` computes that mean exactly as
llama-quantize's ``load_imatrix`` does (float32, an importance of 1 where an expert got no
tokens), so quantizing in-process with our data gives the same bytes as ``llama-quantize --imatrix``.
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from publisher.errors import PublisherError

TOOLS_ENV = "PUBLISHER_LLAMA_TOOLS"
SUMS = ".in_sum2"
COUNTS = ".counts"
KEY_DATASETS = "imatrix.datasets"
KEY_CHUNK_COUNT = "imatrix.chunk_count"
KEY_CHUNK_SIZE = "imatrix.chunk_size"
# What llama-quantize writes into every file it makes with an imatrix (tools/quantize/quantize.cpp).
KEY_FILE = "quantize.imatrix.file"
KEY_DATASET = "quantize.imatrix.dataset"
KEY_ENTRIES = "quantize.imatrix.entries_count"
KEY_CHUNKS = "quantize.imatrix.chunks_count"
KV_STR_MAX = 127  # llama_model_kv_override.val_str holds 128 bytes with the terminator


class ImatrixError(PublisherError):
    """An importance matrix that cannot be computed, read, or used with this model."""


def tools_dir() -> Path:
    """Where ``make tools`` puts llama-imatrix and llama-quantize, keyed by llama-cpp-python's version."""
    override = os.environ.get(TOOLS_ENV)
    if override:
        return Path(override).expanduser()
    version = importlib.metadata.version("llama-cpp-python")
    return Path.home() / ".cache" / "publisher" / "llama-tools" / version


def tool(name: str) -> Path | None:
    """The built llama.cpp program ``name`` (llama-imatrix, llama-quantize), or ``None`` when not built."""
    path = tools_dir() / "bin" / name
    return path if path.is_file() and os.access(path, os.X_OK) else None


Floats = npt.NDArray[np.float32]


@dataclass
class Imatrix:
    """The contents of one imatrix GGUF."""

    path: Path
    sums: dict[str, Floats]  # name -> (experts, columns)
    counts: dict[str, Floats]  # name -> (experts,)
    datasets: list[str]
    chunk_count: int
    chunk_size: int

    @property
    def tokens(self) -> int:
        """Tokens the matrix was computed over (chunks x chunk size)."""
        return self.chunk_count * self.chunk_size

    def unrouted(self) -> dict[str, list[int]]:
        """Entries with experts that saw no token: name -> expert indexes."""
        found = {}
        for name, counts in self.counts.items():
            empty = [int(i) for i in np.flatnonzero(np.rint(counts) == 0)]
            if empty:
                found[name] = empty
        return found


def read_imatrix(path: Path) -> Imatrix:
    """Read and check an imatrix GGUF; ``ImatrixError`` says what is wrong in one line."""
    import gguf

    try:
        reader = gguf.GGUFReader(path)
    except (ValueError, OSError, IndexError) as err:
        raise ImatrixError(f"{path}: not a readable GGUF file ({err})") from None
    kind = _value(reader, "general.type")
    if kind != "imatrix":
        raise ImatrixError(f"{path}: not an importance matrix (general.type is {kind!r}, expected 'imatrix')")
    sums: dict[str, Floats] = {}
    counts: dict[str, Floats] = {}
    for tensor in reader.tensors:
        if tensor.tensor_type != gguf.GGMLQuantizationType.F32:
            raise ImatrixError(f"{path}: tensor {tensor.name} is {tensor.tensor_type.name}, expected F32")
        data = np.asarray(tensor.data, dtype=np.float32)
        if tensor.name.endswith(SUMS):
            sums[tensor.name.removesuffix(SUMS)] = data.reshape(-1, int(tensor.shape[0]))
        elif tensor.name.endswith(COUNTS):
            counts[tensor.name.removesuffix(COUNTS)] = data.reshape(-1)
    unpaired = sorted(set(sums) ^ set(counts))
    if unpaired:
        raise ImatrixError(f"{path}: {unpaired[0]} has sums without counts or counts without sums")
    for name, rows in sums.items():
        if rows.shape[0] != counts[name].shape[0]:
            raise ImatrixError(f"{path}: {name} has {rows.shape[0]} rows of sums but {counts[name].shape[0]} counts")
        if not np.isfinite(rows).all():
            raise ImatrixError(f"{path}: {name} holds values that are not finite numbers")
    if not sums:
        raise ImatrixError(f"{path}: the importance matrix has no entries")
    datasets = _value(reader, KEY_DATASETS)
    return Imatrix(
        path=path,
        sums=sums,
        counts=counts,
        datasets=[str(d) for d in datasets] if isinstance(datasets, list) else [],
        chunk_count=int(_value(reader, KEY_CHUNK_COUNT) or 0),
        chunk_size=int(_value(reader, KEY_CHUNK_SIZE) or 0),
    )


def _value(reader: Any, key: str) -> Any:
    item = reader.get_field(key)
    return None if item is None else item.contents()


@dataclass
class Coverage:
    """How an imatrix covers a model's matmul weights."""

    missing: list[str] = field(default_factory=list)  # blk.* weights with no entry at all
    unrouted: dict[str, list[int]] = field(default_factory=dict)  # entries with experts that saw no token

    def uncovered(self) -> list[str]:
        """One description per tensor the matrix says nothing (or nothing for some experts) about."""
        parts = [f"{name} (no data)" for name in self.missing]
        parts += [f"{name} (experts {', '.join(map(str, e))})" for name, e in sorted(self.unrouted.items())]
        return parts


def check_against_model(matrix: Imatrix, model: Path) -> Coverage:
    """Refuse a matrix made for another model; report the weights it does not cover.

    Every entry must name a tensor of ``model`` whose rows are as wide as the entry and whose
    expert count matches (llama.cpp's quantizer would abort on a mismatch half-way through).
    """
    import gguf

    reader = gguf.GGUFReader(model)
    shapes = {t.name: [int(n) for n in t.shape] for t in reader.tensors}
    for name, rows in sorted(matrix.sums.items()):
        shape = shapes.get(name)
        if shape is None:
            raise ImatrixError(
                f"{matrix.path}: made for another model: it has an entry for {name}, which this model lacks"
            )
        experts = shape[2] if len(shape) > 2 else 1
        if (rows.shape[1], rows.shape[0]) != (shape[0], experts):
            raise ImatrixError(
                f"{matrix.path}: made for another model: {name} has {rows.shape[1]} columns x {rows.shape[0]} "
                f"experts in the matrix but {shape[0]} x {experts} in the model"
            )
    weights = [n for n, s in shapes.items() if n.startswith("blk.") and n.endswith(".weight") and len(s) >= 2]
    return Coverage(missing=sorted(n for n in weights if n not in matrix.sums), unrouted=matrix.unrouted())


def quantizer_data(matrix: Imatrix, model: Path) -> dict[str, Floats]:
    """Per-column importance for every blk.* matmul weight of ``model``, as llama.cpp's quantizer takes it.

    The mean of the squared activations (``in_sum2 / counts`` in float32), 1 for experts that saw
    no token (as llama-quantize does), and 1 for every column of a weight the matrix does not
    cover at all: such a tensor is quantized as if every input column mattered equally, which
    also lets types that require importance data (IQ2_XS...) handle it.
    """
    import gguf

    data: dict[str, Floats] = {}
    for name, rows in matrix.sums.items():
        counts = np.rint(matrix.counts[name]).astype(np.int64).astype(np.float32)
        mean = np.ones_like(rows)
        seen = counts > 0
        mean[seen] = rows[seen] / counts[seen][:, None]
        data[name] = mean.reshape(-1)
    reader = gguf.GGUFReader(model)
    for tensor in reader.tensors:
        shape = [int(n) for n in tensor.shape]
        name = tensor.name
        if name.startswith("blk.") and name.endswith(".weight") and len(shape) >= 2 and name not in data:
            experts = shape[2] if len(shape) > 2 else 1
            data[name] = np.ones(shape[0] * experts, dtype=np.float32)
    return data


class QuantizerImatrix:
    """ctypes arrays for ``llama_model_quantize_params``: importance data and the four quantize.imatrix.* keys.

    Holds every buffer the C arrays point into; keep the object alive for the whole quantize call.
    """

    def __init__(self, matrix: Imatrix, data: dict[str, Floats], file_name: str) -> None:
        import llama_cpp

        self._buffers = [np.ascontiguousarray(v, dtype=np.float32) for v in data.values()]
        self._names = [name.encode() for name in data]
        self.entries = (llama_cpp.llama_model_imatrix_data * (len(data) + 1))()
        for slot, (name, buffer) in enumerate(zip(self._names, self._buffers, strict=True)):
            self.entries[slot].name = name
            self.entries[slot].data = buffer.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
            self.entries[slot].size = buffer.size
        self.entries[len(data)].name = None  # the terminator
        overrides: list[tuple[str, str | int]] = [(KEY_FILE, file_name)]
        if matrix.datasets:
            overrides.append((KEY_DATASET, matrix.datasets[0]))
        overrides.append((KEY_ENTRIES, len(matrix.sums)))
        if matrix.chunk_count > 0:
            overrides.append((KEY_CHUNKS, matrix.chunk_count))
        self.kv_overrides = (llama_cpp.llama_model_kv_override * (len(overrides) + 1))()
        for slot, (key, value) in enumerate(overrides):
            item = self.kv_overrides[slot]
            item.key = key.encode()
            union: Any = item.value  # a ctypes union; llama-cpp-python annotates it as the Python value
            if isinstance(value, str):
                item.tag = llama_cpp.LLAMA_KV_OVERRIDE_TYPE_STR
                union.val_str = value.encode()[:KV_STR_MAX]
            else:
                item.tag = llama_cpp.LLAMA_KV_OVERRIDE_TYPE_INT
                union.val_i64 = value
        self.kv_overrides[len(overrides)].key = b""  # the terminator

    def apply(self, params: Any) -> None:
        """Point ``params`` (llama_model_quantize_params) at the arrays."""
        params.imatrix = ctypes.cast(self.entries, ctypes.POINTER(type(self.entries[0])))
        params.kv_overrides = ctypes.cast(self.kv_overrides, ctypes.POINTER(type(self.kv_overrides[0])))
