"""The imatrix section: llama-imatrix through the stage and directly, then quantizing with the matrix."""

from __future__ import annotations

import shlex
from typing import Any

from bench.compare import compare, prepare, stage_times
from bench.proc import BenchError, Measured, drop_file, warm
from bench.subjects import IMATRIX_SETTINGS, Bench, Subject, imatrix_subject


def bench_imatrix(bench: Bench, subject: Subject) -> dict[str, Any]:
    """The imatrix stage against llama-imatrix run directly with the command line the stage logged,
    then the quantize stage with the matrix against a bare ``llama_model_quantize`` loop given it."""
    from publisher.formats import gguf_quants
    from publisher.recipe import load_recipe
    from publisher.runtimes import llama_cpp
    from publisher.stages.quantize import largest_first

    if llama_cpp.tool("llama-imatrix") is None:
        raise BenchError(f"llama-imatrix is not built in {llama_cpp.tools_dir()}; run `make tools`")
    sub = imatrix_subject(subject)
    prepare(bench, sub, "imatrix")
    logged = (sub.build_dir / "logs" / "imatrix.log").read_text(encoding="utf-8").splitlines()[0]
    cmd = shlex.split(logged.split(" && ", 1)[1])
    sub.direct_dir.mkdir(parents=True, exist_ok=True)
    direct_out = sub.direct_dir / "direct.imatrix.gguf"
    for flag, value in (("-m", None), ("-f", None), ("-o", direct_out)):
        at = cmd.index(flag) + 1
        cmd[at] = str(value or sub.build_dir / cmd[at])
    reference = sub.reference()
    matrix = sub.build_dir / str(sub.manifest()["imatrix"]["path"])
    warm([reference])

    def publisher() -> tuple[Measured, float, float]:
        return stage_times(bench.build(sub, stages=["imatrix"], force=["imatrix"]), "imatrix")

    def direct() -> tuple[Measured, float, float]:
        m = bench.command("imatrix-direct", cmd)
        drop_file(direct_out)
        return m, m.wall_s, m.cpu_s

    entry = compare(bench, sub, "imatrix", publisher, direct)
    entry["settings"] = dict(IMATRIX_SETTINGS)
    made_in_order = largest_first(load_recipe(sub.recipe_path), sub.types)  # as the stage makes them
    args = {
        "reference": str(reference),
        "out_dir": str(sub.direct_dir),
        "types": {t: gguf_quants.lookup(t).ftype for t in made_in_order},
        "nthread": 0,
        "imatrix": str(matrix),
    }

    def quantize_publisher() -> tuple[Measured, float, float]:
        return stage_times(bench.build(sub, stages=["quantize"], force=["quantize"]), "quantize")

    def quantize_direct() -> tuple[Measured, float, float]:
        m = bench.worker("quantize-direct", args)
        for name in sub.types:
            drop_file(sub.direct_dir / f"direct.{name}.gguf")
        return m, float(m.report["work_s"]), float(m.report["cpu_s"])

    with_matrix = compare(bench, sub, "quantize with imatrix", quantize_publisher, quantize_direct)
    return entry | {"quantize_with_imatrix": with_matrix | {"types": sub.types}}
