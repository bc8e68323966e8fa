"""The card's words: names not doubled, advice only about files the repo has, odd names escaped in the header."""

from __future__ import annotations

from pathlib import Path

from support.card_helpers import fake_build, recipe_variant
from support.golden import assert_golden

from publisher import cards
from publisher.cards.context import creator_and_name

UNICODE = {
    "source": {"repo": "qihao-lab/model-7"},
    "model": {
        "name": "模型 / 七号 *beta* [v2]",
        "creator": "Qīhào Lab",
        "creator_url": None,
        "base_model": "qihao-lab/model-7",
        "inherited_licenses": None,
    },
    "quantize": {"types": ["Q4_0", "Q8_0"], "basename": "qihao_model_7"},
}


def test_the_creator_is_not_repeated_when_the_name_starts_with_it() -> None:
    assert creator_and_name("CausalLM", "CausalLM 14B") == "CausalLM 14B"
    assert creator_and_name("causallm", "CausalLM 14B") == "CausalLM 14B"
    assert creator_and_name("Meta", "Llama 2 13B") == "Meta's Llama 2 13B"


def test_use_cases_advise_only_types_the_repo_offers(tmp_path: Path) -> None:
    recipe = recipe_variant(tmp_path, {"quantize": {"types": ["Q4_0", "Q4_K_M", "Q5_0"], "basename": "m"}})
    table = dict(cards.sections(cards.render_card(recipe)))["README_GGUF.md-provided-files"]
    assert "| legacy 4-bit; prefer Q4_K_M where the model allows |" in table
    assert "| legacy 5-bit |" in table
    assert "Q4_K_S" not in table and "Q5_K_M" not in table


def test_a_unicode_name_with_slashes_and_markdown_is_escaped_in_the_header(tmp_path: Path) -> None:
    recipe = recipe_variant(tmp_path, UNICODE)
    build_dir = tmp_path / "build" / recipe.build_name
    manifest = fake_build(recipe, build_dir, {"Q4_0": 4_000_000_000, "Q8_0": 7_500_000_000})
    text = cards.render_card(recipe, manifest)
    assert cards.check_card(text, recipe, manifest, build_dir) == []
    assert_golden("unicode-name", text)
    header = dict(cards.sections(text))["header"]
    assert "# 模型 / 七号 \\*beta\\* \\[v2\\] - GGUF" in header
    assert "- Model creator: [Qīhào Lab](https://huggingface.co/Q%C4%ABh%C3%A0o%20Lab)" in header
    assert "- Original model: [模型 / 七号 \\*beta\\* \\[v2\\]](https://huggingface.co/qihao-lab/model-7)" in header
    description = dict(cards.sections(text))["description"]
    assert "[Qīhào Lab's 模型 / 七号 \\*beta\\* \\[v2\\]](https://huggingface.co/qihao-lab/model-7)" in description
