"""Publishing targets behind one interface: ``local`` (git repos in a folder) and ``hf`` (the Hub)."""

from __future__ import annotations

from pathlib import Path

from publisher.errors import PublishError
from publisher.targets.base import Target

TARGETS = ("local", "hf")
DEFAULT_HUB_DIR = Path("hub")


def make_target(name: str, *, hub_dir: Path | None = None, hard_links: bool = False) -> Target:
    """The target called ``name``; unknown names fail with the known ones listed."""
    if name == "local":
        from publisher.targets.local import LocalTarget

        return LocalTarget(hub_dir if hub_dir is not None else DEFAULT_HUB_DIR, hard_links=hard_links)
    if hard_links:
        raise PublishError(f"--hard-links is for the local target, not {name!r}")
    if name == "hf":
        from publisher.targets.hf import HfTarget

        return HfTarget()
    raise PublishError(f"unknown publish target {name!r}: use one of {', '.join(TARGETS)}")
