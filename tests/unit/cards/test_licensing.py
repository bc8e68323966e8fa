"""Licences: Hub ids with a did-you-mean, licence files fetched, linked and checked, other and inherited licences."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from support.card_helpers import fake_build, recipe_variant
from support.golden import assert_golden, fetched_source, run_fetch

from publisher import cards
from publisher.errors import RecipeError, SourceError
from publisher.licences import known_licences, licence_id_problem
from publisher.manifest import load_manifest
from publisher.recipe import Recipe, load_recipe

SIZES = {"Q4_0": 8_000_000_000, "Q8_0": 15_000_000_000}
BLOB = "https://huggingface.co/publisher/CausalLM-14B-GGUF/blob/main"
OTHER = {
    "source": {"repo": "example/example-14b"},
    "model": {
        "name": "Example 14B",
        "creator": "Example",
        "base_model": "example/example-14b",
        "license": "other",
        "license_name": "Example Community Licence Agreement",
        "license_link": "LICENSE",
        "license_terms": "free for research and personal use; commercial use requires registering with Example first",
        "license_files": ["LICENSE"],
        "inherited_licenses": None,
    },
}
LLAMA2 = {
    "source": {"repo": "example/orca-llama-13b"},
    "model": {
        "name": "Orca-Llama 13B",
        "creator": "Example",
        "base_model": "example/orca-llama-13b",
        "license": "cc-by-nc-4.0",
        "inherited_licenses": [{"id": "llama2", "via": "Llama 2"}],
    },
}


def _build(tmp_path: Path, fixture: str, changes: dict[str, Any]) -> tuple[Recipe, Path, str]:
    recipe = recipe_variant(tmp_path, {"quantize": {"types": list(SIZES)}, **changes})
    build_dir = tmp_path / "build" / recipe.build_name
    manifest = run_fetch(recipe, build_dir, fake_build(recipe, build_dir, SIZES), fetched_source(tmp_path, fixture))
    text = cards.render_card(recipe, manifest)
    assert cards.check_card(text, recipe, manifest, build_dir) == []
    return recipe, build_dir, text


def _licensing(text: str) -> str:
    return dict(cards.sections(text))["licensing"]


def test_an_other_licence_is_named_linked_summarised_and_its_file_published(tmp_path: Path) -> None:
    recipe, build_dir, text = _build(tmp_path, "licence-other", OTHER)
    assert_golden("licence-other", text)
    licensing = _licensing(text)
    assert f"under its own licence, the [Example Community Licence Agreement]({BLOB}/LICENSE) (`other` on the Hub)" in (
        licensing
    )
    assert "commercial use requires registering with Example first" in licensing
    assert f"beside the GGUF files: [LICENSE]({BLOB}/LICENSE), [NOTICE]({BLOB}/NOTICE)." in licensing
    front = yaml.safe_load(cards.split_frontmatter(text)[0] or "")
    assert (front["license"], front["license_name"], front["license_link"]) == (
        "other",
        "Example Community Licence Agreement",
        "LICENSE",
    )
    source = tmp_path / "source"
    for name in ("LICENSE", "NOTICE"):
        assert (build_dir / "licences" / name).read_bytes() == (source / name).read_bytes()


def test_a_llama2_derivative_links_meta_licence_policy_and_the_files(tmp_path: Path) -> None:
    _recipe, build_dir, text = _build(tmp_path, "llama2-derivative", LLAMA2)
    assert_golden("llama2-derivative", text)
    licensing = _licensing(text)
    cc = "[Creative Commons Attribution Non Commercial 4.0](https://creativecommons.org/licenses/by-nc/4.0/)"
    assert f"under the {cc} (`cc-by-nc-4.0`)." in licensing
    assert (
        "derived from Llama 2, so the [Llama 2 Community License Agreement](https://ai.meta.com/llama/license/) "
        "applies to it as well, with its [acceptable use policy](https://ai.meta.com/llama/use-policy/)."
    ) in licensing
    assert f"[LICENSE.txt]({BLOB}/LICENSE.txt), [USE\\_POLICY.md]({BLOB}/USE_POLICY.md)." in licensing
    assert sorted(p.name for p in (build_dir / "licences").iterdir()) == ["LICENSE.txt", "USE_POLICY.md"]


def test_a_licence_file_missing_from_the_build_fails_the_check(tmp_path: Path) -> None:
    recipe, build_dir, text = _build(tmp_path, "licence-other", OTHER)
    (build_dir / "licences" / "NOTICE").unlink()
    manifest = load_manifest(build_dir)
    assert cards.check_card(text, recipe, manifest, build_dir) == [
        f"linked file NOTICE is missing from {build_dir / 'licences' / 'NOTICE'}"
    ]


def test_a_listed_licence_file_next_to_the_recipe_is_published(tmp_path: Path) -> None:
    (tmp_path / "AGREEMENT.md").write_text("Our own agreement.\n", encoding="utf-8")
    changes = {**OTHER, "model": {**OTHER["model"], "license_files": ["LICENSE", "AGREEMENT.md"]}}
    _recipe, build_dir, text = _build(tmp_path, "licence-other", changes)
    assert (build_dir / "licences" / "AGREEMENT.md").read_text(encoding="utf-8") == "Our own agreement.\n"
    assert f"[AGREEMENT.md]({BLOB}/AGREEMENT.md)" in _licensing(text)


def test_a_listed_licence_file_found_nowhere_is_one_line_naming_the_recipe_line(tmp_path: Path) -> None:
    changes = {**OTHER, "model": {**OTHER["model"], "license_files": ["LICENSE", "MISSING.md"]}}
    recipe = recipe_variant(tmp_path, {"quantize": {"types": list(SIZES)}, **changes})
    build_dir = tmp_path / "build" / recipe.build_name
    with pytest.raises(SourceError) as caught:
        run_fetch(recipe, build_dir, fake_build(recipe, build_dir, SIZES), fetched_source(tmp_path, "licence-other"))
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{recipe.path}:")
    assert ": model.license_files[1]: MISSING.md is neither in the source folder" in message


def _recipe_problems(tmp_path: Path, model: dict[str, Any]) -> list[str]:
    with pytest.raises(RecipeError) as caught:
        recipe_variant(tmp_path, {"model": model})
    with pytest.raises(RecipeError) as loaded:
        load_recipe(tmp_path / "causallm-14b.yaml")
    assert loaded.value.problems == caught.value.problems
    return caught.value.problems


def test_a_licence_id_the_hub_does_not_know_gets_the_nearest_one(tmp_path: Path) -> None:
    [problem] = _recipe_problems(tmp_path, {"license": "Apache 2.0"})
    assert ": model.license: 'Apache 2.0' is not a licence id the Hub knows; did you mean apache-2.0?" in problem
    assert problem.startswith(f"{tmp_path / 'causallm-14b.yaml'}:")
    assert "did you mean llama3.1?" in (licence_id_problem("llama-3.1") or "")
    assert licence_id_problem("llama2") is None


def test_a_relative_licence_link_must_name_a_published_file(tmp_path: Path) -> None:
    [problem] = _recipe_problems(
        tmp_path, {"license": "other", "license_name": "Example Licence", "license_link": "LICENSE"}
    )
    assert "model.license_link: 'LICENSE' names a file of the repo, but no such file is published" in problem


def test_an_inherited_licence_needs_a_name_or_a_known_id(tmp_path: Path) -> None:
    [problem] = _recipe_problems(tmp_path, {"inherited_licenses": [{"via": "Llama 2"}]})
    assert "model.inherited_licenses[0].name: give the licence's name, or its Hub id" in problem
    [problem] = _recipe_problems(tmp_path, {"inherited_licenses": [{"id": "lama2", "via": "Llama 2"}]})
    assert "model.inherited_licenses[0].id: 'lama2' is not a licence id the Hub knows; did you mean llama2?" in problem


def test_the_kept_id_list_has_the_hub_ids_cards_use() -> None:
    ids = known_licences()
    for key in ("apache-2.0", "mit", "llama2", "llama3", "llama3.1", "llama3.2", "llama3.3", "gemma", "openrail"):
        assert key in ids, key
    assert ids["llama2"].use_policy == "https://ai.meta.com/llama/use-policy/"
    assert "other" in ids and ids["other"].url is None


def test_a_known_id_is_named_and_linked_with_its_use_policy(tmp_path: Path) -> None:
    recipe = recipe_variant(tmp_path, {"model": {"license": "llama2", "inherited_licenses": None}})
    licensing = _licensing(cards.render_card(recipe))
    assert (
        "under the [Llama 2 Community License Agreement](https://ai.meta.com/llama/license/) (`llama2`), "
        "with its [acceptable use policy](https://ai.meta.com/llama/use-policy/)."
    ) in licensing
    assert "beside the GGUF files" not in licensing  # no source folder, nothing listed: no files to name
