"""The structural comparison of a GGUF's vocabulary with the source tokenizer's.

Every token id is compared on three things: its text, its kind (normal, control, user-defined,
unknown, byte, unused: llama.cpp's token attributes against the source's added tokens or
SentencePiece piece types) and the flags that change how text around it splits (``lstrip``,
``rstrip``, ``single_word``; llama.cpp keeps them as attributes). Then the normalizer: one the
source applies and llama.cpp does not (a Unicode normal form, lower-casing, SentencePiece's
``nmt_nfkc``, folded whitespace), and the dummy-prefix space. BPE merges are compared rank by
rank. The pre-tokenizers cannot be compared rule for rule (llama.cpp names a built-in one,
``tokenizer.ggml.pre``); both are described, to name the likely cause when texts split differently.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from publisher.evaluation.source_tokenizer import FLAGS, SourceTokenizer, TokenKind
from publisher.gguf_info import string_array
from publisher.runtimes.llama_cpp import token_piece, vocab

MERGES_KEY = "tokenizer.ggml.merges"

# Kinds the converter may give a source kind: it makes added tokens that look special control tokens.
_COMPATIBLE = {("user-defined", "control"), ("control", "unknown")}


@dataclass(frozen=True)
class StructureReport:
    """What was compared and every difference in one line; ``flagged`` maps a token's text to its flag difference."""

    compared: int
    differences: list[str]
    text_differences: int = 0
    flagged: dict[str, str] = field(default_factory=dict)
    normalizer: str | None = None  # the source's normalization llama.cpp does not do
    description: str = ""


def _attributes() -> tuple[dict[str, int], dict[str, int]]:
    import llama_cpp

    kinds = {
        "unknown": llama_cpp.LLAMA_TOKEN_ATTR_UNKNOWN,
        "unused": llama_cpp.LLAMA_TOKEN_ATTR_UNUSED,
        "control": llama_cpp.LLAMA_TOKEN_ATTR_CONTROL,
        "user-defined": llama_cpp.LLAMA_TOKEN_ATTR_USER_DEFINED,
        "byte": llama_cpp.LLAMA_TOKEN_ATTR_BYTE,
    }
    flags = {
        "lstrip": llama_cpp.LLAMA_TOKEN_ATTR_LSTRIP,
        "rstrip": llama_cpp.LLAMA_TOKEN_ATTR_RSTRIP,
        "single_word": llama_cpp.LLAMA_TOKEN_ATTR_SINGLE_WORD,
    }
    return kinds, flags


def gguf_kind(attr: int, attributes: tuple[dict[str, int], dict[str, int]] | None = None) -> TokenKind:
    """llama.cpp's token attribute bits as a :class:`TokenKind`."""
    kinds, flags = attributes or _attributes()
    kind = next((name for name, bit in kinds.items() if attr & bit), "normal")
    return TokenKind(kind, frozenset(name for name, bit in flags.items() if attr & bit))


def _flag_line(token: int, text: str, source: str, theirs: frozenset[str], ours: frozenset[str]) -> str:
    parts = [f"{flag} in {source}, not in the GGUF" for flag in FLAGS if flag in theirs - ours]
    parts += [f"{flag} in the GGUF, not in {source}" for flag in FLAGS if flag in ours - theirs]
    return f"token {token} {text!r}: {'; '.join(parts)} (text next to it splits differently)"


def _normalizer_gaps(llm: Any, source: SourceTokenizer) -> tuple[str | None, list[str]]:
    gaps = []
    normalizer = source.normalizer()
    model = llm.metadata.get("tokenizer.ggml.model", "?")
    if normalizer is not None:
        gaps.append(f"normalizer: {source.kind} applies {normalizer}, llama.cpp applies none to a {model!r} vocabulary")
    prefix = source.dummy_prefix()
    if prefix is not None and model == "llama":
        ours = str(llm.metadata.get("tokenizer.ggml.add_space_prefix", "true")).lower() == "true"
        if ours != prefix:
            said = {True: "puts a space before every text", False: "puts no space before texts"}
            gaps.append(f"dummy prefix: {source.kind} {said[prefix]}, llama.cpp {said[ours]}")
    return normalizer, gaps


def _merges_difference(gguf: Path, source: SourceTokenizer) -> str | None:
    theirs = source.merges()
    ours = string_array(gguf, MERGES_KEY) if theirs is not None else None
    if theirs is None or ours is None or ours == theirs:
        return None
    rank = next((i for i, (a, b) in enumerate(zip(ours, theirs, strict=False)) if a != b), min(len(ours), len(theirs)))
    count = sum(a != b for a, b in zip(ours, theirs, strict=False)) + abs(len(ours) - len(theirs))
    a = repr(ours[rank]) if rank < len(ours) else "nothing"
    b = repr(theirs[rank]) if rank < len(theirs) else "nothing"
    return f"merges: {count} of {len(theirs)} differ; first at rank {rank}: GGUF {a}, {source.kind} {b}"


def compare_structure(llm: Any, source: SourceTokenizer, gguf: Path) -> StructureReport:
    """Compare every vocabulary entry (text, kind, flags), the merges and the normalizer of a GGUF with the source."""
    import llama_cpp

    voc = vocab(llm)
    n_gguf, n_source = int(llm.n_vocab()), source.size()
    differences: list[str] = []
    if n_source > n_gguf:
        differences.append(f"the GGUF vocabulary has {n_gguf} tokens, {source.kind} has {n_source}")
    kinds = source.kinds()
    flagged: dict[str, str] = {}
    text_differences = 0
    first_text: str | None = None
    attributes = _attributes()
    plain = int(llama_cpp.LLAMA_TOKEN_ATTR_NORMAL)
    for token in range(min(n_source, n_gguf)):
        raw = source.raw(token)
        if raw is None:
            continue
        text = llama_cpp.llama_vocab_get_text(voc, token).decode("utf-8", errors="replace")
        # the converter may respell an added token; what matters is that it decodes the same
        if text != raw and token_piece(llm, token) != source.piece(token):
            text_differences += 1
            first_text = first_text or f"vocabulary id {token}: GGUF {text!r} vs {source.kind} {raw!r}"
        attr = int(llama_cpp.llama_vocab_get_attr(voc, token))
        if attr == plain and token not in kinds:
            continue
        theirs = kinds.get(token, TokenKind("normal"))
        ours = gguf_kind(attr, attributes)
        if theirs.kind != ours.kind and (theirs.kind, ours.kind) not in _COMPATIBLE:
            differences.append(f"token {token} {raw!r}: {theirs.kind} in {source.kind}, {ours.kind} in the GGUF")
        if theirs.flags != ours.flags:
            flagged[raw] = _flag_line(token, raw, source.kind, theirs.flags, ours.flags)
            differences.append(flagged[raw])
    if text_differences:
        differences.insert(0, f"{text_differences} vocabulary entries differ; first: {first_text}")
    merges = _merges_difference(gguf, source)
    if merges is not None:
        differences.append(merges)
    normalizer, gaps = _normalizer_gaps(llm, source)
    differences += gaps
    pre = llm.metadata.get("tokenizer.ggml.pre", "default")
    description = f"pre-tokenizer: {source.kind} {source.pre_tokenizer()}, GGUF {pre!r}"
    return StructureReport(
        compared=min(n_source, n_gguf),
        differences=differences,
        text_differences=text_differences,
        flagged=flagged,
        normalizer=normalizer,
        description=description,
    )
