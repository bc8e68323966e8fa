"""One formatter per figure: bytes, missing values and an artifact's quality cells in each view's style."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from support.card_helpers import fake_build, recipe_variant

from publisher import report
from publisher.manifest import Artifact, QualityResult, SmokeResult
from publisher.pipeline import BuildResult, result_table
from publisher.summary import build_summary


def _artifact(quality: QualityResult | None = None, smoke: SmokeResult | None = None) -> Artifact:
    return Artifact(
        quant_type="Q4_0",
        path="m.Q4_0.gguf",
        size_bytes=8_180_411_392,
        sha256="0" * 64,
        bits_per_weight=4.62,
        fingerprint="f",
        quality=quality,
        smoke=smoke,
    )


def test_bytes() -> None:
    assert report.format_bytes(8_180_411_392) == "8.18 GB"
    assert report.format_bytes(54_400_000) == "54.4 MB"
    assert report.format_bytes(None) == "unknown"
    assert report.format_bytes(54_400_000, "GB") == "0.05 GB"
    assert report.format_bytes(8_180_411_392, "MB") == "8,180.4 MB"


def test_quality_cells_in_each_style() -> None:
    measured = _artifact(
        QualityResult(perplexity=6.54321, kl_divergence=0.01234, top1_agreement=0.9345, tokens=512),
        SmokeResult(passed=True, tokens_per_s=12.34),
    )
    assert report.quality_cells(measured, report.TERMINAL) == report.QualityCells("6.543", "0.0123", "93.5", "12.3")
    assert report.quality_cells(measured, report.SUMMARY).top1_agreement == "93.5%"
    assert report.quality_cells(measured, report.CARD).perplexity == "6.5432"
    for style in (report.TERMINAL, report.SUMMARY, report.CARD):
        empty = report.quality_cells(_artifact(), style)
        assert empty == report.QualityCells(*[style.missing] * 4)
    no_top1 = _artifact(QualityResult(perplexity=7.0, tokens=10))
    assert report.quality_cells(no_top1, report.SUMMARY).top1_agreement == "n/a"


def test_summary_and_build_table_show_the_figures_the_same_way(tmp_path: Path) -> None:
    recipe = recipe_variant(tmp_path)
    workdir = tmp_path / "work"
    manifest = fake_build(recipe, workdir / recipe.build_name, {"Q4_0": 8_180_411_392})
    summary = build_summary(recipe, workdir)
    assert "| 4.62 | 8.18 GB | main | passed |" in summary
    assert "| Q4_0 | 6.500 | 0.0500 | 90.0% | 10.0 | passed |" in summary
    console = Console(record=True, width=200)
    console.print(result_table(BuildResult(manifest=manifest, build_dir=workdir, types=["Q4_0"])))
    row = next(line for line in console.export_text().splitlines() if "Q4_0" in line)
    cells = [cell.strip() for cell in row.split("│")[1:9]]
    assert cells == ["Q4_0", "8,180.4 MB", "4.62", "6.500", "0.0500", "90.0", "10.0", "passed"]
