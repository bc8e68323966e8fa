"""The folder formats (GPTQ, AWQ): where each lives in the recipe, the manifest and the build folder.

Stages, card and publishing are written once against :class:`FolderFormat`; a format is one entry
in :data:`FORMATS`, with its recipe section and manifest records named after it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from publisher.manifest import Artifact, AwqParameters, FolderParameters, GptqParameters, Manifest
from publisher.recipe import Recipe
from publisher.recipe.gptq import FolderSection, FolderVariant


@dataclass(frozen=True)
class FolderFormat:
    """One folder format: ``name`` is its recipe section, manifest field, build folder and stage prefix."""

    name: str
    label: str
    parameters_type: type[FolderParameters]

    def section(self, recipe: Recipe) -> FolderSection | None:
        """The recipe's section for this format, if it has one."""
        section: FolderSection | None = getattr(recipe, self.name)
        return section

    def records(self, manifest: Manifest) -> dict[str, Artifact]:
        """The manifest's artifacts of this format, by branch."""
        records: dict[str, Artifact] = getattr(manifest, self.name)
        return records

    def parameters(self, artifact: Artifact) -> FolderParameters | None:
        """How ``artifact`` was made, as recorded."""
        params: FolderParameters | None = getattr(artifact, self.name)
        return params

    def make_parameters(self, variant: FolderVariant, **facts: Any) -> FolderParameters:
        """The record of a variant made now: its settings and the calibration ``facts``."""
        return self.parameters_type(**variant.settings(), **facts)

    @property
    def card_path(self) -> str:
        """The sibling repo's card, relative to the build folder."""
        return f"{self.name}/README.md"

    @property
    def template(self) -> str:
        """The card template's name."""
        return f"{self.name}.md.j2"


GPTQ = FolderFormat("gptq", "GPTQ", GptqParameters)
AWQ = FolderFormat("awq", "AWQ", AwqParameters)
FORMATS = (GPTQ, AWQ)


def formats_of(recipe: Recipe) -> list[FolderFormat]:
    """The folder formats ``recipe`` asks for, in :data:`FORMATS` order."""
    return [f for f in FORMATS if f.section(recipe) is not None]
