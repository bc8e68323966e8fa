"""Fast tests of the evaluation library: answer checks, probe set, diff messages, KL arithmetic."""

from __future__ import annotations

import mmap
import resource
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from publisher import evaluation as evaluate
from publisher import prompts
from publisher.errors import SmokeTestError
from publisher.evaluation import parity, quality, smoke
from publisher.recipe import Expectation, Recipe, SmokePrompt
from publisher.runtimes.llama_cpp import open_model
from publisher.runtimes.memory import PeakMemory, status_kib


def make_recipe(**smoke_fields: Any) -> Recipe:
    return Recipe.model_validate(
        {
            "source": {"path": "model"},
            "model": {
                "name": "Tiny",
                "creator": "me",
                "license": "mit",
                "prompt_template": smoke_fields.pop("prompt_template", "chatml"),
                "system_message": "Be brief.",
            },
            "quantize": {"types": ["Q2_K", "Q8_0"]},
            "smoke": smoke_fields,
            "card": {"profile": {"quantized_by": "me"}},
            "publish": {"repo_id": "me/tiny-GGUF"},
        }
    )


# --- answer checks -------------------------------------------------------------------------------


def test_required_expectation_is_case_insensitive() -> None:
    problems, advisories = smoke.check_answer("The capital is PARIS.", [Expectation(contains=["paris"])], "Q8_0")
    assert (problems, advisories) == ([], [])
    problems, _ = smoke.check_answer("The capital is Lyon.", [Expectation(contains=["Paris"])], "Q8_0")
    assert len(problems) == 1 and "lacks 'Paris'" in problems[0] and "Lyon" in problems[0]


def test_types_limit_where_an_expectation_applies() -> None:
    only_q8 = Expectation(contains=["Paris"], types=["Q8_0"])
    assert smoke.check_answer("Lyon", [only_q8], "Q2_K") == ([], [])
    assert smoke.check_answer("Lyon", [only_q8], "Q8_0")[0]
    assert smoke.applies(only_q8, "q8_0")


def test_advisory_failures_do_not_fail() -> None:
    advisory = Expectation(contains=["Paris"], required=False)
    banned = Expectation(not_contains=["as an AI"], required=False)
    problems, advisories = smoke.check_answer("As an AI, I think Lyon.", [advisory, banned], "Q2_K")
    assert problems == []
    assert [a.split(":")[0] for a in advisories] == ["the answer lacks 'Paris'", "the answer contains 'as an AI'"]


def test_empty_and_replacement_characters_are_always_problems() -> None:
    assert smoke.check_answer("  \n", [], "Q8_0")[0] == ["the answer is empty"]
    problems, _ = smoke.check_answer("Par\ufffds", [], "Q8_0")
    assert len(problems) == 1 and "U+FFFD" in problems[0]


def test_expect_contains_shorthand_is_required() -> None:
    item = SmokePrompt(prompt="Capital of France?", expect_contains="Paris")
    problems, _ = smoke.check_answer("Rome", item.expectations(), "Q2_K")
    assert len(problems) == 1


def test_stop_strings_cut_the_answer() -> None:
    assert smoke.stop_strings("chatml") == ("<|im_end|>", "<|im_start|>")
    assert smoke.stop_strings("{prompt}") == ()
    assert smoke._cut_at_stop("Paris.<|im_end|>\n<|im_start|>user", smoke.stop_strings("chatml")) == ("Paris.", True)
    assert smoke._cut_at_stop("Paris.", ("USER:",)) == ("Paris.", False)


def test_default_prompt_when_the_recipe_has_none() -> None:
    recipe = make_recipe()
    assert [p.prompt for p in smoke.prompts_of(recipe)] == [smoke.DEFAULT_PROMPT]
    item = SmokePrompt(prompt="x", system_message="Own.")
    assert smoke.system_message(recipe, item) == "Own."
    assert smoke.system_message(recipe, SmokePrompt(prompt="x")) == "Be brief."


def test_smoke_problems_prefix_the_prompt() -> None:
    from publisher.manifest import SmokeAnswer, SmokeResult

    result = SmokeResult(
        passed=False,
        answers=[SmokeAnswer(prompt="Capital?", output="", passed=False, problems=["the answer is empty"])],
    )
    assert evaluate.smoke_problems(result) == ["'Capital?': the answer is empty"]


# --- probes and messages -------------------------------------------------------------------------


def test_shipped_probes_cover_the_hard_cases() -> None:
    texts = "".join(p.text for p in parity.shipped_probes())
    assert "\u200d" in texts  # emoji ZWJ sequences
    assert "巴黎" in texts and "\t\t" in texts and "\n\n\n" in texts and "    return" in texts
    assert any(ch.isdigit() for ch in texts)


def test_probe_set_adds_specials_rendered_prompts_and_extras() -> None:
    recipe = make_recipe(prompts=[{"prompt": "Capital of France?"}], extra_probes=["ünïcödé"])
    probes = parity.probe_set(recipe, ["<|im_start|>", "<|im_end|>"])
    names = [p.name for p in probes]
    assert "special token <|im_start|>" in names and "special tokens between words" in names
    rendered = next(p.text for p in probes if p.name == "rendered prompt 1")
    assert rendered == prompts.render("chatml", "Capital of France?", "Be brief.")
    assert probes[-1] == parity.Probe("extra probe 1", "ünïcödé")


def test_first_difference() -> None:
    assert parity.first_difference([1, 2, 3], [1, 2, 3]) is None
    assert parity.first_difference([1, 2, 3], [1, 5, 3]) == 1
    assert parity.first_difference([1, 2], [1, 2, 3]) == 2


def test_mismatch_message_names_both_tokens() -> None:
    line = parity.describe_token_mismatch(
        "English prose", 3, [9, 9, 9, 260], [9, 9, 9, 284], " the", " and", "tokenizer.json"
    )
    assert line == "probe 'English prose', token 3: llama.cpp 260 ' the' vs tokenizer.json 284 ' and'"
    same = parity.describe_token_mismatch("p", 0, [284], [260], " the", " the", "tokenizer.json", " and")
    assert same.endswith("260 ' the' (same text, other id: tokenizer.json has 284 as ' and')")
    short = parity.describe_token_mismatch("x", 2, [1, 2], [1, 2, 3], None, " c", "tokenizer.json")
    assert "llama.cpp nothing (ends after 2 tokens) vs tokenizer.json 3 ' c'" in short


def test_missing_source_tokenizer_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(SmokeTestError, match="neither tokenizer.json nor tokenizer.model") as err:
        parity.source_tokenizer(tmp_path)
    assert "\n" not in str(err.value)


def test_sentencepiece_fallback_without_tokenizer_json(tmp_path: Path) -> None:
    import io

    import sentencepiece

    lines = [line for line in quality.quality_text(make_recipe()).splitlines() if line.strip()]
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=model, vocab_size=300, model_type="bpe", minloglevel=2
    )
    (tmp_path / "tokenizer.model").write_bytes(model.getvalue())
    source = parity.source_tokenizer(tmp_path)
    assert source.kind == "tokenizer.model" and not source.parses_special and source.special_tokens() == []
    ids = source.encode("The lighthouse keeper")
    assert source.size() == 300 and ids and all(0 <= i < 300 for i in ids)
    assert "".join(source.piece(i) for i in ids).strip() == "The lighthouse keeper"
    assert (source.raw(ids[0]) or "").startswith("\u2581")


def test_chat_template_rendering_and_difference() -> None:
    chatml_jinja = (
        "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    )
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    rendered = parity.render_chat_template(chatml_jinja, messages, "<s>", "</s>")
    assert rendered == prompts.render("chatml", "Hi", "Be brief.")
    assert parity.describe_text_difference(rendered, rendered, "ChatML") is None
    zephyr = prompts.render("zephyr", "Hi", "Be brief.")
    message = parity.describe_text_difference(rendered, zephyr, "Zephyr")
    assert message is not None and message.startswith("first difference at character 2:")
    assert "'<|im_start|>system" in message and "'<|system|>" in message


# --- KL arithmetic -------------------------------------------------------------------------------


def _random_logp(rng: np.random.Generator, rows: int, vocab: int, scale: float) -> np.ndarray:
    return quality.log_softmax(rng.normal(size=(rows, vocab)) * scale)


def test_log_softmax_normalises() -> None:
    logp = quality.log_softmax(np.array([[1000.0, 1000.0], [0.0, -np.inf]]))
    assert np.allclose(np.exp(logp).sum(axis=-1), 1.0)
    assert np.allclose(logp[0], np.log(0.5)) and logp[1, 0] == 0.0


def test_top_k_sorted_with_rest_mass() -> None:
    logp = np.log(np.array([[0.1, 0.6, 0.3]]))
    ids, top, rest = quality.top_k(logp, 2)
    assert ids.tolist() == [[1, 2]] and np.allclose(np.exp(top), [[0.6, 0.3]]) and np.allclose(np.exp(rest), [0.1])


def test_kl_full_is_zero_for_identical_and_positive_otherwise() -> None:
    rng = np.random.default_rng(0)
    p = _random_logp(rng, 4, 50, 3.0)
    q = _random_logp(rng, 4, 50, 3.0)
    assert np.allclose(quality.kl_full(p, p), 0.0)
    assert (quality.kl_full(p, q) > 0).all()


def test_top_k_kl_is_exact_with_the_whole_vocabulary_and_a_lower_bound_otherwise() -> None:
    rng = np.random.default_rng(1)
    p = _random_logp(rng, 16, 200, 2.5)
    q = quality.log_softmax(p + rng.normal(size=p.shape) * 0.3)
    exact = quality.kl_full(p, q)
    for k, check in ((200, "equal"), (20, "below")):
        ids, top, rest = quality.top_k(p, k)
        approx = quality.kl_top_k(top, rest, np.take_along_axis(q, ids.astype(np.intp), axis=-1))
        if check == "equal":
            assert np.allclose(approx, exact, atol=1e-6)
        else:
            assert (approx <= exact + 1e-12).all() and approx.mean() > 0.5 * exact.mean()


@pytest.mark.parametrize("max_full_entries", [10**9, 0], ids=["full", "top-k"])
def test_reference_round_trip(max_full_entries: int) -> None:
    rng = np.random.default_rng(2)
    logp = [_random_logp(rng, 8, 2000, 3.0) for _ in range(2)]
    quant = [quality.log_softmax(part + rng.normal(size=part.shape) * 0.2) for part in logp]
    arrays = quality.pack_reference({"n_vocab": 2000}, np.zeros((2, 17), dtype=np.int32), logp, max_full_entries)
    ref = quality.unpack_reference(arrays)
    assert ref.meta["storage"] == ("full" if max_full_entries else f"top-{quality.TOP_K}")
    assert ref.top1.tolist() == np.concatenate([p.argmax(-1) for p in logp]).tolist()
    kl = np.concatenate([ref.kl(slice(8 * i, 8 * i + 8), quant[i]) for i in range(2)])
    exact = np.concatenate([quality.kl_full(p, q) for p, q in zip(logp, quant, strict=True)])
    assert np.allclose(kl, exact, rtol=0.02)  # float16 rounding / top-1024 of 2000 tokens


def test_quality_text_from_the_recipe(tmp_path: Path) -> None:
    assert len(quality.quality_text(make_recipe()).split()) > 1500
    recipe = make_recipe(quality={"text": str(tmp_path / "missing.txt")})
    with pytest.raises(SmokeTestError, match="smoke.quality.text: cannot read"):
        quality.quality_text(recipe)


def test_stale_reference_is_refused(tmp_path: Path) -> None:
    recipe = make_recipe(quality={"context_length": 64})
    meta = quality._settings(recipe, quality.quality_text(recipe)) | {"context_length": 128}
    arrays = quality.pack_reference(meta, np.zeros((1, 128), dtype=np.int32), [np.zeros((63, 10))])
    path = tmp_path / "ref.npz"
    np.savez(path, **arrays)  # type: ignore[arg-type]
    with pytest.raises(SmokeTestError, match=r"other quality settings \(context_length changed\)"):
        quality.load_reference_logits(path, recipe)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(SmokeTestError, match="unreadable reference logits"):
        quality.load_reference_logits(tmp_path / "junk.npz")


# --- loading and memory --------------------------------------------------------------------------


def test_a_file_llama_cpp_cannot_load_is_a_one_line_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(SmokeTestError) as err:
        open_model(junk, vocab_only=True)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{junk}: llama.cpp cannot load this file: ")
    with pytest.raises(SmokeTestError, match="no such GGUF file"):
        evaluate.smoke_test(tmp_path / "absent.gguf", make_recipe(), "Q8_0")


def test_each_measurement_counts_only_its_own_peak() -> None:
    if status_kib("VmRSS") is None:
        pytest.skip("no /proc/self/status here")
    # Fresh anonymous mappings: memory from malloc may reuse pages that are already resident
    # late in a long test session, and then the RSS would not grow at all.
    first = PeakMemory()
    big_block = touch_fresh_pages(64 * 1024 * 1024)
    big = first.peak_bytes()
    big_block.close()
    second = PeakMemory()
    small = touch_fresh_pages(8 * 1024 * 1024)
    assert big is not None and big >= 60 * 1024 * 1024
    assert (second.peak_bytes() or 0) < 32 * 1024 * 1024
    small.close()


def test_measuring_leaves_the_process_peak_alone() -> None:
    """``/usr/bin/time`` and a parent's ``wait4`` must still see the process's true peak."""
    if status_kib("VmHWM") is None:
        pytest.skip("no /proc/self/status here")
    touch_fresh_pages(64 * 1024 * 1024).close()  # the high-water mark now lies above the current RSS
    record = status_kib("VmHWM")
    PeakMemory().peak_bytes()
    assert status_kib("VmHWM") == record
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss >= (record or 0)


def touch_fresh_pages(size: int) -> mmap.mmap:
    """Map ``size`` bytes of new anonymous memory and write to every page, so all of it is resident."""
    block = mmap.mmap(-1, size)
    for offset in range(0, size, mmap.PAGESIZE):
        block[offset] = 1
    return block


def test_generated_probes_put_each_special_token_in_five_places_and_text_in_four_normal_forms() -> None:
    import unicodedata

    from publisher.evaluation.parity import CHARACTER_CLASSES, NORMALIZATION_SAMPLE, generated_probes

    probes = {p.name: p.text for p in generated_probes(["<a>", "<b>"])}
    assert probes["special token <a> doubled"] == "<a><a>"
    assert probes["special token <b> glued to words"] == "word<b>word"
    assert probes["special token <a> between spaces"] == "a <a> b"
    assert probes["special token <a> between newlines"] == "a\n<a>\nb"
    forms = [probes[f"Unicode {form}"] for form in ("NFC", "NFD", "NFKC", "NFKD")]
    assert len(set(forms)) == 4 and forms[1] == unicodedata.normalize("NFD", NORMALIZATION_SAMPLE)
    assert len(probes) == 2 * 5 + 1 + 4 + len(CHARACTER_CLASSES)
