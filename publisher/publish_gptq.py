"""Publishing the GPTQ variants: one repo (``<name>-GPTQ``), one branch per variant, one commit per branch.

The variant ``gptq.main`` names goes on ``main`` (and on no branch of its own); every branch carries the GPTQ card
(``gptq/README.md``, written by the gptq-card stage). Planning and committing are the GGUF
publisher's own (:func:`publisher.publish.execute_plan`), so publishing again sends only what changed.
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

from rich.console import Console

from publisher.errors import PublishError
from publisher.manifest import Artifact, Manifest, load_manifest, sha256_file, writes_confined_to
from publisher.publish import (
    BranchPlan,
    PlannedFile,
    PublishPlan,
    PublishResult,
    _hub_lock,
    build_dir_of,
    execute_plan,
)
from publisher.publishable import CARD_FILE
from publisher.recipe import Recipe
from publisher.targets import make_target
from publisher.targets.base import LocalFile, Target

CARD_PATH = "gptq/README.md"
LFS_SUFFIXES = (".safetensors", ".bin", ".pt")


def _passed_variants(recipe: Recipe, manifest: Manifest) -> list[Artifact]:
    """Every variant, tested and passed; anything else stops the publish with the command that fixes it."""
    assert recipe.gptq is not None
    found = []
    for branch in recipe.gptq.branches():
        artifact = manifest.gptq.get(branch)
        if artifact is None or artifact.status == "built":
            raise PublishError(f"GPTQ variant {branch} is not built and tested; run `publisher build {recipe.path}`")
        if artifact.status == "failed":
            raise PublishError(f"GPTQ variant {branch} failed its checks ({artifact.failure}); it is not published")
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


def plan_gptq_publish(recipe: Recipe, target: Target, *, workdir: Path) -> PublishPlan:
    """What publishing the GPTQ variants of ``recipe``'s build to ``target`` would do; changes nothing."""
    gptq = recipe.gptq
    if gptq is None:
        raise PublishError(f"{recipe.path}: the recipe has no gptq section")
    build_dir = build_dir_of(recipe, workdir)
    manifest = load_manifest(build_dir)
    if manifest is None:
        raise PublishError(f"no build in {build_dir}; run `publisher build {recipe.path}`")
    variants = _passed_variants(recipe, manifest)
    card = build_dir / CARD_PATH
    if not card.is_file():
        raise PublishError(f"{card} is missing; run `publisher build {recipe.path}` (stage gptq-card)")
    card_file = LocalFile(CARD_FILE, card, card.stat().st_size, sha256_file(card), "card")
    repo_id = gptq.repo(recipe.publish.repo_id)
    state = target.repo_state(repo_id)
    # As TheBloke's repos: the main variant lives on main only, every other on its own branch.
    wanted = {"main": gptq.main_branch} | {b: b for b in gptq.branches() if b != gptq.main_branch}
    by_branch = {a.quant_type: a for a in variants}
    branches = []
    for name, variant in wanted.items():
        artifact = by_branch[variant]
        files = [card_file, *_files(build_dir, artifact)]
        exists = name in state.branches
        remote = target.remote_files(repo_id, name, [f.path_in_repo for f in files]) if exists else {}
        plan = BranchPlan(name=name, exists=exists, head=state.branches.get(name))
        for local in files:
            held = remote.get(local.path_in_repo)
            plan.files.append(PlannedFile(local, held is not None and held.matches(local), artifact.quant_type))
        params = artifact.gptq
        plan.description = (
            f"GPTQ {params.bits}-bit, group size {params.group_size}, act order {params.act_order}, "
            f"damp {params.damp}, {params.samples} x {params.seq_len} tokens of {params.dataset}; {params.quantizer}."
            if params
            else ""
        )
        branches.append(plan)
    return PublishPlan(
        recipe=recipe,
        build_dir=build_dir,
        target=target.name,
        location=target.location(repo_id),
        repo_id=repo_id,
        private=recipe.publish.private,
        repo_exists=state.exists,
        title=f"Publish {recipe.build_name} GPTQ (recipe {manifest.recipe_sha256[:12]})",
        branches=branches,
    )


def publish_gptq(
    recipe: Recipe,
    *,
    workdir: Path,
    target: str | Target | None = None,
    hub_dir: Path | None = None,
    dry_run: bool = False,
    console: Console | None = None,
) -> PublishResult | PublishPlan:
    """Publish the GPTQ variants of ``recipe``'s build; with ``dry_run`` return the plan and change nothing."""
    from publisher.pipeline import lock_build

    out = console or Console(stderr=True)
    chosen = target if isinstance(target, Target) else make_target(target or recipe.publish.target, hub_dir=hub_dir)
    build_dir = build_dir_of(recipe, workdir)
    local_hub: Path | None = getattr(chosen, "hub_dir", None)
    with ExitStack() as stack:
        stack.enter_context(writes_confined_to(build_dir, *([local_hub] if local_hub else [])))
        if build_dir.is_dir():
            stack.enter_context(lock_build(build_dir))
        plan = plan_gptq_publish(recipe, chosen, workdir=workdir)
        if dry_run:
            return plan
        if local_hub is not None:
            stack.enter_context(_hub_lock(local_hub, out))
            plan = plan_gptq_publish(recipe, chosen, workdir=workdir)
        if plan.changes:
            chosen.check_ready()
        return execute_plan(plan, chosen, console=out)
