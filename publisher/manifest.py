"""The build manifest: every artifact with its sha256 and the fingerprint of what made it.

``<workdir>/<build name>/manifest.json`` is rewritten atomically (temp file, fsync, rename) after
each step, so a killed build leaves either the old manifest or the new one, never half of one.
A stage is skipped when its recorded fingerprint matches the one it would compute now and its
files still hash to what the manifest says.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import tempfile
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError

from publisher.errors import DiskSpaceError, ManifestError, PublisherError
from publisher.manifest_records import AwqParameters as AwqParameters
from publisher.manifest_records import FolderParameters as FolderParameters
from publisher.manifest_records import GptqParameters as GptqParameters
from publisher.manifest_records import QualityResult as QualityResult
from publisher.manifest_records import Record as Record
from publisher.manifest_records import SmokeAnswer as SmokeAnswer
from publisher.manifest_records import SmokeResult as SmokeResult
from publisher.manifest_records import TemplateResult as TemplateResult
from publisher.manifest_records import TokenizerResult as TokenizerResult

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1


ArtifactFormat = Literal["gguf", "gptq", "awq", "imatrix"]


class Artifact(Record):
    """One product of the build: a GGUF file (the reference or a quant) or a folder (a GPTQ or AWQ variant)."""

    quant_type: str
    path: str = Field(description="Relative to the build folder: the file, or the folder of a folder artifact")
    size_bytes: int = Field(description="The file's size, or the sum of a folder's files")
    sha256: str = Field(description="The file's sha256, or for a folder the digest of its file list (folder_digest)")
    format: ArtifactFormat = "gguf"
    files: dict[str, str] = Field(
        default_factory=dict, description="A folder artifact's files: path inside the folder -> sha256"
    )
    gptq: GptqParameters | None = None
    awq: AwqParameters | None = None
    bits_per_weight: float
    fingerprint: str
    status: Literal["built", "passed", "failed"] = "built"
    failure: str | None = None
    smoke: SmokeResult | None = None
    tokenizer: TokenizerResult | None = None
    template: TemplateResult | None = None
    quality: QualityResult | None = None
    quality_unavailable: str | None = Field(None, description="Why quality was not measured (the reference failed)")
    shards: list[str] = Field(default_factory=list, description="Shards, when the file is too large for one upload")
    base_type: str | None = Field(None, description="The llama.cpp type a variant starts from (Q4_K_M for Q4_K_L)")
    overrides: dict[str, str] = Field(default_factory=dict, description="Tensor (pattern) -> ggml type of a variant")
    imatrix_sha256: str | None = Field(None, description="sha256 of the importance matrix it was quantized with")

    @property
    def is_folder(self) -> bool:
        """Whether the artifact is a folder of files rather than one file."""
        return bool(self.files)

    def outputs(self) -> dict[str, str]:
        """Every file of the artifact, relative to the build folder, with its sha256."""
        if not self.files:
            return {self.path: self.sha256}
        return {f"{self.path}/{name}": digest for name, digest in self.files.items()}


def folder_digest(files: dict[str, str]) -> str:
    """One sha256 standing for a folder: over its sorted ``name sha256`` lines, so any change shows."""
    listing = "".join(f"{name} {files[name]}\n" for name in sorted(files))
    return hashlib.sha256(listing.encode()).hexdigest()


class Architecture(Record):
    """The source's shape, read from its ``config.json`` when it was fetched."""

    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    hidden: int
    intermediate: int | None = None
    vocab: int | None = None
    tied_embeddings: bool = False
    attention_bias: bool = False
    max_positions: int | None = Field(None, description="The context length the model was trained for")
    sliding_window: int | None = None
    sliding_layers: int | None = Field(None, description="Layers that attend only within the sliding window")
    experts: int | None = Field(None, description="Experts per MoE layer")
    experts_per_token: int | None = None

    def kv_cache_bytes(self, context: int, bytes_per_value: int = 2, ubatch: int = 512) -> int:
        """K and V for every layer at ``context`` tokens, as llama.cpp allocates them (f16 unless told otherwise).

        llama.cpp rounds the cells up to a multiple of 256, and keeps only the window plus one
        micro-batch (``ubatch``, 512 by default) for layers that attend within a sliding window.
        """
        cells = -(-context // 256) * 256
        sliding = self.sliding_layers or 0
        window = cells
        if sliding and self.sliding_window:
            window = min(cells, -(-(self.sliding_window + ubatch) // 256) * 256)
        per_cell = 2 * self.n_kv_heads * self.head_dim * bytes_per_value
        return per_cell * ((self.n_layers - sliding) * cells + sliding * window)

    def parameters(self) -> int | None:
        """Parameter count of a Llama-style decoder, or ``None`` when the config lacks a figure."""
        if self.intermediate is None or self.vocab is None:
            return None
        q_out = self.n_heads * self.head_dim
        kv_out = self.n_kv_heads * self.head_dim
        attention = self.hidden * q_out + 2 * self.hidden * kv_out + q_out * self.hidden
        if self.attention_bias:
            attention += q_out + 2 * kv_out + self.hidden
        mlp = 3 * self.hidden * self.intermediate
        per_layer = attention + mlp + 2 * self.hidden  # two RMSNorm weights
        embeddings = self.vocab * self.hidden * (1 if self.tied_embeddings else 2)
        return self.n_layers * per_layer + embeddings + self.hidden  # final norm


class LicenceFile(Record):
    """A file of licence terms published beside the GGUFs (the source's LICENSE, USE_POLICY.md, ...)."""

    name: str = Field(description="File name in the published repo")
    sha256: str
    size: int
    path: str | None = Field(None, description="The copy fetch made, relative to the build folder")


class SourceFacts(Record):
    """What the card needs to know about the source, recorded by fetch so the card never opens the folder."""

    architecture: Architecture | None = Field(None, description="None when config.json describes no decoder")
    readme: str | None = Field(None, description="The source's own README.md, as fetched")
    readme_sha256: str | None = None
    licence_files: list[LicenceFile] = Field(default_factory=list, description="Published beside the GGUFs")


class SourceRecord(Record):
    """What was fetched."""

    repo: str | None = None
    revision: str | None = None
    commit: str | None = None
    path: str = Field(description="Local folder the build read the source from")
    parameters: int | None = None
    files: dict[str, str] = Field(default_factory=dict, description="file name -> sha256 of what conversion read")
    facts: SourceFacts | None = Field(None, description="None in manifests written before fetch recorded them")


class ImatrixRecord(Record):
    """The importance matrix the quants were made with."""

    path: str = Field(description="The imatrix GGUF, relative to the build folder")
    sha256: str
    source: str = Field(description="Where the calibration text (or the given matrix) comes from")
    text_path: str | None = Field(None, description="The calibration text as llama-imatrix read it")
    text_sha256: str | None = None
    chat_template: bool = False
    dataset: str | None = Field(None, description="The dataset name recorded in the matrix")
    chunks: int
    chunk_size: int
    tokens: int
    entries: int
    uncovered: list[str] = Field(default_factory=list, description="Weights (or experts) without data")
    fallback: str = Field("", description="How uncovered weights are quantized")


class StageRecord(Record):
    """A finished stage: its fingerprint and the files it wrote."""

    fingerprint: str
    outputs: dict[str, str] = Field(default_factory=dict, description="relative path -> sha256")
    finished_at: str
    seconds: float


class Manifest(Record):
    """Everything a build made and proved."""

    format: int = FORMAT_VERSION
    build_name: str
    recipe_sha256: str
    tools: dict[str, str] = Field(default_factory=dict)
    source: SourceRecord | None = None
    stages: dict[str, StageRecord] = Field(default_factory=dict)
    reference: Artifact | None = None
    imatrix: ImatrixRecord | None = None
    artifacts: dict[str, Artifact] = Field(default_factory=dict)
    gptq: dict[str, Artifact] = Field(default_factory=dict, description="GPTQ folder artifacts, by branch")
    awq: dict[str, Artifact] = Field(default_factory=dict, description="AWQ folder artifacts, by branch")
    card: dict[str, Any] = Field(default_factory=dict)

    def passed_artifacts(self) -> list[Artifact]:
        """Artifacts that passed every check, in the order they were built."""
        return [a for a in self.artifacts.values() if a.status == "passed"]

    def failed_artifacts(self) -> list[Artifact]:
        """Artifacts that failed a check."""
        return [a for a in self.artifacts.values() if a.status == "failed"]


def sha256_file(path: Path) -> str:
    """sha256 of a file, read through one reused 256 KiB buffer.

    Not ``read(8 MiB)`` in a loop: freeing buffers that large raises glibc's mmap threshold, after
    which llama.cpp's quantizer buffers stay resident in the heap; that cost ~16 MB of peak RSS per
    build (measured by bench/).
    """
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def fingerprint(*parts: Any) -> str:
    """A stable sha256 of JSON-serialisable inputs (settings, hashes, tool versions)."""
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


# -- where a build may write -------------------------------------------------------------------


class OutsideWriteError(PublisherError):
    """A write aimed outside the folders the running command may change."""


class WriteScope:
    """The folders a build or publish may write into, and the paths it was allowed to write."""

    def __init__(self, roots: tuple[Path, ...]) -> None:
        self.roots = tuple(root.resolve() for root in roots)
        self.allowed: list[Path] = []

    def admit(self, target: Path) -> Path:
        """``target`` resolved, when it lies inside a root; else :class:`OutsideWriteError`."""
        resolved = target.resolve()
        if not any(resolved.is_relative_to(root) for root in self.roots):
            folders = " or ".join(str(root) for root in self.roots)
            raise OutsideWriteError(f"refusing to write {resolved}: it is outside {folders}")
        self.allowed.append(resolved)
        return resolved


_scope: ContextVar[WriteScope | None] = ContextVar("publisher_write_scope", default=None)


@contextmanager
def writes_confined_to(*roots: Path) -> Iterator[WriteScope]:
    """Refuse, until the block ends, every guarded write that resolves outside ``roots``."""
    scope = WriteScope(roots)
    token = _scope.set(scope)
    try:
        yield scope
    finally:
        _scope.reset(token)


def guard_write(target: Path) -> Path:
    """Check that ``target`` may be written now (see :func:`writes_confined_to`) and return it.

    Every file a build, card or publish step writes passes through here, directly or through
    :func:`atomic_path`; outside a confined block (``publisher schema --out``) anything goes.
    """
    scope = _scope.get()
    if scope is not None:
        scope.admit(target)
    return target


DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def disk_full_error(folder: Path, needed: int | None = None) -> DiskSpaceError:
    """The one line for a full disk (or quota): the folder, what was needed and what is free."""
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        free = f"{_size(shutil.disk_usage(probe).free)} is free"
    except OSError:
        free = "free space unknown"
    want = f"more than {_size(needed)} was needed, " if needed else ""
    return DiskSpaceError(
        f"the disk holding {folder} is full ({want}{free}); free some space or use a folder on a larger disk, "
        "then run the command again"
    )


def _size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:,.1f} {unit}"
    return f"{n} bytes"


@contextmanager
def atomic_path(target: Path, *, durable: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it over ``target`` only if the block succeeds.

    ``target`` must pass :func:`guard_write`. A full disk becomes :class:`DiskSpaceError` and
    leaves neither the temporary file nor a changed ``target``. The file's bytes are flushed to
    disk before the rename; with ``durable=False`` they are not, and the caller must call
    :func:`flush_to_disk` before the manifest records the file (the quantize stage does that in the
    background, while the next type is made).
    """
    guard_write(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
    except OSError as err:
        if err.errno in DISK_FULL:
            raise disk_full_error(target.parent) from None
        raise
    os.close(fd)
    tmp = Path(tmp_name)
    guard_write(tmp)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; published files must be readable like any other
    try:
        yield tmp
        if durable:
            _fsync(tmp)
        os.replace(tmp, target)
    except OSError as err:
        if err.errno not in DISK_FULL:
            raise
        written = tmp.stat().st_size if tmp.exists() else 0
        raise disk_full_error(target.parent, written or None) from None
    finally:
        tmp.unlink(missing_ok=True)


def replace_large(source: Path, target: Path) -> threading.Thread | None:
    """``os.replace(source, target)`` for multi-gigabyte files, without waiting for the old ``target``.

    Renaming over a large file makes ext4 flush the new one first (3.1 s for 2.2 GB here), and
    freeing the old one's blocks takes the kernel 1.3 s more. The old file is renamed aside to a
    free name instead and deleted by a thread (returned; the interpreter waits for it at exit),
    together with any left aside by an interrupted run.
    """
    guard_write(target)
    aside = None
    if target.exists():
        aside = guard_write(target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.discarded"))
        os.replace(target, aside)
    os.replace(source, target)
    stale = list(target.parent.glob(f".{target.name}.*.discarded"))
    if not stale:
        return None

    def discard() -> None:
        for path in stale:
            path.unlink(missing_ok=True)

    thread = threading.Thread(target=discard, name="discard")
    thread.start()
    return thread


def _fsync(path: Path) -> None:
    with path.open("rb") as handle:
        os.fsync(handle.fileno())


def flush_to_disk(path: Path) -> None:
    """Wait until the bytes of ``path`` (written by :func:`atomic_path` with ``durable=False``) are on disk.

    A disk that turns out full only now becomes :class:`DiskSpaceError`.
    """
    try:
        _fsync(path)
    except OSError as err:
        if err.errno not in DISK_FULL:
            raise
        raise disk_full_error(path.parent, path.stat().st_size) from None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text_atomic(target: Path, text: str) -> None:
    """Write ``text`` to ``target`` so readers see the old or the new content, never a mix."""
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def load_manifest(build_dir: Path) -> Manifest | None:
    """The manifest in ``build_dir``, or ``None`` when there is none yet."""
    path = build_dir / MANIFEST_NAME
    if not path.exists():
        return None
    try:
        return Manifest.model_validate_json(path.read_text(encoding="utf-8"))
    except (ValidationError, ValueError) as err:
        first = str(err).splitlines()[0]
        raise ManifestError(f"{path}: unreadable manifest ({first}); delete it to rebuild from scratch") from None


def save_manifest(build_dir: Path, manifest: Manifest) -> None:
    """Write the manifest atomically."""
    write_text_atomic(build_dir / MANIFEST_NAME, manifest.model_dump_json(indent=2) + "\n")
