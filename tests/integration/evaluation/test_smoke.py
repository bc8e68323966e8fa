"""Smoke tests of real SmolLM2 GGUFs with llama.cpp: answers, expectations, speed, memory, bad files."""

from __future__ import annotations

import shutil
from contextlib import closing
from pathlib import Path

import pytest
from support.smollm2_models import demo_recipe

from publisher import prompts
from publisher.errors import SmokeTestError
from publisher.evaluation import smoke_test
from publisher.evaluation.smoke import generate, stop_strings
from publisher.runtimes.llama_cpp import open_model

pytestmark = pytest.mark.slow


def test_q8_0_knows_paris(smollm2_ggufs: dict[str, Path], tmp_path: Path) -> None:
    # A fresh copy: pages of the session's file that an earlier test left mapped in this process
    # would already be resident, and the peak counts only what this load adds.
    gguf = Path(shutil.copy(smollm2_ggufs["Q8_0"], tmp_path / "fresh.Q8_0.gguf"))
    result = smoke_test(gguf, demo_recipe(), "Q8_0")
    assert result.passed, result.answers
    assert "paris" in result.output.lower()
    assert "<|im" not in result.output and "\ufffd" not in result.output
    assert result.tokens_per_s is not None and result.tokens_per_s > 1
    assert result.prompt_tokens_per_s is not None and result.prompt_tokens_per_s > 1
    assert result.load_s is not None and 0 < result.load_s < 60
    # every weight is read while generating, so the mapped file becomes resident
    assert result.peak_rss_bytes is not None and result.peak_rss_bytes > 0.8 * gguf.stat().st_size


def test_expectations_by_type_and_advisories(smollm2_ggufs: dict[str, Path]) -> None:
    recipe = demo_recipe(
        prompts=[
            {
                "prompt": "What is the capital of France?",
                "expect": [
                    {"contains": "Paris", "types": ["Q8_0"]},
                    {"contains": "Lyon", "required": False},
                    {"not_contains": "Paris", "types": ["Q2_K"]},
                ],
            },
            {"prompt": "Name a color.", "system_message": "Answer with one word."},
        ]
    )
    q8 = smoke_test(smollm2_ggufs["Q8_0"], recipe, "Q8_0")
    assert q8.passed and len(q8.answers) == 2
    assert q8.answers[0].advisories and "lacks 'Lyon'" in q8.answers[0].advisories[0]
    q2 = smoke_test(smollm2_ggufs["Q2_K"], recipe, "Q2_K")
    # the Q2_K-only ban on "Paris" applies (measured: Q2_K still names Paris), the Q8_0 rule does not
    assert not q2.passed
    assert len(q2.answers[0].problems) == 1 and "contains 'Paris'" in q2.answers[0].problems[0]
    assert q2.answers[1].passed


def test_generation_stops_at_im_end(smollm2_ggufs: dict[str, Path]) -> None:
    recipe = demo_recipe()
    text = prompts.render("chatml", "What is the capital of France?", recipe.model.system_message)
    llm = open_model(smollm2_ggufs["F16"], n_ctx=512)
    with closing(llm):
        gen = generate(llm, text, 64, stop_strings("chatml"))
    assert gen.stopped_by == "eog" and 0 < gen.tokens < 64
    assert gen.text == gen.text.strip() and "Paris" in gen.text


def test_truncated_gguf_is_a_one_line_error(smollm2_ggufs: dict[str, Path], tmp_path: Path) -> None:
    truncated = tmp_path / "truncated.gguf"
    with smollm2_ggufs["Q2_K"].open("rb") as src:
        truncated.write_bytes(src.read(8 << 20))
    with pytest.raises(SmokeTestError) as err:
        smoke_test(truncated, demo_recipe(), "Q2_K")
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{truncated}: llama.cpp cannot load this file: tensor '")
    assert message.endswith("data is not within the file bounds, model is corrupted or incomplete")
