"""What the benchmark measures on: the models and recipes (subjects) and the :class:`Bench` that builds them."""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console

from bench import models as bench_models
from bench.proc import Measured, python, run_measured

DEMO_RECIPE = bench_models.ROOT / "recipes" / "smollm2-135m-instruct.yaml"
TEMPLATE_NAME = "card.md.j2"


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
        return self.script(task, [python(), "-m", "bench.worker", task], args)

    def script(self, name: str, cmd: list[str], args: dict[str, Any], env: dict[str, str] | None = None) -> Measured:
        """Run ``cmd ARGS.json REPORT.json`` in a fresh process (``env``: its whole environment) and measure it."""
        args_path, report, log = self._paths(name)
        args_path.parent.mkdir(parents=True, exist_ok=True)
        args_path.write_text(json.dumps(args, indent=1), encoding="utf-8")
        return run_measured([*cmd, str(args_path), str(report)], log=log, report=report, env=env)

    def command(self, name: str, cmd: list[str]) -> Measured:
        """Run a tool's own command line in a fresh process and measure it."""
        _, _, log = self._paths(name)
        return run_measured(cmd, log=log)

    def build(
        self,
        subject: Subject,
        *,
        stages: list[str] | None = None,
        force: list[str] | None = None,
        parity_off: bool = False,
    ) -> Measured:
        """``pipeline.execute`` on the subject's recipe in a fresh process (``parity_off``: see ``bench.worker``)."""
        args = {
            "recipe": str(subject.recipe_path),
            "workdir": str(subject.workdir),
            "stages": stages,
            "force": force or [],
            "parity_off": parity_off,
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


# One GPTQ variant with the demo GPTQ recipe's calibration: one run takes 1-3 minutes on 2 idle cores.
GPTQ_SETTINGS: dict[str, Any] = {"samples": 8, "seq_len": 128}
GPTQ_VARIANT: dict[str, Any] = {"bits": 4, "group_size": 64, "act_order": True, "damp": 0.1}


def gptq_subject(subject: Subject) -> Subject:
    """The subject's recipe with a gptq section of one variant, built apart (only its fetch and gptq stages run)."""
    data = yaml.safe_load(subject.recipe_path.read_text(encoding="utf-8"))
    name = f"{subject.build_name}-gptq"
    data |= {"name": name, "gptq": {**GPTQ_SETTINGS, "variants": [dict(GPTQ_VARIANT)]}}
    folder = subject.folder / "gptq"
    return Subject(subject.model, folder, _write_recipe(folder, data), name, subject.types)


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
