"""quantize: llama.cpp's own quantizer makes each selected type (or variant) from the reference GGUF.

``llama_cpp.llama_model_quantize`` runs in a worker thread (the ctypes call releases the GIL) while
the main thread shows progress from llama.cpp's per-tensor log lines, which are also kept in
``logs/quantize-<TYPE>.log``. With an importance matrix (the imatrix stage) its data and the four
``quantize.imatrix.*`` keys go in through ``params.imatrix`` and ``params.kv_overrides`` exactly as
``llama-quantize --imatrix`` passes them; a variant's tensor types go in through
``token_embedding_type``, ``output_tensor_type`` and ``tt_overrides``. Each file is written under
a hidden temporary name and renamed when complete; its size, sha256 and real bits per weight (read
from the file's tensor types) are then recorded.
"""

from __future__ import annotations

import ctypes
import re
import shutil
import threading
import time
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

from publisher import gguf_info, importance, quants
from publisher.errors import ManifestError, QuantizationError
from publisher.evaluation._llama import LlamaLog, llama_log
from publisher.manifest import Artifact, atomic_path, disk_full_error, fingerprint, guard_write
from publisher.recipe import QuantVariant
from publisher.stages import BuildContext, Stage, register

# Free bytes under which a failed quantization is blamed on a full disk (llama.cpp does not say).
FULL_DISK_BYTES = 1024 * 1024
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
    entry = quants.lookup(variant.type)
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


def tensor_overrides(variant: QuantVariant) -> Any:
    """``llama_model_tensor_override`` array (NULL-pattern terminated) for a variant's tensor types, or None."""
    import llama_cpp

    if not variant.tensor_types:
        return None
    items = (llama_cpp.llama_model_tensor_override * (len(variant.tensor_types) + 1))()
    for slot, (pattern, kind) in enumerate(variant.tensor_types.items()):
        items[slot].pattern = pattern.encode()
        items[slot].type = quants.tensor_type(kind)
    items[len(variant.tensor_types)].pattern = None
    return items


def quantize_file(
    ctx: BuildContext,
    reference: Path,
    out: Path,
    quant_type: str,
    progress: Progress,
    imatrix: importance.QuantizerImatrix | None = None,
) -> str | None:
    """Quantize ``reference`` into ``out`` (a temporary path) with llama.cpp; return llama.cpp's fallback note."""
    import llama_cpp

    variant = ctx.recipe.quantize.variant(quant_type)
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = quants.lookup(variant.type).ftype
    params.nthread = ctx.recipe.quantize.threads or 0  # 0: all cores
    if variant.token_embd:
        params.token_embedding_type = quants.tensor_type(variant.token_embd)
    if variant.output:
        params.output_tensor_type = quants.tensor_type(variant.output)
    overrides = tensor_overrides(variant)  # kept alive until the call returns
    if overrides is not None:
        params.tt_overrides = ctypes.cast(overrides, ctypes.POINTER(llama_cpp.llama_model_tensor_override))
    if imatrix is not None:
        imatrix.apply(params)
    result: dict[str, int | BaseException] = {}

    def work() -> None:
        try:
            result["rc"] = llama_cpp.llama_model_quantize(
                str(reference).encode(), str(out).encode(), ctypes.byref(params)
            )
        except BaseException as err:  # surfaced in the main thread
            result["error"] = err

    task = progress.add_task(f"quantize {quant_type}", total=None)
    tensors = _TensorProgress()
    log_path = ctx.logs_dir() / f"quantize-{quant_type}.log"
    with llama_log(on_line=tensors) as log:
        # A daemon thread: Ctrl-C ends the process at once; the unfinished file keeps its temporary name.
        worker = threading.Thread(target=work, name=f"quantize-{quant_type}", daemon=True)
        worker.start()
        while worker.is_alive():
            worker.join(0.1)
            progress.update(task, completed=tensors.done, total=tensors.total)
        progress.update(task, completed=tensors.total or 1, total=tensors.total or 1)
    guard_write(log_path).write_text("\n".join(log.text()) + "\n", encoding="utf-8")
    if "error" in result:
        raise QuantizationError(f"quantize {quant_type}: {result['error']}")
    if result.get("rc") != 0 and shutil.disk_usage(out.parent).free < FULL_DISK_BYTES:
        raise disk_full_error(out.parent, out.stat().st_size if out.is_file() else None)
    if result.get("rc") != 0 or not out.is_file() or out.stat().st_size == 0:
        raise QuantizationError(
            f"quantize {quant_type}: llama.cpp's quantizer failed ({_last_error(log)}); "
            f"see {log_path}; check the type suits this model (llama-quantize --help lists them)"
        )
    return _fallbacks(log)


def load_imatrix(ctx: BuildContext, reference: Path) -> importance.QuantizerImatrix | None:
    """The recorded importance matrix as quantizer arrays, or None when the recipe has none."""
    record_ = ctx.manifest.imatrix
    if ctx.recipe.imatrix is None:
        return None
    if record_ is None or not ctx.files_match({record_.path: record_.sha256}):
        raise ManifestError(f"{ctx.build_dir}: quantize needs the imatrix stage's matrix; run with --stages imatrix")
    matrix = importance.read_imatrix(ctx.build_dir / record_.path)
    return importance.QuantizerImatrix(matrix, importance.quantizer_data(matrix, reference), record_.path)


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
        with Progress(*columns, console=ctx.console, transient=True) as progress:
            for quant_type in todo:
                self._one(ctx, reference, quant_type, progress, imatrix)

    def _one(
        self,
        ctx: BuildContext,
        reference: Path,
        quant_type: str,
        progress: Progress,
        imatrix: importance.QuantizerImatrix | None,
    ) -> None:
        started = time.perf_counter()
        # Forget first: a crash from here on leaves no record claiming the old file is current.
        ctx.forget(work_key(quant_type))
        ctx.manifest.artifacts.pop(quant_type, None)
        target = ctx.build_dir / ctx.recipe.artifact_filename(quant_type)
        with atomic_path(target) as tmp:
            note = quantize_file(ctx, reference, tmp, quant_type, progress, imatrix)
        seconds = time.perf_counter() - started
        fp = settings(ctx, quant_type)
        bpw = gguf_info.bits_per_weight(target)
        variant = ctx.recipe.quantize.variant(quant_type)
        overrides = {"token_embd.weight": variant.token_embd, "output.weight": variant.output}
        ctx.manifest.artifacts[quant_type] = Artifact(
            quant_type=quant_type,
            path=target.name,
            size_bytes=target.stat().st_size,
            sha256=ctx.hash_file(target),
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
        ctx.record(work_key(quant_type), fp, [target], seconds)
        nominal = quants.lookup(variant.type).nominal_bpw
        extra = f"; {note}" if note else ""
        ctx.console.print(
            f"quantize: {target.name} {target.stat().st_size / 1e6:.1f} MB, {bpw:.2f} bpw "
            f"(nominal {nominal:.2f}{extra}) in {seconds:.1f}s"
        )
