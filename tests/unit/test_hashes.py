"""The growing-file hasher the convert stage uses while the converter writes."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from pathlib import Path

from publisher.hashes import GrowingFileHash, HashCache
from publisher.manifest import replace_large, writes_confined_to

# Appends 40 chunks of 1 MiB with pauses, so the hasher reaches the end of the file many times.
APPENDER = """
import os, sys, time
with open(sys.argv[1], "wb") as out:
    for i in range(40):
        out.write(os.urandom(1 << 20))
        out.flush()
        time.sleep(0.01)
"""


def test_digest_of_a_file_hashed_while_another_process_appends(tmp_path: Path) -> None:
    target = tmp_path / "model.gguf"
    following = GrowingFileHash(target)
    subprocess.run([sys.executable, "-c", APPENDER, str(target)], check=True)
    digest = following.finish()
    assert target.stat().st_size == 40 << 20
    assert digest == hashlib.sha256(target.read_bytes()).hexdigest()
    assert following.finish() == digest  # a second call (the stage's cleanup) changes nothing


def test_no_digest_when_the_file_never_appears(tmp_path: Path) -> None:
    assert GrowingFileHash(tmp_path / "missing.gguf").finish() is None


def test_never_a_wrong_digest_when_the_file_is_replaced_or_shrinks(tmp_path: Path) -> None:
    """The hasher may give up (``None``), but never returns a digest other than the final bytes'."""
    replaced = tmp_path / "replaced.gguf"
    replaced.write_bytes(b"a" * 1000)
    following = GrowingFileHash(replaced)
    time.sleep(0.3)  # let it open and read the first file
    other = tmp_path / "other"
    other.write_bytes(b"b" * 1000)
    other.replace(replaced)
    assert following.finish() in (None, hashlib.sha256(b"b" * 1000).hexdigest())

    shrunk = tmp_path / "shrunk.gguf"
    shrunk.write_bytes(b"c" * 5000)
    following = GrowingFileHash(shrunk)
    time.sleep(0.3)
    shrunk.write_bytes(b"d" * 10)
    assert following.finish() in (None, hashlib.sha256(b"d" * 10).hexdigest())


def test_a_remembered_digest_is_served_until_the_file_changes(tmp_path: Path) -> None:
    cache = HashCache(tmp_path / ".hashes.json")
    path = tmp_path / "f.bin"
    path.write_bytes(b"x" * 100)
    cache.remember(path, "0" * 64)
    assert cache.sha256(path) == "0" * 64
    assert HashCache(tmp_path / ".hashes.json").sha256(path) == "0" * 64  # persisted
    path.write_bytes(b"y" * 101)
    assert cache.sha256(path) == hashlib.sha256(b"y" * 101).hexdigest()


def test_replace_large_leaves_the_new_file_and_deletes_the_old_ones_aside(tmp_path: Path) -> None:
    target, new = tmp_path / "model.gguf", tmp_path / ".model.gguf.partial"
    new.write_bytes(b"new")
    assert replace_large(new, target) is None  # nothing to discard
    assert target.read_bytes() == b"new"

    stale = tmp_path / ".model.gguf.0badf00d.discarded"  # left by an interrupted run
    stale.write_bytes(b"stale")
    new.write_bytes(b"newer")
    with writes_confined_to(tmp_path):
        thread = replace_large(new, target)
    assert thread is not None
    thread.join()
    assert target.read_bytes() == b"newer"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.gguf"]
