"""Source facts: the architecture reader on real and transformers-made configs, and what fetch records for the card."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from support.card_helpers import CAUSALLM_SOURCE, fake_build, recipe_variant
from support.common import tiny_source
from support.paths import REPO_ROOT

from publisher import cards, pipeline, source
from publisher.errors import SourceError
from publisher.manifest import Architecture, sha256_file
from publisher.recipe import load_recipe


def _folder_with_config(folder: Path, config: dict[str, Any]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return folder


def test_smollm2_architecture_and_parameters_agree_with_its_weights(smollm2_source: Path) -> None:
    arch = source.read_architecture(smollm2_source)
    assert arch is not None
    assert (arch.n_layers, arch.n_heads, arch.n_kv_heads, arch.head_dim, arch.hidden) == (30, 9, 3, 64, 576)
    assert (arch.vocab, arch.max_positions, arch.tied_embeddings) == (49152, 8192, True)
    assert arch.sliding_window is None and arch.experts is None
    # The config-only estimate is exact for a Llama layout: it equals the count in the safetensors headers.
    assert arch.parameters() == source.safetensors_parameters(smollm2_source) == 134_515_008


def test_transformers_configs(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    small = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "vocab_size": 100}
    configs = {
        "mistral": transformers.MistralConfig(
            **small, num_attention_heads=8, num_key_value_heads=2, sliding_window=4096, max_position_embeddings=32768
        ),
        "mixtral": transformers.MixtralConfig(
            **small, num_attention_heads=4, num_key_value_heads=4, num_local_experts=8, num_experts_per_tok=2
        ),
        "gemma": transformers.GemmaConfig(**small, num_attention_heads=4, num_key_value_heads=1, head_dim=32),
        "gpt2": transformers.GPT2Config(n_embd=64, n_layer=3, n_head=4, n_positions=1024, vocab_size=100),
    }
    found = {
        name: source.read_architecture(_folder_with_config(tmp_path / name, config.to_dict()))
        for name, config in configs.items()
    }
    mistral, mixtral, gemma, gpt2 = (found[n] for n in ("mistral", "mixtral", "gemma", "gpt2"))
    assert mistral is not None and (mistral.n_kv_heads, mistral.head_dim) == (2, 8)
    assert (mistral.sliding_window, mistral.max_positions, mistral.experts) == (4096, 32768, None)
    assert mixtral is not None and (mixtral.experts, mixtral.experts_per_token) == (8, 2)
    assert gemma is not None and (gemma.head_dim, gemma.n_kv_heads) == (32, 1)  # head_dim given, not 64 / 4
    assert gemma.kv_cache_bytes(1000) == 2 * 2 * 1 * 32 * 1024 * 2  # llama.cpp rounds cells up to 256
    assert gpt2 is not None and (gpt2.n_layers, gpt2.n_heads, gpt2.n_kv_heads, gpt2.hidden) == (3, 4, 4, 64)
    assert gpt2.max_positions == 1024


def test_multimodal_wrapper_and_non_decoder_configs(tmp_path: Path) -> None:
    wrapped = {
        "model_type": "llava",
        "text_config": {"num_hidden_layers": 4, "num_attention_heads": 8, "hidden_size": 256},
    }
    arch = source.read_architecture(_folder_with_config(tmp_path / "llava", wrapped))
    assert arch == Architecture(n_layers=4, n_heads=8, n_kv_heads=8, head_dim=32, hidden=256)
    assert source.read_architecture(_folder_with_config(tmp_path / "vision", {"image_size": 224})) is None
    assert source.read_architecture(tmp_path / "no-config") is None
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{", encoding="utf-8")
    with pytest.raises(SourceError, match="broken/config.json: unreadable config"):
        source.read_architecture(tmp_path / "broken")


def test_fetch_records_what_the_card_needs(tmp_path: Path) -> None:
    folder = tiny_source(tmp_path / "src")
    for name in ("config.json", "README.md"):
        shutil.copyfile(CAUSALLM_SOURCE / name, folder / name)
    recipe = recipe_variant(tmp_path)
    manifest = pipeline.execute(recipe, tmp_path / "work", stages=["fetch"], source_dir=folder).manifest
    assert manifest.source is not None and manifest.source.facts is not None
    facts = manifest.source.facts
    assert facts.architecture == source.read_architecture(CAUSALLM_SOURCE)
    assert facts.readme == (CAUSALLM_SOURCE / "README.md").read_text(encoding="utf-8")
    assert facts.readme_sha256 == sha256_file(CAUSALLM_SOURCE / "README.md") == manifest.source.files["README.md"]


def test_a_card_from_recorded_facts_never_needs_the_folder(tmp_path: Path) -> None:
    recipe = load_recipe(REPO_ROOT / "recipes" / "causallm-14b.yaml")
    from_folder = cards.render_card(
        recipe, fake_build(recipe, tmp_path / "a", {"Q4_0": 8_180_411_392}), source_dir=CAUSALLM_SOURCE
    )
    copy = shutil.copytree(CAUSALLM_SOURCE, tmp_path / "gone")
    manifest = fake_build(recipe, tmp_path / "b", {"Q4_0": 8_180_411_392})
    assert manifest.source is not None
    manifest.source.path = str(copy)
    manifest.source.facts = source.read_facts(copy)
    shutil.rmtree(copy)
    assert cards.render_card(recipe, manifest) == from_folder
    assert "Fully Compatible with Meta LLaMA 2" in from_folder  # the original card came from the record


def test_no_build_estimate_reads_the_folder_through_the_source_module(tmp_path: Path) -> None:
    recipe = recipe_variant(tmp_path)
    assert source.recorded_or_read(recipe, None) is None  # a repo-only recipe with no folder: nothing to read
    read = source.recorded_or_read(recipe, None, CAUSALLM_SOURCE)
    assert read is not None and read.facts is not None and read.parameters is None  # no weights in the fixture
    assert read.facts.architecture is not None and read.facts.architecture.parameters() == 14_166_676_480
    with pytest.raises(SourceError, match="--source-dir .*: no such folder"):
        source.recorded_or_read(recipe, None, tmp_path / "missing")


def test_sliding_window_layers_keep_a_smaller_kv_cache(tmp_path: Path) -> None:
    import transformers

    config = transformers.Gemma3TextConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=6,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=16,
        sliding_window=512,
        layer_types=["sliding_attention"] * 5 + ["full_attention"],
        vocab_size=100,
    )
    arch = source.read_architecture(_folder_with_config(tmp_path / "gemma3", config.to_dict()))
    assert arch is not None and (arch.sliding_window, arch.sliding_layers) == (512, 5)
    per_cell = 2 * 1 * 16 * 2
    # one full layer over 8192 cells, five over the window plus a 512-token micro-batch (1024 cells)
    assert arch.kv_cache_bytes(8192) == per_cell * (8192 + 5 * 1024)
    assert arch.kv_cache_bytes(600) == per_cell * 6 * 768  # a context shorter than the window: all alike
    no_types = {k: v for k, v in config.to_dict().items() if k != "layer_types"} | {"sliding_window_pattern": 3}
    pattern = source.read_architecture(_folder_with_config(tmp_path / "pattern", no_types))
    assert pattern is not None and pattern.sliding_layers == 4  # every third layer attends globally
