"""The card section: how long rendering the card takes."""

from __future__ import annotations

from typing import Any

from bench.stats import Series
from bench.subjects import Bench, Subject


def bench_card(bench: Bench, subject: Subject, repeats: int = 5) -> dict[str, Any]:
    """Render the card of the finished build several times in one process."""
    m = bench.worker(
        "card-render",
        {"recipe": str(subject.recipe_path), "build_dir": str(subject.build_dir), "repeats": repeats},
    )
    times = Series(m.report["render_s"][1:] or m.report["render_s"])
    return {
        "model": subject.model.key,
        "wall_s": round(times.median, 5),
        "first_s": round(m.report["render_s"][0], 5),
        "card_bytes": m.report["card_bytes"],
        "renders": Series(m.report["render_s"]).summary(5),
    }
