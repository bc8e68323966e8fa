"""Shared builders for the card tests: recipe variants and manifests made of real records."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from publisher.manifest import (
    Artifact,
    Manifest,
    QualityResult,
    SmokeResult,
    SourceRecord,
    fingerprint,
    save_manifest,
    sha256_file,
)
from publisher.recipe import Recipe, parse_recipe
from support.paths import REPO_ROOT

CAUSALLM_RECIPE = REPO_ROOT / "recipes" / "causallm-14b.yaml"
CAUSALLM_SOURCE = REPO_ROOT / "tests" / "fixtures" / "causallm-14b"
CARDS_FIXTURES = REPO_ROOT / "tests" / "fixtures" / "cards"
REFERENCE_CARD = CARDS_FIXTURES / "reference-gguf-causallm-14b.md"
GOLDEN_CARD = CARDS_FIXTURES / "causallm-14b.md"
ARTIFACTS_DIR = REPO_ROOT / "tests" / "artifacts"


def _merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        elif value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def recipe_variant(folder: Path, changes: dict[str, Any] | None = None, name: str = "causallm-14b.yaml") -> Recipe:
    """The causallm-14b recipe with ``changes`` merged in (``None`` deletes a key), saved in ``folder``."""
    data = yaml.safe_load(CAUSALLM_RECIPE.read_text(encoding="utf-8"))
    data = _merge(data, changes or {})
    text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return parse_recipe(text, path)


def fake_build(
    recipe: Recipe,
    build_dir: Path,
    sizes: dict[str, int],
    *,
    failed: tuple[str, ...] = (),
    shards: dict[str, int] | None = None,
    smoke_output: str = "Paris is the capital of France.",
    write_files: bool = True,
) -> Manifest:
    """A manifest of real Artifact records for ``sizes`` (quant type -> bytes), with small files on disk.

    The files hold ``size % 4096`` bytes so tests stay light; the manifest records the size given.
    ``shards`` maps a quant type to a number of parts.
    """
    build_dir.mkdir(parents=True, exist_ok=True)
    artifacts: dict[str, Artifact] = {}
    for index, (quant_type, size) in enumerate(sizes.items()):
        name = recipe.artifact_filename(quant_type)
        parts = (shards or {}).get(quant_type, 0)
        part_names = [name.replace(".gguf", f"-{i:05d}-of-{parts:05d}.gguf") for i in range(1, parts + 1)]
        for file_name in part_names or [name]:
            if write_files:
                (build_dir / file_name).write_bytes(bytes([index]) * (size % 4096 + 1))
        first = build_dir / (part_names[0] if part_names else name)
        status = "failed" if quant_type in failed else "passed"
        artifacts[quant_type] = Artifact(
            quant_type=quant_type,
            path=first.name,
            size_bytes=size,
            sha256=sha256_file(first) if first.exists() else "0" * 64,
            bits_per_weight=round(size * 8 / 14_166_676_480, 4),
            fingerprint=fingerprint("test", quant_type),
            status=status,
            failure="answer did not contain 'Paris'" if status == "failed" else None,
            smoke=SmokeResult(passed=status == "passed", output=smoke_output, tokens_per_s=10.0 + index),
            quality=QualityResult(
                perplexity=6.5 + index / 10,
                kl_divergence=0.01 * (5 - index),
                top1_agreement=0.9 + index / 100,
                tokens=512,
            ),
            shards=part_names,
        )
    manifest = Manifest(
        build_name=recipe.build_name,
        recipe_sha256=recipe.fingerprint(),
        tools={"llama.cpp": "b6700", "llama-cpp-python": "0.3.36", "llama.cpp system info": "AVX = 1 | AVX2 = 1"},
        source=SourceRecord(repo=recipe.source.repo, path=str(CAUSALLM_SOURCE), parameters=14_166_676_480),
        artifacts=artifacts,
    )
    save_manifest(build_dir, manifest)
    return manifest
