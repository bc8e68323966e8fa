"""The recipe's awq section: defaults, branch names, and one file:line error per impossible value."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.common import minimal_recipe_with

from publisher.errors import RecipeError

# The minimal recipe has 15 lines: the awq section starts on line 16.
_load = minimal_recipe_with


def test_defaults_branch_names_and_the_sibling_repo(tmp_path: Path) -> None:
    awq = _load(
        tmp_path,
        "awq:\n  variants:\n    - {group_size: 64}\n    - {group_size: -1, zero_point: false}\n    - {}\n",
    ).awq
    assert awq is not None
    assert awq.branches() == ["awq-4bit-64g", "awq-4bit-nogroup-sym", "awq-4bit-128g"]
    assert awq.main_branch == "awq-4bit-64g"
    first = awq.variants[0]
    assert first.settings() == {"bits": 4, "group_size": 64, "zero_point": True, "version": "gemm"}
    assert (awq.samples, awq.seq_len, awq.device) == (64, 512, "cpu")
    assert awq.repo("tester/Tiny-GGUF") == "tester/Tiny-AWQ"


def test_gemv_is_allowed_where_a_cuda_kernel_packs_it(tmp_path: Path) -> None:
    awq = _load(tmp_path, "awq:\n  device: cuda\n  variants:\n    - {version: gemv, group_size: 32}\n").awq
    assert awq is not None and awq.branches() == ["awq-4bit-32g-gemv"]


def test_gptq_and_awq_live_side_by_side(tmp_path: Path) -> None:
    recipe = _load(tmp_path, "gptq:\n  variants:\n    - {group_size: 64}\nawq:\n  variants:\n    - {group_size: 64}\n")
    assert recipe.gptq is not None and recipe.awq is not None
    assert recipe.gptq.repo(recipe.publish.repo_id).endswith("-GPTQ")
    assert recipe.awq.repo(recipe.publish.repo_id).endswith("-AWQ")


@pytest.mark.parametrize(
    ("awq", "expected"),
    [
        ("awq:\n  variants:\n    - {bits: 8}\n", ":18: awq.variants[0].bits: "),
        ("awq:\n  variants:\n    - {bits: 3}\n", ":18: awq.variants[0].bits: "),
        (
            "awq:\n  variants:\n    - {group_size: 256}\n",
            ":18: awq.variants[0].group_size: group size 256 is not one Awq",
        ),
        ("awq:\n  variants:\n    - {version: gemv_fast}\n", ":18: awq.variants[0].version: "),
        ("awq:\n  variants:\n    - {version: gemv}\n", ":18: awq.variants[0].version: version gemv is packed"),
        ("awq:\n  variants:\n    - {act_order: true}\n", ":18: awq.variants[0].act_order: unknown key"),
        ("awq:\n  variants:\n    - {}\n    - {}\n", ":19: awq.variants[1]: two variants go to branch 'awq-4bit-128g'"),
        ("awq:\n  variants:\n    - {branch: main}\n", ":18: awq.variants[0].branch: main is chosen with"),
        ("awq:\n  main: gptq-4bit-128g-actorder_True\n  variants:\n    - {}\n", ":17: awq.main: "),
        ("awq:\n  variants: []\n", ":17: awq.variants: "),
        ("awq:\n  calibration: /dev/zero\n  variants:\n    - {}\n", ":17: awq.calibration: "),
    ],
)
def test_impossible_values_name_file_line_and_field(tmp_path: Path, awq: str, expected: str) -> None:
    with pytest.raises(RecipeError) as err:
        _load(tmp_path, awq)
    lines = str(err.value).splitlines()
    assert len(lines) == 1, lines
    assert f"r.yaml{expected}" in lines[0]
