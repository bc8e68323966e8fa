"""The card's importance-matrix section: the recorded matrix, variants, and which files used it."""

from __future__ import annotations

from pathlib import Path

from support.card_helpers import CAUSALLM_SOURCE, fake_build, recipe_variant

from publisher import cards
from publisher.manifest import ImatrixRecord

VARIANT = {"name": "Q4_K_L", "type": "Q4_K_M", "token_embd": "Q8_0", "output": "Q8_0"}
SIZES = {"Q4_0": 8_000_000_000, "Q4_K_L": 9_100_000_000, "IQ2_XS": 4_500_000_000}


def test_card_names_the_matrix_the_variant_and_its_use(tmp_path: Path) -> None:
    recipe = recipe_variant(tmp_path, {"quantize": {"types": ["Q4_0", VARIANT, "IQ2_XS"]}, "imatrix": {"chunks": 100}})
    build_dir = tmp_path / "build" / recipe.build_name
    manifest = fake_build(recipe, build_dir, SIZES)
    manifest.imatrix = ImatrixRecord(
        path="causallm_14b.imatrix.gguf",
        sha256="ab" * 32,
        source="publisher's calibration text (publisher/data/calibration.txt, MIT licence)",
        text_path="causallm_14b.imatrix.txt",
        text_sha256="cd" * 32,
        chunks=100,
        chunk_size=512,
        tokens=51_200,
        entries=280,
        uncovered=["blk.3.ffn_up_exps.weight (experts 2, 3)"],
        fallback="importance 1 for every column",
    )
    for name in ("Q4_K_L", "IQ2_XS"):
        manifest.artifacts[name].imatrix_sha256 = manifest.imatrix.sha256
    manifest.artifacts["Q4_K_L"].base_type = "Q4_K_M"

    for name in (manifest.imatrix.path, manifest.imatrix.text_path):
        (build_dir / name).write_bytes(b"published beside the quants")

    text = cards.render_card(recipe, manifest, source_dir=CAUSALLM_SOURCE)

    section = dict(cards.sections(text))["importance-matrix"]
    blob = f"https://huggingface.co/{recipe.publish.repo_id}/blob/main"
    assert (
        f"[causallm_14b.imatrix.gguf]({blob}/causallm_14b.imatrix.gguf) (sha256 `{'ab' * 32}`, 280 tensors)" in section
    )
    assert f"[causallm_14b.imatrix.txt]({blob}/causallm_14b.imatrix.txt), sha256 `{'cd' * 32}`" in section
    assert "The matrix and the text are published here beside the quants." in section
    assert "100 chunks × 512 tokens (51200 tokens)" in section
    assert "-o causallm_14b.imatrix.gguf -c 512 --chunks 100" in section
    assert "`blk.3.ffn_up_exps.weight (experts 2, 3)`" in section
    assert "| causallm_14b.Q4_K_L.gguf | Q4_K_M, token_embd at Q8_0, output at Q8_0 | yes |" in section
    assert "| causallm_14b.Q4_0.gguf | Q4_0 | no |" in section
    assert "| causallm_14b.IQ2_XS.gguf | IQ2_XS | yes |" in section
    files = dict(cards.sections(text))["README_GGUF.md-provided-files"]
    assert "[causallm_14b.Q4_K_L.gguf](" in files and "| Q4_K_M |" in files
    assert cards.check_card(text, recipe, manifest, build_dir) == []


def test_card_without_matrix_or_variants_has_no_such_section(tmp_path: Path) -> None:
    recipe = recipe_variant(tmp_path)
    manifest = fake_build(recipe, tmp_path / "build" / recipe.build_name, {"Q4_0": 8_000_000_000})
    text = cards.render_card(recipe, manifest, source_dir=CAUSALLM_SOURCE)
    assert "importance-matrix" not in dict(cards.sections(text))


def test_only_a_calibration_text_whose_licence_allows_it_is_published(tmp_path: Path) -> None:
    from publisher.cards.imatrix import published_files
    from publisher.manifest import Manifest

    manifest = Manifest(build_name="b", recipe_sha256="x")
    manifest.imatrix = ImatrixRecord(
        path="m.imatrix.gguf", sha256="ab" * 32, source="s", text_path="m.imatrix.txt", text_sha256="cd" * 32,
        chunks=1, chunk_size=512, tokens=512, entries=1,
    )  # fmt: skip
    own = tmp_path / "own.txt"
    own.write_text("calibration text of the publisher's own", encoding="utf-8")
    cases = [
        ({}, ["m.imatrix.gguf", "m.imatrix.txt"]),  # the shipped text: MIT
        ({"text": str(own)}, ["m.imatrix.gguf"]),
        ({"text": str(own), "publish_text": True}, ["m.imatrix.gguf", "m.imatrix.txt"]),
        ({"publish_text": False}, ["m.imatrix.gguf"]),
    ]
    for section, expected in cases:
        recipe = recipe_variant(tmp_path, {"imatrix": section})
        assert published_files(recipe, manifest) == expected, section
