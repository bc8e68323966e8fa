"""The card build stage: writes README.md, records it, re-runs only when its inputs change."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console
from support.card_helpers import CAUSALLM_SOURCE, fake_build, recipe_variant

from publisher import cards
from publisher.errors import CardError
from publisher.manifest import load_manifest, sha256_file
from publisher.stages import STAGES, BuildContext, get_stage
from publisher.stages import card as card_stage

SIZES = {"Q4_0": 8_180_411_392, "Q5_0": 9_847_312_384}


def _context(tmp_path: Path, partials: Path | None = None) -> BuildContext:
    changes = {"card": {"partials_dir": str(partials)}} if partials else {}
    recipe = recipe_variant(tmp_path, changes)
    build_dir = tmp_path / "work" / recipe.build_name
    manifest = load_manifest(build_dir) or fake_build(recipe, build_dir, SIZES)
    return BuildContext(
        recipe=recipe,
        build_dir=build_dir,
        manifest=manifest,
        source_dir_override=CAUSALLM_SOURCE,
        console=Console(quiet=True),
    )


def test_stage_is_registered() -> None:
    assert "card" in STAGES
    assert get_stage("card").name == "card"


def test_stage_writes_records_and_skips_when_unchanged(tmp_path: Path) -> None:
    partials = tmp_path / "partials"
    partials.mkdir()
    ctx = _context(tmp_path, partials)
    stage = card_stage.CardStage()
    assert not stage.is_done(ctx)
    stage.run(ctx)
    readme = ctx.build_dir / "README.md"
    text = readme.read_text(encoding="utf-8")
    assert text == cards.render_card(ctx.recipe, ctx.manifest, source_dir=CAUSALLM_SOURCE)
    saved = load_manifest(ctx.build_dir)
    assert saved is not None
    assert saved.card["path"] == "README.md"
    assert saved.card["sha256"] == sha256_file(readme)
    assert saved.stages["card"].fingerprint == saved.card["fingerprint"]
    assert stage.is_done(ctx)

    # A template change alone makes the card stale; nothing else about the build changed.
    other_stages = {k: v.fingerprint for k, v in saved.stages.items() if k != "card"}
    (partials / "footer.md.j2").write_text("Made for the test.\n", encoding="utf-8")
    assert not stage.is_done(ctx)
    stage.run(ctx)
    assert "Made for the test." in readme.read_text(encoding="utf-8")
    assert stage.is_done(ctx)
    resaved = load_manifest(ctx.build_dir)
    assert resaved is not None
    assert {k: v.fingerprint for k, v in resaved.stages.items() if k != "card"} == other_stages


def test_stage_reruns_when_the_card_file_is_edited_or_data_changes(tmp_path: Path) -> None:
    ctx = _context(tmp_path)
    stage = card_stage.CardStage()
    stage.run(ctx)
    readme = ctx.build_dir / "README.md"
    readme.write_text(readme.read_text(encoding="utf-8") + "hand edit\n", encoding="utf-8")
    assert not stage.is_done(ctx)
    stage.run(ctx)
    assert stage.is_done(ctx)
    quality = ctx.manifest.artifacts["Q4_0"].quality
    assert quality is not None
    quality.perplexity = 7.25
    assert not stage.is_done(ctx)


def test_stage_refuses_a_card_that_fails_its_checks(tmp_path: Path) -> None:
    ctx = _context(tmp_path)
    (ctx.build_dir / "causallm_14b.Q5_0.gguf").unlink()
    with pytest.raises(CardError, match=r"card: linked file causallm_14b\.Q5_0\.gguf is missing"):
        card_stage.CardStage().run(ctx)
    assert not (ctx.build_dir / "README.md").exists()
    assert "card" not in (load_manifest(ctx.build_dir) or ctx.manifest).stages
