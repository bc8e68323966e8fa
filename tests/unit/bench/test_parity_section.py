"""The bench's parity section: its results.json entry, its table rows, and the stage without parity it measures."""

from __future__ import annotations

import pytest
from rich.console import Console
from support.paths import REPO_ROOT

from bench import report
from bench.sections.parity import TARGET, extra_fraction, parity_entry
from bench.stats import Comparison, Series
from bench.worker import counting_calls, parity_off


def _entry(with_checks: list[float], without: list[float], checks: list[float]) -> dict[str, object]:
    base = report.comparison_entry(
        Comparison(Series(with_checks), Series(without)), cpu=Comparison(Series(with_checks), Series(without))
    )
    return parity_entry(base, Series(checks), Series(with_checks))


def test_entry_holds_the_fractions_with_their_ranges_and_raw_series() -> None:
    entry = _entry([25.0, 26.0, 24.0], [23.0, 23.5, 22.8], [1.0, 1.3, 0.9])
    for key in ("extra_fraction", "extra_fraction_range", "extra_cpu_fraction", "checks_s", "checks_fraction"):
        assert key in entry
    assert entry["target"] == TARGET
    for key in ("wall_ratio", "stage_wall_s", "direct_wall_s", "cpu_ratio", "stage", "direct"):
        assert key in entry  # the A/B comparison it was computed from
    assert entry["extra_fraction"] == pytest.approx(1 - 23.0 / 25.0, abs=1e-4)  # from the medians
    low, high = entry["extra_fraction_range"]
    assert low == pytest.approx(1 - 22.8 / 24.0, abs=1e-4) and high == pytest.approx(1 - 23.5 / 26.0, abs=1e-4)
    assert entry["checks_fraction"] == pytest.approx(0.04, abs=1e-4)  # median of 1/25, 1.3/26, 0.9/24
    assert entry["checks_s"] == {"median": 1.0, "min": 0.9, "max": 1.3, "runs": [1.0, 1.3, 0.9]}
    assert TARGET == 0.10


def test_extra_fraction_refuses_a_zero_stage() -> None:
    assert extra_fraction(20.0, 19.0) == pytest.approx(0.05)
    with pytest.raises(ZeroDivisionError):
        extra_fraction(0.0, 1.0)


def test_table_shows_both_parity_rows_and_judges_the_target() -> None:
    met = report.with_headline({"demo": _entry([25.0, 25.0], [24.0, 24.0], [1.0, 1.0])}, "extra_fraction")
    missed = report.with_headline({"demo": _entry([25.0, 25.0], [20.0, 20.0], [4.0, 4.0])}, "extra_fraction")
    for section, verdict, share in ((met, "<= 0.1 ok", "0.040"), (missed, "> 0.1 missed", "0.200")):
        console = Console(record=True, width=250)
        report.print_table({"parity": section}, console)
        text = console.export_text()
        assert "smoke with parity / without: share of the stage" in text and verdict in text
        assert share in text
        assert "parity checks inside the stage" in text


def test_parity_off_switches_the_checks_off_and_restores_them() -> None:
    from publisher import evaluation
    from publisher.recipe import load_recipe

    recipe = load_recipe(REPO_ROOT / "recipes" / "smollm2-135m-instruct.yaml")
    originals = (evaluation.template_parity, evaluation.tokenizer_parity)
    with parity_off(recipe) as without:
        assert without.smoke.tokenizer_parity is False and recipe.smoke.tokenizer_parity is True
        assert without.smoke.prompts == recipe.smoke.prompts  # nothing else changed
        result = evaluation.template_parity(REPO_ROOT / "absent.gguf", without)  # a no-op: nothing is loaded
        assert result.checked is False and result.source_matches is None
    assert (evaluation.template_parity, evaluation.tokenizer_parity) == originals


def test_counting_calls_adds_up_seconds_when_asked() -> None:
    import time
    import types

    module = types.SimpleNamespace(nap=lambda: time.sleep(0.02))
    seconds: dict[str, float] = {}
    with counting_calls(module, ("nap",), seconds) as counts:
        module.nap()
        module.nap()
    assert counts == {"nap": 2}
    assert 0.04 <= seconds["nap"] < 1.0


def test_merging_a_new_demo_run_replaces_that_models_headline_and_adds_the_parity_section() -> None:
    old = {
        "schema": report.SCHEMA_VERSION,
        "models": {"demo": {}},
        "smoke": report.with_headline(
            {"demo": report.comparison_entry(Comparison(Series([26.0]), Series([20.0])))}, "wall_ratio"
        ),
    }
    smoke = report.with_headline(
        {"demo": report.comparison_entry(Comparison(Series([20.5]), Series([20.0])))}, "wall_ratio"
    )
    parity = report.with_headline({"demo": _entry([20.5], [20.0], [0.4])}, "extra_fraction")
    merged = report.merge_results(old, {"created": "now", "smoke": smoke, "parity": parity})
    assert merged["smoke"]["wall_ratio"] == pytest.approx(1.025)  # was 1.3: the demo was measured again
    assert merged["smoke"]["by_model"]["demo"]["stage_wall_s"] == 20.5
    assert merged["parity"]["extra_fraction"] == pytest.approx(1 - 20.0 / 20.5, abs=1e-4)
    assert merged["merged_runs"] == [{"created": "now"}]
