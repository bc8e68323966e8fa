"""The broad sample tokenizer parity compares on, and the vocabulary digest that lets a build compare it once."""

from __future__ import annotations

import unicodedata
from pathlib import Path

import numpy as np

from publisher.evaluation.sample import RANDOM_STRINGS, WINDOWS, broad_sample, sample_text
from publisher.gguf_info import tensor_table, vocabulary_sha256


def test_the_sample_is_large_fixed_and_mixed() -> None:
    sample = broad_sample()
    assert len(sample) == WINDOWS + RANDOM_STRINGS >= 2000
    assert sum(len(text) for text in sample) > 90_000
    broad_sample.cache_clear()
    assert broad_sample() == sample  # the same strings on every run
    text = sample_text()
    assert "\r\n" in text and "\r" in text.replace("\r\n", "")
    assert unicodedata.normalize("NFC", text) != text  # decomposed accents survive
    for script in ("def tokenize", "Съешь", "東京", "مرحبا", "שלום", "नमस्ते", "👨\u200d👩", "<|im_start|>", "\t"):
        assert script in text, script
    assert not any("\ud800" <= c <= "\udfff" for t in sample for c in t)


def _write_gguf(path: Path, tokens: list[str], file_type: int, tensor: np.ndarray) -> Path:
    import gguf

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_file_type(file_type)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types([1] * len(tokens))
    writer.add_tensor("token_embd.weight", tensor)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_the_vocabulary_digest_sees_the_vocabulary_and_nothing_else(tmp_path: Path) -> None:
    weights = np.zeros((4, 8), dtype=np.float32)
    reference = _write_gguf(tmp_path / "f32.gguf", ["a", "b", "c", "d"], 0, weights)
    quant = _write_gguf(tmp_path / "f16.gguf", ["a", "b", "c", "d"], 1, weights.astype(np.float16))
    swapped = _write_gguf(tmp_path / "swapped.gguf", ["a", "c", "b", "d"], 0, weights)
    assert vocabulary_sha256(reference) == vocabulary_sha256(quant)
    assert vocabulary_sha256(reference) != vocabulary_sha256(swapped)
    # the walk over the metadata still finds the tensor table behind it
    assert [(t.name, t.type_name, t.elements) for t in tensor_table(quant)] == [("token_embd.weight", "F16", 32)]
