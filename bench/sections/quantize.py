"""The quantize section: the quantize stage against a bare ``llama_model_quantize`` loop."""

from __future__ import annotations

import os
from typing import Any

from bench.compare import compare, prepare, stage_times
from bench.proc import Measured, drop_file, settle, warm
from bench.subjects import Bench, Subject


def bench_quantize(bench: Bench, subject: Subject) -> dict[str, Any]:
    """The quantize stage (as the pipeline times it) against a bare ``llama_model_quantize`` loop."""
    from publisher.formats import gguf_quants
    from publisher.recipe import load_recipe
    from publisher.stages.quantize import largest_first

    prepare(bench, subject, "convert")
    recipe = load_recipe(subject.recipe_path)
    reference = subject.reference()
    nthread = recipe.quantize.threads or 0
    subject.direct_dir.mkdir(parents=True, exist_ok=True)
    direct_args = {
        "reference": str(reference),
        "out_dir": str(subject.direct_dir),
        # in the stage's order: which file is made last decides how much hashing nothing overlaps
        "types": {t: gguf_quants.lookup(t).ftype for t in largest_first(recipe, subject.types)},
        "nthread": nthread,
    }
    warm([reference])

    def publisher() -> tuple[Measured, float, float]:
        for name in subject.types:
            drop_file(subject.build_dir / recipe.artifact_filename(name))
        return stage_times(bench.build(subject, stages=["quantize"], force=["quantize"]), "quantize")

    def direct() -> tuple[Measured, float, float]:
        m = bench.worker("quantize-direct", direct_args)
        settle()
        for name in subject.types:
            drop_file(subject.direct_dir / f"direct.{name}.gguf")
        return m, float(m.report["work_s"]), float(m.report["cpu_s"])

    entry = compare(bench, subject, "quantize", publisher, direct)
    f16 = reference.stat().st_size
    entry |= {
        "types": subject.types,
        "threads": nthread or os.cpu_count(),
        "f16_bytes": f16,
        "peak_rss_over_f16": round(entry["stage_peak_rss_bytes"] / f16, 4),
    }
    return entry
