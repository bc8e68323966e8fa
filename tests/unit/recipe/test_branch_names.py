"""Branch names are checked at recipe load with git's rules and the Hub's, naming file, line and field."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from support.paths import FIXTURES as FIXTURES_ROOT

from publisher.errors import RecipeError
from publisher.recipe import branch_name_problem, load_recipe

FIXTURES = FIXTURES_ROOT / "recipes"
MINIMAL = (FIXTURES / "minimal.yaml").read_text(encoding="utf-8")  # 15 lines; publish: is the last mapping

REFUSED = {
    "x.lock": "git refuses a part that ends with '.lock'",
    "a/b.lock/c": "git refuses a part that ends with '.lock'",
    "x.": "git refuses a trailing '.'",
    ".x": "git refuses a part that starts with '.'",
    "a/.b": "git refuses a part that starts with '.'",
    "a..b": "git refuses '..'",
    "a//b": "git refuses empty parts between '/'",
    "a/": "git refuses empty parts between '/'",
    "/a": "git refuses empty parts between '/'",
    "a@{1}": "git refuses '@{'",
    "@": "git refuses '@' alone",
    "-x": "git refuses a leading '-'",
    "a b": "git refuses spaces and any of ~ ^ : ? * [ \\",
    "a~1": "git refuses spaces and any of ~ ^ : ? * [ \\",
    "a^": "git refuses spaces and any of ~ ^ : ? * [ \\",
    "a:b": "git refuses spaces and any of ~ ^ : ? * [ \\",
    "a?": "git refuses spaces and any of ~ ^ : ? * [ \\",
    "a*": "git refuses spaces and any of ~ ^ : ? * [ \\",
    "a[b": "git refuses spaces and any of ~ ^ : ? * [ \\",
    "a\\b": "git refuses spaces and any of ~ ^ : ? * [ \\",
    "a\x01b": "git refuses control characters",
    "a\x7fb": "git refuses control characters",
    "refs/pr/1": "the Hub keeps refs/ for its own refs (refs/pr/N, refs/convert/...)",
    "0123456789abcdef0123456789abcdef01234567": "the Hub would take 40 hex digits for a commit id",
    "HEAD": "git and the Hub read HEAD as the current commit",
    "é": "use letters, digits and . _ / - from a letter or digit on",
    "_x": "use letters, digits and . _ / - from a letter or digit on",
}
ACCEPTED = ["q4", "Q4_K_M", "release/v1.0", "a-b", "x.locked", "v1.2.3", "a/b/c"]


@pytest.mark.parametrize(("name", "why"), REFUSED.items(), ids=[ascii(n) for n in REFUSED])
def test_refused_names_are_named_with_the_rule_at_their_line(tmp_path: Path, name: str, why: str) -> None:
    path = tmp_path / "r.yaml"
    branches = f"  branches:\n    - name: {json.dumps(name)}\n      types: [Q8_0]\n"
    path.write_text(MINIMAL + branches, encoding="utf-8")

    with pytest.raises(RecipeError) as caught:
        load_recipe(path)

    assert caught.value.problems == [f"{path}:17: publish.branches[0].name: {name!r} is not a valid branch name: {why}"]


@pytest.mark.parametrize("name", ACCEPTED)
def test_ordinary_names_pass(name: str) -> None:
    assert branch_name_problem(name) is None


@pytest.mark.parametrize(
    "name", [n for n in REFUSED if n != "@" and not n.startswith(("refs/", "0123", "HEAD", "é", "_"))]
)
def test_git_agrees_with_every_git_rule(name: str) -> None:  # '@' alone means HEAD to --branch, so not here
    done = subprocess.run(["git", "check-ref-format", "--branch", name], capture_output=True, check=False)
    assert done.returncode != 0, name


@pytest.mark.parametrize("name", ACCEPTED)
def test_git_accepts_what_passes(name: str) -> None:
    done = subprocess.run(["git", "check-ref-format", "--branch", name], capture_output=True, check=False)
    assert done.returncode == 0, name
