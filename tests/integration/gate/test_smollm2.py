"""The gate on the real SmolLM2: special tokens, BOS/EOS, template source and llama.cpp's own load errors.

The GGUFs are the session's conversion of the untouched model; the source side is a copy of its
tokenizer files edited the way a careless hand would.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from support.gate_models import (
    copy_tokenizer,
    edit_json,
    patch_pre_tokenizer,
    prepend_in_post_processor,
    swap_added_token_ids,
    swap_tensor_dims,
    truncate,
    write_jinja_template,
)
from support.smollm2_models import demo_recipe

from publisher.evaluation import ModelLoadError, template_parity, tokenizer_parity
from publisher.runtimes.llama_cpp import open_model

pytestmark = pytest.mark.slow


def test_the_real_model_passes_special_tokens_and_template_source(
    smollm2_ggufs: dict[str, Path], smollm2_source: Path
) -> None:
    result = tokenizer_parity(smollm2_ggufs["Q8_0"], smollm2_source, demo_recipe())
    assert result.first_mismatch is None and result.passed
    # 17 added tokens, BOS/EOS/PAD/UNK ids, EOT as the source numbers it, what BOS and EOS add
    assert (result.special_tokens, result.special_mismatches) == (24, 0)
    template = template_parity(smollm2_ggufs["Q8_0"], demo_recipe(), smollm2_source)
    assert (template.source_file, template.gguf_source, template.source_matches) == (
        "tokenizer_config.json",
        "tokenizer_config.json",
        True,
    )
    # rendered alike by transformers and llama.cpp's Jinja on four shapes; neither renders the other two
    assert (template.shapes_compared, template.shapes_differing) == (4, 0)
    assert template.source_cannot_render == [
        "tool call and result: 'dict object' has no attribute 'content'",
        'typed content parts: can only concatenate str (not "list") to str',
    ]
    assert template.gguf_cannot_render == template.source_cannot_render
    # without --jinja llama.cpp picks ChatML, which loses the template's default system message
    assert template.builtin_format == "chatml"
    assert template.builtin_differences == [
        "shape 'no system', character 12: llama.cpp's built-in format gives '<|im_start|>user\\nWhat is the cap', "
        "transformers gives '<|im_start|>system\\nYou are a hel'"
    ]


def test_swapped_special_token_ids_fail_naming_the_token_and_both_ids(
    smollm2_ggufs: dict[str, Path], smollm2_source: Path, tmp_path: Path
) -> None:
    edited = copy_tokenizer(smollm2_source, tmp_path / "src")
    swap_added_token_ids(edited, "<|im_end|>", "<repo_name>", everywhere=True)
    result = tokenizer_parity(smollm2_ggufs["Q8_0"], edited, demo_recipe())
    assert not result.passed and result.special_mismatches == 4
    assert result.first_mismatch is not None
    assert result.first_mismatch.startswith("EOS: GGUF 2 '<|im_end|>', transformers 3 '<|im_end|>' (and 3 more); "), (
        result.first_mismatch
    )


def test_bos_added_by_transformers_only_fails(
    smollm2_ggufs: dict[str, Path], smollm2_source: Path, tmp_path: Path
) -> None:
    edited = copy_tokenizer(smollm2_source, tmp_path / "src")
    prepend_in_post_processor(edited, "<|im_start|>")
    result = tokenizer_parity(smollm2_ggufs["Q8_0"], edited, demo_recipe())
    assert not result.passed and result.special_mismatches == 1
    assert result.first_mismatch == (
        "BOS: llama.cpp adds nothing before every text (tokenizer.ggml.add_bos_token false), "
        "transformers' encode adds '<|im_start|>' (1)"
    )


def test_a_second_template_that_transformers_prefers_fails_naming_both_files(
    smollm2_ggufs: dict[str, Path], smollm2_source: Path, tmp_path: Path
) -> None:
    edited = copy_tokenizer(smollm2_source, tmp_path / "src")
    write_jinja_template(edited)
    result = template_parity(smollm2_ggufs["Q8_0"], demo_recipe(), edited)
    assert (result.source_file, result.gguf_source, result.source_matches) == (
        "chat_template.jinja",
        "tokenizer_config.json",
        False,
    )
    assert result.source_difference == (
        "the GGUF carries the template from tokenizer_config.json, transformers uses the one from chat_template.jinja"
    )


def test_llama_cpp_gives_its_own_reason_for_each_refused_file(smollm2_ggufs: dict[str, Path], tmp_path: Path) -> None:
    truncated = truncate(smollm2_ggufs["Q2_K"], tmp_path / "truncated.gguf")
    wrong_shape = swap_tensor_dims(smollm2_ggufs["Q8_0"], tmp_path / "shape.gguf", "token_embd.weight")
    bad_vocab = patch_pre_tokenizer(smollm2_ggufs["Q8_0"], tmp_path / "vocab.gguf", "smolxx")
    reasons = {}
    for path in (truncated, wrong_shape, bad_vocab):
        with pytest.raises(ModelLoadError) as err:
            open_model(path, n_ctx=256)
        assert str(err.value) == f"{path}: {err.value.detail}"
        reasons[path.name] = err.value.detail
    assert reasons == {
        "truncated.gguf": "llama.cpp cannot load this file: tensor 'blk.11.attn_q.weight' data is not within the "
        "file bounds, model is corrupted or incomplete",
        "shape.gguf": "llama.cpp cannot load this file: tensor 'token_embd.weight' has wrong shape; "
        "expected 576, 49152, got 49152, 576, 1, 1",
        "vocab.gguf": "llama.cpp cannot load this file: error loading model vocabulary: "
        "unknown pre-tokenizer type: 'smolxx'",
    }


def test_an_rstrip_flag_on_a_special_token_is_caught_by_a_generated_probe(
    smollm2_ggufs: dict[str, Path], smollm2_source: Path, tmp_path: Path
) -> None:
    edited = copy_tokenizer(smollm2_source, tmp_path / "src")
    edit_json(
        edited / "tokenizer.json",
        lambda data: next(t for t in data["added_tokens"] if t["content"] == "<|im_end|>").__setitem__("rstrip", True),
    )
    result = tokenizer_parity(smollm2_ggufs["Q8_0"], edited, demo_recipe())
    assert not result.passed and result.special_mismatches == 0
    assert result.first_mismatch is not None
    flag = "token 2 '<|im_end|>': rstrip in tokenizer.json, not in the GGUF (text next to it splits differently)"
    assert result.first_mismatch.startswith(
        "3 of 121 probes differ; first: probe 'special token <|im_end|> between spaces', token 3: "
        "llama.cpp 278 ' b' vs tokenizer.json 82 'b'; around it: llama.cpp ['a', ' ', '<|im_end|>', ' b'] "
        f"vs tokenizer.json ['a', ' ', '<|im_end|>', 'b']; likely cause: a token flag ({flag}); "
    ), result.first_mismatch
    assert result.first_mismatch.endswith(f"; {flag}")
    assert (result.sample_mismatches, result.structure_differences) == (4, 1)
