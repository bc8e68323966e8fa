"""Bounds on recipe values and the rules for the names and paths a recipe gives.

Every number a recipe sets has a range with a reason, every name that becomes a file name is one
safe path component short enough for the longest file a build writes, and every path is a
regular file or folder of the expected kind (never a device, FIFO or virtual file system entry).
The schema in :mod:`publisher.recipe` uses the pure checks here; :func:`check_paths` and
:func:`trained_context` look at the file system and run when a recipe is loaded from a file.
"""

from __future__ import annotations

import fnmatch
import json
import os
import stat
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import AfterValidator, WithJsonSchema

from publisher.formats import gguf_quants

if TYPE_CHECKING:
    from publisher.recipe import Recipe

# -- numbers ----------------------------------------------------------------------------------

MAX_CONTEXT = 1_048_576
MIN_CONTEXT = 16
MAX_TOKENS = 4096
MAX_CHUNKS = 10_000
MAX_SEED = 2**32 - 2  # llama.cpp seeds are uint32, and 0xFFFFFFFF means "pick a random seed"
MAX_GPU_LAYERS = 1000
THREADS_PER_CORE = 8


def cores() -> int:
    """CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def max_threads() -> int:
    """The most quantizer threads a recipe may ask for on this machine."""
    return THREADS_PER_CORE * cores()


def in_range(low: int, high: int | Callable[[], int], why: str) -> AfterValidator:
    """A validator keeping an ``int`` within ``low..high``; the error says why the bound exists."""

    def check(value: int) -> int:
        top = high() if callable(high) else high
        if not low <= value <= top:
            raise ValueError(f"{value} is out of range {low}..{top}: {why}")
        return value

    return AfterValidator(check)


def int_schema(low: int, high: int | None = None) -> WithJsonSchema:
    """The JSON Schema of a bounded integer, for editors."""
    return WithJsonSchema({"type": "integer", "minimum": low} | ({} if high is None else {"maximum": high}))


_CONTEXT_WHY = "llama.cpp allocates the whole context up front; no model is trained on more"
ContextLength = Annotated[int, in_range(MIN_CONTEXT, MAX_CONTEXT, _CONTEXT_WHY), int_schema(MIN_CONTEXT, MAX_CONTEXT)]
Threads = Annotated[
    int,
    in_range(0, max_threads, f"at most {THREADS_PER_CORE} per core of this machine; 0 uses every core"),
    int_schema(0),
]
MaxTokens = Annotated[
    int,
    in_range(1, MAX_TOKENS, "a smoke answer needs a few dozen tokens, and every file generates it"),
    int_schema(1, MAX_TOKENS),
]
Chunks = Annotated[
    int,
    in_range(1, MAX_CHUNKS, "each chunk is evaluated on every file; a few dozen measure quality well"),
    int_schema(1, MAX_CHUNKS),
]
Seed = Annotated[
    int,
    in_range(0, MAX_SEED, "llama.cpp seeds are 32-bit and 4294967295 means a random seed"),
    int_schema(0, MAX_SEED),
]
GpuLayers = Annotated[
    int,
    in_range(-1, MAX_GPU_LAYERS, "-1 offloads every layer, and no model has more than 1000"),
    int_schema(-1, MAX_GPU_LAYERS),
]

# Keys of config.json that hold the context a model was trained on, most specific first.
TRAINED_CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length", "n_ctx")
MAX_CONFIG_BYTES = 10_000_000


def read_model_config(folder: Path) -> Any:
    """``folder/config.json`` parsed (any JSON value), or ``None`` when the folder has none.

    The one reader of a model's config.json. ``OSError`` or ``ValueError`` when it cannot be read
    or parsed, or is not a regular file of at most ``MAX_CONFIG_BYTES``.
    """
    config = folder / "config.json"
    try:
        info = config.stat()
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_CONFIG_BYTES:
        raise ValueError(f"not a regular file of at most {MAX_CONFIG_BYTES} bytes")
    return json.loads(config.read_text(encoding="utf-8"))


def trained_context(source: Path) -> int | None:
    """The trained context from ``source/config.json``, or ``None`` when it cannot be told."""
    try:
        data = read_model_config(source)
    except (OSError, ValueError):
        return None  # fetch reports a broken source; validation only skips the comparison
    for section in (data, data.get("text_config")) if isinstance(data, dict) else ():
        if isinstance(section, dict):
            for key in TRAINED_CONTEXT_KEYS:
                value = section.get(key)
                if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                    return value
    return None


# -- names ------------------------------------------------------------------------------------

NAME_MAX_BYTES = 255  # the file-name limit of ext4, xfs, btrfs, tmpfs and NTFS
# The longest name a build writes from its basename: a temporary shard of the longest quant type,
# ".<basename>.<TYPE>-00001-of-00001.gguf.<8 random>.partial".
_LONGEST_TYPE = max(len(name) for name in gguf_quants.CATALOGUE)
BASENAME_OVERHEAD = len(f"..{'X' * _LONGEST_TYPE}-00001-of-00001.gguf.XXXXXXXX.partial")
MAX_BASENAME_BYTES = NAME_MAX_BYTES - BASENAME_OVERHEAD


def name_problem(value: str, max_bytes: int = NAME_MAX_BYTES) -> str | None:
    """Why ``value`` cannot be one file-name component, or ``None`` when it can.

    Letters, digits, ``.``, ``_`` and ``-`` only, starting with a letter or digit and not ending
    in a dot: no separators, ``..``, control characters, spaces or look-alike Unicode, so the
    name means the same on every file system and in every URL.
    """
    if not value:
        return "must not be empty"
    bad = next((c for c in value if not (c.isascii() and (c.isalnum() or c in "._-"))), None)
    if bad is not None:
        return f"{_char(bad)} is not allowed (letters, digits, . _ - only)"
    if not value[0].isalnum():
        return "must start with a letter or digit"
    return name_end_problem(value, max_bytes)


def name_end_problem(value: str, max_bytes: int) -> str | None:
    """The checks every file-name component shares, whatever letters it allows: no final dot, a byte limit."""
    if value.endswith("."):
        return "must not end with a dot"
    size = len(value.encode())
    if size > max_bytes:
        return f"is {size} bytes; at most {max_bytes} fit the longest file name a build writes"
    return None


def _char(c: str) -> str:
    if c == " ":
        return "a space"
    if c in "/\\":
        return f"the path separator {c!r}"
    name = unicodedata.name(c, "")
    return f"U+{ord(c):04X}" + (f" ({name})" if name else "")


def surrogate_problem(value: str) -> str | None:
    """Why text holding a lone surrogate cannot be used (it has no UTF-8 form), else ``None``."""
    found = next((c for c in value if "\ud800" <= c <= "\udfff"), None)
    if found is None:
        return None
    return f"holds a lone surrogate U+{ord(found):04X}, which is not a character and cannot be written as UTF-8"


# -- paths ------------------------------------------------------------------------------------

MAX_TEXT_BYTES = 64 * 1024 * 1024
MAX_TEMPLATE_BYTES = 1024 * 1024
MAX_TEMPLATE_ENTRIES = 10_000
VIRTUAL_ROOTS = (Path("/proc"), Path("/sys"), Path("/dev"))


def path_problem(value: str, path: Path, kind: str, max_bytes: int | None = None) -> str | None:
    """Why ``path`` (given as ``value``) is not a readable ``kind`` ("file" or "folder"), or ``None``.

    A file must be regular (not a device, FIFO or socket) and at most ``max_bytes``; nothing under
    /proc, /sys or /dev is accepted, since their entries only pretend to be files.
    """
    if "\x00" in value:
        return "holds a NUL character, which no path can"
    if not value.strip():
        return "is empty; give a path, or leave the key out"
    value = value if value.isprintable() else repr(value)
    try:
        resolved = path.resolve()
        info = resolved.stat()
    except FileNotFoundError:
        return f"{value}: no such {kind}"
    except RuntimeError:
        return f"{value}: symbolic links loop"
    except OSError as err:
        return f"{value}: cannot use this path ({err.strerror or err})"
    if any(resolved == root or resolved.is_relative_to(root) for root in VIRTUAL_ROOTS):
        return f"{value}: {resolved} is in a virtual file system, not a regular {kind}"
    if kind == "folder":
        return None if stat.S_ISDIR(info.st_mode) else f"{value}: is {_kind_of(info.st_mode)}, not a folder"
    if not stat.S_ISREG(info.st_mode):
        return f"{value}: is {_kind_of(info.st_mode)}, not a regular file"
    if max_bytes is not None and info.st_size > max_bytes:
        return f"{value}: {info.st_size} bytes, more than the {max_bytes} this file may have"
    return None


def _kind_of(mode: int) -> str:
    kinds = [
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
    ]
    return next((label for test, label in kinds if test(mode)), "a regular file")


def template_tree_problem(folder: Path, value: str, pattern: str = "*") -> str | None:
    """Why the ``pattern`` files under ``folder`` cannot be read as templates, or ``None``.

    The card stage reads every file below a partials folder and every ``*.j2`` below a recipe's
    own template, so such a folder must be of modest size and those files regular and small.
    """
    seen = 0
    for root, dirs, files in os.walk(folder):
        seen += len(dirs) + len(files)
        if seen > MAX_TEMPLATE_ENTRIES:
            return f"{value}: its folder holds more than {MAX_TEMPLATE_ENTRIES} entries; give a folder of templates"
        for name in fnmatch.filter(files, pattern):
            entry = Path(root) / name
            try:
                info = entry.stat()
            except OSError:
                continue  # a dangling link is never read as a template
            if not stat.S_ISREG(info.st_mode):
                return f"{value}: {entry.relative_to(folder)} is {_kind_of(info.st_mode)}, not a regular file"
            if info.st_size > MAX_TEMPLATE_BYTES:
                return f"{value}: {entry.relative_to(folder)} is larger than {MAX_TEMPLATE_BYTES} bytes"
    return None


# -- checks against the file system, when a recipe is loaded from a file -------------------------

Loc = tuple[int | str, ...]
Finding = tuple[Loc, str]


def check_files(recipe: Recipe) -> tuple[list[Finding], list[Finding]]:
    """``(problems, warnings)`` of the recipe's paths and of its context lengths against the source.

    Each finding names the recipe field it is about, for a ``file:line: field: message`` line.
    """
    problems: list[Finding] = []
    warnings: list[Finding] = []

    def check(
        loc: Loc, value: str | None, kind: str, max_bytes: int | None = None, *, optional: bool = False
    ) -> Path | None:
        if value is None:
            return None
        path = recipe.resolve_path(value)
        if optional and "\x00" not in value and not path.exists() and not path.is_symlink():
            return None
        problem = path_problem(value, path, kind, max_bytes)
        if problem is not None:
            problems.append((loc, problem))
            return None
        return path

    # A missing source folder is fetch's to report: --source-dir may stand in for it, and a
    # finished build is still published and described after its source copy is gone.
    source = check(("source", "path"), recipe.source.path, "folder", optional=True)
    check(("smoke", "quality", "text"), recipe.smoke.quality.text, "file", MAX_TEXT_BYTES)
    if recipe.imatrix is not None:
        check(("imatrix", "text"), recipe.imatrix.text, "file", MAX_TEXT_BYTES)
        check(("imatrix", "file"), recipe.imatrix.file, "file")
    for name, section in (("gptq", recipe.gptq), ("awq", recipe.awq)):
        if section is not None:
            check((name, "calibration"), section.calibration, "file", MAX_TEXT_BYTES)
    partials = check(("card", "partials_dir"), recipe.card.partials_dir, "folder")
    if partials is not None and (problem := template_tree_problem(partials, str(recipe.card.partials_dir))):
        problems.append((("card", "partials_dir"), problem))
    if recipe.card.template not in BUILTIN_TEMPLATE_NAMES:
        own = check(("card", "template"), recipe.card.template, "file", MAX_TEMPLATE_BYTES)
        if own is not None and (problem := template_tree_problem(own.parent, recipe.card.template, "*.j2")):
            problems.append((("card", "template"), problem))
    if source is not None and (trained := trained_context(source)) is not None:
        findings = warnings if recipe.model.allow_long_context else problems
        for loc, value, default in context_lengths(recipe):
            if value > trained:
                findings.append((loc, _beyond_training(value, trained, recipe.model.allow_long_context, default)))
    return problems, warnings


BUILTIN_TEMPLATE_NAMES = ("gguf", "branches")


def context_lengths(recipe: Recipe) -> list[tuple[Loc, int, bool]]:
    """Every context length of the recipe: its field, its value, and whether that is the default."""
    sections: list[tuple[Loc, Any]] = [
        (("model",), recipe.model),
        (("smoke",), recipe.smoke),
        (("smoke", "quality"), recipe.smoke.quality),
    ]
    if recipe.imatrix is not None:
        sections.append((("imatrix",), recipe.imatrix))
    return [
        ((*at, "context_length"), section.context_length, "context_length" not in section.model_fields_set)
        for at, section in sections
    ]


def _beyond_training(value: int, trained: int, allowed: bool, default: bool) -> str:
    shown = f"{value} (the default)" if default else str(value)
    said = f"{shown} is more than the {trained} tokens the model was trained on (config.json)"
    if allowed:
        return f"{said}; allowed by model.allow_long_context, expect worse answers beyond {trained}"
    return f"{said}; lower it, or set model.allow_long_context: true if the model really handles more"
