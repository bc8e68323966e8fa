"""Card kinds: a kind is a shipped template plus the builder of the data that template shows.

The pairing follows ``huggingface_hub``'s ``ModelCard`` (a data class and a default template).
``card.template`` in a recipe names a kind, or a Jinja file of its own that gets the ``gguf``
kind's data. A new kind (say GPTQ folders on branches) is one entry in :data:`KINDS`, a template
under ``templates/`` and, when it shows other data, its own context builder.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from publisher.cards.context import gguf_context
from publisher.errors import CardError
from publisher.manifest import Manifest, SourceRecord
from publisher.recipe import Recipe

ContextBuilder = Callable[[Recipe, Manifest | None, SourceRecord | None], dict[str, Any]]


@dataclass(frozen=True)
class CardKind:
    """A kind of card: its template (under ``templates/``) and what builds the template's data."""

    name: str
    template: str
    build_context: ContextBuilder


KINDS = {
    kind.name: kind
    for kind in (
        CardKind("gguf", "gguf.md.j2", gguf_context),
        CardKind("branches", "branches.md.j2", gguf_context),
    )
}
DEFAULT_KIND = "gguf"


def kind_of(recipe: Recipe) -> CardKind:
    """The kind a recipe's card is; a recipe's own template is a ``gguf`` card laid out its own way."""
    return KINDS.get(recipe.card.template, KINDS[DEFAULT_KIND])


def template_source(recipe: Recipe) -> tuple[Path | None, str]:
    """``(folder of a recipe's own template or None, template name to load)``."""
    choice = recipe.card.template
    if choice in KINDS:
        return None, KINDS[choice].template
    path = recipe.resolve_path(choice)
    if not path.is_file():
        names = " or ".join(KINDS)
        raise CardError(f"card.template: {path}: no such file; name {names}, or a Jinja file relative to the recipe")
    return path.parent, path.name
