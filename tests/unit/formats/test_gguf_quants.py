"""The quant catalogue against llama.cpp itself, and name lookup with its hints."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from publisher.formats import gguf_quants

K_AND_LEGACY_BY_SIZE = [
    "Q2_K", "Q3_K_S", "Q3_K_M", "Q3_K_L", "Q4_0", "Q4_K_S", "Q4_K_M",
    "Q4_1", "Q5_K_S", "Q5_K_M", "Q6_K", "Q8_0", "F16", "F32",
]  # fmt: skip


def test_ftypes_match_the_installed_llama_cpp() -> None:
    llama_cpp = pytest.importorskip("llama_cpp")
    for entry in gguf_quants.CATALOGUE.values():
        constant = "LLAMA_FTYPE_ALL_F32" if entry.name == "F32" else f"LLAMA_FTYPE_MOSTLY_{entry.name}"
        assert getattr(llama_cpp, constant) == entry.ftype, entry.name


def test_ftypes_are_distinct() -> None:
    ftypes = [q.ftype for q in gguf_quants.CATALOGUE.values()]
    assert len(set(ftypes)) == len(ftypes)


def test_nominal_sizes_grow_with_precision() -> None:
    sizes = [gguf_quants.CATALOGUE[name].nominal_bpw for name in K_AND_LEGACY_BY_SIZE]
    assert sizes[:-3] == sorted(sizes[:-3])
    assert gguf_quants.CATALOGUE["Q5_0"].nominal_bpw < gguf_quants.CATALOGUE["Q5_1"].nominal_bpw
    assert gguf_quants.CATALOGUE["F16"].nominal_bpw == gguf_quants.CATALOGUE["BF16"].nominal_bpw == 16.0
    assert gguf_quants.CATALOGUE["F32"].nominal_bpw == 32.0


def test_every_block_method_is_explained() -> None:
    methods = {q.method for q in gguf_quants.CATALOGUE.values() if q.method}
    assert methods == set(gguf_quants.METHODS)
    assert all(text.endswith(".") for text in gguf_quants.METHODS.values())


def test_every_entry_says_what_it_is_for() -> None:
    for entry in gguf_quants.CATALOGUE.values():
        assert entry.use_case and not entry.use_case[0].isupper(), entry.name
        assert entry.family in {"legacy", "k-quant", "i-quant", "float", "ternary", "mxfp", "low-bit"}


# llama-quant.cpp: tensor_requires_imatrix() names IQ1_S/M, IQ2_XXS/XS/S and IQ3_XXS (and Q2_K in a
# Q2_K_S file); these mixes place one of them on some tensor of every model (IQ2_M's default tensor
# type is IQ2_S, IQ3_XS puts IQ3_XXS on attn_q/attn_k). tests/integration/imatrix/test_smollm2.py asks llama.cpp.
NEED_IMATRIX = {"IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ2_M", "IQ3_XXS", "IQ3_XS", "Q2_K_S"}


def test_the_types_that_need_an_importance_matrix() -> None:
    assert {q.name for q in gguf_quants.CATALOGUE.values() if q.needs_imatrix} == NEED_IMATRIX
    assert gguf_quants.IMATRIX_TENSOR_TYPES <= set(gguf_quants.TENSOR_TYPES)


def test_catalogue_is_llama_quantizes_list() -> None:
    """Every type `llama-quantize --help` offers in llama.cpp of llama-cpp-python 0.3.36 (COPY aside)."""
    offered = {
        "Q1_0", "Q2_0", "Q4_0", "Q4_1", "MXFP4_MOE", "Q5_0", "Q5_1", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ2_M",
        "IQ1_S", "IQ1_M", "TQ1_0", "TQ2_0", "Q2_K", "Q2_K_S", "IQ3_XXS", "IQ3_S", "IQ3_M", "IQ3_XS", "Q3_K_S",
        "Q3_K_M", "Q3_K_L", "IQ4_NL", "IQ4_XS", "Q4_K_S", "Q4_K_M", "Q5_K_S", "Q5_K_M", "Q6_K", "Q8_0", "F16",
        "BF16", "F32",
    }  # fmt: skip
    assert set(gguf_quants.CATALOGUE) == offered


def test_tensor_types_match_ggml() -> None:
    gguf = pytest.importorskip("gguf")
    for name, number in gguf_quants.TENSOR_TYPES.items():
        if name not in {"Q1_0", "Q2_0"}:  # newer than the gguf package's enum
            assert gguf.GGMLQuantizationType[name] == number, name


@pytest.mark.parametrize(("name", "number"), [("q8_0", 8), (" Q6_K ", 14), ("bf16", 30), ("IQ4_NL", 20)])
def test_tensor_type_lookup(name: str, number: int) -> None:
    assert gguf_quants.tensor_type(name) == number


@pytest.mark.parametrize(("typo", "hint"), [("Q8_K_M", "(did you mean Q8_0?)"), ("Q4_K_M", "(did you mean Q4_K?)")])
def test_unknown_tensor_types_get_a_hint(typo: str, hint: str) -> None:
    with pytest.raises(ValueError, match=rf"^unknown tensor type '{typo}' " + re.escape(hint) + "$"):
        gguf_quants.tensor_type(typo)


@pytest.mark.parametrize(
    ("name", "expected"),
    [("Q4_K_M", "Q4_K_M"), ("q4_k_m", "Q4_K_M"), (" Q8_0 ", "Q8_0"), ("Q4_K", "Q4_K_M"), ("q5_k", "Q5_K_M"),
     ("Q3_K", "Q3_K_M"), ("f16", "F16"), ("bf16", "BF16")],
)  # fmt: skip
def test_lookup_accepts_any_case_and_llama_quantize_aliases(name: str, expected: str) -> None:
    assert gguf_quants.lookup(name).name == expected


@pytest.mark.parametrize(
    ("typo", "suggestion"),
    [("Q4_K_X", "Q4_K_M"), ("Q4KM", "Q4_K_M"), ("Q5_K_L", "Q5_K_M"), ("q6k", "Q6_K"), ("Q8", "Q8_0"), ("Q2K", "Q2_K")],
)
def test_unknown_names_get_a_suggestion(typo: str, suggestion: str) -> None:
    with pytest.raises(
        gguf_quants.UnknownQuantType, match=rf"^unknown quant type '{typo}' \(did you mean {suggestion}\?\)$"
    ):
        gguf_quants.lookup(typo)


def test_hopeless_names_list_the_choices() -> None:
    with pytest.raises(ValueError, match=r"^unknown quant type 'gptq' \(known: Q2_K, Q3_K_S, .*, IQ2_XS, .*\)$"):
        gguf_quants.lookup("gptq")


@pytest.mark.parametrize("name", [q.name for q in gguf_quants.CATALOGUE.values() if q.needs_imatrix])
def test_imatrix_types_are_known_names(name: str) -> None:
    """Whether one may be built is the recipe's question (it needs an imatrix section), not the catalogue's."""
    assert gguf_quants.lookup(name.lower()).needs_imatrix


def test_every_single_typo_of_a_name_gets_a_hint() -> None:
    """Drop or replace any one character of any name: the error always suggests something."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_"
    for name in gguf_quants.CATALOGUE:
        typos = {name[:i] + name[i + 1 :] for i in range(len(name))}
        typos |= {name[:i] + c + name[i + 1 :] for i in range(len(name)) for c in alphabet}
        for typo in typos:
            try:
                entry = gguf_quants.lookup(typo)
            except gguf_quants.UnknownQuantType as err:
                assert "(did you mean " in str(err), typo
            else:
                assert entry.name in gguf_quants.CATALOGUE


@given(st.text(max_size=20))
def test_lookup_never_fails_other_than_with_value_error(name: str) -> None:
    try:
        entry = gguf_quants.lookup(name)
    except ValueError as err:
        assert str(err)
        assert "\n" not in str(err)
    else:
        assert entry in gguf_quants.CATALOGUE.values()
