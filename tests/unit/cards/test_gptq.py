"""The GPTQ card from a manifest alone: the branch table, downloads per branch, the sibling link on the GGUF card."""

from __future__ import annotations

from pathlib import Path

from support.paths import FIXTURES

from publisher.cards import render_card
from publisher.cards.gptq import render_folder_card
from publisher.folder_formats import GPTQ
from publisher.manifest import Artifact, GptqParameters, Manifest, QualityResult, folder_digest
from publisher.recipe import Recipe, load_recipe

ACT, NO_ACT = "gptq-4bit-64g-actorder_True", "gptq-4bit-64g-actorder_False"
GPTQ_SECTION = """gptq:
  samples: 16
  seq_len: 256
  main: gptq-4bit-64g-actorder_False
  variants:
    - {group_size: 64}
    - {group_size: 64, act_order: false, description: for older kernels}
    - {bits: 3, group_size: -1}
"""


def _recipe(tmp_path: Path) -> Recipe:
    path = tmp_path / "r.yaml"
    path.write_text(
        (FIXTURES / "recipes" / "minimal.yaml").read_text(encoding="utf-8") + GPTQ_SECTION, encoding="utf-8"
    )
    return load_recipe(path)


def _artifact(recipe: Recipe, branch: str, size: int, ppl: float, kld: float) -> Artifact:
    assert recipe.gptq is not None
    variant = recipe.gptq.variant(branch)
    files = {"model.safetensors": "1" * 64, "config.json": "2" * 64}
    return Artifact(
        quant_type=branch,
        path=f"gptq/{branch}",
        size_bytes=size,
        sha256=folder_digest(files),
        bits_per_weight=5.0,
        fingerprint="f",
        format="gptq",
        files=files,
        status="passed",
        quality=QualityResult(perplexity=ppl, kl_divergence=kld, top1_agreement=0.8, tokens=512),
        gptq=GptqParameters(
            bits=variant.bits,
            group_size=variant.group_size,
            act_order=variant.act_order,
            damp=variant.damp,
            dataset="calibration.txt",
            dataset_sha256="3" * 64,
            samples=16,
            seq_len=256,
            branch=branch,
            quantizer="gptqmodel 7.6.0",
        ),
    )


def test_the_branch_table_shows_each_variant_as_recorded(tmp_path: Path) -> None:
    recipe = _recipe(tmp_path)
    assert recipe.gptq is not None
    branches = recipe.gptq.branches()
    assert branches == [ACT, NO_ACT, "gptq-3bit-nogroup-actorder_True"]
    manifest = Manifest(build_name="r", recipe_sha256="x")
    figures = ((115_000_000, 33.3, 0.2), (114_000_000, 38.8, 0.3), (90_000_000, 80.0, 0.9))
    for branch, (size, ppl, kld) in zip(branches, figures, strict=True):
        manifest.gptq[branch] = _artifact(recipe, branch, size, ppl, kld)
    card = render_folder_card(recipe, manifest, GPTQ)
    tree = "https://huggingface.co/tester/Tiny-GPTQ/tree"
    rows = [
        f"| [{ACT}]({tree}/{ACT}) | 4 | 64 | Yes | 0.1 | calibration.txt | 256 | 115.0 MB | Yes | 33.30 | 0.2000 |",
        f"| [main]({tree}/main) | 4 | 64 | No | 0.1 | calibration.txt | 256 | 114.0 MB | Yes | 38.80 | 0.3000 |",
        "actorder_True) | 3 | None | Yes | 0.1 | calibration.txt | 256 | 90.0 MB | No | 80.00 | 0.9000 |",
    ]
    for row in rows:
        assert row in card
    assert "| for older kernels |" in card
    assert f"hf download tester/Tiny-GPTQ --revision {ACT} --local-dir Tiny-GPTQ-{ACT}" in card
    assert f"vllm serve tester/Tiny-GPTQ --revision {ACT}" in card
    assert "library_name: transformers" in card and "- gptq" in card
    assert "[GGUF models for CPU and GPU inference with llama.cpp](https://huggingface.co/tester/Tiny-GGUF)" in card


def test_a_failed_variant_is_left_out_of_the_table(tmp_path: Path) -> None:
    recipe = _recipe(tmp_path)
    assert recipe.gptq is not None
    manifest = Manifest(build_name="r", recipe_sha256="x")
    for branch in recipe.gptq.branches():
        manifest.gptq[branch] = _artifact(recipe, branch, 1_000_000, 30.0, 0.1)
    failed = recipe.gptq.branches()[2]
    manifest.gptq[failed] = manifest.gptq[failed].model_copy(update={"status": "failed", "failure": "no answer"})
    assert f"[{failed}]" not in render_folder_card(recipe, manifest, GPTQ)


def test_the_gguf_card_links_the_gptq_repo(tmp_path: Path) -> None:
    card = render_card(_recipe(tmp_path))
    assert "(https://huggingface.co/tester/Tiny-GPTQ)" in card
