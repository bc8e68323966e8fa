"""Golden cards: compare a rendered card with its file in tests/fixtures/cards/ (UPDATE_GOLDEN=1 rewrites it)."""

from __future__ import annotations

import json
import os
import shutil
import struct
from pathlib import Path

from publisher.manifest import Manifest
from publisher.recipe import Recipe
from publisher.stages import BuildContext, get_stage, load_stages
from support.card_helpers import CARDS_FIXTURES, REPO_ROOT

SOURCES = REPO_ROOT / "tests" / "fixtures" / "sources"


def assert_golden(name: str, text: str) -> None:
    """``text`` equals ``tests/fixtures/cards/<name>.md``; regenerate only for intended changes and review the diff."""
    path = CARDS_FIXTURES / f"{name}.md"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"golden card {path.name} missing: run with UPDATE_GOLDEN=1"
    assert text == path.read_text(encoding="utf-8")


def fetched_source(folder: Path, fixture: str) -> Path:
    """A copy of ``tests/fixtures/sources/<fixture>`` in ``folder``, with the one-tensor safetensors fetch wants."""
    source = folder / "source"
    shutil.copytree(SOURCES / fixture, source)
    header = json.dumps({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
    (source / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 4)
    return source


def run_fetch(recipe: Recipe, build_dir: Path, manifest: Manifest, source: Path) -> Manifest:
    """The real fetch stage on a local ``source``, recording into ``manifest`` (parameter count kept from it)."""
    load_stages()
    parameters = manifest.source.parameters if manifest.source is not None else None
    ctx = BuildContext(recipe=recipe, build_dir=build_dir, manifest=manifest, source_dir_override=source)
    get_stage("fetch").run(ctx)
    assert ctx.manifest.source is not None
    ctx.manifest.source.parameters = parameters or ctx.manifest.source.parameters
    ctx.save()
    return ctx.manifest
