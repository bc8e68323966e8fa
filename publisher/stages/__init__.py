"""Build stages behind an explicit registry.

A stage reads the manifest and the files it names, writes its own outputs, records them in the
manifest with a fingerprint of its inputs, and touches nothing else. Each stage declares the
stages it runs ``after``; the pipeline runs them in that order (``ordered_names``) and skips a
stage whose ``is_done`` proves its work finished. The pipeline knows no stage by name.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from publisher.stages.context import BuildContext

__all__ = [
    "BUILTIN_MODULES",
    "STAGES",
    "BuildContext",
    "Stage",
    "get_stage",
    "load_stages",
    "ordered_names",
    "register",
]

# The modules that register the stages a build runs; importing one registers its stage.
BUILTIN_MODULES = (
    "fetch",
    "convert",
    "imatrix",
    "quantize",
    "smoke",
    "shard",
    "card",
    "gptq",
    "gptq_smoke",
    "gptq_card",
)


class Stage:
    """One step of a build. Subclasses set ``name`` and ``after`` and implement ``is_done`` and ``run``."""

    name: str = ""
    after: tuple[str, ...] = ()

    def is_done(self, ctx: BuildContext) -> bool:
        """True when the recorded fingerprint matches and the outputs still hash right."""
        raise NotImplementedError

    def run(self, ctx: BuildContext) -> None:
        """Do the work and record it in ``ctx.manifest``."""
        raise NotImplementedError

    def applies(self, ctx: BuildContext) -> bool:
        """Whether this build has any work of this kind (a stage that does not apply is left out of the run)."""
        return True

    def blocked_reason(self, ctx: BuildContext) -> str | None:
        """Why this stage cannot run on this build now (it is then reported as blocked), or ``None``."""
        return None

    def finish(self, ctx: BuildContext) -> None:
        """Called once this stage's work is current, whether it ran now or was already done."""

    def problems(self, ctx: BuildContext) -> list[str]:
        """What is still wrong once this selected stage is done (each a line; the build then exits 1)."""
        return []


STAGES: dict[str, Callable[[], Stage]] = {}


def register(name: str) -> Callable[[type[Stage]], type[Stage]]:
    """Class decorator adding a stage to the registry under ``name``."""

    def add(cls: type[Stage]) -> type[Stage]:
        if name in STAGES:
            raise ValueError(f"stage {name!r} registered twice")
        cls.name = name
        STAGES[name] = cls
        return cls

    return add


def load_stages() -> None:
    """Import the built-in stage modules; each registers its stage on import."""
    for module in BUILTIN_MODULES:
        importlib.import_module(f"publisher.stages.{module}")


def ordered_names() -> tuple[str, ...]:
    """Registered stages, each after the stages it names in ``after`` (registration order otherwise)."""
    load_stages()
    pending = {name: factory() for name, factory in STAGES.items()}
    done: list[str] = []
    while pending:
        ready = [n for n, s in pending.items() if all(a in done or a not in pending for a in s.after)]
        if not ready:
            raise ValueError(f"stages {', '.join(pending)} wait for each other (see their `after`)")
        done.append(ready[0])
        del pending[ready[0]]
    return tuple(done)


def get_stage(name: str) -> Stage:
    """A new instance of the stage called ``name``; unknown names fail loudly."""
    try:
        return STAGES[name]()
    except KeyError:
        known = ", ".join(STAGES)
        raise ValueError(f"unknown stage {name!r} (known: {known})") from None
