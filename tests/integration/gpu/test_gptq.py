"""GPTQ on CUDA: the same variant quantized and smoke-tested with `gptq.device: cuda`.

Skipped, saying why, unless the GPTQ environment's torch sees a CUDA device (never on CI, whose
`make setup-gptq` installs the CPU wheel).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from support.common import CONVERTED_NAME, converted_smollm2, copy_build, recipe_variant

from publisher import pipeline
from publisher.gptq.runner import missing_reason, worker_python
from publisher.recipe import load_recipe

pytestmark = [pytest.mark.slow, pytest.mark.gpu]


def _require_cuda() -> None:
    if (reason := missing_reason()) is not None:
        pytest.skip(reason)
    probe = [str(worker_python()), "-c", "import torch; print(torch.cuda.is_available())"]
    seen = subprocess.run(probe, capture_output=True, text=True, check=False).stdout.strip()
    if seen != "True":
        pytest.skip("the GPTQ environment's torch sees no CUDA device")


def test_a_variant_made_and_tested_on_cuda(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    _require_cuda()
    workdir = tmp_path / "work"
    build_dir = copy_build(converted_smollm2(tmp_path_factory), workdir)
    changes = {
        "quantize.types": ["Q8_0"],
        "gptq": {"device": "cuda", "samples": 64, "seq_len": 512, "variants": [{"group_size": 64}]},
    }
    recipe = load_recipe(recipe_variant(tmp_path / "recipes", CONVERTED_NAME, changes))
    pipeline.execute(recipe, workdir, stages=["fetch", "convert", "quantize", "smoke", "gptq", "gptq-smoke"])
    result = pipeline.execute(recipe, workdir, stages=["gptq", "gptq-smoke"])
    artifact = result.manifest.gptq["gptq-4bit-64g-actorder_True"]
    assert artifact.status == "passed", artifact.failure
    assert artifact.quality is not None and artifact.quality.kl_divergence is not None
    assert (build_dir / artifact.path / "model.safetensors").is_file()
    assert {s.name: s.status for s in result.stages}["gptq"] == "skipped"
