"""shard: split each tested file larger than the recipe's target takes into shards llama.cpp loads.

The limit is the target's ``max_file_bytes`` (the Hub's 50 GB for ``hf`` and for the local hub
that mirrors it). Shards are written and named by ``publisher.shard`` and listed on the artifact
(``Artifact.shards``), so the card stage after this one lists a split file as one entry with its
parts and publishing only reads them. The stage is part of a build only when a file needs it.
"""

from __future__ import annotations

import time

from publisher import targets
from publisher.manifest import Artifact
from publisher.shard import ensure_shards, recorded_shards
from publisher.stages import BuildContext, Stage, register


def _limit(ctx: BuildContext) -> int | None:
    return targets.max_file_bytes(ctx.recipe.publish.target)


def _current(ctx: BuildContext, artifact: Artifact, limit: int) -> bool:
    """The artifact's recorded shards are the ones its file needs under ``limit`` and are all there."""
    if artifact.size_bytes <= limit:
        return not artifact.shards
    shards = recorded_shards(ctx.build_dir, artifact, limit)
    return shards is not None and artifact.shards == [s.path for s in shards]


@register("shard")
class ShardStage(Stage):
    """Split the files that passed their checks and are over the target's per-file limit."""

    name = "shard"
    after = ("smoke",)

    def applies(self, ctx: BuildContext) -> bool:
        """Only builds with a tested file over the limit (or shards recorded earlier) have work here."""
        limit = _limit(ctx)
        return any(a.shards or (limit is not None and a.size_bytes > limit) for a in ctx.manifest.passed_artifacts())

    def is_done(self, ctx: BuildContext) -> bool:
        """Every tested file lists the shards it needs (none under the limit), and they are all there."""
        limit = _limit(ctx)
        if limit is None:
            return not any(a.shards for a in ctx.manifest.passed_artifacts())
        return all(_current(ctx, a, limit) for a in ctx.manifest.passed_artifacts())

    def run(self, ctx: BuildContext) -> None:
        """Split what needs it (reusing shards an earlier run wrote for the same file) and list them."""
        limit = _limit(ctx)
        for artifact in ctx.manifest.passed_artifacts():
            if limit is None:
                artifact.shards = []
                continue
            started = time.perf_counter()
            shards = ensure_shards(ctx.build_dir, artifact, limit)
            artifact.shards = [s.path for s in shards]
            if shards:
                ctx.console.print(
                    f"shard: {artifact.path} in {len(shards)} parts of at most {limit} bytes "
                    f"in {time.perf_counter() - started:.1f}s"
                )
