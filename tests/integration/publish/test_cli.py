"""`publisher publish` and friends as a user runs them, against the local target."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from support.fakebuild import make_build, write_card, write_recipe
from support.paths import REPO_ROOT
from typer.testing import CliRunner

from publisher.cli import app
from publisher.manifest import Manifest, save_manifest


def entry_point(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The real `publisher` command in a child process, as a user's shell runs it."""
    env = dict(os.environ, COLUMNS="200")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", "publisher.cli", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=180
    )


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A folder with recipes/tiny.yaml and its build under build/, as after `publisher build`."""
    recipe_path = write_recipe(tmp_path / "recipes", branches=[{"name": "q8", "types": ["Q8_0"]}])
    make_build(recipe_path, tmp_path / "build")
    return tmp_path


def test_dry_run_then_publish_then_nothing_to_do(project: Path, cli: Callable[..., Any]) -> None:
    dry = cli("publish", "recipes/tiny.yaml", "--dry-run", cwd=project)
    assert dry.returncode == 0, dry.stderr
    out = dry.stdout
    assert f"local {project / 'hub' / 'tester' / 'Tiny-GGUF'}: will be created" in out
    assert "branch main (new)" in out and "branch q8 (new)" in out
    assert re.search(r"tiny\.Q4_K_M\.gguf\s+│\s+66\.6 kB\s+│\s+upload", out)
    assert re.search(r"commit on main: Publish tiny \(recipe [0-9a-f]{12}, build [0-9a-f]{12}\) \(3 files", out)
    assert re.search(
        r"  Recipe: tiny\.yaml \(sha256 [0-9a-f]{64}\)\n  Build: tiny \(manifest sha256 [0-9a-f]{64}\)", out
    )
    assert not (project / "hub").exists()

    first = cli("publish", "recipes/tiny.yaml", cwd=project)
    assert first.returncode == 0, first.stderr
    assert re.search(r"main: committed [0-9a-f]{12} \(3 files", first.stdout)
    assert re.search(r"q8: committed [0-9a-f]{12} \(2 files", first.stdout)
    repo = project / "hub" / "tester" / "Tiny-GGUF"
    assert sorted(p.name for p in repo.iterdir()) == [
        ".git",
        ".gitattributes",
        "README.md",
        "tiny.Q2_K.gguf",
        "tiny.Q4_K_M.gguf",
    ]

    again = cli("publish", "recipes/tiny.yaml", cwd=project)
    assert again.returncode == 0, again.stderr
    assert "main: up to date, no commit" in again.stdout and "q8: up to date, no commit" in again.stdout

    write_card(project / "build" / "tiny", "updated card")
    plan = cli("publish", "recipes/tiny.yaml", "--dry-run", cwd=project)
    assert re.search(r"tiny\.Q2_K\.gguf\s+│\s+65\.5 kB\s+│\s+skip: already present", plan.stdout)
    assert "commit on main: Publish tiny" in plan.stdout and "(1 file," in plan.stdout


def test_hub_dir_option_chooses_the_folder(project: Path, cli: Callable[..., Any]) -> None:
    done = cli("publish", "recipes/tiny.yaml", "--hub-dir", "mirror", "--target", "local", cwd=project)
    assert done.returncode == 0, done.stderr
    assert (project / "mirror" / "tester" / "Tiny-GGUF" / ".git").is_dir()
    assert not (project / "hub").exists()


def test_failed_build_is_refused_in_one_line(tmp_path: Path) -> None:
    recipe_path = write_recipe(tmp_path / "recipes")
    make_build(recipe_path, tmp_path / "build", status={"Q2_K": "failed"})

    done = entry_point("publish", "recipes/tiny.yaml", cwd=tmp_path)

    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "refusing to publish, 1 artifact(s) failed their checks: Q2_K" in lines[0]
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "hub").exists()


@pytest.mark.parametrize(("status", "drop"), [("built", False), ("passed", True)], ids=["untested", "missing"])
def test_a_recipe_type_that_was_not_tested_blocks_the_release(tmp_path: Path, status: str, drop: bool) -> None:
    recipe_path = write_recipe(tmp_path / "recipes")
    _, build_dir = make_build(recipe_path, tmp_path / "build", status={"Q4_K_M": status})
    if drop:  # a manifest that lost the type altogether, e.g. after an interrupted re-quantization
        manifest = Manifest.model_validate_json((build_dir / "manifest.json").read_text(encoding="utf-8"))
        del manifest.artifacts["Q4_K_M"]
        save_manifest(build_dir, manifest)

    done = entry_point("publish", "recipes/tiny.yaml", cwd=tmp_path)

    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr
    assert lines[0] == (
        f"error: {build_dir.relative_to(tmp_path)}: refusing to publish, Q4_K_M in quantize.types has not been "
        "built and tested; run `publisher build recipes/tiny.yaml` first"
    )
    assert not (tmp_path / "hub").exists()


def test_unknown_target_is_named(project: Path, cli: Callable[..., Any]) -> None:
    done = cli("publish", "recipes/tiny.yaml", "--target", "s3", cwd=project)
    assert done.returncode == 1
    assert "unknown publish target 's3': use one of local, hf" in done.stderr


def test_build_and_card_take_the_publish_options() -> None:
    runner = CliRunner()
    for command in ("build", "card"):
        result = runner.invoke(app, [command, "--help"], env={"COLUMNS": "200"})
        assert result.exit_code == 0
        for option in ("--publish", "--target", "--hub-dir"):
            assert option in result.stdout, (command, option)


def test_summary_prints_markdown_tables(project: Path, cli: Callable[..., Any]) -> None:
    done = cli("summary", "recipes/tiny.yaml", cwd=project)
    assert done.returncode == 0, done.stderr
    assert "### Provided files" in done.stdout and "### Quality" in done.stdout
    assert "| tiny.Q8_0.gguf | Q8_0 | 4.50 | 0.00 GB | q8 | passed |" in done.stdout


def test_card_publish_rerenders_many_recipes_and_commits_only_changed_cards(
    tmp_path: Path, cli: Callable[..., Any]
) -> None:
    import yaml

    first = write_recipe(tmp_path / "recipes", name="one", repo_id="tester/One-GGUF")
    second = write_recipe(tmp_path / "recipes", name="two", repo_id="tester/Two-GGUF")
    for path in (first, second):
        make_build(path, tmp_path / "build")

    done = cli("card", "recipes/one.yaml", "recipes/two.yaml", "--publish", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    repos = {name: tmp_path / "hub" / "tester" / f"{name}-GGUF" for name in ("One", "Two")}
    heads = {
        name: subprocess.check_output(["git", "-C", str(r), "rev-parse", "main"], text=True)
        for name, r in repos.items()
    }

    # A card-only change (here: the recipe's notes) re-renders one card; only that repo gets a commit, README alone.
    data = yaml.safe_load(first.read_text())
    data["card"]["notes"] = ["A note added after the first release."]
    first.write_text(yaml.safe_dump(data, sort_keys=False))
    again = cli("card", "recipes/one.yaml", "recipes/two.yaml", "--publish", cwd=tmp_path)
    assert again.returncode == 0, again.stderr

    one = repos["One"]
    changed = subprocess.check_output(["git", "-C", str(one), "diff", "--name-only", "main~1", "main"], text=True)
    assert changed.split() == ["README.md"]
    assert "A note added after the first release." in (one / "README.md").read_text()
    assert subprocess.check_output(["git", "-C", str(repos["Two"]), "rev-parse", "main"], text=True) == heads["Two"]
    assert "main: up to date, no commit" in again.stdout


def test_card_publish_reports_a_missing_build_and_goes_on(tmp_path: Path, cli: Callable[..., Any]) -> None:
    built = write_recipe(tmp_path / "recipes", name="one", repo_id="tester/One-GGUF")
    make_build(built, tmp_path / "build")
    write_recipe(tmp_path / "recipes", name="never", repo_id="tester/Never-GGUF")

    done = cli("card", "recipes/never.yaml", "recipes/one.yaml", "--publish", cwd=tmp_path)

    assert done.returncode == 1
    assert "recipes/never.yaml: no build in build/never; run `publisher build" in done.stderr
    assert (tmp_path / "hub" / "tester" / "One-GGUF" / ".git").is_dir()
    assert not (tmp_path / "build" / "never").exists()
