"""The AWQ card from a manifest alone: its branch table, run instructions, and the sibling link on the GGUF card."""

from __future__ import annotations

from pathlib import Path

from support.paths import FIXTURES

from publisher.cards import render_card
from publisher.cards.gptq import render_folder_card
from publisher.folder_formats import AWQ
from publisher.manifest import Artifact, AwqParameters, Manifest, QualityResult, folder_digest
from publisher.recipe import Recipe, load_recipe

AWQ_SECTION = """awq:
  samples: 16
  seq_len: 256
  variants:
    - {group_size: 64, description: the usual one}
    - {group_size: 128, zero_point: false}
"""


def _recipe(tmp_path: Path) -> Recipe:
    path = tmp_path / "r.yaml"
    minimal = (FIXTURES / "recipes" / "minimal.yaml").read_text(encoding="utf-8")
    path.write_text(minimal + AWQ_SECTION, encoding="utf-8")
    return load_recipe(path)


def _artifact(recipe: Recipe, branch: str, size: int, ppl: float, kld: float) -> Artifact:
    assert recipe.awq is not None
    files = {"model.safetensors": "1" * 64, "config.json": "2" * 64}
    params = AWQ.make_parameters(
        recipe.awq.variant(branch),
        dataset="calibration.txt",
        dataset_sha256="3" * 64,
        samples=16,
        seq_len=256,
        branch=branch,
        quantizer="gptqmodel 7.6.0",
    )
    assert isinstance(params, AwqParameters)
    return Artifact(
        quant_type=branch,
        path=f"awq/{branch}",
        size_bytes=size,
        sha256=folder_digest(files),
        bits_per_weight=5.0,
        fingerprint="f",
        format="awq",
        files=files,
        status="passed",
        quality=QualityResult(perplexity=ppl, kl_divergence=kld, top1_agreement=0.8, tokens=512),
        awq=params,
    )


def test_the_branch_table_shows_each_variant_as_recorded(tmp_path: Path) -> None:
    recipe = _recipe(tmp_path)
    assert recipe.awq is not None
    manifest = Manifest(build_name="r", recipe_sha256="x")
    manifest.awq["awq-4bit-64g"] = _artifact(recipe, "awq-4bit-64g", 118_000_000, 30.5, 0.18)
    manifest.awq["awq-4bit-128g-sym"] = _artifact(recipe, "awq-4bit-128g-sym", 116_000_000, 35.0, 0.25)
    card = render_folder_card(recipe, manifest, AWQ)
    tree = "https://huggingface.co/tester/Tiny-AWQ/tree"
    assert "| Branch | Bits | GS | Version | Zero point | AWQ Dataset | Seq Len | Size | PPL | KLD | Desc |" in card
    assert f"| [main]({tree}/main) | 4 | 64 | GEMM | Yes | calibration.txt | 256 | 118.0 MB | 30.50 | 0.1800 |" in card
    assert "| the usual one |" in card
    sym = f"| [awq-4bit-128g-sym]({tree}/awq-4bit-128g-sym) | 4 | 128 | GEMM | No | calibration.txt | 256 | 116.0 MB |"
    assert sym in card
    assert "hf download tester/Tiny-AWQ --revision awq-4bit-128g-sym --local-dir Tiny-AWQ-awq-4bit-128g-sym" in card
    assert "vllm serve tester/Tiny-AWQ --revision awq-4bit-128g-sym --quantization awq" in card
    assert "--model-id tester/Tiny-AWQ --revision awq-4bit-128g-sym --quantize awq" in card
    assert "library_name: transformers" in card and "- awq" in card and "- 4-bit" in card
    assert "# Tiny - AWQ" in card and "GPTQ" not in card


def test_the_gguf_card_links_the_awq_repo(tmp_path: Path) -> None:
    card = render_card(_recipe(tmp_path))
    assert "(https://huggingface.co/tester/Tiny-AWQ)" in card
