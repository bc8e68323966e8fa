"""The bench's gptq section: its results.json entry and table rows, what the direct side is given, when it runs."""

from __future__ import annotations

import ast
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from support.paths import REPO_ROOT

from bench import report
from bench.proc import BenchError
from bench.run import SECTIONS, default_sections
from bench.sections.gptq import DIRECT_SCRIPT, TARGET, direct_args, gptq_entry, gptq_python
from bench.stats import Comparison, Series
from bench.subjects import GPTQ_SETTINGS, GPTQ_VARIANT

DEMO_MODEL = REPO_ROOT / ".cache" / "models" / "SmolLM2-135M-Instruct"


def _entry(stage: list[float], direct: list[float], *, same_weights: bool = True) -> dict[str, Any]:
    base = report.comparison_entry(
        Comparison(Series(stage), Series(direct)),
        Comparison(Series([1.52e9] * len(stage)), Series([1.50e9] * len(direct))),
        Comparison(Series([s * 1.9 for s in stage]), Series([d * 1.9 for d in direct])),
    )
    return gptq_entry(base, same_weights=same_weights, folder_bytes=118_000_000, quantizer="gptqmodel 7.6.0")


def test_entry_holds_time_cpu_and_memory_ratios_with_the_settings_both_sides_used() -> None:
    entry = _entry([101.0, 99.0, 100.0], [100.0, 98.0, 99.0])
    for key in ("wall_ratio", "wall_ratio_range", "stage_wall_s", "direct_wall_s", "cpu_ratio", "cpu_ratio_range"):
        assert key in entry
    for key in ("rss_ratio", "rss_ratio_range", "stage_peak_rss_bytes", "direct_peak_rss_bytes"):
        assert key in entry
    assert entry["wall_ratio"] == pytest.approx(100.0 / 99.0, abs=1e-4)
    assert entry["stage_peak_rss_bytes"] == 1_520_000_000 and entry["direct_peak_rss_bytes"] == 1_500_000_000
    assert (entry["samples"], entry["seq_len"]) == (8, 128)
    assert entry["variant"] == {"bits": 4, "group_size": 64, "act_order": True, "damp": 0.1}
    assert entry["same_weights"] is True and entry["target"] == TARGET == 1.05
    section = report.with_headline({"demo": entry}, "wall_ratio")
    assert section["model"] == "demo" and section["wall_ratio"] == entry["wall_ratio"]
    assert "variant" not in section and section["by_model"]["demo"]["variant"] == entry["variant"]


@pytest.mark.parametrize(
    ("stage", "verdict", "weights"), [(102.0, "<= 1.05 ok", True), (110.0, "> 1.05 missed", False)]
)
def test_table_judges_the_target_and_says_whether_weights_matched(stage: float, verdict: str, weights: bool) -> None:
    section = report.with_headline({"demo": _entry([stage], [100.0], same_weights=weights)}, "wall_ratio")
    console = Console(record=True, width=250)
    report.print_table({"gptq": section}, console)
    text = console.export_text()
    assert "gptq (vs gptqmodel)" in text and verdict in text
    assert "gptq (vs gptqmodel) peak RSS" in text and "1.52 GB" in text
    assert "gptq (vs gptqmodel) CPU time" in text
    assert ("byte-identical" in text) is weights


def test_the_direct_side_gets_the_variant_s_quantize_config_and_the_stage_s_samples() -> None:
    from publisher.recipe.gptq import GptqVariant

    ids = [[1, 2, 3], [4, 5, 6]]
    args = direct_args(Path("/src"), Path("/out"), Path("/scratch"), ids)
    variant = GptqVariant.model_validate(GPTQ_VARIANT).settings()
    assert (args["bits"], args["group_size"], args["desc_act"], args["damp"]) == (
        variant["bits"],
        variant["group_size"],
        variant["act_order"],
        variant["damp"],
    )
    assert args["sym"] is True and args["input_ids"] == ids and args["threads"] >= 1
    assert (args["source"], args["out"], args["work_dir"]) == ("/src", "/out", "/scratch")


def test_the_bench_recipe_has_one_gptq_variant_with_the_demo_s_calibration(tmp_path: Path) -> None:
    if not (DEMO_MODEL / ".complete").exists():
        pytest.skip("the demo model is not materialized; run make setup")
    from bench.subjects import demo_subject, gptq_subject
    from publisher.recipe import load_recipe

    sub = gptq_subject(demo_subject(tmp_path))
    recipe = load_recipe(sub.recipe_path)
    assert recipe.gptq is not None and recipe.name == "bench-demo-gptq"
    assert (recipe.gptq.samples, recipe.gptq.seq_len) == (GPTQ_SETTINGS["samples"], GPTQ_SETTINGS["seq_len"])
    assert recipe.gptq.calibration is None  # the shipped text, which the section asks the worker to tokenize
    assert [v.branch_name for v in recipe.gptq.variants] == ["gptq-4bit-64g-actorder_True"]
    demo = load_recipe(REPO_ROOT / "recipes" / "smollm2-135m-instruct-gptq.yaml").gptq
    assert demo is not None and (demo.samples, demo.seq_len) == (recipe.gptq.samples, recipe.gptq.seq_len)


def test_make_bench_runs_gptq_only_where_its_environment_is(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PUBLISHER_GPTQ_PYTHON", str(tmp_path / "absent" / "bin" / "python"))
    assert default_sections() == tuple(s for s in SECTIONS if s != "gptq")
    with pytest.raises(BenchError, match="make setup-gptq"):
        gptq_python()
    monkeypatch.setenv("PUBLISHER_GPTQ_PYTHON", sys.executable)
    assert "gptq" in SECTIONS and default_sections() == SECTIONS
    assert gptq_python() == Path(sys.executable)


def test_the_direct_script_imports_neither_publisher_nor_the_bench() -> None:
    tree = ast.parse(DIRECT_SCRIPT.read_text(encoding="utf-8"))
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert "gptqmodel" in imported
    assert not {name for name in imported if name.split(".")[0] in ("publisher", "bench")}


@pytest.mark.slow
def test_the_worker_s_calibration_op_gives_the_text_s_first_windows(tmp_path: Path) -> None:
    from tokenizers import Tokenizer

    from publisher.gptq.runner import missing_reason, run_worker

    if (reason := missing_reason()) is not None:
        pytest.skip(reason)
    if not (DEMO_MODEL / ".complete").exists():
        pytest.skip("the demo model is not materialized; run make setup")
    text = Path(str(resources.files("publisher").joinpath("data", "calibration.txt")))
    request = {"op": "calibration", "source": str(DEMO_MODEL), "calibration": str(text), "samples": 3, "seq_len": 64}
    windows = run_worker(request, tmp_path, tmp_path / "calibration.log")["input_ids"]
    assert [len(w) for w in windows] == [64, 64, 64]
    ids = Tokenizer.from_file(str(DEMO_MODEL / "tokenizer.json")).encode(text.read_text(), add_special_tokens=False).ids
    assert [token for window in windows for token in window] == ids[:192]
