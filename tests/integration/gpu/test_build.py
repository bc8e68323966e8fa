"""The whole build with every layer on the GPU, on a tiny random Llama that needs no downloaded weights.

Runs only on a CUDA (or other GPU) build of llama-cpp-python with a device present; CI has neither.
The same model is built twice, once on the CPU and once fully offloaded: llama.cpp must report every
layer offloaded, every file must pass the gate on both, and the measured quality must agree within
the noise of two numeric back ends.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.gpu import GPU_ONLY
from support.tiny_models import ARCHITECTURES, make_tiny_model

from publisher import pipeline
from publisher.recipe import load_recipe
from publisher.runtimes.llama_cpp import llama_log, open_model

pytestmark = GPU_ONLY

TYPES = ["Q8_0", "Q4_K_M"]
OFFLOADED = re.compile(r"offloaded (\d+)/(\d+) layers to GPU")


def _recipe(folder: Path, source: Path, gpu_layers: int) -> Path:
    data: dict[str, Any] = {
        "name": f"tiny-gpu{gpu_layers}",
        "source": {"path": str(source)},
        "model": {
            "name": "Tiny GPU",
            "creator": "Test",
            "license": "apache-2.0",
            "base_model": "test/tiny-gpu",
            "prompt_template": "none",
        },
        "quantize": {"types": TYPES},
        "smoke": {
            "max_tokens": 8,
            "context_length": 256,
            "gpu_layers": gpu_layers,
            "prompts": [{"prompt": "The capital of France is"}],
            "quality": {"context_length": 64, "max_chunks": 4},
        },
        "card": {"profile": {"quantized_by": "tester"}},
        "publish": {"repo_id": "tester/tiny-gpu-GGUF"},
    }
    path = folder / f"tiny-gpu{gpu_layers}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pipeline.BuildResult]:
    folder = tmp_path_factory.mktemp("gpu-build")
    arch = next(a for a in ARCHITECTURES if a.key == "llama-spm")
    source = make_tiny_model(arch, folder / "source")
    return {
        device: pipeline.execute(load_recipe(_recipe(folder, source, layers)), folder / f"work-{device}")
        for device, layers in (("cpu", 0), ("gpu", -1))
    }


def test_every_layer_is_offloaded(builds: dict[str, pipeline.BuildResult]) -> None:
    gguf = builds["gpu"].build_dir / builds["gpu"].manifest.artifacts["Q8_0"].path
    with llama_log() as log:
        llm = open_model(gguf, n_ctx=64, n_gpu_layers=-1)
        del llm
    counts = [OFFLOADED.search(line) for line in log.text()]
    found = [m for m in counts if m]
    assert found, "llama.cpp reported no offloaded layers:\n" + "\n".join(log.text()[-20:])
    done, total = map(int, found[-1].groups())
    assert done == total > 0


def test_gpu_build_passes_the_gate_like_the_cpu_build(builds: dict[str, pipeline.BuildResult]) -> None:
    for device, result in builds.items():
        assert [(a.quant_type, a.failure) for a in result.failures()] == [], device
        assert result.problems == [], device
        for artifact in result.manifest.artifacts.values():
            assert artifact.status == "passed", (device, artifact.quant_type)
            assert artifact.tokenizer is not None and artifact.tokenizer.mismatches == 0


def test_gpu_quality_matches_cpu_quality(builds: dict[str, pipeline.BuildResult]) -> None:
    cpu, gpu = builds["cpu"].manifest.artifacts, builds["gpu"].manifest.artifacts
    for quant_type in TYPES:
        on_cpu, on_gpu = cpu[quant_type].quality, gpu[quant_type].quality
        assert on_cpu is not None and on_gpu is not None
        assert on_cpu.tokens == on_gpu.tokens
        assert on_cpu.perplexity is not None and on_gpu.perplexity is not None
        assert abs(on_gpu.perplexity - on_cpu.perplexity) / on_cpu.perplexity < 0.01, quant_type
        assert on_cpu.kl_divergence is not None and on_gpu.kl_divergence is not None
        assert abs(on_gpu.kl_divergence - on_cpu.kl_divergence) < 0.01, quant_type
