"""Publishing targets behind one interface and one registry: ``local`` (git repos in a folder) and ``hf`` (the Hub).

A target is a ``Target`` subclass made by a factory registered under a name; ``make_target``
looks the name up. The two built-in factories import their module only when asked for, so
publishing locally never imports the Hub client.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from publisher.errors import PublishError
from publisher.targets.base import Target

DEFAULT_HUB_DIR = Path("hub")
HUB_MAX_FILE_BYTES = 50 * 1000**3  # the Hub refuses single files above 50 GB


@dataclass(frozen=True)
class TargetOptions:
    """What the command line can say about a target."""

    hub_dir: Path | None = None
    hard_links: bool = False


TargetFactory = Callable[[TargetOptions], Target]
FACTORIES: dict[str, TargetFactory] = {}
MAX_FILE_BYTES: dict[str, int] = {}  # target name -> the largest single file it takes (absent: no limit)


def register_target(name: str, *, max_file_bytes: int | None = None) -> Callable[[TargetFactory], TargetFactory]:
    """Decorator adding a target factory to the registry under ``name``.

    ``max_file_bytes`` is the largest file the target takes; a build for it splits larger files
    into shards (the shard stage), and publishing sends the shards.
    """

    def add(factory: TargetFactory) -> TargetFactory:
        if name in FACTORIES:
            raise ValueError(f"target {name!r} registered twice")
        FACTORIES[name] = factory
        if max_file_bytes is not None:
            MAX_FILE_BYTES[name] = max_file_bytes
        return factory

    return add


def max_file_bytes(name: str) -> int | None:
    """The largest single file the target called ``name`` takes, or ``None`` when it has no limit."""
    return MAX_FILE_BYTES.get(name)


# A local hub mirrors the Hub's layout, shards included, so what it holds can be pushed there as it is.
@register_target("local", max_file_bytes=HUB_MAX_FILE_BYTES)
def _local(options: TargetOptions) -> Target:
    from publisher.targets.local import LocalTarget

    return LocalTarget(
        options.hub_dir if options.hub_dir is not None else DEFAULT_HUB_DIR, hard_links=options.hard_links
    )


@register_target("hf", max_file_bytes=HUB_MAX_FILE_BYTES)
def _hf(options: TargetOptions) -> Target:
    if options.hard_links:
        raise PublishError("--hard-links is for the local target, not 'hf'")
    from publisher.targets.hf import HfTarget

    return HfTarget()


def make_target(name: str, *, hub_dir: Path | None = None, hard_links: bool = False) -> Target:
    """The target called ``name``; unknown names fail with the known ones listed."""
    factory = FACTORIES.get(name)
    if factory is None:
        raise PublishError(f"unknown publish target {name!r}: use one of {', '.join(FACTORIES)}")
    return factory(TargetOptions(hub_dir=hub_dir, hard_links=hard_links))
