"""Previews of a card: a rich terminal view, and a standalone HTML page laid out as the Hub shows cards."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Mapping
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import jinja2
import yaml

from publisher.cards.environment import environment, template_error
from publisher.cards.frontmatter import split_frontmatter, yaml_dump
from publisher.errors import CardError
from publisher.manifest import write_text_atomic

HTML_TEMPLATE = "page.html.j2"


def preview(text: str, console: Any) -> None:
    """Print the card to a rich console: frontmatter as a table, then the markdown."""
    from rich.markdown import Markdown
    from rich.table import Table

    front, body = split_frontmatter(text)
    data = yaml.safe_load(front) if front else {}
    table = Table(title="frontmatter", show_header=False, title_justify="left")
    table.add_column("key", style="bold")
    table.add_column("value", overflow="fold")
    for key, value in (data or {}).items():
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            shown = ", ".join(value)
        elif isinstance(value, str):
            shown = value
        elif isinstance(value, bool | int | float) or value is None:
            shown = json.dumps(value)  # YAML would add a '...' document-end line to a bare scalar
        else:
            shown = yaml_dump(value, sort_keys=False).strip()
        table.add_row(str(key), shown)
    console.print(table)
    console.print(Markdown(re.sub(r"<!--.*?-->\n?", "", body, flags=re.DOTALL)))


_DROP_WITH_CONTENT = {"script", "style", "iframe", "object", "embed", "noscript", "template"}
_DROP_TAG = {"base", "meta", "link", "form", "frame", "frameset"}
_URL_ATTRS = {"href", "src", "action", "formaction", "xlink:href", "poster", "background"}
_VOID = {"area", "br", "col", "hr", "img", "input", "source", "track", "wbr"}


class _Sanitizer(HTMLParser):
    """Re-emit HTML without scripts, event handlers or ``javascript:`` URLs (inline HTML is kept)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.skip_depth = 0

    def _attrs(self, attrs: list[tuple[str, str | None]]) -> str:
        kept = []
        for name, value in attrs:
            name = name.lower()
            if name.startswith("on") or name == "srcdoc":
                continue
            if name in _URL_ATTRS and value is not None:
                scheme = re.sub(r"[\s\x00-\x1f]", "", value).lower()
                if scheme.startswith(("javascript:", "vbscript:")) or (
                    scheme.startswith("data:") and not scheme.startswith("data:image/")
                ):
                    continue
            if name == "style" and value and re.search(r"expression\s*\(|javascript:|url\s*\(", value, re.I):
                continue
            kept.append(f' {name}="{html.escape(value, quote=True)}"' if value is not None else f" {name}")
        return "".join(kept)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _DROP_WITH_CONTENT:
            self.skip_depth += 1
        elif not self.skip_depth and tag not in _DROP_TAG:
            self.out.append(f"<{tag}{self._attrs(attrs)}>")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if not self.skip_depth and tag not in _DROP_TAG | _DROP_WITH_CONTENT:
            self.out.append(f"<{tag}{self._attrs(attrs)}>")

    def handle_endtag(self, tag: str) -> None:
        if tag in _DROP_WITH_CONTENT:
            self.skip_depth = max(0, self.skip_depth - 1)
        elif not self.skip_depth and tag not in _DROP_TAG and tag not in _VOID:
            self.out.append(f"</{tag}>")

    def handle_data(self, data: str) -> None:
        if not self.skip_depth:
            self.out.append(html.escape(data, quote=False))

    def handle_comment(self, data: str) -> None:
        if not self.skip_depth:
            self.out.append(f"<!--{data.replace('--', '- -')}-->")


def sanitize_html(markup: str) -> str:
    """``markup`` without ``<script>`` (and similar) elements, ``on*`` handlers and script URLs."""
    parser = _Sanitizer()
    parser.feed(markup)
    parser.close()
    return "".join(parser.out)


def heading_slug(text: str) -> str:
    """The anchor id of a heading, as the Hub makes them: ``Provided files`` -> ``provided-files``."""
    return re.sub(r"[\s]+", "-", re.sub(r"[^\w\s-]", "", text.strip().lower())) or "section"


def markdown_to_html(body: str) -> str:
    """Markdown to HTML as the Hub renders cards: CommonMark, tables, strikethrough, inline HTML kept.

    Headings get anchor ids (``#provided-files``) so a link or a screenshot can open at a section.
    """
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark", {"html": True, "linkify": False, "typographer": False}).enable(
        ["table", "strikethrough"]
    )
    tokens = md.parse(body)
    seen: dict[str, int] = {}
    for heading, inline in zip(tokens, tokens[1:], strict=False):
        if heading.type == "heading_open" and inline.type == "inline":
            slug = heading_slug(inline.content)
            seen[slug] = seen.get(slug, -1) + 1
            heading.attrSet("id", slug if seen[slug] == 0 else f"{slug}-{seen[slug]}")
    return sanitize_html(md.renderer.render(tokens, md.options, {}))


def _metadata_items(data: Mapping[str, Any]) -> list[dict[str, Any]]:
    items = []
    for key, value in data.items():
        if isinstance(value, list) and all(isinstance(v, str | int | float) for v in value):
            items.append({"key": key, "kind": "chips", "values": [str(v) for v in value]})
        elif isinstance(value, str) and "\n" in value:
            items.append({"key": key, "kind": "pre", "value": value})
        elif isinstance(value, str | int | float | bool):
            items.append(
                {"key": key, "kind": "text", "value": str(value).lower() if isinstance(value, bool) else str(value)}
            )
        else:
            items.append({"key": key, "kind": "pre", "value": yaml_dump(value, sort_keys=False).strip()})
    return items


def card_html(text: str, *, title: str | None = None) -> str:
    """A standalone HTML page showing the card as the Hub does: a metadata panel beside the rendered markdown."""
    front, body = split_frontmatter(text)
    try:
        data = yaml.safe_load(front) if front else {}
    except yaml.YAMLError as err:
        raise CardError(f"card frontmatter is not valid YAML ({str(err).splitlines()[0]})") from None
    data = data if isinstance(data, dict) else {}
    env = environment(autoescape=True)
    try:
        return env.get_template(HTML_TEMPLATE).render(
            title=title or str(data.get("model_name", "Model card")),
            items=_metadata_items(data),
            body=markdown_to_html(body),
        )
    except jinja2.TemplateError as err:
        raise template_error(err) from None


def write_outputs(text: str, *, out: Path | None = None, html_out: Path | None = None) -> list[Path]:
    """Write the card and/or its HTML page atomically; returns the paths written."""
    written = []
    for path, content in ((out, text), (html_out, card_html(text) if html_out else "")):
        if path is None:
            continue
        try:
            write_text_atomic(path, content)
        except OSError as err:
            raise CardError(f"{path}: cannot write ({err.strerror})") from None
        written.append(path)
    return written
