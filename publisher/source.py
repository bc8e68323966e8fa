"""Facts about a source model folder: which files matter, its tensors, its shape, its own card.

Fetch reads a folder through this module once and records what it learned in the manifest
(``SourceRecord``: parameter count, :class:`~publisher.manifest.Architecture`, the original
README). Everything downstream, the card included, reads those records. The only other reader is
the card's estimate before any build (``publisher card RECIPE`` with no manifest), which goes
through :func:`recorded_or_read` here, never through its own file access. Nothing here touches
the network.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from publisher import limits
from publisher.errors import SourceError
from publisher.licences import is_licence_file
from publisher.manifest import Architecture, LicenceFile, Manifest, SourceFacts, SourceRecord, sha256_file
from publisher.recipe import Recipe

CONFIG_NAME = "config.json"
README_NAME = "README.md"
# What llama.cpp's converter reads (weights, config, tokenizer in its several formats), plus README.md.
CONFIG_FILES = (
    CONFIG_NAME,
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "chat_template.json",
    "chat_template.jinja",
    "*.tiktoken",
    README_NAME,
)
SAFETENSORS = ("*.safetensors", "model.safetensors.index.json")
PYTORCH_BIN = ("pytorch_model*.bin", "pytorch_model.bin.index.json")
# A real header is a few hundred kB even for the largest models; anything far above is a damaged file.
MAX_SAFETENSORS_HEADER = 100_000_000


# ---------------------------------------------------------------------------------------------
# Which files
# ---------------------------------------------------------------------------------------------


def allow_patterns(names: list[str]) -> list[str]:
    """The patterns to fetch given a repo's file list: safetensors when present, else PyTorch .bin files."""
    has_safetensors = any(fnmatch.fnmatch(n, "*.safetensors") for n in names)
    return list(CONFIG_FILES) + list(SAFETENSORS if has_safetensors else PYTORCH_BIN)


def wanted_files(names: list[str]) -> list[str]:
    """The subset of ``names`` (top-level files only) that conversion and the card read."""
    patterns = allow_patterns(names)
    return sorted(n for n in names if "/" not in n and any(fnmatch.fnmatch(n, p) for p in patterns))


# ---------------------------------------------------------------------------------------------
# Tensors, from safetensors headers only
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TensorStats:
    """Totals read from safetensors headers."""

    parameters: int
    data_bytes: int
    tensors: int


def read_safetensors_header(path: Path) -> dict[str, Any]:
    """The JSON header of a safetensors file (the tensor data is never read).

    Parsed here rather than with ``safetensors.safe_open``: that checks the data section against
    the header, so it would also need the weights on disk, while fetch's disk check and the card's
    estimate need only the header.
    """
    damaged = "the file is damaged, re-download it"
    with path.open("rb") as handle:
        raw = handle.read(8)
        if len(raw) != 8:
            raise SourceError(f"{path}: too short to be a safetensors file; {damaged}")
        length = int.from_bytes(raw, "little")
        if length > MAX_SAFETENSORS_HEADER:
            raise SourceError(f"{path}: safetensors header of {length} bytes is implausible; {damaged}")
        try:
            header = json.loads(handle.read(length))
        except ValueError:
            raise SourceError(f"{path}: unreadable safetensors header; {damaged}") from None
    if not isinstance(header, dict):
        raise SourceError(f"{path}: unreadable safetensors header; {damaged}")
    return header


def safetensors_stats(paths: list[Path]) -> TensorStats:
    """Parameter count, tensor bytes and tensor count from the headers of safetensors files."""
    params = nbytes = count = 0
    for path in paths:
        for name, entry in read_safetensors_header(path).items():
            if name == "__metadata__" or not isinstance(entry, dict):
                continue
            elements = 1
            for dim in entry.get("shape", []):
                elements *= int(dim)
            start, end = entry.get("data_offsets", (0, 0))
            params += elements
            nbytes += int(end) - int(start)
            count += 1
    return TensorStats(params, nbytes, count)


def safetensors_parameters(folder: Path) -> int | None:
    """Exact parameter count of the ``*.safetensors`` files in ``folder``; ``None`` when there are none."""
    files = sorted(folder.glob("*.safetensors"))
    return safetensors_stats(files).parameters if files else None


# ---------------------------------------------------------------------------------------------
# Shape, from config.json
# ---------------------------------------------------------------------------------------------


def _first_int(config: Mapping[str, Any], *keys: str) -> int | None:
    for key in keys:
        value = config.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def _sliding_layers(config: Mapping[str, Any], n_layers: int | None) -> int | None:
    """Layers that attend within the sliding window: from ``layer_types``, else Gemma's every-Nth-is-full pattern."""
    if not _first_int(config, "sliding_window"):
        return None
    kinds = config.get("layer_types")
    if isinstance(kinds, list):
        return int(sum(kind == "sliding_attention" for kind in kinds))
    pattern = _first_int(config, "sliding_window_pattern")
    if pattern is not None and n_layers is not None:
        return n_layers - n_layers // pattern
    return None


def architecture_from_config(config: Mapping[str, Any]) -> Architecture | None:
    """The decoder shape a transformers config describes, or ``None`` when it names no layers/heads/width.

    Key names follow the families transformers ships (Llama/Mistral/Qwen, GPT-2, Falcon, OPT,
    Mixtral, DeepSeek, Gemma); multimodal wrappers keep the language model's shape in ``text_config``.
    """
    if isinstance(config.get("text_config"), dict):
        config = {**config, **config["text_config"]}
    n_layers = _first_int(config, "num_hidden_layers", "n_layer", "num_layers")
    n_heads = _first_int(config, "num_attention_heads", "n_head")
    hidden = _first_int(config, "hidden_size", "n_embd", "d_model")
    if n_layers is None or n_heads is None or hidden is None:
        return None
    return Architecture(
        n_layers=n_layers,
        n_heads=n_heads,
        n_kv_heads=_first_int(config, "num_key_value_heads", "n_head_kv") or n_heads,
        head_dim=_first_int(config, "head_dim") or hidden // n_heads,
        hidden=hidden,
        intermediate=_first_int(config, "intermediate_size", "n_inner", "ffn_dim"),
        vocab=_first_int(config, "vocab_size"),
        tied_embeddings=bool(config.get("tie_word_embeddings", False)),
        attention_bias=bool(config.get("attention_bias", False)),
        max_positions=_first_int(config, "max_position_embeddings", "n_positions"),
        sliding_window=_first_int(config, "sliding_window"),
        sliding_layers=_sliding_layers(config, n_layers),
        experts=_first_int(config, "num_local_experts", "n_routed_experts", "num_experts"),
        experts_per_token=_first_int(config, "num_experts_per_tok", "num_experts_per_token"),
    )


def read_architecture(folder: Path) -> Architecture | None:
    """The shape from ``folder/config.json``, or ``None`` when it is absent or not decoder-like."""
    path = folder / CONFIG_NAME
    try:
        config = limits.read_model_config(folder)
    except (OSError, ValueError) as err:
        raise SourceError(f"{path}: unreadable config ({err}); fix or remove it") from None
    if config is None:
        return None
    if not isinstance(config, dict):
        raise SourceError(f"{path}: config.json is not a JSON object")
    return architecture_from_config(config)


# ---------------------------------------------------------------------------------------------
# Everything the card needs, read once
# ---------------------------------------------------------------------------------------------


def licence_paths(folder: Path, recipe: Recipe) -> list[Path]:
    """The licence files to publish: LICENSE*, USE_POLICY*, NOTICE* of ``folder``, then ``model.license_files``.

    A listed file is looked for in the source folder, then next to the recipe.
    """
    found = {p.name: p for p in sorted(folder.iterdir()) if p.is_file() and is_licence_file(p.name)}
    for index, item in enumerate(recipe.model.license_files):
        name = recipe.model.published_license_files[index]
        candidates = [folder / item, recipe.resolve_path(item)]
        path = next((c for c in candidates if c.is_file()), None)
        if path is None:
            raise SourceError(
                f"{recipe.where('model', 'license_files', index)}: {item} is neither in the source folder {folder} "
                "nor next to the recipe; fix the name or add the file"
            )
        found[name] = path
    return list(found.values())


def read_facts(folder: Path, licences: list[Path] | None = None) -> SourceFacts:
    """The architecture, the original README and the licence files of ``folder``, as fetch records them."""
    readme = folder / README_NAME
    card: str | None = None
    card_sha256: str | None = None
    if readme.is_file():
        try:
            card = readme.read_text(encoding="utf-8", errors="replace")
            card_sha256 = sha256_file(readme)
        except OSError as err:
            raise SourceError(f"{readme}: cannot read the original card ({err.strerror})") from None
    files = [LicenceFile(name=p.name, sha256=sha256_file(p), size=p.stat().st_size) for p in licences or []]
    return SourceFacts(
        architecture=read_architecture(folder), readme=card, readme_sha256=card_sha256, licence_files=files
    )


def _estimate_folder(recipe: Recipe, manifest: Manifest | None, source_dir: Path | None) -> Path | None:
    if source_dir is not None:
        if not source_dir.is_dir():
            raise SourceError(f"--source-dir {source_dir}: no such folder")
        return source_dir
    recorded = Path(manifest.source.path) if manifest and manifest.source else None
    for candidate in (recipe.source_dir(), recorded):
        if candidate is not None and candidate.is_dir():
            return candidate
    return None


def recorded_or_read(recipe: Recipe, manifest: Manifest | None, source_dir: Path | None = None) -> SourceRecord | None:
    """The source as the manifest recorded it; read from the folder only when fetch has not recorded its facts.

    That happens for a card rendered before any build (sizes are then estimates) and for builds
    fetched by an older publisher. The folder is ``source_dir``, else the recipe's ``source.path``,
    else the folder the manifest names; ``None`` when none of them exists.
    """
    recorded = manifest.source if manifest is not None else None
    if recorded is not None and recorded.facts is not None:
        return recorded
    folder = _estimate_folder(recipe, manifest, source_dir)
    if folder is None:
        return recorded
    parameters = recorded.parameters if recorded is not None and recorded.parameters else None
    return SourceRecord(
        repo=recipe.source.repo,
        path=str(folder),
        parameters=parameters or safetensors_parameters(folder),
        facts=read_facts(folder, licence_paths(folder, recipe)),
    )
