"""Paths a recipe names, checked when it is loaded: the kind of file, its size, where it lives,
and context lengths against the source's config.json. One `file:line: field: message` line each,
and validation writes nothing.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from support.paths import FIXTURES as FIXTURES_ROOT
from typer.testing import CliRunner

from publisher import limits
from publisher.cli import app
from publisher.errors import RecipeError
from publisher.formats import gguf_quants
from publisher.recipe import load_recipe

FIXTURES = FIXTURES_ROOT / "recipes"
MINIMAL = (FIXTURES / "minimal.yaml").read_text(encoding="utf-8")


def _source(tmp: Path, trained: int = 4096) -> None:
    """A folder that looks like a model to validation: a config.json with its trained context."""
    (tmp / "model").mkdir()
    (tmp / "model" / "config.json").write_text(json.dumps({"max_position_embeddings": trained}), encoding="utf-8")


def _fifo(tmp: Path) -> None:
    os.mkfifo(tmp / "pipe.txt")


def _sparse(tmp: Path) -> None:
    with (tmp / "huge.txt").open("wb") as handle:
        handle.truncate(limits.MAX_TEXT_BYTES + 1)


def _loop(tmp: Path) -> None:
    (tmp / "a").symlink_to(tmp / "b")
    (tmp / "b").symlink_to(tmp / "a")


def _partials_with_fifo(tmp: Path) -> None:
    (tmp / "partials").mkdir()
    (tmp / "partials" / "footer.md.j2").write_text("ok\n", encoding="utf-8")
    os.mkfifo(tmp / "partials" / "header.md.j2")


def _nothing(_tmp: Path) -> None:
    return None


@dataclass(frozen=True)
class Case:
    id: str
    extra: str  # appended to the minimal recipe, so it starts on line 16
    expected: str
    make: Callable[[Path], None] = _nothing


CASES = [
    Case(
        "template-missing",
        "card:\n  template: mine.md.j2\n  profile: {quantized_by: t}\n",
        "r.yaml:14: card.template: mine.md.j2: no such file",
    ),
    Case("source-nul", '  path: "mod\\0el"\n', "r.yaml:3: source.path: holds a NUL character, which no path can"),
    Case(
        "source-is-a-file",
        "  path: r.yaml\n",
        "r.yaml:3: source.path: r.yaml: is a regular file, not a folder",
    ),
    Case("source-loop", "  path: a\n", "r.yaml:3: source.path: a: symbolic links loop", make=_loop),
    Case(
        "template-empty",
        "card:\n  template: ''\n  profile: {quantized_by: t}\n",
        "r.yaml:14: card.template: is empty; give a path, or leave the key out",
    ),
    Case(
        "quality-text-control-characters",
        'smoke:\n  quality:\n    text: "\\r\\u202e"\n',
        "r.yaml:18: smoke.quality.text: '\\r\\u202e': no such file",
    ),
    Case(
        "template-root",
        "card:\n  template: /\n  profile: {quantized_by: t}\n",
        "r.yaml:14: card.template: /: is a folder, not a regular file",
    ),
    Case(
        "template-proc-file",
        "card:\n  template: /proc/cpuinfo\n  profile: {quantized_by: t}\n",
        "r.yaml:14: card.template: /proc/cpuinfo: /proc/cpuinfo is in a virtual file system, not a regular file",
    ),
    Case(
        "partials-proc",
        "card:\n  partials_dir: /proc\n  profile: {quantized_by: t}\n",
        "r.yaml:14: card.partials_dir: /proc: /proc is in a virtual file system, not a regular folder",
    ),
    Case(
        "partials-fifo-inside",
        "card:\n  partials_dir: partials\n  profile: {quantized_by: t}\n",
        "r.yaml:14: card.partials_dir: partials: header.md.j2 is a FIFO, not a regular file",
        make=_partials_with_fifo,
    ),
    Case(
        "quality-dev-zero",
        "smoke:\n  quality:\n    text: /dev/zero\n",
        "r.yaml:18: smoke.quality.text: /dev/zero: /dev/zero is in a virtual file system, not a regular file",
    ),
    Case(
        "quality-urandom",
        "smoke:\n  quality:\n    text: /dev/urandom\n",
        "r.yaml:18: smoke.quality.text: /dev/urandom: /dev/urandom is in a virtual file system, not a regular file",
    ),
    Case(
        "quality-fifo",
        "smoke:\n  quality:\n    text: pipe.txt\n",
        "r.yaml:18: smoke.quality.text: pipe.txt: is a FIFO, not a regular file",
        make=_fifo,
    ),
    Case(
        "quality-too-large",
        "smoke:\n  quality:\n    text: huge.txt\n",
        f"r.yaml:18: smoke.quality.text: huge.txt: {limits.MAX_TEXT_BYTES + 1} bytes, more than the"
        f" {limits.MAX_TEXT_BYTES} this file may have",
        make=_sparse,
    ),
    Case(
        "context-beyond-training",
        "smoke:\n  context_length: 5000\n",
        "r.yaml:16: smoke.context_length: 5000 is more than the 4096 tokens the model was trained on (config.json);"
        " lower it, or set model.allow_long_context: true if the model really handles more",
        make=_source,
    ),
]


def _recipe_text(case: Case) -> str:
    if case.make is _source:  # a source the size of the minimal recipe's defaults: model.context_length 4096
        return MINIMAL.replace("source:\n  repo: acme/tiny\n", "source: {repo: acme/tiny, path: model}\n") + case.extra
    if case.extra.startswith("  path:"):  # a source key: insert it into the source section
        return MINIMAL.replace("  repo: acme/tiny\n", "  repo: acme/tiny\n" + case.extra, 1)
    if case.extra.startswith("card:"):
        return MINIMAL.replace("card:\n  profile:\n    quantized_by: tester\n", "") + case.extra
    return MINIMAL + case.extra


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_path_is_one_line_and_nothing_is_written(
    case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    case.make(tmp_path)
    text = _recipe_text(case)
    (tmp_path / "r.yaml").write_text(text, encoding="utf-8")
    # each case's line number follows from where its text sits in the file
    before = sorted(tmp_path.rglob("*"))
    result = CliRunner().invoke(app, ["validate", "r.yaml"])
    assert sorted(tmp_path.rglob("*")) == before
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit)
    assert result.stderr.splitlines() == [f"error: {case.expected}"]


def test_line_numbers_of_the_cases_follow_the_text() -> None:
    for case in CASES:
        text = _recipe_text(case)
        line = int(case.expected.split(":")[1])
        field = case.expected.split(": ")[1].rsplit(".", 1)[-1]
        assert text.splitlines()[line - 1].strip().startswith(field), case.id


def test_long_context_is_allowed_with_a_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    _source(tmp_path)
    text = MINIMAL.replace("  repo: acme/tiny\n", "  repo: acme/tiny\n  path: model\n").replace(
        "  license: mit\n", "  license: mit\n  allow_long_context: true\n  context_length: 8192\n"
    )
    (tmp_path / "r.yaml").write_text(text, encoding="utf-8")
    result = CliRunner().invoke(app, ["validate", "r.yaml"])
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines() == [
        "warning: r.yaml:9: model.context_length: 8192 is more than the 4096 tokens the model was trained on"
        " (config.json); allowed by model.allow_long_context, expect worse answers beyond 4096"
    ]
    assert load_recipe(tmp_path / "r.yaml").model.context_length == 8192


def test_a_default_context_beyond_training_is_named_as_the_default(tmp_path: Path) -> None:
    _source(tmp_path, trained=2048)
    path = tmp_path / "r.yaml"
    path.write_text(MINIMAL.replace("  repo: acme/tiny\n", "  repo: acme/tiny\n  path: model\n"), encoding="utf-8")
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    assert info.value.problems == [
        f"{path}:4: model.context_length: 4096 (the default) is more than the 2048 tokens the model was trained on"
        " (config.json); lower it, or set model.allow_long_context: true if the model really handles more"
    ]


def test_context_within_training_and_an_unreadable_config_pass(tmp_path: Path) -> None:
    _source(tmp_path, trained=8192)
    path = tmp_path / "r.yaml"
    text = (
        MINIMAL.replace("  repo: acme/tiny\n", "  repo: acme/tiny\n  path: model\n")
        + "smoke:\n  context_length: 8192\n"
    )
    path.write_text(text, encoding="utf-8")
    assert load_recipe(path).warnings == []
    (tmp_path / "model" / "config.json").write_text("{broken", encoding="utf-8")
    path.write_text(text.replace("8192", "100000"), encoding="utf-8")
    assert load_recipe(path).smoke.context_length == 100000  # fetch reports the broken config, not validation


def test_a_missing_source_folder_is_left_to_fetch(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(MINIMAL.replace("  repo: acme/tiny\n", "  repo: acme/tiny\n  path: gone\n"), encoding="utf-8")
    recipe = load_recipe(path)
    assert recipe.source_dir() == tmp_path / "gone"


def test_a_model_name_of_dots_makes_a_safe_basename(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(MINIMAL.replace("name: Tiny", "name: '..'"), encoding="utf-8")
    recipe = load_recipe(path)
    assert recipe.basename == "model"
    assert recipe.artifact_filename("Q8_0") == "model.Q8_0.gguf"


def test_build_name_from_an_unsafe_file_name_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny..yaml").write_text(MINIMAL, encoding="utf-8")
    result = CliRunner().invoke(app, ["validate", "tiny..yaml"])
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        "error: tiny..yaml: build name 'tiny.' (from the file's name): must not end with a dot; set name in the recipe"
    ]


def test_the_longest_written_name_fits_the_file_system(tmp_path: Path) -> None:
    """A basename at the limit still leaves room for the longest temporary file name a build writes."""
    longest_type = max(gguf_quants.CATALOGUE, key=len)
    stem = "b" * limits.MAX_BASENAME_BYTES
    name = f".{stem}.{longest_type}-00001-of-00001.gguf.abcdefgh.partial"
    assert len(name.encode()) <= limits.NAME_MAX_BYTES
    (tmp_path / name).write_bytes(b"")  # the file system agrees
