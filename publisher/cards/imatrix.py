"""Card data for the importance matrix and the variants: a small, self-contained context function.

``imatrix_context`` adds ``imatrix`` (the recorded matrix, or None) and ``variant_rows`` (one row
per file: what it is made from and whether an importance matrix was used) to the card context,
for ``partials/importance_matrix.md.j2``.
"""

from __future__ import annotations

from typing import Any

from publisher.cards.rows import HUB
from publisher.manifest import Manifest
from publisher.recipe import Recipe


def published_files(recipe: Recipe, manifest: Manifest) -> list[str]:
    """The importance-matrix files a release carries beside the quants (paths in the build folder).

    The matrix always; the calibration text it was computed from when its licence allows: the
    shipped text (MIT) by default, a text of the publisher's own only with ``imatrix.publish_text``.
    """
    record, spec = manifest.imatrix, recipe.imatrix
    if record is None or spec is None:
        return []
    share_text = spec.publish_text if spec.publish_text is not None else spec.text is None and spec.file is None
    return [record.path] + ([record.text_path] if share_text and record.text_path else [])


def _made_from(recipe: Recipe, name: str) -> str:
    variant = recipe.quantize.variant(name)
    if variant.is_plain:
        return variant.type
    kept = {"token_embd": variant.token_embd, "output": variant.output} | dict(variant.tensor_types)
    return f"{variant.type}, " + ", ".join(f"{tensor} at {kind}" for tensor, kind in kept.items() if kind)


def imatrix_context(recipe: Recipe, manifest: Manifest | None) -> dict[str, Any]:
    """``imatrix`` and ``variant_rows`` for the templates (plain data only)."""
    record = manifest.imatrix if manifest is not None else None
    spec = recipe.imatrix
    artifacts = manifest.artifacts if manifest is not None else {}
    rows = [
        {
            "name": recipe.artifact_filename(name),
            "made_from": _made_from(recipe, name),
            "imatrix": "yes" if (name in artifacts and artifacts[name].imatrix_sha256) else "no",
            "variant": not recipe.quantize.variant(name).is_plain,
        }
        for name in recipe.quantize.names
    ]
    if record is None or spec is None:
        return {"imatrix": None, "variant_rows": rows, "has_variants": any(r["variant"] for r in rows)}
    reference = manifest.reference.path if manifest is not None and manifest.reference else "model.F16.gguf"
    shared = published_files(recipe, manifest) if manifest is not None else []
    url = f"{HUB}/{recipe.publish.repo_id}/blob/main"
    return {
        "imatrix": {
            "file": record.path,
            "url": f"{url}/{record.path}",
            "text_url": f"{url}/{record.text_path}" if record.text_path in shared else None,
            "sha256": record.sha256,
            "source": record.source,
            "text_file": record.text_path,
            "text_sha256": record.text_sha256,
            "chat_template": record.chat_template,
            "chunks": record.chunks,
            "chunk_size": record.chunk_size,
            "tokens": record.tokens,
            "entries": record.entries,
            "uncovered": record.uncovered,
            "fallback": record.fallback,
            "given": spec.file is not None,
            "reference": reference,
            "command": (
                f"llama-imatrix -m {reference} -f {record.text_path} -o {record.path} "
                f"-c {record.chunk_size} --chunks {record.chunks}"
                + (" --parse-special" if record.chat_template else "")
            ),
        },
        "variant_rows": rows,
        "has_variants": any(r["variant"] for r in rows),
    }
