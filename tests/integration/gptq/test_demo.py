"""GPTQ on the real demo model, quantized on the CPU by gptqmodel in its own environment (.venv-gptq).

One module-scoped build makes two variants (act order on and off) from 8 calibration samples of 128
tokens, smoke-tests them and measures their quality against the same reference logits as the GGUF
rows; the tests then read that build. Reproducibility quantizes the act-order variant once more in
a second build folder. Skipped, with the reason, when `make setup-gptq` has not made the environment.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from support.common import CONVERTED_NAME, converted_smollm2, copy_build, recipe_variant

from publisher import pipeline
from publisher.folder_formats import GPTQ
from publisher.gptq.folder import TOKENIZER_FILES, tokenizer_mismatches
from publisher.gptq.runner import missing_reason
from publisher.manifest import Manifest, load_manifest, sha256_file
from publisher.publish import PublishResult
from publisher.publish_gptq import publish_folders
from publisher.recipe import Recipe, load_recipe

pytestmark = pytest.mark.slow

ACT_ORDER = "gptq-4bit-64g-actorder_True"
NO_ACT_ORDER = "gptq-4bit-64g-actorder_False"
STAGES = ["fetch", "convert", "quantize", "smoke", "gptq", "gptq-smoke", "gptq-card", "card"]
CHANGES: dict[str, Any] = {
    "quantize.types": ["Q8_0"],
    "smoke.quality.max_chunks": 4,
    "gptq": {
        "samples": 8,
        "seq_len": 128,
        "variants": [{"group_size": 64, "act_order": True}, {"group_size": 64, "act_order": False}],
    },
}


def _require_env() -> None:
    if (reason := missing_reason()) is not None:
        pytest.skip(reason)


def _build(workdir: Path, recipe: Recipe) -> pipeline.BuildResult:
    result = pipeline.execute(recipe, workdir, stages=STAGES)
    return result


@pytest.fixture(scope="module")
def gptq_build(tmp_path_factory: pytest.TempPathFactory) -> tuple[Recipe, Path, Manifest]:
    _require_env()
    converted = converted_smollm2(tmp_path_factory)
    root = tmp_path_factory.mktemp("gptq")
    workdir = root / "work"
    build_dir = copy_build(converted, workdir)
    recipe = load_recipe(recipe_variant(root / "recipes", CONVERTED_NAME, CHANGES))
    _build(workdir, recipe)
    manifest = load_manifest(build_dir)
    assert manifest is not None
    return recipe, build_dir, manifest


def test_both_variants_are_folders_whose_every_file_is_recorded(gptq_build: tuple[Recipe, Path, Manifest]) -> None:
    _, build_dir, manifest = gptq_build
    assert list(manifest.gptq) == [ACT_ORDER, NO_ACT_ORDER]
    for branch, artifact in manifest.gptq.items():
        folder = build_dir / artifact.path
        assert artifact.format == "gptq" and artifact.path == f"gptq/{branch}"
        on_disk = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
        assert sorted(artifact.files) == on_disk
        assert {"config.json", "quantize_config.json", "model.safetensors", "tokenizer.json"} <= set(on_disk)
        for name, digest in artifact.files.items():
            assert sha256_file(folder / name) == digest
        assert artifact.size_bytes == sum((folder / n).stat().st_size for n in artifact.files)
        assert manifest.stages[f"gptq/{branch}"].outputs == artifact.outputs()
    assert not list((build_dir / "gptq").glob(".*")), "no partial folder or request left behind"


def test_recorded_parameters_are_the_recipe_s_and_the_folder_s(gptq_build: tuple[Recipe, Path, Manifest]) -> None:
    _, build_dir, manifest = gptq_build
    for branch, act_order in ((ACT_ORDER, True), (NO_ACT_ORDER, False)):
        artifact = manifest.gptq[branch]
        params = artifact.gptq
        assert params is not None
        assert (params.bits, params.group_size, params.act_order, params.damp) == (4, 64, act_order, 0.1)
        assert (params.dataset, params.samples, params.seq_len) == ("calibration.txt", 8, 128)
        assert params.quantizer == "gptqmodel 7.6.0"
        folder = build_dir / artifact.path
        saved = json.loads((folder / "quantize_config.json").read_text(encoding="utf-8"))
        assert (saved["bits"], saved["group_size"], saved["desc_act"]) == (4, 64, act_order)
        assert saved["meta"]["dataset"] == "calibration.txt" and saved["meta"]["seq_len"] == 128
        assert "offload_to_disk_path" not in saved["meta"]
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        assert config["quantization_config"]["meta"]["samples"] == 8


def test_tokenizer_and_generation_config_are_the_source_s(gptq_build: tuple[Recipe, Path, Manifest]) -> None:
    _, build_dir, manifest = gptq_build
    source = Path(manifest.source.path) if manifest.source else None
    assert source is not None
    for artifact in manifest.gptq.values():
        folder = build_dir / artifact.path
        assert tokenizer_mismatches(folder, source) == []
        assert (folder / "generation_config.json").read_bytes() == (source / "generation_config.json").read_bytes()
        assert any((folder / name).is_file() for name in TOKENIZER_FILES)


def test_smoke_answers_and_quality_in_the_gguf_table(gptq_build: tuple[Recipe, Path, Manifest]) -> None:
    _, _, manifest = gptq_build
    q8 = manifest.artifacts["Q8_0"]
    assert q8.quality is not None
    for artifact in manifest.gptq.values():
        assert artifact.status == "passed", artifact.failure
        assert artifact.smoke is not None and artifact.smoke.output.strip()
        # Greedy answers from 8 calibration samples, on topic but not reliably right, and they change with the
        # CPU torch runs on. Measured on an AVX2 EPYC: act order "CÎNADO, THE CAPITAL: France, ...", without it
        # "The capital of France is Paris."; on an AVX-512 EPYC: act order "The capital of France is Paris, not
        # Paris itself.", without it "The capital of a country is ... in French, it's simply "capital"".
        on_topic = ("france", "french", "paris")
        assert any(word in artifact.smoke.output.lower() for word in on_topic), artifact.smoke.output
        quality = artifact.quality
        assert quality is not None
        # the same scored tokens as the GGUF rows, and worse than 8 bits but still a language model
        assert quality.tokens == q8.quality.tokens
        assert quality.kl_divergence is not None and quality.kl_divergence > (q8.quality.kl_divergence or 0.0)
        assert q8.quality.perplexity < quality.perplexity < 3 * q8.quality.perplexity
    with_order, without = manifest.gptq[ACT_ORDER].quality, manifest.gptq[NO_ACT_ORDER].quality
    assert with_order is not None and without is not None
    print(f"KLD act order {with_order.kl_divergence} vs without {without.kl_divergence}")
    # Which is better depends on the CPU with 8 samples (README, "GPTQ branches"); that the setting reached
    # the quantizer does not: the two variants are different quantizations.
    assert with_order.kl_divergence != without.kl_divergence
    assert with_order.perplexity != without.perplexity


def test_a_rerun_does_no_work(gptq_build: tuple[Recipe, Path, Manifest]) -> None:
    recipe, build_dir, manifest = gptq_build
    again = _build(build_dir.parent, recipe)
    statuses = {s.name: s.status for s in again.stages}
    assert statuses["gptq"] == "skipped" and statuses["gptq-smoke"] == "skipped"
    assert again.manifest.gptq == manifest.gptq


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout


def test_the_card_shows_what_the_manifest_recorded(gptq_build: tuple[Recipe, Path, Manifest]) -> None:
    _, build_dir, manifest = gptq_build
    card = (build_dir / "gptq" / "README.md").read_text(encoding="utf-8")
    assert "hf download publisher-demo/SmolLM2-135M-Instruct-GPTQ --revision " + NO_ACT_ORDER in card
    rows = {
        line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
        for line in card.splitlines()
        if line.startswith("| [")
    }
    assert set(rows) == {
        "[main](https://huggingface.co/publisher-demo/SmolLM2-135M-Instruct-GPTQ/tree/main)",
        f"[{NO_ACT_ORDER}](https://huggingface.co/publisher-demo/SmolLM2-135M-Instruct-GPTQ/tree/{NO_ACT_ORDER})",
    }
    for name, cells in rows.items():
        artifact = manifest.gptq[ACT_ORDER if "main" in name else NO_ACT_ORDER]
        params, quality = artifact.gptq, artifact.quality
        assert params is not None and quality is not None
        bits, gs, act, damp, dataset, seq_len, size, exllama, ppl, kld = cells[:10]
        assert (bits, gs, act, damp) == ("4", "64", "Yes" if params.act_order else "No", "0.1")
        assert (dataset, seq_len, exllama) == (params.dataset, str(params.seq_len), "Yes")
        assert size == f"{artifact.size_bytes / 1e6:.1f} MB"
        assert (ppl, kld) == (f"{quality.perplexity:.2f}", f"{quality.kl_divergence:.4f}")
    gguf_card = (build_dir / "README.md").read_text(encoding="utf-8")
    assert "(https://huggingface.co/publisher-demo/SmolLM2-135M-Instruct-GPTQ)" in gguf_card


def test_publish_makes_one_branch_per_variant_and_is_idempotent(
    gptq_build: tuple[Recipe, Path, Manifest], tmp_path: Path
) -> None:
    recipe, build_dir, manifest = gptq_build
    hub = tmp_path / "hub"
    first = publish_folders(recipe, GPTQ, workdir=build_dir.parent, target="local", hub_dir=hub)
    assert isinstance(first, PublishResult)
    assert {b.name for b in first.branches if b.commit} == {"main", NO_ACT_ORDER}
    repo = hub / "publisher-demo" / "SmolLM2-135M-Instruct-GPTQ"
    assert ACT_ORDER not in _git(repo, "branch", "--list")  # it is main
    for branch, variant in (("main", ACT_ORDER), (NO_ACT_ORDER, NO_ACT_ORDER)):
        listed = set(_git(repo, "ls-tree", "--name-only", branch).split())
        assert listed == {".gitattributes", "README.md", *manifest.gptq[variant].files}
        subjects = _git(repo, "log", "--format=%s", branch).splitlines()
        assert sum(s.startswith("Publish ") for s in subjects) == 1, subjects  # one commit per branch
    refs = _git(repo, "for-each-ref")
    again = publish_folders(recipe, GPTQ, workdir=build_dir.parent, target="local", hub_dir=hub)
    assert isinstance(again, PublishResult) and not any(b.commit for b in again.branches)
    assert _git(repo, "for-each-ref") == refs


def test_same_inputs_same_bytes(gptq_build: tuple[Recipe, Path, Manifest], tmp_path: Path) -> None:
    _, build_dir, manifest = gptq_build
    changes = CHANGES | {"gptq": CHANGES["gptq"] | {"variants": CHANGES["gptq"]["variants"][:1]}}
    recipe = load_recipe(recipe_variant(tmp_path / "recipes", CONVERTED_NAME, changes))
    workdir = tmp_path / "work"
    second = pipeline.execute(recipe, workdir, stages=["fetch", "gptq"])
    assert second.manifest.gptq[ACT_ORDER].files == manifest.gptq[ACT_ORDER].files
