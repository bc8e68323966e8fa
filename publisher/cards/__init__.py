"""Model cards: a card kind's data and template, rendered in a sandbox, checked, previewed.

``render_card(recipe, manifest)`` turns a recipe and (when there is one) a build manifest into a
``README.md``: YAML frontmatter made with :class:`huggingface_hub.ModelCardData`, then a body
rendered from ``templates/`` where every section sits between ``<!-- name start -->`` and
``<!-- name end -->`` markers. Every number in a built card comes from the manifest; without a
build, sizes are estimated from the source's parameter count and marked as estimates.
Nothing here touches the network.

Modules: ``kinds`` (card kinds: template + context builder), ``context`` (the GGUF card's data),
``rows`` (table rows), ``frontmatter``, ``environment`` (Jinja, template lookup, errors),
``text`` (escaping filters), ``checks``, ``preview`` (terminal and HTML), ``render``.
"""

from __future__ import annotations

from pathlib import Path

from publisher import source
from publisher.cards.checks import REQUIRED_KEYS, check_card, names_in_table, sections
from publisher.cards.context import format_params
from publisher.cards.environment import environment, template_files, templates_dir
from publisher.cards.frontmatter import frontmatter_data, split_frontmatter, strip_frontmatter, yaml_dump
from publisher.cards.kinds import KINDS, CardKind
from publisher.cards.preview import card_html, heading_slug, markdown_to_html, preview, sanitize_html, write_outputs
from publisher.cards.render import (
    CardResult,
    card_context,
    card_for_recipe,
    context_fingerprint_data,
    render_body,
    render_card,
)
from publisher.cards.rows import RAM_OVERHEAD_BYTES, BranchRow, Download, FileRow, QualityRow
from publisher.cards.text import code_fence, llama_escape, md_cell, md_inline, shell_quote
from publisher.errors import CardError, SourceError
from publisher.manifest import Architecture
from publisher.report import format_bytes as format_gb


def read_architecture(source_dir: Path) -> Architecture | None:
    """The source's shape from its ``config.json`` (see :func:`publisher.source.read_architecture`)."""
    try:
        return source.read_architecture(source_dir)
    except SourceError as err:
        raise CardError(str(err)) from None


def safetensors_parameters(source_dir: Path) -> int | None:
    """Parameter count from safetensors headers (see :func:`publisher.source.safetensors_parameters`)."""
    try:
        return source.safetensors_parameters(source_dir)
    except SourceError as err:
        raise CardError(str(err)) from None


__all__ = [
    "KINDS",
    "RAM_OVERHEAD_BYTES",
    "REQUIRED_KEYS",
    "BranchRow",
    "CardKind",
    "CardResult",
    "Download",
    "FileRow",
    "QualityRow",
    "card_context",
    "card_for_recipe",
    "card_html",
    "check_card",
    "code_fence",
    "context_fingerprint_data",
    "environment",
    "format_gb",
    "format_params",
    "frontmatter_data",
    "heading_slug",
    "llama_escape",
    "markdown_to_html",
    "md_cell",
    "md_inline",
    "names_in_table",
    "preview",
    "read_architecture",
    "render_body",
    "render_card",
    "safetensors_parameters",
    "sanitize_html",
    "sections",
    "shell_quote",
    "split_frontmatter",
    "strip_frontmatter",
    "template_files",
    "templates_dir",
    "write_outputs",
    "yaml_dump",
]
