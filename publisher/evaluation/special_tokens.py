"""Special tokens and BOS/EOS behaviour of a GGUF against the source tokenizer as transformers loads it.

Probe strings are tokenized without BOS/EOS and compare ordinary text; they cannot see a GGUF
whose end-of-sequence token is another id than the model was trained with, or a llama.cpp that
prepends a BOS transformers never adds. This module compares those facts directly:

- the ids of BOS, EOS, PAD and UNK (transformers' ``*_token_id``) and, for every role llama.cpp
  knows (EOT included), the id the source gives that role's text;
- every added token's id, text and kind (special tokens must be llama.cpp control tokens);
- what encoding a text with special tokens adds before and after it: transformers' ``encode``
  (which applies ``add_bos_token``/``add_eos_token`` and the post-processor as the class does)
  against llama.cpp's ``tokenize(add_special=True)``.

The source side is read with transformers' ``AutoTokenizer`` (which the converter itself
requires), in a child process (:mod:`.transformers_view`); each difference is one line naming the
token and both ids or behaviours.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from publisher.evaluation.transformers_view import SAMPLE_TEXT, SOURCE_ROLES, transformers_view
from publisher.runtimes.llama_cpp import token_piece, vocab

ROLES = ("bos", "eos", "eot", "pad", "unk")
SOURCE = "transformers"
UNK_KEY = "tokenizer.ggml.unknown_token_id"


@dataclass(frozen=True)
class SourceSpecials:
    """The source tokenizer's special tokens and what its ``encode`` adds around a text."""

    roles: dict[str, int | None]
    added: dict[int, tuple[str, bool]]  # id -> (text, special)
    ids: dict[str, int]  # text -> id over the whole vocabulary
    before: tuple[int, ...]
    after: tuple[int, ...]
    texts: dict[int, str]  # id -> text of every id named above


@dataclass(frozen=True)
class SpecialsReport:
    """How many special tokens and behaviours were compared, and each difference in one line."""

    compared: int
    differences: list[str]


def _added_around(plain: list[int], full: list[int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The ids ``full`` has before and after ``plain`` (encoding with special tokens vs without)."""
    for start in range(len(full) - len(plain) + 1):
        if full[start : start + len(plain)] == plain:
            return tuple(full[:start]), tuple(full[start + len(plain) :])
    return tuple(full), ()


def source_specials(source_dir: Path) -> SourceSpecials | None:
    """The source's special tokens through transformers; None when transformers cannot load the tokenizer.

    Read once per folder (and file times): every file of a build shares its source's tokenizer.
    """
    view = transformers_view(source_dir)
    if view is None:
        return None
    before, after = _added_around(view.plain, view.full)
    named = {i for i in view.roles.values() if i is not None} | set(before) | set(after)
    texts = {i: view.texts[i] for i in named} | {i: text for i, (text, _) in view.added.items()}
    return SourceSpecials(roles=view.roles, added=view.added, ids=view.ids, before=before, after=after, texts=texts)


def _token(token: int | None, text: str | None) -> str:
    return "none" if token is None else f"{token} {text!r}"


def _added(tokens: tuple[int, ...], text_of: dict[int, str]) -> str:
    return " ".join(f"{text_of.get(t, '?')!r} ({t})" for t in tokens) if tokens else "nothing"


def _gguf_unk(llm: Any, voc: Any, n_vocab: int) -> int | None:
    """The GGUF's unknown token: its metadata key, else the token typed unknown (SentencePiece vocabularies).

    llama.h has no getter for it.
    """
    import llama_cpp

    unk = llm.metadata.get(UNK_KEY)
    if unk is not None:
        return int(unk) if int(unk) >= 0 else None
    unknown = llama_cpp.LLAMA_TOKEN_ATTR_UNKNOWN
    return next((t for t in range(n_vocab) if llama_cpp.llama_vocab_get_attr(voc, t) & unknown), None)


def compare_specials(llm: Any, source: SourceSpecials) -> SpecialsReport:
    """Compare a loaded GGUF's special tokens and BOS/EOS behaviour with the source's."""
    import llama_cpp

    voc = vocab(llm)
    n_vocab = int(llm.n_vocab())

    def text(token: int) -> str:
        return str(llama_cpp.llama_vocab_get_text(voc, token).decode("utf-8", errors="replace"))

    getters = {
        "bos": llama_cpp.llama_vocab_bos,
        "eos": llama_cpp.llama_vocab_eos,
        "eot": llama_cpp.llama_vocab_eot,
        "pad": llama_cpp.llama_vocab_pad,
    }
    gguf_roles = {role: (None if (t := int(get(voc))) < 0 else t) for role, get in getters.items()}
    gguf_roles["unk"] = _gguf_unk(llm, voc, n_vocab)
    differences: list[str] = []
    compared = 0

    # the roles: the id transformers uses against llama.cpp's, then llama.cpp's token as the source numbers it
    for role in ROLES:
        ours = gguf_roles[role]
        theirs = source.roles.get(role)
        ours_text = text(ours) if ours is not None else None
        if role in SOURCE_ROLES and theirs is not None:
            compared += 1
            if ours != theirs:
                source_token = _token(theirs, source.texts.get(theirs))
                differences.append(f"{role.upper()}: GGUF {_token(ours, ours_text)}, {SOURCE} {source_token}")
                continue
        if ours is not None and ours_text in source.ids:
            if role not in SOURCE_ROLES or theirs is None:
                compared += 1
            if source.ids[ours_text] != ours:
                differences.append(f"{role.upper()} {ours_text!r}: GGUF id {ours}, {SOURCE} id {source.ids[ours_text]}")

    # every added token: same id, same text, special ones as llama.cpp control tokens
    for token, (content, special) in sorted(source.added.items()):
        compared += 1
        if token >= n_vocab:
            differences.append(f"added token {content!r}: {SOURCE} id {token} is beyond the GGUF's {n_vocab} tokens")
            continue
        if text(token) != content and token_piece(llm, token) != content:
            differences.append(f"added token {content!r}: {SOURCE} id {token}, the GGUF has {text(token)!r} there")
            continue
        # the converter makes special tokens control tokens, SentencePiece's <unk> keeps its own kind
        kinds_of_special = llama_cpp.LLAMA_TOKEN_ATTR_CONTROL | llama_cpp.LLAMA_TOKEN_ATTR_UNKNOWN
        control = bool(llama_cpp.llama_vocab_get_attr(voc, token) & kinds_of_special)
        if special != control:
            kinds = "special" if special else "not special", "not a control token" if special else "a control token"
            differences.append(f"added token {content!r} ({token}): {kinds[0]} in {SOURCE}, {kinds[1]} in the GGUF")

    # what encoding with special tokens adds around a text
    plain = list(llm.tokenize(SAMPLE_TEXT.encode(), add_bos=False, special=True))
    ours_before, ours_after = _added_around(plain, list(llm.tokenize(SAMPLE_TEXT.encode(), add_bos=True, special=True)))
    gguf_text = {t: text(t) for t in (*ours_before, *ours_after)}
    flags = {
        "BOS": ("before", bool(llama_cpp.llama_vocab_get_add_bos(voc)), ours_before, source.before),
        "EOS": ("after", bool(llama_cpp.llama_vocab_get_add_eos(voc)), ours_after, source.after),
    }
    for name, (where, flag, ours_added, theirs_added) in flags.items():
        compared += 1
        if ours_added != theirs_added:
            differences.append(
                f"{name}: llama.cpp adds {_added(ours_added, gguf_text)} {where} every text "
                f"(tokenizer.ggml.add_{name.lower()}_token {str(flag).lower()}), "
                f"{SOURCE}' encode adds {_added(theirs_added, source.texts)}"
            )
    return SpecialsReport(compared=compared, differences=differences)
