"""Resumption on the real demo model: a build killed mid-quantize finishes on re-run, nothing corrupt."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.common import CONVERTED_NAME, converted_smollm2, copy_build, recipe_variant

from publisher import gguf_info, pipeline
from publisher.manifest import load_manifest, sha256_file
from publisher.recipe import load_recipe

TYPES = ("Q2_K", "Q4_K_M", "Q8_0")


def _partials(build_dir: Path) -> list[Path]:
    return [p for p in build_dir.glob(".*.partial") if p.is_file()]


@pytest.mark.slow
def test_killed_mid_quantize_then_rerun_completes_with_hashes_that_verify(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    workdir = tmp_path / "work"
    build_dir = copy_build(converted_smollm2(tmp_path_factory), workdir)
    recipe_path = recipe_variant(tmp_path / "recipes", CONVERTED_NAME)
    cmd = [sys.executable, "-m", "publisher.cli", "build", str(recipe_path), "--workdir", str(workdir)]
    with (tmp_path / "killed-build.log").open("w") as log:
        proc = subprocess.Popen([*cmd, "--stages", "quantize"], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 300
        seen: list[Path] = []
        while proc.poll() is None and time.monotonic() < deadline:
            seen = [p for p in _partials(build_dir) if ".gguf." in p.name]
            if seen and seen[0].stat().st_size > 0:
                proc.kill()
                break
            time.sleep(0.005)
        proc.wait(timeout=60)
    assert seen, f"no partial quant file appeared; the build ended with {proc.returncode}"
    assert proc.returncode == -9, "the build finished before it could be killed"
    assert _partials(build_dir), "SIGKILL leaves the temporary file behind; the next run must clean it"

    # Whatever the killed run recorded still verifies: a record is only written after its file is complete.
    killed = load_manifest(build_dir)
    assert killed is not None
    for artifact in killed.artifacts.values():
        assert sha256_file(build_dir / artifact.path) == artifact.sha256

    recipe = load_recipe(recipe_path)
    result = pipeline.execute(recipe, workdir, stages=["quantize"])
    assert [s.status for s in result.stages if s.name == "quantize"] == ["ran"]
    assert not _partials(build_dir)
    manifest = load_manifest(build_dir)
    assert manifest is not None and list(manifest.artifacts) == list(TYPES)
    for quant_type, artifact in manifest.artifacts.items():
        path = build_dir / artifact.path
        assert path.name == f"SmolLM2-135M-Instruct.{quant_type}.gguf"
        assert sha256_file(path) == artifact.sha256
        assert path.stat().st_size == artifact.size_bytes
        assert manifest.stages[f"quantize/{quant_type}"].outputs == {artifact.path: artifact.sha256}
        assert gguf_info.read_info(path).tensor_count == 272

    # Done means done: nothing runs again; --force redoes one type, byte for byte the same.
    again = pipeline.execute(recipe, workdir, stages=["quantize"])
    assert [s.status for s in again.stages if s.name == "quantize"] == ["skipped"]
    q2_mtime = (build_dir / manifest.artifacts["Q2_K"].path).stat().st_mtime_ns
    forced = pipeline.execute(recipe, workdir, stages=["quantize"], force=["quantize"], only_types=["Q8_0"])
    assert forced.manifest.artifacts["Q8_0"].sha256 == manifest.artifacts["Q8_0"].sha256
    assert forced.manifest.stages["quantize/Q8_0"].finished_at >= manifest.stages["quantize/Q8_0"].finished_at
    assert (build_dir / manifest.artifacts["Q2_K"].path).stat().st_mtime_ns == q2_mtime
