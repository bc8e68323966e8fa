"""Loading, dumping and describing valid recipes; the JSON Schema for editors."""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.paths import REPO_ROOT

from publisher.errors import RecipeError
from publisher.formats import gguf_quants
from publisher.recipe import Recipe, dump_recipe, load_recipe, parse_recipe, recipe_json_schema

RECIPES = sorted((REPO_ROOT / "recipes").glob("*.yaml"))
MINIMAL_PATH = REPO_ROOT / "tests" / "fixtures" / "recipes" / "minimal.yaml"
MINIMAL = MINIMAL_PATH.read_text(encoding="utf-8")
PROBLEM_LINE = re.compile(r"^\S+?(:\d+)?: \S.*$")


def readme_recipe_example() -> str:
    """The first YAML block of the README's recipe section."""
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("<!-- section: recipe -->", 1)[1].split("<!-- /section: recipe -->", 1)[0]
    match = re.search(r"```yaml\n(.*?)```", section, re.DOTALL)
    assert match, "the README's recipe section has no ```yaml example"
    return match.group(1)


def _validator() -> jsonschema.protocols.Validator:
    schema = recipe_json_schema()
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


# -- round trip -------------------------------------------------------------------------------


def test_recipes_folder_is_not_empty() -> None:
    names = {p.name for p in RECIPES}
    assert {"causallm-14b.yaml", "smollm2-135m-instruct.yaml"} <= names


@pytest.mark.parametrize("path", RECIPES, ids=[p.name for p in RECIPES])
def test_recipe_round_trips(path: Path) -> None:
    recipe = load_recipe(path)
    text = dump_recipe(recipe)
    again = parse_recipe(text, path)
    assert again == recipe
    assert dump_recipe(again) == text  # dumping is stable
    assert again.fingerprint() == recipe.fingerprint()


def test_readme_example_round_trips() -> None:
    path = REPO_ROOT / "recipes" / "example.yaml"  # as if it lived beside the shipped recipes
    recipe = parse_recipe(readme_recipe_example(), path)
    assert parse_recipe(dump_recipe(recipe), path) == recipe


def test_readme_example_shows_every_field() -> None:
    """The annotated example documents the whole format: each schema property appears as a key."""
    example = readme_recipe_example()
    schema = recipe_json_schema()
    names: set[str] = set(schema["properties"])
    for definition in schema["$defs"].values():
        names |= set(definition.get("properties", {}))
    missing = sorted(n for n in names if not re.search(rf"(^|[\s{{\[-]){re.escape(n)}:", example, re.MULTILINE))
    assert not missing, f"README recipe example does not show: {missing}"


def test_dump_leaves_out_defaults() -> None:
    recipe = parse_recipe(MINIMAL, MINIMAL_PATH)
    data = yaml.safe_load(dump_recipe(recipe))
    assert set(data) == {"source", "model", "quantize", "card", "publish"}
    assert data["source"] == {"repo": "acme/tiny"}


def test_fingerprint_ignores_formatting_but_not_content() -> None:
    reformatted = "# a comment\n" + MINIMAL.replace("  types:\n    - Q4_K_M\n    - Q8_0\n", "  types: [q4_k_m, Q8_0]\n")
    base = parse_recipe(MINIMAL, MINIMAL_PATH)
    assert parse_recipe(reformatted, MINIMAL_PATH).fingerprint() == base.fingerprint()
    changed = MINIMAL.replace("name: Tiny", "name: Tiny 2")
    assert parse_recipe(changed, MINIMAL_PATH).fingerprint() != base.fingerprint()


# -- what a loaded recipe offers --------------------------------------------------------------


def test_normalizes_names() -> None:
    text = MINIMAL.replace("    - Q4_K_M\n", "    - q4_k\n").replace(
        "  license: mit\n", "  license: mit\n  prompt_template: ' ChatML '\n"
    )
    recipe = parse_recipe(text, MINIMAL_PATH)
    assert recipe.quantize.types == ["Q4_K_M", "Q8_0"]
    assert recipe.model.prompt_template == "chatml"
    assert recipe.model.prompt_template_title == "ChatML"
    assert "{prompt}" in recipe.model.prompt_template_text


def test_single_string_stands_for_a_list() -> None:
    text = MINIMAL.replace("  license: mit\n", "  license: mit\n  base_model: acme/tiny\n  languages: en\n")
    recipe = parse_recipe(text, MINIMAL_PATH)
    assert recipe.model.base_model == ["acme/tiny"]
    assert recipe.model.languages == ["en"]


def test_literal_prompt_template_is_kept() -> None:
    template = "### User: {prompt}\\n### Bot:"
    text = MINIMAL.replace("  license: mit\n", f'  license: mit\n  prompt_template: "{template}"\n')
    recipe = parse_recipe(text, MINIMAL_PATH)
    assert recipe.model.prompt_template == "### User: {prompt}\n### Bot:"
    assert recipe.model.prompt_template_title == "Custom"


def test_names_from_file_and_model() -> None:
    recipe = load_recipe(MINIMAL_PATH)
    assert recipe.path == MINIMAL_PATH
    assert recipe.build_name == "minimal"
    assert recipe.basename == "tiny"
    assert recipe.artifact_filename("Q8_0") == "tiny.Q8_0.gguf"
    named = parse_recipe("name: tiny-build\n" + MINIMAL.replace("name: Tiny", "name: Tiny Chat 1.5B"), MINIMAL_PATH)
    assert named.build_name == "tiny-build"
    assert named.basename == "tiny_chat_1.5b"


def test_relative_paths_are_relative_to_the_recipe_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "recipes"
    folder.mkdir()
    text = MINIMAL.replace("  repo: acme/tiny\n", "  path: ../models/tiny\n")
    (folder / "r.yaml").write_text(text, encoding="utf-8")
    (tmp_path / "models" / "tiny").mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    recipe = load_recipe(Path("../recipes/r.yaml"))
    source_dir = recipe.source_dir()
    assert source_dir is not None
    assert source_dir.resolve() == (tmp_path / "models" / "tiny").resolve()
    assert recipe.resolve_path("/abs/x") == Path("/abs/x")


def test_the_demo_recipe_points_at_the_demo_model() -> None:
    recipe = load_recipe(REPO_ROOT / "recipes" / "smollm2-135m-instruct.yaml")
    assert recipe.source_dir() == REPO_ROOT / "recipes" / ".." / ".cache" / "models" / "SmolLM2-135M-Instruct"
    assert {"Q2_K", "Q4_K_M", "Q8_0"} <= set(recipe.quantize.types)
    assert recipe.publish.target == "local"
    assert recipe.model.prompt_template == "chatml"
    contains = [word for p in recipe.smoke.prompts for e in p.expectations() for word in e.contains]
    assert "Paris" in contains


def test_the_causallm_recipe_carries_the_card_data() -> None:
    recipe = load_recipe(REPO_ROOT / "recipes" / "causallm-14b.yaml")
    assert recipe.model.license == "wtfpl"
    assert [lic.via for lic in recipe.model.inherited_licenses] == ["Llama 2"]
    assert recipe.model.system_message
    assert recipe.model.prompt_template == "chatml"
    assert [r.repo for r in recipe.card.related][-1] == "CausalLM/14B"


# -- JSON Schema ------------------------------------------------------------------------------


def test_schema_is_valid_and_accepts_every_recipe() -> None:
    validator = _validator()
    for path in RECIPES:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        assert not list(validator.iter_errors(data)), path
    assert not list(validator.iter_errors(yaml.safe_load(readme_recipe_example())))


def test_schema_rejects_what_the_loader_rejects() -> None:
    validator = _validator()
    data = yaml.safe_load(MINIMAL)
    data["model"]["licence"] = "mit"
    assert list(validator.iter_errors(data))
    del data["model"]["licence"]
    del data["publish"]
    assert list(validator.iter_errors(data))


def test_committed_schema_matches_the_code() -> None:
    committed = json.loads((REPO_ROOT / "recipe.schema.json").read_text(encoding="utf-8"))
    assert committed == recipe_json_schema(), "regenerate it: publisher schema --out recipe.schema.json"


@pytest.mark.parametrize("path", RECIPES, ids=[p.name for p in RECIPES])
def test_recipes_point_editors_at_the_schema(path: Path) -> None:
    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert first == "# yaml-language-server: $schema=../recipe.schema.json"


# -- properties -------------------------------------------------------------------------------


def _recipe_data(**quantize: Any) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(MINIMAL)
    data["quantize"].update(quantize)
    return data


@settings(max_examples=150)
@given(name=st.text(max_size=12))
def test_any_quant_name_is_accepted_or_reported(name: str) -> None:
    text = yaml.safe_dump(_recipe_data(types=["Q8_0", name]), allow_unicode=True)
    try:
        recipe = parse_recipe(text, Path("r.yaml"))
    except RecipeError as err:
        assert len(err.problems) == 1
        assert err.problems[0].startswith("r.yaml:")
        assert "quantize.types[1]: " in err.problems[0]
    else:
        assert recipe.quantize.types[1] in gguf_quants.CATALOGUE
        assert gguf_quants.lookup(name).name == recipe.quantize.types[1]


_YAML_NOISE = st.text(alphabet=st.sampled_from(list(":-[]{}&*!|>'\"#%@`,?\n\t x\x00\xe9")), max_size=6)


@settings(max_examples=300)
@given(position=st.integers(0, len(MINIMAL)), cut=st.integers(0, 4), noise=_YAML_NOISE)
def test_mangled_recipes_never_crash(position: int, cut: int, noise: str) -> None:
    """Damage the minimal recipe anywhere: the result loads or fails with well-formed problem lines."""
    text = MINIMAL[:position] + noise + MINIMAL[position + cut :]
    try:
        parse_recipe(text, Path("r.yaml"))
    except RecipeError as err:
        assert err.problems
        assert all(PROBLEM_LINE.match(p) and p.startswith("r.yaml") for p in err.problems), err.problems


@settings(max_examples=100, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=64))
def test_arbitrary_bytes_never_crash(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "r.yaml"
        path.write_bytes(data)
        with pytest.raises(RecipeError) as info:
            load_recipe(path)
    assert all(p.startswith(str(path)) for p in info.value.problems)


def test_recipe_model_is_strict_everywhere() -> None:
    """Every element of the schema forbids unknown keys (a typo must never be ignored)."""
    schema = recipe_json_schema()
    assert schema["additionalProperties"] is False
    for name, definition in schema["$defs"].items():
        assert definition.get("additionalProperties") is False, name
    assert Recipe.model_config.get("extra") == "forbid"
