"""Run one side of a comparison in a fresh process and measure it.

Wall time is taken around the child's whole life (start to exit). Peak RSS comes from
``os.wait4``: Linux reports the largest resident set of the child or of any descendant it waited
for, so a stage that runs the converter as a grandchild is charged the converter's memory too.
Alongside, a sampler reads ``/proc/<pid>/status`` of the child and its descendants every
``SAMPLE_S`` seconds to split the peak into anonymous memory (heap) and file-backed pages (the
mmap'd model), which ``ru_maxrss`` lumps together. The peak reported is the larger of
``ru_maxrss`` and the largest sampled total, because a process that writes ``5`` to
``/proc/self/clear_refs`` erases its own ``ru_maxrss`` (publisher did, to measure each file's
peak, until a smoke stage at 2.32 GB resident was found reporting 1.40 GB). ``ru_oublock`` of the same call counts the
bytes the whole process tree sent to storage, which is how copies are detected.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SAMPLE_S = 0.05
ROOT = Path(__file__).resolve().parent.parent


class BenchError(RuntimeError):
    """A benchmarked command failed; the message names the command and its log."""


@dataclass
class Measured:
    """What one measured run cost, and what its worker reported."""

    wall_s: float
    peak_rss_bytes: int  # ru_maxrss of the child and its waited-for descendants, or the sampled total if larger
    peak_anon_bytes: int  # sampled: anonymous RSS summed over the process tree
    peak_file_bytes: int  # sampled: file-backed RSS summed over the process tree
    written_bytes: int  # bytes the process tree caused to be written to storage (ru_oublock)
    cpu_s: float  # user + system CPU seconds of the process tree
    load_1m: float  # the machine's 1-minute load average when the run started (others' work shows here)
    report: dict[str, Any] = field(default_factory=dict)


def _status_kib(pid: int) -> tuple[int, int, int]:
    """``(RssAnon, RssFile, VmRSS)`` of a process in KiB; zeros when it is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0, 0, 0
    values = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in ("RssAnon", "RssFile", "VmRSS"):
            values[key] = int(rest.split()[0])
    return values.get("RssAnon", 0), values.get("RssFile", 0), values.get("VmRSS", 0)


def _descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (via /proc/<pid>/task/*/children)."""
    found = [pid]
    index = 0
    while index < len(found):
        current = found[index]
        index += 1
        try:
            tasks = os.listdir(f"/proc/{current}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                children = Path(f"/proc/{current}/task/{task}/children").read_text().split()
            except OSError:
                continue
            found.extend(int(c) for c in children)
    return found


class _Sampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.anon = 0
        self.file = 0
        self.total = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            anon = file = total = 0
            for pid in _descendants(self.pid):
                a, f, t = _status_kib(pid)
                anon, file, total = anon + a, file + f, total + t
            self.anon, self.file = max(self.anon, anon * 1024), max(self.file, file * 1024)
            self.total = max(self.total, total * 1024)
            self.stop.wait(SAMPLE_S)


def run_measured(
    cmd: Sequence[str],
    *,
    log: Path,
    report: Path | None = None,
    env: dict[str, str] | None = None,
) -> Measured:
    """Run ``cmd`` with its output going to ``log``; return its wall time, memory and JSON report.

    ``report`` is a file the child writes (our worker does); it is read and deleted afterwards.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    if report is not None:
        report.unlink(missing_ok=True)
    with log.open("w", encoding="utf-8") as out:
        out.write("$ " + " ".join(cmd) + "\n")
        out.flush()
        load_1m = os.getloadavg()[0]
        started = time.perf_counter()
        proc = subprocess.Popen(list(cmd), stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        sampler = _Sampler(proc.pid)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        sampler.stop.set()
        sampler.join()
        proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        tail = log.read_text(encoding="utf-8", errors="replace").splitlines()[-15:]
        raise BenchError(f"{cmd[0]} ... exited with {proc.returncode} (log: {log}):\n" + "\n".join(tail))
    data: dict[str, Any] = {}
    if report is not None:
        if not report.is_file():
            raise BenchError(f"{' '.join(cmd[:4])} ... wrote no report {report} (log: {log})")
        data = json.loads(report.read_text(encoding="utf-8"))
        report.unlink()
    return Measured(
        wall_s=wall,
        peak_rss_bytes=max(usage.ru_maxrss * 1024, sampler.total),
        peak_anon_bytes=sampler.anon,
        peak_file_bytes=sampler.file,
        written_bytes=usage.ru_oublock * 512,
        cpu_s=usage.ru_utime + usage.ru_stime,
        load_1m=load_1m,
        report=data,
    )


def python() -> str:
    """The interpreter the benchmarks run (the venv's, when run through ``make bench``)."""
    return sys.executable


def settle() -> None:
    """Write every dirty page to disk (untimed, between runs).

    Without it one side's output would still be going to disk while the next side runs, and the
    side whose output is deleted right away would never pay for writing it at all.
    """
    os.sync()


def drop_file(path: Path) -> None:
    """Delete ``path`` if present (outputs of one side are removed before the other side runs)."""
    path.unlink(missing_ok=True)


def warm(paths: Sequence[Path]) -> None:
    """Read files once so that neither side of a comparison pays for a cold page cache."""
    for path in paths:
        with path.open("rb") as handle:
            while handle.read(16 * 1024 * 1024):
                pass
