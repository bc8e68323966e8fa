"""A SentencePiece vocabulary without byte tokens is refused before llama.cpp can abort on it."""

from __future__ import annotations

from pathlib import Path

import gguf
import pytest

from publisher.runtimes.llama_cpp import ModelLoadError, open_model, unspellable_bytes

BYTE_TOKENS = [f"<0x{b:02X}>" for b in range(256)]


def _vocabulary(path: Path, model: str, tokens: list[str]) -> Path:
    """A GGUF holding only a vocabulary (no tensors: llama.cpp itself would not load it)."""
    writer = gguf.GGUFWriter(path, arch="llama")
    writer.add_tokenizer_model(model)
    writer.add_token_list(tokens)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_byte_tokens_or_a_bpe_vocabulary_leave_nothing_unspellable(tmp_path: Path) -> None:
    assert unspellable_bytes(_vocabulary(tmp_path / "spm.gguf", "llama", ["<unk>", *BYTE_TOKENS, "▁the"])) == []
    assert unspellable_bytes(_vocabulary(tmp_path / "bpe.gguf", "gpt2", ["a", "b"])) == []


def test_a_vocabulary_without_byte_tokens_names_what_it_cannot_spell(tmp_path: Path) -> None:
    ascii_only = [chr(b) for b in range(0x20, 0x7F)]
    path = _vocabulary(tmp_path / "spm.gguf", "llama", ["<unk>", "<s>", "</s>", *ascii_only])
    missing = unspellable_bytes(path)
    assert missing[0] == 0x01 and 0x41 not in missing and 0x80 in missing and 0xF4 in missing
    assert 0xC0 not in missing and 0xFF not in missing  # never in UTF-8 text
    with_some = _vocabulary(tmp_path / "some.gguf", "llama", [*ascii_only, *BYTE_TOKENS[:0x80]])
    assert unspellable_bytes(with_some)[0] == 0x80

    with pytest.raises(ModelLoadError) as err:
        open_model(path, vocab_only=True)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{path}: llama.cpp would abort the whole process")
    assert "byte_fallback" in message and "(first <0x01>)" in message
