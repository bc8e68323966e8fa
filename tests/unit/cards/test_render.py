"""Model cards: golden card, frontmatter against the reference card, sections, tables, checks, errors."""

from __future__ import annotations

import json
import os
import re
import socket
import struct
from pathlib import Path

import pytest
import yaml
from support.card_helpers import (
    CAUSALLM_SOURCE,
    GOLDEN_CARD,
    REFERENCE_CARD,
    fake_build,
    recipe_variant,
)
from support.paths import REPO_ROOT

from publisher import cards
from publisher.errors import CardError
from publisher.recipe import load_recipe

# Frontmatter values that legitimately come from our side rather than the source model:
# quantized_by is the publisher profile's name (the reference names its own publisher), and
# base_model_relation is a key the reference predates (the Hub added it later; the issue asks for it).
FROM_OUR_PROFILE = {"quantized_by"}
OUR_EXTRA_KEYS = {"base_model_relation"}


@pytest.fixture(scope="module")
def causallm_card() -> str:
    recipe = load_recipe(REPO_ROOT / "recipes" / "causallm-14b.yaml")
    return cards.render_card(recipe, source_dir=CAUSALLM_SOURCE)


def _frontmatter(text: str) -> dict[str, object]:
    front, _body = cards.split_frontmatter(text)
    assert front is not None
    data = yaml.safe_load(front)
    assert isinstance(data, dict)
    return data


def _markers(text: str) -> set[str]:
    return {name for name, _content in cards.sections(text)}


# --- the golden card and the reference card ---------------------------------------------------


def test_golden_card_matches(causallm_card: str) -> None:
    """Regenerate with UPDATE_GOLDEN=1 after an intended template change, then review the diff."""
    if os.environ.get("UPDATE_GOLDEN") == "1":
        GOLDEN_CARD.write_text(causallm_card, encoding="utf-8")
    assert GOLDEN_CARD.exists(), "golden card missing: run with UPDATE_GOLDEN=1"
    assert causallm_card == GOLDEN_CARD.read_text(encoding="utf-8")


def test_frontmatter_matches_reference_card(causallm_card: str) -> None:
    ours = _frontmatter(causallm_card)
    reference = _frontmatter(REFERENCE_CARD.read_text(encoding="utf-8"))
    assert set(ours) == set(reference) | OUR_EXTRA_KEYS
    for key, value in reference.items():
        if key in FROM_OUR_PROFILE:
            continue
        assert ours[key] == value, key
    assert ours["quantized_by"] == "publisher"
    assert ours["base_model_relation"] == "quantized"
    assert ours["inference"] is False


def test_section_markers_cover_the_reference(causallm_card: str) -> None:
    reference = _markers(REFERENCE_CARD.read_text(encoding="utf-8"))
    ours = _markers(causallm_card)
    assert len(reference) == 12
    assert reference <= ours, reference - ours
    assert {"measured-quality"} <= ours - reference


def test_every_section_is_closed_and_nonempty(causallm_card: str) -> None:
    starts = re.findall(r"<!-- (\S+) start -->", causallm_card)
    ends = re.findall(r"<!-- (\S+) end -->", causallm_card)
    assert starts == ends
    assert all(content.strip() for _name, content in cards.sections(causallm_card))
    recipe = load_recipe(REPO_ROOT / "recipes" / "causallm-14b.yaml")
    assert cards.check_card(causallm_card, recipe, None, None) == []


def test_original_card_appears_once_without_frontmatter(causallm_card: str) -> None:
    body = cards.split_frontmatter(causallm_card)[1]
    assert body.count("Fully Compatible with Meta LLaMA 2") == 1
    assert body.count("<!-- original-model-card start -->") == 1
    original = dict(cards.sections(causallm_card))["original-model-card"]
    # the original's own frontmatter (with its extra 'causallm' tag) is gone
    assert "license: wtfpl" not in original
    assert "- causallm\n" not in body
    assert "\n---\n" not in original.split("Fully Compatible")[0]


def test_estimates_from_config_are_marked(causallm_card: str) -> None:
    table = dict(cards.sections(causallm_card))["README_GGUF.md-provided-files"]
    assert "**Estimates**" in table
    assert "14.17B parameters" in table
    # Q4_0: 14,166,676,480 params x 4.64 bpw / 8 = 8.217 GB; + KV 3.355 GB + 0.5 GB overhead
    assert "| Q4_0 | ~4.64 | ~8.22 GB | ~12.07 GB |" in table
    measured = dict(cards.sections(causallm_card))["measured-quality"]
    assert "Not measured yet" in measured


def test_llama_parameter_count_from_config() -> None:
    arch = cards.read_architecture(CAUSALLM_SOURCE)
    assert arch is not None
    assert arch.parameters() == 14_166_676_480
    assert arch.kv_cache_bytes(4096) == 2 * 40 * 40 * 128 * 4096 * 2


def test_parameter_count_from_safetensors_header(tmp_path: Path) -> None:
    header = {
        "__metadata__": {"format": "pt"},
        "a": {"dtype": "F16", "shape": [3, 4], "data_offsets": [0, 24]},
        "b": {"dtype": "F16", "shape": [5], "data_offsets": [24, 34]},
    }
    raw = json.dumps(header).encode()
    (tmp_path / "model.safetensors").write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * 34)
    assert cards.safetensors_parameters(tmp_path) == 17
    (tmp_path / "bad.safetensors").write_bytes(struct.pack("<Q", 10**12))
    with pytest.raises(CardError, match="implausible"):
        cards.safetensors_parameters(tmp_path)


def test_repo_only_recipe_renders_with_unknown_sizes(tmp_path: Path) -> None:
    recipe = recipe_variant(tmp_path)
    text = cards.render_card(recipe)
    table = dict(cards.sections(text))["README_GGUF.md-provided-files"]
    assert "size of the source model is unknown" in table
    assert "| Q8_0 | ~8.51 | unknown | unknown |" in table
    assert "original-model-card" not in text  # no local README to embed
    assert cards.check_card(text, recipe, None, None) == []


def test_original_card_omitted_when_disabled(tmp_path: Path) -> None:
    recipe = recipe_variant(tmp_path, {"card": {"embed_original_card": False}})
    text = cards.render_card(recipe, source_dir=CAUSALLM_SOURCE)
    assert "original-model-card" not in text
    assert "Fully Compatible with Meta LLaMA 2" not in text


def test_rendering_never_touches_the_network(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("card rendering opened a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    recipe = recipe_variant(tmp_path)
    manifest = fake_build(recipe, tmp_path / "build", {"Q4_0": 8_180_000_000})
    assert "causallm_14b.Q4_0.gguf" in cards.render_card(recipe, manifest, source_dir=CAUSALLM_SOURCE)


# --- cards from a build manifest --------------------------------------------------------------


SIZES = {
    "Q4_0": 8_180_411_392,
    "Q4_1": 9_010_235_904,
    "Q5_0": 9_847_312_384,
    "Q5_1": 10_685_206_528,
    "Q8_0": 15_061_544_960,
}


def test_provided_files_list_exactly_the_passed_artifacts(tmp_path: Path) -> None:
    recipe = recipe_variant(tmp_path)
    build_dir = tmp_path / "build" / recipe.build_name
    manifest = fake_build(recipe, build_dir, SIZES, failed=("Q5_1",))
    text = cards.render_card(recipe, manifest, source_dir=CAUSALLM_SOURCE)
    listed = cards.names_in_table(text)
    assert listed == [f"causallm_14b.{t}.gguf" for t in ("Q4_0", "Q4_1", "Q5_0", "Q8_0")]
    table = dict(cards.sections(text))["README_GGUF.md-provided-files"]
    kv_and_overhead = 3_355_443_200 + cards.RAM_OVERHEAD_BYTES
    for quant_type in ("Q4_0", "Q4_1", "Q5_0", "Q8_0"):
        size = SIZES[quant_type]
        bits = manifest.artifacts[quant_type].bits_per_weight
        row = (
            f"| [causallm_14b.{quant_type}.gguf](https://huggingface.co/publisher/CausalLM-14B-GGUF/blob/main/"
            f"causallm_14b.{quant_type}.gguf) | {quant_type} | {bits:.2f} | {size / 1e9:.2f} GB | "
            f"{(size + kv_and_overhead) / 1e9:.2f} GB |"
        )
        assert row in table
    assert "Estimates" not in table
    assert "Q5_1" not in table
    assert "held back" in dict(cards.sections(text))["description"]
    assert cards.check_card(text, recipe, manifest, build_dir) == []


def test_measured_quality_table_and_model_index(tmp_path: Path) -> None:
    recipe = recipe_variant(tmp_path)
    manifest = fake_build(
        recipe, tmp_path / "b", {"Q4_0": SIZES["Q4_0"], "Q8_0": SIZES["Q8_0"]}, smoke_output="A | B\nC"
    )
    text = cards.render_card(recipe, manifest, source_dir=CAUSALLM_SOURCE)
    quality = dict(cards.sections(text))["measured-quality"]
    assert "| causallm_14b.Q4_0.gguf | 6.5000 | 0.0500 | 90.0% | 10.0 | A \\| B C |" in quality
    assert "| causallm_14b.Q8_0.gguf | 6.6000 | 0.0400 | 91.0% | 11.0 |" in quality
    front = _frontmatter(text)
    assert front["model_name"] == "CausalLM 14B"
    index = front["model-index"]
    assert isinstance(index, list) and index[0]["name"] == "CausalLM 14B"
    metrics = index[0]["results"][0]["metrics"]
    assert {"type": "perplexity", "value": 6.5, "name": "Perplexity (Q4_0)", "config": "Q4_0"} in metrics
    assert len(metrics) == 6
    compat = dict(cards.sections(text))["compatibility_gguf"]
    release = "https://github.com/ggml-org/llama.cpp/releases/tag/b6700"
    assert f"llama.cpp [b6700]({release}), as bundled in llama-cpp-python 0.3.36," in compat
    assert "system info" not in compat


def test_sharded_artifact_is_one_entry(tmp_path: Path) -> None:
    recipe = recipe_variant(tmp_path)
    build_dir = tmp_path / "build"
    manifest = fake_build(recipe, build_dir, {"Q8_0": SIZES["Q8_0"]}, shards={"Q8_0": 2})
    text = cards.render_card(recipe, manifest, source_dir=CAUSALLM_SOURCE)
    assert cards.names_in_table(text) == ["causallm_14b.Q8_0-00001-of-00002.gguf"]
    assert "(2 parts)" in text
    assert "'causallm_14b.Q8_0-00001-of-00002.gguf' 'causallm_14b.Q8_0-00002-of-00002.gguf'" in text
    assert cards.check_card(text, recipe, manifest, build_dir) == []
    (build_dir / "causallm_14b.Q8_0-00001-of-00002.gguf").unlink()
    assert any("missing" in p for p in cards.check_card(text, recipe, manifest, build_dir))


# --- branches ---------------------------------------------------------------------------------


def test_branch_card_has_branch_table_and_revision_downloads(tmp_path: Path) -> None:
    recipe = recipe_variant(
        tmp_path,
        {
            "card": {"template": "branches"},
            "publish": {
                "branches": [
                    {"name": "q8", "types": ["Q8_0"], "description": "8-bit, closest to the original"},
                    {"name": "legacy-5bit", "types": ["Q5_0", "Q5_1"], "description": "5-bit files"},
                ]
            },
        },
    )
    manifest = fake_build(recipe, tmp_path / "b", SIZES)
    text = cards.render_card(recipe, manifest, source_dir=CAUSALLM_SOURCE)
    table = dict(cards.sections(text))["branches"]
    assert "| Branch | Quant types | Bits | Size | Description |" in table
    assert "| [main](https://huggingface.co/publisher/CausalLM-14B-GGUF/tree/main) | Q4_0, Q4_1 |" in table
    q8 = "| [q8](https://huggingface.co/publisher/CausalLM-14B-GGUF/tree/q8) | Q8_0 | "
    assert q8 in table and f"{SIZES['Q8_0'] / 1e9:.2f} GB | 8-bit, closest to the original |" in table
    five = (SIZES["Q5_0"] + SIZES["Q5_1"]) / 1e9
    assert "| Q5_0, Q5_1 |" in table and f"{five:.2f} GB" in table
    download = dict(cards.sections(text))["README_GGUF.md-how-to-download"]
    assert "hf download publisher/CausalLM-14B-GGUF --revision 'q8' --local-dir 'CausalLM-14B-GGUF-q8'" in download
    assert "hf download publisher/CausalLM-14B-GGUF --revision 'legacy-5bit' 'causallm_14b.Q5_0.gguf'" in download
    assert "/blob/q8/causallm_14b.Q8_0.gguf" in text
    assert cards.check_card(text, recipe, manifest, None) == []


# --- template errors and overrides ------------------------------------------------------------


def test_unknown_variable_in_user_template_names_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "card.md").write_text("# {{ title }}\n\nfine\n{{ no_such_thing }}\n", encoding="utf-8")
    recipe = recipe_variant(tmp_path, {"card": {"template": "card.md"}})  # any file name will do
    with pytest.raises(CardError) as info:
        cards.render_card(recipe)
    message = str(info.value)
    assert "\n" not in message
    assert message.endswith("card.md:4: 'no_such_thing' is undefined")


def test_bad_syntax_in_user_template_names_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "card.md.j2").write_text("# {{ title }}\n\n{% if built %}\nno endif\n", encoding="utf-8")
    recipe = recipe_variant(tmp_path, {"card": {"template": "card.md.j2"}})
    with pytest.raises(CardError) as info:
        cards.render_card(recipe)
    message = str(info.value)
    assert "\n" not in message
    assert re.search(r"card\.md\.j2:\d+: template syntax error: Unexpected end of template", message), message


def test_error_in_overridden_partial_names_the_partial(tmp_path: Path) -> None:
    partials = tmp_path / "my-partials"
    partials.mkdir()
    (partials / "footer.md.j2").write_text("Thanks.\n{{ profile.nickname }}\n", encoding="utf-8")
    recipe = recipe_variant(tmp_path, {"card": {"partials_dir": "my-partials"}})
    with pytest.raises(CardError, match=r"my-partials/footer\.md\.j2:2: 'dict object' has no attribute 'nickname'$"):
        cards.render_card(recipe)


def test_partial_override_replaces_one_section(tmp_path: Path) -> None:
    partials = tmp_path / "partials"
    partials.mkdir()
    (partials / "footer.md.j2").write_text("Questions? Open a discussion on {{ repo_id }}.\n", encoding="utf-8")
    recipe = recipe_variant(tmp_path, {"card": {"partials_dir": "partials"}})
    text = cards.render_card(recipe, source_dir=CAUSALLM_SOURCE)
    footer = dict(cards.sections(text))["footer"]
    assert footer.strip() == "Questions? Open a discussion on publisher/CausalLM-14B-GGUF."
    assert "## Provided files" in text  # the other sections are still the shipped ones


def test_sandbox_blocks_unsafe_attribute_access(tmp_path: Path) -> None:
    (tmp_path / "card.md.j2").write_text("{{ title.__class__.__mro__ }}\n", encoding="utf-8")
    recipe = recipe_variant(tmp_path, {"card": {"template": "card.md.j2"}})
    with pytest.raises(CardError, match=r"card\.md\.j2:1: .*unsafe"):
        cards.render_card(recipe)


def test_missing_user_template_is_one_line(tmp_path: Path) -> None:
    recipe = recipe_variant(tmp_path, {"card": {"template": "nope.md.j2"}})
    with pytest.raises(CardError, match=r"^card\.template: .*nope\.md\.j2: no such file"):
        cards.render_card(recipe)


# --- checks -----------------------------------------------------------------------------------


def test_check_finds_each_kind_of_problem(tmp_path: Path, causallm_card: str) -> None:
    recipe = recipe_variant(tmp_path)
    broken = causallm_card.replace("<!-- licensing start -->\n", "<!-- licensing start -->\n{{ leftover }}\n")
    assert cards.check_card(broken, recipe, None, None) == ["unrendered template placeholder '{{' in the card"]
    emptied = re.sub(r"(<!-- footer start -->).*?(<!-- footer end -->)", r"\1\n\2", causallm_card, flags=re.S)
    assert cards.check_card(emptied, recipe, None, None) == ["section 'footer' is empty"]
    no_license = causallm_card.replace("license: wtfpl\n", "")
    assert cards.check_card(no_license, recipe, None, None) == [
        "frontmatter: required key 'license' is missing (set model.license)"
    ]
    unclosed = causallm_card.replace("<!-- footer end -->", "")
    assert "section 'footer' is never closed" in cards.check_card(unclosed, recipe, None, None)[0]
    assert cards.check_card("no frontmatter", recipe, None, None)[0].startswith("frontmatter: missing")


def test_check_reports_links_to_files_not_built(tmp_path: Path) -> None:
    recipe = recipe_variant(tmp_path)
    build_dir = tmp_path / "build"
    manifest = fake_build(recipe, build_dir, {"Q4_0": SIZES["Q4_0"]})
    estimated = cards.render_card(recipe, None, source_dir=CAUSALLM_SOURCE)
    problems = cards.check_card(estimated, recipe, manifest, build_dir)
    assert "linked file causallm_14b.Q8_0.gguf is not a passed artifact of the build in" in problems[-1]
    assert len(problems) == 4


# --- formatting helpers -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("a|b", "a\\|b"),
        ("x\n\ny", "x y"),
        ("<script>", "&lt;script&gt;"),
        ("back\\slash `code`", "back\\\\slash \\`code\\`"),
    ],
)
def test_md_cell_escapes(value: str, expected: str) -> None:
    assert cards.md_cell(value) == expected


def test_shell_and_llama_escapes() -> None:
    quoted = cards.shell_quote(cards.llama_escape("it's\nfine"))
    assert quoted == "'it'\"'\"'s\\nfine'"
    assert cards.format_gb(8_180_411_392) == "8.18 GB"
    assert cards.format_gb(54_400_000) == "54.4 MB"
    assert cards.code_fence("a ```` b") == "`````"


def test_sanitizer_strips_scripts_handlers_and_script_urls() -> None:
    html = cards.markdown_to_html(
        '<div onclick="x()">hi<script>alert(1)</script></div>\n\n'
        '[link](javascript:alert(1)) <a href=" JaVaScRiPt:alert(2)">a</a> <img src=x onerror=alert(3)>\n\n'
        "| a | b |\n| - | - |\n| 1 | 2 |\n"
    )
    assert "<script" not in html.lower() and "alert(1)</" not in html
    assert "onclick" not in html and "onerror" not in html
    assert 'href="' not in html.split("<table>")[0]  # neither script URL survives as a link
    assert "<div>hi</div>" in html
    assert "<td>1</td>" in html


def test_user_template_can_extend_the_shipped_card(tmp_path: Path) -> None:
    (tmp_path / "mine.md.j2").write_text(
        '{% extends "gguf.md.j2" %}\n{% block branches %}<!-- extra start -->\nHello from {{ repo_id }}.\n'
        "<!-- extra end -->\n\n{% endblock %}\n",
        encoding="utf-8",
    )
    recipe = recipe_variant(tmp_path, {"card": {"template": "mine.md.j2"}})
    text = cards.render_card(recipe, source_dir=CAUSALLM_SOURCE)
    found = dict(cards.sections(text))
    assert found["extra"].strip() == "Hello from publisher/CausalLM-14B-GGUF."
    assert "README_GGUF.md-provided-files" in found
    assert cards.check_card(text, recipe, None, None) == []


def test_local_only_source_without_links_still_checks_clean(tmp_path: Path) -> None:
    recipe = recipe_variant(
        tmp_path,
        {
            "source": {"repo": None, "revision": None, "path": str(CAUSALLM_SOURCE)},
            "model": {"base_model": None},
            "card": {"related": None},
        },
    )
    text = cards.render_card(recipe)  # the source folder comes from the recipe
    assert "14.17B parameters" in text
    assert "repositories-available" not in text
    assert "huggingface.co/CausalLM/14B" not in text.split("<!-- original-model-card start -->")[0]
    assert "base_model:" not in text.split("\n---\n")[0]
    assert cards.check_card(text, recipe, None, None) == [
        "frontmatter: required key 'base_model' is missing (set model.base_model)"
    ]
