"""Publishing a folder format's variants: one repo (``<name>-GPTQ``, ``<name>-AWQ``), one branch per variant.

The variant the section's ``main`` names goes on ``main`` (and on no branch of its own); every branch carries
the format's card (``<format>/README.md``, written by its card stage), and gets one commit. Planning and
committing are the GGUF publisher's own (:func:`publisher.publish.execute_plan`), so publishing again sends
only what changed.
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

from rich.console import Console

from publisher.errors import PublishError
from publisher.folder_formats import FolderFormat
from publisher.manifest import Artifact, Manifest, load_manifest, sha256_file, writes_confined_to
from publisher.publish import (
    PublishPlan,
    PublishResult,
    _hub_lock,
    build_dir_of,
    execute_plan,
    plan_branch,
)
from publisher.publishable import CARD_FILE
from publisher.recipe import Recipe
from publisher.targets import make_target
from publisher.targets.base import LocalFile, Target

LFS_SUFFIXES = (".safetensors", ".bin", ".pt")


def _passed_variants(recipe: Recipe, manifest: Manifest, fmt: FolderFormat) -> list[Artifact]:
    """Every variant, tested and passed; anything else stops the publish with the command that fixes it."""
    section = fmt.section(recipe)
    assert section is not None
    found = []
    for branch in section.branches():
        artifact = fmt.records(manifest).get(branch)
        if artifact is None or artifact.status == "built":
            raise PublishError(
                f"{fmt.label} variant {branch} is not built and tested; run `publisher build {recipe.path}`"
            )
        if artifact.status == "failed":
            raise PublishError(
                f"{fmt.label} variant {branch} failed its checks ({artifact.failure}); it is not published"
            )
        found.append(artifact)
    return found


def _files(build_dir: Path, artifact: Artifact) -> list[LocalFile]:
    folder = build_dir / artifact.path
    return [
        LocalFile(
            name,
            folder / name,
            (folder / name).stat().st_size,
            digest,
            "model" if name.endswith(LFS_SUFFIXES) else "text",
        )
        for name, digest in artifact.files.items()
    ]


def plan_folder_publish(recipe: Recipe, fmt: FolderFormat, target: Target, *, workdir: Path) -> PublishPlan:
    """What publishing the ``fmt`` variants of ``recipe``'s build to ``target`` would do; changes nothing."""
    section = fmt.section(recipe)
    if section is None:
        raise PublishError(f"{recipe.path}: the recipe has no {fmt.name} section")
    build_dir = build_dir_of(recipe, workdir)
    manifest = load_manifest(build_dir)
    if manifest is None:
        raise PublishError(f"no build in {build_dir}; run `publisher build {recipe.path}`")
    variants = _passed_variants(recipe, manifest, fmt)
    card = build_dir / fmt.card_path
    if not card.is_file():
        raise PublishError(f"{card} is missing; run `publisher build {recipe.path}` (stage {fmt.name}-card)")
    card_file = LocalFile(CARD_FILE, card, card.stat().st_size, sha256_file(card), "card")
    repo_id = section.repo(recipe.publish.repo_id)
    state = target.repo_state(repo_id)
    # As TheBloke's repos: the main variant lives on main only, every other on its own branch.
    wanted = {"main": section.main_branch} | {b: b for b in section.branches() if b != section.main_branch}
    by_branch = {a.quant_type: a for a in variants}
    branches = []
    for name, variant in wanted.items():
        artifact = by_branch[variant]
        files = [card_file, *_files(build_dir, artifact)]
        plan = plan_branch(target, repo_id, state, name, [(f, artifact.quant_type) for f in files])
        params = fmt.parameters(artifact)
        plan.description = params.summary() if params else ""
        branches.append(plan)
    return PublishPlan(
        recipe=recipe,
        build_dir=build_dir,
        target=target.name,
        location=target.location(repo_id),
        repo_id=repo_id,
        private=recipe.publish.private,
        repo_exists=state.exists,
        title=f"Publish {recipe.build_name} {fmt.label} (recipe {manifest.recipe_sha256[:12]})",
        branches=branches,
    )


def publish_folders(
    recipe: Recipe,
    fmt: FolderFormat,
    *,
    workdir: Path,
    target: str | Target | None = None,
    hub_dir: Path | None = None,
    dry_run: bool = False,
    console: Console | None = None,
) -> PublishResult | PublishPlan:
    """Publish the ``fmt`` variants of ``recipe``'s build; with ``dry_run`` return the plan and change nothing."""
    from publisher.pipeline import lock_build

    out = console or Console(stderr=True)
    chosen = target if isinstance(target, Target) else make_target(target or recipe.publish.target, hub_dir=hub_dir)
    build_dir = build_dir_of(recipe, workdir)
    local_hub: Path | None = getattr(chosen, "hub_dir", None)
    with ExitStack() as stack:
        stack.enter_context(writes_confined_to(build_dir, *([local_hub] if local_hub else [])))
        if build_dir.is_dir():
            stack.enter_context(lock_build(build_dir))
        plan = plan_folder_publish(recipe, fmt, chosen, workdir=workdir)
        if dry_run:
            return plan
        if local_hub is not None:
            stack.enter_context(_hub_lock(local_hub, out))
            plan = plan_folder_publish(recipe, fmt, chosen, workdir=workdir)
        if plan.changes:
            chosen.check_ready()
        return execute_plan(plan, chosen, console=out)
