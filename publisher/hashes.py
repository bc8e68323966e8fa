"""The build's hash cache: sha256 of files keyed by (device, inode, size, mtime_ns).

Kept in the build folder beside the manifest, so a re-run does not read multi-gigabyte files again
when nothing about them changed. It may skip work during a build; publishing hashes the bytes
themselves.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from publisher.manifest import sha256_file, write_text_atomic

HASH_CACHE_NAME = ".hashes.json"


class HashCache:
    """sha256 of files keyed by path and (device, inode, size, mtime_ns), persisted as JSON."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: dict[str, dict[str, object]] = {}
        if path.exists():
            try:
                loaded = json.loads(path.read_text(encoding="utf-8"))
                self.entries = loaded if isinstance(loaded, dict) else {}
            except ValueError:
                self.entries = {}  # a damaged cache only costs re-hashing

    @staticmethod
    def _key(stat: os.stat_result) -> list[int]:
        return [stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns]

    def sha256(self, path: Path) -> str:
        """The file's sha256, read again only when its size, mtime or inode changed since last hashed."""
        resolved = str(path.resolve())
        stat = path.stat()
        entry = self.entries.get(resolved)
        if entry is not None and entry.get("stat") == self._key(stat) and isinstance(entry.get("sha256"), str):
            return str(entry["sha256"])
        digest = sha256_file(path)
        # Re-stat: only cache when the file did not change while it was read.
        if self._key(path.stat()) == self._key(stat):
            self.entries[resolved] = {"stat": self._key(stat), "sha256": digest}
            write_text_atomic(self.path, json.dumps(self.entries, indent=1, sort_keys=True) + "\n")
        return digest


_caches: dict[Path, HashCache] = {}


def cache_for(build_dir: Path) -> HashCache:
    """The one hash cache of ``build_dir`` in this process."""
    key = build_dir.resolve()
    if key not in _caches:
        _caches[key] = HashCache(key / HASH_CACHE_NAME)
    return _caches[key]
