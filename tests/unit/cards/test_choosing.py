"""The card's "Which file should I choose" section: computed from the measured sizes and KLDs, nothing fixed."""

from __future__ import annotations

from pathlib import Path

from support.card_helpers import CAUSALLM_SOURCE, fake_build, recipe_variant

from publisher import cards

# fake_build measures KLD 0.05, 0.04, 0.03, 0.02 in this order: Q5_0 is larger than Q8_0 and further
# from the reference, so it is not worth its size; IQ2_XS is the smallest and the furthest.
SIZES = {"IQ2_XS": 4_500_000_000, "Q4_0": 8_000_000_000, "Q5_0": 12_000_000_000, "Q8_0": 10_000_000_000}


def _section(text: str) -> str:
    return dict(cards.sections(text))["choosing"]


def _rows(section: str, header: str) -> list[list[str]]:
    table = section.split(header, 1)[1].split("\n\n", 1)[0]
    return [[c.strip() for c in line.strip("|").split("|")] for line in table.splitlines()[2:] if line.startswith("|")]


def test_budgets_and_the_files_worth_their_size_come_from_the_measurements(tmp_path: Path) -> None:
    recipe = recipe_variant(tmp_path, {"quantize": {"types": list(SIZES)}, "imatrix": {"chunks": 100}})
    build_dir = tmp_path / "build" / recipe.build_name
    manifest = fake_build(recipe, build_dir, SIZES)
    manifest.artifacts["IQ2_XS"].imatrix_sha256 = "ab" * 32
    manifest.artifacts["Q4_0"].imatrix_sha256 = "ab" * 32

    text = cards.render_card(recipe, manifest, source_dir=CAUSALLM_SOURCE)
    section = _section(text)

    assert _rows(section, "| KLD at most |") == [
        ["0.05", "causallm_14b.IQ2_XS.gguf", "4.50 GB", "0.0500"],
        ["0.1", "causallm_14b.IQ2_XS.gguf", "4.50 GB", "0.0500"],
        ["0.5", "causallm_14b.IQ2_XS.gguf", "4.50 GB", "0.0500"],
    ]  # no file is within 0.01, so that row is left out
    assert _rows(section, "| File | Size | KLD |") == [
        ["causallm_14b.IQ2_XS.gguf", "4.50 GB", "0.0500", "-"],
        ["causallm_14b.Q4_0.gguf", "8.00 GB", "0.0400", "0.002857"],  # 0.01 KLD for 3.5 GB more
        ["causallm_14b.Q8_0.gguf", "10.00 GB", "0.0200", "0.01"],  # Q5_0 (12 GB, KLD 0.03) is beaten by it
    ]
    assert (
        "Made with the importance matrix: causallm_14b.IQ2_XS.gguf, causallm_14b.Q4_0.gguf. "
        "Of these, causallm_14b.IQ2_XS.gguf cannot be made without one." in section
    )
    assert cards.check_card(text, recipe, manifest, build_dir) == []


def test_a_tighter_measurement_moves_the_choice(tmp_path: Path) -> None:
    recipe = recipe_variant(tmp_path, {"quantize": {"types": ["Q4_0", "Q8_0"]}})
    manifest = fake_build(recipe, tmp_path / "b", {"Q4_0": 8_000_000_000, "Q8_0": 15_000_000_000})
    quality = manifest.artifacts["Q8_0"].quality
    assert quality is not None
    quality.kl_divergence = 0.004

    section = _section(cards.render_card(recipe, manifest, source_dir=CAUSALLM_SOURCE))

    assert _rows(section, "| KLD at most |")[0] == ["0.01", "causallm_14b.Q8_0.gguf", "15.00 GB", "0.0040"]
    assert "importance matrix" not in section


def test_no_section_without_a_measured_kld(tmp_path: Path) -> None:
    recipe = recipe_variant(tmp_path)
    manifest = fake_build(recipe, tmp_path / "b", {"Q4_0": 8_000_000_000})
    for artifact in manifest.artifacts.values():
        artifact.quality = None
    assert "choosing" not in dict(cards.sections(cards.render_card(recipe, manifest, source_dir=CAUSALLM_SOURCE)))
    assert "Which file should I choose" not in cards.render_card(recipe, None, source_dir=CAUSALLM_SOURCE)
