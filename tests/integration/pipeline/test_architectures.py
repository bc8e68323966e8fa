"""Every architecture family the gate promises: convert, quantize, smoke and card on tiny random models.

Each model is written from a transformers config (two layers, hidden size 64, random weights) with
SmolLM2's BPE tokenizer or a SentencePiece tokenizer trained in the test. The answers of random
weights are noise, so the recipes set no expectations: what must hold is that llama.cpp loads
every file, the tokenizer parity gate passes against the source's own tokenizer, quality is
measured, and the card lists each file. Two SentencePiece variants that llama.cpp tokenizes
differently from the source must be blocked.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from support.tiny_models import ARCHITECTURES, TinyArch, make_tiny_model

from publisher import pipeline
from publisher.evaluation.kv_cache import allocated_kv_cache
from publisher.manifest import Manifest
from publisher.recipe import load_recipe

TYPES = ["Q8_0", "Q4_K_M"]
KV_CONTEXT = 32768
# (cells, layers) of each KV cache llama.cpp makes: Gemma 3's five sliding layers keep their window (32)
# plus one 512-token micro-batch, rounded up to 256 cells; every other model one cache over all layers.
EXPECTED_CACHES = {"sliding": [(KV_CONTEXT, 1), (768, 5)]}


def arch_key(arch: Any) -> str:
    return "sliding" if arch.sliding_layers else "full"


# llama.cpp reads Phi-3's special-token flags by model name: a general.name containing "phi3" or
# "phi-3" makes it look up "</s>", "<unk>", "<s>" and "<|endoftext|>" (llama-vocab.cpp), and a vocabulary
# without them fails to load ("unordered_map::at"). The Phi-4 layout tested here (Phi-3 architecture,
# GPT-2 style BPE) carries none of them, as Phi-4 itself does not, so it is named as Phi-4 is.
MODEL_NAMES = {"phi3": "Tiny Phi-4 layout"}


def _recipe(folder: Path, arch: TinyArch, source: Path, model_name: str | None = None) -> Path:
    data: dict[str, Any] = {
        "name": arch.key,
        "source": {"path": str(source)},
        "model": {
            "name": model_name or MODEL_NAMES.get(arch.key, f"Tiny {arch.key}"),
            "creator": "Test",
            "license": "apache-2.0",
            "base_model": f"test/tiny-{arch.key}",
            "prompt_template": "none" if arch.tokenizer == "spm" else arch.prompt_template,
        },
        "quantize": {"types": TYPES},
        "smoke": {
            "max_tokens": 8,
            "context_length": 256,
            "prompts": [{"prompt": "The capital of France is"}],
            "quality": {"context_length": 64, "max_chunks": 2},
        },
        "card": {"profile": {"quantized_by": "tester"}},
        "publish": {"repo_id": f"tester/tiny-{arch.key}-GGUF"},
    }
    path = folder / f"{arch.key}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def _build(tmp_path: Path, arch: TinyArch, model_name: str | None = None) -> pipeline.BuildResult:
    pytest.importorskip("torch")
    source = make_tiny_model(arch, tmp_path / "source" / arch.key)
    return pipeline.execute(load_recipe(_recipe(tmp_path, arch, source, model_name)), tmp_path / "work")


def _all_files(manifest: Manifest) -> list[Any]:
    assert manifest.reference is not None
    return [manifest.reference, *manifest.artifacts.values()]


@pytest.mark.slow
@pytest.mark.parametrize("arch", [pytest.param(arch, id=arch.key) for arch in ARCHITECTURES])
def test_architecture_builds_through_the_gate(tmp_path: Path, arch: TinyArch) -> None:
    result = _build(tmp_path, arch)

    assert [(a.quant_type, a.failure) for a in result.failures()] == []
    assert result.problems == []
    assert [(s.name, s.status) for s in result.stages] == [
        (name, "ran") for name in ("fetch", "convert", "quantize", "smoke", "card")
    ]
    for artifact in _all_files(result.manifest):
        assert artifact.status == "passed"
        assert artifact.tokenizer is not None and artifact.tokenizer.mismatches == 0
        assert artifact.tokenizer.probes >= 20 and artifact.tokenizer.vocab_mismatches == 0
        assert artifact.quality is not None and artifact.quality.tokens > 0
    card = (result.build_dir / "README.md").read_text(encoding="utf-8")
    for artifact in result.manifest.artifacts.values():
        assert f"[{artifact.path}]" in card
    # the card's KV-cache figure is what llama.cpp allocates (sliding-window layers keep a smaller cache)
    source = result.manifest.source
    assert source is not None and source.facts is not None and source.facts.architecture is not None
    arch = source.facts.architecture
    assert result.manifest.reference is not None
    allocated, caches = allocated_kv_cache(result.build_dir / result.manifest.reference.path, KV_CONTEXT)
    assert abs(allocated - arch.kv_cache_bytes(KV_CONTEXT)) <= 0.01 * arch.kv_cache_bytes(KV_CONTEXT), caches
    assert caches == EXPECTED_CACHES.get(arch_key(arch), [(KV_CONTEXT, arch.n_layers)])


@pytest.mark.slow
@pytest.mark.parametrize(
    ("options", "cause"),
    [
        ({"normalization_rule_name": "nmt_nfkc"}, "a SentencePiece normalizer llama.cpp does not apply"),
        ({"add_dummy_prefix": True}, "a dummy prefix the converter drops for Gemma 3"),
    ],
    ids=["nfkc-normalizer", "dummy-prefix"],
)
def test_sentencepiece_differences_are_blocked(tmp_path: Path, options: dict[str, Any], cause: str) -> None:
    gemma = next(a for a in ARCHITECTURES if a.key == "gemma3")
    arch = TinyArch(gemma.key, gemma.config_class, gemma.overrides, "spm", gemma.spm_options | options)
    result = _build(tmp_path, arch)

    failed = result.failures()
    assert {a.quant_type for a in failed} == {"F16", *TYPES}, cause
    for artifact in failed:
        assert artifact.failure is not None and artifact.failure.startswith("tokenizer parity: "), artifact.failure
    assert [s.status for s in result.stages if s.name == "card"] == ["blocked"]


@pytest.mark.slow
def test_a_phi3_name_without_phi3_tokens_is_blocked_with_llama_cpps_reason(tmp_path: Path) -> None:
    phi = next(a for a in ARCHITECTURES if a.key == "phi3")
    result = _build(tmp_path, phi, model_name="Tiny Phi-3 finetune")

    failed = result.failures()
    assert [a.quant_type for a in failed][:1] == ["F16"]
    reason = failed[0].failure or ""
    assert "unordered_map::at" in reason or "vocabulary" in reason, reason
    assert [s.status for s in result.stages if s.name == "card"] == ["blocked"]


@pytest.mark.slow
def test_a_sentencepiece_vocabulary_without_byte_tokens_is_blocked_before_llama_cpp_aborts(tmp_path: Path) -> None:
    import subprocess
    import sys

    llama = next(a for a in ARCHITECTURES if a.key == "llama-spm")
    arch = TinyArch(llama.key, llama.config_class, llama.overrides, "spm", {"byte_fallback": False})
    result = _build(tmp_path, arch)  # in this process: had llama.cpp aborted, the test run would have ended here

    failed = result.failures()
    assert {a.quant_type for a in failed} == {"F16", *TYPES}
    for artifact in failed:
        reason = artifact.failure or ""
        assert reason.startswith("llama.cpp would abort the whole process (std::out_of_range)"), reason
        assert reason.count("llama.cpp would abort") == 1 and "byte_fallback" in reason, reason
    assert [s.status for s in result.stages if s.name == "card"] == ["blocked"]

    # What the check spares the build: llama.cpp itself loads the file and tokenizes plain text,
    # then dies on a character the vocabulary cannot spell.
    assert result.manifest.reference is not None
    gguf = result.build_dir / result.manifest.reference.path
    script = (
        "import sys, llama_cpp\n"
        "llm = llama_cpp.Llama(model_path=sys.argv[1], vocab_only=True, verbose=False)\n"
        "llm.tokenize(sys.argv[2].encode(), add_bos=False)\n"
    )
    for text, status in (("The capital of France is", 0), ("Emoji 😀 and 字", -6)):
        done = subprocess.run([sys.executable, "-c", script, str(gguf), text], capture_output=True, check=False)
        assert done.returncode == status, (text, done.returncode, done.stderr[-300:])
