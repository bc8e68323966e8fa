"""The smoke section: the smoke stage against the same llama.cpp work done by hand (``bench.worker``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.compare import compare, prepare, stage_times
from bench.proc import Measured, warm
from bench.subjects import Bench, Subject


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


def _quality_batches(llama_counts: dict[str, dict[str, int]], reference: str) -> int:
    return int(llama_counts.get(reference, {}).get("quality_batches", 0))


def _model_loads(llama_counts: dict[str, dict[str, int]]) -> dict[str, int]:
    return {name: int(c.get("load_model", 0)) for name, c in llama_counts.items()}


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
        return stage_times(m, "smoke")

    def direct() -> tuple[Measured, float, float]:
        m = bench.worker("smoke-direct", args)
        counts["direct"] = m.report["llama"]
        return m, float(m.report["work_s"]), float(m.report["cpu_s"])

    entry = compare(bench, subject, "smoke", publisher, direct)
    # The reference-logits file is made once per smoke run (and kept across rebuilds): the reference
    # is evaluated on each chunk of the quality text once, as the direct loop does.
    entry["reference_logits_computed"] = calls.get("compute_reference_logits", 0)
    entry["reference_quality_batches"] = {side: _quality_batches(c, reference) for side, c in counts.items()}
    entry["model_loads"] = {side: _model_loads(c) for side, c in counts.items()}
    entry["evaluate_calls"] = calls
    entry["llama_calls"] = counts
    return entry
