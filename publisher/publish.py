"""Publish a finished build: plan what a target lacks, then make one commit per branch.

``plan_publish`` reads the build's manifest and card, refuses builds that are not publishable
(``publisher.publishable``: no manifest, failed artifacts, nothing passed, files changed since
they were tested, a recipe that changed what the files say or how they were tested), re-renders
a card the recipe changed, assigns files (or the shards the build's shard stage split them into)
to branches (a type listed under ``publish.branches`` goes to that branch, every other type to
``main``, README.md to each) and asks the target which files it already holds with the same
content. ``execute_plan`` then creates the repo and branches that are missing, stores every file
(each hashed from its bytes and checked against the tested sha256) and only then commits what
differs, so publishing an unchanged build again makes no commit and moves no bytes, and a
card-only change commits README.md alone.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from publisher import __version__
from publisher.cards.imatrix import published_files
from publisher.errors import PublishError
from publisher.manifest import (
    DISK_FULL,
    MANIFEST_NAME,
    Artifact,
    Manifest,
    disk_full_error,
    guard_write,
    sha256_file,
    writes_confined_to,
)
from publisher.publishable import CARD_FILE, card_outdated, check_recipe_matches, load_publishable, refresh_card
from publisher.recipe import Recipe
from publisher.shard import recorded_shards
from publisher.targets import make_target, max_file_bytes
from publisher.targets.base import LocalFile, RepoState, Target


@dataclass(frozen=True)
class PlannedFile:
    """A file for one branch, and whether the target already holds it."""

    file: LocalFile
    present: bool
    quant_type: str | None = None  # None for the card


@dataclass
class BranchPlan:
    """What one branch gets."""

    name: str
    exists: bool
    head: str | None
    files: list[PlannedFile] = field(default_factory=list)
    description: str = ""

    @property
    def uploads(self) -> list[PlannedFile]:
        """Files the branch lacks or holds with other content."""
        return [f for f in self.files if not f.present]

    @property
    def upload_bytes(self) -> int:
        """Bytes of the files to send."""
        return sum(f.file.size for f in self.uploads)


@dataclass
class PublishPlan:
    """Everything publishing would do, computed without changing anything."""

    recipe: Recipe
    build_dir: Path
    target: str
    location: str
    repo_id: str
    private: bool
    repo_exists: bool
    title: str
    branches: list[BranchPlan]
    notes: list[str] = field(default_factory=list)

    @property
    def changes(self) -> bool:
        """True when publishing would create a repo or make at least one commit."""
        return not self.repo_exists or any(b.uploads for b in self.branches)


@dataclass(frozen=True)
class BranchResult:
    """What publishing did to one branch."""

    name: str
    commit: str | None
    files: int
    bytes: int
    repaired: int = 0  # files the branch held whose stored bytes were damaged or missing and were put back


@dataclass
class PublishResult:
    """The plan and what each branch got."""

    plan: PublishPlan
    branches: list[BranchResult]


# -- reading the build -------------------------------------------------------------------------


def build_dir_of(recipe: Recipe, workdir: Path) -> Path:
    """Where ``publisher build`` puts this recipe's outputs."""
    return workdir / recipe.build_name


def _manifest_sha(build_dir: Path) -> str:
    return sha256_file(build_dir / MANIFEST_NAME)


def _imatrix_files(recipe: Recipe, build_dir: Path, manifest: Manifest) -> list[LocalFile]:
    """The importance matrix (an LFS file) and, where its licence allows, its calibration text."""
    record = manifest.imatrix
    files = []
    for rel in published_files(recipe, manifest):
        path = build_dir / rel
        if record is None or not path.is_file():
            raise PublishError(f"{path}: missing, though the manifest lists it; run `publisher build` again")
        matrix = rel == record.path
        digest = record.sha256 if matrix else record.text_sha256 or ""
        files.append(LocalFile(path.name, path, path.stat().st_size, digest, "model" if matrix else "text"))
    return files


def _licence_files(build_dir: Path, manifest: Manifest) -> list[LocalFile]:
    """The licence files fetch copied into the build, published on every branch beside the card."""
    facts = manifest.source.facts if manifest.source is not None else None
    files = []
    for record in facts.licence_files if facts is not None else []:
        path = build_dir / (record.path or record.name)
        if not path.is_file():
            raise PublishError(f"{path}: missing, though the manifest lists it; run `publisher build` again")
        files.append(LocalFile(record.name, path, record.size, record.sha256, "text"))
    return files


def _model_files(build_dir: Path, artifact: Artifact, limit: int | None) -> list[LocalFile]:
    """The files one artifact publishes as: itself, or the shards the build split it into."""
    path = build_dir / artifact.path
    if artifact.shards:
        shards = recorded_shards(build_dir, artifact)
        if shards is None or [s.path for s in shards] != artifact.shards:
            raise PublishError(f"{path}: its shards are missing or changed; run `publisher build` again")
        oversize = [s for s in shards if limit is not None and s.size > limit]
        if not oversize:
            return [LocalFile(Path(s.path).name, build_dir / s.path, s.size, s.sha256, "model") for s in shards]
    if limit is not None and (artifact.shards or artifact.size_bytes > limit):
        raise PublishError(
            f"{path}: the target takes files of at most {limit} bytes and the build did not split it to that size; "
            "run `publisher build` again (its shard stage splits files for the recipe's target)"
        )
    return [LocalFile(path.name, path, artifact.size_bytes, artifact.sha256, "model")]


# -- planning ----------------------------------------------------------------------------------


def _describe(recipe: Recipe, manifest: Manifest, manifest_sha: str, files: list[PlannedFile]) -> str:
    lines = [
        f"Recipe: {recipe.path.name if recipe.path else recipe.build_name} (sha256 {manifest.recipe_sha256})",
        f"Build: {manifest.build_name} (manifest sha256 {manifest_sha})",
        f"Published by publisher {__version__}"
        + (f" with llama.cpp {manifest.tools['llama.cpp']}" if "llama.cpp" in manifest.tools else ""),
        "",
        "Files:",
    ]
    for planned in files:
        f = planned.file
        lines.append(f"- {f.path_in_repo} ({f.size} bytes" + (f", sha256 {f.sha256})" if f.lfs else ")"))
    return "\n".join(lines)


def plan_branch(
    target: Target, repo_id: str, state: RepoState, name: str, wanted: list[tuple[LocalFile, str | None]]
) -> BranchPlan:
    """Which of ``wanted`` (each file with the quant type it belongs to) branch ``name`` lacks or holds otherwise."""
    exists = name in state.branches
    remote = target.remote_files(repo_id, name, [f.path_in_repo for f, _ in wanted]) if exists else {}
    plan = BranchPlan(name=name, exists=exists, head=state.branches.get(name))
    for local, quant_type in wanted:
        held = remote.get(local.path_in_repo)
        plan.files.append(PlannedFile(local, held is not None and held.matches(local), quant_type))
    return plan


def plan_publish(
    recipe: Recipe,
    target: Target,
    *,
    workdir: Path,
    dry_run: bool = False,
) -> PublishPlan:
    """Work out what publishing the build of ``recipe`` to ``target`` would do; it never changes the target."""
    build_dir = build_dir_of(recipe, workdir)
    manifest, passed, card = load_publishable(recipe, build_dir)
    notes: list[str] = []
    check_recipe_matches(recipe, build_dir, manifest, passed)
    if dry_run and card_outdated(recipe, build_dir, manifest):
        notes.append("the recipe changed what the card shows; publishing renders README.md again first")
    elif not dry_run and refresh_card(recipe, build_dir, manifest):
        notes.append("the recipe changed what the card shows: re-rendered README.md, which this publish sends")
        card = build_dir / str(manifest.card.get("path") or CARD_FILE)

    repo_id = recipe.publish.repo_id
    state = target.repo_state(repo_id)
    if state.exists and state.private is not None and state.private != recipe.publish.private:
        seen = "private" if state.private else "public"
        notes.append(f"{repo_id} exists and is {seen}; publishing does not change a repo's visibility")

    card_file = LocalFile(CARD_FILE, card, card.stat().st_size, sha256_file(card), "card")
    by_branch: dict[str, list[tuple[LocalFile, str | None]]] = {"main": []}
    for branch in recipe.publish.branches:
        by_branch[branch.name] = []
    branch_of = recipe.publish.branch_of()
    limit = max_file_bytes(target.name)
    for artifact in passed:
        for local in _model_files(build_dir, artifact, limit):
            by_branch[branch_of.get(artifact.quant_type, "main")].append((local, artifact.quant_type))

    by_branch["main"].extend((local, None) for local in _imatrix_files(recipe, build_dir, manifest))
    licence_files = _licence_files(build_dir, manifest)

    manifest_sha = _manifest_sha(build_dir)
    title = (
        f"Publish {recipe.build_name} (recipe {manifest.recipe_sha256[:12]}, build {manifest_sha[:12]})"
        if manifest.recipe_sha256
        else f"Publish {recipe.build_name} (build {manifest_sha[:12]})"
    )
    branches: list[BranchPlan] = []
    for name, models in by_branch.items():
        if name != "main" and not models and name not in state.branches:
            continue  # a declared branch with nothing built for it yet
        wanted = [(card_file, None), *[(f, None) for f in licence_files], *models]
        plan = plan_branch(target, repo_id, state, name, wanted)
        plan.description = _describe(recipe, manifest, manifest_sha, plan.uploads)
        branches.append(plan)
    return PublishPlan(
        recipe=recipe,
        build_dir=build_dir,
        target=target.name,
        location=target.location(repo_id),
        repo_id=repo_id,
        private=recipe.publish.private,
        repo_exists=state.exists,
        title=title,
        branches=branches,
        notes=notes,
    )


# -- doing it ----------------------------------------------------------------------------------


def execute_plan(plan: PublishPlan, target: Target, *, console: Console | None = None) -> PublishResult:
    """Publish the plan as one release: every branch is created and every file stored before any commit.

    Files are hashed from their bytes while the target stores or sends them (``Target.store_files``),
    so a file that is not what was tested stops the release before anything refers to it. A branch
    whose commit still fails after another branch was committed ends in an error that names what is
    published and what is not; publishing again commits only the rest.
    """
    out = console or Console(stderr=True)
    if not plan.repo_exists:
        target.create_repo(plan.repo_id, private=plan.private)
        out.print(f"created {escape(plan.location)}" + (" (private)" if plan.private else ""), highlight=False)
    changing = [b for b in plan.branches if b.uploads]
    for branch in changing:
        if not branch.exists and branch.name != "main":
            target.create_branch(plan.repo_id, branch.name)
    for branch in changing:
        target.store_files(plan.repo_id, branch.name, [f.file for f in branch.uploads])
    done: dict[str, BranchResult] = {}
    for branch in changing:
        try:
            commit = target.commit(
                plan.repo_id,
                branch.name,
                [f.file for f in branch.uploads],
                title=plan.title,
                description=branch.description,
                parent=branch.head if branch.exists else None,
            )
        except PublishError as err:
            if not any(r.commit for r in done.values()):
                raise
            raise PublishError(_partial_release(plan, done, branch.name, err)) from None
        if commit == branch.head:  # the branch held every file; only the target's stored bytes were repaired
            done[branch.name] = BranchResult(branch.name, None, 0, 0, repaired=len(branch.uploads))
        else:
            done[branch.name] = BranchResult(branch.name, commit, len(branch.uploads), branch.upload_bytes)
    results = [done.get(b.name) or BranchResult(b.name, None, 0, 0) for b in plan.branches]
    return PublishResult(plan, results)


def _partial_release(plan: PublishPlan, done: dict[str, BranchResult], failed: str, err: PublishError) -> str:
    published = ", ".join(f"{name} ({r.commit[:12]})" for name, r in done.items() if r.commit)
    missing = [b.name for b in plan.branches if b.uploads and b.name not in done]
    return (
        f"release incomplete at {plan.location}: published {published}; not published: {', '.join(missing)} "
        f"({failed}: {err}); run publish again to publish the rest"
    )


def publish(
    recipe: Recipe,
    *,
    workdir: Path,
    target: str | Target | None = None,
    hub_dir: Path | None = None,
    hard_links: bool = False,
    dry_run: bool = False,
    console: Console | None = None,
) -> PublishResult | PublishPlan:
    """Publish the build of ``recipe``; with ``dry_run`` return the plan and change nothing.

    It holds the build's lock (no build may rewrite files while they are published), and for the
    local target the hub's lock, so two publishes into one hub take turns. It writes only into the
    build folder (a card the recipe changed) and the hub folder.
    """
    from publisher.pipeline import lock_build

    out = console or Console(stderr=True)
    chosen = (
        target
        if isinstance(target, Target)
        else make_target(target or recipe.publish.target, hub_dir=hub_dir, hard_links=hard_links)
    )
    build_dir = build_dir_of(recipe, workdir)
    local_hub: Path | None = getattr(chosen, "hub_dir", None)
    with ExitStack() as stack:
        stack.enter_context(writes_confined_to(build_dir, *([local_hub] if local_hub else [])))
        if build_dir.is_dir():  # else plan_publish says there is no build, without making its folder
            stack.enter_context(lock_build(build_dir))
        plan = plan_publish(recipe, chosen, workdir=workdir, dry_run=dry_run)
        if dry_run:
            return plan
        if local_hub is not None:  # after the refusals, so a refused publish leaves no hub folder behind
            stack.enter_context(_hub_lock(local_hub, out))
            first = plan
            plan = plan_publish(recipe, chosen, workdir=workdir)  # what it is now
            plan.notes = [*first.notes, *(note for note in plan.notes if note not in first.notes)]  # what it did
        if plan.changes:
            chosen.check_ready()
        try:
            return execute_plan(plan, chosen, console=out)
        except (OSError, PublishError) as err:
            # a write here, or git's own (it says so in its message), on a full hub disk
            full = err.errno in DISK_FULL if isinstance(err, OSError) else "No space left on device" in str(err)
            if full and local_hub is not None:
                raise disk_full_error(local_hub) from None  # hard links need no room, so no size is known
            raise


HUB_LOCK_NAME = ".publisher.lock"


@contextmanager
def _hub_lock(hub: Path, console: Console) -> Iterator[None]:
    """Hold the local hub's lock; a publish already in it is waited for (git's own locks would refuse)."""
    hub.mkdir(parents=True, exist_ok=True)
    with guard_write(hub / HUB_LOCK_NAME).open("a") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            console.print(f"waiting for another publish into {escape(str(hub))} to finish", highlight=False)
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
