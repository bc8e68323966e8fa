"""The card's checks section: what the gate proved per file, read from the smoke records."""

from __future__ import annotations

from publisher.cards.environment import environment
from publisher.cards.gate import counted, gate_context
from publisher.manifest import Artifact, Manifest, TemplateResult, TokenizerResult

DIGEST = "4eed6d8d067bd5789f917f073192ee7212489104a80bd07627389bd424f55645"
TOKENIZER = TokenizerResult(
    passed=True,
    probes=121,
    mismatches=0,
    special_tokens=24,
    special_mismatches=0,
    sample_strings=2500,
    sample_characters=99557,
    sample_mismatches=0,
    structure_compared=49152,
    structure_differences=0,
    vocabulary_sha256=DIGEST,
    compared_on="m.F16.gguf",
)
TEMPLATE = TemplateResult(
    checked=True,
    shapes_compared=4,
    shapes_differing=0,
    source_cannot_render=["typed content parts: can only concatenate str"],
    builtin_format="chatml",
    builtin_differences=["shape 'no system', character 12: ..."],
)


def _artifact(quant: str, status: str = "passed") -> Artifact:
    return Artifact(
        quant_type=quant,
        path=f"m.{quant}.gguf",
        size_bytes=1,
        sha256="0" * 64,
        bits_per_weight=8.0,
        fingerprint="f",
        status=status,  # type: ignore[arg-type]
        tokenizer=TOKENIZER,
        template=TEMPLATE,
    )


def test_the_checks_section_lists_every_published_file_with_its_counts() -> None:
    manifest = Manifest(
        build_name="m",
        recipe_sha256="r",
        reference=_artifact("F16"),
        artifacts={"Q8_0": _artifact("Q8_0"), "Q2_K": _artifact("Q2_K", "failed")},
    )
    context = gate_context(manifest)
    assert [row["name"] for row in context["gate_rows"]] == ["m.F16.gguf", "m.Q8_0.gguf"]
    assert context["gate_rows"][1] == {
        "name": "m.Q8_0.gguf",
        "probes": "121/121",
        "sample": "2,500/2,500",
        "structure": "49,152/49,152",
        "specials": "24/24",
        "shapes": "4/4",
    }
    text = environment().get_template("partials/checks.md.j2").render(**context)
    assert "| m.Q8_0.gguf | 121/121 | 2,500/2,500 | 49,152/49,152 | 24/24 | 4/4 |" in text
    assert "Q2_K" not in text
    assert "sha256 of its tokenizer metadata `4eed6d8d067b…`), so the comparison ran once, on m.F16.gguf" in text
    assert "99,557 characters" in text
    assert "cannot render typed content parts: can only concatenate str; these shapes" in text
    assert "built-in `chatml` format for this template, which renders differently: shape 'no system'" in text


def test_no_build_no_section() -> None:
    assert gate_context(None) == {"gate_rows": [], "gate": {}}
    assert environment().get_template("partials/checks.md.j2").render(**gate_context(None)).strip() == ""
    assert (counted(None, None), counted(10, None), counted(1000, 3)) == ("not checked", "10/10", "997/1,000")


def test_files_without_gate_records_get_no_section() -> None:
    bare = _artifact("Q8_0").model_copy(update={"tokenizer": None, "template": None})
    manifest = Manifest(build_name="m", recipe_sha256="r", artifacts={"Q8_0": bare})
    assert gate_context(manifest)["gate_rows"] == []
