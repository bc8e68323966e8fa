"""The gate in whole builds of a tiny Qwen3 (random weights, SmolLM2's tokenizer): every file tried, each its reason.

Each source variant is converted by llama.cpp's real converter, quantized and smoke-tested; the
test asserts the one-line reason each file failed with and that every file was tried.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from support.common import recipe_variant
from support.gate_models import (
    add_token_beyond_vocab,
    copy_source,
    set_add_bos,
    swap_added_token_ids,
    swap_tensor_dims,
    tiny_qwen3,
    truncate,
    write_jinja_template,
)

from publisher import pipeline
from publisher.errors import ConversionError
from publisher.manifest import Artifact, Manifest, load_manifest, save_manifest, sha256_file
from publisher.recipe import Recipe, load_recipe

pytestmark = pytest.mark.slow

NAME = "tiny-qwen3"
STAGES = ["fetch", "convert", "quantize", "smoke"]


@pytest.fixture(scope="module")
def tiny_source(smollm2_source: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_qwen3(tmp_path_factory.mktemp("tiny-qwen3"), smollm2_source)


def tiny_recipe(folder: Path, source: Path) -> Recipe:
    changes = {
        "source.path": str(source),
        "quantize.types": ["Q8_0"],
        "smoke.prompts": [{"prompt": "Hello"}],
        "smoke.quality.max_chunks": 2,
    }
    return load_recipe(recipe_variant(folder, NAME, changes))


def build(tmp_path: Path, source: Path) -> Manifest:
    result = pipeline.execute(tiny_recipe(tmp_path / "recipes", source), tmp_path / "work", stages=STAGES)
    return result.manifest


def files(manifest: Manifest) -> dict[str, Artifact]:
    assert manifest.reference is not None
    return {"F16": manifest.reference} | manifest.artifacts


@pytest.fixture(scope="module")
def clean_build(tiny_source: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The untouched tiny model built once: both files pass."""
    root = tmp_path_factory.mktemp("clean")
    manifest = build(root, tiny_source)
    assert {t: (a.status, a.failure) for t, a in files(manifest).items()} == {
        "F16": ("passed", None),
        "Q8_0": ("passed", None),
    }
    return root / "work" / NAME


def test_the_untouched_tiny_model_passes_every_special_token_check(clean_build: Path) -> None:
    manifest = load_manifest(clean_build)
    assert manifest is not None
    for artifact in files(manifest).values():
        assert artifact.tokenizer is not None and artifact.template is not None
        assert (artifact.tokenizer.special_tokens, artifact.tokenizer.special_mismatches) == (24, 0)
        assert artifact.template.source_matches is True


def test_special_token_ids_swapped_in_added_tokens_fail_every_file(tiny_source: Path, tmp_path: Path) -> None:
    source = copy_source(tiny_source, tmp_path / "src")
    swap_added_token_ids(source, "<|im_end|>", "<repo_name>", everywhere=False)
    outcome = {t: (a.status, (a.failure or "").split("; ")[0]) for t, a in files(build(tmp_path, source)).items()}
    reason = "tokenizer parity: EOS: GGUF 3 '<repo_name>', transformers 2 '<|im_end|>' (and 1 more)"
    assert outcome == {"F16": ("failed", reason), "Q8_0": ("failed", reason)}


def test_bos_added_by_llama_cpp_only_fails_every_file(tiny_source: Path, tmp_path: Path) -> None:
    source = copy_source(tiny_source, tmp_path / "src")
    set_add_bos(source, True)
    outcome = {t: (a.status, a.failure) for t, a in files(build(tmp_path, source)).items()}
    reason = (
        "tokenizer parity: BOS: llama.cpp adds '<|im_start|>' (1) before every text "
        "(tokenizer.ggml.add_bos_token true), transformers' encode adds nothing"
    )
    assert outcome == {"F16": ("failed", reason), "Q8_0": ("failed", reason)}


def test_two_templates_in_one_source_fail_every_file_naming_both(tiny_source: Path, tmp_path: Path) -> None:
    source = copy_source(tiny_source, tmp_path / "src")
    write_jinja_template(source)
    outcome = {t: (a.status, a.failure) for t, a in files(build(tmp_path, source)).items()}
    reason = (
        "chat template: the GGUF carries the template from tokenizer_config.json, "
        "transformers uses the one from chat_template.jinja"
    )
    assert outcome == {"F16": ("failed", reason), "Q8_0": ("failed", reason)}


def test_a_source_token_beyond_the_vocabulary_is_named_by_the_convert_stage(tiny_source: Path, tmp_path: Path) -> None:
    source = copy_source(tiny_source, tmp_path / "src")
    token = add_token_beyond_vocab(source)
    with pytest.raises(ConversionError) as err:
        build(tmp_path, source)
    log = tmp_path / "work" / NAME / "logs" / "convert.log"
    assert str(err.value) == (
        f"convert: {source}: tokenizer.json numbers '<|beyond|>' {token}, beyond config.json vocab_size {token}; "
        "remove the token from tokenizer.json or give it an id below vocab_size "
        f"(the model has no embedding row for it) (log: {log})"
    )


def _record_damage(build_dir: Path, manifest: Manifest, artifact: Artifact) -> Artifact:
    path = build_dir / artifact.path
    digest = sha256_file(path)
    return artifact.model_copy(update={"sha256": digest, "size_bytes": path.stat().st_size})


def test_a_truncated_reference_and_a_wrong_tensor_shape_each_fail_with_llama_cpps_reason(
    clean_build: Path, tiny_source: Path, tmp_path: Path
) -> None:
    import shutil

    build_dir = tmp_path / "work" / NAME
    shutil.copytree(clean_build, build_dir)
    manifest = load_manifest(build_dir)
    assert manifest is not None and manifest.reference is not None
    reference = build_dir / manifest.reference.path
    quant = build_dir / manifest.artifacts["Q8_0"].path
    damaged = truncate(reference, tmp_path / "f16.gguf")
    os.replace(damaged, reference)
    os.replace(swap_tensor_dims(quant, tmp_path / "q8.gguf", "token_embd.weight"), quant)
    # what a converter or quantizer that wrote these files would have recorded
    manifest.reference = _record_damage(build_dir, manifest, manifest.reference)
    manifest.artifacts["Q8_0"] = _record_damage(build_dir, manifest, manifest.artifacts["Q8_0"])
    manifest.stages["convert"].outputs = {reference.name: manifest.reference.sha256}
    manifest.stages["quantize/Q8_0"].outputs = {quant.name: manifest.artifacts["Q8_0"].sha256}
    save_manifest(build_dir, manifest)

    recipe = tiny_recipe(tmp_path / "recipes", tiny_source)
    after = pipeline.execute(recipe, tmp_path / "work", stages=["smoke"]).manifest
    outcome = {t: (a.status, a.failure, a.quality_unavailable) for t, a in files(after).items()}
    bounds = (
        "llama.cpp cannot load this file: tensor 'token_embd.weight' data is not within the file bounds, "
        "model is corrupted or incomplete"
    )
    shape = (
        "llama.cpp cannot load this file: tensor 'token_embd.weight' has wrong shape; "
        "expected 64, 49152, got 49152, 64, 1, 1"
    )
    unavailable = f"the reference's logits could not be computed ({reference}: {bounds})"
    assert outcome == {"F16": ("failed", bounds, unavailable), "Q8_0": ("failed", shape, unavailable)}
