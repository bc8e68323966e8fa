"""The source model's own tokenizer, as parity needs it: ids of a text, the vocabulary and its structure.

``tokenizer.json`` is read with the ``tokenizers`` library, ``tokenizer.model`` with
``sentencepiece``. Besides encoding, each says how its vocabulary is built: which tokens are
control, user-defined, unknown or byte tokens, which carry ``lstrip``/``rstrip``/``single_word``,
and what its normalizer and pre-tokenizer are, for the structural comparison with the GGUF.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

from publisher.errors import SmokeTestError
from publisher.evaluation.transformers_view import tokenizer_stamp

# Flags of added tokens that change how the text around them splits.
FLAGS = ("lstrip", "rstrip", "single_word")


@dataclass(frozen=True)
class TokenKind:
    """What a vocabulary entry is beyond its text: a kind and the flags that change how text around it splits."""

    kind: str  # "normal", "control", "user-defined", "unknown", "byte", "unused"
    flags: frozenset[str] = frozenset()


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

    def kinds(self) -> dict[int, TokenKind]:
        """Every token that is not a plain normal one, by id."""
        ...

    def normalizer(self) -> str | None:
        """Normalization llama.cpp does not do, in a few words; None when there is none.

        Whitespace escaping (``▁``) is not counted: llama.cpp's SentencePiece tokenizer does it too.
        """
        ...

    def dummy_prefix(self) -> bool | None:
        """Whether a space is put before every text (SentencePiece's ``add_dummy_prefix``); None if not known."""
        ...

    def pre_tokenizer(self) -> str:
        """The pre-tokenizer, described in a few words."""
        ...

    def merges(self) -> list[str] | None:
        """BPE merges in rank order as ``"left right"``; None when the tokenizer has none."""
        ...


def describe_component(component: Any) -> str | None:
    """A tokenizer.json normalizer or pre-tokenizer in a few words: ``Sequence[Digits, ByteLevel]``."""
    if not isinstance(component, dict):
        return None
    kind = str(component.get("type", "?"))
    inner = component.get("normalizers") or component.get("pretokenizers")
    if isinstance(inner, list):
        return f"{kind}[{', '.join(filter(None, (describe_component(c) for c in inner)))}]"
    return kind


# Normalizer steps of SentencePiece-style tokenizer.json files that llama.cpp's tokenizer does itself.
_ESCAPING = ("Prepend", "Replace")


class HFTokenizer:
    """``tokenizer.json`` through the ``tokenizers`` library."""

    kind = "tokenizer.json"
    parses_special = True

    def __init__(self, path: Path) -> None:
        from tokenizers import Tokenizer

        self._tok = Tokenizer.from_file(str(path))
        self._data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))

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

    def kinds(self) -> dict[int, TokenKind]:
        found = {}
        for token in self._data.get("added_tokens") or []:
            flags = frozenset(flag for flag in FLAGS if token.get(flag))
            kind = "control" if token.get("special") else "user-defined"
            found[int(token["id"])] = TokenKind(kind, flags)
        return found

    def normalizer(self) -> str | None:
        described = describe_component(self._data.get("normalizer"))
        if described is None:
            return None
        steps = set(described.replace("[", ",").replace("]", ",").replace(" ", "").split(","))
        return None if steps <= {"", "Sequence", *_ESCAPING} else described

    def dummy_prefix(self) -> bool | None:
        return None

    def pre_tokenizer(self) -> str:
        return describe_component(self._data.get("pre_tokenizer")) or "none"

    def merges(self) -> list[str] | None:
        found = self._data.get("model", {}).get("merges")
        if not isinstance(found, list):
            return None
        return [m if isinstance(m, str) else " ".join(m) for m in found]


_SPM_KINDS = {1: "normal", 2: "unknown", 3: "control", 4: "user-defined", 5: "unused", 6: "byte"}


class SentencePieceTokenizer:
    """``tokenizer.model`` through ``sentencepiece`` (control tokens are not parsed from text)."""

    kind = "tokenizer.model"
    parses_special = False

    def __init__(self, path: Path) -> None:
        import sentencepiece
        from sentencepiece import sentencepiece_model_pb2

        self._sp = sentencepiece.SentencePieceProcessor(model_file=str(path))
        self._proto = sentencepiece_model_pb2.ModelProto()  # type: ignore[attr-defined]
        self._proto.ParseFromString(path.read_bytes())

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

    def kinds(self) -> dict[int, TokenKind]:
        found = {i: TokenKind(_SPM_KINDS.get(int(p.type), "normal")) for i, p in enumerate(self._proto.pieces)}
        return {i: kind for i, kind in found.items() if kind.kind != "normal"}

    def normalizer(self) -> str | None:
        spec = self._proto.normalizer_spec
        parts = [] if spec.name in ("", "identity") else [f"SentencePiece {spec.name}"]
        if spec.remove_extra_whitespaces:
            parts.append("whitespace runs folded")
        return ", ".join(parts) or None

    def dummy_prefix(self) -> bool | None:
        return bool(self._proto.normalizer_spec.add_dummy_prefix)

    def pre_tokenizer(self) -> str:
        model = {1: "unigram", 2: "BPE", 3: "word", 4: "char"}.get(int(self._proto.trainer_spec.model_type), "?")
        return f"SentencePiece {model}"

    def merges(self) -> list[str] | None:
        return None


def source_tokenizer(source_dir: Path) -> SourceTokenizer:
    """The source's tokenizer: ``tokenizer.json`` if present, else sentencepiece's ``tokenizer.model``.

    Read once per folder and tokenizer file times: every file of a build compares against the same one.
    """
    return _load(source_dir, tokenizer_stamp(source_dir))


@lru_cache(maxsize=4)
def _load(source_dir: Path, _stamp: tuple[tuple[str, int, int], ...]) -> SourceTokenizer:
    if (source_dir / "tokenizer.json").is_file():
        return HFTokenizer(source_dir / "tokenizer.json")
    if (source_dir / "tokenizer.model").is_file():
        return SentencePieceTokenizer(source_dir / "tokenizer.model")
    raise SmokeTestError(
        f"{source_dir}: neither tokenizer.json nor tokenizer.model is there, so tokenizer parity cannot be "
        "checked; fetch the tokenizer with the model, or set smoke.tokenizer_parity: false"
    )
