"""atomic_path: flushed before the rename by default; with durable=False the caller flushes later."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from publisher.manifest import atomic_path, flush_to_disk


@pytest.fixture
def flushed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Names of the files os.fsync is called on (the real fsync runs)."""
    names: list[str] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        names.append(Path(os.readlink(f"/proc/self/fd/{fd}")).name)
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return names


def test_the_temporary_file_is_flushed_before_it_replaces_the_target(tmp_path: Path, flushed: list[str]) -> None:
    target = tmp_path / "a.gguf"
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"new")
        assert not target.exists()
    assert target.read_bytes() == b"new"
    assert len(flushed) == 1 and flushed[0].startswith(".a.gguf.") and flushed[0].endswith(".partial")


def test_not_durable_renames_without_waiting_and_flush_to_disk_waits_later(tmp_path: Path, flushed: list[str]) -> None:
    target = tmp_path / "a.gguf"
    target.write_bytes(b"old")
    with atomic_path(target, durable=False) as tmp:
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new" and not list(tmp_path.glob("*.partial"))
    assert flushed == []
    flush_to_disk(target)
    assert flushed == ["a.gguf"]


def test_not_durable_still_leaves_the_target_alone_when_the_block_fails(tmp_path: Path) -> None:
    target = tmp_path / "a.gguf"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_path(target, durable=False) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("quantizer failed")
    assert target.read_bytes() == b"old" and not list(tmp_path.glob("*.partial"))
