"""Importance matrices in llama.cpp's GGUF format: read, check and hand to the quantizer.

An imatrix file (``general.type = imatrix``) holds, for every matmul weight llama-imatrix saw,
``<tensor>.in_sum2`` (the sum of squared input activations per column, one row per expert) and
``<tensor>.counts`` (how many tokens reached each expert). The quantizer weighs each column's
rounding error by the mean, ``in_sum2 / counts``. ``quantizer_data`` computes that mean exactly as
llama-quantize's ``load_imatrix`` does (float32, an importance of 1 where an expert got no
tokens), so quantizing in-process with our data gives the same bytes as ``llama-quantize --imatrix``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from publisher import gguf_info
from publisher.errors import PublisherError
from publisher.runtimes import llama_cpp

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


class ImatrixError(PublisherError):
    """An importance matrix that cannot be computed, read, or used with this model."""


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
    # The tensor table alone: gguf-py's reader decodes the whole vocabulary first (seconds for SmolLM2).
    shapes = {t.name: list(t.shape) for t in gguf_info.tensor_table(model)}
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

    data: dict[str, Floats] = {}
    for name, rows in matrix.sums.items():
        counts = np.rint(matrix.counts[name]).astype(np.int64).astype(np.float32)
        mean = np.ones_like(rows)
        seen = counts > 0
        mean[seen] = rows[seen] / counts[seen][:, None]
        data[name] = mean.reshape(-1)
    for tensor in gguf_info.tensor_table(model):
        shape = list(tensor.shape)
        name = tensor.name
        if name.startswith("blk.") and name.endswith(".weight") and len(shape) >= 2 and name not in data:
            experts = shape[2] if len(shape) > 2 else 1
            data[name] = np.ones(shape[0] * experts, dtype=np.float32)
    return data


def quantizer_imatrix(matrix: Imatrix, data: dict[str, Floats], file_name: str) -> llama_cpp.QuantizerImatrix:
    """The quantizer's arrays for ``data``, with the four quantize.imatrix.* keys llama-quantize writes."""
    keys: list[tuple[str, str | int]] = [(KEY_FILE, file_name)]
    if matrix.datasets:
        keys.append((KEY_DATASET, matrix.datasets[0]))
    keys.append((KEY_ENTRIES, len(matrix.sums)))
    if matrix.chunk_count > 0:
        keys.append((KEY_CHUNKS, matrix.chunk_count))
    return llama_cpp.QuantizerImatrix(data, keys)
