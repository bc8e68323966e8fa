"""Tokenizer and chat-template parity on the real SmolLM2 model, and on GGUFs broken on purpose."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.smollm2_models import demo_recipe, hide_chat_template, swap_tokens

from publisher.evaluation import template_parity, tokenizer_parity
from publisher.evaluation.parity import probe_set, source_tokenizer

pytestmark = pytest.mark.slow


def test_real_model_has_tokenizer_parity(smollm2_ggufs: dict[str, Path], smollm2_source: Path) -> None:
    recipe = demo_recipe(extra_probes=["Paris, France: 2 148 000 habitants (2020)."])
    result = tokenizer_parity(smollm2_ggufs["Q8_0"], smollm2_source, recipe)
    expected_probes = len(probe_set(recipe, source_tokenizer(smollm2_source).special_tokens()))
    assert result.first_mismatch is None
    assert (result.passed, result.mismatches, result.vocab_mismatches) == (True, 0, 0)
    assert result.probes == expected_probes > 35


def test_swapped_vocabulary_fails_parity(smollm2_ggufs: dict[str, Path], smollm2_source: Path, tmp_path: Path) -> None:
    broken = swap_tokens(smollm2_ggufs["Q2_K"], tmp_path / "broken.gguf", "Ġthe", "Ġand")
    result = tokenizer_parity(broken, smollm2_source, demo_recipe())
    assert not result.passed
    assert result.mismatches >= 1
    assert result.vocab_mismatches == 2
    message = result.first_mismatch or ""
    assert "\n" not in message
    # the first differing token, with both ids and both texts
    assert (
        "probe 'English prose', token 6: llama.cpp 284 ' the' vs tokenizer.json 260 ' the' "
        "(same text, other id: tokenizer.json has 284 as ' and')"
    ) in message
    assert "2 vocabulary entries differ; first: vocabulary id" in message


def test_source_tokenizer_that_disagrees_fails_parity(
    smollm2_ggufs: dict[str, Path], smollm2_source: Path, tmp_path: Path
) -> None:
    import json

    data = json.loads((smollm2_source / "tokenizer.json").read_text(encoding="utf-8"))
    vocab = data["model"]["vocab"]
    vocab["Ġzebra"], vocab["Ġgiraffe"] = vocab["Ġgiraffe"], vocab["Ġzebra"]
    (tmp_path / "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    recipe = demo_recipe(extra_probes=["A zebra met a giraffe."])
    result = tokenizer_parity(smollm2_ggufs["Q8_0"], tmp_path, recipe)
    assert not result.passed
    assert result.mismatches == 1 and result.vocab_mismatches == 2
    assert "probe 'extra probe 1', token 1: llama.cpp 29106 ' zebra' vs tokenizer.json 41401 ' zebra' (" in (
        result.first_mismatch or ""
    )


def test_chat_template_matches_the_recipe(smollm2_ggufs: dict[str, Path]) -> None:
    result = template_parity(smollm2_ggufs["Q8_0"], demo_recipe())
    assert (result.checked, result.matches, result.difference) == (True, True, None)


def test_chat_template_difference_is_reported(smollm2_ggufs: dict[str, Path]) -> None:
    result = template_parity(smollm2_ggufs["Q8_0"], demo_recipe(model={"prompt_template": "zephyr"}))
    assert result.checked and result.matches is False
    assert result.difference is not None and result.difference.startswith("first difference at character 2:")
    assert "Zephyr" in result.difference


def test_gguf_without_chat_template_is_not_checked(smollm2_ggufs: dict[str, Path], tmp_path: Path) -> None:
    bare = hide_chat_template(smollm2_ggufs["Q2_K"], tmp_path / "bare.gguf")
    result = template_parity(bare, demo_recipe())
    assert (result.checked, result.matches) == (False, None)


def test_every_file_of_a_build_shares_one_vocabulary_compared_once(
    smollm2_ggufs: dict[str, Path], smollm2_source: Path
) -> None:
    import time

    from publisher.evaluation import parity
    from publisher.gguf_info import vocabulary_sha256

    digests = {quant: vocabulary_sha256(path) for quant, path in smollm2_ggufs.items()}
    assert len(set(digests.values())) == 1, digests
    recipe = demo_recipe(extra_probes=["shared vocabulary"])
    parity._results.clear()
    started = time.perf_counter()
    first = tokenizer_parity(smollm2_ggufs["F16"], smollm2_source, recipe)
    compared_s = time.perf_counter() - started
    assert first.passed and first.first_mismatch is None
    assert (first.sample_strings, first.sample_mismatches, first.structure_compared) == (2500, 0, 49152)
    assert first.sample_characters is not None and first.sample_characters > 90_000
    for quant in ("Q8_0", "Q2_K"):
        started = time.perf_counter()
        result = tokenizer_parity(smollm2_ggufs[quant], smollm2_source, recipe)
        assert time.perf_counter() - started < compared_s / 4  # the digest, not a second comparison
        assert result.compared_on == smollm2_ggufs["F16"].name
        assert result.vocabulary_sha256 == digests["F16"]
