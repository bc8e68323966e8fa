"""The publish section: publishing to the local target, time and bytes written."""

from __future__ import annotations

import shutil
from typing import Any

from bench.stats import Series
from bench.subjects import Bench, Subject


def bench_publish(bench: Bench, subject: Subject) -> dict[str, Any]:
    """Publish the finished build to a fresh local target; bytes written against the bytes published."""
    hub = subject.folder / "hub"
    written, seconds = Series(), Series()
    report: dict[str, Any] = {}
    for index in range(bench.rounds):
        shutil.rmtree(hub, ignore_errors=True)
        m = bench.worker(
            "publish-local", {"recipe": str(subject.recipe_path), "workdir": str(subject.workdir), "hub_dir": str(hub)}
        )
        written.add(m.written_bytes)
        seconds.add(m.report["work_s"])
        report = m.report
        bench.note(f"{subject.model.key}: publish round {index + 1}: {m.written_bytes / 1e6:.2f} MB written")
    published = int(report["published_bytes"])
    return {
        "model": subject.model.key,
        "bytes_ratio": round(written.median / published, 6),
        "bytes_written": int(written.median),
        "artifact_bytes": published,
        "bytes_copied": report["bytes_copied"],
        "bytes_cloned": report.get("bytes_cloned", 0),
        "bytes_linked": report["bytes_linked"],
        "files": report["files"],
        "wall_s": round(seconds.median, 4),
        "written": written.summary(0),
    }
