"""The quant catalogue against llama.cpp itself, and name lookup with its hints."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from publisher import quants

K_AND_LEGACY_BY_SIZE = [
    "Q2_K", "Q3_K_S", "Q3_K_M", "Q3_K_L", "Q4_0", "Q4_K_S", "Q4_K_M",
    "Q4_1", "Q5_K_S", "Q5_K_M", "Q6_K", "Q8_0", "F16", "F32",
]  # fmt: skip


def test_ftypes_match_the_installed_llama_cpp() -> None:
    llama_cpp = pytest.importorskip("llama_cpp")
    for entry in quants.CATALOGUE.values():
        constant = "LLAMA_FTYPE_ALL_F32" if entry.name == "F32" else f"LLAMA_FTYPE_MOSTLY_{entry.name}"
        assert getattr(llama_cpp, constant) == entry.ftype, entry.name


def test_ftypes_are_distinct() -> None:
    ftypes = [q.ftype for q in quants.CATALOGUE.values()]
    assert len(set(ftypes)) == len(ftypes)


def test_nominal_sizes_grow_with_precision() -> None:
    sizes = [quants.CATALOGUE[name].nominal_bpw for name in K_AND_LEGACY_BY_SIZE]
    assert sizes[:-3] == sorted(sizes[:-3])
    assert quants.CATALOGUE["Q5_0"].nominal_bpw < quants.CATALOGUE["Q5_1"].nominal_bpw
    assert quants.CATALOGUE["F16"].nominal_bpw == quants.CATALOGUE["BF16"].nominal_bpw == 16.0
    assert quants.CATALOGUE["F32"].nominal_bpw == 32.0


def test_every_block_method_is_explained() -> None:
    methods = {q.method for q in quants.CATALOGUE.values() if q.method}
    assert methods == set(quants.METHODS)
    assert all(text.endswith(".") for text in quants.METHODS.values())


def test_every_entry_says_what_it_is_for() -> None:
    for entry in quants.CATALOGUE.values():
        assert entry.use_case and not entry.use_case[0].isupper(), entry.name
        assert entry.family in {"legacy", "k-quant", "i-quant", "float"}
        assert entry.needs_imatrix == (entry.family == "i-quant" or entry.name == "Q2_K_S")


@pytest.mark.parametrize(
    ("name", "expected"),
    [("Q4_K_M", "Q4_K_M"), ("q4_k_m", "Q4_K_M"), (" Q8_0 ", "Q8_0"), ("Q4_K", "Q4_K_M"), ("q5_k", "Q5_K_M"),
     ("Q3_K", "Q3_K_M"), ("f16", "F16"), ("bf16", "BF16")],
)  # fmt: skip
def test_lookup_accepts_any_case_and_llama_quantize_aliases(name: str, expected: str) -> None:
    assert quants.lookup(name).name == expected


@pytest.mark.parametrize(
    ("typo", "suggestion"),
    [("Q4_K_X", "Q4_K_M"), ("Q4KM", "Q4_K_M"), ("Q5_K_L", "Q5_K_M"), ("q6k", "Q6_K"), ("Q8", "Q8_0"), ("Q2K", "Q2_K")],
)
def test_unknown_names_get_a_suggestion(typo: str, suggestion: str) -> None:
    with pytest.raises(
        quants.UnknownQuantType, match=rf"^unknown quant type '{typo}' \(did you mean {suggestion}\?\)$"
    ):
        quants.lookup(typo)


def test_hopeless_names_list_the_choices() -> None:
    with pytest.raises(ValueError, match=r"^unknown quant type 'gptq' \(known: Q2_K, Q3_K_S, .*, F32\)$") as info:
        quants.lookup("gptq")
    assert "IQ" not in str(info.value)


@pytest.mark.parametrize("name", [q.name for q in quants.CATALOGUE.values() if q.needs_imatrix])
def test_imatrix_types_are_refused_with_the_reason(name: str) -> None:
    with pytest.raises(ValueError, match=rf"^{name} needs an importance matrix \(llama-imatrix\)"):
        quants.lookup(name.lower())
    assert name not in quants.usable_names()


def test_every_single_typo_of_a_usable_name_gets_a_hint() -> None:
    """Drop or replace any one character of any usable name: the error always suggests something."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_"
    for name in quants.usable_names():
        typos = {name[:i] + name[i + 1 :] for i in range(len(name))}
        typos |= {name[:i] + c + name[i + 1 :] for i in range(len(name)) for c in alphabet}
        for typo in typos:
            try:
                entry = quants.lookup(typo)
            except quants.UnknownQuantType as err:
                assert "(did you mean " in str(err), typo
            except ValueError as err:
                assert "importance matrix" in str(err), typo
            else:
                assert entry.name in quants.usable_names()


@given(st.text(max_size=20))
def test_lookup_never_fails_other_than_with_value_error(name: str) -> None:
    try:
        entry = quants.lookup(name)
    except ValueError as err:
        assert str(err)
        assert "\n" not in str(err)
    else:
        assert entry in quants.CATALOGUE.values()
