"""quantize: llama.cpp's own quantizer makes each selected type (or variant) from the reference GGUF.

``llama_model_quantize`` (through ``publisher.runtimes.llama_cpp``) runs in a worker thread while
the main thread shows progress from llama.cpp's per-tensor log lines, which are also kept in
``logs/quantize-<TYPE>.log``. With an importance matrix (the imatrix stage) its data and the four
``quantize.imatrix.*`` keys go in through ``params.imatrix`` and ``params.kv_overrides`` exactly as
``llama-quantize --imatrix`` passes them; a variant's tensor types go in through
``token_embedding_type``, ``output_tensor_type`` and ``tt_overrides``. Each file is written under
a hidden temporary name and renamed when complete. A second thread then flushes it to disk, hashes
it and reads its real bits per weight (from the file's tensor types) while the next type
quantizes; only then are its size, sha256 and bits per weight recorded, so the manifest never
claims a file whose bytes may not be on disk yet. Types are made largest first, so the one flush
and hash that nothing overlaps is the smallest file's.
"""

from __future__ import annotations

import contextvars
import os
import re
import shutil
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

from publisher import gguf_info, importance
from publisher.errors import DiskSpaceError, ManifestError, QuantizationError
from publisher.formats import gguf_quants
from publisher.manifest import Artifact, atomic_path, disk_full_error, fingerprint, flush_to_disk, guard_write
from publisher.recipe import Recipe
from publisher.runtimes import llama_cpp
from publisher.runtimes.llama_cpp import LlamaLog
from publisher.stages import BuildContext, Stage, register

# Free bytes under which a failed quantization is blamed on a full disk (llama.cpp does not say).
FULL_DISK_BYTES = 1024 * 1024
WRITE_BACK_S = 0.25  # how often a quant file being written is pushed to disk
_TENSOR_LINE = re.compile(r"^\[\s*(\d+)/\s*(\d+)\]")
_FALLBACK = re.compile(r"(\d+) of (\d+) tensor\(s\) required fallback")


def work_key(quant_type: str) -> str:
    """The manifest key of one type's quantize record."""
    return f"quantize/{quant_type}"


def settings(ctx: BuildContext, quant_type: str) -> str:
    """Fingerprint of what makes a quant file: the reference's and the imatrix's hashes, the type and its
    overrides, and the quantizer's version."""
    ref = ctx.manifest.reference
    tools = ctx.manifest.tools
    variant = ctx.recipe.quantize.variant(quant_type)
    entry = gguf_quants.lookup(variant.type)
    return fingerprint(
        "quantize",
        entry.name,
        entry.ftype,
        ref.sha256 if ref else None,
        tools.get("llama-cpp-python"),
        tools.get("llama.cpp"),
        *(() if variant.is_plain else (variant.name, variant.token_embd, variant.output, variant.tensor_types)),
        *((ctx.manifest.imatrix.sha256,) if ctx.manifest.imatrix else ()),
    )


def artifact_current(ctx: BuildContext, quant_type: str) -> bool:
    """True when ``quant_type`` is recorded with the current fingerprint and its file still hashes right."""
    artifact = ctx.manifest.artifacts.get(quant_type)
    fp = settings(ctx, quant_type)
    return artifact is not None and artifact.fingerprint == fp and ctx.is_current(work_key(quant_type), fp)


class _TensorProgress:
    """Tensors done so far, read from llama.cpp's per-tensor log lines."""

    def __init__(self) -> None:
        self.done = 0
        self.total: int | None = None

    def __call__(self, line: str) -> None:
        if (match := _TENSOR_LINE.match(line)) is not None:
            self.done, self.total = int(match[1]), int(match[2])


def _fallbacks(log: LlamaLog) -> str | None:
    """llama.cpp's note on tensors that needed another block format, if any."""
    found = next((m for m in map(_FALLBACK.search, log.text()) if m), None)
    return f"{found[1]} of {found[2]} tensors fell back to another format" if found else None


def _last_error(log: LlamaLog) -> str:
    """The most telling line for a failure."""
    said = log.last_error()
    tell = [ln.strip() for ln in log.text() if "error" in ln.lower() or "failed" in ln.lower()]
    rest = [ln.strip() for ln in log.text() if ln.strip()]
    return (said or (tell or rest or ["no output from llama.cpp"])[-1])[:300]


def quantize_file(
    ctx: BuildContext,
    reference: Path,
    out: Path,
    quant_type: str,
    progress: Progress,
    imatrix: llama_cpp.QuantizerImatrix | None = None,
) -> str | None:
    """Quantize ``reference`` into ``out`` (a temporary path) with llama.cpp; return llama.cpp's fallback note."""
    variant = ctx.recipe.quantize.variant(quant_type)
    request = llama_cpp.QuantizeRequest(
        ftype=gguf_quants.lookup(variant.type).ftype,
        threads=ctx.recipe.quantize.threads or 0,
        token_embd_type=gguf_quants.tensor_type(variant.token_embd) if variant.token_embd else None,
        output_type=gguf_quants.tensor_type(variant.output) if variant.output else None,
        tensor_types={pattern: gguf_quants.tensor_type(kind) for pattern, kind in variant.tensor_types.items()},
        imatrix=imatrix,
    )
    task = progress.add_task(f"quantize {quant_type}", total=None)
    tensors = _TensorProgress()
    log_path = ctx.logs_dir() / f"quantize-{quant_type}.log"
    result = llama_cpp.quantize(
        reference,
        out,
        request,
        on_line=tensors,
        while_running=lambda: progress.update(task, completed=tensors.done, total=tensors.total),
    )
    progress.update(task, completed=tensors.total or 1, total=tensors.total or 1)
    log = result.log
    guard_write(log_path).write_text("\n".join(log.text()) + "\n", encoding="utf-8")
    if result.error is not None:
        raise QuantizationError(f"quantize {quant_type}: {result.error}")
    if result.rc != 0 and shutil.disk_usage(out.parent).free < FULL_DISK_BYTES:
        raise disk_full_error(out.parent, out.stat().st_size if out.is_file() else None)
    if result.rc != 0 or not out.is_file() or out.stat().st_size == 0:
        raise QuantizationError(
            f"quantize {quant_type}: llama.cpp's quantizer failed ({_last_error(log)}); "
            f"see {log_path}; check the type suits this model (llama-quantize --help lists them)"
        )
    return _fallbacks(log)


def load_imatrix(ctx: BuildContext, reference: Path) -> llama_cpp.QuantizerImatrix | None:
    """The recorded importance matrix as quantizer arrays, or None when the recipe has none."""
    record_ = ctx.manifest.imatrix
    if ctx.recipe.imatrix is None:
        return None
    if record_ is None or not ctx.files_match({record_.path: record_.sha256}):
        raise ManifestError(f"{ctx.build_dir}: quantize needs the imatrix stage's matrix; run with --stages imatrix")
    matrix = importance.read_imatrix(ctx.build_dir / record_.path)
    return importance.quantizer_imatrix(matrix, importance.quantizer_data(matrix, reference), record_.path)


@register("quantize")
class QuantizeStage(Stage):
    """Make every selected quant type and record its size, hash and real bits per weight."""

    name = "quantize"
    after = ("convert", "imatrix")

    def is_done(self, ctx: BuildContext) -> bool:
        """Every selected type is recorded with the current fingerprint and hashes right."""
        return all(artifact_current(ctx, t) for t in ctx.selected_types())

    def run(self, ctx: BuildContext) -> None:
        """Quantize the types that are missing, stale or forced."""
        ref = ctx.manifest.reference
        if ref is None or not ctx.files_match({ref.path: ref.sha256}):
            raise ManifestError(
                f"{ctx.build_dir}: quantize needs the reference GGUF from the convert stage; run with --stages convert"
            )
        reference = ctx.build_dir / ref.path
        forced = self.name in ctx.forced
        todo = [t for t in ctx.selected_types() if forced or not artifact_current(ctx, t)]
        imatrix = load_imatrix(ctx, reference) if todo else None
        columns = (TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn())
        # Forget first, in one save: a crash from here on leaves no record claiming an old file is current.
        for quant_type in todo:
            ctx.manifest.stages.pop(work_key(quant_type), None)
            ctx.manifest.artifacts.pop(quant_type, None)
        ctx.save()
        # Each file is flushed, hashed and recorded by a second thread while the next type quantizes
        # (fsync and hashlib release the GIL), so the main thread never waits for the disk between
        # types; the manifest is only touched there. A failure still records the files already made.
        settling: list[Future[None]] = []
        with (
            Progress(*columns, console=ctx.console, transient=True) as progress,
            ThreadPoolExecutor(1, thread_name_prefix="settle") as settler,
        ):
            try:
                for quant_type in largest_first(ctx.recipe, todo):
                    made = self._make(ctx, reference, quant_type, progress, imatrix, settler)
                    # with this thread's context: the settle thread's writes pass the same write guard
                    settling.append(settler.submit(contextvars.copy_context().run, self._settle, ctx, made, imatrix))
            finally:
                wait(settling)
        for done in settling:
            done.result()  # a file that could not be flushed or recorded (once every type is made)

    def _make(
        self,
        ctx: BuildContext,
        reference: Path,
        quant_type: str,
        progress: Progress,
        imatrix: llama_cpp.QuantizerImatrix | None,
        settler: ThreadPoolExecutor,
    ) -> _Made:
        started = time.perf_counter()
        target = ctx.build_dir / ctx.recipe.artifact_filename(quant_type)
        with atomic_path(target, durable=False) as tmp:  # flushed by _settle, before it is recorded
            written = threading.Event()
            settler.submit(write_back, tmp, written)  # once the previous file is settled
            try:
                note = quantize_file(ctx, reference, tmp, quant_type, progress, imatrix)
            finally:
                written.set()
        return _Made(quant_type, target, note, time.perf_counter() - started)

    def _settle(self, ctx: BuildContext, made: _Made, imatrix: llama_cpp.QuantizerImatrix | None) -> None:
        """Flush a new quant file to disk, then hash it, read its real bits per weight and record it.

        Flushed before it is hashed, so neither the manifest nor the hash cache ever vouches for bytes
        a crash could still lose. A file that cannot be flushed is removed: it was never recorded, and
        a rerun makes it again.
        """
        quant_type, target = made.quant_type, made.target
        try:
            flush_to_disk(target)
        except (OSError, DiskSpaceError):
            target.unlink(missing_ok=True)
            raise
        sha256, bpw = ctx.hash_file(target), gguf_info.bits_per_weight(target)
        fp = settings(ctx, quant_type)
        variant = ctx.recipe.quantize.variant(quant_type)
        overrides = {"token_embd.weight": variant.token_embd, "output.weight": variant.output}
        ctx.manifest.artifacts[quant_type] = Artifact(
            quant_type=quant_type,
            path=target.name,
            size_bytes=target.stat().st_size,
            sha256=sha256,
            bits_per_weight=bpw,
            fingerprint=fp,
            base_type=None if variant.is_plain else variant.type,
            overrides={k: v for k, v in (overrides | variant.tensor_types).items() if v},
            imatrix_sha256=ctx.manifest.imatrix.sha256 if imatrix is not None and ctx.manifest.imatrix else None,
        )
        order = {t: i for i, t in enumerate(ctx.recipe.quantize.names)}
        ctx.manifest.artifacts = dict(
            sorted(ctx.manifest.artifacts.items(), key=lambda kv: order.get(kv[0], len(order)))
        )
        ctx.record(work_key(quant_type), fp, [target], made.seconds)
        nominal = gguf_quants.lookup(variant.type).nominal_bpw
        extra = f"; {made.note}" if made.note else ""
        ctx.console.print(
            f"quantize: {target.name} {target.stat().st_size / 1e6:.1f} MB, {bpw:.2f} bpw "
            f"(nominal {nominal:.2f}{extra}) in {made.seconds:.1f}s"
        )


def largest_first(recipe: Recipe, types: list[str]) -> list[str]:
    """``types`` in the order the stage makes them: the smallest file last, since its flush and hash
    are the only ones no quantization overlaps (recipe order among equal sizes)."""
    return sorted(types, key=lambda t: -gguf_quants.lookup(recipe.quantize.variant(t).type).nominal_bpw)


def write_back(path: Path, written: threading.Event) -> None:
    """Send what llama.cpp has written of ``path`` so far to the disk, every quarter second until ``written``.

    The flush that must precede recording the file then has only the last moments' bytes left to
    wait for, instead of the whole file after the last type.
    """
    try:
        handle = path.open("rb")
    except FileNotFoundError:  # already complete and renamed while the previous file settled
        return
    with handle:
        while not written.wait(WRITE_BACK_S):
            os.fdatasync(handle.fileno())


@dataclass
class _Made:
    """A quant file just written, to be flushed, hashed and recorded in the background."""

    quant_type: str
    target: Path
    note: str | None
    seconds: float
