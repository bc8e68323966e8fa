"""File names: readable in the model's own script, valid on the Hub, with the quant tag llama.cpp looks for.

Two styles: ``thebloke`` (``causallm_14b.Q4_K_M.gguf``, lower case, the default) and
``llama.cpp`` (``CausalLM-14B-Q4_K_M.gguf``: gguf-py's ``naming_convention``,
``<Name>-<Size>-<Quant>.gguf``). Letters and digits of every script stay (``模型 / 七号`` gives
``模型_七号.Q4_K_M.gguf``); separators, spaces and punctuation become one separator.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Literal

from publisher import limits

Naming = Literal["thebloke", "llama.cpp"]
NAMINGS: tuple[Naming, ...] = ("thebloke", "llama.cpp")
_SPLIT_PART = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$", re.IGNORECASE)


def _keeps(c: str) -> bool:
    """Letters (with their combining marks) and digits of any script."""
    return unicodedata.category(c)[0] in "LMN"


def readable_stem(text: str, sep: str, *, lower: bool) -> str:
    """``text`` in NFC with every run of characters other than letters, digits and ``.`` turned into ``sep``."""
    text = unicodedata.normalize("NFC", text.lower() if lower else text)
    out: list[str] = []
    for c in text:
        if _keeps(c) or c == ".":
            out.append(c)
        elif not out or out[-1] != sep:
            out.append(sep)
    return "".join(out).strip(sep + ".") or "model"


def stem_problem(value: str, max_bytes: int) -> str | None:
    """Why ``value`` cannot start a published file name, or ``None`` when it can.

    Letters, marks and digits of any script, and ``.``, ``_``, ``-``, in NFC (so the name has
    one byte form on every system and in every URL); at most ``max_bytes`` bytes of UTF-8.
    """
    if not value:
        return "must not be empty"
    bad = next((c for c in value if not (_keeps(c) or c in "._-")), None)
    if bad is not None:
        return f"{limits._char(bad)} is not allowed (letters, digits, . _ - only)"
    if unicodedata.normalize("NFC", value) != value:
        return "is not in Unicode NFC form; write the composed characters"
    if not _keeps(value[0]) or unicodedata.category(value[0])[0] == "M":
        return "must start with a letter or digit"
    return limits.name_end_problem(value, max_bytes)


def default_basename(model_name: str, naming: Naming, size_label: str | None) -> str:
    """The file name stem made from the model's display name."""
    if naming == "thebloke":
        return readable_stem(model_name, "_", lower=True)
    name = readable_stem(model_name, "-", lower=False)
    return f"{name}-{size_label}" if size_label else name


def filename(basename: str, quant: str, naming: Naming) -> str:
    """``<basename>.<QUANT>.gguf`` or ``<basename>-<QUANT>.gguf``."""
    return f"{basename}{'.' if naming == 'thebloke' else '-'}{quant}.gguf"


def llama_cpp_pick(names: list[str], tag: str) -> str | None:
    """The file llama.cpp's ``-hf repo:TAG`` opens among ``names`` (common/download.cpp, find_best_model).

    The first model file, in the Hub's (sorted) order, whose name holds ``TAG`` followed by
    ``.`` or ``-`` (case-insensitive), skipping later parts of a split file and the
    ``mmproj``/``imatrix`` files llama.cpp does not take for a model.
    """
    pattern = re.compile(re.escape(tag) + r"[.-]", re.IGNORECASE)
    for name in sorted(names):
        if not name.endswith(".gguf") or "mmproj" in name or "imatrix" in name:
            continue
        part = _SPLIT_PART.search(name)
        if part and part.group(1) != "00001":
            continue
        if pattern.search(name):
            return name
    return None
