"""The run section: chat or completion from what the build proved, Hub commands by quant tag, branches, -ngl."""

from __future__ import annotations

import ctypes
import re
from pathlib import Path
from typing import Any

import pytest
from support.card_helpers import CAUSALLM_SOURCE, fake_build, recipe_variant
from support.golden import assert_golden

from publisher import cards, pipeline, prompts
from publisher.cards import run
from publisher.errors import RecipeError
from publisher.manifest import Manifest, TemplateResult
from publisher.recipe import Recipe, naming

SIZES = {"Q4_0": 8_180_411_392, "Q8_0": 15_061_544_960}
BASE_MODEL = {"name": "CausalLM 14B Base", "prompt_template": "none", "system_message": ""}
VICUNA = {"prompt_template": "vicuna", "llama_cpp_template": "vicuna", "system_message": "A chat."}


LLAMA_CPP_TOOLS = {"llama.cpp": "b11312 (commit 0c1e570, library 0.5.0-dev)", "llama-cpp-python": "0.3.36"}


def _with_template(manifest: Manifest, template: TemplateResult | None) -> Manifest:
    artifacts = {k: a.model_copy(update={"template": template}) for k, a in manifest.artifacts.items()}
    return manifest.model_copy(update={"artifacts": artifacts, "tools": LLAMA_CPP_TOOLS})


def _card(tmp_path: Path, model: dict[str, Any], template: TemplateResult | None) -> tuple[str, Recipe]:
    recipe = recipe_variant(tmp_path, {"model": model, "quantize": {"types": list(SIZES)}})
    manifest = _with_template(fake_build(recipe, tmp_path / "build", SIZES), template)
    return cards.render_card(recipe, manifest, source_dir=CAUSALLM_SOURCE), recipe


def _run_section(text: str) -> str:
    return dict(cards.sections(text))["README_GGUF.md-how-to-run"]


def test_base_model_without_chat_template_gets_completion_commands(tmp_path: Path) -> None:
    text, _recipe = _card(tmp_path, BASE_MODEL, TemplateResult(checked=False))
    section = _run_section(text)
    assert "llama-cli" not in section.replace("`llama-cli`", "")  # only the note on older releases names it
    assert "llama-completion -hf publisher/CausalLM-14B-GGUF:Q4_0 -c 4096 -ngl 41 -n 256 -no-cnv -p " in section
    assert "found no working chat template" in section
    assert "--chat-template" not in section
    assert_golden("base-model-no-chat-template", text)


def test_named_llama_cpp_template_is_passed_to_every_chat_command(tmp_path: Path) -> None:
    text, _recipe = _card(tmp_path, VICUNA, TemplateResult(checked=False))
    section = _run_section(text)
    assert "llama-server -hf publisher/CausalLM-14B-GGUF:Q4_0 -c 4096 -ngl 41 --chat-template vicuna\n" in section
    hub = "llama-cli -hf publisher/CausalLM-14B-GGUF:Q4_0 -c 4096 -ngl 41"
    assert f"{hub} --chat-template vicuna -sys 'A chat.'" in section
    assert "llama-cli -m 'causallm_14b.Q4_0.gguf' -c 4096 -ngl 41 --chat-template vicuna -sys 'A chat.'" in section
    assert_golden("vicuna-template", text)


def test_chat_template_proven_by_smoke_gives_chat_commands(tmp_path: Path) -> None:
    text, _recipe = _card(tmp_path, {}, TemplateResult(checked=True, matches=True))
    section = _run_section(text)
    assert "carries a chat template that renders" in section
    hub = "llama-cli -hf publisher/CausalLM-14B-GGUF:Q4_0 -c 4096 -ngl 41"
    assert f"{hub} -sys 'You are a helpful assistant.'" in section
    assert "ollama run hf.co/publisher/CausalLM-14B-GGUF:Q4_0\n" in section
    assert "lms get https://huggingface.co/publisher/CausalLM-14B-GGUF@Q4_0\n" in section
    assert "--chat-template" not in section


def test_template_that_fails_to_render_is_not_proof(tmp_path: Path) -> None:
    broken = TemplateResult(checked=True, matches=False, difference="the GGUF chat template fails to render: boom")
    section = _run_section(_card(tmp_path, {}, broken)[0])
    assert "llama-cli -hf" not in section and "llama-completion -hf" in section


def test_estimated_card_offers_completions_until_a_build_proves_a_template(tmp_path: Path) -> None:
    recipe = recipe_variant(tmp_path)
    section = _run_section(cards.render_card(recipe, source_dir=CAUSALLM_SOURCE))
    assert "once a build has checked" in section
    assert "llama-cli -hf" not in section


def test_file_on_a_branch_is_run_by_url_and_tag_tools_are_not_offered(tmp_path: Path) -> None:
    branches = {"branches": [{"name": "q4", "types": ["Q4_0"], "description": "4-bit"}]}
    recipe = recipe_variant(tmp_path, {"publish": branches, "quantize": {"types": list(SIZES)}})
    manifest = _with_template(fake_build(recipe, tmp_path / "build", SIZES), TemplateResult(checked=True))
    section = _run_section(cards.render_card(recipe, manifest, source_dir=CAUSALLM_SOURCE))
    url = "https://huggingface.co/publisher/CausalLM-14B-GGUF/resolve/q4/causallm_14b.Q4_0.gguf"
    assert f"llama-server -mu {url} -c 4096 -ngl 41\n" in section
    assert "only read the `main` branch" in section
    assert "ollama run" not in section and "lms get" not in section and "-hf " not in section


def test_files_on_other_branches_are_named_with_the_way_to_reach_them(tmp_path: Path) -> None:
    branches = {"branches": [{"name": "q8", "types": ["Q8_0"], "description": "8-bit"}]}
    recipe = recipe_variant(tmp_path, {"publish": branches, "quantize": {"types": list(SIZES)}})
    manifest = _with_template(fake_build(recipe, tmp_path / "build", SIZES), TemplateResult(checked=True))
    section = _run_section(cards.render_card(recipe, manifest, source_dir=CAUSALLM_SOURCE))
    assert "llama-server -hf publisher/CausalLM-14B-GGUF:Q4_0 " in section  # the example stays on main
    assert "Files on other branches (`causallm_14b.Q8_0.gguf`) cannot be reached by quant tag" in section
    assert "-mu https://huggingface.co/publisher/CausalLM-14B-GGUF/resolve/q8/causallm_14b.Q8_0.gguf" in section


def test_split_file_on_main_is_found_by_its_tag(tmp_path: Path) -> None:
    recipe = recipe_variant(tmp_path, {"quantize": {"types": ["Q8_0"]}})
    build = tmp_path / "build"
    manifest = _with_template(fake_build(recipe, build, {"Q8_0": SIZES["Q8_0"]}, shards={"Q8_0": 2}), None)
    section = _run_section(cards.render_card(recipe, manifest, source_dir=CAUSALLM_SOURCE))
    assert "llama-server -hf publisher/CausalLM-14B-GGUF:Q8_0 " in section
    names = [p.name for p in build.glob("*.gguf")]
    assert naming.llama_cpp_pick(names, "Q8_0") == "causallm_14b.Q8_0-00001-of-00002.gguf"


@pytest.mark.parametrize(
    ("names", "tag", "expected"),
    [
        (["m.Q4_K_M.gguf", "m.Q4_K_S.gguf"], "q4_k_s", "m.Q4_K_S.gguf"),
        (["m-7B-Q4_K_M.gguf", "m-7B-Q8_0.gguf"], "Q8_0", "m-7B-Q8_0.gguf"),
        (["m.Q4_K_M.gguf"], "Q4_K", None),  # Q4_K is not followed by . or -
        (["m.Q4_0-00002-of-00002.gguf", "m.Q4_0-00001-of-00002.gguf"], "Q4_0", "m.Q4_0-00001-of-00002.gguf"),
        (["mmproj-m.Q4_0.gguf", "m.Q4_0.gguf"], "Q4_0", "m.Q4_0.gguf"),
    ],
)
def test_llama_cpp_pick_follows_find_best_model(names: list[str], tag: str, expected: str | None) -> None:
    assert naming.llama_cpp_pick(names, tag) == expected


@pytest.mark.parametrize(("layers", "ngl"), [(40, 41), (30, 31), (None, 99)])
def test_gpu_layers_include_the_output_layer(layers: int | None, ngl: int) -> None:
    assert run.gpu_layers(layers) == ngl


def test_llama_cpp_template_names_match_the_installed_library() -> None:
    llama_cpp = pytest.importorskip("llama_cpp")
    names = (ctypes.c_char_p * 200)()
    count = llama_cpp.llama_chat_builtin_templates(names, 200)
    assert tuple(sorted(names[i].decode() for i in range(count))) == prompts.LLAMA_CPP_TEMPLATES


def test_unknown_llama_cpp_template_is_one_line_with_file_and_line(tmp_path: Path) -> None:
    with pytest.raises(RecipeError) as err:
        recipe_variant(tmp_path, {"model": {"llama_cpp_template": "vicunna"}})
    message = str(err.value)
    assert re.search(r"causallm-14b\.yaml:\d+: model\.llama_cpp_template: ", message), message
    assert "did you mean vicuna?" in message and "\n" not in message


# --- file names -------------------------------------------------------------------------------


def test_unicode_model_name_keeps_its_letters_in_file_names(tmp_path: Path) -> None:
    recipe = recipe_variant(
        tmp_path, {"model": {"name": "模型 / 七号"}, "quantize": {"types": list(SIZES), "basename": None}}
    )
    assert recipe.artifact_filename("Q4_0") == "模型_七号.Q4_0.gguf"
    manifest = _with_template(fake_build(recipe, tmp_path / "build", SIZES), TemplateResult(checked=True))
    text = cards.render_card(recipe, manifest, source_dir=CAUSALLM_SOURCE)
    assert cards.names_in_table(text) == ["模型_七号.Q4_0.gguf", "模型_七号.Q8_0.gguf"]
    section = _run_section(text)
    assert "llama-cli -m '模型_七号.Q4_0.gguf' " in section
    assert naming.llama_cpp_pick(cards.names_in_table(text), "Q4_0") == "模型_七号.Q4_0.gguf"
    assert cards.check_card(text, recipe, manifest, tmp_path / "build") == []
    assert_golden("unicode-model-name", text)


def test_llama_cpp_naming_convention(tmp_path: Path) -> None:
    quantize = {"types": ["Q4_K_M", "Q8_0"], "naming": "llama.cpp", "size_label": "14B", "basename": None}
    recipe = recipe_variant(tmp_path, {"model": {"name": "Causal LM"}, "quantize": quantize})
    assert recipe.artifact_filename("Q4_K_M") == "Causal-LM-14B-Q4_K_M.gguf"
    gguf = pytest.importorskip("gguf")
    assert gguf.utility.naming_convention(None, "Causal LM", None, None, "14B", "Q4_K_M") + ".gguf" == (
        recipe.artifact_filename("Q4_K_M")
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("CausalLM 14B", "causallm_14b"),
        ("模型 / 七号", "模型_七号"),
        ("Café **Bold** [x](y)", "café_bold_x_y"),
        ("Qwen2.5 7B", "qwen2.5_7b"),
        ("नमस्ते मॉडल", "नमस्ते_मॉडल"),
        ("///", "model"),
    ],
)
def test_readable_stem(text: str, expected: str) -> None:
    assert naming.readable_stem(text, "_", lower=True) == expected


def test_basename_with_another_types_tag_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RecipeError) as err:
        recipe_variant(tmp_path, {"quantize": {"types": ["Q4_0", "Q8_0"], "basename": "distill-Q8_0-mix"}})
    message = str(err.value)
    assert re.search(r"\.yaml:\d+: quantize\.basename: ", message), message
    assert "-hf repo:Q8_0 would open distill-Q8_0-mix.Q4_0.gguf" in message


def test_file_name_stem_refuses_separators_and_decomposed_text(tmp_path: Path) -> None:
    for basename, why in (("a/b", "path separator"), ("cafe\u0301", "NFC"), ("a b", "a space")):
        with pytest.raises(RecipeError, match=why):
            recipe_variant(tmp_path, {"quantize": {"basename": basename}})


# --- the llama.cpp build ----------------------------------------------------------------------


def test_compatibility_names_llama_cpp_release_and_commit(tmp_path: Path) -> None:
    text, _recipe = _card(tmp_path, {}, None)
    compat = dict(cards.sections(text))["compatibility_gguf"]
    release = "[b11312](https://github.com/ggml-org/llama.cpp/releases/tag/b11312)"
    commit = "(commit [`0c1e570`](https://github.com/ggml-org/llama.cpp/commit/0c1e570))"
    assert f"llama.cpp {release} {commit}, as bundled in llama-cpp-python 0.3.36, wrote these files." in compat


@pytest.mark.parametrize(
    ("library", "number", "commit", "expected"),
    [
        ("0.5.0-dev", 1, "0c1e570", "b11312 (commit 0c1e570, library 0.5.0-dev)"),  # shallow clone: looked up
        ("0.5.0-dev", 6123, "abcdef1234", "b6123 (commit abcdef1, library 0.5.0-dev)"),
        ("0.5.0-dev", 1, "1234567", "commit 1234567, library 0.5.0-dev"),  # unknown commit, no tag
        ("0.5.0-dev", None, None, "library 0.5.0-dev"),
        (None, None, None, None),
    ],
)
def test_llama_cpp_release(library: str | None, number: int | None, commit: str | None, expected: str | None) -> None:
    assert pipeline.llama_cpp_release(library, number, commit) == expected


def test_tool_versions_record_the_bundled_llama_cpp_build() -> None:
    pytest.importorskip("llama_cpp")
    recorded = pipeline.tool_versions()["llama.cpp"]
    found = re.fullmatch(r"b(\d+) \(commit ([0-9a-f]{7}), library \S+\)", recorded)
    assert found, recorded
    assert pipeline.LLAMA_CPP_RELEASES[found.group(2)] == int(found.group(1))
