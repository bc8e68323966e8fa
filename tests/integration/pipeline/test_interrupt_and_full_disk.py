"""Ctrl-C during convert and quantize, and a disk that fills during a build, on the demo model.

Each ends with exit status 130 (or 1 and one line for the disk), a manifest that loads, no
temporary file left behind, and a next run that completes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from support.common import REPO_ROOT, recipe_variant
from support.disks import small_disk
from support.inprocess import run_cli

from publisher.manifest import load_manifest

pytestmark = pytest.mark.slow


def _start(recipe: Path, workdir: Path, *stages: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "COLUMNS": "200"}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "publisher.cli",
            "build",
            str(recipe),
            "--workdir",
            str(workdir),
            "--stages",
            ",".join(stages),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,  # its own process group, as a terminal would make it
    )


def _wait_for(condition: Callable[[], bool], proc: subprocess.Popen[str], seconds: float = 300) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert proc.poll() is None, f"finished before the moment to interrupt it: {proc.communicate()}"
        assert time.monotonic() < deadline, "timed out waiting for the moment to interrupt"
        time.sleep(0.05)


def _partials(build: Path) -> list[Path]:
    return [p for p in build.rglob("*") if ".partial" in p.name]


def _interrupted(proc: subprocess.Popen[str], *, group: bool) -> str:
    if group:
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in a terminal: every process of the group
    else:
        proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "error:" not in err
    return err


@pytest.mark.parametrize("group", [False, True], ids=["process", "process-group"])
def test_ctrl_c_during_convert_then_resume(tmp_path: Path, group: bool) -> None:
    recipe = recipe_variant(tmp_path / "recipes", "interrupt-convert")
    build = tmp_path / "work" / "interrupt-convert"
    proc = _start(recipe, tmp_path / "work", "fetch", "convert")
    log = build / "logs" / "convert.log"
    _wait_for(lambda: log.is_file() and " --> " in log.read_text(errors="replace"), proc)
    _interrupted(proc, group=group)
    time.sleep(0.5)  # a converter that outlived its parent would write on now
    assert _partials(build) == []
    manifest = load_manifest(build)
    assert manifest is not None and "convert" not in manifest.stages and manifest.reference is None

    again = _start(recipe, tmp_path / "work", "fetch", "convert")
    _out, err = again.communicate(timeout=900)
    assert again.returncode == 0, err
    manifest = load_manifest(build)
    assert manifest is not None and manifest.reference is not None
    assert (build / manifest.reference.path).is_file()


def test_ctrl_c_during_quantize_then_resume(tmp_path: Path) -> None:
    recipe = recipe_variant(tmp_path / "recipes", "interrupt-quantize", {"quantize.types": ["Q8_0"]})
    build = tmp_path / "work" / "interrupt-quantize"
    first = _start(recipe, tmp_path / "work", "fetch", "convert")
    assert first.wait(timeout=900) == 0
    proc = _start(recipe, tmp_path / "work", "quantize")
    _wait_for(lambda: any(p.stat().st_size > 0 for p in _partials(build) if p.is_file()), proc)
    _interrupted(proc, group=True)
    manifest = load_manifest(build)
    assert manifest is not None and "Q8_0" not in manifest.artifacts
    assert "quantize/Q8_0" not in manifest.stages
    assert not (build / "SmolLM2-135M-Instruct.Q8_0.gguf").exists()

    again = _start(recipe, tmp_path / "work", "quantize")
    _out, err = again.communicate(timeout=900)
    assert again.returncode == 0, err
    assert _partials(build) == []
    manifest = load_manifest(build)
    assert manifest is not None and manifest.artifacts["Q8_0"].status == "built"


def test_a_disk_that_fills_during_convert_is_one_line_then_a_bigger_disk_completes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recipe = recipe_variant(tmp_path / "recipes", "full-disk")
    # The early estimate would refuse this disk before any work; pretend it passed and the disk
    # filled up afterwards (another process wrote to it, say).
    monkeypatch.setattr("publisher.stages.fetch.check_build_disk", lambda ctx: None)
    with small_disk(tmp_path / "disk", "100m") as disk:
        code, err = run_cli("build", str(recipe), "--workdir", str(disk), "--stages", "fetch,convert")
        build = disk / "full-disk"
        lines = err.strip().splitlines()
        assert code == 1, err
        assert lines[-1].startswith(f"error: the disk holding {build} is full ("), err
        assert lines[-1].endswith("free some space or use a folder on a larger disk, then run the command again")
        assert [line for line in lines if line.startswith("error:")] == lines[-1:]
        assert _partials(build) == []
        manifest = load_manifest(build)
        assert manifest is not None and manifest.reference is None

        subprocess.run(["mount", "-o", "remount,size=1g", str(disk)], check=True)
        code, err = run_cli("build", str(recipe), "--workdir", str(disk), "--stages", "fetch,convert")
        assert code == 0, err
        manifest = load_manifest(build)
        assert manifest is not None and manifest.reference is not None
