"""Tokenizer parity and chat-template parity of a GGUF against its source model.

Tokenizer parity tokenizes a probe set with llama.cpp (the GGUF's vocabulary) and with the
source's own tokenizer and compares the ids, then compares the text of every vocabulary entry.
A GGUF whose vocabulary is off by a single swapped pair still loads and still "talks", only
wrongly; this is the check that catches it.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Sequence
from contextlib import closing
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Protocol, cast

from publisher import prompts
from publisher.errors import SmokeTestError
from publisher.evaluation.smoke import prompts_of, system_message
from publisher.evaluation.special_tokens import compare_specials, source_specials
from publisher.evaluation.template_source import compare_template_source
from publisher.manifest import TemplateResult, TokenizerResult
from publisher.recipe import Recipe
from publisher.runtimes.llama_cpp import open_model, token_piece, vocab

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
# The source's own tokenizer
# ---------------------------------------------------------------------------------------------


class SourceTokenizer(Protocol):
    """What parity needs from the source model's tokenizer."""

    kind: str
    parses_special: bool

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``, no BOS/EOS added."""
        ...

    def piece(self, token: int) -> str:
        """One token as readable text."""
        ...

    def raw(self, token: int) -> str | None:
        """The vocabulary entry of ``token`` as the tokenizer stores it (``Ġthe``, ``▁the``)."""
        ...

    def size(self) -> int:
        """Vocabulary size including added tokens."""
        ...

    def special_tokens(self) -> list[str]:
        """Added and special tokens, as text."""
        ...


class HFTokenizer:
    """``tokenizer.json`` through the ``tokenizers`` library."""

    kind = "tokenizer.json"
    parses_special = True

    def __init__(self, path: Path) -> None:
        from tokenizers import Tokenizer

        self._tok = Tokenizer.from_file(str(path))

    def encode(self, text: str) -> list[int]:
        return list(self._tok.encode(text, add_special_tokens=False).ids)

    def piece(self, token: int) -> str:
        return str(self._tok.decode([token], skip_special_tokens=False))

    def raw(self, token: int) -> str | None:
        value = self._tok.id_to_token(token)
        return None if value is None else str(value)

    def size(self) -> int:
        return int(self._tok.get_vocab_size(with_added_tokens=True))

    def special_tokens(self) -> list[str]:
        return [str(t.content) for _, t in sorted(self._tok.get_added_tokens_decoder().items())]


class SentencePieceTokenizer:
    """``tokenizer.model`` through ``sentencepiece`` (control tokens are not parsed from text)."""

    kind = "tokenizer.model"
    parses_special = False

    def __init__(self, path: Path) -> None:
        import sentencepiece

        self._sp = sentencepiece.SentencePieceProcessor(model_file=str(path))

    def encode(self, text: str) -> list[int]:
        return list(self._sp.encode(text, out_type=int))

    def piece(self, token: int) -> str:
        return str(self._sp.id_to_piece(token)).replace("\u2581", " ")

    def raw(self, token: int) -> str | None:
        return str(self._sp.id_to_piece(token))

    def size(self) -> int:
        return int(self._sp.get_piece_size())

    def special_tokens(self) -> list[str]:
        return []


def source_tokenizer(source_dir: Path) -> SourceTokenizer:
    """The source's tokenizer: ``tokenizer.json`` if present, else sentencepiece's ``tokenizer.model``."""
    if (source_dir / "tokenizer.json").is_file():
        return HFTokenizer(source_dir / "tokenizer.json")
    if (source_dir / "tokenizer.model").is_file():
        return SentencePieceTokenizer(source_dir / "tokenizer.model")
    raise SmokeTestError(
        f"{source_dir}: neither tokenizer.json nor tokenizer.model is there, so tokenizer parity cannot be "
        "checked; fetch the tokenizer with the model, or set smoke.tokenizer_parity: false"
    )


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
) -> str:
    """One line naming the probe, the position and both tokens (id and text).

    When both sides spell the token the same, the ids are what differ (a shuffled vocabulary), so
    the line also says what the source tokenizer calls llama.cpp's id.
    """
    a = f"{ours[position]} {our_piece!r}" if position < len(ours) else f"nothing (ends after {len(ours)} tokens)"
    b = (
        f"{theirs[position]} {their_piece!r}"
        if position < len(theirs)
        else f"nothing (ends after {len(theirs)} tokens)"
    )
    line = f"probe {probe!r}, token {position}: llama.cpp {a} vs {kind} {b}"
    if our_piece is not None and our_piece == their_piece and their_piece_of_ours is not None:
        line += f" (same text, other id: {kind} has {ours[position]} as {their_piece_of_ours!r})"
    return line


def _compare_vocab(llm: Any, source: SourceTokenizer) -> tuple[int, str | None]:
    import llama_cpp

    n_gguf, n_source = int(llm.n_vocab()), source.size()
    if n_source > n_gguf:
        return n_source - n_gguf, f"the GGUF vocabulary has {n_gguf} tokens, {source.kind} has {n_source}"
    voc = vocab(llm)
    count = 0
    first: str | None = None
    for token in range(n_source):
        raw = source.raw(token)
        if raw is None:
            continue
        text = llama_cpp.llama_vocab_get_text(voc, token).decode("utf-8", errors="replace")
        # the converter may respell an added token; what matters is that it decodes the same
        if text != raw and token_piece(llm, token) != source.piece(token):
            count += 1
            if first is None:
                first = f"vocabulary id {token}: GGUF {text!r} vs {source.kind} {raw!r}"
    return count, first


def tokenizer_parity(gguf: Path, source_dir: Path, recipe: Recipe) -> TokenizerResult:
    """Tokenize the probe set with llama.cpp and with the source tokenizer; any difference fails.

    Also compares every vocabulary entry's text, which catches swapped tokens the probes miss, and
    the special tokens and BOS/EOS behaviour against transformers (:mod:`.special_tokens`).
    ``first_mismatch`` is a one-line account of the first differing token.
    """
    source = source_tokenizer(source_dir)
    probes = probe_set(recipe, source.special_tokens())
    llm = open_model(gguf, vocab_only=True)
    with closing(llm):
        mismatched: list[str] = []
        for probe in probes:
            ours = list(llm.tokenize(probe.text.encode("utf-8"), add_bos=False, special=source.parses_special))
            theirs = source.encode(probe.text)
            position = first_difference(ours, theirs)
            if position is None:
                continue
            our_piece = token_piece(llm, ours[position]) if position < len(ours) else None
            their_piece = source.piece(theirs[position]) if position < len(theirs) else None
            theirs_of_ours = source.piece(ours[position]) if position < len(ours) else None
            mismatched.append(
                describe_token_mismatch(
                    probe.name, position, ours, theirs, our_piece, their_piece, source.kind, theirs_of_ours
                )
            )
        vocab_mismatches, first_vocab = _compare_vocab(llm, source)
        specials = source_specials(source_dir)
        report = compare_specials(llm, specials) if specials is not None else None
    parts = []
    if report is not None and report.differences:
        # a special token or BOS/EOS difference is usually the cause of the probe differences: name it first
        more = f" (and {len(report.differences) - 1} more)" if len(report.differences) > 1 else ""
        parts.append(f"{report.differences[0]}{more}")
    if mismatched:
        parts.append(f"{len(mismatched)} of {len(probes)} probes differ; first: {mismatched[0]}")
    if vocab_mismatches:
        parts.append(f"{vocab_mismatches} vocabulary entries differ; first: {first_vocab}")
    return TokenizerResult(
        passed=not parts,
        probes=len(probes),
        mismatches=len(mismatched),
        vocab_mismatches=vocab_mismatches,
        special_tokens=report.compared if report is not None else None,
        special_mismatches=len(report.differences) if report is not None else None,
        first_mismatch="; ".join(parts) or None,
    )


# ---------------------------------------------------------------------------------------------
# Chat template
# ---------------------------------------------------------------------------------------------


def describe_text_difference(gguf_text: str, recipe_text: str, title: str, context: int = 24) -> str | None:
    """One line showing where two renderings first differ, with a little context; None if equal."""
    if gguf_text == recipe_text:
        return None
    i = next((k for k, (a, b) in enumerate(zip(gguf_text, recipe_text, strict=False)) if a != b), None)
    if i is None:
        i = min(len(gguf_text), len(recipe_text))
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


def template_parity(gguf: Path, recipe: Recipe, source_dir: Path | None = None) -> TemplateResult:
    """Whether the GGUF carries the source's chat template, and how it renders against the recipe's.

    With ``source_dir``, the GGUF's template must be the one transformers uses for the source
    (``source_matches``; a difference names which file each side took). The rendering is
    information, not a failure: a system+user conversation rendered with the GGUF's template and
    the recipe's prompt template; a difference means chat front-ends that use the embedded
    template send a different prompt from the one the card documents. A ``{{ bos_token }}`` the
    embedded template writes first is ignored when the GGUF asks llama.cpp to add BOS itself.
    """
    llm = open_model(gguf, vocab_only=True)
    with closing(llm):
        template = llm.metadata.get("tokenizer.chat_template")
        bos_id, eos_id = int(llm.token_bos()), int(llm.token_eos())
        bos_token = str(llm._model.token_get_text(bos_id)) if bos_id >= 0 else ""
        eos_token = str(llm._model.token_get_text(eos_id)) if eos_id >= 0 else ""
        adds_bos = bool(llm._model.add_bos_token())
    origin: dict[str, Any] = {}
    if source_dir is not None:
        found = compare_template_source(template or None, source_dir)
        origin = {
            "source_file": found.source_file,
            "gguf_source": found.gguf_source,
            "source_matches": found.difference is None if found.source_file is not None else None,
            "source_difference": found.difference,
        }
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
