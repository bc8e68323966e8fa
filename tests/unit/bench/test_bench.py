"""The benchmark harness: statistics, run order, results.json schema, measured subprocesses."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from support.paths import REPO_ROOT

from bench import report
from bench.__main__ import parse
from bench.models import LlamaSpec
from bench.proc import BenchError, run_measured
from bench.sections.build import Rebuild, _edit_template
from bench.stats import Comparison, Series, alternating, ratio, within
from bench.worker import counting_calls

# ---------------------------------------------------------------------------------------------
# Statistics
# ---------------------------------------------------------------------------------------------


def test_series_median_of_odd_and_even_counts() -> None:
    assert Series([3.0, 1.0, 2.0]).median == 2.0
    assert Series([4.0, 1.0, 3.0, 2.0]).median == 2.5


def test_series_spread_is_range_over_median() -> None:
    series = Series([9.0, 10.0, 12.0])
    assert (series.low, series.high) == (9.0, 12.0)
    assert series.spread == pytest.approx(0.3)


def test_series_summary_rounds_and_keeps_runs_in_order() -> None:
    summary = Series([1.23456, 0.5, 2.0]).summary(digits=2)
    assert summary == {"median": 1.23, "min": 0.5, "max": 2.0, "runs": [1.23, 0.5, 2.0]}


def test_empty_series_has_no_median() -> None:
    with pytest.raises(ValueError, match="no measurements"):
        _ = Series().median


def test_ratio_refuses_zero_denominator() -> None:
    assert ratio(3.0, 2.0) == 1.5
    with pytest.raises(ZeroDivisionError):
        ratio(1.0, 0.0)


def test_comparison_ratio_is_ratio_of_medians_not_median_of_ratios() -> None:
    comp = Comparison(Series([10.0, 11.0, 30.0]), Series([10.0, 10.0, 10.0]))
    assert comp.ratio == pytest.approx(1.1)
    assert comp.round_ratios() == pytest.approx([1.0, 1.1, 3.0])
    assert comp.ratio_range == pytest.approx((1.0, 3.0))


def test_comparison_needs_paired_rounds() -> None:
    with pytest.raises(ValueError, match="unpaired"):
        Comparison(Series([1.0, 2.0]), Series([1.0])).round_ratios()


def test_alternating_order_is_a_b_a_b() -> None:
    order = list(alternating(("publisher", "direct"), 3))
    assert [side for _, side in order] == ["publisher", "direct"] * 3
    assert [index for index, _ in order] == [0, 0, 1, 1, 2, 2]


@pytest.mark.parametrize("rounds", [0, -1])
def test_alternating_needs_a_round(rounds: int) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        list(alternating(("a", "b"), rounds))


def test_within_is_inclusive() -> None:
    assert within(1.05, 1.05)
    assert not within(1.0501, 1.05)


# ---------------------------------------------------------------------------------------------
# results.json
# ---------------------------------------------------------------------------------------------


def _comparison(a: list[float], b: list[float]) -> Comparison:
    return Comparison(Series(a), Series(b))


def full_results() -> dict[str, Any]:
    """A complete results.json made with the same functions the run uses."""
    convert = {
        "demo": report.comparison_entry(
            _comparison([10.4, 10.2], [10.0, 10.1]), _comparison([600e6, 610e6], [590e6, 590e6])
        ),
        "llama-304m": report.comparison_entry(
            _comparison([11.0, 11.0], [10.0, 10.0]), _comparison([7e8, 7e8], [7e8, 7e8])
        ),
    }
    quantize = {
        "demo": report.comparison_entry(_comparison([4.0, 4.1], [3.9, 4.0]), _comparison([3e8, 3e8], [2.5e8, 2.5e8]))
    }
    quantize["demo"] |= {"f16_bytes": 270_000_000, "peak_rss_over_f16": 1.1}
    smoke = {"demo": report.comparison_entry(_comparison([50.0, 52.0], [40.0, 41.0]))}
    smoke["demo"]["reference_quality_batches"] = {"stage": 2, "direct": 2}
    smoke["demo"]["model_loads"] = {"stage": {"a.gguf": 1}, "direct": {"a.gguf": 2}}
    wall = Series([80.0, 82.0]).summary()
    rebuild = {"ratio": 0.01, "ratio_range": [0.009, 0.011], "wall_s": 0.8, "full_wall_s": 81.0, "stages_ran": []}
    return {
        "schema": report.SCHEMA_VERSION,
        "convert": report.with_headline(convert, "wall_ratio"),
        "quantize": report.with_headline(quantize, "wall_ratio"),
        "smoke": report.with_headline(smoke, "wall_ratio"),
        "build": {"model": "demo", "wall_s": 81.0, "stage_s": {"convert": 10.0}, "by_model": {"demo": {"wall": wall}}},
        "rebuild_noop": report.with_headline({"demo": rebuild | {"wall": wall}}, "ratio"),
        "rebuild_card_only": report.with_headline({"demo": rebuild | {"wall": wall, "stages_ran": ["card"]}}, "ratio"),
        "card_render": {"model": "demo", "wall_s": 0.02, "first_s": 0.1, "card_bytes": 9000},
        "publish_local": {"model": "demo", "bytes_ratio": 0.001, "bytes_written": 300_000, "artifact_bytes": 3e8},
        "memory": report.with_headline(
            {
                "demo": {
                    "peak_rss_over_f16": 2.0,
                    "peak_rss_bytes": 540_000_000,
                    "f16_bytes": 270_000_000,
                    "largest_tensor_bytes": 56_623_104,
                    "peak_rss_over_largest_tensor": 9.5,
                }
            },
            "peak_rss_over_f16",
        ),
    }


def test_complete_results_have_no_schema_problems() -> None:
    assert report.schema_problems(full_results()) == []


def test_every_required_key_is_a_number_with_raw_medians_beside_it() -> None:
    results = full_results()
    for key in report.REQUIRED_KEYS:
        assert isinstance(report.lookup(results, key), float | int)
        section = results[key.split(".")[0]]
        for raw in report.RAW_BESIDE[key]:
            assert raw in section


def test_missing_or_non_numeric_keys_are_named() -> None:
    results = full_results()
    del results["smoke"]["wall_ratio"]
    results["convert"]["rss_ratio"] = "fast"
    del results["publish_local"]["artifact_bytes"]
    problems = report.schema_problems(results)
    assert "smoke.wall_ratio: missing" in problems
    assert "convert.rss_ratio: 'fast' is not a number" in problems
    assert any(p.startswith("publish_local.artifact_bytes: missing") for p in problems)


def test_wrong_schema_version_is_a_problem() -> None:
    results = full_results() | {"schema": 99}
    assert report.schema_problems(results) == ["schema is 99, expected 1"]


def test_comparison_entry_holds_ratio_range_and_raw_medians() -> None:
    entry = report.comparison_entry(
        _comparison([11.0, 9.0, 10.0], [10.0, 10.0, 10.0]), _comparison([2.0, 2.0, 2.0], [1.0, 1.0, 1.0])
    )
    assert entry["wall_ratio"] == 1.0
    assert entry["wall_ratio_range"] == [0.9, 1.1]
    assert (entry["stage_wall_s"], entry["direct_wall_s"]) == (10.0, 10.0)
    assert entry["rss_ratio"] == 2.0
    assert (entry["stage_peak_rss_bytes"], entry["direct_peak_rss_bytes"]) == (2, 1)
    assert entry["stage"]["wall_s"]["runs"] == [11.0, 9.0, 10.0]


def test_comparison_entry_with_cpu_time() -> None:
    wall, cpu = _comparison([20.0, 10.0], [10.0, 10.0]), _comparison([5.0, 5.5], [5.0, 5.0])
    entry = report.comparison_entry(wall, cpu=cpu)
    assert entry["wall_ratio"] == 1.5
    assert entry["cpu_ratio"] == 1.05
    assert entry["cpu_ratio_range"] == [1.0, 1.1]
    assert (entry["stage_cpu_s"], entry["direct_cpu_s"]) == (5.25, 5.0)
    assert "rss_ratio" not in entry


def test_headline_is_the_worst_model_and_keeps_every_model() -> None:
    section = full_results()["convert"]
    assert section["model"] == "llama-304m"
    assert section["wall_ratio"] == pytest.approx(1.1)
    assert set(section["by_model"]) == {"demo", "llama-304m"}
    assert "stage" not in section  # nested series stay under by_model


def test_write_results_is_atomic_json(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    report.write_results(out, full_results())
    assert json.loads(out.read_text())["convert"]["model"] == "llama-304m"
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_table_shows_every_section_and_flags_missed_targets() -> None:
    console = Console(record=True, width=200)
    report.print_table(full_results(), console)
    text = console.export_text()
    for label in ("convert", "quantize", "smoke + quality", "full build", "rebuild, nothing changed", "card render"):
        assert label in text
    assert "1.100" in text and "missed" in text  # llama-304m convert: 1.1 > 1.05
    assert "ok" in text


def test_markdown_table_has_a_row_per_table_row() -> None:
    results = full_results()
    lines = report.markdown_table(results).splitlines()
    assert lines[0] == "| figure | model | publisher | direct | ratio (range) | target |"
    assert len(lines) == 2 + report.table(results).row_count
    assert any("| 300 kB | 300 MB |" in line for line in lines)  # publish: bytes written vs artifact bytes


def test_committed_results_file_is_complete() -> None:
    path = REPO_ROOT / "bench" / "results.json"
    if not path.exists():
        pytest.skip("bench/results.json not written yet (make bench)")
    assert report.schema_problems(json.loads(path.read_text())) == []


# ---------------------------------------------------------------------------------------------
# Measured subprocesses
# ---------------------------------------------------------------------------------------------


def test_run_measured_reports_memory_time_and_the_report(tmp_path: Path) -> None:
    script = (
        "import json, sys, time; block = bytearray(80 * 1024 * 1024); time.sleep(0.2); "
        "open(sys.argv[1], 'w').write(json.dumps({'work_s': 0.2}))"
    )
    report_path = tmp_path / "report.json"
    m = run_measured([sys.executable, "-c", script, str(report_path)], log=tmp_path / "log", report=report_path)
    assert m.peak_rss_bytes >= 80 * 1024 * 1024
    assert m.wall_s >= 0.2
    assert m.report == {"work_s": 0.2}
    assert not report_path.exists()


def test_run_measured_counts_a_grandchild(tmp_path: Path) -> None:
    inner = "bytearray(120 * 1024 * 1024)"
    script = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {inner!r}], check=True)"
    m = run_measured([sys.executable, "-c", script], log=tmp_path / "log")
    assert m.peak_rss_bytes >= 120 * 1024 * 1024


def test_run_measured_counts_bytes_written(tmp_path: Path) -> None:
    target = tmp_path / "blob"
    script = (
        f"import os; f = open({str(target)!r}, 'wb'); f.write(os.urandom(8 << 20)); f.flush(); os.fsync(f.fileno())"
    )
    m = run_measured([sys.executable, "-c", script], log=tmp_path / "log")
    assert m.written_bytes >= 8 << 20


def test_run_measured_failure_names_the_log(tmp_path: Path) -> None:
    log = tmp_path / "fail.log"
    with pytest.raises(BenchError, match="exited with 3") as info:
        run_measured([sys.executable, "-c", "print('boom'); raise SystemExit(3)"], log=log)
    assert "boom" in str(info.value) and str(log) in str(info.value)


# ---------------------------------------------------------------------------------------------
# Odds and ends
# ---------------------------------------------------------------------------------------------


def test_template_edit_changes_the_file_but_not_what_it_renders(tmp_path: Path) -> None:
    import jinja2

    path = tmp_path / "card.md.j2"
    path.write_text("# {{ title }}\n", encoding="utf-8")
    before = path.read_bytes()
    _edit_template(path, 1)
    assert path.read_bytes() != before
    assert jinja2.Template(path.read_text()).render(title="x").strip() == "# x"


def test_a_rebuild_is_reported_beside_the_full_build() -> None:
    full, full_work = Series([10.0, 20.0, 30.0]), Series([8.0, 16.0, 24.0])
    noop = Rebuild("nothing changed", Series([1.0, 1.0, 6.0]), Series([0.4, 0.8, 1.2]), ["card"], {})
    result = noop.result(full, full_work)
    assert (result["ratio"], result["wall_s"], result["full_wall_s"]) == (0.05, 1.0, 20.0)
    assert result["ratio_range"] == [0.05, 0.2]  # per round: 1/10, 1/20, 6/30
    assert result["work_ratio"] == 0.05 and result["stages_ran"] == ["card"]
    with pytest.raises(ValueError):  # a round without its full build is a bug, not a figure
        Rebuild("short", Series([1.0])).result(full, full_work)


def test_counting_calls_counts_and_restores() -> None:
    import types

    module = types.SimpleNamespace(double=lambda x: 2 * x)
    original = module.double
    with counting_calls(module, ("double",)) as counts:
        assert module.double(3) == 6  # the real function still runs
        module.double(4)
    assert counts == {"double": 2}
    assert module.double is original


def test_generated_model_follows_the_demo_tokenizer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bench import models

    demo, dest = tmp_path / "demo", tmp_path / "generated"
    demo.mkdir()
    dest.mkdir()
    (demo / "tokenizer.json").write_text('{"version": 2}')
    (dest / "tokenizer.json").write_text('{"version": 1}')
    (dest / "model.safetensors").write_text("weights")
    monkeypatch.setattr(models, "DEMO_DIR", demo)
    models._sync_tokenizer(dest)
    assert (dest / "tokenizer.json").read_text() == '{"version": 2}'
    assert sorted(p.name for p in dest.iterdir()) == ["model.safetensors", "tokenizer.json"]


def test_quick_means_one_round_on_the_demo() -> None:
    args = parse(["--quick"])
    assert (args.rounds, args.build_rounds, args.models) == (1, 1, "demo")
    assert parse([]).rounds >= 2


@pytest.mark.slow  # importing transformers takes seconds to tens of seconds here
def test_spec_parameter_count_matches_transformers() -> None:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    spec = LlamaSpec(
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=128,
    )
    with torch.device("meta"):
        model = transformers.LlamaForCausalLM(spec.llama_config())
    assert spec.parameters() == sum(p.numel() for p in model.parameters())
    assert 250e6 < LlamaSpec().parameters() < 400e6  # "a few hundred million"


def test_merge_adds_the_scale_model_beside_the_others() -> None:
    old = full_results()
    entry = report.comparison_entry(_comparison([60.0, 61.0], [59.0, 60.0]), _comparison([9e8, 9e8], [9e8, 9e8]))
    imatrix = entry | {"quantize_with_imatrix": report.comparison_entry(_comparison([20.0, 20.0], [19.0, 19.5]))}
    new = {
        "created": "2026-12-01T00:00:00+00:00",
        "settings": {"models": ["scale"]},
        "models": {"llama-1100m-spm": {"parameters": 1_100_048_384}},
        "convert": report.with_headline({"llama-1100m-spm": entry}, "wall_ratio"),
        "imatrix": report.with_headline({"llama-1100m-spm": imatrix}, "wall_ratio"),
    }
    merged = report.merge_results(old, new)
    assert set(merged["convert"]["by_model"]) == {"demo", "llama-304m", "llama-1100m-spm"}
    assert merged["convert"]["model"] == "llama-304m"  # the headline stays the earlier run's
    assert merged["imatrix"]["by_model"]["llama-1100m-spm"]["quantize_with_imatrix"]["wall_ratio"] > 1
    assert merged["merged_runs"] == [{"created": new["created"], "settings": new["settings"]}]
    assert report.schema_problems(merged) == []
    console = Console(record=True, width=200)
    report.print_table(merged, console)
    text = console.export_text()
    assert "quantize with imatrix" in text and "llama-1100m-spm" in text


def test_targets_tighten_from_a_billion_parameters() -> None:
    results = {"models": {"demo": {"parameters": 134_515_008}, "llama-1100m-spm": {"parameters": 1_100_048_384}}}
    assert report.targets_for(results, "demo")["quantize.wall_ratio"] == 1.05
    assert report.targets_for(results, "llama-1100m-spm")["quantize.wall_ratio"] == 1.02
    assert report.targets_for(results, "llama-1100m-spm")["memory.peak_rss_over_f16"] == 1.1
    assert "memory.peak_rss_over_f16" not in report.targets_for(results, "demo")
    assert report.targets_for(results, "unknown") is report.TARGETS
