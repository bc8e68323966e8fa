"""A GGUF whose vocabulary disagrees with its source tokenizer fails parity, and the build refuses it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from support.common import CONVERTED_NAME, converted_smollm2, copy_build, recipe_variant, swap_tokens

from publisher.manifest import load_manifest, save_manifest, sha256_file


@pytest.mark.slow
def test_swapped_vocabulary_fails_parity_and_the_build_exits_1_naming_each_file(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    workdir = tmp_path / "work"
    build_dir = copy_build(converted_smollm2(tmp_path_factory), workdir)
    recipe_path = recipe_variant(tmp_path / "recipes", CONVERTED_NAME, {"smoke.quality.enabled": False})

    # Play a converter that wrote a wrong vocabulary: swap " the" and " of" in the reference, and
    # record the damaged file as convert's output, as that converter would have.
    reference = build_dir / "SmolLM2-135M-Instruct.F16.gguf"
    damaged = tmp_path / "damaged.gguf"
    swap_tokens(reference, damaged, "Ġthe", "Ġof")
    os.replace(damaged, reference)
    manifest = load_manifest(build_dir)
    assert manifest is not None and manifest.reference is not None
    digest = sha256_file(reference)
    manifest.reference = manifest.reference.model_copy(
        update={"sha256": digest, "size_bytes": reference.stat().st_size}
    )
    manifest.stages["convert"].outputs = {reference.name: digest}
    save_manifest(build_dir, manifest)

    cmd = [sys.executable, "-m", "publisher.cli", "build", str(recipe_path), "--workdir", str(workdir)]
    proc = subprocess.run([*cmd, "--only", "Q8_0"], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 1, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 2, proc.stderr
    assert errors[0].startswith("error: SmolLM2-135M-Instruct.F16.gguf: F16 failed: tokenizer parity")
    assert errors[1].startswith("error: SmolLM2-135M-Instruct.Q8_0.gguf: Q8_0 failed: tokenizer parity")
    assert "Traceback" not in proc.stderr
    assert "card blocked" in proc.stderr

    after = load_manifest(build_dir)
    assert after is not None and after.reference is not None
    for artifact in (after.reference, after.artifacts["Q8_0"]):
        assert artifact.status == "failed"
        assert artifact.tokenizer is not None and artifact.tokenizer.mismatches > 0
        assert artifact.failure and "tokenizer parity" in artifact.failure
    # Nothing can be published: no artifact passed, and no card was written for them.
    assert after.passed_artifacts() == []
    assert not (build_dir / "README.md").exists()
