"""Build stages behind an explicit registry.

A stage reads the manifest and the files it names, writes its own outputs, records them in the
manifest with a fingerprint of its inputs, and touches nothing else. The pipeline runs the
registered stages in ``ORDER`` and skips a stage whose ``is_done`` proves its work finished.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from rich.console import Console

from publisher.manifest import Manifest, save_manifest
from publisher.recipe import Recipe

ORDER = ("fetch", "convert", "quantize", "smoke", "card")


@dataclass
class BuildContext:
    """Everything a stage may read or write during one build."""

    recipe: Recipe
    build_dir: Path
    manifest: Manifest
    source_dir_override: Path | None = None
    only_types: frozenset[str] | None = None
    forced: frozenset[str] = frozenset()
    console: Console = field(default_factory=lambda: Console(stderr=True))

    def save(self) -> None:
        """Write the manifest atomically (call after every finished step)."""
        save_manifest(self.build_dir, self.manifest)

    def selected_types(self) -> list[str]:
        """The recipe's quant types, narrowed by ``--only``."""
        types = self.recipe.quantize.types
        return [t for t in types if self.only_types is None or t in self.only_types]


class Stage(Protocol):
    """One step of a build."""

    name: str

    def is_done(self, ctx: BuildContext) -> bool:
        """True when the recorded fingerprint matches and the outputs still hash right."""
        ...

    def run(self, ctx: BuildContext) -> None:
        """Do the work and record it in ``ctx.manifest``."""
        ...


STAGES: dict[str, Callable[[], Stage]] = {}


def register(name: str) -> Callable[[Callable[[], Stage]], Callable[[], Stage]]:
    """Class decorator adding a stage factory to the registry under ``name``."""

    def add(factory: Callable[[], Stage]) -> Callable[[], Stage]:
        if name in STAGES:
            raise ValueError(f"stage {name!r} registered twice")
        STAGES[name] = factory
        return factory

    return add


def get_stage(name: str) -> Stage:
    """A new instance of the stage called ``name``; unknown names fail loudly."""
    try:
        return STAGES[name]()
    except KeyError:
        known = ", ".join(n for n in ORDER if n in STAGES)
        raise ValueError(f"unknown stage {name!r} (known: {known})") from None
