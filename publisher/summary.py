"""A build's files and quality as Markdown tables, for a CI job summary (``publisher summary``)."""

from __future__ import annotations

from pathlib import Path

from publisher.errors import PublishError
from publisher.manifest import MANIFEST_NAME, Artifact, load_manifest
from publisher.recipe import Recipe


def _cell(value: object) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _num(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def _files(recipe: Recipe, artifacts: list[Artifact]) -> list[str]:
    branch_of = {t: b.name for b in recipe.publish.branches for t in b.types}
    lines = [
        "| File | Quant | Bits | Size | Branch | Status | sha256 |",
        "| --- | --- | ---: | ---: | --- | --- | --- |",
    ]
    for a in artifacts:
        name = Path(a.path).name + (f" ({len(a.shards)} parts)" if a.shards else "")
        status = a.status if a.status != "failed" else f"failed: {a.failure or 'see manifest'}"
        lines.append(
            f"| {_cell(name)} | {a.quant_type} | {a.bits_per_weight:.2f} | {a.size_bytes / 1e9:.2f} GB "
            f"| {branch_of.get(a.quant_type, 'main')} | {_cell(status)} | `{a.sha256[:12]}` |"
        )
    return lines


def _quality(artifacts: list[Artifact]) -> list[str]:
    lines = [
        "| Quant | Perplexity | KL divergence | Top-1 agreement | Tokens/s | Smoke |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for a in artifacts:
        q, s = a.quality, a.smoke
        lines.append(
            f"| {a.quant_type} | {_num(q.perplexity if q else None, '.3f')} "
            f"| {_num(q.kl_divergence if q else None, '.4f')} "
            f"| {_num(q.top1_agreement * 100 if q and q.top1_agreement is not None else None, '.1f')}"
            f"{'%' if q and q.top1_agreement is not None else ''} "
            f"| {_num(s.tokens_per_s if s else None, '.1f')} "
            f"| {'n/a' if s is None else ('passed' if s.passed else 'failed')} |"
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
