"""`publisher card` as users run it: a real process, a build folder with a manifest, one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from support.card_helpers import CAUSALLM_SOURCE, fake_build, recipe_variant

from publisher import cards
from publisher.manifest import load_manifest
from publisher.recipe import load_recipe

SIZES = {"Q4_0": 8_180_411_392, "Q8_0": 15_061_544_960}


def publisher(*args: object, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "publisher.cli", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "COLUMNS": "160"},
    )


def test_card_from_build_writes_card_and_html_and_checks_clean(tmp_path: Path) -> None:
    recipe = recipe_variant(tmp_path)
    fake_build(recipe, tmp_path / "work" / recipe.build_name, SIZES)
    out, page = tmp_path / "README.md", tmp_path / "card.html"
    result = publisher(
        "card",
        recipe.path,
        "--workdir",
        "work",
        "--source-dir",
        CAUSALLM_SOURCE,
        "--out",
        out,
        "--html",
        page,
        "--check",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "card: no problems found" in result.stderr
    manifest = load_manifest(tmp_path / "work" / recipe.build_name)
    assert out.read_text(encoding="utf-8") == cards.render_card(recipe, manifest, source_dir=CAUSALLM_SOURCE)
    assert cards.names_in_table(out.read_text(encoding="utf-8")) == ["causallm_14b.Q4_0.gguf", "causallm_14b.Q8_0.gguf"]
    assert "<td>8.18 GB</td>" in page.read_text(encoding="utf-8")


def test_check_lists_every_problem_and_exits_1(tmp_path: Path) -> None:
    recipe = recipe_variant(tmp_path)
    build_dir = tmp_path / "work" / recipe.build_name
    fake_build(recipe, build_dir, SIZES)
    (build_dir / "causallm_14b.Q8_0.gguf").unlink()
    result = publisher("card", recipe.path, "--workdir", "work", "--check", cwd=tmp_path)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert errors[0].startswith("error: card: linked file causallm_14b.Q8_0.gguf is missing from")
    assert "Traceback" not in result.stderr


def test_template_error_is_one_line_naming_template_and_line(tmp_path: Path) -> None:
    (tmp_path / "mine.md.j2").write_text("# {{ title }}\n{{ model.nme }}\n", encoding="utf-8")
    recipe = recipe_variant(tmp_path, {"card": {"template": "mine.md.j2"}})
    result = publisher("card", recipe.path, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.strip().splitlines() == ["error: mine.md.j2:2: 'dict object' has no attribute 'nme'"]


def test_preview_shows_frontmatter_table_then_markdown(tmp_path: Path, repo_root: Path) -> None:
    recipe_path = repo_root / "recipes" / "causallm-14b.yaml"
    result = publisher(
        "card", recipe_path, "--source-dir", CAUSALLM_SOURCE, "--preview", "--workdir", tmp_path, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    head, _, rest = result.stdout.partition("CausalLM 14B - GGUF")
    assert "frontmatter" in head and "base_model_relation" in head and "quantized" in head
    assert "Provided files" in rest and "causallm_14b.Q4_0.gguf" in rest
    assert "<!--" not in result.stdout  # markers are for tools, not for the terminal


def test_card_without_build_prints_estimates_to_stdout(tmp_path: Path, repo_root: Path) -> None:
    recipe_path = repo_root / "recipes" / "causallm-14b.yaml"
    result = publisher("card", recipe_path, "--workdir", tmp_path, "--source-dir", CAUSALLM_SOURCE, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    expected = cards.render_card(load_recipe(recipe_path), source_dir=CAUSALLM_SOURCE)
    assert result.stdout == expected
