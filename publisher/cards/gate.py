"""What the gate proved about each published file, for the card's checks section.

Read from the smoke records only: tokenizer parity (probes, broad sample, structure, special
tokens), template parity (renderings across conversation shapes, llama.cpp's built-in format)
and the shapes the source's own template cannot render.
"""

from __future__ import annotations

from typing import Any

from publisher.manifest import Artifact, Manifest


def counted(total: int | None, wrong: int | None) -> str:
    """``passed/total`` with thousands separators; "not checked" without a total."""
    return "not checked" if total is None else f"{total - (wrong or 0):,}/{total:,}"


def _shapes_compared(artifact: Artifact) -> bool:
    return artifact.template is not None and artifact.template.shapes_compared is not None


def _row(artifact: Artifact) -> dict[str, str]:
    tok, chat = artifact.tokenizer, artifact.template
    shapes = counted(chat.shapes_compared, chat.shapes_differing) if chat is not None else "not checked"
    return {
        "name": artifact.path,
        "probes": counted(tok.probes, tok.mismatches) if tok else "not checked",
        "sample": counted(tok.sample_strings, tok.sample_mismatches) if tok else "not checked",
        "structure": counted(tok.structure_compared, tok.structure_differences) if tok else "not checked",
        "specials": counted(tok.special_tokens, tok.special_mismatches) if tok else "not checked",
        "shapes": shapes,
    }


def gate_context(manifest: Manifest | None) -> dict[str, Any]:
    """``gate_rows`` (one per passed file the gate checked) and ``gate`` (what they share) for ``checks.md.j2``."""
    if manifest is None:
        return {"gate_rows": [], "gate": {}}
    files = [
        a
        for a in [manifest.reference, *manifest.passed_artifacts()]
        if a is not None and a.status == "passed" and (a.tokenizer is not None or _shapes_compared(a))
    ]
    first_tok = next((a.tokenizer for a in files if a.tokenizer is not None), None)
    first_chat = next((a.template for a in files if a.template is not None and a.template.checked), None)
    digests = {a.tokenizer.vocabulary_sha256 for a in files if a.tokenizer is not None}
    shared = next(iter(digests)) if len(digests) == 1 else None
    gate = {
        "shared_vocabulary": shared is not None,
        "compared_on": first_tok.compared_on if first_tok else None,
        "vocabulary": shared[:12] if shared is not None else None,
        "sample_characters": first_tok.sample_characters if first_tok else None,
        "cannot_render": (first_chat.source_cannot_render or []) if first_chat else [],
        "builtin_format": first_chat.builtin_format if first_chat else None,
        "builtin_differences": (first_chat.builtin_differences or []) if first_chat else [],
    }
    return {"gate_rows": [_row(a) for a in files], "gate": gate}
