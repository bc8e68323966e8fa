"""The data a GGUF card's templates see, built from the recipe and the build's records only.

Every figure comes from the manifest: the artifacts and their measurements, the tool versions,
and the source as fetch recorded it (parameter count, architecture, original README). Without a
build, sizes are estimated from the parameter count and marked as estimates.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any
from urllib.parse import quote

from publisher import prompts
from publisher.cards import rows, run
from publisher.cards.choosing import choosing_context
from publisher.cards.gate import gate_context
from publisher.cards.imatrix import imatrix_context
from publisher.cards.licensing import licensing_context
from publisher.cards.original import embeddable_card
from publisher.cards.text import code_fence
from publisher.formats import gguf_quants
from publisher.manifest import Manifest, SourceRecord
from publisher.recipe import Recipe
from publisher.report import format_bytes

EXAMPLE_PROMPT = "Write a short poem about the sea."


def format_params(count: int | None) -> str:
    """A parameter count for people: ``14.17B``, ``134.5M``."""
    if count is None:
        return "unknown"
    if count >= 1e9:
        return f"{count / 1e9:.2f}B"
    if count >= 1e6:
        return f"{count / 1e6:.1f}M"
    return f"{count:,}"


def creator_and_name(creator: str, name: str) -> str:
    """``CausalLM's 14B``, but ``CausalLM 14B`` when the name already starts with its creator's."""
    if name.casefold().startswith(creator.casefold()):
        return name
    return f"{creator}'s {name}"


LLAMA_CPP = "https://github.com/ggml-org/llama.cpp"


def _llama_cpp_version(tools: Mapping[str, str]) -> dict[str, str | None] | None:
    """The llama.cpp that wrote the files: its release tag and commit, each linked, and the bundling package.

    ``tools["llama.cpp"]`` reads ``b11312 (commit 0c1e570, library 0.5.0-dev)`` in builds since
    the build number was recorded; older manifests hold the shared library's version alone.
    """
    value = tools.get("llama.cpp")
    if not value:
        return None
    bindings = tools.get("llama-cpp-python", "")
    build = re.search(r"\bb(\d{3,6})\b", value)
    commit = re.search(r"\bcommit ([0-9a-f]{7,40})\b", value) or re.fullmatch(r"([0-9a-f]{7,40})", value)
    found = {
        "build": f"b{build.group(1)}" if build else None,
        "commit": commit.group(1)[:7] if commit else None,
        "bindings": bindings,
    }
    if found["build"]:
        found["version"], found["url"] = found["build"], f"{LLAMA_CPP}/releases/tag/{found['build']}"
    elif found["commit"]:
        found["version"], found["url"] = found["commit"], f"{LLAMA_CPP}/commit/{found['commit']}"
    elif bindings:  # a library version alone names no commit; the bundling release does
        found["version"], found["url"] = value, f"https://github.com/abetlen/llama-cpp-python/releases/tag/v{bindings}"
    else:
        found["version"], found["url"] = value, LLAMA_CPP
    found["commit_url"] = f"{LLAMA_CPP}/commit/{found['commit']}" if found["commit"] else None
    return found


def _original_card(recipe: Recipe, source: SourceRecord | None) -> dict[str, Any] | None:
    readme = source.facts.readme if source is not None and source.facts is not None else None
    if not recipe.card.embed_original_card or readme is None:
        return None
    repo = recipe.source.repo or (recipe.model.base_model[0] if recipe.model.base_model else None)
    card = embeddable_card(readme, repo=repo, base_url=recipe.card.original_card_base_url)
    return asdict(card) if card is not None else None


def gguf_context(recipe: Recipe, manifest: Manifest | None, source: SourceRecord | None) -> dict[str, Any]:
    """Everything the GGUF card templates may use, as plain data (no pydantic objects, nothing callable).

    ``source`` is the manifest's source record (or, before a build, the same record read by
    :func:`publisher.source.recorded_or_read`).
    """
    arch = source.facts.architecture if source is not None and source.facts is not None else None
    parameters = (source.parameters if source else None) or (arch.parameters() if arch else None)
    context_length = recipe.model.context_length
    kv_bytes = arch.kv_cache_bytes(context_length) if arch else None
    built = manifest is not None and bool(manifest.passed_artifacts())
    files = (
        rows.measured_rows(recipe, manifest, kv_bytes)
        if manifest is not None and built
        else rows.estimated_rows(recipe, parameters, kv_bytes)
    )
    branches = rows.branch_rows(recipe, files)
    per_file, per_branch = rows.downloads(recipe, files, branches)
    model = recipe.model
    title, template_text = prompts.resolve(model.prompt_template)
    example_prompt = recipe.smoke.prompts[0].prompt if recipe.smoke.prompts else EXAMPLE_PROMPT
    filled = template_text.format(system_message=model.system_message, prompt=example_prompt)
    example = rows.example_file(files)
    ngl = run.gpu_layers(arch.n_layers if arch else None)
    mode = run.chat_mode(recipe, manifest, example)
    run_options = run.RunOptions(context=context_length, ngl=ngl, raw_prompt=filled)
    original_repo = (model.base_model[0] if model.base_model else None) or recipe.source.repo
    methods_used = sorted(
        {gguf_quants.CATALOGUE[f.method].method for f in files if f.method in gguf_quants.CATALOGUE} - {""}
    )
    # Versions only: the CPU feature list is for the manifest, not for readers.
    tools = {k: v for k, v in (manifest.tools if manifest else {}).items() if "system info" not in k}
    related = [r.model_dump() for r in recipe.card.related]
    for sibling in (s for s in (recipe.awq, recipe.gptq) if s is not None):  # repos built from the same recipe
        related.insert(
            0,
            {
                "repo": sibling.repo(recipe.publish.repo_id),
                "description": f"{sibling.suffix} models for GPU inference, one parameter set a branch",
            },
        )
    if original_repo and not any(r["repo"] == original_repo for r in related):
        related.append({"repo": original_repo, "description": f"{model.creator}'s original model, unquantized"})
    return {
        "recipe_file": recipe.path.name if recipe.path else f"{recipe.build_name}.yaml",
        "recipe_sha256": recipe.fingerprint(),
        "repo_id": recipe.publish.repo_id,
        "hub_url": rows.HUB,
        "title": recipe.card.title or f"{model.name} - GGUF",
        "model": {
            **model.model_dump(mode="json"),
            "creator_url": model.creator_url or f"{rows.HUB}/{quote(model.creator.strip(), safe='')}",
            "creator_and_name": creator_and_name(model.creator, model.name),
            "original_repo": original_repo,
            "original_url": f"{rows.HUB}/{original_repo}" if original_repo else None,
            "prompt_template_title": title,
            "prompt_template_text": template_text,
            "prompt_fence": code_fence(template_text),
        },
        "profile": recipe.card.profile.model_dump(mode="json"),
        "notes": list(recipe.card.notes),
        "related": related,
        "built": built,
        "estimated": not built,
        "files": files,
        "sharded": any(len(f.parts) > 1 for f in files),
        "failed": [a.quant_type for a in manifest.failed_artifacts()] if manifest else [],
        "quality_rows": rows.quality_rows(manifest) if manifest is not None else [],
        "choosing": choosing_context(manifest),
        "reference_type": manifest.reference.quant_type
        if manifest and manifest.reference
        else recipe.convert.outtype.upper(),
        "quality_settings": recipe.smoke.quality.model_dump(mode="json"),
        "methods": [{"name": m, "text": gguf_quants.METHODS[m]} for m in methods_used if m in gguf_quants.METHODS],
        "branches": branches,
        "has_branches": bool(recipe.publish.branches),
        "downloads": per_file,
        "branch_downloads": per_branch,
        "example": example,
        "chat_mode": mode,
        "hub_commands": run.hub_commands(recipe, example, mode, run_options) if example else [],
        "local_commands": run.local_commands(recipe, example, mode, run_options) if example else [],
        "branch_files": [f for f in files if f.branch != "main"],
        "example_prompt": example_prompt,
        "filled_prompt": filled,
        "llama_cpp": _llama_cpp_version(tools),
        "tools": tools,
        "parameters": parameters,
        "parameters_text": format_params(parameters),
        "arch": arch.model_dump() if arch else None,
        "context_length": context_length,
        "kv_cache_bytes": kv_bytes,
        "kv_cache": format_bytes(kv_bytes) if kv_bytes is not None else "unknown",
        "ram_overhead": f"{rows.RAM_OVERHEAD_BYTES / 1e9:.1f} GB",
        "gpu_layers": ngl,
        "source_known": source is not None and source.facts is not None,
        "original_card": _original_card(recipe, source),
        "licensing": licensing_context(recipe, source),
        **imatrix_context(recipe, manifest),
        **gate_context(manifest),
    }
