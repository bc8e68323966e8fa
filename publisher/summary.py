"""A build's files and quality as Markdown tables, for a CI job summary (``publisher summary``)."""

from __future__ import annotations

from pathlib import Path

from publisher import report
from publisher.errors import PublishError
from publisher.manifest import MANIFEST_NAME, Artifact, load_manifest
from publisher.recipe import Recipe


def _cell(value: object) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _files(recipe: Recipe, artifacts: list[Artifact]) -> list[str]:
    branch_of = recipe.publish.branch_of()
    lines = [
        "| File | Quant | Bits | Size | Branch | Status | sha256 |",
        "| --- | --- | ---: | ---: | --- | --- | --- |",
    ]
    for a in artifacts:
        name = Path(a.path).name + (f" ({len(a.shards)} parts)" if a.shards else "")
        status = a.status if a.status != "failed" else f"failed: {a.failure or 'see manifest'}"
        lines.append(
            f"| {_cell(name)} | {a.quant_type} | {a.bits_per_weight:.2f} | {report.format_bytes(a.size_bytes, 'GB')} "
            f"| {branch_of.get(a.quant_type, 'main')} | {_cell(status)} | `{a.sha256[:12]}` |"
        )
    return lines


def _quality(artifacts: list[Artifact]) -> list[str]:
    lines = [
        "| Quant | Perplexity | KL divergence | Top-1 agreement | Tokens/s | Smoke |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for a in artifacts:
        cells = report.quality_cells(a, report.SUMMARY)
        smoke = report.SUMMARY.missing if a.smoke is None else ("passed" if a.smoke.passed else "failed")
        lines.append(
            f"| {a.quant_type} | {cells.perplexity} | {cells.kl_divergence} | {cells.top1_agreement} "
            f"| {cells.tokens_per_s} | {smoke} |"
        )
    return lines


def build_summary(recipe: Recipe, workdir: Path) -> str:
    """Markdown with the provided-files and quality tables of the build of ``recipe``."""
    build_dir = workdir / recipe.build_name
    manifest = load_manifest(build_dir)
    if manifest is None:
        raise PublishError(f"{build_dir / MANIFEST_NAME}: no build manifest; run `publisher build` first")
    artifacts = list(manifest.artifacts.values())
    parts = [
        f"## {_cell(recipe.model.name)}: {recipe.publish.repo_id}",
        "",
        f"Build `{manifest.build_name}`, recipe sha256 `{manifest.recipe_sha256[:12]}`.",
        "",
        "### Provided files",
        "",
        *_files(recipe, artifacts),
        "",
        "### Quality",
        "",
        *_quality(artifacts),
        "",
    ]
    return "\n".join(parts)
