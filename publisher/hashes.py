"""The build's hash cache: sha256 of files keyed by (device, inode, size, mtime_ns).

Kept in the build folder beside the manifest, so a re-run does not read multi-gigabyte files again
when nothing about them changed. It may skip work during a build; publishing hashes the bytes
themselves.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
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
            self._store(resolved, stat, digest)
        return digest

    def remember(self, path: Path, digest: str) -> None:
        """Cache ``digest`` as the sha256 of ``path`` as it is now (hashed by whoever wrote it)."""
        self._store(str(path.resolve()), path.stat(), digest)

    def _store(self, resolved: str, stat: os.stat_result, digest: str) -> None:
        self.entries[resolved] = {"stat": self._key(stat), "sha256": digest}
        write_text_atomic(self.path, json.dumps(self.entries, indent=1, sort_keys=True) + "\n")


class GrowingFileHash:
    """sha256 of a file that another process is still writing, read in a thread as it grows.

    A converter writes its GGUF front to back; hashing the bytes as they land on the second core
    saves reading the whole file again after it exits (1.5 s for 2.2 GB here). ``finish`` says
    ``None`` when the file was replaced, shrank or never appeared, and the caller hashes it whole.
    The writer must only append: a writer that seeks back would make the digest wrong.
    """

    CHUNK = 4 << 20
    POLL_S = 0.05

    def __init__(self, path: Path) -> None:
        self.path = path
        self._digest = hashlib.sha256()
        self._done = threading.Event()
        self._valid = True
        self._thread = threading.Thread(target=self._follow, name="sha256-follow", daemon=True)
        self._thread.start()

    def finish(self) -> str | None:
        """Call once the writer has exited: read the rest and return the digest, or ``None``."""
        self._done.set()
        self._thread.join()
        return self._digest.hexdigest() if self._valid else None

    def _follow(self) -> None:
        while not self.path.exists():
            if self._done.is_set():
                self._valid = False
                return
            time.sleep(self.POLL_S)
        buffer = bytearray(self.CHUNK)
        view = memoryview(buffer)
        with self.path.open("rb", buffering=0) as handle:
            inode = os.fstat(handle.fileno()).st_ino
            while True:
                # Sample the flag before reading: once set, one read that comes up short is the end.
                finished = self._done.is_set()
                count = handle.readinto(view)
                if count:
                    self._digest.update(view[:count])
                    continue
                if finished:
                    break
                time.sleep(self.POLL_S)
            current = self.path.stat() if self.path.exists() else None
            if current is None or current.st_ino != inode or current.st_size != handle.tell():
                self._valid = False


_caches: dict[Path, HashCache] = {}


def cache_for(build_dir: Path) -> HashCache:
    """The one hash cache of ``build_dir`` in this process."""
    key = build_dir.resolve()
    if key not in _caches:
        _caches[key] = HashCache(key / HASH_CACHE_NAME)
    return _caches[key]
