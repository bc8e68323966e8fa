"""A tiny random Mixtral whose router never picks two of its four experts: the build reports them, never crashes.

The router's rows are v, -v, 0, 0: for any input one of the first two logits is >= 0, so top-1
routing sends every token to expert 0 or 1, and experts 2 and 3 get no calibration data at all.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from support.smollm2_models import SMOLLM2_RECIPE
from support.tiny_models import MIXTRAL_UNROUTED, make_tiny_model

from publisher.pipeline import execute
from publisher.recipe import parse_recipe
from publisher.runtimes import llama_cpp

pytestmark = pytest.mark.slow


def test_unrouted_experts_are_reported_and_quantized(smollm2_source: Path, tmp_path: Path) -> None:
    if llama_cpp.tool("llama-imatrix") is None:
        pytest.skip(f"llama-imatrix is not built in {llama_cpp.tools_dir()}; run `make tools`")
    source = make_tiny_model(MIXTRAL_UNROUTED, tmp_path / "tiny-mixtral", smollm2_source)
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
