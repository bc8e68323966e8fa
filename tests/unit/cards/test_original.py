"""The original card embedded as data: markers, Jinja-looking text, quantizer cards, GitHub HTML, relative links."""

from __future__ import annotations

from pathlib import Path

from support.card_helpers import fake_build, recipe_variant
from support.golden import SOURCES, assert_golden

from publisher import cards
from publisher.cards.original import embeddable_card

SIZES = {"Q4_0": 8_000_000_000, "Q8_0": 15_000_000_000}
HUB_SOURCE = "https://huggingface.co/CausalLM/14B"


def _built_card(tmp_path: Path, source: str, changes: dict[str, object] | None = None) -> str:
    recipe = recipe_variant(tmp_path, {"quantize": {"types": list(SIZES)}, **(changes or {})})
    build_dir = tmp_path / "build" / recipe.build_name
    manifest = fake_build(recipe, build_dir, SIZES)
    text = cards.render_card(recipe, manifest, source_dir=SOURCES / source)
    assert cards.check_card(text, recipe, manifest, build_dir) == []
    return text


def _original(text: str) -> str:
    return dict(cards.sections(text))["original-model-card"]


def test_markers_and_jinja_in_the_source_card_and_notes_pass_the_check(tmp_path: Path) -> None:
    note = "Prepend `{{ bos_token }}` yourself; the template is {% raw %}-free and says {{ user }} literally."
    text = _built_card(tmp_path, "markers-jinja", {"card": {"notes": [note]}})
    assert_golden("markers-jinja", text)
    assert note in dict(cards.sections(text))["description"]
    original = _original(text)
    assert "{% for message in messages %}" in original and "`{{ bos_token }}`" in original
    assert "<!-- header start (in the original card) -->" in original
    assert "<!-- original-model-card end (in the original card) -->" in original
    assert [name for name, _ in cards.sections(text)].count("header") == 1
    assert f"![architecture]({HUB_SOURCE}/resolve/main/images/arch.png)" in original
    assert f"[licence]({HUB_SOURCE}/blob/main/LICENSE)" in original
    assert f"[evaluation notes]({HUB_SOURCE}/blob/main/docs/eval.md#results)" in original
    assert "[the paper](https://arxiv.org/abs/2309.16609)" in original
    assert f'<img src="{HUB_SOURCE}/resolve/main/assets/logo.png"' in original
    assert "its metadata block was removed" in original
    assert "section markers were renamed" in original


def test_the_check_still_catches_a_leftover_placeholder_outside_data(tmp_path: Path) -> None:
    recipe = recipe_variant(tmp_path)
    text = cards.render_card(recipe, source_dir=SOURCES / "markers-jinja")
    broken = text.replace("## Description", "## Description {{ oops }}")
    assert cards.check_card(broken, recipe, None, None) == ["unrendered template placeholder '{{' in the card"]


def test_a_github_html_readme_is_converted_without_its_page_chrome(tmp_path: Path) -> None:
    text = _built_card(tmp_path, "github-html", {"card": {"original_card_base_url": "https://github.com/example/chat"}})
    assert_golden("github-html", text)
    original = _original(text)
    assert "# Chat 14B" in original and "| MMLU      | 67.4  |" in original and "pip install example-chat" in original
    assert "[usage guide](https://github.com/example/chat/blob/main/docs/usage.md)" in original
    assert "![scores](https://github.com/example/chat/raw/main/figures/scores.png)" in original
    for chrome in ("Sign in", "analytics", "color: red", "GitHub, Inc.", "<html", "<article"):
        assert chrome not in original, chrome
    assert "its HTML page was converted to Markdown" in original
    assert "metadata block" not in original  # the page had none


def test_a_quantizer_card_is_embedded_from_its_original_section_only() -> None:
    readme = (SOURCES / "quantizer-card" / "README.md").read_text(encoding="utf-8")
    card = embeddable_card(readme, repo="someone/Chat-14B-GGUF")
    assert card is not None
    assert card.text.startswith("# Chat 14B\n\nThe source model's own words")
    assert "Thanks to my patrons" not in card.text and "<!--" not in card.text
    assert "![image](https://huggingface.co/someone/Chat-14B-GGUF/resolve/main/figs/chart.png)" in card.text
    assert card.changes[:2] == (
        "its metadata block was removed",
        "only the original-card section of that quantized model's card is kept",
    )


def test_a_plain_markdown_card_is_embedded_unchanged() -> None:
    card = embeddable_card("# Model\n\nSee [the docs](https://example.org) and [top](#model).\n", repo="a/b")
    assert card is not None
    assert card.text == "# Model\n\nSee [the docs](https://example.org) and [top](#model)."
    assert card.changes == ()
    assert embeddable_card("---\nlicense: mit\n---\n\n", repo="a/b") is None


def test_a_given_source_folder_is_never_called_missing(tmp_path: Path) -> None:
    folder = tmp_path / "source"
    folder.mkdir()
    (folder / "README.md").write_text("# Tiny\n", encoding="utf-8")
    recipe = recipe_variant(tmp_path)
    given = cards.render_card(recipe, source_dir=folder)
    assert "no local copy" not in given
    assert "the local copy of it has neither safetensors files nor a `config.json`" in given
    assert "no local copy of it" in cards.render_card(recipe)


def test_links_inside_code_blocks_stay_as_written() -> None:
    readme = "See [docs](docs/a.md).\n\n```markdown\n[docs](docs/a.md)\n```\n"
    card = embeddable_card(readme, repo="a/b")
    assert card is not None
    assert (
        card.text
        == "See [docs](https://huggingface.co/a/b/blob/main/docs/a.md).\n\n```markdown\n[docs](docs/a.md)\n```"
    )
