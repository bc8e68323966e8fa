"""One comparison: publisher's side against llama.cpp run directly, alternately, round by round."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench.proc import BenchError, Measured, settle
from bench.report import comparison_entry
from bench.stats import Comparison, Series, alternating
from bench.subjects import Bench, Subject


def stage_times(measured: Measured, name: str) -> tuple[Measured, float, float]:
    """``(measured, wall, cpu)`` of stage ``name`` in a build worker's run; it must have run."""
    for stage in measured.report["stages"]:
        if stage["name"] == name:
            if stage["status"] != "ran":
                raise BenchError(f"stage {name} was expected to run but is {stage['status']}")
            times = measured.report["stage_times"][name]
            return measured, float(times["wall_s"]), float(times["cpu_s"])
    raise BenchError(f"stage {name} missing from the build report")


def ran_stages(measured: Measured) -> list[str]:
    """The stages a build worker's run actually ran (not skipped as current)."""
    return [s["name"] for s in measured.report["stages"] if s["status"] == "ran"]


def prepare(bench: Bench, subject: Subject, upto: str) -> None:
    """Make sure the build has run up to stage ``upto`` (not measured)."""
    from publisher.stages import ordered_names

    order = ordered_names()
    stages = list(order[: order.index(upto) + 1])
    bench.note(f"{subject.model.key}: preparing ({', '.join(stages)})")
    bench.build(subject, stages=stages)


@dataclass
class Side:
    """Everything measured on one side of a comparison, one value per round."""

    wall: Series = field(default_factory=Series)  # the figure compared (see each section)
    work_cpu: Series = field(default_factory=Series)  # CPU seconds of the same span
    rss: Series = field(default_factory=Series)
    anon: Series = field(default_factory=Series)
    process: Series = field(default_factory=Series)  # whole-process wall time
    cpu: Series = field(default_factory=Series)
    load: Series = field(default_factory=Series)

    def add(self, measured: Measured, wall: float, cpu: float) -> None:
        """Record one round."""
        self.wall.add(wall)
        self.work_cpu.add(cpu)
        self.rss.add(measured.peak_rss_bytes)
        self.anon.add(measured.peak_anon_bytes)
        self.process.add(measured.wall_s)
        self.cpu.add(measured.cpu_s)
        self.load.add(measured.load_1m)

    def details(self) -> dict[str, Any]:
        """The extra series stored beside the compared ones."""
        return {
            "process_wall_s": self.process.summary(),
            "process_cpu_s": self.cpu.summary(),
            "peak_anon_bytes": self.anon.summary(0),
            "load_1m_at_start": self.load.summary(2),
        }


Run = Callable[[], tuple[Measured, float, float]]  # a run, its compared wall time, its CPU time


def compare(bench: Bench, subject: Subject, label: str, publisher: Run, direct: Run) -> dict[str, Any]:
    """Run both sides alternately for ``bench.rounds`` rounds; the per-model entry of the section."""
    sides = {"publisher": Side(), "direct": Side()}
    for index, name in alternating(tuple(sides), bench.rounds):
        measured, wall, cpu = (publisher if name == "publisher" else direct)()
        settle()
        sides[name].add(measured, wall, cpu)
        bench.note(
            f"{subject.model.key}: {label} round {index + 1} {name}: {wall:.2f}s, cpu {cpu:.2f}s "
            f"(process {measured.wall_s:.1f}s, {measured.peak_rss_bytes / 1e6:.0f} MB, load {measured.load_1m:.1f})"
        )
    a, b = sides["publisher"], sides["direct"]
    entry = comparison_entry(Comparison(a.wall, b.wall), Comparison(a.rss, b.rss), Comparison(a.work_cpu, b.work_cpu))
    entry["stage"] |= a.details()
    entry["direct"] |= b.details()
    return entry
