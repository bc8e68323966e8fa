"""Publishable builds without llama.cpp: a small recipe, stand-in GGUFs, a manifest and a card.

Publishing reads what the build recorded (paths, sizes, sha256, status, the smoke settings each
file was tested under), the card, and the ``general.*`` metadata of each GGUF. So the stand-in
files are GGUF headers carrying the recipe's metadata (no tensors) padded with random bytes, and
the manifest records smoke fingerprints as the smoke stage does.
"""

from __future__ import annotations

import random
import struct
from pathlib import Path
from typing import Any

import yaml

from publisher.manifest import Artifact, Manifest, StageRecord, save_manifest, sha256_file, write_text_atomic
from publisher.pipeline import tool_versions
from publisher.publishable import expected_gguf_metadata
from publisher.recipe import Recipe, load_recipe

GGUF_UINT32, GGUF_STRING, GGUF_ARRAY = 4, 8, 9

CARD = """---
license: apache-2.0
base_model: example/tiny
tags:
- gguf
---
# Tiny - GGUF

{body}
"""


def write_recipe(
    folder: Path,
    *,
    name: str = "tiny",
    repo_id: str = "tester/Tiny-GGUF",
    types: tuple[str, ...] = ("Q2_K", "Q4_K_M", "Q8_0"),
    branches: list[dict[str, Any]] | None = None,
    private: bool = False,
    target: str = "local",
) -> Path:
    """Write a valid recipe for a made-up model and return its path."""
    folder.mkdir(parents=True, exist_ok=True)
    data: dict[str, Any] = {
        "source": {"path": "source"},
        "model": {"name": "Tiny", "creator": "Example", "license": "apache-2.0", "base_model": "example/tiny"},
        "quantize": {"types": list(types), "basename": "tiny"},
        "card": {"profile": {"quantized_by": "tester"}},
        "publish": {"target": target, "repo_id": repo_id, "private": private, "branches": branches or []},
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def _gguf_string(text: str) -> bytes:
    data = text.encode()
    return struct.pack("<Q", len(data)) + data


def _gguf_value(value: Any) -> bytes:
    if isinstance(value, str):
        return struct.pack("<I", GGUF_STRING) + _gguf_string(value)
    if isinstance(value, int):
        return struct.pack("<II", GGUF_UINT32, value)
    items = b"".join(_gguf_string(str(v)) for v in value)
    return struct.pack("<IIQ", GGUF_ARRAY, GGUF_STRING, len(value)) + items


def gguf_bytes(seed: str, size: int, metadata: dict[str, Any] | None = None) -> bytes:
    """Deterministic stand-in for a GGUF file: a v3 header with ``metadata`` and no tensors, then random bytes."""
    pairs = (metadata or {}).items()
    header = b"GGUF" + struct.pack("<IQQ", 3, 0, len(pairs))
    header += b"".join(_gguf_string(key) + _gguf_value(value) for key, value in pairs)
    header += b"\0" * (-len(header) % 32)
    return header + random.Random(seed).randbytes(size - len(header))


def make_build(
    recipe_path: Path,
    workdir: Path,
    *,
    size: int = 64 * 1024,
    status: dict[str, str] | None = None,
    card_body: str = "Files made for the publishing tests.",
    content_seed: str = "v1",
) -> tuple[Recipe, Path]:
    """Write a build of ``recipe_path`` under ``workdir`` as ``publisher build`` would leave it."""
    recipe = load_recipe(recipe_path)
    build_dir = workdir / recipe.build_name
    build_dir.mkdir(parents=True, exist_ok=True)
    artifacts = {}
    for i, quant_type in enumerate(recipe.quantize.types):
        filename = recipe.artifact_filename(quant_type)
        path = build_dir / filename
        if not path.exists():
            metadata = expected_gguf_metadata(recipe)
            path.write_bytes(gguf_bytes(f"{content_seed}-{quant_type}", size + i * 1024, metadata))
        state = (status or {}).get(quant_type, "passed")
        artifacts[quant_type] = Artifact(
            quant_type=quant_type,
            path=filename,
            size_bytes=path.stat().st_size,
            sha256=sha256_file(path),
            bits_per_weight=4.5,
            fingerprint="0" * 64,
            status=state,
            failure="answer did not contain Paris" if state == "failed" else None,
        )
    write_card(build_dir, card_body)
    manifest = Manifest(
        build_name=recipe.build_name,
        recipe_sha256=recipe.fingerprint(),
        tools=tool_versions(),  # as the pipeline records them, so a later card-stage run keeps them
        artifacts=artifacts,
        card={"path": "README.md", "sha256": sha256_file(build_dir / "README.md")},
    )
    record_smoke_settings(recipe, build_dir, manifest)
    save_manifest(build_dir, manifest)
    return recipe, build_dir


def record_smoke_settings(recipe: Recipe, build_dir: Path, manifest: Manifest) -> None:
    """Record, per artifact, the smoke settings it was tested under, as the smoke stage does."""
    from publisher.stages import BuildContext
    from publisher.stages.smoke import settings, work_key

    ctx = BuildContext(recipe=recipe, build_dir=build_dir, manifest=manifest)
    for artifact in manifest.artifacts.values():
        manifest.stages[work_key(artifact.quant_type)] = StageRecord(
            fingerprint=settings(ctx, artifact), finished_at="2026-01-01T00:00:00Z", seconds=0.0
        )


def write_card(build_dir: Path, body: str) -> None:
    """Write README.md as the card stage would, and record its hash in the manifest if there is one."""
    write_text_atomic(build_dir / "README.md", CARD.format(body=body))
    manifest_path = build_dir / "manifest.json"
    if manifest_path.exists():
        manifest = Manifest.model_validate_json(manifest_path.read_text(encoding="utf-8"))
        manifest.card = {"path": "README.md", "sha256": sha256_file(build_dir / "README.md")}
        save_manifest(build_dir, manifest)
