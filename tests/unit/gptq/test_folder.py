"""What publisher does to a folder gptqmodel wrote, and how it calls the worker, without the GPTQ environment."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from publisher.errors import QuantizationError
from publisher.gptq import folder, runner


def _source(tmp_path: Path) -> Path:
    source = tmp_path / "source"
    source.mkdir()
    (source / "tokenizer.json").write_text('{"source": true}', encoding="utf-8")
    (source / "tokenizer_config.json").write_text("{}", encoding="utf-8")
    (source / "generation_config.json").write_text('{"do_sample": false}', encoding="utf-8")
    return source


def _written(tmp_path: Path) -> Path:
    out = tmp_path / "out"
    out.mkdir()
    (out / "tokenizer.json").write_text('{"resaved": true}', encoding="utf-8")
    (out / "special_tokens_map.json").write_text("{}", encoding="utf-8")  # the source has none
    (out / "generation_config.json").write_text('{"do_sample": true}', encoding="utf-8")
    meta = {"quantizer": ["gptqmodel:7.6.0"], "offload_to_disk_path": "/tmp/xyz123"}
    (out / "quantize_config.json").write_text(json.dumps({"bits": 4, "meta": meta}), encoding="utf-8")
    config = {"model_type": "llama", "quantization_config": {"bits": 4, "meta": meta}}
    (out / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return out


def test_the_source_s_tokenizer_and_generation_config_replace_the_library_s(tmp_path: Path) -> None:
    source, out = _source(tmp_path), _written(tmp_path)
    differ = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]
    assert folder.tokenizer_mismatches(out, source) == differ
    copied = folder.restore_source_files(out, source)
    assert copied == ["tokenizer.json", "tokenizer_config.json", "generation_config.json"]
    assert folder.tokenizer_mismatches(out, source) == []
    assert not (out / "special_tokens_map.json").exists()
    assert (out / "generation_config.json").read_bytes() == (source / "generation_config.json").read_bytes()


def test_calibration_facts_are_recorded_and_the_temporary_path_dropped(tmp_path: Path) -> None:
    out = _written(tmp_path)
    facts = {"dataset": "calibration.txt", "samples": 8, "seq_len": 128}
    folder.record_calibration(out, facts)
    for saved in (
        json.loads((out / "quantize_config.json").read_text(encoding="utf-8")),
        json.loads((out / "config.json").read_text(encoding="utf-8"))["quantization_config"],
    ):
        assert saved["bits"] == 4
        assert saved["meta"] == {"quantizer": ["gptqmodel:7.6.0"], **facts}


def test_a_missing_environment_is_one_line_with_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(runner.PYTHON_VAR, str(tmp_path / "nowhere" / "bin" / "python"))
    assert "make setup-gptq" in (runner.missing_reason() or "")
    missing = r"^gptq quantize: the GPTQ environment .* is missing; run `make setup-gptq`"
    with pytest.raises(QuantizationError, match=missing):
        runner.run_worker({"op": "quantize"}, tmp_path / "work", tmp_path / "log.txt")


def test_a_worker_failure_is_one_line_naming_the_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The worker runs under this interpreter: it fails on an unknown op before importing torch.
    monkeypatch.setenv(runner.PYTHON_VAR, sys.executable)
    log = tmp_path / "worker.log"
    with pytest.raises(QuantizationError) as err:
        runner.run_worker({"op": "nothing"}, tmp_path / "work", log)
    assert str(err.value) == f"gptq nothing: KeyError: 'nothing'; see {log}"
    assert "Traceback" in log.read_text(encoding="utf-8")
    assert list((tmp_path / "work").iterdir()) == []  # the request folder is gone


def test_a_worker_ended_from_a_thread_names_its_last_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # gptqmodel ends the process with os._exit(1) after printing a thread's traceback; this interpreter does the same.
    ends = tmp_path / "ends.sh"
    ends.write_text('#!/bin/sh\necho "Traceback (most recent call last):"\necho "AssertionError"\necho\nexit 1\n')
    ends.chmod(0o755)
    monkeypatch.setenv(runner.PYTHON_VAR, str(ends))
    log = tmp_path / "worker.log"
    with pytest.raises(QuantizationError) as err:
        runner.run_worker({"op": "quantize", "method": "awq"}, tmp_path / "work", log)
    assert str(err.value) == f"awq quantize: the worker ended with status 1 and no result (AssertionError); see {log}"
