"""imatrix: llama.cpp's importance matrix, which the quantizer uses to keep the columns that matter.

The matrix comes from llama.cpp's own ``llama-imatrix`` (built by ``make tools`` from the llama.cpp
sources of the pinned llama-cpp-python, so it runs the same llama.cpp as the quantizer), run on the
reference GGUF over a calibration text, or from an existing file (``imatrix.file``). Either way it
is checked against the reference (an imatrix of another model is refused), its coverage is
reported (weights with no data, MoE experts no token reached), and it is recorded in the manifest
with the sha256 of the matrix and of the calibration text. Every quant's fingerprint includes the
matrix's sha256, so a new calibration text redoes exactly the quants and their checks.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from importlib import resources
from pathlib import Path

from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

from publisher import importance, prompts
from publisher.errors import ManifestError
from publisher.importance import ImatrixError
from publisher.manifest import ImatrixRecord, atomic_path, fingerprint, write_text_atomic
from publisher.recipe import Recipe
from publisher.runtimes import llama_cpp
from publisher.stages import BuildContext, Stage, register

KEY = "imatrix"
CALIBRATION_FILE = "calibration.txt"
SHIPPED_SOURCE = "publisher's calibration text (publisher/data/calibration.txt, MIT licence)"
FALLBACK = "importance 1 for every column (llama.cpp's own choice for experts that saw no token)"
_CHUNKS = re.compile(r"computing over (\d+) chunks")
_DONE = re.compile(r"\[(\d+)\]\d")
_TOO_SHORT = re.compile(r"tokenizes to only (\d+) tokens")


def matrix_name(recipe: Recipe) -> str:
    """The imatrix file's name, published beside the quants."""
    return f"{recipe.basename}.imatrix.gguf"


def text_name(recipe: Recipe) -> str:
    """The calibration text as llama-imatrix read it (rendered through the template when asked)."""
    return f"{recipe.basename}.imatrix.txt"


def calibration(recipe: Recipe) -> tuple[str, str]:
    """``(text, source)``: the calibration text to compute with, checked, and where it comes from.

    Empty, binary (NUL bytes) and non-UTF-8 files are refused with the recipe line that names them.
    """
    spec = recipe.imatrix
    assert spec is not None
    if spec.text is None:
        raw = resources.files("publisher").joinpath("data", CALIBRATION_FILE).read_bytes()
        source = SHIPPED_SOURCE
    else:
        path = recipe.resolve_path(spec.text)
        where = recipe.where("imatrix", "text")
        try:
            raw = path.read_bytes()
        except OSError as err:
            raise ImatrixError(f"{where}: cannot read {path} ({err.strerror})") from None
        if b"\0" in raw:
            raise ImatrixError(f"{where}: {path} is a binary file, not a calibration text")
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise ImatrixError(f"{where}: {path} is not UTF-8 text (byte {err.start}); save it as UTF-8") from None
        if not raw.strip():
            raise ImatrixError(f"{where}: {path} is empty; give a calibration text of a few thousand words")
        source = spec.text
    text = raw.decode("utf-8")
    if spec.chat_template:
        text = as_chat(recipe, text)
    return text, source


def as_chat(recipe: Recipe, text: str) -> str:
    """The text's paragraphs as alternating user and assistant turns in the recipe's prompt template."""
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
    turns = []
    for i in range(0, len(paragraphs), 2):
        answer = paragraphs[i + 1] if i + 1 < len(paragraphs) else ""
        turns.append(prompts.render(recipe.model.prompt_template, paragraphs[i], recipe.model.system_message) + answer)
    return "\n".join(turns) + "\n"


def settings(ctx: BuildContext, text_sha256: str | None, given_sha256: str | None) -> str:
    """Fingerprint of what makes the matrix: the reference, the text, the settings and llama.cpp's version."""
    spec = ctx.recipe.imatrix
    assert spec is not None
    ref = ctx.manifest.reference
    return fingerprint(
        KEY,
        ref.sha256 if ref else None,
        given_sha256,
        text_sha256,
        None if given_sha256 else (spec.chunks, spec.context_length, spec.gpu_layers != 0),
        ctx.manifest.tools.get("llama-cpp-python"),
        ctx.manifest.tools.get("llama.cpp"),
    )


def _given(ctx: BuildContext) -> Path | None:
    spec = ctx.recipe.imatrix
    return ctx.recipe.resolve_path(spec.file) if spec is not None and spec.file else None


def _current_settings(ctx: BuildContext) -> str | None:
    """The fingerprint the stage would record now, or ``None`` when its inputs cannot be read."""
    given = _given(ctx)
    if given is not None:
        return settings(ctx, None, ctx.hash_file(given)) if given.is_file() else None
    text, _source = calibration(ctx.recipe)
    return settings(ctx, _sha256(text), None)


def _sha256(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()


def run_imatrix(ctx: BuildContext, reference: Path, text_file: Path, out: Path, log_path: Path) -> None:
    """Run llama-imatrix in the build folder, showing its progress per chunk; ``ImatrixError`` on failure."""
    spec = ctx.recipe.imatrix
    assert spec is not None
    program = llama_cpp.tool("llama-imatrix")
    if program is None:
        raise ImatrixError(
            f"llama-imatrix is not built in {llama_cpp.tools_dir()}; run `make tools` "
            f"(or set {llama_cpp.TOOLS_ENV}), or give imatrix.file"
        )
    # Relative names: the text's name is what the matrix (and every quant) records as its dataset.
    cmd = [str(program), "-m", reference.name, "-f", text_file.name, "-o", out.name]
    cmd += ["-c", str(spec.context_length), "--chunks", str(spec.chunks), "-ngl", str(spec.gpu_layers)]
    cmd += ["-t", str(spec.threads or os.cpu_count() or 1)]
    if spec.chat_template:
        cmd.append("--parse-special")
    columns = (TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn())
    seen = ""
    with (
        log_path.open("w", encoding="utf-8") as log,
        Progress(*columns, console=ctx.console, transient=True) as progress,
    ):
        log.write(f"$ cd {ctx.build_dir} && {' '.join(cmd)}\n")
        task = progress.add_task("imatrix: loading", total=None)
        proc = subprocess.Popen(cmd, cwd=ctx.build_dir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert proc.stdout is not None
        while chunk := os.read(proc.stdout.fileno(), 65536):
            text = chunk.decode("utf-8", errors="replace")
            log.write(text)
            seen = (seen + text)[-20000:]
            if (total := _CHUNKS.search(seen)) is not None:
                done = [int(n) for n in _DONE.findall(seen)]
                progress.update(task, description="imatrix: chunks", total=int(total[1]), completed=max(done or [0]))
        returncode = proc.wait()
        log.write(f"\nexit code {returncode}\n")
    if (short := _TOO_SHORT.search(seen)) is not None:
        raise ImatrixError(
            f"{ctx.recipe.where('imatrix', 'text')}: the calibration text is only {short[1]} tokens; llama-imatrix "
            f"needs at least two chunks of imatrix.context_length ({2 * spec.context_length} tokens): "
            "give a longer text or a smaller context_length"
        )
    if returncode != 0 or not out.is_file():
        tail = [ln.strip() for ln in seen.splitlines() if ln.strip()][-1:] or ["no output"]
        raise ImatrixError(f"llama-imatrix failed (exit code {returncode}: {tail[0][:200]}); see {log_path}")


@register(KEY)
class ImatrixStage(Stage):
    """Compute (or take) the importance matrix and record it; nothing to do without an imatrix section."""

    name = KEY
    after = ("convert",)

    def applies(self, ctx: BuildContext) -> bool:
        """A recipe with an imatrix section, or a build that still records a matrix the recipe dropped."""
        return ctx.recipe.imatrix is not None or ctx.manifest.imatrix is not None

    def is_done(self, ctx: BuildContext) -> bool:
        """No imatrix wanted and none recorded, or the recorded one is current and hashes right."""
        if ctx.recipe.imatrix is None:
            return ctx.manifest.imatrix is None
        fp = _current_settings(ctx)
        return fp is not None and ctx.manifest.imatrix is not None and ctx.is_current(KEY, fp)

    def run(self, ctx: BuildContext) -> None:
        """Make the matrix (or copy the given one), check it against the reference, record it."""
        ctx.forget(KEY)
        ctx.manifest.imatrix = None
        if ctx.recipe.imatrix is None:
            ctx.save()
            return
        ref = ctx.manifest.reference
        if ref is None or not ctx.files_match({ref.path: ref.sha256}):
            raise ManifestError(
                f"{ctx.build_dir}: imatrix needs the reference GGUF from the convert stage; run with --stages convert"
            )
        started = time.perf_counter()
        reference = ctx.build_dir / ref.path
        target = ctx.build_dir / matrix_name(ctx.recipe)
        outputs = [target]
        given = _given(ctx)
        if given is not None:
            if not given.is_file():
                raise ImatrixError(f"{ctx.recipe.where('imatrix', 'file')}: no such file {given}")
            matrix, coverage = self._check(ctx, given, reference, ("imatrix", "file"))
            with atomic_path(target) as tmp:
                shutil.copyfile(given, tmp)
            source, text_sha = str(given), None
            fp = settings(ctx, None, ctx.hash_file(given))
        else:
            text, source = calibration(ctx.recipe)
            text_file = ctx.build_dir / text_name(ctx.recipe)
            write_text_atomic(text_file, text)
            outputs.append(text_file)
            text_sha = _sha256(text)
            with atomic_path(target) as tmp:
                run_imatrix(ctx, reference, text_file, tmp, ctx.logs_dir() / "imatrix.log")
                matrix, coverage = self._check(ctx, tmp, reference, ("imatrix", "text"))
            fp = settings(ctx, text_sha, None)
        ctx.manifest.imatrix = ImatrixRecord(
            path=target.name,
            sha256=ctx.hash_file(target),
            source=source,
            text_path=outputs[1].name if len(outputs) > 1 else None,
            text_sha256=text_sha,
            chat_template=bool(ctx.recipe.imatrix.chat_template),
            dataset=matrix.datasets[0] if matrix.datasets else None,
            chunks=matrix.chunk_count,
            chunk_size=matrix.chunk_size,
            tokens=matrix.tokens,
            entries=len(matrix.sums),
            uncovered=coverage.uncovered(),
            fallback=FALLBACK,
        )
        seconds = time.perf_counter() - started
        ctx.record(KEY, fp, outputs, seconds)
        ctx.console.print(
            f"imatrix: {target.name}: {len(matrix.sums)} entries over {matrix.chunk_count} chunks x "
            f"{matrix.chunk_size} tokens in {seconds:.1f}s"
        )
        if coverage.uncovered():
            ctx.console.print(
                f"imatrix: {len(coverage.uncovered())} tensor(s) not covered, quantized with {FALLBACK}: "
                + "; ".join(coverage.uncovered())
            )

    @staticmethod
    def _check(
        ctx: BuildContext, path: Path, reference: Path, field: tuple[str, str]
    ) -> tuple[importance.Imatrix, importance.Coverage]:
        try:
            matrix = importance.read_imatrix(path)
            return matrix, importance.check_against_model(matrix, reference)
        except ImatrixError as err:
            raise ImatrixError(f"{ctx.recipe.where(*field)}: {err}") from None
