"""The pre-flight plan on paper: CausalLM 14B from its config.json alone, and when a machine is too small."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.paths import REPO_ROOT

from publisher import plan, quant_sizes
from publisher.errors import PublisherError
from publisher.recipe import load_recipe
from publisher.report import format_bytes
from publisher.source import read_architecture

RECIPE_14B = REPO_ROOT / "recipes" / "causallm-14b.yaml"
CONFIG_14B = REPO_ROOT / "tests" / "fixtures" / "causallm-14b"
# The sizes TheBloke's CausalLM-14B-GGUF lists for these files (tests/fixtures/cards/reference-gguf-causallm-14b.md).
PUBLISHED = {"Q4_0": "8.18 GB", "Q4_1": "9.01 GB", "Q5_0": "9.85 GB", "Q5_1": "10.69 GB", "Q8_0": "15.06 GB"}
BIG = plan.Machine(cores=16, memory=256 * 10**9, free_disk=10**12)


def plan_14b(tmp_path: Path, machine: plan.Machine = BIG, **kwargs: object) -> plan.BuildPlan:
    return plan.make_plan(load_recipe(RECIPE_14B), tmp_path, source_dir=CONFIG_14B, machine=machine, **kwargs)  # type: ignore[arg-type]


def test_14b_quant_sizes_match_the_published_files(tmp_path: Path) -> None:
    built = plan_14b(tmp_path)
    quantize = next(s for s in built.stages if s.stage == "quantize")
    assert {name.split(".")[1]: format_bytes(size) for name, size in quantize.files.items()} == PUBLISHED
    arch = read_architecture(CONFIG_14B)
    assert arch is not None and built.parameters == arch.parameters() == 14_166_676_480
    convert = next(s for s in built.stages if s.stage == "convert")
    assert format_bytes(convert.writes) == "28.34 GB"
    assert built.refusals() == []


def test_14b_memory_is_the_largest_file_loaded_plus_context_and_logits(tmp_path: Path) -> None:
    built = plan_14b(tmp_path)
    smoke = next(s for s in built.stages if s.stage == "smoke")
    arch = read_architecture(CONFIG_14B)
    assert arch is not None
    reference = next(s for s in built.stages if s.stage == "convert").writes
    kv = arch.kv_cache_bytes(1024)
    assert kv == 40 * 2 * 40 * 128 * 1024 * 2
    # the f16 file is mapped once, not once per quant; the logits buffer is n_ctx x n_vocab x 4
    assert reference + kv + 2 * 256 * 152_064 * 4 < smoke.peak_memory < reference + 2 * 10**9
    assert built.peak_memory == smoke.peak_memory
    quantize = next(s for s in built.stages if s.stage == "quantize")
    largest = quant_sizes.largest_tensor(arch)
    assert largest.elements == 152_064 * 5120
    assert quantize.peak_memory < 0.25 * reference  # one tensor at a time, not the whole model


def test_a_small_machine_is_refused_with_what_would_work(tmp_path: Path) -> None:
    small = plan.Machine(cores=2, memory=24 * 10**9, free_disk=60 * 10**9)
    lines = plan_14b(tmp_path, small).refusals()
    assert len(lines) == 2, lines
    assert lines[0].startswith("plan: the build writes 81.") and "60.00 GB is free" in lines[0]
    assert "stage smoke needs about 29.8" in lines[1] and "24.00 GB" in lines[1]
    assert "gpu_layers" in lines[1] and "--stages fetch,convert,quantize" in lines[1]
    fewer = plan_14b(tmp_path, small, stages=["fetch", "convert", "quantize"], only_types=["Q4_0"])
    assert fewer.refusals() == []
    assert [s.stage for s in fewer.stages] == ["fetch", "convert", "quantize"]
    assert format_bytes(fewer.disk) == "36.52 GB"


def test_files_already_built_are_not_counted_again(tmp_path: Path) -> None:
    (tmp_path / "causallm-14b").mkdir()
    (tmp_path / "causallm-14b" / "causallm_14b.F16.gguf").write_bytes(b"")
    built = plan_14b(tmp_path)
    assert built.disk - built.disk_needed == next(s for s in built.stages if s.stage == "convert").writes


def test_no_config_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(PublisherError, match=r"plan: cannot tell the shape of CausalLM/14B: .*--source-dir"):
        plan.make_plan(load_recipe(RECIPE_14B), tmp_path, machine=BIG)


def test_the_build_disk_check_counts_the_importance_matrix(tmp_path: Path) -> None:
    from publisher.errors import DiskSpaceError
    from publisher.stages import fetch

    recipe = load_recipe(REPO_ROOT / "recipes" / "smollm2-135m-instruct-imatrix.yaml")
    arch = read_architecture(CONFIG_14B)  # any shape: the names come from the recipe
    assert arch is not None
    files = plan.imatrix_files(recipe, arch)
    assert set(files) == {"SmolLM2-135M-Instruct.imatrix.gguf", "SmolLM2-135M-Instruct.imatrix.txt"}
    disk = fetch.DiskPlan(quants={"Q4_K_M": 10**9}, imatrix=sum(files.values()))
    assert disk.total > fetch.DiskPlan(quants={"Q4_K_M": 10**9}).total
    with pytest.raises(DiskSpaceError, match=r"importance matrix and calibration text 0\.\d\d GB"):
        fetch.check_disk(tmp_path, disk, free=10**9)
