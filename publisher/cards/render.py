"""Rendering a card: its kind's data, its template, its frontmatter; and the fingerprint of all three."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

from publisher import source
from publisher.cards.environment import environment, render_template
from publisher.cards.frontmatter import frontmatter_data, render_frontmatter
from publisher.cards.kinds import kind_of, template_source
from publisher.manifest import Manifest, load_manifest
from publisher.recipe import Recipe


def card_context(recipe: Recipe, manifest: Manifest | None = None, *, source_dir: Path | None = None) -> dict[str, Any]:
    """Everything the recipe's card templates may use, as plain data.

    The source facts are the manifest's; only when fetch has not recorded them (no build yet)
    does :func:`publisher.source.recorded_or_read` read them from the source folder.
    """
    recorded = source.recorded_or_read(recipe, manifest, source_dir)
    return kind_of(recipe).build_context(recipe, manifest, recorded)


def render_body(recipe: Recipe, context: dict[str, Any]) -> str:
    """The card's markdown body (no frontmatter) from the recipe's template."""
    _own_dir, name = template_source(recipe)
    return render_template(environment(recipe), name, context)


def render_card(recipe: Recipe, manifest: Manifest | None = None, *, source_dir: Path | None = None) -> str:
    """The whole ``README.md``: frontmatter, then the rendered body."""
    context = card_context(recipe, manifest, source_dir=source_dir)
    front = render_frontmatter(recipe, manifest)
    body = re.sub(r"\n{3,}", "\n\n", render_body(recipe, context)).strip()
    return f"---\n{front}\n---\n\n{body}\n"


def context_fingerprint_data(recipe: Recipe, manifest: Manifest | None, source_dir: Path | None = None) -> Any:
    """JSON-able data covering everything the card shows (for the card stage's fingerprint)."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return dataclasses.asdict(value)
        raise TypeError(type(value).__name__)

    context = card_context(recipe, manifest, source_dir=source_dir)
    return json.loads(
        json.dumps({"context": context, "frontmatter": frontmatter_data(recipe, manifest)}, default=plain)
    )


@dataclasses.dataclass(frozen=True)
class CardResult:
    """A card rendered for the CLI: its text, and the build it describes (if any)."""

    text: str
    manifest: Manifest | None
    build_dir: Path


def card_for_recipe(recipe: Recipe, workdir: Path, *, source_dir: Path | None = None) -> CardResult:
    """Render ``recipe``'s card, from its build's manifest when ``<workdir>/<build name>/manifest.json`` exists."""
    build_dir = workdir / recipe.build_name
    manifest = load_manifest(build_dir)
    return CardResult(render_card(recipe, manifest, source_dir=source_dir), manifest, build_dir)
