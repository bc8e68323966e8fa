"""The build section: a full build, a rebuild with nothing changed and one after a card-template edit."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.compare import ran_stages
from bench.proc import settle
from bench.stats import Series
from bench.subjects import Bench, Subject


def _edit_template(path: Path, mark: int) -> None:
    """Change only the card template: append a Jinja comment (the rendered card stays the same)."""
    with path.open("a", encoding="utf-8") as handle:
        handle.write(f"{{# bench edit {mark} #}}\n")


@dataclass
class Rebuild:
    """One kind of rebuild, measured once a round: wall and work seconds, what ran, what was evaluated."""

    what: str  # how the progress line names it
    wall: Series = field(default_factory=Series)
    work: Series = field(default_factory=Series)
    stages_ran: list[str] = field(default_factory=list)
    evaluate_calls: dict[str, int] = field(default_factory=dict)

    def measure(self, bench: Bench, subject: Subject) -> None:
        """Build ``subject`` again (its build folder already there) and record the figures."""
        settle()
        m = bench.build(subject)
        self.wall.add(m.wall_s)
        self.work.add(m.report["work_s"])
        self.stages_ran = ran_stages(m)
        self.evaluate_calls = m.report["evaluate_calls"]
        bench.note(f"{subject.model.key}: rebuild, {self.what}: {m.wall_s:.2f}s, ran {self.stages_ran or 'nothing'}")

    def result(self, full: Series, full_work: Series) -> dict[str, Any]:
        """The rebuild's figures beside the full build's (``full`` and ``full_work``, one value per round)."""
        per_round = [b / f for b, f in zip(self.wall.values, full.values, strict=True)]
        return {
            "ratio": round(self.wall.median / full.median, 5),
            "ratio_range": [round(min(per_round), 5), round(max(per_round), 5)],
            "wall_s": round(self.wall.median, 4),
            "full_wall_s": round(full.median, 4),
            "work_ratio": round(self.work.median / full_work.median, 5),
            "stages_ran": self.stages_ran,
            "evaluate_calls": self.evaluate_calls,  # empty: no model was loaded or evaluated
            "wall": self.wall.summary(),
            "work_s": self.work.summary(),
        }


def bench_builds(bench: Bench, subject: Subject, rounds: int) -> dict[str, dict[str, Any]]:
    """Full build from scratch, rebuild with nothing changed, rebuild after a template edit; repeated."""
    full, full_work, rss = Series(), Series(), Series()
    noop, card = Rebuild("nothing changed"), Rebuild("template edited")
    stage_s: dict[str, Series] = {}
    ran: list[str] = []
    failed: list[str] = []
    calls: dict[str, int] = {}
    pristine = subject.template.read_text(encoding="utf-8")
    for index in range(rounds):
        shutil.rmtree(subject.build_dir, ignore_errors=True)
        subject.template.write_text(pristine, encoding="utf-8")
        settle()
        m = bench.build(subject)
        full.add(m.wall_s)
        full_work.add(m.report["work_s"])
        rss.add(m.peak_rss_bytes)
        for stage in m.report["stages"]:
            stage_s.setdefault(stage["name"], Series()).add(stage["seconds"])
        ran = ran_stages(m)
        calls = m.report["evaluate_calls"]
        failed = list(m.report["failed"])
        bench.note(
            f"{subject.model.key}: full build round {index + 1}: {m.wall_s:.1f}s, {m.peak_rss_bytes / 1e6:.0f} MB"
        )
        noop.measure(bench, subject)
        _edit_template(subject.template, index)
        card.measure(bench, subject)
    subject.template.write_text(pristine, encoding="utf-8")
    return {
        "build": {
            "wall_s": round(full.median, 4),
            "stage_s": {name: round(s.median, 3) for name, s in stage_s.items()},
            "stages_ran": ran,
            "failed_checks": failed,  # artifacts that failed the smoke checks (the card lists only the others)
            "evaluate_calls": calls,
            "wall": full.summary(),
            "work_s": full_work.summary(),
            "peak_rss_bytes": rss.summary(0),
        },
        "rebuild_noop": noop.result(full, full_work),
        "rebuild_card_only": card.result(full, full_work),
        "memory": {"peak_rss_bytes": int(rss.median)},
    }
