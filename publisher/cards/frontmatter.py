"""The card's YAML frontmatter, made and checked with :class:`huggingface_hub.ModelCardData`."""

from __future__ import annotations

import hashlib
import re
from importlib import resources
from typing import Any

import yaml
from huggingface_hub import EvalResult, ModelCardData

from publisher.manifest import Manifest, sha256_file
from publisher.recipe import Recipe

QUALITY_TEXT = "quality.txt"  # publisher/data/quality.txt, the perplexity text smoke uses by default
FRONTMATTER = re.compile(r"\A---[ \t]*\r?\n(.*?)\r?\n---[ \t]*(?:\r?\n|\Z)", re.DOTALL)


def yaml_dump(data: Any, *, sort_keys: bool = False) -> str:
    """YAML as the Hub writes card metadata (block style, unicode kept)."""
    return yaml.safe_dump(data, sort_keys=sort_keys, allow_unicode=True)


def strip_frontmatter(text: str) -> str:
    """``text`` without its leading YAML frontmatter block (only the first one)."""
    text = text.removeprefix("\ufeff")
    match = FRONTMATTER.match(text)
    return text[match.end() :] if match else text


def split_frontmatter(text: str) -> tuple[str | None, str]:
    """``(frontmatter YAML or None, body)``."""
    match = FRONTMATTER.match(text.removeprefix("\ufeff"))
    if match is None:
        return None, text
    return match.group(1), text.removeprefix("\ufeff")[match.end() :]


def quality_dataset(recipe: Recipe) -> tuple[str, str | None]:
    """The name the measured figures give their text, and its sha256 (``None`` when the file is gone)."""
    text = recipe.smoke.quality.text
    if text is None:
        data = resources.files("publisher").joinpath("data", QUALITY_TEXT).read_bytes()
        return f"publisher's sample text ({QUALITY_TEXT}, shipped with publisher)", hashlib.sha256(data).hexdigest()
    path = recipe.resolve_path(text)
    return f"{path.name} (the publisher's own text)", sha256_file(path) if path.is_file() else None


def _eval_results(recipe: Recipe, manifest: Manifest | None) -> list[EvalResult]:
    """Measured quality as model-index results: one metric per quant type and figure (``card.model_index``)."""
    if manifest is None or not recipe.card.model_index:
        return []
    name, digest = quality_dataset(recipe)
    dataset = f"{name}, sha256 {digest}" if digest else name
    results = []
    for artifact in manifest.passed_artifacts():
        quality = artifact.quality
        if quality is None:
            continue
        figures = [
            ("perplexity", "Perplexity", quality.perplexity),
            ("kl_divergence", "KL divergence vs reference", quality.kl_divergence),
            ("top1_agreement", "Top-1 agreement with reference", quality.top1_agreement),
        ]
        for metric, label, value in figures:
            if value is None:
                continue
            results.append(
                EvalResult(
                    task_type="text-generation",
                    dataset_type="text",
                    dataset_name=dataset,
                    metric_type=metric,
                    metric_name=f"{label} ({artifact.quant_type})",
                    metric_config=artifact.quant_type,
                    metric_value=round(value, 6),
                )
            )
    return results


def frontmatter_data(recipe: Recipe, manifest: Manifest | None = None) -> dict[str, Any]:
    """The card's YAML frontmatter as a dict, made and checked with :class:`ModelCardData`."""
    model = recipe.model
    base_model = model.base_model or ([recipe.source.repo] if recipe.source.repo else [])
    data = ModelCardData(
        base_model=(base_model[0] if len(base_model) == 1 else base_model) or None,
        datasets=list(model.datasets) or None,
        language=list(model.languages) or None,
        license=model.license,
        license_name=model.license_name,
        license_link=model.license_link,
        model_name=model.name,
        pipeline_tag=model.pipeline_tag,
        tags=list(model.tags) or None,
        eval_results=_eval_results(recipe, manifest) or None,
        base_model_relation="quantized",
        inference=False,
        model_creator=model.creator,
        model_type=model.model_type,
        prompt_template=model.prompt_template_text,
        quantized_by=recipe.card.profile.quantized_by,
    ).to_dict()  # type: ignore[no-untyped-call]
    # ModelCardData moves model_name into model-index when there are results; cards keep both.
    data["model_name"] = model.name
    index = data.pop("model-index", None)
    ordered = {key: data[key] for key in sorted(data)}
    if index is not None:
        ordered["model-index"] = index
    return ordered


def render_frontmatter(recipe: Recipe, manifest: Manifest | None) -> str:
    """The frontmatter block's YAML, without the ``---`` fences."""
    return yaml_dump(frontmatter_data(recipe, manifest), sort_keys=False).strip()
