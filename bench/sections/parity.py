"""The parity section: what the gate's parity checks add to the smoke stage (issue 11's target: under 10 %).

Both sides are the smoke stage on the demo, as the pipeline times it, alternately: with its parity
checks (``stage``), and without them (``direct``: tokenizer parity off in the recipe, template
parity replaced by a no-op, see ``bench.worker.parity_off``). The
headline ``extra_fraction`` is the time the checks add as a fraction of the whole stage,
``1 - without / with`` from the medians, with the range over the rounds; ``extra_cpu_fraction`` is
the same for CPU seconds. Beside them, measured inside the stage on the ``stage`` side: the
seconds spent in tokenizer and template parity (``checks_s``, and as a share of the stage).
"""

from __future__ import annotations

from typing import Any

from bench.compare import compare, prepare, stage_times
from bench.proc import Measured, warm
from bench.stats import Series
from bench.subjects import Bench, Subject

TARGET = 0.10
CHECKS = ("tokenizer_parity", "template_parity")


def extra_fraction(with_checks: float, without: float) -> float:
    """The share of the stage the checks account for: ``1 - without / with``."""
    if with_checks <= 0:
        raise ZeroDivisionError("a stage measured at zero seconds")
    return 1.0 - without / with_checks


def parity_entry(base: dict[str, Any], checks_s: Series, stage_s: Series, digits: int = 4) -> dict[str, Any]:
    """The per-model entry: ``base`` (a ``compare`` entry, with checks vs without) plus the fractions."""
    with_runs, without_runs = base["stage"]["wall_s"]["runs"], base["direct"]["wall_s"]["runs"]
    rounds = [extra_fraction(a, b) for a, b in zip(with_runs, without_runs, strict=True)]
    shares = [c / s for c, s in zip(checks_s.values, stage_s.values, strict=True)]
    return base | {
        "sides": {"stage": "smoke stage with parity", "direct": "smoke stage without parity"},
        "extra_fraction": round(extra_fraction(base["stage_wall_s"], base["direct_wall_s"]), digits),
        "extra_fraction_range": [round(min(rounds), digits), round(max(rounds), digits)],
        "extra_cpu_fraction": round(extra_fraction(base["stage_cpu_s"], base["direct_cpu_s"]), digits),
        "checks_s": checks_s.summary(digits),
        "checks_fraction": round(Series(shares).median, digits),
        "checks_fraction_range": [round(min(shares), digits), round(max(shares), digits)],
        "target": TARGET,
    }


def bench_parity(bench: Bench, subject: Subject) -> dict[str, Any]:
    """The smoke stage with its parity checks against the same stage without them."""
    prepare(bench, subject, "quantize")
    manifest = subject.manifest()
    warm([subject.reference(), *(subject.build_dir / manifest["artifacts"][t]["path"] for t in subject.types)])
    checks_s, stage_s = Series(), Series()

    def with_checks() -> tuple[Measured, float, float]:
        measured, wall, cpu = stage_times(bench.build(subject, stages=["smoke"], force=["smoke"]), "smoke")
        seconds = measured.report["evaluate_seconds"]
        checks_s.add(sum(seconds.get(name, 0.0) for name in CHECKS))
        stage_s.add(wall)
        return measured, wall, cpu

    def without() -> tuple[Measured, float, float]:
        return stage_times(bench.build(subject, stages=["smoke"], force=["smoke"], parity_off=True), "smoke")

    return parity_entry(compare(bench, subject, "parity", with_checks, without), checks_s, stage_s)
