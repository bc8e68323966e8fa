"""A recipe edited after its build: refused when the edit reaches the files or their tests, else the card is redone.

Run through `publisher publish` in-process on the local target and the loopback Hub, each case
checks the one line printed, the exit status and what the target holds afterwards.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from support.publish_state import (
    TARGETS,
    edit_recipe,
    error_line,
    expected_files,
    project,
    published,
    without_gitattributes,
)

pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")

Cli = Callable[..., subprocess.CompletedProcess[str]]

# -- 5. a recipe changed after the build ---------------------------------------------------------


def _licence(data: dict[str, Any]) -> None:
    data["model"]["license"] = "mit"


def _repo_id(data: dict[str, Any]) -> None:
    data["publish"]["repo_id"] = "tester/Other-GGUF"


def _name(data: dict[str, Any]) -> None:
    data["model"]["name"] = "Tiny Two"


def _basename(data: dict[str, Any]) -> None:
    data["quantize"]["basename"] = "tiny2"


def _expectation(data: dict[str, Any]) -> None:
    data["smoke"] = {"prompts": [{"prompt": "Capital of France?", "expect_contains": ["Paris"]}]}


@pytest.mark.parametrize("kind", TARGETS)
@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            _licence,
            "tiny.Q2_K.gguf: the recipe changed after the build and the file's metadata no longer matches it "
            "(general.license: licence, names, repo id or card data); run `publisher build recipes/tiny.yaml` first, "
            "then publish",
        ),
        (
            _repo_id,
            "tiny.Q2_K.gguf: the recipe changed after the build and the file's metadata no longer matches it "
            "(general.repo_url: licence, names, repo id or card data)",
        ),
        (_name, "(general.name: licence, names, repo id or card data)"),
        (_basename, "tiny.Q2_K.gguf: the recipe now names this file tiny2.Q2_K.gguf"),
        (
            _expectation,
            "build/tiny: Q2_K, Q4_K_M, Q8_0 passed smoke checks other than the ones the recipe asks for "
            "now (smoke prompts, expectations, prompt template, quality settings or tool versions changed); "
            "run `publisher build recipes/tiny.yaml` first, then publish",
        ),
    ],
    ids=["licence", "repo_id", "name", "basename", "smoke-expectation"],
)
def test_a_recipe_change_that_reaches_the_files_or_their_tests_is_refused(
    tmp_path: Path,
    kind: str,
    change: Callable[[dict[str, Any]], None],
    message: str,
    cli: Cli,
    request: pytest.FixtureRequest,
) -> None:
    hub = request.getfixturevalue("cli_hub") if kind == "hf" else None
    folder = project(tmp_path, kind)
    edit_recipe(folder, change)

    line = error_line(cli("publish", "recipes/tiny.yaml", cwd=folder))

    assert message in line, line
    assert published(folder, kind, hub) == {}
    assert not (folder / "hub").exists() and (hub is None or not hub.repos)


@pytest.mark.parametrize("kind", TARGETS)
def test_a_recipe_change_that_reaches_only_the_card_rerenders_it_and_says_so(
    tmp_path: Path, kind: str, cli: Cli, request: pytest.FixtureRequest
) -> None:
    hub = request.getfixturevalue("cli_hub") if kind == "hf" else None
    folder = project(tmp_path, kind)
    first = cli("card", "recipes/tiny.yaml", "--publish", cwd=folder)  # the card stage renders and records it
    assert first.returncode == 0, first.stderr
    before = published(folder, kind, hub)
    edit_recipe(folder, lambda data: data["card"].update(notes=["Added after the release."]))

    done = cli("publish", "recipes/tiny.yaml", cwd=folder)

    assert done.returncode == 0, done.stderr
    assert (
        "note: the recipe changed what the card shows: re-rendered README.md, which this publish sends" in done.stdout
    )
    assert "Added after the release." in (folder / "build" / "tiny" / "README.md").read_text()
    after = published(folder, kind, hub)
    for branch in ("main", "q8"):
        changed = {p for p in set(after[branch]) | set(before[branch]) if after[branch].get(p) != before[branch].get(p)}
        assert changed == {"README.md"}
    assert without_gitattributes(after) == {
        "main": expected_files(folder, "Q2_K", "Q4_K_M"),
        "q8": expected_files(folder, "Q8_0"),
    }
