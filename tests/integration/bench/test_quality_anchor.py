"""publisher's quality figures against llama.cpp's own llama-perplexity, on the real SmolLM2 files.

Both sides of the bench's quality section, run once on the same reference, quant, text, context and
chunks: they must see the same tokens and agree on perplexity, KL divergence and top-1 agreement.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from support.common import recipe_variant

from bench.sections.quality import base_file_tokens, direct_side, publisher_side, same_tokens
from publisher.evaluation import quality
from publisher.recipe import load_recipe
from publisher.runtimes import llama_cpp

CHUNKS = 3


@pytest.mark.slow
def test_publisher_and_llama_perplexity_agree_on_the_same_tokens(
    smollm2_ggufs: dict[str, Path], tmp_path: Path
) -> None:
    program = llama_cpp.tool("llama-perplexity")
    if program is None:
        pytest.skip(f"llama-perplexity is not built in {llama_cpp.tools_dir()}; run `make tools`")
    recipe_path = recipe_variant(tmp_path, "anchor", {"smoke.quality.max_chunks": CHUNKS})
    recipe = load_recipe(recipe_path)
    text = tmp_path / "quality.txt"
    text.write_text(quality.quality_text(recipe), encoding="utf-8")
    reference, quant = str(smollm2_ggufs["F16"]), str(smollm2_ggufs["Q2_K"])
    logits, base = tmp_path / "reference-logits.npz", tmp_path / "kld-base.bin"

    ours = publisher_side({"recipe": str(recipe_path), "reference": reference, "quants": [quant], "logits": logits})
    theirs = direct_side(
        {
            "program": str(program),
            "reference": reference,
            "quants": [quant],
            "text": str(text),
            "context": recipe.smoke.quality.context_length,
            "chunks": CHUNKS,
            "threads": os.cpu_count() or 1,
            "gpu_layers": 0,
            "base": str(base),
        }
    )

    with np.load(logits) as stored:
        assert stored["chunks"].shape == (CHUNKS, recipe.smoke.quality.context_length)
        assert same_tokens(stored["chunks"], base_file_tokens(base)) == {"same_tokens": True, "same_first_tokens": True}
    ref_name, quant_name = Path(reference).name, Path(quant).name
    # The same logits on both sides: perplexities agree to publisher's four decimals.
    assert ours["files"][ref_name]["perplexity"] == pytest.approx(theirs["files"][ref_name]["perplexity"], rel=1e-5)
    ours_q, theirs_q = ours["files"][quant_name], theirs["files"][quant_name]
    assert ours_q["perplexity"] == pytest.approx(theirs_q["perplexity"], rel=1e-5)
    assert theirs_q["kl_divergence"] > 0.1  # Q2_K of a 135M model is far from its reference
    # The reference's log-probabilities are stored as float16 here, as 16-bit steps there.
    assert ours_q["kl_divergence"] == pytest.approx(theirs_q["kl_divergence"], rel=0.01)
    assert ours_q["top1_agreement"] == pytest.approx(theirs_q["top1_agreement"], abs=2e-3)
    assert ours["work_s"] > 0 and theirs["work_s"] > 0 and theirs["cpu_s"] > 0
