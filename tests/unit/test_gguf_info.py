"""gguf_info reads real bits per weight and metadata from GGUF files written here with the gguf package."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import pytest

from publisher import gguf_info
from publisher.errors import ManifestError


def _write(path: Path) -> None:
    writer = gguf.GGUFWriter(path, arch="llama")
    writer.add_name("Tiny Test")
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0)
    writer.add_chat_template("{{ messages }}")
    writer.add_token_list(["<s>", "a", "b"])
    rng = np.random.default_rng(0)
    weights = rng.standard_normal((64, 256)).astype(np.float32)
    q8 = gguf.quants.quantize(weights, gguf.GGMLQuantizationType.Q8_0)
    writer.add_tensor("blk.0.ffn_up.weight", q8, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    writer.add_tensor("blk.0.attn_q.weight", rng.standard_normal((32, 64)).astype(np.float16))
    writer.add_tensor("blk.0.attn_norm.weight", np.ones(64, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_bits_per_weight_counts_every_tensor_type(tmp_path: Path) -> None:
    path = tmp_path / "tiny.gguf"
    _write(path)
    info = gguf_info.read_info(path)
    # Q8_0: 34 bytes per 32 weights; F16: 2 bytes; F32: 4 bytes.
    q8_bytes, f16_bytes, f32_bytes = 64 * 256 // 32 * 34, 32 * 64 * 2, 64 * 4
    elements = 64 * 256 + 32 * 64 + 64
    assert info.total_elements == elements
    assert info.total_tensor_bytes == q8_bytes + f16_bytes + f32_bytes
    assert info.bits_per_weight == pytest.approx((q8_bytes + f16_bytes + f32_bytes) * 8 / elements)
    assert info.tensor_types == {"F16": 1, "F32": 1, "Q8_0": 1}
    # The F16 and F32 tensors pull the file above Q8_0's nominal 8.5 bits.
    assert gguf_info.bits_per_weight(path) > 8.5


def test_fast_tensor_table_agrees_with_the_gguf_reader(tmp_path: Path) -> None:
    path = tmp_path / "tiny.gguf"
    _write(path)
    table = gguf_info.tensor_table(path)
    reader = gguf.GGUFReader(path)
    assert [(t.name, t.type_name, t.elements, t.nbytes) for t in table] == [
        (t.name, t.tensor_type.name, int(t.n_elements), int(t.n_bytes)) for t in reader.tensors
    ]
    assert gguf_info.bits_per_weight(path) == round(gguf_info.read_info(path).bits_per_weight, 4)


def test_metadata_values_are_decoded(tmp_path: Path) -> None:
    path = tmp_path / "tiny.gguf"
    _write(path)
    info = gguf_info.read_info(path)
    assert (info.architecture, info.name, info.file_type) == ("llama", "Tiny Test", 7)
    assert info.chat_template == "{{ messages }}"
    assert info.vocab_size == 3
    found = gguf_info.metadata(path, ["general.name", "general.license"])
    assert found == {"general.name": "Tiny Test", "general.license": None}


def test_unreadable_file_is_a_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.gguf"
    path.write_bytes(b"GGUF" + b"\x00" * 3)
    with pytest.raises(ManifestError, match="not a readable GGUF file") as err:
        gguf_info.read_info(path)
    assert "\n" not in str(err.value)
    with pytest.raises(ManifestError, match="not a readable GGUF file .*too short"):
        gguf_info.bits_per_weight(path)
    # A valid header whose tensor table is cut off part-way.
    whole = tmp_path / "tiny.gguf"
    _write(whole)
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(whole.read_bytes()[:200])
    with pytest.raises(ManifestError, match="not a readable GGUF file"):
        gguf_info.bits_per_weight(cut)
