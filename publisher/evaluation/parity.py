"""Tokenizer parity and chat-template parity of a GGUF against its source model.

Tokenizer parity tokenizes a probe set with llama.cpp (the GGUF's vocabulary) and with the
source's own tokenizer and compares the ids, then compares the text of every vocabulary entry.
A GGUF whose vocabulary is off by a single swapped pair still loads and still "talks", only
wrongly; this is the check that catches it.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal, cast

from publisher import prompts
from publisher.evaluation.chat_shapes import ShapesReport, compare_shapes, first_text_difference
from publisher.evaluation.sample import broad_sample
from publisher.evaluation.smoke import prompts_of, system_message
from publisher.evaluation.source_tokenizer import SourceTokenizer, source_tokenizer
from publisher.evaluation.special_tokens import compare_specials, source_specials
from publisher.evaluation.structure import StructureReport, compare_structure
from publisher.evaluation.template_source import compare_template_source, source_templates
from publisher.evaluation.transformers_view import tokenizer_stamp
from publisher.gguf_info import vocabulary_sha256
from publisher.manifest import TemplateResult, TokenizerResult
from publisher.recipe import Recipe
from publisher.runtimes.llama_cpp import open_model, token_piece, vocab

__all__ = ["source_tokenizer", "template_parity", "tokenizer_parity"]

PROBES_FILE = "parity_probes.json"
UNICODE_FORMS: tuple[Literal["NFC", "NFD", "NFKC", "NFKD"], ...] = ("NFC", "NFD", "NFKC", "NFKD")


@dataclass(frozen=True)
class Probe:
    """A string to tokenize both ways, with a name for reports."""

    name: str
    text: str


def shipped_probes() -> list[Probe]:
    """The probe strings shipped with publisher (prose, CJK, code, emoji, numbers, whitespace...)."""
    data = json.loads(resources.files("publisher").joinpath("data", PROBES_FILE).read_text(encoding="utf-8"))
    return [Probe(item["name"], item["text"]) for item in data]


# Text whose four Unicode normal forms differ (accents, ligatures, compatibility characters).
NORMALIZATION_SAMPLE = "Crème brûlée, naïve café; Å Ω ﬁ ﬀ ① x² ｶﾀｶﾅ Ǆ ẛ̣"
# Character classes a normalizer or pre-tokenizer treats specially.
CHARACTER_CLASSES = {
    "digit runs": "0 12 345 6789 3.14159 1,000,000 ٣٤٥ ४५६",
    "whitespace runs": "a  b   c    d\u00a0e\u2003f \u3000g",
    "tabs": "\tindented\t\tcolumns\t",
    "CJK": "汉字かなカナ한글 漢字",
    "emoji with modifiers": "👍🏽 👨‍👩‍👧 🏳️‍🌈 ✋🏿",
    "right-to-left text": "שלום עולם مرحبا بالعالم",
    "zero-width characters": "zero\u200bwidth\u200cnon\u200djoiner\ufeffmark",
    "control characters": "bell\x07 escape\x1b[0m delete\x7f",
    "line ends": "unix\nwindows\r\nold mac\rend",
}


def generated_probes(special_tokens: Sequence[str]) -> list[Probe]:
    """Probes made from the tokenizer itself and from what normalizers and pre-tokenizers touch.

    Each special token alone, doubled, glued to words and with spaces and newlines around it (where
    an ``lstrip``/``rstrip`` flag or a pre-tokenizer split shows); one text in NFC, NFD, NFKC and
    NFKD; and the character classes above.
    """
    probes: list[Probe] = []
    for token in special_tokens:
        probes += [
            Probe(f"special token {token}", token),
            Probe(f"special token {token} doubled", token * 2),
            Probe(f"special token {token} glued to words", f"word{token}word"),
            Probe(f"special token {token} between spaces", f"a {token} b"),
            Probe(f"special token {token} between newlines", f"a\n{token}\nb"),
        ]
    if special_tokens:
        mixed = " ".join(f"word{i} {token}text\n" for i, token in enumerate(special_tokens))
        probes.append(Probe("special tokens between words", mixed))
    probes += [Probe(f"Unicode {form}", unicodedata.normalize(form, NORMALIZATION_SAMPLE)) for form in UNICODE_FORMS]
    probes += [Probe(name, text) for name, text in CHARACTER_CLASSES.items()]
    return probes


def probe_set(recipe: Recipe, special_tokens: Sequence[str]) -> list[Probe]:
    """Shipped probes, generated probes (:func:`generated_probes`), the rendered prompts, extra probes."""
    probes = shipped_probes() + generated_probes(special_tokens)
    for i, item in enumerate(prompts_of(recipe), 1):
        rendered = prompts.render(recipe.model.prompt_template, item.prompt, system_message(recipe, item))
        probes.append(Probe(f"rendered prompt {i}", rendered))
    probes += [Probe(f"extra probe {i}", text) for i, text in enumerate(recipe.smoke.extra_probes, 1)]
    return probes


# ---------------------------------------------------------------------------------------------
# Comparison
# ---------------------------------------------------------------------------------------------


def first_difference(ours: Sequence[int], theirs: Sequence[int]) -> int | None:
    """Index of the first differing token, the shorter length if one is a prefix, None if equal."""
    for i, (a, b) in enumerate(zip(ours, theirs, strict=False)):
        if a != b:
            return i
    return None if len(ours) == len(theirs) else min(len(ours), len(theirs))


def describe_token_mismatch(
    probe: str,
    position: int,
    ours: Sequence[int],
    theirs: Sequence[int],
    our_piece: str | None,
    their_piece: str | None,
    kind: str,
    their_piece_of_ours: str | None = None,
    around: str | None = None,
    cause: str | None = None,
    what: str = "probe",
) -> str:
    """One line naming the probe, the position and both tokens (id and text).

    When both sides spell the token the same, the ids are what differ (a shuffled vocabulary), so
    the line also says what the source tokenizer calls llama.cpp's id. ``around`` (both token
    sequences near the difference) and ``cause`` (the likely reason) are appended when given.
    """
    a = f"{ours[position]} {our_piece!r}" if position < len(ours) else f"nothing (ends after {len(ours)} tokens)"
    b = (
        f"{theirs[position]} {their_piece!r}"
        if position < len(theirs)
        else f"nothing (ends after {len(theirs)} tokens)"
    )
    line = f"{what} {probe!r}, token {position}: llama.cpp {a} vs {kind} {b}"
    if our_piece is not None and our_piece == their_piece and their_piece_of_ours is not None:
        line += f" (same text, other id: {kind} has {ours[position]} as {their_piece_of_ours!r})"
    if around is not None:
        line += f"; around it: {around}"
    if cause is not None:
        line += f"; likely cause: {cause}"
    return line


def likely_cause(text: str, position: int, same_text: bool, structure: StructureReport) -> str:
    """The most likely reason two tokenizations of ``text`` differ, from what the structure comparison found."""
    flagged = next((line for token, line in structure.flagged.items() if token in text), None)
    if flagged is not None:
        return f"a token flag ({flagged})"
    if structure.normalizer is not None and any(unicodedata.normalize(f, text) != text for f in UNICODE_FORMS):
        return f"the source's normalizer ({structure.normalizer}), which llama.cpp does not apply"
    prefix = next((gap for gap in structure.differences if gap.startswith("dummy prefix")), None)
    if prefix is not None and position == 0:
        return prefix
    if same_text:
        return "the two vocabularies number the same text differently"
    return f"the pre-tokenizer or the merges ({structure.description})"


_SHOWN = 60
_AROUND = 3
_BUFFER = 1 << 16


def tokenize_all(llm: Any, texts: Sequence[str], special: bool) -> list[list[int]]:
    """llama.cpp's tokens of each text without BOS (one reused buffer: about twice as fast as ``llm.tokenize``)."""
    import llama_cpp

    voc = vocab(llm)
    buffer = (llama_cpp.llama_token * _BUFFER)()
    found = []
    for text in texts:
        data = text.encode("utf-8")
        count = llama_cpp.llama_tokenize(voc, data, len(data), buffer, _BUFFER, False, special)
        found.append(list(buffer[:count]) if count >= 0 else list(llm.tokenize(data, add_bos=False, special=special)))
    return found


def _compare(
    llm: Any, source: SourceTokenizer, names: Sequence[str], texts: Sequence[str], structure: StructureReport, what: str
) -> list[str]:
    """Tokenize ``texts`` both ways; one line per text that differs (see :func:`describe_token_mismatch`)."""
    lines = []
    for name, text, ours in zip(names, texts, tokenize_all(llm, texts, source.parses_special), strict=True):
        theirs = source.encode(text)
        position = first_difference(ours, theirs)
        if position is None:
            continue
        our_piece = token_piece(llm, ours[position]) if position < len(ours) else None
        their_piece = source.piece(theirs[position]) if position < len(theirs) else None
        theirs_of_ours = source.piece(ours[position]) if position < len(ours) else None
        lo, hi = max(0, position - _AROUND), position + _AROUND
        around = (
            f"llama.cpp {[token_piece(llm, t) for t in ours[lo:hi]]} vs "
            f"{source.kind} {[source.piece(t) for t in theirs[lo:hi]]}"
        )
        cause = likely_cause(text, position, our_piece == their_piece, structure)
        lines.append(
            describe_token_mismatch(
                name, position, ours, theirs, our_piece, their_piece, source.kind, theirs_of_ours, around, cause, what
            )
        )
    return lines


_results: dict[tuple[str, ...], TokenizerResult] = {}


@contextmanager
def _reading(gguf: Path, llm: Any | None) -> Iterator[Any]:
    """``llm`` when the caller holds ``gguf`` open already, else a vocab-only load closed after the block."""
    if llm is not None:
        yield llm
        return
    with closing(open_model(gguf, vocab_only=True)) as opened:
        yield opened


def _recipe_key(recipe: Recipe) -> str:
    """The recipe's settings parity reads (smoke settings, prompt template, system message)."""
    return json.dumps([recipe.smoke.model_dump_json(), recipe.model.prompt_template, recipe.model.system_message])


def _cache_key(gguf: Path, source_dir: Path, recipe: Recipe) -> tuple[str, ...]:
    """What a parity result depends on: the file's vocabulary, the source's tokenizer files, the recipe's probes."""
    return (vocabulary_sha256(gguf), str(source_dir.resolve()), repr(tokenizer_stamp(source_dir)), _recipe_key(recipe))


def tokenizer_parity(gguf: Path, source_dir: Path, recipe: Recipe, llm: Any | None = None) -> TokenizerResult:
    """Tokenize the probes and the broad sample with llama.cpp and with the source tokenizer; any difference fails.

    Also compares the vocabulary's structure (:mod:`.structure`: every entry's text, kind and
    flags, and the normalizer) and the special tokens and BOS/EOS behaviour against transformers
    (:mod:`.special_tokens`). ``first_mismatch`` names each kind of difference in one line. The
    comparison runs once per vocabulary: a file whose vocabulary (``vocabulary_sha256``, the
    tokenizer metadata's bytes) matches one already compared in this process gets that result,
    with ``compared_on`` naming the file it ran on. ``llm``: ``gguf`` already loaded (any settings).
    """
    key = _cache_key(gguf, source_dir, recipe)
    if key in _results:
        return _results[key]
    source = source_tokenizer(source_dir)
    probes = probe_set(recipe, source.special_tokens())
    sample = broad_sample()
    with _reading(gguf, llm) as llm:
        structure = compare_structure(llm, source, gguf)
        mismatched = _compare(llm, source, [p.name for p in probes], [p.text for p in probes], structure, "probe")
        names = [text if len(text) <= _SHOWN else text[: _SHOWN - 1] + "…" for text in sample]
        sample_mismatched = _compare(llm, source, names, sample, structure, "sample string")
        specials = source_specials(source_dir)
        report = compare_specials(llm, specials) if specials is not None else None
    parts = []
    if report is not None and report.differences:
        # a special token or BOS/EOS difference is usually the cause of the probe differences: name it first
        more = f" (and {len(report.differences) - 1} more)" if len(report.differences) > 1 else ""
        parts.append(f"{report.differences[0]}{more}")
    if mismatched:
        parts.append(f"{len(mismatched)} of {len(probes)} probes differ; first: {mismatched[0]}")
    if sample_mismatched:
        parts.append(f"{len(sample_mismatched)} of {len(sample)} sample strings differ; first: {sample_mismatched[0]}")
    if structure.differences:
        more = f" (and {len(structure.differences) - 1} more)" if len(structure.differences) > 1 else ""
        parts.append(f"{structure.differences[0]}{more}")
    result = TokenizerResult(
        passed=not parts,
        probes=len(probes),
        mismatches=len(mismatched),
        vocab_mismatches=structure.text_differences,
        special_tokens=report.compared if report is not None else None,
        special_mismatches=len(report.differences) if report is not None else None,
        sample_strings=len(sample),
        sample_characters=sum(len(text) for text in sample),
        sample_mismatches=len(sample_mismatched),
        structure_compared=structure.compared,
        structure_differences=len(structure.differences),
        vocabulary_sha256=key[0],
        compared_on=gguf.name,
        first_mismatch="; ".join(parts) or None,
    )
    _results[key] = result
    return result


# ---------------------------------------------------------------------------------------------
# Chat template
# ---------------------------------------------------------------------------------------------


def describe_text_difference(gguf_text: str, recipe_text: str, title: str, context: int = 24) -> str | None:
    """One line showing where two renderings first differ, with a little context; None if equal."""
    i = first_text_difference(gguf_text, recipe_text)
    if i is None:
        return None
    lo = max(0, i - context)
    return (
        f"first difference at character {i}: GGUF chat template gives {gguf_text[lo : i + context]!r}, "
        f"the recipe's {title} template gives {recipe_text[lo : i + context]!r}"
    )


def render_chat_template(template: str, messages: list[dict[str, str]], bos_token: str, eos_token: str) -> str:
    """Render a GGUF/Hugging Face chat template in a Jinja sandbox, as llama-cpp-python does."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    formatter = Jinja2ChatFormatter(template=template, eos_token=eos_token, bos_token=bos_token)
    return str(formatter(messages=cast(Any, messages)).prompt)


def _shapes(report: ShapesReport, text_difference: str | None) -> dict[str, Any]:
    """The shape comparison as TemplateResult fields; a rendering both engines do differently fails the source match."""
    fields: dict[str, Any] = {
        "shapes_compared": report.compared,
        "shapes_differing": len(report.differences),
        "source_cannot_render": report.source_cannot,
        "gguf_cannot_render": report.gguf_cannot,
        "builtin_format": report.builtin_format,
        "builtin_differences": report.builtin_differences,
    }
    if text_difference is None and report.differences:
        more = f" (and {len(report.differences) - 1} more)" if len(report.differences) > 1 else ""
        fields |= {"source_matches": False, "source_difference": f"{report.differences[0]}{more}"}
    return fields


def template_parity(
    gguf: Path, recipe: Recipe, source_dir: Path | None = None, llm: Any | None = None
) -> TemplateResult:
    """Whether the GGUF carries the source's chat template, and how it renders against the recipe's.

    With ``source_dir``, the GGUF's template must be the one transformers uses for the source
    (``source_matches``; a difference names which file each side took). The rendering is
    information, not a failure: a system+user conversation rendered with the GGUF's template and
    the recipe's prompt template; a difference means chat front-ends that use the embedded
    template send a different prompt from the one the card documents. A ``{{ bos_token }}`` the
    embedded template writes first is ignored when the GGUF asks llama.cpp to add BOS itself.
    ``llm``: ``gguf`` already loaded (any settings). Like tokenizer parity, it runs once for what
    the files of a build share: a file with the same template, BOS/EOS texts and source gets the
    result already computed in this process.
    """
    with _reading(gguf, llm) as llm:
        template = llm.metadata.get("tokenizer.chat_template")
        bos_id, eos_id = int(llm.token_bos()), int(llm.token_eos())
        bos_token = str(llm._model.token_get_text(bos_id)) if bos_id >= 0 else ""
        eos_token = str(llm._model.token_get_text(eos_id)) if eos_id >= 0 else ""
        adds_bos = bool(llm._model.add_bos_token())
    source: tuple[object, ...] = ()
    if source_dir is not None:
        source = (str(source_dir.resolve()), tokenizer_stamp(source_dir), sorted(source_templates(source_dir).items()))
    key = repr((template, bos_token, eos_token, adds_bos, source, _recipe_key(recipe)))
    if key not in _templates:
        _templates[key] = _template_parity(recipe, source_dir, template, bos_token, eos_token, adds_bos)
    return _templates[key]


_templates: dict[str, TemplateResult] = {}


def _template_parity(
    recipe: Recipe, source_dir: Path | None, template: str | None, bos_token: str, eos_token: str, adds_bos: bool
) -> TemplateResult:
    origin: dict[str, Any] = {}
    if source_dir is not None:
        found = compare_template_source(template or None, source_dir)
        origin = {
            "source_file": found.source_file,
            "gguf_source": found.gguf_source,
            "source_matches": found.difference is None if found.source_file is not None else None,
            "source_difference": found.difference,
        }
        if template and found.source_file is not None:
            origin |= _shapes(compare_shapes(template, bos_token, eos_token, source_dir), found.difference)
    if not template:
        return TemplateResult(checked=False).model_copy(update=origin)
    item = prompts_of(recipe)[0]
    system = system_message(recipe, item)
    title, text = prompts.resolve(recipe.model.prompt_template)
    expected = prompts.render(recipe.model.prompt_template, item.prompt, system)
    messages = [{"role": "user", "content": item.prompt}]
    if "system_message" in prompts.placeholders(text):
        messages.insert(0, {"role": "system", "content": system})
    try:
        rendered = render_chat_template(template, messages, bos_token, eos_token)
    except Exception as err:  # the template is the model author's code: report whatever it raises
        first_line = (str(err).splitlines() or [type(err).__name__])[0]
        return TemplateResult(
            checked=True, matches=False, difference=f"the GGUF chat template fails to render: {first_line}"
        ).model_copy(update=origin)
    writes_bos = "bos_token" in template and bos_token and rendered.startswith(bos_token)
    if adds_bos and writes_bos and not expected.startswith(bos_token):
        rendered = rendered[len(bos_token) :]
    difference = describe_text_difference(rendered, expected, title)
    result = TemplateResult(checked=True, matches=difference is None, difference=difference)
    return result.model_copy(update=origin)
