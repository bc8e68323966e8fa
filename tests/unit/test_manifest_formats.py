"""Artifact formats and folder artifacts in the manifest, and reading manifests written before them."""

from __future__ import annotations

import json

from publisher.manifest import Artifact, Manifest, folder_digest

OLD_ARTIFACT = {
    "quant_type": "Q4_K_M",
    "path": "m.Q4_K_M.gguf",
    "size_bytes": 10,
    "sha256": "a" * 64,
    "bits_per_weight": 4.8,
    "fingerprint": "f",
}


def test_a_manifest_from_before_formats_reads_as_gguf_files() -> None:
    manifest = Manifest.model_validate_json(
        json.dumps({"build_name": "b", "recipe_sha256": "r", "artifacts": {"Q4_K_M": OLD_ARTIFACT}})
    )
    artifact = manifest.artifacts["Q4_K_M"]
    assert artifact.format == "gguf"
    assert not artifact.is_folder
    assert artifact.outputs() == {"m.Q4_K_M.gguf": "a" * 64}
    assert manifest.gptq == {}


def test_a_folder_artifact_lists_every_file_under_its_folder() -> None:
    files = {"model.safetensors": "1" * 64, "config.json": "2" * 64}
    artifact = Artifact(
        quant_type="gptq-4bit-64g-actorder_True",
        path="gptq/gptq-4bit-64g-actorder_True",
        size_bytes=3,
        sha256=folder_digest(files),
        bits_per_weight=5.0,
        fingerprint="f",
        format="gptq",
        files=files,
    )
    assert artifact.is_folder
    assert artifact.outputs() == {
        "gptq/gptq-4bit-64g-actorder_True/model.safetensors": "1" * 64,
        "gptq/gptq-4bit-64g-actorder_True/config.json": "2" * 64,
    }
    again = Artifact.model_validate_json(artifact.model_dump_json())
    assert again == artifact


def test_folder_digest_depends_on_names_and_contents_not_order() -> None:
    a = {"x": "1" * 64, "y": "2" * 64}
    assert folder_digest(a) == folder_digest(dict(reversed(a.items())))
    assert folder_digest(a) != folder_digest({"x": "1" * 64, "y": "3" * 64})
    assert folder_digest(a) != folder_digest({"x": "1" * 64, "z": "2" * 64})
