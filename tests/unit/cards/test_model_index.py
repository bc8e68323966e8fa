"""The card's model-index results: on by default, named after the measured text and its sha256, or switched off."""

from __future__ import annotations

from pathlib import Path

import yaml
from support.card_helpers import fake_build, recipe_variant
from support.paths import REPO_ROOT

from publisher import cards
from publisher.manifest import sha256_file

SIZES = {"Q4_0": 8_000_000_000, "Q8_0": 15_000_000_000}


def _frontmatter(tmp_path: Path, card: dict[str, object]) -> tuple[dict[str, object], str]:
    recipe = recipe_variant(tmp_path, {"quantize": {"types": list(SIZES)}, "card": card})
    build_dir = tmp_path / "build" / recipe.build_name
    manifest = fake_build(recipe, build_dir, SIZES)
    text = cards.render_card(recipe, manifest)
    assert cards.check_card(text, recipe, manifest, build_dir) == []
    data = yaml.safe_load(cards.split_frontmatter(text)[0] or "")
    assert isinstance(data, dict)
    return data, text


def test_results_name_the_shipped_text_and_its_hash(tmp_path: Path) -> None:
    data, _text = _frontmatter(tmp_path, {})
    [entry] = data["model-index"]  # type: ignore[misc]
    results = entry["results"]
    digest = sha256_file(REPO_ROOT / "publisher" / "data" / "quality.txt")
    names = {result["dataset"]["name"] for result in results}
    assert names == {f"publisher's sample text (quality.txt, shipped with publisher), sha256 {digest}"}
    assert {m["type"] for result in results for m in result["metrics"]} == {
        "perplexity",
        "kl_divergence",
        "top1_agreement",
    }


def test_the_switch_leaves_results_out_but_keeps_the_quality_section(tmp_path: Path) -> None:
    data, text = _frontmatter(tmp_path, {"model_index": False})
    assert "model-index" not in data
    assert data["model_name"] == "CausalLM 14B"
    assert "| causallm_14b.Q4_0.gguf | 6.5000 | 0.0500 |" in dict(cards.sections(text))["measured-quality"]
