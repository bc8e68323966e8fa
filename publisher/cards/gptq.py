"""The GPTQ card: TheBloke's branch table (one branch per parameter set), downloads and run instructions.

Every figure comes from the manifest's ``gptq`` records: the parameters each variant was made
with (dataset and sequence length included, which gptqmodel does not record), the folder's size
and the quality the gptq-smoke stage measured against the same reference as the GGUF rows.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

from publisher.cards.environment import environment, render_template
from publisher.cards.frontmatter import frontmatter_data, yaml_dump
from publisher.cards.rows import HUB
from publisher.manifest import Artifact, Manifest
from publisher.recipe import Recipe
from publisher.report import format_bytes

TEMPLATE = "gptq.md.j2"


@dataclass(frozen=True)
class GptqRow:
    """One row of the branch table."""

    branch: str
    url: str
    bits: int
    group_size: str
    act_order: str
    damp: str
    dataset: str
    seq_len: int
    size: str
    exllama: str
    perplexity: str
    kl_divergence: str
    description: str


def exllama_compatible(artifact: Artifact) -> bool:
    """Whether ExLlama (v1/v2) and Marlin load it: 4 bits, symmetric, a group size their kernels take."""
    params = artifact.gptq
    return params is not None and params.bits == 4 and params.sym and params.group_size in (-1, 32, 64, 128)


def _row(recipe: Recipe, repo: str, main: str, artifact: Artifact) -> GptqRow:
    params = artifact.gptq
    assert params is not None and recipe.gptq is not None
    branch = "main" if params.branch == main else params.branch
    quality = artifact.quality
    description = recipe.gptq.variant(params.branch).description
    return GptqRow(
        branch=branch,
        url=f"{HUB}/{repo}/tree/{branch}",
        bits=params.bits,
        group_size="None" if params.group_size == -1 else str(params.group_size),
        act_order="Yes" if params.act_order else "No",
        damp=f"{params.damp:g}",
        dataset=params.dataset,
        seq_len=params.seq_len,
        size=format_bytes(artifact.size_bytes),
        exllama="Yes" if exllama_compatible(artifact) else "No",
        perplexity=f"{quality.perplexity:.2f}" if quality else "—",
        kl_divergence=f"{quality.kl_divergence:.4f}" if quality and quality.kl_divergence is not None else "—",
        description=description or f"{params.bits}-bit, {params.samples} calibration samples",
    )


def gptq_context(recipe: Recipe, manifest: Manifest) -> dict[str, Any]:
    """Everything the GPTQ card template shows, as plain data."""
    gptq = recipe.gptq
    assert gptq is not None
    repo = gptq.repo(recipe.publish.repo_id)
    done = [manifest.gptq[b] for b in gptq.branches() if b in manifest.gptq and manifest.gptq[b].status == "passed"]
    rows = [_row(recipe, repo, gptq.main_branch, a) for a in done]
    reference = manifest.reference
    model = recipe.model
    original = (model.base_model[0] if model.base_model else None) or recipe.source.repo
    return {
        "title": f"{model.name} - GPTQ",
        "repo_id": repo,
        "gguf_repo": recipe.publish.repo_id,
        "model": model.model_dump(mode="json"),
        "original_repo": original,
        "profile": recipe.card.profile.model_dump(mode="json"),
        "rows": [asdict(r) for r in rows],
        "example": next((r.branch for r in rows if r.branch != "main"), "main"),
        "quantizer": done[0].gptq.quantizer if done and done[0].gptq else "gptqmodel",
        "reference_type": reference.quant_type if reference else None,
        "reference_quality": reference.quality.model_dump() if reference and reference.quality else None,
        "quality_tokens": next((a.quality.tokens for a in done if a.quality), None),
        "folder_name": re.sub(r"[^A-Za-z0-9_.-]+", "_", repo.split("/")[-1]),
    }


def render_gptq_card(recipe: Recipe, manifest: Manifest) -> str:
    """The GPTQ repo's ``README.md``: the GGUF card's frontmatter with transformers' tags, then the body."""
    front = frontmatter_data(recipe, None) | {"library_name": "transformers"}
    front["tags"] = [
        *front.get("tags", []),
        "gptq",
        "4-bit" if recipe.gptq and recipe.gptq.variants[0].bits == 4 else "gptq",
    ]
    front["tags"] = list(dict.fromkeys(front["tags"]))
    body = render_template(environment(recipe), TEMPLATE, gptq_context(recipe, manifest))
    body = re.sub(r"\n{3,}", "\n\n", body).strip()
    return f"---\n{yaml_dump(front, sort_keys=False).strip()}\n---\n\n{body}\n"
