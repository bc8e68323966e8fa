"""AWQ through the whole build on a tiny random Llama, quantized on the CPU by gptqmodel in .venv-gptq.

The demo model is not used here: gptqmodel's AWQ on this CPU spends one to two CPU-minutes per
SmolLM2 layer (its clipping search), about an hour for the 30 layers (README "GPTQ branches").
The tiny model (two layers, width 64) runs the same code in seconds: two variants are made,
smoke-tested against the GGUF reference, carded and published; random weights answer noise, so
the answer itself is not checked. Skipped, with the reason, without `make setup-gptq`.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.tiny_models import ARCHITECTURES, TinyArch, make_tiny_model

from publisher import pipeline
from publisher.errors import RecipeError
from publisher.folder_formats import AWQ
from publisher.gptq.runner import missing_reason
from publisher.manifest import AwqParameters, Manifest, load_manifest, sha256_file
from publisher.publish import PublishResult
from publisher.publish_gptq import publish_folders
from publisher.recipe import Recipe, load_recipe

pytestmark = pytest.mark.slow

MAIN, SYM = "awq-4bit-64g", "awq-4bit-32g-sym"
# gptqmodel's AWQ clipping search takes output rows 64 at a time: four key/value heads of 16 make 64.
TINY_LLAMA = TinyArch("llama", "LlamaConfig", {"tie_word_embeddings": False, "num_key_value_heads": 4})
STAGES = ["fetch", "convert", "quantize", "smoke", "awq", "awq-smoke", "awq-card", "card"]


def _require_env() -> None:
    if (reason := missing_reason()) is not None:
        pytest.skip(reason)
    pytest.importorskip("torch")


def _recipe(folder: Path, source: Path) -> Recipe:
    data: dict[str, Any] = {
        "name": "tiny-awq",
        "source": {"path": str(source)},
        "model": {"name": "Tiny", "creator": "Test", "license": "apache-2.0", "base_model": "test/tiny"},
        "quantize": {"types": ["Q8_0"]},
        "smoke": {
            "max_tokens": 8,
            "context_length": 256,
            "prompts": [{"prompt": "The capital of France is"}],
            "quality": {"context_length": 64, "max_chunks": 2},
        },
        "awq": {
            "samples": 4,
            "seq_len": 64,
            "variants": [{"group_size": 64}, {"group_size": 32, "zero_point": False, "description": "symmetric"}],
        },
        "card": {"profile": {"quantized_by": "tester"}},
        "publish": {"repo_id": "tester/tiny-GGUF"},
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "tiny-awq.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return load_recipe(path)


@pytest.fixture(scope="module")
def awq_build(tmp_path_factory: pytest.TempPathFactory) -> tuple[Recipe, Path, Manifest]:
    _require_env()
    root = tmp_path_factory.mktemp("awq")
    source = make_tiny_model(TINY_LLAMA, root / "source")
    recipe = _recipe(root / "recipes", source)
    result = pipeline.execute(recipe, root / "work", stages=STAGES)
    manifest = load_manifest(result.build_dir)
    assert manifest is not None
    return recipe, result.build_dir, manifest


def test_each_variant_is_a_folder_whose_every_file_is_recorded(awq_build: tuple[Recipe, Path, Manifest]) -> None:
    _, build_dir, manifest = awq_build
    assert list(manifest.awq) == [MAIN, SYM] and manifest.gptq == {}
    for branch, artifact in manifest.awq.items():
        folder = build_dir / artifact.path
        assert artifact.format == "awq" and artifact.path == f"awq/{branch}"
        on_disk = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
        assert sorted(artifact.files) == on_disk
        assert {"config.json", "quantize_config.json", "model.safetensors"} <= set(on_disk)
        for name, digest in artifact.files.items():
            assert sha256_file(folder / name) == digest
        assert manifest.stages[f"awq/{branch}"].outputs == artifact.outputs()
    assert not list((build_dir / "awq").glob(".*")), "no partial folder or request left behind"


def test_recorded_parameters_are_the_recipe_s_and_the_folder_s(awq_build: tuple[Recipe, Path, Manifest]) -> None:
    _, build_dir, manifest = awq_build
    for branch, group_size, zero_point in ((MAIN, 64, True), (SYM, 32, False)):
        artifact = manifest.awq[branch]
        params = artifact.awq
        assert isinstance(params, AwqParameters) and artifact.gptq is None
        assert (params.bits, params.group_size, params.version) == (4, group_size, "gemm")
        assert params.zero_point is zero_point
        assert (params.dataset, params.samples, params.seq_len) == ("calibration.txt", 4, 64)
        saved = json.loads((build_dir / artifact.path / "quantize_config.json").read_text(encoding="utf-8"))
        assert (saved["quant_method"], saved["bits"], saved["group_size"]) == ("awq", 4, group_size)
        assert (saved["version"], saved["zero_point"]) == ("gemm", zero_point)
        assert saved["meta"]["dataset"] == "calibration.txt" and saved["meta"]["seq_len"] == 64


def test_smoke_loads_each_folder_and_measures_it_like_the_gguf_rows(awq_build: tuple[Recipe, Path, Manifest]) -> None:
    _, _, manifest = awq_build
    q8 = manifest.artifacts["Q8_0"]
    assert q8.quality is not None
    for artifact in manifest.awq.values():
        assert artifact.status == "passed", artifact.failure
        assert artifact.smoke is not None and artifact.smoke.answers
        assert artifact.quality is not None and artifact.quality.tokens == q8.quality.tokens
        assert artifact.quality.kl_divergence is not None and artifact.quality.kl_divergence > 0


def test_the_card_shows_what_the_manifest_recorded(awq_build: tuple[Recipe, Path, Manifest]) -> None:
    _, build_dir, manifest = awq_build
    card = (build_dir / AWQ.card_path).read_text(encoding="utf-8")
    rows = {
        line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
        for line in card.splitlines()
        if line.startswith("| [")
    }
    tree = "https://huggingface.co/tester/tiny-AWQ/tree"
    assert set(rows) == {f"[main]({tree}/main)", f"[{SYM}]({tree}/{SYM})"}
    for name, cells in rows.items():
        artifact = manifest.awq[MAIN if "main" in name else SYM]
        params, quality = artifact.awq, artifact.quality
        assert params is not None and quality is not None
        bits, gs, version, zero_point, dataset, seq_len, size, ppl, kld = cells[:9]
        assert (bits, gs, version) == (str(params.bits), str(params.group_size), params.version.upper())
        assert zero_point == ("Yes" if params.zero_point else "No")
        assert (dataset, seq_len) == (params.dataset, str(params.seq_len))
        assert size == f"{artifact.size_bytes / 1e6:.1f} MB"
        assert (ppl, kld) == (f"{quality.perplexity:.2f}", f"{quality.kl_divergence:.4f}")
    assert f"vllm serve tester/tiny-AWQ --revision {SYM} --quantization awq" in card
    assert "(https://huggingface.co/tester/tiny-AWQ)" in (build_dir / "README.md").read_text(encoding="utf-8")


def test_a_rerun_does_no_work(awq_build: tuple[Recipe, Path, Manifest]) -> None:
    recipe, build_dir, manifest = awq_build
    again = pipeline.execute(recipe, build_dir.parent, stages=STAGES)
    statuses = {s.name: s.status for s in again.stages}
    assert (statuses["awq"], statuses["awq-smoke"], statuses["awq-card"]) == ("skipped", "skipped", "skipped")
    assert again.manifest.awq == manifest.awq


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout


def test_publish_makes_the_awq_repo_one_branch_per_variant(
    awq_build: tuple[Recipe, Path, Manifest], tmp_path: Path
) -> None:
    recipe, build_dir, manifest = awq_build
    hub = tmp_path / "hub"
    first = publish_folders(recipe, AWQ, workdir=build_dir.parent, target="local", hub_dir=hub)
    assert isinstance(first, PublishResult)
    assert {b.name for b in first.branches if b.commit} == {"main", SYM}
    repo = hub / "tester" / "tiny-AWQ"
    for branch, variant in (("main", MAIN), (SYM, SYM)):
        listed = set(_git(repo, "ls-tree", "--name-only", branch).split())
        assert listed == {".gitattributes", "README.md", *manifest.awq[variant].files}
    again = publish_folders(recipe, AWQ, workdir=build_dir.parent, target="local", hub_dir=hub)
    assert isinstance(again, PublishResult) and not any(b.commit for b in again.branches)


def test_widths_the_clipping_search_cannot_take_are_refused_before_any_work(tmp_path: Path) -> None:
    _require_env()
    source = make_tiny_model(ARCHITECTURES[0], tmp_path / "source")  # two key/value heads of 16: 32 wide
    recipe = _recipe(tmp_path / "recipes", source)
    with pytest.raises(RecipeError) as err:
        pipeline.execute(recipe, tmp_path / "work", stages=["fetch", "awq"])
    assert str(err.value) == (
        f"{recipe.path}:24: awq.variants[0]: AWQ needs layer widths that are multiples of 64; "
        "the model's key/value width is 32"
    )
    assert not (tmp_path / "work" / "tiny-awq" / "awq").exists()
