"""gptq-card and awq-card: the sibling repo's README.md (``<format>/README.md``), from the recipe and the manifest."""

from __future__ import annotations

import time

from publisher.cards.gptq import render_folder_card
from publisher.folder_formats import AWQ, GPTQ
from publisher.manifest import fingerprint, write_text_atomic
from publisher.stages import BuildContext, register
from publisher.stages.gptq import FormatStage


class FolderCardStage(FormatStage):
    """Write the format's card once every variant is tested."""

    def card_settings(self, ctx: BuildContext) -> str:
        """Fingerprint of the card: its text (rendering is cheap; the text is what must not change unseen)."""
        return fingerprint(self.name, render_folder_card(ctx.recipe, ctx.manifest, self.fmt))

    def is_done(self, ctx: BuildContext) -> bool:
        """The card on disk is the one the manifest would render now."""
        return ctx.is_current(self.name, self.card_settings(ctx))

    def run(self, ctx: BuildContext) -> None:
        """Render and write the card."""
        started = time.perf_counter()
        target = ctx.build_dir / self.fmt.card_path
        write_text_atomic(target, render_folder_card(ctx.recipe, ctx.manifest, self.fmt))
        ctx.record(self.name, self.card_settings(ctx), [target], time.perf_counter() - started)


@register("gptq-card")
class GptqCardStage(FolderCardStage):
    """Write the GPTQ card."""

    fmt = GPTQ
    after = ("gptq-smoke",)


@register("awq-card")
class AwqCardStage(FolderCardStage):
    """Write the AWQ card."""

    fmt = AWQ
    after = ("awq-smoke",)
