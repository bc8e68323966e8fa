"""Card data for the licensing section: the licence by name with its link, its terms, its files, inherited ones.

A known Hub id brings its full name and link from :mod:`publisher.licences`; ``other`` is named by
the recipe's ``license_name`` and ``license_link``. A link that names a file (``LICENSE``) points to
that file as published beside the GGUFs. The files are the ones fetch recorded (or, before a build,
would record), so the card links exactly what publishing sends.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from publisher.cards.rows import HUB
from publisher.licences import is_relative_link, known_licences
from publisher.manifest import SourceRecord
from publisher.recipe import Recipe


def licence_file_names(recipe: Recipe, source: SourceRecord | None) -> list[str]:
    """Names of the licence files published beside the GGUFs: those the source record lists, then the recipe's."""
    facts = source.facts if source is not None else None
    names = [record.name for record in facts.licence_files] if facts is not None else []
    return names + [name for name in recipe.model.published_license_files if name not in names]


def licensing_context(recipe: Recipe, source: SourceRecord | None) -> dict[str, Any]:
    """``licensing`` for ``partials/licensing.md.j2`` (plain data only)."""
    model = recipe.model
    blob = f"{HUB}/{recipe.publish.repo_id}/blob/main"

    def link(target: str | None) -> str | None:
        if target is None or not is_relative_link(target):
            return target
        return f"{blob}/{quote(target)}"

    known = known_licences().get(model.license)
    other = model.license in ("other", "unknown") or known is None
    inherited = []
    for entry in model.inherited_licenses:
        base = known_licences().get(entry.id or "")
        inherited.append(
            {
                "via": entry.via,
                "name": entry.name or (base.name if base else entry.id),
                "link": link(entry.link) or (base.url if base else None),
                "use_policy": link(entry.use_policy) or (base.use_policy if base else None),
            }
        )
    return {
        "id": model.license,
        "other": other,
        "name": model.license_name or (None if other or known is None else known.name),
        "link": link(model.license_link) or (None if known is None else known.url),
        "use_policy": None if known is None else known.use_policy,
        "terms": model.license_terms,
        "files": [{"name": name, "url": f"{blob}/{quote(name)}"} for name in licence_file_names(recipe, source)],
        "inherited": inherited,
    }
