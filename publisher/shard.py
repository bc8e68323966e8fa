"""Split a GGUF file that is too large for one upload to a target into shards llama.cpp loads directly.

The layout is the one llama.cpp's ``llama-gguf-split`` writes: ``<stem>-00001-of-0000N.gguf`` ...,
each shard a complete GGUF file; the first carries all the metadata, and every shard has the
``split.no`` (u16, from 0), ``split.count`` (u16) and ``split.tensors.count`` (i32) keys. Tensors
are never cut: a shard closes when the next tensor would take it over the limit. Pointing llama.cpp
at the first shard loads them all (it finds the others by name).

The gguf package's reader memory-maps the source and its writer streams tensors out, so memory
use stays small for files of any size. Shards go to ``shards/<sha256[:12]>/`` under the build
folder, named for the file they came from, with a ``shards.json`` of their sizes and sha256; a
split that fails part-way leaves nothing behind.
"""

from __future__ import annotations

import json
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from publisher.errors import PublishError
from publisher.manifest import Artifact, sha256_file, write_text_atomic

SHARDS_DIR = "shards"
SHARDS_INDEX = "shards.json"
SPLIT_KEYS = ("split.no", "split.count", "split.tensors.count")


@dataclass(frozen=True)
class Shard:
    """One written shard: its path relative to the build folder, size and sha256."""

    path: str
    size: int
    sha256: str


def shard_name(filename: str, index: int, count: int) -> str:
    """llama.cpp's shard name: ``x.Q4_K_M.gguf`` -> ``x.Q4_K_M-00001-of-00003.gguf`` (``index`` from 1)."""
    return f"{filename.removesuffix('.gguf')}-{index:05d}-of-{count:05d}.gguf"


def _reader(path: Path) -> Any:
    from gguf import GGUFReader

    try:
        return GGUFReader(path)
    except (ValueError, OSError) as err:
        raise PublishError(f"{path}: not a readable GGUF file ({err}); rebuild it") from None


def _tensor_budget(reader: Any, max_bytes: int) -> int:
    """Tensor bytes one shard may hold so that, with header, metadata and padding, it stays under ``max_bytes``."""
    alignment = _alignment(reader)
    overhead = int(reader.data_offset) + alignment * (len(reader.tensors) + 1)
    return max_bytes - overhead


def _alignment(reader: Any) -> int:
    field = reader.get_field("general.alignment")
    return int(field.contents()) if field is not None else 32


def plan_groups(path: Path, max_bytes: int) -> list[list[str]]:
    """The tensor names each shard will hold (one group when the file needs no split)."""
    reader = _reader(path)
    budget = _tensor_budget(reader, max_bytes)
    groups: list[list[str]] = [[]]
    used = 0
    for tensor in reader.tensors:
        nbytes = int(tensor.n_bytes)
        if nbytes > budget:
            raise PublishError(
                f"{path.name}: tensor {tensor.name} is {nbytes} bytes, more than a {max_bytes}-byte shard can hold"
            )
        if groups[-1] and used + nbytes > budget:
            groups.append([])
            used = 0
        groups[-1].append(str(tensor.name))
        used += nbytes
    return groups


def split_gguf(source: Path, dest_dir: Path, max_bytes: int) -> list[Path]:
    """Write ``source`` as shards of at most ``max_bytes`` each into ``dest_dir``; return them in order."""
    from gguf import GGUFValueType, GGUFWriter

    reader = _reader(source)
    budget = _tensor_budget(reader, max_bytes)
    if budget <= 0:
        raise PublishError(f"{source.name}: its metadata alone exceeds the {max_bytes}-byte shard limit")
    plan_groups(source, max_bytes)  # refuses a tensor no shard can hold before anything is written
    arch_field = reader.get_field("general.architecture")
    arch = str(arch_field.contents()) if arch_field is not None else "llama"

    dest_dir.mkdir(parents=True, exist_ok=True)
    work = dest_dir / f".split-{uuid.uuid4().hex[:8]}.partial"
    work.mkdir()
    try:
        writer = GGUFWriter(work / source.name, arch, split_max_size=budget, endianess=reader.endianess)
        writer.data_alignment = _alignment(reader)
        for field in reader.fields.values():
            # GGUF.* are the reader's virtual fields; the writer adds the architecture and split keys itself.
            if field.name.startswith("GGUF.") or field.name == "general.architecture" or field.name in SPLIT_KEYS:
                continue
            value_type = field.types[0]
            sub_type = field.types[-1] if value_type == GGUFValueType.ARRAY else None
            writer.add_key_value(field.name, field.contents(), value_type, sub_type=sub_type)
        for tensor in reader.tensors:
            writer.add_tensor_info(
                tensor.name, tensor.data.shape, tensor.data.dtype, tensor.data.nbytes, tensor.tensor_type
            )
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for tensor in reader.tensors:
            writer.write_tensor_data(tensor.data, tensor_endianess=reader.endianess)
        writer.close()

        written = sorted(work.glob("*.gguf"))
        if len(written) == 1:  # the writer only splits when needed; name a single shard like the others
            written[0].rename(work / shard_name(source.name, 1, 1))
            written = sorted(work.glob("*.gguf"))
        expected = [shard_name(source.name, i + 1, len(written)) for i in range(len(written))]
        if [p.name for p in written] != expected:
            raise PublishError(f"{source.name}: split wrote {[p.name for p in written]}, expected {expected}")
        for part in written:
            if part.stat().st_size > max_bytes:
                raise PublishError(f"{part.name}: {part.stat().st_size} bytes, over the {max_bytes}-byte limit")
        final = []
        for part in written:
            target = dest_dir / part.name
            part.replace(target)
            final.append(target)
        return final
    finally:
        shutil.rmtree(work, ignore_errors=True)


def recorded_shards(build_dir: Path, artifact: Artifact, max_bytes: int | None = None) -> list[Shard] | None:
    """The shards an earlier split of this exact artifact (to ``max_bytes``, when given) wrote, if all still there."""
    index = build_dir / SHARDS_DIR / artifact.sha256[:12] / SHARDS_INDEX
    if not index.is_file():
        return None
    try:
        recorded = json.loads(index.read_text(encoding="utf-8"))
        shards = [Shard(path=str(s["path"]), size=int(s["size"]), sha256=str(s["sha256"])) for s in recorded["shards"]]
    except (ValueError, KeyError, TypeError):
        return None  # unreadable index: split again
    if recorded.get("source_sha256") != artifact.sha256 or max_bytes not in (None, recorded.get("max_bytes")):
        return None
    for shard in shards:
        path = build_dir / shard.path
        if not path.is_file() or path.stat().st_size != shard.size:
            return None
    return shards


def ensure_shards(build_dir: Path, artifact: Artifact, max_bytes: int) -> list[Shard]:
    """Shards of ``artifact`` (splitting it now if needed), or ``[]`` when it fits in one upload.

    Shards are kept per artifact content (``shards/<sha12>/``), so a rebuilt artifact gets new
    ones and a re-publish of the same artifact reuses them.
    """
    if artifact.size_bytes <= max_bytes:
        return []
    existing = recorded_shards(build_dir, artifact, max_bytes)
    if existing is not None:
        return existing
    folder = build_dir / SHARDS_DIR / artifact.sha256[:12]
    if folder.exists():
        shutil.rmtree(folder)
    parts = split_gguf(build_dir / artifact.path, folder, max_bytes)
    shards = [Shard(str(p.relative_to(build_dir)), p.stat().st_size, sha256_file(p)) for p in parts]
    record = {
        "source": artifact.path,
        "source_sha256": artifact.sha256,
        "max_bytes": max_bytes,
        "shards": [{"path": s.path, "size": s.size, "sha256": s.sha256} for s in shards],
    }
    write_text_atomic(folder / SHARDS_INDEX, json.dumps(record, indent=2) + "\n")
    return shards
