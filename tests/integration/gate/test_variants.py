"""Crafted variants of the real SmolLM2 tokenizer and chat template: does the gate block each, and rightly?

Each variant (see ``support.gate_variants``) is run through the checks the smoke stage makes of
every file: tokenizer parity (probes, broad sample, structure, special tokens) and template
parity (source, renderings across conversation shapes); a file is blocked when either fails,
as the stage does. A "passes" verdict is backed by an independent comparison: llama.cpp and
transformers, called directly, tokenize every string of the broad sample alike.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from support.gate_models import copy_tokenizer
from support.gate_variants import VARIANTS, Variant, convert_vocabularies
from support.smollm2_models import demo_recipe

from publisher.evaluation import template_parity, tokenizer_parity
from publisher.evaluation.sample import broad_sample

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def variant_files(
    smollm2_source: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, tuple[Path, Path, str | None]]:
    """Each variant's edited source folder, the vocabulary GGUF the gate compares it with, the converter's refusal."""
    root = tmp_path_factory.mktemp("variants")
    original = root / "original.gguf"
    jobs = [(copy_tokenizer(smollm2_source, root / "original"), original)]
    found = {}
    for i, variant in enumerate(VARIANTS):
        folder = copy_tokenizer(smollm2_source, root / f"v{i}")
        if (smollm2_source / "chat_template.jinja").is_file():
            shutil.copyfile(smollm2_source / "chat_template.jinja", folder / "chat_template.jinja")
        variant.edit(folder)
        gguf = root / f"v{i}.gguf" if variant.converted else original
        if variant.converted:
            jobs.append((folder, gguf))
        found[variant.name] = (folder, gguf)
    refused = convert_vocabularies(jobs)
    assert original not in refused
    return {name: (folder, gguf, refused.get(gguf)) for name, (folder, gguf) in found.items()}


def gate(gguf: Path, source: Path) -> list[str]:
    """The reasons the smoke stage would block this file for, from tokenizer and template parity."""
    recipe = demo_recipe()
    reasons = []
    tokens = tokenizer_parity(gguf, source, recipe)
    if not tokens.passed:
        reasons.append(f"tokenizer parity: {tokens.first_mismatch}")
    chat = template_parity(gguf, recipe, source)
    if chat.source_matches is False:
        reasons.append(f"chat template: {chat.source_difference}")
    return reasons


def independent_differences(gguf: Path, source: Path) -> list[str]:
    """Sample strings llama.cpp and transformers, called directly, tokenize differently (and BOS/EOS added)."""
    import llama_cpp
    from transformers import AutoTokenizer

    theirs = AutoTokenizer.from_pretrained(str(source), local_files_only=True)
    ours = llama_cpp.Llama(model_path=str(gguf), vocab_only=True, verbose=False)
    try:
        differ = [
            text
            for text in broad_sample()
            if list(ours.tokenize(text.encode("utf-8"), add_bos=False, special=True))
            != list(theirs.encode(text, add_special_tokens=False))
        ]
        # with special tokens: what each adds around a text (BOS, EOS)
        if list(ours.tokenize(b"Hello world", add_bos=True, special=True)) != list(theirs.encode("Hello world")):
            differ.append("'Hello world' with special tokens")
        return differ
    finally:
        ours.close()


def test_there_are_at_least_fifteen_variants_blocked_and_passed() -> None:
    assert len(VARIANTS) >= 15
    assert {v.blocked for v in VARIANTS} == {"convert", "smoke", None}


@pytest.mark.parametrize("variant", VARIANTS, ids=[v.name for v in VARIANTS])
def test_the_build_reaches_the_right_verdict(
    variant: Variant, variant_files: dict[str, tuple[Path, Path, str | None]]
) -> None:
    source, gguf, refused = variant_files[variant.name]
    if variant.blocked == "convert":
        assert refused is not None and variant.reason in refused, refused
        return
    assert refused is None
    reasons = gate(gguf, source)
    if variant.blocked == "smoke":
        assert reasons, f"{variant.name} passed the gate"
        assert all("\n" not in reason for reason in reasons)
        assert variant.reason in reasons[0], reasons
    else:
        assert reasons == []
        assert independent_differences(gguf, source) == []
