"""The rows of the card's tables: provided files, measured quality, branches, download commands."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from publisher import report
from publisher.cards.gate import counted
from publisher.cards.text import shell_quote
from publisher.formats import gguf_quants
from publisher.manifest import Artifact, Manifest
from publisher.recipe import Recipe
from publisher.report import format_bytes

HUB = "https://huggingface.co"
# llama.cpp's compute buffers, the tokenizer and the process itself, on top of weights and KV cache.
# Measured llama.cpp compute buffers for 7B-14B models at 4k context are 0.2-0.4 GB; we round up.
RAM_OVERHEAD_BYTES = 500_000_000


@dataclasses.dataclass(frozen=True)
class FileRow:
    """One row of the provided-files table."""

    name: str
    url: str
    quant_type: str
    method: str
    bits: str
    size: str
    size_bytes: int | None
    max_ram: str
    use_case: str
    branch: str
    parts: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class QualityRow:
    """One row of the measured-quality table (pre-formatted strings)."""

    name: str
    quant_type: str
    perplexity: str
    kl_divergence: str
    top1_agreement: str
    tokens_per_s: str
    smoke_answer: str
    checks: str


@dataclasses.dataclass(frozen=True)
class BranchRow:
    """One row of the branch table."""

    name: str
    url: str
    types: tuple[str, ...]
    bits: str
    size: str
    description: str
    files: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Download:
    """A shell command that downloads some of the repo's files."""

    what: str
    command: str


def _file_url(repo_id: str, branch: str, name: str) -> str:
    return f"{HUB}/{repo_id}/blob/{branch}/{name}"


def _use_case(quant_type: str, offered: set[str]) -> str:
    """The catalogue's use case, its advice to prefer other types cut down to the types this repo offers."""
    entry = gguf_quants.CATALOGUE.get(quant_type)
    if entry is None:
        return ""
    clauses = []
    for clause in entry.use_case.split("; "):
        advice = re.match(r"prefer (.+?)( where .*)?$", clause)
        if advice is None:
            clauses.append(clause)
            continue
        named = [name for name in advice.group(1).split(" or ") if name in offered]
        if named:
            clauses.append(f"prefer {' or '.join(named)}{advice.group(2) or ''}")
    return "; ".join(clauses)


def _method(quant_type: str) -> str:
    entry = gguf_quants.CATALOGUE.get(quant_type)
    return entry.name if entry else quant_type


def _ram(size_bytes: int | None, kv_bytes: int | None) -> str:
    if size_bytes is None or kv_bytes is None:
        return "unknown"
    return format_bytes(size_bytes + kv_bytes + RAM_OVERHEAD_BYTES)


def measured_rows(recipe: Recipe, manifest: Manifest, kv_bytes: int | None) -> list[FileRow]:
    """One row per passed artifact, with the sizes the build measured."""
    branch_of = recipe.publish.branch_of()
    rows = []
    offered = {a.base_type or a.quant_type for a in manifest.passed_artifacts()}
    for artifact in manifest.passed_artifacts():
        branch = branch_of.get(artifact.quant_type, "main")
        parts = tuple(Path(p).name for p in artifact.shards) or (Path(artifact.path).name,)
        rows.append(
            FileRow(
                name=parts[0],
                url=_file_url(recipe.publish.repo_id, branch, parts[0]),
                quant_type=artifact.quant_type,
                method=_method(artifact.base_type or artifact.quant_type),
                bits=f"{artifact.bits_per_weight:.2f}",
                size=format_bytes(artifact.size_bytes),
                size_bytes=artifact.size_bytes,
                max_ram=_ram(artifact.size_bytes, kv_bytes),
                use_case=_use_case(artifact.base_type or artifact.quant_type, offered),
                branch=branch,
                parts=parts,
            )
        )
    return rows


def estimated_rows(recipe: Recipe, parameters: int | None, kv_bytes: int | None) -> list[FileRow]:
    """One row per recipe type, sized from the parameter count and the type's nominal bits (marked ``~``)."""
    branch_of = recipe.publish.branch_of()
    rows = []
    offered = {recipe.quantize.variant(name).type for name in recipe.quantize.names}
    for quant_type in recipe.quantize.names:
        entry = gguf_quants.CATALOGUE[recipe.quantize.variant(quant_type).type]
        size = round(parameters * entry.nominal_bpw / 8) if parameters else None
        name = recipe.artifact_filename(quant_type)
        branch = branch_of.get(quant_type, "main")
        rows.append(
            FileRow(
                name=name,
                url=_file_url(recipe.publish.repo_id, branch, name),
                quant_type=quant_type,
                method=entry.name,
                bits=f"~{entry.nominal_bpw:.2f}",
                size=f"~{format_bytes(size)}" if size else "unknown",
                size_bytes=size,
                max_ram=f"~{_ram(size, kv_bytes)}" if size and kv_bytes else "unknown",
                use_case=_use_case(entry.name, offered),
                branch=branch,
                parts=(name,),
            )
        )
    return rows


def _shorten(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit].rstrip() + "…"


def quality_rows(manifest: Manifest) -> list[QualityRow]:
    """The reference, then every passed artifact that was measured or smoke-tested."""
    rows = []
    measured = [a for a in ([manifest.reference] if manifest.reference else []) + manifest.passed_artifacts() if a]
    for artifact in measured:
        smoke = artifact.smoke
        if artifact.quality is None and smoke is None:
            continue
        is_reference = artifact is manifest.reference
        cells = report.quality_cells(artifact, report.CARD)
        rows.append(
            QualityRow(
                name=Path(artifact.path).name + (" (reference)" if is_reference else ""),
                quant_type=artifact.quant_type,
                perplexity=cells.perplexity,
                kl_divergence="0 (reference)" if is_reference else cells.kl_divergence,
                top1_agreement="100% (reference)" if is_reference else cells.top1_agreement,
                tokens_per_s=cells.tokens_per_s,
                smoke_answer=_shorten(smoke.output) if smoke and smoke.output.strip() else report.CARD.missing,
                checks=_checks_cell(artifact),
            )
        )
    return rows


def _checks_cell(artifact: Artifact) -> str:
    """Tokenizer parity and advisory expectations, in a few words for the quality table."""
    parts = []
    if artifact.tokenizer is not None:
        tokenizer = artifact.tokenizer
        parts.append(f"tokenizer parity {counted(tokenizer.probes, tokenizer.mismatches)} probes")
        if tokenizer.sample_strings:
            parts[-1] += f", {counted(tokenizer.sample_strings, tokenizer.sample_mismatches)} sample"
    if artifact.template is not None and artifact.template.shapes_compared:
        template = artifact.template
        parts.append(f"template {counted(template.shapes_compared, template.shapes_differing)} renderings")
    missed = [
        failure.split(":", 1)[0].removeprefix("the answer ")
        for answer in (artifact.smoke.answers if artifact.smoke else [])
        for failure in answer.advisories
    ]
    if missed:
        parts.append("advisory: answer " + ", ".join(dict.fromkeys(missed)))
    return "; ".join(parts) or report.CARD.missing


def branch_rows(recipe: Recipe, files: list[FileRow]) -> list[BranchRow]:
    """One row per branch the files land on (``main`` first when files stay there)."""
    declared = [(b.name, b.description) for b in recipe.publish.branches]
    if not any(name == "main" for name, _d in declared) and any(f.branch == "main" for f in files):
        declared.insert(0, ("main", "Files not placed on another branch"))
    rows = []
    for name, description in declared:
        mine = [f for f in files if f.branch == name]
        known = [f.size_bytes for f in mine if f.size_bytes is not None]
        estimated = any(f.size.startswith("~") for f in mine)
        total = format_bytes(sum(known)) if mine and len(known) == len(mine) else "unknown"
        rows.append(
            BranchRow(
                name=name,
                url=f"{HUB}/{recipe.publish.repo_id}/tree/{name}",
                types=tuple(f.quant_type for f in mine),
                bits=", ".join(f.bits for f in mine) or "—",
                size=("~" if estimated and total != "unknown" else "") + total,
                description=description,
                files=tuple(p for f in mine for p in f.parts),
            )
        )
    return rows


def downloads(recipe: Recipe, files: list[FileRow], branches: list[BranchRow]) -> tuple[list[Download], list[Download]]:
    """``(one command per file, one command per branch)``."""
    repo = recipe.publish.repo_id
    per_file = []
    for f in files:
        revision = "" if f.branch == "main" else f" --revision {shell_quote(f.branch)}"
        names = " ".join(shell_quote(p) for p in f.parts)
        per_file.append(Download(f.name, f"hf download {repo}{revision} {names} --local-dir ."))
    per_branch = [
        Download(
            b.name,
            f"hf download {repo} --revision {shell_quote(b.name)} --local-dir {shell_quote(_folder(repo, b.name))}",
        )
        for b in branches
        if recipe.publish.branches
    ]
    return per_file, per_branch


def _folder(repo: str, branch: str) -> str:
    name = repo.split("/")[-1]
    return name if branch == "main" else f"{name}-{branch.replace('/', '-')}"


def example_file(files: list[FileRow]) -> FileRow | None:
    """The file the run examples use: Q4_K_M when built, else the one closest to 4.9 bits per weight."""
    if not files:
        return None
    for f in files:
        if f.quant_type == "Q4_K_M":
            return f
    return min(
        files,
        key=lambda f: (
            abs(gguf_quants.CATALOGUE[f.quant_type].nominal_bpw - 4.9) if f.quant_type in gguf_quants.CATALOGUE else 99
        ),
    )
