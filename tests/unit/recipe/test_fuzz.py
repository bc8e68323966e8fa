"""A fuzzer: the real recipes, mutated the way a careless or hostile user would, through the CLI.

Each example changes one value of recipes/*.yaml (its type, a number at or past a bound, text with
surrogates, right-to-left marks, NUL or newlines, a path to a device, /proc or above the folder),
drops a key or adds one, then runs `publisher validate` in-process, and fewer run
`publisher build --stages fetch` on a tiny local source. Every run must end with status 0 or 1,
print one `error:` (or `warning:`) line per problem and no traceback or "unexpected", write
nothing outside the build folder, and finish in bounded time.

PUBLISHER_FUZZ_EXAMPLES sets the number of validate examples (default 300; build runs a tenth).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.common import tiny_source
from support.inprocess import run_cli
from support.paths import REPO_ROOT

RECIPES = {
    p.name: yaml.safe_load(p.read_text(encoding="utf-8")) for p in sorted((REPO_ROOT / "recipes").glob("*.yaml"))
}
EXAMPLES = int(os.environ.get("PUBLISHER_FUZZ_EXAMPLES", "300"))
SECONDS_PER_RUN = 20.0
OUTPUT_LINE = ("error: ", "warning: ")

Path_ = tuple[str | int, ...]


def _paths(node: Any, at: Path_ = ()) -> list[Path_]:
    """Every key and list item of a recipe, as a path from the top."""
    found = [at] if at else []
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*at, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _paths(value, (*at, index))
    return found


# Where a recipe's fields point besides those the recipes set, so the fuzzer reaches every bound.
EXTRA_FIELDS: list[Path_] = [
    ("name",),
    ("quantize", "threads"),
    ("quantize", "basename"),
    ("smoke", "max_tokens"),
    ("smoke", "context_length"),
    ("smoke", "gpu_layers"),
    ("smoke", "seed"),
    ("smoke", "quality", "text"),
    ("smoke", "quality", "context_length"),
    ("smoke", "quality", "max_chunks"),
    ("card", "template"),
    ("card", "partials_dir"),
    ("model", "context_length"),
    ("model", "allow_long_context"),
]

NASTY_TEXT = [
    "",
    ".",
    "..",
    "../..",
    "a/b",
    "/",
    "/proc",
    "/proc/cpuinfo",
    "/proc/self/mem",
    "/dev/zero",
    "/dev/urandom",
    "/dev/null",
    "/etc/passwd",
    "x" * 300,
    "tiny\n",
    "tiny ",
    "tiny.",
    "a\x00b",
    "\ud800",
    "name\udfff",
    "\u200fcibara\u200e",
    "\u202etxt.exe",
    "Ｔｉｎｙ",
    "{prompt}",
    "{{ 7*7 }}",
    "~",
    "~/x",
    "Q4_K_M",
    "-1",
]

BOUNDARY_INTS = [-(2**64), -(2**31), -2, -1, 0, 1, 15, 16, 255, 256, 4096, 4097, 10_000, 10_001, 2**20, 2**20 + 1]
BOUNDARY_INTS += [2**31, 2**32 - 2, 2**32 - 1, 2**32 + 1, 2**63, 2**64 + 1, 10**12]

VALUES = st.one_of(
    st.sampled_from(NASTY_TEXT),
    st.sampled_from(BOUNDARY_INTS),
    st.integers(),
    st.text(max_size=20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    st.lists(st.sampled_from(NASTY_TEXT + ["Q8_0", "en"]), max_size=3),
    st.dictionaries(st.sampled_from(["x", "prompt", "name"]), st.sampled_from(NASTY_TEXT), max_size=2),
)


def _set(data: Any, at: Path_, value: Any, *, delete: bool = False) -> None:
    node = data
    for part in at[:-1]:
        if isinstance(node, dict) and isinstance(part, str):
            node = node.setdefault(part, {})
            if not isinstance(node, dict | list):
                return
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        else:
            return
    last = at[-1]
    if isinstance(node, dict) and isinstance(last, str):
        if delete:
            node.pop(last, None)
        else:
            node[last] = value
    elif isinstance(node, list) and isinstance(last, int) and last < len(node):
        if delete:
            del node[last]
        else:
            node[last] = value


@st.composite
def mutated_recipes(draw: st.DrawFn) -> dict[str, Any]:
    """A real recipe with one to three values changed, dropped or added."""
    name = draw(st.sampled_from(sorted(RECIPES)))
    data = yaml.safe_load(yaml.safe_dump(RECIPES[name]))  # a deep copy
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.sampled_from(_paths(data) + EXTRA_FIELDS))
        kind = draw(st.sampled_from(["value", "value", "value", "delete", "unknown key"]))
        if kind == "delete":
            _set(data, at, None, delete=True)
        elif kind == "unknown key":
            _set(data, (*at[:-1], draw(st.sampled_from(["bogus", "\u200fname", "n\x00me"]))), 1)
        else:
            _set(data, at, draw(VALUES))
    return data


def _write(folder: Path, data: dict[str, Any], source: Path) -> Path:
    source_section = data.get("source")
    if isinstance(source_section, dict) and source_section.get("path") == "../.cache/models/SmolLM2-135M-Instruct":
        source_section["path"] = str(source)  # the demo's own path, made to work from the temp folder
    path = folder / "r.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def _check_run(code: int, stderr: str, seconds: float) -> None:
    assert code in (0, 1), (code, stderr)
    assert "Traceback" not in stderr, stderr
    assert "unexpected" not in stderr, stderr
    assert seconds < SECONDS_PER_RUN, seconds
    lines = [line for line in stderr.splitlines() if line.startswith(OUTPUT_LINE)]
    if code == 1:
        assert any(line.startswith("error: ") for line in lines), stderr


def _tree(root: Path) -> set[Path]:
    return set(root.rglob("*"))


@settings(max_examples=EXAMPLES, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=mutated_recipes())
def test_validate_answers_every_mutated_recipe_in_one_line_per_problem(data: dict[str, Any], tmp_path: Path) -> None:
    folder = tmp_path / f"v{time.monotonic_ns()}"
    folder.mkdir()
    source = tmp_path / "source"
    if not source.exists():
        tiny_source(source)
    path = _write(folder, data, source)
    before = _tree(tmp_path)
    started = time.perf_counter()
    code, stderr = run_cli("validate", str(path))
    _check_run(code, stderr, time.perf_counter() - started)
    assert _tree(tmp_path) == before, "validate wrote files"
    if code == 1:  # every problem line names the recipe file
        assert all(line.startswith(f"error: {path}") for line in stderr.splitlines() if line.startswith("error: "))


@settings(
    max_examples=max(EXAMPLES // 10, 10),
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=mutated_recipes())
def test_build_fetch_of_a_mutated_recipe_writes_only_its_build_folder(data: dict[str, Any], tmp_path: Path) -> None:
    run = tmp_path / f"b{time.monotonic_ns()}"
    run.mkdir()
    source = tiny_source(run / "source")
    path = _write(run, data, source)
    workdir = run / "work"
    before = _tree(tmp_path)
    started = time.perf_counter()
    code, stderr = run_cli("build", str(path), "--stages", "fetch", "--workdir", str(workdir))
    _check_run(code, stderr, time.perf_counter() - started)
    new = _tree(tmp_path) - before
    build_dirs = [p for p in new if p.parent == workdir]
    assert len(build_dirs) <= 1, build_dirs  # one build folder at most
    for written in new:
        assert written == workdir or (build_dirs and written.is_relative_to(build_dirs[0])), written
