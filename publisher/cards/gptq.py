"""The GPTQ and AWQ cards: TheBloke's branch table (one branch per parameter set), downloads and run instructions.

Every figure comes from the manifest's records of the format: the parameters each variant was made
with (dataset and sequence length included, which gptqmodel does not record), the folder's size
and the quality the smoke stage measured against the same reference as the GGUF rows. The two
cards share everything but the format's own columns and prose (``gptq.md.j2``, ``awq.md.j2``).
"""

from __future__ import annotations

import re
from typing import Any

from publisher.cards.environment import environment, render_template
from publisher.cards.frontmatter import frontmatter_data, yaml_dump
from publisher.cards.rows import HUB
from publisher.folder_formats import FolderFormat
from publisher.manifest import Artifact, AwqParameters, FolderParameters, GptqParameters, Manifest
from publisher.recipe import Recipe
from publisher.report import format_bytes


def exllama_compatible(params: GptqParameters) -> bool:
    """Whether ExLlama (v1/v2) and Marlin load it: 4 bits, symmetric, a group size their kernels take."""
    return params.bits == 4 and params.sym and params.group_size in (-1, 32, 64, 128)


def _own_cells(params: FolderParameters) -> dict[str, str]:
    """The columns only this format's table has."""
    if isinstance(params, GptqParameters):
        return {
            "act_order": "Yes" if params.act_order else "No",
            "damp": f"{params.damp:g}",
            "exllama": "Yes" if exllama_compatible(params) else "No",
        }
    if isinstance(params, AwqParameters):
        return {"version": params.version.upper(), "zero_point": "Yes" if params.zero_point else "No"}
    return {}


def _row(recipe: Recipe, fmt: FolderFormat, repo: str, main: str, artifact: Artifact) -> dict[str, Any]:
    params = fmt.parameters(artifact)
    section = fmt.section(recipe)
    assert params is not None and section is not None
    branch = "main" if params.branch == main else params.branch
    quality = artifact.quality
    description = section.variant(params.branch).description
    return {
        "branch": branch,
        "url": f"{HUB}/{repo}/tree/{branch}",
        "bits": params.bits,
        "group_size": "None" if params.group_size == -1 else str(params.group_size),
        "dataset": params.dataset,
        "seq_len": params.seq_len,
        "size": format_bytes(artifact.size_bytes),
        "perplexity": f"{quality.perplexity:.2f}" if quality else "—",
        "kl_divergence": f"{quality.kl_divergence:.4f}" if quality and quality.kl_divergence is not None else "—",
        "description": description or f"{params.bits}-bit, {params.samples} calibration samples",
        **_own_cells(params),
    }


def folder_context(recipe: Recipe, manifest: Manifest, fmt: FolderFormat) -> dict[str, Any]:
    """Everything the format's card template shows, as plain data."""
    section = fmt.section(recipe)
    assert section is not None
    repo = section.repo(recipe.publish.repo_id)
    records = fmt.records(manifest)
    done = [records[b] for b in section.branches() if b in records and records[b].status == "passed"]
    rows = [_row(recipe, fmt, repo, section.main_branch, a) for a in done]
    first = fmt.parameters(done[0]) if done else None
    reference = manifest.reference
    model = recipe.model
    original = (model.base_model[0] if model.base_model else None) or recipe.source.repo
    return {
        "title": f"{model.name} - {fmt.label}",
        "repo_id": repo,
        "gguf_repo": recipe.publish.repo_id,
        "model": model.model_dump(mode="json"),
        "original_repo": original,
        "profile": recipe.card.profile.model_dump(mode="json"),
        "rows": rows,
        "example": next((r["branch"] for r in rows if r["branch"] != "main"), "main"),
        "quantizer": first.quantizer if first else "gptqmodel",
        "reference_type": reference.quant_type if reference else None,
        "reference_quality": reference.quality.model_dump() if reference and reference.quality else None,
        "quality_tokens": next((a.quality.tokens for a in done if a.quality), None),
        "folder_name": re.sub(r"[^A-Za-z0-9_.-]+", "_", repo.split("/")[-1]),
    }


def render_folder_card(recipe: Recipe, manifest: Manifest, fmt: FolderFormat) -> str:
    """The sibling repo's ``README.md``: the GGUF card's frontmatter with transformers' tags, then the body."""
    section = fmt.section(recipe)
    front = frontmatter_data(recipe, None) | {"library_name": "transformers"}
    bits = {v.bits for v in section.variants} if section else set()
    front["tags"] = [*front.get("tags", []), fmt.name, *([f"{bits.pop()}-bit"] if len(bits) == 1 else [])]
    front["tags"] = list(dict.fromkeys(front["tags"]))
    body = render_template(environment(recipe), fmt.template, folder_context(recipe, manifest, fmt))
    body = re.sub(r"\n{3,}", "\n\n", body).strip()
    return f"---\n{yaml_dump(front, sort_keys=False).strip()}\n---\n\n{body}\n"
