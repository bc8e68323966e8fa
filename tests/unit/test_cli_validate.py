"""The `publisher` command's foundation: validate, schema, --version, --debug, exit codes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
from support.paths import REPO_ROOT
from typer.testing import CliRunner

from publisher.cli import app
from publisher.errors import RecipeError
from publisher.recipe import recipe_json_schema

MINIMAL = (REPO_ROOT / "tests" / "fixtures" / "recipes" / "minimal.yaml").read_text(encoding="utf-8")
runner = CliRunner()


def _run_main(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The real entry point (`python -m publisher.cli`), as a user's shell would run it."""
    env = dict(os.environ, COLUMNS="200")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", "publisher.cli", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def test_validate_prints_a_summary(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO_ROOT)
    result = runner.invoke(app, ["validate", "recipes/causallm-14b.yaml"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "recipes/causallm-14b.yaml: valid" in out
    for expected in ("causallm-14b", "CausalLM/14B@main", "CausalLM 14B by CausalLM (llama)", "wtfpl", "ChatML"):
        assert expected in out
    assert "Q4_0, Q4_1, Q5_0, Q5_1, Q8_0" in out
    assert "hf: publisher/CausalLM-14B-GGUF" in out
    assert result.stderr == ""


def test_validate_every_shipped_recipe(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO_ROOT)
    paths = sorted(str(p.relative_to(REPO_ROOT)) for p in (REPO_ROOT / "recipes").glob("*.yaml"))
    result = runner.invoke(app, ["validate", *paths], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert result.stdout.count(": valid") == len(paths)


def test_validate_reports_each_bad_file_and_still_summarizes_good_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("good.yaml").write_text(MINIMAL, encoding="utf-8")
    Path("bad.yaml").write_text(MINIMAL.replace("  license: mit\n", "  licence: mit\n"), encoding="utf-8")
    result = runner.invoke(app, ["validate", "bad.yaml", "good.yaml", "missing.yaml"], env={"COLUMNS": "200"})
    assert result.exit_code == 1
    assert "good.yaml: valid" in result.stdout
    assert result.stderr.splitlines() == [
        "error: bad.yaml:3: model.license: required key is missing",
        "error: bad.yaml:6: model.licence: unknown key (did you mean license?)",
        "error: missing.yaml: no such file",
    ]


def test_recipe_text_is_not_read_as_markup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Brackets in a recipe (or in an error about it) are printed as they are, never as rich styles."""
    monkeypatch.chdir(tmp_path)
    Path("r.yaml").write_text(MINIMAL.replace("name: Tiny", "name: '[bold]Tiny[/bold]'"), encoding="utf-8")
    Path("bad.yaml").write_text(MINIMAL.replace("    - Q8_0\n", "    - '[red]'\n"), encoding="utf-8")
    result = runner.invoke(app, ["validate", "r.yaml", "bad.yaml"], env={"COLUMNS": "200"})
    assert "[bold]Tiny[/bold] by Acme" in result.stdout
    assert "quantize.types[1]: unknown quant type '[red]'" in result.stderr


def test_schema_prints_the_json_schema() -> None:
    result = runner.invoke(app, ["schema"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == recipe_json_schema()


def test_schema_out_writes_the_committed_file(tmp_path: Path) -> None:
    out = tmp_path / "nested" / "recipe.schema.json"
    result = runner.invoke(app, ["schema", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert out.read_text(encoding="utf-8") == (REPO_ROOT / "recipe.schema.json").read_text(encoding="utf-8")
    assert not [p for p in out.parent.iterdir() if p != out]  # no temporary file left behind


def test_schema_out_to_a_folder_is_one_error_line(tmp_path: Path) -> None:
    proc = _run_main("schema", "--out", str(tmp_path), cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"error: {tmp_path}: cannot write the schema (Is a directory)"


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"publisher {version('publisher')}"


def test_debug_lets_the_exception_through() -> None:
    result = runner.invoke(app, ["--debug", "validate", "no-such-recipe.yaml"])
    assert isinstance(result.exception, RecipeError)
    assert str(result.exception) == "no-such-recipe.yaml: no such file"


def test_debug_prints_a_traceback_from_the_entry_point(tmp_path: Path) -> None:
    plain = _run_main("validate", "no-such-recipe.yaml", cwd=tmp_path)
    assert plain.returncode == 1
    assert plain.stderr == "error: no-such-recipe.yaml: no such file\n"
    debug = _run_main("--debug", "validate", "no-such-recipe.yaml", cwd=tmp_path)
    assert debug.returncode == 1
    assert "Traceback (most recent call last)" in debug.stderr
    assert "publisher.errors.RecipeError: no-such-recipe.yaml: no such file" in debug.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], r"Usage: "),
        (["validate"], r"Missing argument 'RECIPES"),
        (["no-such-command"], r"No such command 'no-such-command'"),
        (["validate", "--bogus", "x.yaml"], r"No such option: --bogus"),
    ],
    ids=["no-args", "no-recipe", "unknown-command", "unknown-option"],
)
def test_usage_errors_exit_2_without_traceback(args: list[str], message: str, tmp_path: Path) -> None:
    proc = _run_main(*args, cwd=tmp_path)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr + proc.stdout
    assert re.search(message, proc.stderr + proc.stdout, re.IGNORECASE), proc.stderr + proc.stdout
