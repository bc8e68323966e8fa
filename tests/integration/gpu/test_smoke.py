"""The GPU path: smoke tests with layers offloaded. Runs only on a CUDA (or other GPU) build of
llama-cpp-python with a device present; CI has neither, so it skips there with the reason."""

from __future__ import annotations

from pathlib import Path

from support.gpu import GPU_ONLY
from support.smollm2_models import demo_recipe

from publisher.evaluation import measure_quality, smoke_test

pytestmark = GPU_ONLY


def test_offloaded_q8_0_still_knows_paris(smollm2_ggufs: dict[str, Path]) -> None:
    result = smoke_test(smollm2_ggufs["Q8_0"], demo_recipe(gpu_layers=-1), "Q8_0")
    assert result.passed, result.answers
    assert "paris" in result.output.lower()


def test_offloading_keeps_quality_within_noise(smollm2_ggufs: dict[str, Path], tmp_path: Path) -> None:
    from publisher.evaluation import compute_reference_logits

    recipe = demo_recipe(gpu_layers=-1)
    logits = tmp_path / "reference.npz"
    compute_reference_logits(smollm2_ggufs["F16"], recipe, logits)
    quality = measure_quality(smollm2_ggufs["Q8_0"], logits, recipe)
    assert quality.kl_divergence is not None and quality.kl_divergence < 0.02
    assert quality.top1_agreement is not None and quality.top1_agreement > 0.9
