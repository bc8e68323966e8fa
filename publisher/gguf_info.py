"""Facts read from a GGUF file: metadata values, tensor types and the real bits per weight.

Nominal bits per weight (``publisher.formats.gguf_quants``) describe a quant mix on an ideal model. The real
figure depends on the model: llama.cpp falls back to another block format for tensors whose rows
are not a multiple of the block size (SmolLM2's 576-wide tensors cannot hold 256-wide K-quant
super-blocks), and keeps norms in F32. ``bits_per_weight`` reads what the file actually holds.
"""

from __future__ import annotations

import hashlib
import mmap
import struct
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from publisher.errors import ManifestError


@dataclass(frozen=True)
class GGUFInfo:
    """A summary of one GGUF file."""

    path: Path
    architecture: str | None
    name: str | None
    file_type: int | None
    tensor_count: int
    total_elements: int
    total_tensor_bytes: int
    tensor_types: dict[str, int] = field(default_factory=dict)
    chat_template: str | None = None
    vocab_size: int | None = None

    @property
    def bits_per_weight(self) -> float:
        """Tensor bits over tensor elements, across every tensor in the file."""
        return self.total_tensor_bytes * 8 / self.total_elements if self.total_elements else 0.0


def _reader(path: Path) -> Any:
    import gguf

    try:
        return gguf.GGUFReader(path)
    except (ValueError, OSError, IndexError) as err:
        raise ManifestError(f"{path}: not a readable GGUF file ({err}); delete it and rebuild") from None


def field_value(reader: Any, key: str) -> Any:
    """A metadata value decoded to Python (str, int, float, bool or list), or ``None`` when absent."""
    item = reader.get_field(key)
    return None if item is None else item.contents()


def read_info(path: Path) -> GGUFInfo:
    """Read the header and tensor table of ``path`` (memory-mapped; tensor data is not read)."""
    reader = _reader(path)
    arch = field_value(reader, "general.architecture")
    types: Counter[str] = Counter()
    elements = 0
    nbytes = 0
    for tensor in reader.tensors:
        types[tensor.tensor_type.name] += 1
        elements += int(tensor.n_elements)
        nbytes += int(tensor.n_bytes)
    tokens = reader.get_field("tokenizer.ggml.tokens")
    return GGUFInfo(
        path=path,
        architecture=arch,
        name=field_value(reader, "general.name"),
        file_type=field_value(reader, "general.file_type"),
        tensor_count=len(reader.tensors),
        total_elements=elements,
        total_tensor_bytes=nbytes,
        tensor_types=dict(sorted(types.items())),
        chat_template=field_value(reader, "tokenizer.chat_template"),
        vocab_size=len(tokens.data) if tokens is not None else None,
    )


# Sizes of fixed-width GGUF metadata value types, by type id (8: string and 9: array are variable).
_SCALAR_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}


@dataclass(frozen=True)
class TensorEntry:
    """One row of a GGUF file's tensor table."""

    name: str
    type_name: str
    elements: int
    nbytes: int
    shape: tuple[int, ...] = ()  # as stored: the row width first, as gguf-py's ``ReaderTensor.shape``


def _value_end(data: Any, kind: int, pos: int) -> int:
    """Where a metadata value of type ``kind`` that starts at ``pos`` ends, without decoding it."""
    if kind in _SCALAR_SIZES:
        return pos + _SCALAR_SIZES[kind]
    if kind == 8:
        return pos + 8 + int(struct.unpack_from("<Q", data, pos)[0])
    if kind == 9:
        item, count = struct.unpack_from("<IQ", data, pos)
        pos += 12
        if item in _SCALAR_SIZES:
            return pos + int(count) * _SCALAR_SIZES[item]
        if item == 8:  # strings (vocabulary, merges): a flat loop, ~10x faster than recursing
            length = struct.Struct("<Q").unpack_from
            for _ in range(count):
                pos += 8 + int(length(data, pos)[0])
            return pos
        for _ in range(count):
            pos = _value_end(data, item, pos)
        return pos
    raise ValueError(f"unknown metadata type {kind}")


@contextmanager
def _metadata_walk(path: Path) -> Iterator[tuple[Any, int, Iterator[tuple[str, int, int]]]]:
    """The mapped file, its tensor count, and its metadata entries as (key, start, end) byte spans.

    ``gguf.GGUFReader`` decodes every metadata value, which for a vocabulary of tens of thousands of
    tokens takes seconds; this skips over values without decoding them. The entries must be read
    in full before the tensor table that follows them.
    """

    def bad(why: str) -> ManifestError:
        return ManifestError(f"{path}: not a readable GGUF file ({why}); delete it and rebuild")

    if path.stat().st_size < 24:
        raise bad("too short")
    with path.open("rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
        if data[:4] != b"GGUF":
            raise bad("no GGUF magic")
        version, n_tensors, n_kv = struct.unpack_from("<IQQ", data, 4)
        if version < 2 or version > 0xFFFF:
            raise bad(f"GGUF version {version} (big-endian or too old)")

        def entries() -> Iterator[tuple[str, int, int]]:
            pos = 24
            for _ in range(n_kv):
                (length,) = struct.unpack_from("<Q", data, pos)
                key = data[pos + 8 : pos + 8 + length].decode("utf-8", errors="replace")
                start = pos
                pos += 8 + length
                (kind,) = struct.unpack_from("<I", data, pos)
                pos = _value_end(data, kind, pos + 4)
                yield key, start, pos

        try:
            yield data, int(n_tensors), entries()
        except (struct.error, ValueError, KeyError) as err:
            raise bad(str(err) or type(err).__name__) from None


def tensor_table(path: Path) -> list[TensorEntry]:
    """The tensor table of ``path``, read by skipping over the metadata without decoding it."""
    import gguf

    with _metadata_walk(path) as (data, n_tensors, entries):
        pos = 24
        for entry in entries:
            pos = entry[2]
        found = []
        for _ in range(n_tensors):
            (length,) = struct.unpack_from("<Q", data, pos)
            name = data[pos + 8 : pos + 8 + length].decode("utf-8", errors="replace")
            pos += 8 + length
            (n_dims,) = struct.unpack_from("<I", data, pos)
            dims = struct.unpack_from(f"<{n_dims}Q", data, pos + 4)
            pos += 4 + 8 * n_dims
            (raw_type,) = struct.unpack_from("<I", data, pos)
            pos += 12  # type and data offset
            qtype = gguf.GGMLQuantizationType(raw_type)
            block, type_size = gguf.GGML_QUANT_SIZES[qtype]
            elements = 1
            for dim in dims:
                elements *= dim
            found.append(TensorEntry(name, qtype.name, elements, elements * type_size // block, tuple(dims)))
    return found


# What llama.cpp builds a vocabulary from: every tokenizer.* entry, and the architecture (some
# tokenizer behaviour is chosen by it).
VOCABULARY_KEYS = ("tokenizer.", "general.architecture")


def vocabulary_sha256(path: Path) -> str:
    """sha256 of the raw bytes of the metadata entries llama.cpp builds the vocabulary from, in file order.

    Two files with the same digest tokenize alike; a quant of a build carries its reference's
    vocabulary unchanged, so every file of a build shares one digest.
    """
    digest = hashlib.sha256()
    with _metadata_walk(path) as (data, _, entries):
        for key, start, end in entries:
            if key.startswith(VOCABULARY_KEYS):
                digest.update(data[start:end])
    return digest.hexdigest()


def bits_per_weight(path: Path) -> float:
    """The real bits per weight of a GGUF file (all tensor bits over all tensor elements), to 4 decimals."""
    table = tensor_table(path)
    elements = sum(t.elements for t in table)
    return round(sum(t.nbytes for t in table) * 8 / elements, 4) if elements else 0.0


def string_array(path: Path, key: str) -> list[str] | None:
    """One metadata array of strings (``tokenizer.ggml.merges``), decoded without the rest; None when absent."""
    with _metadata_walk(path) as (data, _, entries):
        for name, start, _end in entries:
            if name != key:
                continue
            pos = start + 8 + len(name.encode("utf-8"))
            kind, item, count = struct.unpack_from("<IIQ", data, pos)
            if kind != 9 or item != 8:
                return None
            pos += 16
            found = []
            length = struct.Struct("<Q").unpack_from
            for _ in range(count):
                (size,) = length(data, pos)
                found.append(data[pos + 8 : pos + 8 + size].decode("utf-8", errors="replace"))
                pos += 8 + size
            return found
    return None


def string_value(path: Path, key: str) -> str | None:
    """One string metadata value (``tokenizer.ggml.model``), read without decoding the rest; None when absent."""
    with _metadata_walk(path) as (data, _, entries):
        for name, start, end in entries:
            if name != key:
                continue
            pos = start + 8 + len(name.encode("utf-8"))
            (kind,) = struct.unpack_from("<I", data, pos)
            return bytes(data[pos + 12 : end]).decode("utf-8", errors="replace") if kind == 8 else None
    return None


def metadata(path: Path, keys: list[str]) -> dict[str, Any]:
    """Selected metadata values of ``path``; absent keys map to ``None``."""
    reader = _reader(path)
    return {key: field_value(reader, key) for key in keys}
