"""fetch: find or download the source model and record exactly what conversion will read.

A local folder (``source.path`` or ``--source-dir``) is used in place. Otherwise the files the
converter needs, plus README.md for the card, are downloaded from ``source.repo`` at
``source.revision`` into ``<build>/source`` and the commit the revision resolved to is recorded,
with the facts the card needs (parameter count, shape from config.json, the original README;
see :mod:`publisher.source`), so that nothing after fetch opens the source folder again.
Before anything is downloaded or written, free disk is checked against an estimate of what the
build will need, and the build is refused with the numbers when it does not fit.
"""

from __future__ import annotations

import fnmatch
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from publisher.errors import DiskSpaceError, SourceError
from publisher.formats import gguf_quants
from publisher.licences import is_licence_file
from publisher.manifest import SourceRecord, fingerprint, guard_write
from publisher.report import format_bytes
from publisher.source import licence_paths, read_facts, safetensors_stats, wanted_files
from publisher.stages import BuildContext, Stage, register

# Bytes per parameter of the converter's output types.
OUTTYPE_BYTES = {"f32": 4.0, "f16": 2.0, "bf16": 2.0, "q8_0": 34 / 32}
# Slack on top of the estimate: metadata, the vocabulary, rounding, a little room to breathe.
DISK_MARGIN = 1.03
DISK_SLACK_BYTES = 64 * 1024 * 1024
# Where fetch keeps the licence files it publishes, inside the build folder.
LICENCES_DIR = "licences"


# ---------------------------------------------------------------------------------------------
# Disk check
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DiskPlan:
    """Bytes a build still has to write, by what writes them."""

    download: int = 0
    reference: int = 0
    reference_type: str = "F16"
    quants: dict[str, int] = field(default_factory=dict)
    imatrix: int = 0  # the importance matrix and the calibration text beside it

    @property
    def total(self) -> int:
        """Everything, with a margin for metadata and rounding."""
        raw = self.download + self.reference + sum(self.quants.values()) + self.imatrix
        return int(raw * DISK_MARGIN) + DISK_SLACK_BYTES if raw else 0


def estimate(
    parameters: int, outtype: str, types: list[str], *, download: int = 0, variants: dict[str, str] | None = None
) -> DiskPlan:
    """Estimate the bytes of the reference GGUF and each quant from the parameter count.

    ``variants`` maps a variant's name (Q4_K_L) to the catalogue type it starts from.
    """
    base = variants or {}
    return DiskPlan(
        download=download,
        reference=int(parameters * OUTTYPE_BYTES[outtype]),
        reference_type=outtype.upper(),
        quants={t: int(parameters * gguf_quants.lookup(base.get(t, t)).nominal_bpw / 8) for t in types},
    )


def _variants(ctx: BuildContext) -> dict[str, str]:
    return {name: ctx.recipe.quantize.variant(name).type for name in ctx.recipe.quantize.names}


def free_bytes(where: Path) -> int:
    """Free bytes on the file system holding ``where`` (or its nearest existing parent)."""
    probe = where
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return shutil.disk_usage(probe).free


def check_disk(where: Path, plan: DiskPlan, *, free: int | None = None) -> None:
    """Raise ``DiskSpaceError`` with the numbers when ``plan`` does not fit in the free space at ``where``."""
    available = free_bytes(where) if free is None else free
    if plan.total <= available:
        return
    parts = []
    if plan.download:
        parts.append(f"download {format_bytes(plan.download, 'GB')}")
    if plan.reference:
        parts.append(f"{plan.reference_type} reference {format_bytes(plan.reference, 'GB')}")
    if plan.imatrix:
        parts.append(f"importance matrix and calibration text {format_bytes(plan.imatrix, 'GB')}")
    if plan.quants:
        parts.append("quants " + ", ".join(f"{t} {format_bytes(b, 'GB')}" for t, b in plan.quants.items()))
    raise DiskSpaceError(
        f"not enough free disk at {where}: the build needs about {format_bytes(plan.total, 'GB')} ({'; '.join(parts)}) "
        f"but {format_bytes(available, 'GB')} is free; free some space, build fewer types with --only, "
        "or use --workdir on a larger disk"
    )


def check_build_disk(ctx: BuildContext) -> None:
    """Check free disk for the outputs not yet on disk (called once the source is known)."""
    source = ctx.manifest.source
    if source is None or not source.parameters:
        return
    recipe = ctx.recipe
    ref_exists = (ctx.build_dir / recipe.artifact_filename(recipe.convert.outtype.upper())).exists()
    missing = [t for t in ctx.selected_types() if not (ctx.build_dir / recipe.artifact_filename(t)).exists()]
    plan = estimate(source.parameters, recipe.convert.outtype, missing, variants=_variants(ctx))
    if ref_exists:
        plan = DiskPlan(quants=plan.quants)
    check_disk(ctx.build_dir, replace(plan, imatrix=_imatrix_bytes(ctx)))


def _imatrix_bytes(ctx: BuildContext) -> int:
    """The imatrix stage's two files when they are still to be written (see :mod:`publisher.plan`)."""
    from publisher.plan import imatrix_files

    if ctx.recipe.imatrix is None or ctx.manifest.source is None or ctx.manifest.source.facts is None:
        return 0
    arch = ctx.manifest.source.facts.architecture
    files = imatrix_files(ctx.recipe, arch) if arch is not None else {}
    return sum(size for name, size in files.items() if not (ctx.build_dir / name).exists())


# ---------------------------------------------------------------------------------------------
# The stage
# ---------------------------------------------------------------------------------------------


def _local_dir(ctx: BuildContext) -> Path | None:
    if ctx.source_dir_override is not None:
        return ctx.source_dir_override.expanduser().resolve()
    path = ctx.recipe.source_dir()
    return path.resolve() if path is not None else None


def _settings(ctx: BuildContext) -> str:
    local = _local_dir(ctx)
    source = ctx.recipe.source
    listed = list(ctx.recipe.model.license_files)
    return fingerprint("fetch", str(local) if local else None, None if local else source.repo, source.revision, *listed)


def _local_commit(folder: Path) -> str | None:
    """The commit a folder made by ``snapshot_download(local_dir=...)`` was fetched at, when it says."""
    meta = folder / ".cache" / "huggingface" / "download" / "config.json.metadata"
    if meta.is_file():
        first = meta.read_text(encoding="utf-8").splitlines()[:1]
        if first and len(first[0]) == 40:
            return first[0]
    return None


def check_source_folder(folder: Path) -> list[Path]:
    """The files of ``folder`` conversion reads; ``SourceError`` when the folder cannot be a model."""
    if not folder.is_dir():
        raise SourceError(
            f"source folder {folder} does not exist; fix source.path (or --source-dir) or fetch the model"
        )
    names = [p.name for p in folder.iterdir() if p.is_file()]
    if "config.json" not in names:
        raise SourceError(f"{folder}: no config.json; point source.path at a Hugging Face model folder")
    files = wanted_files(names)
    if not any(fnmatch.fnmatch(n, "*.safetensors") or fnmatch.fnmatch(n, "pytorch_model*.bin") for n in files):
        raise SourceError(f"{folder}: no *.safetensors or pytorch_model*.bin weights; the download is incomplete")
    return [folder / n for n in files]


def _download(ctx: BuildContext) -> tuple[Path, str | None]:
    """Download the needed files of ``source.repo``; return the folder and the resolved commit."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    from publisher.hub import HubClient

    source = ctx.recipe.source
    repo = source.repo
    assert repo is not None  # the recipe schema guarantees repo or path
    dest = ctx.build_dir / "source"
    hub = HubClient(
        error=SourceError,
        hints={
            GatedRepoError: "the repo is gated; accept its terms on the Hub and log in (hf auth login)",
            RevisionNotFoundError: "no such branch, tag or commit; fix source.revision",
            RepositoryNotFoundError: "repo not found (or private); fix source.repo or log in",
        },
        retry_hint="check the network; files already downloaded are not fetched again when you re-run",
        offline_hint="HF_HUB_OFFLINE is set; unset it to download source.repo, or give source.path",
    )
    where = f"source.repo {source.repo}@{source.revision}"
    info = hub.call(where, lambda: hub.api.model_info(repo, revision=source.revision, files_metadata=True))
    siblings = {s.rfilename: s.size or 0 for s in info.siblings or []}
    names = wanted_files(list(siblings))
    listed = set(ctx.recipe.model.license_files)
    names += [n for n in siblings if "/" not in n and n not in names and (is_licence_file(n) or n in listed)]
    have = {n: (dest / n).stat().st_size for n in names if (dest / n).is_file()}
    to_get = sum(size for n, size in siblings.items() if n in names and have.get(n) != size)
    weights = sum(size for n, size in siblings.items() if n in names and n.endswith(".safetensors"))
    params = info.safetensors.total if info.safetensors else weights // 2
    check_disk(
        ctx.build_dir,
        estimate(params, ctx.recipe.convert.outtype, ctx.selected_types(), download=to_get, variants=_variants(ctx)),
    )
    ctx.console.print(
        f"fetching {len(names)} files of {source.repo} at {info.sha} ({format_bytes(to_get, 'GB')} to download)"
    )

    def download() -> str:
        return str(
            snapshot_download(
                repo,
                revision=info.sha,
                allow_patterns=names,
                local_dir=dest,
                tqdm_class=None,
                endpoint=hub.endpoint,
                token=hub.token,
            )
        )

    return Path(hub.call(where, download)), info.sha


@register("fetch")
class FetchStage(Stage):
    """Locate or download the source and hash what conversion will read."""

    name = "fetch"

    def finish(self, ctx: BuildContext) -> None:
        """Once the source is known, and before anything large is written: is there room for the build?"""
        check_build_disk(ctx)

    def is_done(self, ctx: BuildContext) -> bool:
        """The same source settings were fetched and the recorded files still hash right."""
        done = ctx.manifest.stages.get(self.name)
        source = ctx.manifest.source
        if done is None or source is None or done.fingerprint != _settings(ctx) or not source.files:
            return False
        return ctx.files_match(source.files, base=Path(source.path)) and ctx.files_match(done.outputs)

    def run(self, ctx: BuildContext) -> None:
        """Find or download the source, hash its files, and record its parameters, shape and own card."""
        started = time.perf_counter()
        ctx.forget(self.name)
        local = _local_dir(ctx)
        commit: str | None
        if local is not None:
            folder, commit = local, _local_commit(local)
        else:
            folder, commit = _download(ctx)
        files = check_source_folder(folder)
        with ctx.console.status(f"hashing {len(files)} source files"):
            hashes = {p.name: ctx.hash_file(p) for p in files}
        stats = safetensors_stats([p for p in files if p.suffix == ".safetensors"])
        source = ctx.recipe.source
        licences = licence_paths(folder, ctx.recipe)
        facts = read_facts(folder, licences)
        copies = _copy_licence_files(ctx.build_dir, licences)
        facts.licence_files = [
            record.model_copy(update={"path": str(copy.relative_to(ctx.build_dir))})
            for record, copy in zip(facts.licence_files, copies, strict=True)
        ]
        ctx.manifest.source = SourceRecord(
            repo=source.repo,
            revision=source.revision if source.repo else None,
            commit=commit,
            path=str(folder),
            parameters=stats.parameters or None,
            files=hashes,
            facts=facts,
        )
        ctx.record(self.name, _settings(ctx), copies, time.perf_counter() - started)


def _copy_licence_files(build_dir: Path, paths: list[Path]) -> list[Path]:
    """Copies of the licence files in ``<build>/licences/``, so the build holds everything it publishes."""
    folder = guard_write(build_dir / LICENCES_DIR)
    if folder.is_dir():
        shutil.rmtree(folder)  # files the source no longer has are not published again
    if not paths:
        return []
    folder.mkdir(parents=True)
    copies = []
    for path in paths:
        copy = guard_write(folder / path.name)
        shutil.copyfile(path, copy)
        copies.append(copy)
    return copies
