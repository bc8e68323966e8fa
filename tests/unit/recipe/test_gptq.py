"""The recipe's gptq section: defaults, TheBloke's branch names, and one file:line error per impossible value."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.common import minimal_recipe_with

from publisher.errors import RecipeError

# The minimal recipe has 15 lines: the gptq section starts on line 16.
_load = minimal_recipe_with


def test_defaults_and_branch_names(tmp_path: Path) -> None:
    recipe = _load(
        tmp_path,
        "gptq:\n  variants:\n    - {group_size: 64}\n    - {group_size: 64, act_order: false, bits: 8}\n",
    )
    gptq = recipe.gptq  # type: ignore[attr-defined]
    assert gptq.branches() == ["gptq-4bit-64g-actorder_True", "gptq-8bit-64g-actorder_False"]
    assert gptq.main_branch == "gptq-4bit-64g-actorder_True"
    assert (gptq.samples, gptq.seq_len, gptq.device, gptq.variants[0].damp) == (64, 512, "cpu", 0.1)


def test_no_section_means_no_gptq(tmp_path: Path) -> None:
    assert _load(tmp_path, "").gptq is None  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("gptq", "expected"),
    [
        ("gptq:\n  variants:\n    - {bits: 5}\n", ":18: gptq.variants[0].bits: "),
        ("gptq:\n  variants:\n    - {group_size: 100}\n", ":18: gptq.variants[0].group_size: group size 100 is not"),
        ("gptq:\n  variants:\n    - {damp: 1.5}\n", ":18: gptq.variants[0].damp: "),
        ("gptq:\n  variants:\n    - {}\n    - {}\n", ":19: gptq.variants[1]: two variants go to branch"),
        ("gptq:\n  variants:\n    - {branch: 'a b'}\n", ":18: gptq.variants[0].branch: 'a b' is not a valid"),
        ("gptq:\n  main: nope\n  variants:\n    - {}\n", ":17: gptq.main: 'nope' is none of the variants"),
        ("gptq:\n  device: tpu\n  variants:\n    - {}\n", ":17: gptq.device: "),
        ("gptq:\n  variants: []\n", ":17: gptq.variants: "),
        ("gptq:\n  variants:\n    - {bits: 4, actorder: true}\n", ":18: gptq.variants[0].actorder: unknown key"),
        ("gptq:\n  calibration: /dev/zero\n  variants:\n    - {}\n", ":17: gptq.calibration: "),
    ],
)
def test_impossible_values_name_file_line_and_field(tmp_path: Path, gptq: str, expected: str) -> None:
    with pytest.raises(RecipeError) as err:
        _load(tmp_path, gptq)
    lines = str(err.value).splitlines()
    assert len(lines) == 1, lines
    assert f"r.yaml{expected}" in lines[0]
