"""The gptq section: the gptq stage against gptqmodel called directly, same settings, same samples.

publisher's side is the gptq stage as the pipeline times it, forced, for one variant of the demo model
(``GPTQ_VARIANT``, ``GPTQ_SETTINGS``): the worker subprocess in ``.venv-gptq`` from interpreter start
to exit, then what the stage does to the folder (the source's tokenizer and generation config copied
back, the calibration facts recorded, every file hashed). The direct side is ``bench/gptq_direct.py``
under the same interpreter, environment and thread count, timed as a whole process: interpreter start,
imports, load (with the tokenizer), quantize, save. So both sides include starting Python and importing torch and
gptqmodel. Both calibrate on the same token ids: the stage's own, asked of the worker once beforehand
(its ``calibration`` op); ``same_weights`` records whether the two ``model.safetensors`` came out
byte-identical, which they do when the inputs and settings match. Peak RSS is the process tree's
(``wait4``): on publisher's side the larger of the pipeline process and the worker.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from importlib import resources
from pathlib import Path
from typing import Any

from bench.compare import compare, prepare, stage_times
from bench.proc import ROOT, BenchError, Measured, settle, warm
from bench.stats import Series
from bench.subjects import GPTQ_SETTINGS, GPTQ_VARIANT, Bench, Subject, gptq_subject

TARGET = 1.05
DIRECT_SCRIPT = ROOT / "bench" / "gptq_direct.py"
WEIGHTS = "model.safetensors"


def gptq_python() -> Path:
    """The GPTQ environment's interpreter; :class:`BenchError` naming the setup command when it is missing."""
    from publisher.gptq.runner import missing_reason, worker_python

    if (reason := missing_reason()) is not None:
        raise BenchError(reason)
    return worker_python()


def direct_args(source: Path, out: Path, work_dir: Path, input_ids: list[list[int]]) -> dict[str, Any]:
    """What ``gptq_direct.py`` is given: the variant's QuantizeConfig settings and the stage's samples."""
    return {
        "source": str(source),
        "out": str(out),
        "work_dir": str(work_dir),
        "bits": GPTQ_VARIANT["bits"],
        "group_size": GPTQ_VARIANT["group_size"],
        "desc_act": GPTQ_VARIANT["act_order"],
        "damp": GPTQ_VARIANT["damp"],
        "sym": True,  # gptqmodel's default, which the worker keeps
        "threads": os.cpu_count() or 1,  # what the worker uses when the recipe names none
        "input_ids": input_ids,
    }


def stage_input_ids(sub: Subject) -> list[list[int]]:
    """The token ids the gptq stage calibrates on, from the worker's ``calibration`` op (not measured)."""
    from publisher.errors import QuantizationError
    from publisher.gptq.runner import run_worker
    from publisher.stages.gptq import CALIBRATION_FILE

    text = Path(str(resources.files("publisher").joinpath("data", CALIBRATION_FILE)))  # the recipe names none
    request = {"op": "calibration", "source": str(sub.model.path), "calibration": str(text), **GPTQ_SETTINGS}
    try:
        result = run_worker(request, sub.direct_dir, sub.direct_dir / "calibration.log")
    except QuantizationError as err:
        raise BenchError(str(err)) from None
    ids: list[list[int]] = result["input_ids"]
    if len(ids) != GPTQ_SETTINGS["samples"] or any(len(i) != GPTQ_SETTINGS["seq_len"] for i in ids):
        raise BenchError(f"the calibration text gave {len(ids)} windows, not {GPTQ_SETTINGS['samples']} full ones")
    return ids


def warm_imports(python: Path, cwd: Path) -> None:
    """Import gptqmodel (and with it torch and transformers) once, not measured: without it the first
    measured run would read a gigabyte of libraries from disk and the other side find them cached."""
    from publisher.gptq.runner import worker_env

    done = subprocess.run(
        [str(python), "-c", "import gptqmodel"], env=worker_env(), cwd=cwd, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise BenchError(f"{python} cannot import gptqmodel: {(done.stderr.strip().splitlines() or ['?'])[-1]}")


def gptq_entry(base: dict[str, Any], *, same_weights: bool, folder_bytes: int, quantizer: str) -> dict[str, Any]:
    """The per-model entry: ``base`` (a ``compare`` entry) with the settings both sides used."""
    return base | {
        "sides": {"stage": "gptq stage (worker in .venv-gptq)", "direct": "gptqmodel called by bench/gptq_direct.py"},
        "variant": dict(GPTQ_VARIANT),
        **GPTQ_SETTINGS,
        "threads": os.cpu_count() or 1,
        "quantizer": quantizer,
        "folder_bytes": folder_bytes,
        "same_weights": same_weights,
        "target": TARGET,
    }


def bench_gptq(bench: Bench, subject: Subject) -> dict[str, Any]:
    """The gptq stage against gptqmodel's load, quantize and save written by hand, alternately."""
    from publisher.gptq.runner import worker_env
    from publisher.manifest import sha256_file

    python = gptq_python()
    sub = gptq_subject(subject)
    prepare(bench, sub, "fetch")
    sub.direct_dir.mkdir(parents=True, exist_ok=True)
    out, scratch = sub.direct_dir / "out", sub.direct_dir / "scratch"
    scratch.mkdir(exist_ok=True)
    args = direct_args(sub.model.path, out, scratch, stage_input_ids(sub))
    warm(sorted(sub.model.path.glob("*.safetensors")))
    warm_imports(python, scratch)
    digests: dict[str, set[str]] = {"stage": set(), "direct": set()}
    record: dict[str, Any] = {}
    direct_work = Series()  # the direct script's own span: load, quantize, save

    def publisher() -> tuple[Measured, float, float]:
        shutil.rmtree(sub.build_dir / "gptq", ignore_errors=True)  # the last round's folder, deleted untimed
        settle()
        measured = stage_times(bench.build(sub, stages=["gptq"], force=["gptq"]), "gptq")
        record.update(next(iter(sub.manifest()["gptq"].values())))
        digests["stage"].add(record["files"][WEIGHTS])
        return measured

    def direct() -> tuple[Measured, float, float]:
        shutil.rmtree(out, ignore_errors=True)
        settle()
        m = bench.script("gptq-direct", [str(python), str(DIRECT_SCRIPT)], args, env=worker_env())
        digests["direct"].add(sha256_file(out / WEIGHTS))
        direct_work.add(m.report["work_s"])
        shutil.rmtree(out)
        return m, m.wall_s, m.cpu_s

    entry = compare(bench, sub, "gptq", publisher, direct)
    entry["direct"]["work_s"] = direct_work.summary()
    return gptq_entry(
        entry,
        same_weights=len(digests["stage"] | digests["direct"]) == 1,
        folder_bytes=int(record["size_bytes"]),
        quantizer=str(record["gptq"]["quantizer"]),
    )
