"""The demo build's card lists exactly the files that were built and passed, with measured figures."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.paths import REPO_ROOT

from publisher import cards
from publisher.manifest import load_manifest, sha256_file
from publisher.recipe import load_recipe

DEMO_RECIPE = REPO_ROOT / "recipes" / "smollm2-135m-instruct.yaml"
DEMO_MODEL = REPO_ROOT / ".cache" / "models" / "SmolLM2-135M-Instruct"

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


@pytest.fixture
def demo_build(published_demo: Path) -> Path:
    """The build folder of the demo built once per session (tests/conftest.py)."""
    return published_demo / "build" / "smollm2-135m-instruct"


def test_demo_card_lists_exactly_the_passed_files_with_measured_figures(demo_build: Path) -> None:
    recipe = load_recipe(DEMO_RECIPE)
    manifest = load_manifest(demo_build)
    assert manifest is not None
    passed = manifest.passed_artifacts()
    failures = [f"{a.quant_type}: {a.failure}" for a in manifest.failed_artifacts()]
    assert passed, f"no demo artifact passed its checks, so no card was written: {failures}"

    readme = demo_build / "README.md"
    assert manifest.card["sha256"] == sha256_file(readme)
    text = readme.read_text(encoding="utf-8")
    assert cards.names_in_table(text) == [Path(a.path).name for a in passed]

    sections = dict(cards.sections(text))
    files_table = sections["README_GGUF.md-provided-files"]
    quality_table = sections["measured-quality"]
    assert "Estimates" not in files_table
    for artifact in passed:
        on_disk = (demo_build / artifact.path).stat().st_size
        assert artifact.size_bytes == on_disk
        assert f"| {artifact.bits_per_weight:.2f} | {cards.format_gb(on_disk)} |" in files_table
        assert artifact.quality is not None
        assert f"| {Path(artifact.path).name} | {artifact.quality.perplexity:.4f} |" in quality_table
    for artifact in manifest.failed_artifacts():
        assert Path(artifact.path).name not in files_table
    assert cards.check_card(text, recipe, manifest, demo_build) == []
