"""card: render ``<build_dir>/README.md`` from the recipe and the manifest, check it, record it.

The fingerprint covers the recipe, the contents of every template that can take part, and the
data the card shows (artifacts, measurements, tool versions, the original card), so editing only
a template re-runs only this stage.
"""

from __future__ import annotations

import time

from publisher import cards
from publisher.errors import CardError
from publisher.manifest import fingerprint, sha256_file, write_text_atomic
from publisher.stages import BuildContext, Stage, register

CARD_NAME = "README.md"
WORK_KEY = "card"


def card_fingerprint(ctx: BuildContext) -> str:
    """Fingerprint of everything the rendered card depends on."""
    recipe = ctx.recipe
    templates = {label: sha256_file(path) for label, path in cards.template_files(recipe).items()}
    data = cards.context_fingerprint_data(recipe, ctx.manifest, ctx.source_dir_override)
    return fingerprint("card", recipe.fingerprint(), recipe.card.template, templates, data)


@register("card")
class CardStage(Stage):
    """Write the model card for the files that passed their checks."""

    name = "card"
    after = ("smoke", "shard")

    def blocked_reason(self, ctx: BuildContext) -> str | None:
        """A card needs at least one artifact that passed its checks."""
        return None if ctx.manifest.passed_artifacts() else "no artifact passed its checks"

    def is_done(self, ctx: BuildContext) -> bool:
        """The recorded card matches the current fingerprint and ``README.md`` still hashes right."""
        recorded = ctx.manifest.card.get("fingerprint")
        fp = card_fingerprint(ctx)
        return recorded == fp and ctx.is_current(WORK_KEY, fp)

    def run(self, ctx: BuildContext) -> None:
        """Render, check (a card with problems is never written), write atomically, record."""
        started = time.perf_counter()
        if not ctx.manifest.passed_artifacts():
            raise CardError(f"{ctx.build_dir}: no artifact passed its checks, so there is nothing for a card to list")
        fp = card_fingerprint(ctx)
        text = cards.render_card(ctx.recipe, ctx.manifest, source_dir=ctx.source_dir_override)
        problems = cards.check_card(text, ctx.recipe, ctx.manifest, ctx.build_dir)
        if problems:
            raise CardError("\n".join(f"card: {problem}" for problem in problems))
        target = ctx.build_dir / CARD_NAME
        write_text_atomic(target, text)
        ctx.manifest.card = {"path": CARD_NAME, "sha256": sha256_file(target), "fingerprint": fp}
        ctx.record(WORK_KEY, fp, [target], time.perf_counter() - started)
        passed = len(ctx.manifest.passed_artifacts())
        ctx.console.print(f"card: {target} ({passed} files listed, {len(text.encode()) / 1e3:.1f} kB)")
