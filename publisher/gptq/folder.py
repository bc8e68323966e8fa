"""Make a GPTQ folder publishable and reproducible once gptqmodel has written it.

gptqmodel rewrites ``generation_config.json`` (to sampling), saves the tokenizer its own way, and
records neither the calibration dataset nor the sequence length. Here the source's generation
config and tokenizer files are copied back byte for byte, and the calibration facts are added to
the ``meta`` of ``quantize_config.json`` (and of ``config.json``'s ``quantization_config``), where
gptqmodel keeps facts that do not change how the weights are read.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from publisher.manifest import guard_write

# Files a loader reads the tokenizer and chat template from; the source's own copies win.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "chat_template.jinja",
    "chat_template.json",
)
COPIED_FROM_SOURCE = (*TOKENIZER_FILES, "generation_config.json")
QUANTIZE_CONFIG = "quantize_config.json"
# Keys gptqmodel writes that hold a path or time of the run that made the file, not a fact about it.
VOLATILE_META = ("offload_to_disk_path",)
# gptqmodel's per-module log (loss and seconds per module): kept in the build's logs, not published.
QUANT_LOG = "quant_log.csv"


def restore_source_files(folder: Path, source: Path) -> list[str]:
    """Replace the tokenizer and generation files in ``folder`` with the source's; return those copied."""
    copied = []
    for name in COPIED_FROM_SOURCE:
        target = guard_write(folder / name)
        if (source / name).is_file():
            shutil.copyfile(source / name, target)
            copied.append(name)
        else:
            target.unlink(missing_ok=True)
    return copied


def move_quant_log(folder: Path, logs: Path, stem: str) -> None:
    """Move gptqmodel's per-module log out of the folder (its timings differ on every run)."""
    log = folder / QUANT_LOG
    if log.is_file():
        shutil.move(log, guard_write(logs / f"{stem}.{QUANT_LOG}"))


def _with_meta(config: dict[str, Any], facts: dict[str, Any]) -> dict[str, Any]:
    meta = {k: v for k, v in dict(config.get("meta") or {}).items() if k not in VOLATILE_META}
    return config | {"meta": meta | facts}


def record_calibration(folder: Path, facts: dict[str, Any]) -> None:
    """Add the calibration facts (dataset, samples, seq_len) to the folder's quantization configs."""
    path = folder / QUANTIZE_CONFIG
    if path.is_file():
        data = json.loads(path.read_text(encoding="utf-8"))
        guard_write(path).write_text(json.dumps(_with_meta(data, facts), indent=2) + "\n", encoding="utf-8")
    config_path = folder / "config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    if isinstance(config.get("quantization_config"), dict):
        config["quantization_config"] = _with_meta(config["quantization_config"], facts)
        guard_write(config_path).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def folder_files(folder: Path) -> list[Path]:
    """Every file under ``folder``, sorted, hidden ones included."""
    return sorted(p for p in folder.rglob("*") if p.is_file())


def tokenizer_mismatches(folder: Path, source: Path) -> list[str]:
    """Tokenizer files whose bytes differ from the source's (or that one side lacks)."""
    found = []
    for name in TOKENIZER_FILES:
        ours, theirs = folder / name, source / name
        if ours.is_file() != theirs.is_file() or (ours.is_file() and ours.read_bytes() != theirs.read_bytes()):
            found.append(name)
    return found
