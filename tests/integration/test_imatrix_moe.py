"""A tiny random Mixtral whose router never picks two of its four experts: the build reports them, never crashes.

The router's rows are v, -v, 0, 0: for any input one of the first two logits is >= 0, so top-1
routing sends every token to expert 0 or 1, and experts 2 and 3 get no calibration data at all.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from support.smollm2_models import SMOLLM2_RECIPE

from publisher.pipeline import execute
from publisher.recipe import parse_recipe
from publisher.runtimes import llama_cpp

pytestmark = pytest.mark.slow

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def tiny_mixtral(smollm2: Path, out: Path) -> Path:
    import torch
    from transformers import MixtralConfig, MixtralForCausalLM

    smol = json.loads((smollm2 / "config.json").read_text(encoding="utf-8"))
    config = MixtralConfig(
        vocab_size=smol["vocab_size"],
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        num_local_experts=4,
        num_experts_per_tok=1,
        max_position_embeddings=1024,
        bos_token_id=smol["bos_token_id"],
        eos_token_id=smol["eos_token_id"],
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = MixtralForCausalLM(config)
    with torch.no_grad():
        for layer in model.model.layers:
            moe = layer.mlp if hasattr(layer, "mlp") else layer.block_sparse_moe  # transformers 5 renamed it
            gate = moe.gate.weight
            v = torch.randn(gate.shape[1])
            gate.copy_(torch.stack([v, -v, torch.zeros_like(v), torch.zeros_like(v)]))
    model.save_pretrained(out, safe_serialization=True)
    for name in TOKENIZER_FILES:
        if (smollm2 / name).is_file():
            shutil.copy2(smollm2 / name, out / name)
    return out


def test_unrouted_experts_are_reported_and_quantized(smollm2_source: Path, tmp_path: Path) -> None:
    if llama_cpp.tool("llama-imatrix") is None:
        pytest.skip(f"llama-imatrix is not built in {llama_cpp.tools_dir()}; run `make tools`")
    source = tiny_mixtral(smollm2_source, tmp_path / "tiny-mixtral")
    data = yaml.safe_load(SMOLLM2_RECIPE.read_text(encoding="utf-8"))
    data["name"] = "tiny-mixtral"
    data["source"] = {"path": str(source)}
    data["model"]["name"] = "Tiny Mixtral"
    data["quantize"] = {"types": ["Q4_K_M", "IQ2_XS"], "basename": "tiny-mixtral"}
    data["imatrix"] = {"chunks": 4, "context_length": 128}
    data["smoke"] = {}
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    recipe = parse_recipe(path.read_text(encoding="utf-8"), path)

    result = execute(recipe, tmp_path / "work", stages=["fetch", "convert", "imatrix", "quantize"])

    record = result.manifest.imatrix
    assert record is not None
    expected = {
        f"blk.{layer}.ffn_{kind}_exps.weight (experts 2, 3)" for layer in (0, 1) for kind in ("gate", "up", "down")
    }
    assert set(record.uncovered) == expected
    assert record.fallback.startswith("importance 1 for every column")
    for name in ("Q4_K_M", "IQ2_XS"):
        artifact = result.manifest.artifacts[name]
        assert artifact.imatrix_sha256 == record.sha256
        assert (result.build_dir / artifact.path).stat().st_size > 0
