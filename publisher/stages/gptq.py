"""gptq and awq: each variant of the recipe's gptq or awq section as a folder artifact, made by gptqmodel.

The worker (``publisher/gptq/worker.py``) runs under ``.venv-gptq``; this stage hands it the source
folder, the variant's settings and the calibration text, then makes the folder publishable
(``publisher.gptq.folder``): the source's tokenizer and generation config back, the calibration
facts recorded. The folder is written as ``<format>/.<branch>.partial`` and renamed when complete;
every file in it is hashed and the whole recorded under ``manifest.<format>[<branch>]``.
:class:`FormatStage` is what the three stages of each format (make, smoke, card) share.
"""

from __future__ import annotations

import hashlib
import shutil
import time
from importlib import resources
from pathlib import Path
from typing import ClassVar

from publisher.errors import ManifestError, RecipeError
from publisher.folder_formats import AWQ, GPTQ, FolderFormat
from publisher.gptq import folder as gptq_folder
from publisher.gptq.runner import environment_id, missing_reason, run_worker
from publisher.manifest import Artifact, fingerprint, folder_digest, guard_write
from publisher.recipe.gptq import FolderSection, FolderVariant
from publisher.stages import BuildContext, Stage, register

CALIBRATION_FILE = "calibration.txt"


class FormatStage(Stage):
    """A stage of one folder format: it applies when the recipe has that section, and needs the environment."""

    fmt: ClassVar[FolderFormat]

    def section(self, ctx: BuildContext) -> FolderSection:
        """The recipe's section for this stage's format (the stage applies only when there is one)."""
        section = self.fmt.section(ctx.recipe)
        assert section is not None
        return section

    def applies(self, ctx: BuildContext) -> bool:
        """Only recipes with this format's section."""
        return self.fmt.section(ctx.recipe) is not None

    def blocked_reason(self, ctx: BuildContext) -> str | None:
        """The quantizer's environment is not installed."""
        return missing_reason()


def work_key(fmt: FolderFormat, branch: str) -> str:
    """The manifest key of one variant's record."""
    return f"{fmt.name}/{branch}"


def calibration_path(ctx: BuildContext, fmt: FolderFormat) -> Path:
    """The section's calibration text, or the one shipped with publisher."""
    section = fmt.section(ctx.recipe)
    assert section is not None
    if section.calibration is None:
        return Path(str(resources.files("publisher").joinpath("data", CALIBRATION_FILE)))
    return ctx.recipe.resolve_path(section.calibration)


def _calibration_sha256(ctx: BuildContext, fmt: FolderFormat) -> str:
    path = calibration_path(ctx, fmt)
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as err:
        raise RecipeError(
            [f"{ctx.recipe.where(fmt.name, 'calibration')}: cannot read {path} ({err.strerror})"]
        ) from None


def settings(ctx: BuildContext, fmt: FolderFormat, variant: FolderVariant) -> str:
    """Fingerprint of what makes one variant: the source files, its settings, the calibration and the environment."""
    section = fmt.section(ctx.recipe)
    assert section is not None
    source = ctx.manifest.source
    return fingerprint(
        fmt.name,
        source.files if source else None,
        variant.model_dump(mode="json", exclude={"description"}),
        _calibration_sha256(ctx, fmt),
        section.samples,
        section.seq_len,
        section.device,
        environment_id(),
    )


def artifact_current(ctx: BuildContext, fmt: FolderFormat, variant: FolderVariant) -> bool:
    """True when the variant is recorded with the current fingerprint and every file still hashes right."""
    artifact = fmt.records(ctx.manifest).get(variant.branch_name)
    fp = settings(ctx, fmt, variant)
    return (
        artifact is not None and artifact.fingerprint == fp and ctx.is_current(work_key(fmt, variant.branch_name), fp)
    )


def _check_shape(ctx: BuildContext, fmt: FolderFormat, index: int, variant: FolderVariant) -> None:
    """Refuse a group size that does not divide the width of the layers it groups, or rows the quantizer cannot take."""
    source = ctx.manifest.source
    arch = source.facts.architecture if source and source.facts else None
    if arch is None:
        return
    widths = {"hidden size": arch.hidden, "attention width": arch.n_heads * arch.head_dim}
    if arch.intermediate:
        widths["intermediate size"] = arch.intermediate
    for what, width in widths.items():
        if variant.group_size != -1 and width % variant.group_size:
            raise RecipeError(
                [
                    f"{ctx.recipe.where(fmt.name, 'variants', index, 'group_size')}: group size {variant.group_size} "
                    f"does not divide the model's {what} {width}; use a divisor such as 32 or 64"
                ]
            )
    rows = {**widths, "key/value width": arch.n_kv_heads * arch.head_dim}
    for what, width in rows.items():
        if width % variant.row_multiple:
            raise RecipeError(
                [
                    f"{ctx.recipe.where(fmt.name, 'variants', index)}: {variant.kind} needs layer widths that are "
                    f"multiples of {variant.row_multiple}; the model's {what} is {width}"
                ]
            )


class FolderQuantizeStage(FormatStage):
    """Make every variant of the format's section as a folder, and record its files, size and parameters."""

    after = ("fetch",)

    def is_done(self, ctx: BuildContext) -> bool:
        """Every variant is recorded with the current fingerprint and its files hash right."""
        section = self.fmt.section(ctx.recipe)
        return section is not None and all(artifact_current(ctx, self.fmt, v) for v in section.variants)

    def run(self, ctx: BuildContext) -> None:
        """Make the variants that are missing, stale or forced."""
        section = self.fmt.section(ctx.recipe)
        source = ctx.manifest.source
        if section is None:
            return
        if source is None or not ctx.files_match(source.files, Path(source.path)):
            raise ManifestError(f"{ctx.build_dir}: {self.name} needs the fetched source; run with --stages fetch")
        forced = self.name in ctx.forced
        for index, variant in enumerate(section.variants):
            _check_shape(ctx, self.fmt, index, variant)
        for variant in section.variants:
            if forced or not artifact_current(ctx, self.fmt, variant):
                self._one(ctx, variant, Path(source.path))
        order = {b: i for i, b in enumerate(section.branches())}
        records = self.fmt.records(ctx.manifest)
        setattr(ctx.manifest, self.fmt.name, dict(sorted(records.items(), key=lambda kv: order.get(kv[0], len(order)))))
        ctx.save()

    def _one(self, ctx: BuildContext, variant: FolderVariant, source: Path) -> None:
        section = self.section(ctx)
        fmt = self.fmt
        branch = variant.branch_name
        started = time.perf_counter()
        ctx.forget(work_key(fmt, branch))
        fmt.records(ctx.manifest).pop(branch, None)
        final = guard_write(ctx.build_dir / fmt.name / branch)
        partial = guard_write(final.with_name(f".{branch}.partial"))
        shutil.rmtree(partial, ignore_errors=True)
        calibration = calibration_path(ctx, fmt)
        ctx.console.print(f"{self.name}: {branch} ({section.samples} x {section.seq_len} tokens of {calibration.name})")
        result = run_worker(
            {
                "op": "quantize",
                "method": fmt.name,
                "source": str(source),
                "out": str(partial),
                **variant.settings(),
                "calibration": str(calibration),
                "samples": section.samples,
                "seq_len": section.seq_len,
                "device": section.device,
            },
            ctx.build_dir / fmt.name,
            ctx.logs_dir() / f"{fmt.name}-{branch}.log",
        )
        params = fmt.make_parameters(
            variant,
            dataset=calibration.name,
            dataset_sha256=_calibration_sha256(ctx, fmt),
            samples=int(result["samples"]),
            seq_len=int(result["seq_len"]),
            branch=branch,
            quantizer=str(result["quantizer"]),
        )
        gptq_folder.restore_source_files(partial, source)
        gptq_folder.move_quant_log(partial, ctx.logs_dir(), f"{fmt.name}-{branch}")
        gptq_folder.record_calibration(
            partial, {"dataset": params.dataset, "samples": params.samples, "seq_len": params.seq_len}
        )
        shutil.rmtree(final, ignore_errors=True)
        partial.rename(final)
        files = gptq_folder.folder_files(final)
        hashes = {p.relative_to(final).as_posix(): ctx.hash_file(p) for p in files}
        size = sum(p.stat().st_size for p in files)
        parameters = ctx.manifest.source.parameters if ctx.manifest.source else None
        fp = settings(ctx, fmt, variant)
        fmt.records(ctx.manifest)[branch] = Artifact.model_validate(
            {
                "quant_type": branch,
                "path": final.relative_to(ctx.build_dir).as_posix(),
                "size_bytes": size,
                "sha256": folder_digest(hashes),
                "bits_per_weight": round(size * 8 / parameters, 3) if parameters else float(variant.bits),
                "fingerprint": fp,
                "format": fmt.name,
                "files": hashes,
                fmt.name: params.model_dump(),
            }
        )
        seconds = time.perf_counter() - started
        ctx.record(work_key(fmt, branch), fp, files, seconds)
        ctx.console.print(
            f"{self.name}: {branch} {size / 1e6:.1f} MB in {seconds:.1f}s (worker {result['seconds']:.1f}s, "
            f"peak {result['peak_rss_bytes'] / 1e9:.2f} GB)"
        )


@register("gptq")
class GptqStage(FolderQuantizeStage):
    """Make every GPTQ variant."""

    fmt = GPTQ


@register("awq")
class AwqStage(FolderQuantizeStage):
    """Make every AWQ variant."""

    fmt = AWQ
