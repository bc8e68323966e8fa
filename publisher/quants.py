"""llama.cpp's quantization catalogue: names, ftypes, nominal sizes and what each is for.

The ftype numbers are llama.cpp's ``enum llama_ftype`` (include/llama.h); ``nominal_bpw`` is the
whole-file bits per weight llama.cpp's ``llama-quantize --help`` reports for Llama-3-8B, used only
to estimate sizes before a build. Real figures always come from the built files.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass


@dataclass(frozen=True)
class QuantType:
    """One entry of llama.cpp's quantization catalogue."""

    name: str
    ftype: int
    nominal_bpw: float
    family: str  # "legacy", "k-quant", "i-quant", "float"
    use_case: str
    needs_imatrix: bool = False
    method: str = ""  # the block format, for the card's explanation of methods


_Q = QuantType
CATALOGUE: dict[str, QuantType] = {
    q.name: q
    for q in (
        _Q(
            "Q2_K",
            10,
            3.17,
            "k-quant",
            "smallest K-quant; large quality loss, for memory-starved machines",
            method="Q2_K",
        ),
        _Q("Q3_K_S", 11, 3.65, "k-quant", "very small; high quality loss", method="Q3_K"),
        _Q("Q3_K_M", 12, 4.00, "k-quant", "very small; noticeable quality loss", method="Q3_K"),
        _Q("Q3_K_L", 13, 4.31, "k-quant", "small; moderate quality loss", method="Q3_K"),
        _Q("Q4_0", 2, 4.64, "legacy", "legacy 4-bit; prefer Q4_K_S or Q4_K_M where the model allows", method="Q4_0"),
        _Q("Q4_1", 3, 5.11, "legacy", "legacy 4-bit with offsets; prefer Q4_K_M", method="Q4_1"),
        _Q("Q4_K_S", 14, 4.67, "k-quant", "small; a little more loss than Q4_K_M", method="Q4_K"),
        _Q("Q4_K_M", 15, 4.90, "k-quant", "balanced size and quality; the usual first choice", method="Q4_K"),
        _Q("Q5_0", 8, 5.57, "legacy", "legacy 5-bit; prefer Q5_K_S or Q5_K_M", method="Q5_0"),
        _Q("Q5_1", 9, 6.04, "legacy", "legacy 5-bit with offsets; prefer Q5_K_M", method="Q5_1"),
        _Q("Q5_K_S", 16, 5.57, "k-quant", "larger; low quality loss", method="Q5_K"),
        _Q("Q5_K_M", 17, 5.70, "k-quant", "larger; very low quality loss", method="Q5_K"),
        _Q("Q6_K", 18, 6.57, "k-quant", "large; quality loss hard to measure", method="Q6_K"),
        _Q("Q8_0", 7, 8.51, "legacy", "very large; practically lossless", method="Q8_0"),
        _Q("F16", 1, 16.0, "float", "unquantized 16-bit float; the reference the others are measured against"),
        _Q("BF16", 32, 16.0, "float", "unquantized bfloat16; the reference the others are measured against"),
        _Q("F32", 0, 32.0, "float", "unquantized 32-bit float; for further conversion, not for inference"),
        _Q("Q2_K_S", 21, 3.17, "k-quant", "2-bit K-quant tuned with an importance matrix", needs_imatrix=True),
        _Q("IQ1_S", 24, 1.56, "i-quant", "1.56 bpw i-quant", needs_imatrix=True),
        _Q("IQ1_M", 31, 1.75, "i-quant", "1.75 bpw i-quant", needs_imatrix=True),
        _Q("IQ2_XXS", 19, 2.06, "i-quant", "2.06 bpw i-quant", needs_imatrix=True),
        _Q("IQ2_XS", 20, 2.31, "i-quant", "2.31 bpw i-quant", needs_imatrix=True),
        _Q("IQ2_S", 28, 2.5, "i-quant", "2.5 bpw i-quant", needs_imatrix=True),
        _Q("IQ2_M", 29, 2.7, "i-quant", "2.7 bpw i-quant", needs_imatrix=True),
        _Q("IQ3_XXS", 23, 3.06, "i-quant", "3.06 bpw i-quant", needs_imatrix=True),
        _Q("IQ3_XS", 22, 3.3, "i-quant", "3.3 bpw i-quant", needs_imatrix=True),
        _Q("IQ3_S", 26, 3.44, "i-quant", "3.44 bpw i-quant", needs_imatrix=True),
        _Q("IQ3_M", 27, 3.66, "i-quant", "3.66 bpw i-quant", needs_imatrix=True),
        _Q("IQ4_XS", 30, 4.25, "i-quant", "4.25 bpw non-linear i-quant", needs_imatrix=True),
        _Q("IQ4_NL", 25, 4.5, "i-quant", "4.5 bpw non-linear i-quant", needs_imatrix=True),
    )
}

# llama-quantize accepts these short names for the medium K-quant mixes.
ALIASES = {"Q3_K": "Q3_K_M", "Q4_K": "Q4_K_M", "Q5_K": "Q5_K_M"}

# What each block format is, in our words, for the card's "quant methods" section.
METHODS: dict[str, str] = {
    "Q2_K": "2-bit weights in super-blocks of 16 blocks of 16; 4-bit block scales and minimums.",
    "Q3_K": "3-bit weights in super-blocks of 16 blocks of 16; 6-bit block scales.",
    "Q4_K": "4-bit weights in super-blocks of 8 blocks of 32; 6-bit block scales and minimums.",
    "Q5_K": "5-bit weights, laid out like Q4_K.",
    "Q6_K": "6-bit weights in super-blocks of 16 blocks of 16; 8-bit block scales.",
    "Q4_0": "4-bit weights in blocks of 32 with one 16-bit scale per block (legacy).",
    "Q4_1": "4-bit weights in blocks of 32 with a 16-bit scale and minimum per block (legacy).",
    "Q5_0": "5-bit weights in blocks of 32 with one 16-bit scale per block (legacy).",
    "Q5_1": "5-bit weights in blocks of 32 with a 16-bit scale and minimum per block (legacy).",
    "Q8_0": "8-bit weights in blocks of 32 with one 16-bit scale per block.",
}


class UnknownQuantType(ValueError):
    """Raised for a name that is not in the catalogue (a ``ValueError`` so pydantic reports it)."""


def lookup(name: str) -> QuantType:
    """Return the catalogue entry for ``name`` (case-insensitive, aliases allowed).

    Raises ``ValueError`` with a did-you-mean hint for unknown names, and for types that need an
    importance matrix, which llama-cpp-python's quantize API cannot be given.
    """
    key = name.strip().upper()
    key = ALIASES.get(key, key)
    entry = CATALOGUE.get(key)
    if entry is None:
        close = _closest(key)
        hint = f" (did you mean {close}?)" if close else f" (known: {', '.join(usable_names())})"
        raise UnknownQuantType(f"unknown quant type {name!r}{hint}")
    if entry.needs_imatrix:
        raise ValueError(
            f"{entry.name} needs an importance matrix (llama-imatrix), which publisher cannot pass "
            "to llama.cpp's quantizer yet; use a K-quant such as Q4_K_M instead"
        )
    return entry


def _closest(key: str) -> str | None:
    """The most similar usable name; on a tie the medium ``_M`` mix, the one people usually mean."""
    scored = [(difflib.SequenceMatcher(None, key, name).ratio(), name) for name in usable_names()]
    scored = [(ratio, name) for ratio, name in scored if ratio >= 0.6]
    if not scored:
        return None
    best = max(ratio for ratio, _name in scored)
    tied = [name for ratio, name in scored if ratio == best]
    return next((name for name in tied if name.endswith("_M")), tied[0])


def usable_names() -> list[str]:
    """Names a recipe may list: the catalogue minus the types that need an importance matrix."""
    return [q.name for q in CATALOGUE.values() if not q.needs_imatrix]
