"""results.json: its schema, how entries are built from measurements, and the printed table.

Layout (``SCHEMA_VERSION`` 1). Every section holds its headline figures at the top, the raw
medians they were computed from beside them, and the per-model details under ``by_model``::

    {
      "schema": 1, "created": "...", "machine": {...}, "tools": {...}, "settings": {...},
      "models": {"demo": {"path", "parameters", "f16_bytes", "largest_tensor_bytes", ...}, ...},
      "convert":  {"model", "wall_ratio", "wall_ratio_range", "stage_wall_s", "direct_wall_s",
                   "cpu_ratio", "cpu_ratio_range", "stage_cpu_s", "direct_cpu_s",
                   "rss_ratio", "rss_ratio_range", "stage_peak_rss_bytes", "direct_peak_rss_bytes",
                   "by_model": {"demo": {... the same keys ..., "stage": {...}, "direct": {...}}}},
      "quantize": {"model", "wall_ratio", ..., "types", "stage_peak_rss_bytes", "peak_rss_over_f16", "by_model"},
      "smoke":    {"model", "wall_ratio", ..., "reference_quality_batches", "by_model"},
      "quality":  {"model", "wall_ratio", ..., "same_tokens", "max_relative_difference", "files", "commands",
                   "by_model"}   (publisher's quality code vs llama-perplexity, see bench/sections/quality.py)
      "parity":   {"model", "extra_fraction", "extra_fraction_range", "wall_ratio", ..., "checks_s",
                   "checks_fraction", "by_model"}   (with the checks vs without)
      "gptq":     {"model", "wall_ratio", ..., "rss_ratio", ..., "stage_peak_rss_bytes", "direct_peak_rss_bytes",
                   "variant", "samples", "seq_len", "threads", "quantizer", "folder_bytes", "same_weights",
                   "by_model"}   (the gptq stage vs gptqmodel called directly; only with .venv-gptq)
      "build":    {"model", "wall_s", "stage_s", "by_model"},
      "rebuild_noop":      {"model", "ratio", "wall_s", "full_wall_s", "stages_ran", "by_model"},
      "rebuild_card_only": {"model", "ratio", "wall_s", "full_wall_s", "stages_ran", "by_model"},
      "card_render":   {"model", "wall_s", "first_s", "card_bytes"},
      "publish_local": {"model", "bytes_ratio", "bytes_written", "artifact_bytes", "wall_s"},
      "memory": {"model", "peak_rss_over_f16", "peak_rss_bytes", "f16_bytes", "largest_tensor_bytes",
                 "peak_rss_over_largest_tensor", "quantize_peak_rss_over_f16", "by_model"}
    }

A series (``stage``, ``direct``, ...) is ``{"median", "min", "max", "runs"}``. Ratios are
publisher over direct; ``*_range`` is the min and max of the per-round ratios. Where several
models were measured, a section's headline comes from the model named in its ``model`` key:
the one with the worst (largest) ratio, so a headline never flatters.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.stats import Comparison, Series

SCHEMA_VERSION = 1

# Dotted keys every complete results.json holds (the list), each a number.
REQUIRED_KEYS = (
    "convert.wall_ratio",
    "convert.rss_ratio",
    "quantize.wall_ratio",
    "smoke.wall_ratio",
    "rebuild_noop.ratio",
    "rebuild_card_only.ratio",
    "build.wall_s",
    "publish_local.bytes_ratio",
    "memory.peak_rss_over_f16",
)

# The raw figures that must sit beside each headline key.
RAW_BESIDE = {
    "convert.wall_ratio": ("stage_wall_s", "direct_wall_s"),
    "convert.rss_ratio": ("stage_peak_rss_bytes", "direct_peak_rss_bytes"),
    "quantize.wall_ratio": ("stage_wall_s", "direct_wall_s"),
    "smoke.wall_ratio": ("stage_wall_s", "direct_wall_s"),
    "rebuild_noop.ratio": ("wall_s", "full_wall_s"),
    "rebuild_card_only.ratio": ("wall_s", "full_wall_s"),
    "build.wall_s": ("stage_s",),
    "publish_local.bytes_ratio": ("bytes_written", "artifact_bytes"),
    "memory.peak_rss_over_f16": ("peak_rss_bytes", "f16_bytes"),
}

# Targets the issue sets: dotted key -> the largest value that meets it.
TARGETS = {
    "convert.wall_ratio": 1.05,
    "quantize.wall_ratio": 1.05,
    "imatrix.wall_ratio": 1.05,
    "smoke.wall_ratio": 1.05,
    "quality.wall_ratio": 1.05,
    "rebuild_noop.ratio": 0.02,
    "quantize.peak_rss_over_f16": 1.0,
    "parity.extra_fraction": 0.10,
    "gptq.wall_ratio": 1.05,
}
# From a billion parameters up, where the fixed costs of a Python process no longer hide in the work,
# the stages must come within 2 % of llama.cpp and the whole build's peak within 1.1 x the f16 file.
SCALE_PARAMETERS = 1_000_000_000
TARGETS_AT_SCALE = TARGETS | {
    "convert.wall_ratio": 1.02,
    "quantize.wall_ratio": 1.02,
    "smoke.wall_ratio": 1.02,
    "quality.wall_ratio": 1.02,
    "memory.peak_rss_over_f16": 1.1,
}


def targets_for(results: Mapping[str, Any], model: str) -> Mapping[str, float]:
    """The targets a model's figures are held to: tighter from ``SCALE_PARAMETERS`` up."""
    parameters = results.get("models", {}).get(model, {}).get("parameters", 0)
    return TARGETS_AT_SCALE if parameters >= SCALE_PARAMETERS else TARGETS


def lookup(results: Mapping[str, Any], dotted: str) -> Any:
    """The value at ``a.b.c``; ``KeyError`` naming the missing part."""
    node: Any = results
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            raise KeyError(dotted)
        node = node[part]
    return node


def schema_problems(results: Mapping[str, Any]) -> list[str]:
    """Why ``results`` is not a complete results.json (empty when it is)."""
    problems = []
    if results.get("schema") != SCHEMA_VERSION:
        problems.append(f"schema is {results.get('schema')!r}, expected {SCHEMA_VERSION}")
    for key in REQUIRED_KEYS:
        try:
            value = lookup(results, key)
        except KeyError:
            problems.append(f"{key}: missing")
            continue
        if not isinstance(value, int | float) or isinstance(value, bool):
            problems.append(f"{key}: {value!r} is not a number")
        section = key.split(".")[0]
        for raw in RAW_BESIDE[key]:
            if raw not in results[section]:
                problems.append(f"{section}.{raw}: missing (raw figure beside {key})")
    return problems


def comparison_entry(
    wall: Comparison, rss: Comparison | None = None, cpu: Comparison | None = None, digits: int = 4
) -> dict[str, Any]:
    """The per-model entry of a publisher-vs-direct section.

    ``cpu`` (CPU seconds of the same spans) is the figure to trust when others loaded the machine:
    it hardly moves with contention, while wall time does.
    """
    low, high = wall.ratio_range
    entry: dict[str, Any] = {
        "wall_ratio": round(wall.ratio, digits),
        "wall_ratio_range": [round(low, digits), round(high, digits)],
        "stage_wall_s": round(wall.a.median, digits),
        "direct_wall_s": round(wall.b.median, digits),
        "stage": {"wall_s": wall.a.summary(digits)},
        "direct": {"wall_s": wall.b.summary(digits)},
    }
    if rss is not None:
        low, high = rss.ratio_range
        entry |= {
            "rss_ratio": round(rss.ratio, digits),
            "rss_ratio_range": [round(low, digits), round(high, digits)],
            "stage_peak_rss_bytes": int(rss.a.median),
            "direct_peak_rss_bytes": int(rss.b.median),
        }
        entry["stage"]["peak_rss_bytes"] = rss.a.summary(0)
        entry["direct"]["peak_rss_bytes"] = rss.b.summary(0)
    if cpu is not None:
        low, high = cpu.ratio_range
        entry |= {
            "cpu_ratio": round(cpu.ratio, digits),
            "cpu_ratio_range": [round(low, digits), round(high, digits)],
            "stage_cpu_s": round(cpu.a.median, digits),
            "direct_cpu_s": round(cpu.b.median, digits),
        }
        entry["stage"]["cpu_s"] = cpu.a.summary(digits)
        entry["direct"]["cpu_s"] = cpu.b.summary(digits)
    return entry


def with_headline(by_model: Mapping[str, Mapping[str, Any]], key: str) -> dict[str, Any]:
    """A section: the entry of the model with the largest ``key`` lifted to the top, plus ``by_model``."""
    if not by_model:
        raise ValueError("no models measured")
    worst = max(by_model, key=lambda model: float(by_model[model][key]))
    top = {k: v for k, v in by_model[worst].items() if not isinstance(v, Mapping)}
    return {"model": worst, **top, "by_model": dict(by_model)}


def merge_results(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """``old`` with the models ``new`` measured added to each section (``make bench-scale`` adds its model
    beside the others). Headlines stay those of ``old``, unless ``new`` measured the headline's model
    again (re-running one section on the demo); ``new``'s run details go under ``merged_runs``."""
    merged = dict(old)
    for key, value in new.items():
        if isinstance(value, Mapping) and "by_model" in value:
            before = old.get(key)
            if isinstance(before, Mapping) and "by_model" in before:
                top = value if value.get("model") == before.get("model") else before
                merged[key] = {**top, "by_model": {**before["by_model"], **value["by_model"]}}
            else:
                merged[key] = dict(value)
    merged["models"] = {**old.get("models", {}), **new.get("models", {})}
    run = {k: new[k] for k in ("created", "machine", "settings", "errors") if k in new}
    merged["merged_runs"] = [*old.get("merged_runs", []), run]
    return merged


def write_results(path: Path, results: Mapping[str, Any]) -> None:
    """Write results.json atomically (a temporary file renamed into place)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(results, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------------


def _s(series: Mapping[str, Any]) -> str:
    return f"{series['median']:.2f} s ({series['min']:.2f}-{series['max']:.2f})"


def _mb(value: float) -> str:
    """Bytes in decimal units: 605 MB, 1.21 GB, 312 kB."""
    if value >= 1e9:
        return f"{value / 1e9:.2f} GB"
    if value >= 1e6:
        return f"{value / 1e6:.0f} MB"
    return f"{value / 1e3:.0f} kB"


def _verdict(results: Mapping[str, Any], model: str, key: str, value: float) -> str:
    limit = targets_for(results, model).get(key)
    if limit is None:
        return ""
    return f"[green]<= {limit:g} ok[/]" if value <= limit else f"[red]> {limit:g} missed[/]"


def table(results: Mapping[str, Any]) -> Table:
    """The rich table ``make bench`` prints: one row per figure and model."""
    out = Table(title="publisher vs llama.cpp (and gptqmodel) run directly (medians, min-max over rounds)")
    for name in ("figure", "model", "publisher", "direct", "ratio (range)", "target"):
        out.add_column(name)

    def compare_rows(section: str, label: str, nested: str | None = None) -> None:
        for model, found in results.get(section, {}).get("by_model", {}).items():
            entry = found[nested] if nested else found
            low, high = entry["wall_ratio_range"]
            ratio = f"{entry['wall_ratio']:.3f} ({low:.3f}-{high:.3f})"
            stage, direct = _s(entry["stage"]["wall_s"]), _s(entry["direct"]["wall_s"])
            out.add_row(
                label,
                model,
                stage,
                direct,
                ratio,
                _verdict(results, model, f"{section}.wall_ratio", entry["wall_ratio"]),
            )
            if "cpu_ratio" in entry:
                low, high = entry["cpu_ratio_range"]
                out.add_row(
                    f"{label} CPU time",
                    model,
                    _s(entry["stage"]["cpu_s"]),
                    _s(entry["direct"]["cpu_s"]),
                    f"{entry['cpu_ratio']:.3f} ({low:.3f}-{high:.3f})",
                    "",
                )
            if "rss_ratio" in entry:
                low, high = entry["rss_ratio_range"]
                out.add_row(
                    f"{label} peak RSS",
                    model,
                    _mb(entry["stage_peak_rss_bytes"]),
                    _mb(entry["direct_peak_rss_bytes"]),
                    f"{entry['rss_ratio']:.3f} ({low:.3f}-{high:.3f})",
                    "",
                )
            if "peak_rss_over_f16" in entry:
                out.add_row(
                    f"{label} peak RSS / f16 file",
                    model,
                    _mb(entry["stage_peak_rss_bytes"]),
                    _mb(entry["f16_bytes"]),
                    f"{entry['peak_rss_over_f16']:.3f}",
                    _verdict(results, model, f"{section}.peak_rss_over_f16", entry["peak_rss_over_f16"]),
                )

    compare_rows("convert", "convert")
    compare_rows("quantize", "quantize")
    compare_rows("imatrix", "imatrix")
    compare_rows("imatrix", "quantize with imatrix", nested="quantize_with_imatrix")
    compare_rows("smoke", "smoke + quality")
    compare_rows("gptq", "gptq (vs gptqmodel)")
    for model, entry in results.get("gptq", {}).get("by_model", {}).items():
        same = "byte-identical" if entry["same_weights"] else "different"
        out.add_row("gptq: model.safetensors of both sides", model, same, "", "", "")
    compare_rows("quality", "quality vs llama-perplexity")
    for model, entry in results.get("quality", {}).get("by_model", {}).items():
        worst = ", ".join(f"{k} {v:.2%}" for k, v in entry["max_relative_difference"].items())
        tokens = "same tokens" if entry["same_tokens"] else "other tokens"
        out.add_row("quality figures: largest difference", model, "", "", f"{worst} ({tokens})", "")
    for model, entry in results.get("smoke", {}).get("by_model", {}).items():
        batches = entry["reference_quality_batches"]
        out.add_row("reference quality batches", model, str(batches["stage"]), str(batches["direct"]), "", "")
        loads = {side: sum(per_file.values()) for side, per_file in entry["model_loads"].items()}
        out.add_row("model loads (all files)", model, str(loads["stage"]), str(loads["direct"]), "", "")
    for model, entry in results.get("parity", {}).get("by_model", {}).items():
        low, high = entry["extra_fraction_range"]
        out.add_row(
            "smoke with parity / without: share of the stage",
            model,
            _s(entry["stage"]["wall_s"]),
            _s(entry["direct"]["wall_s"]),
            f"{entry['extra_fraction']:.3f} ({low:.3f}-{high:.3f})",
            _verdict(results, model, "parity.extra_fraction", entry["extra_fraction"]),
        )
        low, high = entry["checks_fraction_range"]
        out.add_row(
            "parity checks inside the stage",
            model,
            _s(entry["checks_s"]),
            "",
            f"{entry['checks_fraction']:.3f} ({low:.3f}-{high:.3f}) of the stage",
            "",
        )
    for model, entry in results.get("build", {}).get("by_model", {}).items():
        out.add_row("full build", model, _s(entry["wall"]), "", "", "")
    for section, label in (
        ("rebuild_noop", "rebuild, nothing changed"),
        ("rebuild_card_only", "rebuild, template edited"),
    ):
        for model, entry in results.get(section, {}).get("by_model", {}).items():
            low, high = entry["ratio_range"]
            ratio = f"{entry['ratio']:.4f} ({low:.4f}-{high:.4f}) of full"
            ran = ", ".join(entry["stages_ran"]) or "none"
            out.add_row(
                f"{label} (ran: {ran})",
                model,
                _s(entry["wall"]),
                "",
                ratio,
                _verdict(results, model, f"{section}.ratio", entry["ratio"]),
            )
    card = results.get("card_render")
    if card:
        out.add_row(
            "card render",
            card["model"],
            f"{card['wall_s'] * 1000:.0f} ms (first {card['first_s'] * 1000:.0f} ms)",
            "",
            "",
            "",
        )
    pub = results.get("publish_local")
    if pub:
        out.add_row(
            "publish (local): bytes written / artifact bytes",
            pub["model"],
            _mb(pub["bytes_written"]),
            _mb(pub["artifact_bytes"]),
            f"{pub['bytes_ratio']:.3f}",
            "",
        )
    for model, entry in results.get("memory", {}).get("by_model", {}).items():
        out.add_row(
            "build peak RSS / f16 file",
            model,
            _mb(entry["peak_rss_bytes"]),
            _mb(entry["f16_bytes"]),
            f"{entry['peak_rss_over_f16']:.2f} (x{entry['peak_rss_over_largest_tensor']:.1f} largest tensor)",
            _verdict(results, model, "memory.peak_rss_over_f16", entry["peak_rss_over_f16"]),
        )
    return out


def print_table(results: Mapping[str, Any], console: Console | None = None) -> None:
    """Print the table to the terminal."""
    (console or Console()).print(table(results))


def markdown_table(results: Mapping[str, Any]) -> str:
    """The same figures as a Markdown table, for the README's performance section."""
    plain = Console(record=True, width=400, color_system=None)
    rendered = table(results)
    header = [str(c.header) for c in rendered.columns]
    columns = [list(c.cells) for c in rendered.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in zip(*columns, strict=True):
        cells = []
        for cell in row:
            with plain.capture() as captured:
                plain.print(cell, end="", soft_wrap=True)
            cells.append(captured.get().replace("|", "\\|"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def series_entry(series: Series) -> dict[str, Any]:
    """A series as stored in results.json."""
    return series.summary()
