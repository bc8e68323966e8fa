"""The build context: everything a stage may read or write, and the helpers it decides and records with.

A stage reads the recipe and the manifest, writes its outputs under ``build_dir``, and records
each piece of work (``fetch``, ``quantize/<TYPE>``, ``smoke/<TYPE>`` ...) with a fingerprint of its
inputs and the sha256 of its outputs. ``is_current`` proves a piece of work done: same fingerprint,
outputs still there and hashing right.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console

from publisher.hashes import cache_for
from publisher.manifest import Manifest, StageRecord, guard_write, save_manifest
from publisher.recipe import Recipe

LOGS_DIR = "logs"


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
        """The recipe's artifact names (quant types and variants), narrowed by ``--only``."""
        types = self.recipe.quantize.names
        return [t for t in types if self.only_types is None or t in self.only_types]

    def hash_file(self, path: Path) -> str:
        """sha256 of ``path``, read again only when its size, mtime or inode changed since last hashed."""
        return cache_for(self.build_dir).sha256(path)

    def remember_hash(self, path: Path, digest: str) -> None:
        """Cache ``digest`` for ``path`` as it is now, so recording it reads nothing again."""
        cache_for(self.build_dir).remember(path, digest)

    def files_match(self, outputs: dict[str, str], base: Path | None = None) -> bool:
        """True when every ``relative path -> sha256`` in ``outputs`` exists under ``base`` and hashes right."""
        root = base or self.build_dir
        for rel, digest in outputs.items():
            path = root / rel
            if not path.is_file() or self.hash_file(path) != digest:
                return False
        return True

    def is_current(self, key: str, fingerprint: str) -> bool:
        """True when work ``key`` is recorded with this fingerprint and its outputs still hash right."""
        done = self.manifest.stages.get(key)
        return done is not None and done.fingerprint == fingerprint and self.files_match(done.outputs)

    def record(self, key: str, fingerprint: str, outputs: Iterable[Path], seconds: float) -> None:
        """Record finished work ``key`` with the sha256 of each output file, then save the manifest."""
        hashed = {str(p.relative_to(self.build_dir)): self.hash_file(p) for p in outputs}
        self.manifest.stages[key] = StageRecord(
            fingerprint=fingerprint,
            outputs=hashed,
            finished_at=datetime.now(UTC).isoformat(timespec="seconds"),
            seconds=round(seconds, 3),
        )
        self.save()

    def forget(self, key: str) -> None:
        """Drop the record of work ``key`` (before redoing it, so a crash cannot leave a stale claim)."""
        if self.manifest.stages.pop(key, None) is not None:
            self.save()

    def logs_dir(self) -> Path:
        """The build's log folder, created on demand."""
        path = guard_write(self.build_dir / LOGS_DIR)
        path.mkdir(parents=True, exist_ok=True)
        return path
