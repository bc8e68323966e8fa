"""smoke: try the reference and every quant with llama.cpp before anything can be published.

For each GGUF: tokenizer parity against the source tokenizer, template parity of its embedded
chat template against the recipe's, the recipe's smoke prompts, and quality (perplexity and KL
divergence against the reference, whose logits are computed once and kept in ``quality/``). The
checks themselves live in ``publisher.evaluation``; this stage decides what to run, records the
results and marks each artifact passed or failed with its reasons. Failures are recorded, not
raised: the pipeline reports them once every artifact has been tried.

What it costs beyond llama.cpp's own work is kept small. Each file is loaded once, one model in
memory at a time, into a context that serves every check (``evaluation.check_context``). The
prompts run first; on the reference, its logits are computed next on the same handle, before the
parity checks' state (the source tokenizer, the sample's token lists) is in memory, since the
reference's evaluation decides the stage's peak; then tokenizer and template parity, then quality.
Results are reported in the order of the checks. What transformers makes of the source tokenizer
is read in a short-lived child process (this process never imports transformers), started once the
first prompt is evaluated: llama.cpp then generates one token at a time on half the cores
(llama-cpp-python's default), so the child's two CPU-seconds use a core that would idle; beside a
batched evaluation, or before the first load, it added two to four seconds. Tokenizer and template
parity run once per vocabulary and template, on the first file's open handle. A vocabulary whose
tokenizer would abort llama.cpp (a SentencePiece model without byte tokens) is refused before
llama.cpp tokenizes anything: one failure line per file.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from contextlib import closing, nullcontext
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from publisher.errors import ManifestError, PublisherError
from publisher.manifest import Artifact, SmokeResult, fingerprint, guard_write
from publisher.stages import BuildContext, Stage, register

if TYPE_CHECKING:  # numpy and llama.cpp are imported only when the stage runs
    from publisher.evaluation.quality import ReferenceLogits

QUALITY_DIR = "quality"
LOGITS_KEY = "smoke/reference-logits"
STEPS = 4  # tokenizer, template, prompts, quality
T = TypeVar("T")


def work_key(quant_type: str) -> str:
    """The manifest key of one artifact's smoke record."""
    return f"smoke/{quant_type}"


def _artifacts(ctx: BuildContext) -> list[Artifact]:
    """The reference, then the selected quants that exist."""
    found = [ctx.manifest.reference] if ctx.manifest.reference is not None else []
    return found + [ctx.manifest.artifacts[t] for t in ctx.selected_types() if t in ctx.manifest.artifacts]


def _checks_settings(ctx: BuildContext) -> list[object]:
    recipe = ctx.recipe
    source = ctx.manifest.source
    tools = ctx.manifest.tools
    return [
        recipe.smoke.model_dump(mode="json"),
        recipe.model.prompt_template,
        recipe.model.system_message,
        source.files if source else None,
        [tools.get(k) for k in ("publisher", "llama-cpp-python", "llama.cpp", "tokenizers")],
    ]


def logits_path(ctx: BuildContext) -> Path:
    """Where the reference logits are kept."""
    ref = ctx.manifest.reference
    stem = Path(ref.path).stem if ref else ctx.recipe.basename
    return ctx.build_dir / QUALITY_DIR / f"{stem}.logits.npy"


def _logits_settings(ctx: BuildContext) -> str:
    ref = ctx.manifest.reference
    tools = ctx.manifest.tools
    return fingerprint(
        "reference-logits",
        ref.sha256 if ref else None,
        ctx.recipe.smoke.quality.model_dump(mode="json"),
        [tools.get(k) for k in ("publisher", "llama-cpp-python", "llama.cpp")],
    )


def settings(ctx: BuildContext, artifact: Artifact) -> str:
    """Fingerprint of one artifact's checks: its hash, the reference's, the smoke settings and tool versions."""
    ref = ctx.manifest.reference
    return fingerprint("smoke", artifact.sha256, ref.sha256 if ref else None, _checks_settings(ctx))


def _current(ctx: BuildContext, artifact: Artifact) -> bool:
    """Tested (passed or failed) with the current inputs: a file remade since keeps status ``built``."""
    tested = artifact.status != "built"
    return tested and ctx.is_current(work_key(artifact.quant_type), settings(ctx, artifact))


def _store(ctx: BuildContext, artifact: Artifact) -> None:
    if ctx.manifest.reference is not None and artifact.quant_type == ctx.manifest.reference.quant_type:
        ctx.manifest.reference = artifact
    else:
        ctx.manifest.artifacts[artifact.quant_type] = artifact


@register("smoke")
class SmokeStage(Stage):
    """Check every artifact and mark it passed or failed."""

    name = "smoke"
    after = ("quantize",)

    def is_done(self, ctx: BuildContext) -> bool:
        """Every artifact was checked with the current inputs (passed or failed alike)."""
        arts = _artifacts(ctx)
        return bool(arts) and len(arts) == 1 + len(ctx.selected_types()) and all(_current(ctx, a) for a in arts)

    def problems(self, ctx: BuildContext) -> list[str]:
        """A selected type that is missing or was never tested: a release must not silently lose it."""
        found = []
        for quant_type in ctx.selected_types():
            artifact = ctx.manifest.artifacts.get(quant_type)
            if artifact is None:
                found.append(
                    f"{quant_type}: not built, so not tested; run `publisher build` with --stages quantize,smoke"
                )
            elif not _current(ctx, artifact):
                found.append(f"{artifact.path}: {quant_type} was built but not tested; run `publisher build` again")
        return found

    def run(self, ctx: BuildContext) -> None:
        """Run the checks on artifacts whose results are missing or stale."""
        ref = ctx.manifest.reference
        if ref is None or not ctx.files_match({ref.path: ref.sha256}):
            raise ManifestError(f"{ctx.build_dir}: smoke needs the reference GGUF; run with --stages convert")
        missing = [t for t in ctx.selected_types() if t not in ctx.manifest.artifacts]
        if missing:
            raise ManifestError(f"{ctx.build_dir}: smoke needs {', '.join(missing)}; run with --stages quantize")
        forced = self.name in ctx.forced
        todo = [a for a in _artifacts(ctx) if forced or not _current(ctx, a)]
        if not todo:
            return
        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[step]}"),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=ctx.console, transient=True) as progress:
            yardstick = _Yardstick()
            if ctx.recipe.smoke.quality.enabled:
                from publisher.evaluation.quality import load_reference_logits

                if not forced and ctx.is_current(LOGITS_KEY, _logits_settings(ctx)):
                    yardstick.settle(lambda: load_reference_logits(logits_path(ctx), ctx.recipe))
                elif any(a.quant_type == ref.quant_type for a in todo):
                    yardstick.on_reference = True  # computed on the handle the reference's checks load
                else:
                    yardstick.settle(lambda: self._compute_logits(ctx, progress, None))
            for artifact in todo:
                self._check(ctx, artifact, yardstick, progress)

    def _compute_logits(self, ctx: BuildContext, progress: Progress, llm: object) -> ReferenceLogits:
        """Compute the reference logits, with ``llm`` (the reference open, left open) or a load of their own.

        Computed once and kept in ``quality/`` while the reference and the settings are unchanged:
        every file's quality pass shares them.
        """
        from publisher import evaluation

        ref = ctx.manifest.reference
        assert ref is not None
        out = logits_path(ctx)
        fp = _logits_settings(ctx)
        started = time.perf_counter()
        ctx.forget(LOGITS_KEY)
        task = progress.add_task("quality: reference logits", total=None, step=ref.path)
        guard_write(out).parent.mkdir(parents=True, exist_ok=True)
        # Keep the .npy suffix on the temporary name: numpy appends one to names without it.
        tmp = guard_write(out.with_name(f".{out.stem}.partial.npy"))
        try:
            computed = evaluation.compute_reference_logits(ctx.build_dir / ref.path, ctx.recipe, tmp, llm=llm)
            os.replace(tmp, out)
        finally:
            tmp.unlink(missing_ok=True)
        progress.remove_task(task)
        ctx.record(LOGITS_KEY, fp, [out], time.perf_counter() - started)
        return computed

    def _check(self, ctx: BuildContext, artifact: Artifact, yardstick: _Yardstick, progress: Progress) -> None:
        from publisher import evaluation
        from publisher.evaluation import LoadedModel, ModelLoadError

        started = time.perf_counter()
        key = work_key(artifact.quant_type)
        ctx.forget(key)
        gguf = ctx.build_dir / artifact.path
        recipe = ctx.recipe
        source = ctx.manifest.source
        task = progress.add_task(f"smoke {artifact.quant_type}", total=STEPS, step="")
        problems: list[str] = []
        updates: dict[str, object] = {
            "smoke": None,
            "tokenizer": None,
            "template": None,
            "quality": None,
            "quality_unavailable": None,
        }
        cannot_load: list[str] = []  # llama.cpp's refusal, reported once: the later steps would only repeat it

        def attempt(name: str, check: Callable[[], T]) -> T | None:
            progress.update(task, step=name)
            if cannot_load:
                return None
            try:
                return check()
            except ModelLoadError as err:
                cannot_load.append(err.detail)
                problems.append(err.detail)
            except PublisherError as err:
                problems.append(f"{name}: {err}")
            finally:
                progress.advance(task)
            return None

        # One load serves prompts, parity, template and quality. When llama.cpp refuses it, parity and template
        # still try their own vocab-only loads and the refusal is reported at the prompts, as if each
        # step loaded the file itself.
        loaded: LoadedModel | None = None
        refused: ModelLoadError | None = None
        try:
            loaded = evaluation.open_for_checks(gguf, recipe)
        except ModelLoadError as err:
            refused = err
        llm = loaded.llm if loaded is not None else None

        # transformers' view of the source, read in a child while llama.cpp generates on half the cores
        read_source = partial(evaluation.prefetch_transformers_view, Path(source.path)) if source is not None else None

        def prompts() -> SmokeResult:
            if refused is not None:
                raise refused
            return evaluation.smoke_test(gguf, recipe, artifact.quant_type, loaded, read_source)

        ref_type = ctx.manifest.reference.quant_type if ctx.manifest.reference is not None else None
        with closing(llm) if llm is not None else nullcontext():
            progress.update(task, step="prompts")
            answered = _run_now(prompts)  # first: see the module's docstring; reported after parity
            if artifact.quant_type == ref_type and yardstick.on_reference:
                yardstick.settle(lambda: self._compute_logits(ctx, progress, llm))
            if recipe.smoke.tokenizer_parity and source is not None:
                tok = attempt(
                    "tokenizer parity", lambda: evaluation.tokenizer_parity(gguf, Path(source.path), recipe, llm)
                )
                updates["tokenizer"] = tok
                if tok is not None and not tok.passed:
                    detail = tok.first_mismatch or f"{tok.mismatches} of {tok.probes} probes differ"
                    problems.append(f"tokenizer parity: {detail}")

            source_dir = Path(source.path) if source is not None else None
            template = attempt("template parity", lambda: evaluation.template_parity(gguf, recipe, source_dir, llm))
            updates["template"] = template
            if template is not None and template.source_matches is False:
                problems.append(f"chat template: {template.source_difference}")
            if template is not None and template.checked and template.matches is False:
                ctx.console.print(
                    f"[yellow]note:[/yellow] {escape(artifact.path)}: the GGUF's chat template renders differently "
                    f"from the recipe's prompt template ({escape(template.difference or 'no detail')})",
                    highlight=False,
                )

            smoke = attempt("prompts", answered)
            updates["smoke"] = smoke
            if smoke is not None and not smoke.passed:
                found = [p for a in smoke.answers for p in a.problems]
                problems.extend(f"smoke: {p}" for p in found or ["the smoke test failed"])

            logits = yardstick.logits
            if logits is not None:
                if artifact.quant_type == ref_type:  # its logits are the yardstick: no second evaluation
                    updates["quality"] = attempt("quality", lambda: evaluation.reference_quality(logits, recipe))
                else:
                    measure = partial(evaluation.measure_quality, gguf, logits, recipe, llm)
                    updates["quality"] = attempt("quality", measure)
            elif yardstick.unavailable is not None:
                updates["quality_unavailable"] = yardstick.unavailable
                if artifact.quant_type == ref_type and not cannot_load:
                    problems.append(f"quality: {yardstick.unavailable}")
        progress.remove_task(task)

        updates["status"] = "failed" if problems else "passed"
        updates["failure"] = "; ".join(problems) if problems else None
        checked = artifact.model_copy(update=updates)
        _store(ctx, checked)
        seconds = time.perf_counter() - started
        ctx.record(key, settings(ctx, checked), [gguf], seconds)
        ctx.console.print(_summary(checked, seconds), highlight=False)


@dataclass
class _Yardstick:
    """The reference's logits every quality pass of a run is measured against, or why there are none."""

    logits: ReferenceLogits | None = None
    unavailable: str | None = None
    on_reference: bool = False  # still to compute, on the handle the reference's own checks load

    def settle(self, get: Callable[[], ReferenceLogits]) -> None:
        """Read or compute them; on failure every file is still tried and quality is marked unavailable."""
        self.on_reference = False
        try:
            self.logits = get()
        except PublisherError as err:
            self.unavailable = f"the reference's logits could not be computed ({err})"


def _run_now(check: Callable[[], T]) -> Callable[[], T]:
    """Run ``check`` now; the callable returned gives its result, or raises the error it raised, later."""
    try:
        value = check()
    except PublisherError as err:
        failure = err

        def fail() -> T:
            raise failure

        return fail
    return lambda: value


def _summary(artifact: Artifact, seconds: float) -> str:
    parts = [
        f"smoke: {escape(artifact.path)} [{'green' if artifact.status == 'passed' else 'red'}]{artifact.status}[/]"
    ]
    if artifact.smoke and artifact.smoke.tokens_per_s:
        parts.append(f"{artifact.smoke.tokens_per_s:.0f} tok/s")
    if artifact.quality:
        parts.append(f"PPL {artifact.quality.perplexity:.2f}")
        if artifact.quality.kl_divergence is not None:
            parts.append(f"KLD {artifact.quality.kl_divergence:.4f}")
    elif artifact.quality_unavailable:
        parts.append(f"quality unavailable: {escape(artifact.quality_unavailable)}")
    if artifact.failure:
        parts.append(escape(artifact.failure))
    return ", ".join(parts) + f" ({seconds:.1f}s)"
