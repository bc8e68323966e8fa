"""Where a build may write: one guard on every write, full disks as one line, the build and hub locks."""

from __future__ import annotations

import fcntl
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from support.common import recipe_variant, require_smollm2, tiny_source
from support.disks import small_disk
from support.fakebuild import make_build, write_recipe
from support.paths import REPO_ROOT

from publisher import manifest as manifest_module
from publisher import pipeline
from publisher.errors import DiskSpaceError, PublisherError
from publisher.manifest import OutsideWriteError, WriteScope, write_text_atomic, writes_confined_to
from publisher.publish import PublishResult, publish
from publisher.recipe import load_recipe
from publisher.targets.local import LocalTarget


def test_a_write_outside_the_build_folder_is_refused_and_leaves_nothing(tmp_path: Path) -> None:
    build = tmp_path / "build"
    build.mkdir()
    with writes_confined_to(build), pytest.raises(OutsideWriteError) as info:
        write_text_atomic(tmp_path / "beside.txt", "x")
    assert str(info.value) == f"refusing to write {tmp_path / 'beside.txt'}: it is outside {build}"
    assert sorted(tmp_path.iterdir()) == [build]


def test_a_symlink_out_of_the_build_folder_does_not_open_a_way_out(tmp_path: Path) -> None:
    build, outside = tmp_path / "build", tmp_path / "outside"
    build.mkdir()
    outside.mkdir()
    (build / "logs").symlink_to(outside)
    with writes_confined_to(build), pytest.raises(OutsideWriteError, match="is outside"):
        write_text_atomic(build / "logs" / "convert.log", "x")
    with writes_confined_to(build), pytest.raises(OutsideWriteError, match="is outside"):
        write_text_atomic(build / ".." / "up.txt", "x")
    assert list(outside.iterdir()) == []
    assert not (tmp_path / "up.txt").exists()


def test_inside_the_folder_and_outside_any_scope_writes_pass(tmp_path: Path) -> None:
    build = tmp_path / "build"
    with writes_confined_to(build) as scope:
        write_text_atomic(build / "logs" / "a.txt", "a")
    assert (build / "logs" / "a.txt").read_text() == "a"
    assert build.resolve() / "logs" / "a.txt" in scope.allowed
    write_text_atomic(tmp_path / "schema.json", "{}")  # `publisher schema --out` may write anywhere
    assert (tmp_path / "schema.json").exists()


# -- every write of a build goes through the guard --------------------------------------------

_audit: list[list[tuple[str, str]]] = []  # the writes seen while a test listens; empty list: not listening
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def _hook(event: str, args: tuple[Any, ...]) -> None:
    if not _audit:
        return
    if event == "open" and isinstance(args[0], str | bytes | os.PathLike):
        mode, flags = args[1], args[2]
        writes = any(c in mode for c in "wax+") if isinstance(mode, str) else bool(flags & _WRITE_FLAGS)
        if writes:
            _audit[-1].append((event, os.fsdecode(args[0])))
    elif event in ("os.rename", "os.link", "os.symlink", "shutil.copyfile"):
        _audit[-1].append((event, os.fsdecode(args[1])))


_hook_added: list[bool] = []


@contextmanager
def listening() -> Iterator[list[tuple[str, str]]]:
    """Record every file opened for writing, renamed onto or linked in this process meanwhile."""
    if not _hook_added:
        sys.addaudithook(_hook)  # an audit hook cannot be removed; it is inert when nobody listens
        _hook_added.append(True)
    seen: list[tuple[str, str]] = []
    _audit.append(seen)
    try:
        yield seen
    finally:
        _audit.clear()


def _recipe_for(kind: str, tmp_path: Path) -> tuple[Path, list[str]]:
    if kind == "tiny":
        recipe_path = write_recipe(tmp_path / "recipes")
        tiny_source(tmp_path / "recipes" / "source")
        return recipe_path, ["fetch"]
    return recipe_variant(tmp_path / "recipes", "tiny"), ["fetch", "convert"]


@pytest.mark.parametrize(
    "kind", ["tiny", pytest.param("demo", marks=pytest.mark.slow)], ids=["fetch-tiny", "fetch-convert-demo"]
)
def test_every_write_of_a_build_goes_through_the_guard(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scopes: list[WriteScope] = []
    real = manifest_module.writes_confined_to

    @contextmanager
    def recording(*roots: Path) -> Iterator[WriteScope]:
        with real(*roots) as scope:
            scopes.append(scope)
            yield scope

    monkeypatch.setattr(pipeline, "writes_confined_to", recording)
    if kind == "demo":
        require_smollm2()
    recipe_path, stages = _recipe_for(kind, tmp_path)
    recipe = load_recipe(recipe_path)
    with listening() as writes:
        pipeline.execute(recipe, tmp_path / "work", stages=stages)
    build = (tmp_path / "work" / "tiny").resolve()
    assert writes, "the audit hook saw no write at all"
    allowed = set(scopes[0].allowed)
    for event, target in writes:
        if target == os.devnull:  # a subprocess's discarded output writes no file
            continue
        path = Path(target).resolve()
        assert path.is_relative_to(build), (event, target)
        assert path in allowed, (event, target)
    expected = {".lock", "manifest.json", "last-run.json"} | ({"convert.log"} if "convert" in stages else set())
    assert {Path(t).name for _e, t in writes} >= expected


# -- full disks --------------------------------------------------------------------------------


def test_a_full_disk_is_one_line_and_keeps_the_old_file(tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk", "1m") as disk:
        target = disk / "build" / "manifest.json"
        write_text_atomic(target, "old")
        with writes_confined_to(disk / "build"), pytest.raises(DiskSpaceError) as info:
            write_text_atomic(target, "x" * 3_000_000)
        message = str(info.value)
        assert re.fullmatch(
            rf"the disk holding {re.escape(str(target.parent))} is full \(more than [\d.,]+ (kB|MB) was needed, "
            r"[\d.,]+ (bytes|kB) is free\); free some space or use a folder on a larger disk, then run the command"
            " again",
            message,
        ), message
        assert "\n" not in message
        assert target.read_text() == "old"
        assert [p.name for p in target.parent.iterdir()] == ["manifest.json"]  # no partial left


def test_a_full_disk_in_the_cli_is_one_line_exit_1(tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk", "4k") as disk:
        out = disk / "schema.json"
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
        proc = subprocess.run(
            [sys.executable, "-m", "publisher.cli", "schema", "--out", str(out)],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert proc.returncode == 1, proc.stderr
        assert proc.stderr.startswith(f"error: the disk holding {disk} is full (more than "), proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
        assert list(disk.iterdir()) == []


@pytest.mark.parametrize("size", ["16k", "200k"], ids=["while-creating-the-repo", "while-copying-files"])
def test_a_full_hub_disk_is_one_line_and_a_bigger_one_completes(tmp_path: Path, size: str) -> None:
    recipe_path = write_recipe(tmp_path / "recipes")
    make_build(recipe_path, tmp_path / "build")
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "COLUMNS": "300"}
    command = [sys.executable, "-m", "publisher.cli", "publish", str(recipe_path), "--workdir", str(tmp_path / "build")]
    with small_disk(tmp_path / "hub", size) as hub:
        proc = subprocess.run([*command, "--hub-dir", str(hub)], capture_output=True, text=True, env=env, timeout=120)
        assert proc.returncode == 1, proc.stderr
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "Traceback" not in proc.stderr
        assert re.fullmatch(
            rf"error: the disk holding {re.escape(str(hub))} is full \([\d.,]+ (bytes|kB) is free\); free some space or"
            " use a folder on a larger disk, then run the command again",
            errors[0],
        ), errors
        assert not [p for p in hub.rglob("*") if ".creating-" in p.name]  # no half-made repo left
        subprocess.run(["mount", "-o", "remount,size=4m", str(hub)], check=True)
        again = subprocess.run([*command, "--hub-dir", str(hub)], capture_output=True, text=True, env=env, timeout=120)
        assert again.returncode == 0, again.stderr
        repo = hub / "tester" / "Tiny-GGUF"
        assert (repo / "tiny.Q8_0.gguf").read_bytes() == (tmp_path / "build" / "tiny" / "tiny.Q8_0.gguf").read_bytes()


# -- locks -------------------------------------------------------------------------------------


def test_publish_takes_the_build_lock(tmp_path: Path) -> None:
    recipe_path = write_recipe(tmp_path / "recipes")
    make_build(recipe_path, tmp_path / "build")
    recipe = load_recipe(recipe_path)
    build = tmp_path / "build" / "tiny"
    with (build / pipeline.LOCK_NAME).open("a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        with pytest.raises(PublisherError) as info:
            publish(recipe, workdir=tmp_path / "build", target=LocalTarget(tmp_path / "hub"))
    assert str(info.value) == f"{build}: another publisher build is running there (or a publish of it); wait for it"
    assert not (tmp_path / "hub" / "tester").exists()
    result = publish(recipe, workdir=tmp_path / "build", target=LocalTarget(tmp_path / "hub"))
    assert isinstance(result, PublishResult) and all(b.commit for b in result.branches)


def test_a_second_publish_into_the_hub_waits_for_the_first(tmp_path: Path) -> None:
    recipe_path = write_recipe(tmp_path / "recipes")
    make_build(recipe_path, tmp_path / "build")
    hub, release = tmp_path / "hub", tmp_path / "release"
    hub.mkdir()
    holder = subprocess.Popen(  # stands for a first publish: holds the hub's lock until released
        [sys.executable, "-c", HOLD_LOCK, str(hub / ".publisher.lock"), str(release)], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "COLUMNS": "300"}
    command = [sys.executable, "-m", "publisher.cli", "publish", str(recipe_path), "--workdir", str(tmp_path / "build")]
    proc = subprocess.Popen([*command, "--hub-dir", str(hub)], stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stderr is not None
    first = proc.stderr.readline()
    assert first.strip() == f"waiting for another publish into {hub.absolute()} to finish"
    release.touch()
    rest = proc.stderr.read()
    assert proc.wait(timeout=120) == 0, rest
    assert holder.wait(timeout=30) == 0
    assert "error" not in rest and "lock" not in rest
    assert (hub / "tester" / "Tiny-GGUF" / ".git").is_dir()


HOLD_LOCK = """
import fcntl, os, sys, time
handle = open(sys.argv[1], "a")
fcntl.flock(handle, fcntl.LOCK_EX)
print("held", flush=True)
while not os.path.exists(sys.argv[2]):
    time.sleep(0.05)
"""
