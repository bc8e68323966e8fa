"""The build section: a full build, a rebuild with nothing changed and one after a card-template edit."""

from __future__ import annotations

import shutil
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


def bench_builds(bench: Bench, subject: Subject, rounds: int) -> dict[str, dict[str, Any]]:
    """Full build from scratch, rebuild with nothing changed, rebuild after a template edit; repeated."""
    full, noop, card = Series(), Series(), Series()
    full_work, noop_work, card_work, rss = Series(), Series(), Series(), Series()
    stage_s: dict[str, Series] = {}
    ran: dict[str, list[str]] = {}
    failed: list[str] = []
    calls: dict[str, dict[str, int]] = {}
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
        ran["full"] = ran_stages(m)
        calls["full"] = m.report["evaluate_calls"]
        failed = list(m.report["failed"])
        bench.note(
            f"{subject.model.key}: full build round {index + 1}: {m.wall_s:.1f}s, {m.peak_rss_bytes / 1e6:.0f} MB"
        )
        settle()
        m = bench.build(subject)
        noop.add(m.wall_s)
        noop_work.add(m.report["work_s"])
        ran["noop"] = ran_stages(m)
        calls["noop"] = m.report["evaluate_calls"]
        bench.note(f"{subject.model.key}: rebuild, nothing changed: {m.wall_s:.2f}s, ran {ran['noop'] or 'nothing'}")
        _edit_template(subject.template, index)
        settle()
        m = bench.build(subject)
        card.add(m.wall_s)
        card_work.add(m.report["work_s"])
        ran["card"] = ran_stages(m)
        calls["card"] = m.report["evaluate_calls"]
        bench.note(f"{subject.model.key}: rebuild, template edited: {m.wall_s:.2f}s, ran {ran['card'] or 'nothing'}")
    subject.template.write_text(pristine, encoding="utf-8")

    def rebuild(series: Series, work: Series, stages: list[str], evaluations: dict[str, int]) -> dict[str, Any]:
        per_round = [b / f for b, f in zip(series.values, full.values, strict=True)]
        return {
            "ratio": round(series.median / full.median, 5),
            "ratio_range": [round(min(per_round), 5), round(max(per_round), 5)],
            "wall_s": round(series.median, 4),
            "full_wall_s": round(full.median, 4),
            "work_ratio": round(work.median / full_work.median, 5),
            "stages_ran": stages,
            "evaluate_calls": evaluations,  # empty: no model was loaded or evaluated
            "wall": series.summary(),
            "work_s": work.summary(),
        }

    return {
        "build": {
            "wall_s": round(full.median, 4),
            "stage_s": {name: round(s.median, 3) for name, s in stage_s.items()},
            "stages_ran": ran["full"],
            "failed_checks": failed,  # artifacts that failed the smoke checks (the card lists only the others)
            "evaluate_calls": calls["full"],
            "wall": full.summary(),
            "work_s": full_work.summary(),
            "peak_rss_bytes": rss.summary(0),
        },
        "rebuild_noop": rebuild(noop, noop_work, ran["noop"], calls["noop"]),
        "rebuild_card_only": rebuild(card, card_work, ran["card"], calls["card"]),
        "memory": {"peak_rss_bytes": int(rss.median)},
    }
