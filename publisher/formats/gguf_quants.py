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
    method: str = ""  # the block format, for the card's explanation of methods
    # llama.cpp refuses to make the file without an importance matrix (its mix holds a tensor type
    # that tensor_requires_imatrix() names: IQ1_S/M, IQ2_XXS/XS/S, IQ3_XXS, or Q2_K inside Q2_K_S)
    needs_imatrix: bool = False


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
        _Q("Q2_K_S", 21, 3.17, "k-quant", "smaller Q2_K mix; only sensible with an importance matrix", "Q2_K", True),
        _Q("IQ1_S", 24, 1.56, "i-quant", "extreme compression; large models only, expect broken output", "IQ1", True),
        _Q("IQ1_M", 31, 1.75, "i-quant", "extreme compression; large models only", "IQ1", True),
        _Q("IQ2_XXS", 19, 2.06, "i-quant", "tiny; very high quality loss", "IQ2", True),
        _Q("IQ2_XS", 20, 2.31, "i-quant", "tiny; high quality loss", "IQ2", True),
        _Q("IQ2_S", 28, 2.50, "i-quant", "tiny; high quality loss, a little less than IQ2_XS", "IQ2", True),
        _Q("IQ2_M", 29, 2.70, "i-quant", "very small; usable on large models", "IQ2", True),
        _Q("IQ3_XXS", 23, 3.06, "i-quant", "very small; noticeable quality loss", "IQ3", True),
        _Q("IQ3_XS", 22, 3.30, "i-quant", "very small; a little better than Q3_K_S", "IQ3", True),
        _Q("IQ3_S", 26, 3.44, "i-quant", "small; better than Q3_K_S at the same size", "IQ3"),
        _Q("IQ3_M", 27, 3.66, "i-quant", "small; close to Q3_K_M in quality, smaller", "IQ3"),
        _Q("IQ4_XS", 30, 4.25, "i-quant", "small; close to Q4_K_S in quality, smaller", "IQ4"),
        _Q("IQ4_NL", 25, 4.50, "i-quant", "4-bit non-linear in blocks of 32; for rows K-quants cannot split", "IQ4"),
        _Q("TQ1_0", 36, 1.69, "ternary", "ternary weights; only for models trained ternary (BitNet)", "TQ"),
        _Q("TQ2_0", 37, 2.06, "ternary", "ternary weights, faster layout; only for models trained ternary", "TQ"),
        _Q(
            "MXFP4_MOE",
            38,
            4.25,
            "mxfp",
            "for MoE models: experts in MXFP4 (as gpt-oss ships them), every other tensor Q8_0",
            "MXFP4",
        ),
        _Q("Q1_0", 40, 1.125, "low-bit", "1-bit weights in blocks of 128; only for models trained for it", "Q1_0"),
        _Q("Q2_0", 41, 2.25, "low-bit", "2-bit weights in blocks of 64; only for models trained for it", "Q2_0"),
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
    "IQ1": "About 1.6-1.8 bits per weight: groups of 8 weights picked from a fixed grid of ternary patterns, "
    "with a shared scale; the choice is weighted by the importance matrix.",
    "IQ2": "About 2-2.7 bits per weight: groups of 8 weights stored as an index into a lattice of "
    "likely sign-and-magnitude patterns, chosen to keep the important columns closest.",
    "IQ3": "About 3-3.7 bits per weight: groups of 4 weights as lattice indices with signs, as IQ2 but finer.",
    "IQ4": "4-bit indices into a non-uniform table of levels (denser near zero), in blocks of 32 (IQ4_NL) "
    "or super-blocks of 256 with 6-bit scales (IQ4_XS).",
    "TQ": "Ternary weights (-1, 0, 1) with one scale per block; exact only for models trained that way.",
    "MXFP4": "4-bit floating-point weights in blocks of 32 sharing a power-of-two scale (OCP MX format).",
    "Q1_0": "1-bit weights (sign only) in blocks of 128 with one 16-bit scale.",
    "Q2_0": "2-bit weights in blocks of 64 with one 16-bit scale.",
}

# ggml tensor types a variant may name for single tensors (ggml.h ``enum ggml_type``; the
# intermediate Q8_1/Q8_K and the integer types cannot hold weights).
TENSOR_TYPES: dict[str, int] = {
    "F32": 0, "F16": 1, "Q4_0": 2, "Q4_1": 3, "Q5_0": 6, "Q5_1": 7, "Q8_0": 8, "Q2_K": 10,
    "Q3_K": 11, "Q4_K": 12, "Q5_K": 13, "Q6_K": 14, "IQ2_XXS": 16, "IQ2_XS": 17, "IQ3_XXS": 18,
    "IQ1_S": 19, "IQ4_NL": 20, "IQ3_S": 21, "IQ2_S": 22, "IQ4_XS": 23, "IQ1_M": 29, "BF16": 30,
    "TQ1_0": 34, "TQ2_0": 35, "MXFP4": 39, "Q1_0": 41, "Q2_0": 42,
}  # fmt: skip

# Tensor types llama.cpp will not write without importance data (llama-quant.cpp, tensor_requires_imatrix).
IMATRIX_TENSOR_TYPES = frozenset({"IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS"})


class UnknownQuantType(ValueError):
    """Raised for a name that is not in the catalogue (a ``ValueError`` so pydantic reports it)."""


def lookup(name: str) -> QuantType:
    """Return the catalogue entry for ``name`` (case-insensitive, aliases allowed).

    Raises :class:`UnknownQuantType` with a did-you-mean hint for unknown names. Whether a type
    may be built without an importance matrix is the recipe's question (``needs_imatrix``).
    """
    key = name.strip().upper()
    key = ALIASES.get(key, key)
    entry = CATALOGUE.get(key)
    if entry is None:
        close = _closest(key, list(CATALOGUE))
        hint = f" (did you mean {close}?)" if close else f" (known: {', '.join(CATALOGUE)})"
        raise UnknownQuantType(f"unknown quant type {name!r}{hint}")
    return entry


def tensor_type(name: str) -> int:
    """The ggml type number of a single-tensor type name such as ``Q8_0`` (case-insensitive)."""
    key = name.strip().upper()
    if key not in TENSOR_TYPES:
        close = _closest(key, list(TENSOR_TYPES))
        hint = f" (did you mean {close}?)" if close else f" (known: {', '.join(TENSOR_TYPES)})"
        raise ValueError(f"unknown tensor type {name!r}{hint}")
    return TENSOR_TYPES[key]


def _closest(key: str, names: list[str]) -> str | None:
    """The most similar name; on a tie the medium ``_M`` mix, the one people usually mean."""
    scored = [(difflib.SequenceMatcher(None, key, name).ratio(), name) for name in names]
    scored = [(ratio, name) for ratio, name in scored if ratio >= 0.6]
    if not scored:
        return None
    best = max(ratio for ratio, _name in scored)
    tied = [name for ratio, name in scored if ratio == best]
    return next((name for name in tied if name.endswith("_M")), tied[0])
