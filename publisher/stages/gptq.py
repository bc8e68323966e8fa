"""gptq: each variant of the recipe's gptq section as a folder artifact, made by gptqmodel in its own environment.

The worker (``publisher/gptq/worker.py``) runs under ``.venv-gptq``; this stage hands it the source
folder, the variant's settings and the calibration text, then makes the folder publishable
(``publisher.gptq.folder``): the source's tokenizer and generation config back, the calibration
facts recorded. The folder is written as ``gptq/.<branch>.partial`` and renamed when complete;
every file in it is hashed and the whole recorded under ``manifest.gptq[<branch>]``.
"""

from __future__ import annotations

import hashlib
import shutil
import time
from importlib import resources
from pathlib import Path

from publisher.errors import ManifestError, RecipeError
from publisher.gptq import folder as gptq_folder
from publisher.gptq.runner import environment_id, missing_reason, run_worker
from publisher.manifest import Artifact, GptqParameters, fingerprint, folder_digest, guard_write
from publisher.recipe.gptq import GptqVariant
from publisher.stages import BuildContext, Stage, register

GPTQ_DIR = "gptq"
CALIBRATION_FILE = "calibration.txt"


def work_key(branch: str) -> str:
    """The manifest key of one variant's gptq record."""
    return f"gptq/{branch}"


def calibration_path(ctx: BuildContext) -> Path:
    """The recipe's calibration text, or the one shipped with publisher."""
    assert ctx.recipe.gptq is not None
    if ctx.recipe.gptq.calibration is None:
        return Path(str(resources.files("publisher").joinpath("data", CALIBRATION_FILE)))
    return ctx.recipe.resolve_path(ctx.recipe.gptq.calibration)


def _calibration_sha256(ctx: BuildContext) -> str:
    path = calibration_path(ctx)
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as err:
        raise RecipeError([f"{ctx.recipe.where('gptq', 'calibration')}: cannot read {path} ({err.strerror})"]) from None


def settings(ctx: BuildContext, variant: GptqVariant) -> str:
    """Fingerprint of what makes one variant: the source files, its settings, the calibration and the environment."""
    gptq = ctx.recipe.gptq
    assert gptq is not None
    source = ctx.manifest.source
    return fingerprint(
        "gptq",
        source.files if source else None,
        variant.model_dump(mode="json", exclude={"description"}),
        _calibration_sha256(ctx),
        gptq.samples,
        gptq.seq_len,
        gptq.device,
        environment_id(),
    )


def artifact_current(ctx: BuildContext, variant: GptqVariant) -> bool:
    """True when the variant is recorded with the current fingerprint and every file still hashes right."""
    artifact = ctx.manifest.gptq.get(variant.branch_name)
    fp = settings(ctx, variant)
    return artifact is not None and artifact.fingerprint == fp and ctx.is_current(work_key(variant.branch_name), fp)


def _check_shape(ctx: BuildContext, index: int, variant: GptqVariant) -> None:
    """Refuse a group size that does not divide the width of the layers it groups."""
    source = ctx.manifest.source
    arch = source.facts.architecture if source and source.facts else None
    if arch is None or variant.group_size == -1:
        return
    widths = {"hidden size": arch.hidden, "attention width": arch.n_heads * arch.head_dim}
    if arch.intermediate:
        widths["intermediate size"] = arch.intermediate
    for what, width in widths.items():
        if width % variant.group_size:
            raise RecipeError(
                [
                    f"{ctx.recipe.where('gptq', 'variants', index, 'group_size')}: group size {variant.group_size} "
                    f"does not divide the model's {what} {width}; use a divisor such as 32 or 64"
                ]
            )


def exllama_compatible(variant: GptqVariant) -> bool:
    """Whether ExLlama and Marlin kernels load it: 4 bits, symmetric, a group size they support."""
    return variant.bits == 4 and variant.group_size in (-1, 32, 64, 128)


@register("gptq")
class GptqStage(Stage):
    """Make every GPTQ variant of the recipe as a folder, and record its files, size and parameters."""

    name = "gptq"
    after = ("fetch",)

    def applies(self, ctx: BuildContext) -> bool:
        """Only recipes with a gptq section."""
        return ctx.recipe.gptq is not None

    def blocked_reason(self, ctx: BuildContext) -> str | None:
        """The GPTQ environment is not installed."""
        return missing_reason()

    def is_done(self, ctx: BuildContext) -> bool:
        """Every variant is recorded with the current fingerprint and its files hash right."""
        gptq = ctx.recipe.gptq
        return gptq is not None and all(artifact_current(ctx, v) for v in gptq.variants)

    def run(self, ctx: BuildContext) -> None:
        """Make the variants that are missing, stale or forced."""
        gptq = ctx.recipe.gptq
        source = ctx.manifest.source
        if gptq is None:
            return
        if source is None or not ctx.files_match(source.files, Path(source.path)):
            raise ManifestError(f"{ctx.build_dir}: gptq needs the fetched source; run with --stages fetch")
        forced = self.name in ctx.forced
        for index, variant in enumerate(gptq.variants):
            _check_shape(ctx, index, variant)
        for variant in gptq.variants:
            if forced or not artifact_current(ctx, variant):
                self._one(ctx, variant, Path(source.path))
        order = {b: i for i, b in enumerate(gptq.branches())}
        ctx.manifest.gptq = dict(sorted(ctx.manifest.gptq.items(), key=lambda kv: order.get(kv[0], len(order))))
        ctx.save()

    def _one(self, ctx: BuildContext, variant: GptqVariant, source: Path) -> None:
        gptq = ctx.recipe.gptq
        assert gptq is not None
        branch = variant.branch_name
        started = time.perf_counter()
        ctx.forget(work_key(branch))
        ctx.manifest.gptq.pop(branch, None)
        final = guard_write(ctx.build_dir / GPTQ_DIR / branch)
        partial = guard_write(final.with_name(f".{branch}.partial"))
        shutil.rmtree(partial, ignore_errors=True)
        calibration = calibration_path(ctx)
        ctx.console.print(f"gptq: {branch} ({gptq.samples} x {gptq.seq_len} tokens of {calibration.name})")
        result = run_worker(
            {
                "op": "quantize",
                "source": str(source),
                "out": str(partial),
                "bits": variant.bits,
                "group_size": variant.group_size,
                "act_order": variant.act_order,
                "damp": variant.damp,
                "calibration": str(calibration),
                "samples": gptq.samples,
                "seq_len": gptq.seq_len,
                "device": gptq.device,
            },
            ctx.build_dir / GPTQ_DIR,
            ctx.logs_dir() / f"gptq-{branch}.log",
        )
        params = GptqParameters(
            bits=variant.bits,
            group_size=variant.group_size,
            act_order=variant.act_order,
            damp=variant.damp,
            dataset=calibration.name,
            dataset_sha256=_calibration_sha256(ctx),
            samples=int(result["samples"]),
            seq_len=int(result["seq_len"]),
            branch=branch,
            quantizer=str(result["quantizer"]),
        )
        gptq_folder.restore_source_files(partial, source)
        gptq_folder.move_quant_log(partial, ctx.logs_dir(), f"gptq-{branch}")
        gptq_folder.record_calibration(
            partial, {"dataset": params.dataset, "samples": params.samples, "seq_len": params.seq_len}
        )
        shutil.rmtree(final, ignore_errors=True)
        partial.rename(final)
        files = gptq_folder.folder_files(final)
        hashes = {p.relative_to(final).as_posix(): ctx.hash_file(p) for p in files}
        size = sum(p.stat().st_size for p in files)
        parameters = ctx.manifest.source.parameters if ctx.manifest.source else None
        fp = settings(ctx, variant)
        ctx.manifest.gptq[branch] = Artifact(
            quant_type=branch,
            path=final.relative_to(ctx.build_dir).as_posix(),
            size_bytes=size,
            sha256=folder_digest(hashes),
            bits_per_weight=round(size * 8 / parameters, 3) if parameters else float(variant.bits),
            fingerprint=fp,
            format="gptq",
            files=hashes,
            gptq=params,
        )
        seconds = time.perf_counter() - started
        ctx.record(work_key(branch), fp, files, seconds)
        ctx.console.print(
            f"gptq: {branch} {size / 1e6:.1f} MB in {seconds:.1f}s (worker {result['seconds']:.1f}s, "
            f"peak {result['peak_rss_bytes'] / 1e9:.2f} GB)"
        )
