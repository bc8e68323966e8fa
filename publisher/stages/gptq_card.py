"""gptq-card: the GPTQ repo's README.md (``gptq/README.md``), from the recipe and the manifest's gptq records."""

from __future__ import annotations

import time

from publisher.cards.gptq import render_gptq_card
from publisher.manifest import fingerprint, write_text_atomic
from publisher.stages import BuildContext, Stage, register

CARD_PATH = "gptq/README.md"
WORK_KEY = "gptq-card"


def card_settings(ctx: BuildContext) -> str:
    """Fingerprint of the card: its text (rendering is cheap; the text is what must not change unseen)."""
    return fingerprint("gptq-card", render_gptq_card(ctx.recipe, ctx.manifest))


@register("gptq-card")
class GptqCardStage(Stage):
    """Write the GPTQ card once every variant is tested."""

    name = "gptq-card"
    after = ("gptq-smoke",)

    def applies(self, ctx: BuildContext) -> bool:
        """Only recipes with a gptq section."""
        return ctx.recipe.gptq is not None

    def is_done(self, ctx: BuildContext) -> bool:
        """The card on disk is the one the manifest would render now."""
        return ctx.is_current(WORK_KEY, card_settings(ctx))

    def run(self, ctx: BuildContext) -> None:
        """Render and write the card."""
        started = time.perf_counter()
        target = ctx.build_dir / CARD_PATH
        write_text_atomic(target, render_gptq_card(ctx.recipe, ctx.manifest))
        ctx.record(WORK_KEY, card_settings(ctx), [target], time.perf_counter() - started)
