"""Whether a build may be published as the recipe stands now, and what to fix when it may not.

A build is publishable when its manifest lists files that passed their checks, those files and
the card are still the ones that were tested and rendered, and the recipe has not changed since
in a way that touches them:

- what the files say: the ``general.*`` metadata the recipe puts into every GGUF (name, author,
  licence, repo URL, base models, tags...; ``stages.convert.gguf_metadata``) is read back from
  each published file and compared, and each file's name must be the one the recipe gives it;
- what was tested: each file's smoke checks are recorded with a fingerprint of the settings they
  ran under (``stages.smoke.settings``: prompts and expectations, template, quality settings);
  the fingerprint the recipe gives now must be the recorded one.

Either difference refuses the publish with the fix (``publisher build`` first). A change that
reaches only the card (notes, links, card template) re-renders README.md and says so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from publisher.errors import PublishError
from publisher.hashes import cache_for
from publisher.manifest import MANIFEST_NAME, Artifact, Manifest, load_manifest, sha256_file
from publisher.recipe import Recipe

CARD_FILE = "README.md"


def _size_and_cached_hash(build_dir: Path, artifact: Artifact) -> None:
    """An early refusal from what the build's hash cache knows; the targets hash every byte when storing."""
    path = build_dir / artifact.path
    if not path.is_file():
        raise PublishError(f"{path}: missing, though the manifest lists it; run `publisher build` again")
    if path.stat().st_size != artifact.size_bytes:
        raise PublishError(f"{path}: size changed since it was tested; run `publisher build` again")
    if cache_for(build_dir).sha256(path) != artifact.sha256:
        raise PublishError(f"{path}: content changed since it was tested (sha256 differs); run `publisher build` again")


def load_publishable(recipe: Recipe, build_dir: Path) -> tuple[Manifest, list[Artifact], Path]:
    """The manifest, the artifacts to publish and the card, or a ``PublishError`` saying why not."""
    manifest = load_manifest(build_dir)
    where = recipe.path or recipe.build_name
    if manifest is None:
        raise PublishError(f"{build_dir / MANIFEST_NAME}: no build manifest; run `publisher build {where}` first")
    failed = manifest.failed_artifacts()
    if failed:
        names = ", ".join(f"{a.quant_type} ({a.failure or 'failed'})" for a in failed)
        raise PublishError(
            f"{build_dir}: refusing to publish, {len(failed)} artifact(s) failed their checks: {names}; "
            "fix the recipe or drop those types and build again"
        )
    passed = manifest.passed_artifacts()
    if not passed:
        raise PublishError(f"{build_dir}: no artifact has passed its smoke tests; run `publisher build {where}` first")
    untested = [
        t for t in recipe.quantize.names if t not in manifest.artifacts or manifest.artifacts[t].status != "passed"
    ]
    if untested:
        raise PublishError(
            f"{build_dir}: refusing to publish, {', '.join(untested)} in quantize.types "
            f"{'has' if len(untested) == 1 else 'have'} not been built and tested; run `publisher build {where}` first"
        )
    card = build_dir / str(manifest.card.get("path") or CARD_FILE)
    if not card.is_file():
        raise PublishError(f"{card}: no model card; run `publisher card {where}` or `publisher build {where}`")
    recorded = manifest.card.get("sha256")
    if isinstance(recorded, str) and recorded != sha256_file(card):
        raise PublishError(
            f"{card}: edited after the build rendered it; run `publisher card {where}` to render it again"
        )
    for artifact in passed:
        _size_and_cached_hash(build_dir, artifact)
    return manifest, passed, card


# -- the recipe against the build --------------------------------------------------------------


def expected_gguf_metadata(recipe: Recipe) -> dict[str, Any]:
    """The metadata keys and values the converter writes from the recipe, as a GGUF reader shows them."""
    from publisher.stages.convert import gguf_metadata

    expected: dict[str, Any] = {}
    for key, value in gguf_metadata(recipe).items():
        # The converter writes lists of repos as counted, numbered keys.
        if key in ("general.base_models", "general.datasets"):
            prefix = "general.base_model" if key == "general.base_models" else "general.dataset"
            expected[f"{prefix}.count"] = len(value)
            for index, entry in enumerate(value):
                for field, text in entry.items():
                    expected[f"{prefix}.{index}.{field}"] = text
        else:
            expected[key] = value
    return expected


def _metadata_differences(recipe: Recipe, path: Path) -> list[str]:
    from publisher import gguf_info
    from publisher.errors import ManifestError

    expected = expected_gguf_metadata(recipe)
    try:
        found = gguf_info.metadata(path, list(expected))
    except ManifestError as err:
        raise PublishError(str(err)) from None
    return [key for key, value in expected.items() if found.get(key) != value]


def _smoke_settings_changed(recipe: Recipe, build_dir: Path, manifest: Manifest, artifact: Artifact) -> bool:
    from publisher.stages import BuildContext
    from publisher.stages.smoke import settings, work_key

    tested = manifest.stages.get(work_key(artifact.quant_type))
    if tested is None:
        return False  # a build from before smoke results were recorded per file: nothing to compare
    return settings(BuildContext(recipe=recipe, build_dir=build_dir, manifest=manifest), artifact) != tested.fingerprint


def check_recipe_matches(recipe: Recipe, build_dir: Path, manifest: Manifest, passed: list[Artifact]) -> None:
    """Refuse, with the fix, when the recipe now says something the files or their tests do not."""
    where = recipe.path or recipe.build_name
    fix = f"run `publisher build {where}` first, then publish"
    for artifact in passed:
        wanted = recipe.artifact_filename(artifact.quant_type)
        if Path(artifact.path).name != wanted:
            raise PublishError(
                f"{build_dir / artifact.path}: the recipe now names this file {wanted} "
                f"(quantize.basename or model.name changed after the build); {fix}"
            )
        differing = _metadata_differences(recipe, build_dir / artifact.path)
        if differing:
            raise PublishError(
                f"{build_dir / artifact.path}: the recipe changed after the build and the file's metadata no longer "
                f"matches it ({', '.join(differing)}: licence, names, repo id or card data); {fix}"
            )
    untested = [a.quant_type for a in passed if _smoke_settings_changed(recipe, build_dir, manifest, a)]
    if untested:
        raise PublishError(
            f"{build_dir}: {', '.join(untested)} passed smoke checks other than the ones the recipe asks for now "
            f"(smoke prompts, expectations, prompt template, quality settings or tool versions changed); {fix}"
        )


def card_outdated(recipe: Recipe, build_dir: Path, manifest: Manifest) -> bool:
    """True when the recipe changed what the card shows since the card stage rendered it.

    Only cards the card stage rendered (their manifest entry has a fingerprint) are compared.
    """
    recorded = manifest.card.get("fingerprint")
    if not isinstance(recorded, str):
        return False
    from publisher.stages import BuildContext
    from publisher.stages.card import card_fingerprint

    return card_fingerprint(BuildContext(recipe=recipe, build_dir=build_dir, manifest=manifest)) != recorded


def refresh_card(recipe: Recipe, build_dir: Path, manifest: Manifest) -> bool:
    """Re-render README.md when ``card_outdated``; True when its text changed."""
    if not card_outdated(recipe, build_dir, manifest):
        return False
    from publisher.stages import BuildContext, get_stage, load_stages

    before = manifest.card.get("sha256")
    ctx = BuildContext(recipe=recipe, build_dir=build_dir, manifest=manifest)
    load_stages()
    get_stage("card").run(ctx)
    manifest.recipe_sha256 = recipe.fingerprint()  # checked above: the files and their tests still match it
    ctx.save()
    return manifest.card.get("sha256") != before
