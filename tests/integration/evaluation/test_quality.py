"""Perplexity, KL divergence and top-1 agreement of real SmolLM2 quants against the F16 reference."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.smollm2_models import demo_recipe

from publisher.errors import SmokeTestError
from publisher.evaluation import compute_reference_logits, measure_quality
from publisher.evaluation.quality import load_reference_logits
from publisher.manifest import QualityResult, sha256_file
from publisher.recipe import Recipe

pytestmark = pytest.mark.slow

# Small enough to keep the module quick on two cores: 3 chunks of 128 tokens, 189 scored positions.
QUALITY = {"context_length": 128, "max_chunks": 3}


@pytest.fixture(scope="module")
def recipe() -> Recipe:
    return demo_recipe(quality=QUALITY)


@pytest.fixture(scope="module")
def reference(smollm2_ggufs: dict[str, Path], recipe: Recipe, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The F16 reference logits, computed once for the whole module."""
    out = tmp_path_factory.mktemp("quality") / "reference-logits.npz"
    compute_reference_logits(smollm2_ggufs["F16"], recipe, out)
    return out


@pytest.fixture(scope="module")
def measured(smollm2_ggufs: dict[str, Path], reference: Path, recipe: Recipe) -> dict[str, QualityResult]:
    return {q: measure_quality(smollm2_ggufs[q], reference, recipe) for q in ("F16", "Q8_0", "Q2_K")}


def test_reference_file(reference: Path) -> None:
    ref = load_reference_logits(reference)
    assert ref.meta["chunks"] == 3 and ref.meta["positions"] == 3 * 63
    assert ref.meta["storage"] == "full" and ref.full_logp is not None
    assert ref.full_logp.shape == (189, 49152)
    assert 3 < ref.meta["perplexity"] < 200


def test_reference_measured_against_itself(measured: dict[str, QualityResult], reference: Path) -> None:
    f16 = measured["F16"]
    assert f16.tokens == 189
    assert f16.kl_divergence is not None and f16.kl_divergence < 1e-4
    assert f16.top1_agreement == 1.0
    assert f16.perplexity == pytest.approx(load_reference_logits(reference).meta["perplexity"], rel=1e-3)


def test_quants_ordered_by_quality(measured: dict[str, QualityResult]) -> None:
    q8, q2 = measured["Q8_0"], measured["Q2_K"]
    assert q8.kl_divergence is not None and q2.kl_divergence is not None
    assert q2.kl_divergence > q8.kl_divergence > 0
    assert q8.top1_agreement is not None and q2.top1_agreement is not None
    assert q8.top1_agreement > q2.top1_agreement
    assert q2.perplexity > q8.perplexity


def test_reference_is_computed_once_and_only_read(
    reference: Path, measured: dict[str, QualityResult], smollm2_ggufs: dict[str, Path], recipe: Recipe
) -> None:
    before = (sha256_file(reference), reference.stat().st_mtime_ns)
    again = measure_quality(smollm2_ggufs["Q2_K"], reference, recipe)
    assert again == measured["Q2_K"]  # deterministic, from the same stored reference
    assert (sha256_file(reference), reference.stat().st_mtime_ns) == before
    assert sorted(p.name for p in reference.parent.iterdir()) == ["reference-logits.npz"]


def test_top_k_storage_is_a_close_lower_bound(
    smollm2_ggufs: dict[str, Path], recipe: Recipe, measured: dict[str, QualityResult], tmp_path: Path
) -> None:
    compact = tmp_path / "top-k.npz"
    compute_reference_logits(smollm2_ggufs["F16"], recipe, compact, max_full_entries=0)
    assert load_reference_logits(compact).meta["storage"] == "top-1024"
    assert compact.stat().st_size < 3_000_000
    q2 = measure_quality(smollm2_ggufs["Q2_K"], compact, recipe)
    exact = measured["Q2_K"].kl_divergence
    assert exact is not None and q2.kl_divergence is not None
    assert 0.9 * exact < q2.kl_divergence <= exact
    assert (q2.perplexity, q2.top1_agreement) == (measured["Q2_K"].perplexity, measured["Q2_K"].top1_agreement)


def test_changed_settings_refuse_the_old_reference(reference: Path, smollm2_ggufs: dict[str, Path]) -> None:
    with pytest.raises(SmokeTestError, match=r"other quality settings \(context_length changed\)"):
        measure_quality(smollm2_ggufs["Q8_0"], reference, demo_recipe(quality=QUALITY | {"context_length": 256}))
