"""The pre-flight plan: what each stage of a build will write, the memory it needs, and how long it takes.

Everything is computed from the model's shape (``config.json``, through
:mod:`publisher.quant_sizes`) and the recipe, before anything runs, so a 70B recipe can be
planned on a laptop. Memory is mmap-aware: llama.cpp maps a GGUF instead of reading it, so a
stage needs the largest file it has loaded at once, plus what it allocates beside it (the KV cache
at the context it runs, the logits buffer of ``n_ctx x n_vocab`` floats, compute buffers), not the
sum of the files it touches. The constants below were measured on the 2-core machine this project
is developed on (see README, "Performance"); times are estimates within about a factor of two.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from rich.markup import escape
from rich.table import Table

from publisher import quant_sizes
from publisher.errors import PublisherError
from publisher.formats import gguf_quants
from publisher.manifest import MANIFEST_NAME, Architecture, load_manifest
from publisher.recipe import Recipe
from publisher.report import format_bytes
from publisher.source import recorded_or_read

MB = 1_000_000
# Resident memory of a Python process with publisher's imports, and of one that also holds the
# source tokenizer (the tokenizers library) and numpy buffers for the smoke stage.
PYTHON_BASE = 85 * MB
SMOKE_BASE = 80 * MB
# The smoke stage's child that reads the source tokenizer through transformers (129 MB peak on SmolLM2,
# /usr/bin/time): it runs while the first file answers its first prompt, beside that file's model.
TRANSFORMERS_CHILD = 130 * MB
# The converter (torch, the gguf writer) before it holds a tensor, and how much of the largest
# tensor in f32 comes on top: fitted on three peaks measured by bench/ (588 MB at 135M, 718 MB at
# 304M, 719 MB at 1.1B parameters; each within 7 %).
CONVERT_BASE = 500 * MB
CONVERT_COPIES = 0.85
# llama-imatrix and llama.cpp's quantizer: a C++ process with the ggml backends loaded.
NATIVE_BASE = 40 * MB
# llama-imatrix keeps several copies of a chunk's logits (llama.cpp's output buffer, the graph's
# result, its own copy for the perplexity it prints, per-thread softmax scratch): fitted on SmolLM2.
IMATRIX_LOGITS_COPIES = 6.5
# Throughput on this machine (AMD EPYC, AVX2): converter seconds per parameter plus start-up,
# quantizer nanoseconds per parameter and core, and llama.cpp's batched evaluation in FLOP/s per core.
# (Convert and quantize refitted on the 1.1B model of `make bench-scale`, idle, 2026-12-01: 22 s to
# convert, 133 CPU-seconds for Q4_K_M and Q8_0.)
CONVERT_START_S = 4.5
CONVERT_S_PER_PARAM = 1.6e-8
QUANTIZE_NS = {"i-quant": 475.0, "k-quant": 95.0}
QUANTIZE_NS_OTHER = 25.0
# With an importance matrix the k- and i-quants search weighted scales: Q4_K_M at 1.1B took 170 CPU-ns
# per parameter against 95 without.
IMATRIX_QUANTIZE_FACTOR = 1.8
EVAL_FLOPS_PER_CORE = 50e9
GENERATE_BYTES_PER_S = 8e9  # generating one token reads every weight once
GGUF_BYTES_PER_TOKEN = 36  # vocabulary metadata in a GGUF: the string, score, type and merges per token
CHARS_PER_TOKEN = 4  # to guess how many chunks a text gives before it is tokenized
# Bytes per source parameter by config.json's torch_dtype, for the download.
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}
STAGES = ("fetch", "convert", "imatrix", "quantize", "smoke", "card")


@dataclass(frozen=True)
class Machine:
    """What the build can use here: cores, memory and free disk in the builds folder."""

    cores: int
    memory: int
    free_disk: int

    @classmethod
    def here(cls, workdir: Path) -> Machine:
        from publisher.limits import cores
        from publisher.stages.fetch import free_bytes

        return cls(cores=cores(), memory=_total_memory(), free_disk=free_bytes(workdir))


def _total_memory() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


@dataclass(frozen=True)
class StagePlan:
    """One stage: the files it writes (name -> bytes), the peak resident memory, the seconds it takes."""

    stage: str
    files: dict[str, int]
    peak_memory: int
    seconds: float
    note: str = ""

    @property
    def writes(self) -> int:
        return sum(self.files.values())


@dataclass(frozen=True)
class BuildPlan:
    """The plan of one build on one machine, and why the machine cannot do it (empty when it can)."""

    recipe: Recipe
    parameters: int
    machine: Machine
    stages: list[StagePlan]
    present: frozenset[str] = field(default_factory=frozenset)

    @property
    def disk(self) -> int:
        """Bytes every planned stage writes."""
        return sum(s.writes for s in self.stages)

    @property
    def disk_needed(self) -> int:
        """Bytes still to write: files already in the build folder are not written again."""
        return sum(size for s in self.stages for name, size in s.files.items() if name not in self.present)

    @property
    def peak_memory(self) -> int:
        return max((s.peak_memory for s in self.stages), default=0)

    @property
    def seconds(self) -> float:
        return sum(s.seconds for s in self.stages)

    def refusals(self) -> list[str]:
        """One line per reason the machine cannot run this plan, each saying what would."""
        lines = []
        if self.disk_needed > self.machine.free_disk:
            lines.append(
                f"plan: the build writes {format_bytes(self.disk_needed, 'GB')} but "
                f"{format_bytes(self.machine.free_disk, 'GB')} is free; use --workdir on a larger disk, "
                "fewer types with --only, or fewer stages with --stages"
            )
        for index, s in enumerate(self.stages):
            if s.peak_memory > self.machine.memory:
                earlier = [p.stage for p in self.stages[:index]]
                lines.append(
                    f"plan: stage {s.stage} needs about {format_bytes(s.peak_memory, 'GB')} of memory and this "
                    f"machine has {format_bytes(self.machine.memory, 'GB')}; {_memory_advice(s.stage, earlier)}"
                )
        return lines


def _memory_advice(stage: str, earlier: list[str]) -> str:
    where = f"run {stage} on a machine with more RAM"
    if stage in ("smoke", "imatrix"):
        where += f" or a GPU ({stage}.gpu_layers: -1 keeps the weights in GPU memory)"
    return where + (f", and here only --stages {','.join(earlier)}" if earlier else "")


def make_plan(
    recipe: Recipe,
    workdir: Path,
    *,
    source_dir: Path | None = None,
    stages: list[str] | None = None,
    only_types: list[str] | None = None,
    machine: Machine | None = None,
) -> BuildPlan:
    """Plan ``recipe``'s build into ``workdir``; raise :class:`PublisherError` when the shape cannot be read."""
    build_dir = workdir / recipe.build_name
    manifest = load_manifest(build_dir / MANIFEST_NAME) if (build_dir / MANIFEST_NAME).is_file() else None
    source = recorded_or_read(recipe, manifest, source_dir)
    arch = source.facts.architecture if source is not None and source.facts is not None else None
    if arch is None or not arch.vocab:
        raise PublisherError(
            f"plan: cannot tell the shape of {recipe.source.repo or recipe.source.path}: no config.json with "
            "layers, heads, width and vocabulary; give a local copy of the source with --source-dir"
        )
    params = (source.parameters if source is not None and source.parameters else None) or arch.parameters() or 0
    here = machine or Machine.here(workdir)
    types = [t for t in recipe.quantize.names if only_types is None or t in only_types]
    download = 0 if source is not None and source.path else params * _dtype_bytes(source_dir, recipe)
    facts = _Facts(recipe, arch, params, here.cores)
    planned = [
        _fetch(download),
        facts.convert(),
        *([facts.imatrix()] if recipe.imatrix is not None else []),
        facts.quantize(types),
        facts.smoke(types),
        StagePlan("card", {"README.md": 30_000}, PYTHON_BASE, 0.5),
    ]
    wanted = [s for s in planned if stages is None or s.stage in stages]
    present = frozenset(p.name for p in build_dir.iterdir()) if build_dir.is_dir() else frozenset()
    return BuildPlan(recipe, params, here, wanted, present)


def _dtype_bytes(source_dir: Path | None, recipe: Recipe) -> int:
    import json

    folder = source_dir or recipe.source_dir()
    try:
        config = json.loads(((folder or Path("/nonexistent")) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return 2
    return DTYPE_BYTES.get(str(config.get("torch_dtype")), 2)


def _fetch(download: int) -> StagePlan:
    files = {"source/": download} if download else {}
    return StagePlan("fetch", files, PYTHON_BASE, download / 50e6, "download at 50 MB/s" if download else "")


@dataclass(frozen=True)
class _Facts:
    recipe: Recipe
    arch: Architecture
    params: int
    cores: int

    @property
    def vocab(self) -> int:
        return self.arch.vocab or 0

    @property
    def metadata(self) -> int:
        return self.vocab * GGUF_BYTES_PER_TOKEN

    @property
    def reference_type(self) -> str:
        return self.recipe.convert.outtype.upper()

    @property
    def reference_bytes(self) -> int:
        fmt = "Q8_0" if self.reference_type == "Q8_0" else self.reference_type
        return quant_sizes.weights_bytes(fmt, self.arch) + self.metadata

    def quant_bytes(self, name: str) -> int:
        variant = self.recipe.quantize.variant(name)
        overrides = {k: v for k, v in (("token_embd", variant.token_embd), ("output", variant.output)) if v}
        if variant.output and self.arch.tied_embeddings:
            overrides.setdefault("token_embd", variant.output)
        size = quant_sizes.weights_bytes(
            variant.type, self.arch, imatrix=self.recipe.imatrix is not None, overrides=overrides
        )
        return size + self.metadata

    def eval_seconds(self, tokens: int) -> float:
        return 2 * self.params * tokens / (EVAL_FLOPS_PER_CORE * self.cores)

    def compute_buffer(self, n_ctx: int) -> int:
        """llama.cpp's scratch for one batch of ``n_ctx`` tokens: the output matmul's result and the FFN activations."""
        return n_ctx * (self.vocab + 3 * (self.arch.intermediate or 4 * self.arch.hidden)) * 4

    def convert(self) -> StagePlan:
        largest = quant_sizes.largest_tensor(self.arch).elements * 4
        name = self.recipe.artifact_filename(self.reference_type)
        seconds = CONVERT_START_S + self.params * CONVERT_S_PER_PARAM
        return StagePlan("convert", {name: self.reference_bytes}, CONVERT_BASE + int(CONVERT_COPIES * largest), seconds)

    def imatrix(self) -> StagePlan:
        from publisher.stages.imatrix import matrix_name, text_name

        spec = self.recipe.imatrix
        assert spec is not None
        files = imatrix_files(self.recipe, self.arch)
        if spec.file is not None:
            return StagePlan("imatrix", files, PYTHON_BASE, 1.0, "given file, checked")
        text = files[text_name(self.recipe)]
        n_ctx = spec.context_length
        tokens = min(spec.chunks, max(1, text // CHARS_PER_TOKEN // n_ctx)) * n_ctx
        peak = (
            NATIVE_BASE
            + self.reference_bytes
            + self.arch.kv_cache_bytes(n_ctx)
            + int(IMATRIX_LOGITS_COPIES * n_ctx * self.vocab * 4)
            + self.compute_buffer(n_ctx)
            + files[matrix_name(self.recipe)]
        )
        return StagePlan("imatrix", files, peak, 2.0 + self.eval_seconds(tokens), f"{tokens} tokens")

    def quantize(self, types: list[str]) -> StagePlan:
        largest = quant_sizes.largest_tensor(self.arch)
        source_bytes = 4 if self.reference_type == "F32" else 2
        files = {self.recipe.artifact_filename(t): self.quant_bytes(t) for t in types}
        # the largest tensor read, in f32, and quantized (Q8_0 is the largest output per weight)
        peak = PYTHON_BASE + largest.elements * (4 + source_bytes + 34 / 32) if types else PYTHON_BASE
        seconds = 0.0
        for t in types:
            family = gguf_quants.lookup(self.recipe.quantize.variant(t).type).family
            ns = QUANTIZE_NS.get(family, QUANTIZE_NS_OTHER)
            if self.recipe.imatrix is not None and family in QUANTIZE_NS:
                ns *= IMATRIX_QUANTIZE_FACTOR
            seconds += ns * 1e-9 * self.params / self.cores
        return StagePlan("quantize", files, int(peak), seconds, f"{len(types)} types")

    def smoke(self, types: list[str]) -> StagePlan:
        smoke, quality = self.recipe.smoke, self.recipe.smoke.quality
        files: dict[str, int] = {}
        # one context per file serves prompts and quality (evaluation.check_context)
        n_cells = max(smoke.context_length, quality.context_length) if quality.enabled else smoke.context_length
        peak = SMOKE_BASE + TRANSFORMERS_CHILD + self.reference_bytes + self.arch.kv_cache_bytes(n_cells)
        tokens = 0
        if quality.enabled:
            from publisher.evaluation.quality import FULL_LIMIT, TOP_K

            n_ctx = quality.context_length
            chunks = min(
                quality.max_chunks, max(1, _text_bytes(self.recipe, quality.text, "quality.txt") // 4 // n_ctx)
            )
            rows = chunks * (n_ctx - n_ctx // 2 - 1)
            stored = rows * self.vocab * 2 if rows * self.vocab <= FULL_LIMIT else rows * (TOP_K * 8 + 4)
            files[f"quality/{self.recipe.artifact_filename(self.reference_type)[:-5]}.logits.npy"] = stored
            scores = (n_ctx // 2) * self.vocab * 4  # llama.cpp's logits, asked for the scored half only
            peak += scores + self.compute_buffer(n_ctx) + stored + (n_ctx // 2) * self.vocab * 4 * 2
            tokens = chunks * n_ctx
        files_tested = len(types) + 1
        per_file = (
            1.0
            + self.eval_seconds(tokens)
            + len(smoke.prompts) * smoke.max_tokens * (self.reference_bytes / GENERATE_BYTES_PER_S)
        )
        return StagePlan("smoke", files, peak, files_tested * per_file + 3.0, f"{files_tested} files")


def imatrix_files(recipe: Recipe, arch: Architecture) -> dict[str, int]:
    """The imatrix stage's files and their sizes: the matrix, and the calibration text unless a file is given."""
    from publisher.stages.imatrix import matrix_name, text_name

    spec = recipe.imatrix
    assert spec is not None
    files = {matrix_name(recipe): quant_sizes.imatrix_bytes(arch)}
    if spec.file is None:
        files[text_name(recipe)] = _text_bytes(recipe, spec.text, "calibration.txt")
    return files


def _text_bytes(recipe: Recipe, text: str | None, shipped: str) -> int:
    if text is None:
        return len(resources.files("publisher").joinpath("data", shipped).read_bytes())
    try:
        return recipe.resolve_path(text).stat().st_size
    except OSError:
        return 0


def plan_table(plan: BuildPlan) -> Table:
    """The plan as a table: per stage what it writes, its peak memory and its time; totals below."""
    m = plan.machine
    title = (
        f"{plan.recipe.path or plan.recipe.build_name}: {plan.parameters / 1e9:.2f}B parameters, "
        f"on {m.cores} cores with {format_bytes(m.memory, 'GB')} memory"
    )
    table = Table(title=escape(title), title_justify="left")
    for name in ("stage", "writes", "peak memory", "time", "what"):
        table.add_column(name, justify="right" if name in ("writes", "peak memory", "time") else "left")
    for s in plan.stages:
        files = ", ".join(f"{name} {format_bytes(size)}" for name, size in s.files.items())
        table.add_row(
            s.stage,
            format_bytes(s.writes),
            format_bytes(s.peak_memory),
            _duration(s.seconds),
            escape("; ".join(part for part in (s.note, files) if part)),
        )
    table.add_row(
        "total",
        format_bytes(plan.disk),
        format_bytes(plan.peak_memory),
        _duration(plan.seconds),
        escape(f"{format_bytes(plan.disk_needed)} still to write, {format_bytes(m.free_disk)} free"),
        style="bold",
    )
    return table


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
