"""The bench's quality section: reading llama-perplexity's output and base file, and its results.json entry."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from bench import report
from bench.proc import BenchError
from bench.sections.quality import (
    BASE_MAGIC,
    agreement,
    base_file_tokens,
    parse_perplexity_log,
    perplexity_commands,
    quality_entry,
    same_tokens,
)
from bench.stats import Comparison, Series

# The summary lines as tools/perplexity/perplexity.cpp prints them (llama-cpp-python 0.3.36's llama.cpp).
BASE_LOG = """perplexity: calculating perplexity over 8 chunks, n_ctx=256, batch_size=256, n_seq=1
[1]19.8814,[2]17.0297,[3]16.3021,[4]16.9113,[5]16.4458,[6]16.7530,[7]16.3434,[8]16.1935,
Final estimate: PPL = 16.1935 +/- 0.71370
"""
KLD_LOG = """====== Perplexity statistics ======
Mean PPL(Q)                   :  17.114521 ±   0.761253
Mean PPL(base)                :  16.193470 ±   0.713695
Cor(ln(PPL(Q)), ln(PPL(base))):  98.12%

====== KL divergence statistics ======
Mean    KLD:   0.056125 ±   0.001602
Maximum KLD:   1.203312

====== Token probability statistics ======
Same top p: 89.764 ±  0.949 %
"""


def test_reads_the_reference_run_and_a_kl_divergence_run() -> None:
    assert parse_perplexity_log(BASE_LOG) == {"perplexity": 16.1935}
    figures = parse_perplexity_log(KLD_LOG)
    assert figures == {"perplexity": 17.114521, "kl_divergence": 0.056125, "top1_agreement": pytest.approx(0.89764)}


def test_output_without_figures_is_an_error() -> None:
    with pytest.raises(BenchError, match="no final perplexity"):
        parse_perplexity_log("llama_model_load: error loading model\n")
    with pytest.raises(BenchError, match="without its perplexity"):
        parse_perplexity_log("Mean    KLD:   0.056125 ±   0.001602\n")


def _base_file(path: Path, tokens: np.ndarray, n_vocab: int = 49152) -> Path:
    n_chunk, n_ctx = tokens.shape
    with path.open("wb") as handle:  # llama-perplexity's layout: magic, n_ctx, n_vocab, n_chunk, tokens, log-probs
        handle.write(BASE_MAGIC)
        np.array([n_ctx, n_vocab, n_chunk], dtype=np.int32).tofile(handle)
        tokens.astype(np.int32).tofile(handle)
        np.zeros(64, dtype=np.uint16).tofile(handle)
    return path


def test_base_file_tokens_are_read_as_chunks(tmp_path: Path) -> None:
    tokens = np.arange(3 * 8, dtype=np.int32).reshape(3, 8)
    assert np.array_equal(base_file_tokens(_base_file(tmp_path / "base.bin", tokens)), tokens)
    other = tmp_path / "other.bin"
    other.write_bytes(b"GGUF" + bytes(40))
    with pytest.raises(BenchError, match="not a llama-perplexity log-probabilities file"):
        base_file_tokens(other)


def test_same_tokens_tells_a_shift_by_one_from_identical_chunks() -> None:
    stream = np.arange(100, 200, dtype=np.int32)
    ours = stream[:64].reshape(4, 16)
    assert same_tokens(ours, ours.copy()) == {"same_tokens": True, "same_first_tokens": True}
    bos_first = ours.copy()
    bos_first[:, 0] = 1  # set at evaluation by both sides when the model adds a BOS
    assert same_tokens(ours, bos_first) == {"same_tokens": True, "same_first_tokens": False}
    shifted = np.concatenate([[1], stream])[:64].reshape(4, 16)  # BOS prepended to the whole text
    assert same_tokens(ours, shifted)["same_tokens"] is False
    assert same_tokens(ours, ours[:3])["same_tokens"] is False


def test_commands_share_context_batch_and_base_file() -> None:
    args = {
        "program": "/tools/llama-perplexity",
        "reference": "ref.gguf",
        "quants": ["q8.gguf", "q2.gguf"],
        "text": "quality.txt",
        "context": 256,
        "chunks": 8,
        "threads": 2,
        "gpu_layers": 0,
        "base": "base.bin",
    }
    reference, *quants = perplexity_commands(args)
    assert reference[:7] == ["/tools/llama-perplexity", "-m", "ref.gguf", "-f", "quality.txt", "--chunks", "8"]
    assert "--kl-divergence" not in reference
    for cmd, quant in zip(quants, args["quants"], strict=True):
        assert cmd[1:3] == ["-m", quant] and cmd[-1] == "--kl-divergence" and "-f" not in cmd
    for cmd in (reference, *quants):
        joined = " ".join(cmd)
        assert "-c 256 -b 256 -t 2 -ngl 0 -fa off --kl-divergence-base base.bin" in joined


def _reports() -> dict[str, dict[str, object]]:
    ours = {
        "ref.gguf": {"perplexity": 16.19, "kl_divergence": 0.0, "top1_agreement": 1.0, "tokens": 1016},
        "q8.gguf": {"perplexity": 16.2, "kl_divergence": 0.0010, "top1_agreement": 0.98, "tokens": 1016},
    }
    theirs = {
        "ref.gguf": {"perplexity": 16.19},
        "q8.gguf": {"perplexity": 16.1, "kl_divergence": 0.0011, "top1_agreement": 0.98},
    }
    return {"publisher": {"files": ours}, "direct": {"files": theirs}}


def test_agreement_keeps_both_figures_and_the_largest_relative_difference() -> None:
    reports = _reports()
    found = agreement(reports["publisher"]["files"], reports["direct"]["files"])  # type: ignore[arg-type]
    assert found["files"]["q8.gguf"] == {
        "publisher": {"perplexity": 16.2, "kl_divergence": 0.0010, "top1_agreement": 0.98},
        "direct": {"perplexity": 16.1, "kl_divergence": 0.0011, "top1_agreement": 0.98},
    }
    assert found["files"]["ref.gguf"]["publisher"] == {"perplexity": 16.19}
    worst = found["max_relative_difference"]
    assert worst["perplexity"] == pytest.approx(0.1 / 16.1, abs=1e-5)
    assert worst["kl_divergence"] == pytest.approx(0.0001 / 0.0011, abs=1e-5)
    assert worst["top1_agreement"] == 0.0


def test_entry_schema_headline_and_table_rows() -> None:
    base = report.comparison_entry(
        Comparison(Series([10.0, 10.4]), Series([9.8, 10.0])),
        Comparison(Series([700e6, 700e6]), Series([650e6, 650e6])),
        Comparison(Series([18.0, 18.2]), Series([17.5, 17.6])),
    )
    commands = ["llama-perplexity -m ref.gguf ...", "llama-perplexity -m q8.gguf ..."]
    settings = {"context": 256, "chunks": 8, "threads": 2, "gpu_layers": 0}
    tokens = {"same_tokens": True, "same_first_tokens": True}
    entry = quality_entry(base, _reports(), tokens, settings, commands)  # type: ignore[arg-type]
    for key in ("wall_ratio", "stage_wall_s", "direct_wall_s", "cpu_ratio", "rss_ratio", "stage", "direct"):
        assert key in entry
    assert entry["wall_ratio"] == pytest.approx(10.2 / 9.9, abs=1e-4)
    assert entry["same_tokens"] is True and entry["settings"] == settings and entry["commands"] == commands
    assert set(entry["files"]) == {"ref.gguf", "q8.gguf"}
    assert set(entry["max_relative_difference"]) == {"perplexity", "kl_divergence", "top1_agreement"}

    section = report.with_headline({"demo": entry}, "wall_ratio")
    assert section["model"] == "demo" and section["wall_ratio"] == entry["wall_ratio"]
    console = Console(record=True, width=250)
    report.print_table({"quality": section}, console)
    text = console.export_text()
    assert "quality vs llama-perplexity" in text and "> 1.05 missed" not in text and "<= 1.05 ok" in text
    assert "quality figures: largest difference" in text and "same tokens" in text
