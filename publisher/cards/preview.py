"""Previews of a card: a rich terminal view, and a standalone HTML page laid out as the Hub shows cards."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jinja2
import yaml

from publisher.cards.environment import environment, template_error
from publisher.cards.frontmatter import split_frontmatter, yaml_dump
from publisher.cards.rows import HUB
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


# What the Hub's card renderer keeps: Ammonia's (nh3's) safe defaults, plus heading anchors, image sizes
# and table cell alignment. Scripts, event handlers, javascript: URLs and comments go.
_ATTRIBUTES = {
    **{f"h{n}": {"id"} for n in range(1, 7)},
    "a": {"href", "title"},
    "img": {"src", "alt", "title", "width", "height"},
    "td": {"style", "align"},
    "th": {"style", "align"},
}


def sanitize_html(markup: str) -> str:
    """``markup`` as Ammonia (nh3) cleans it: no ``<script>``, ``on*`` handlers, script URLs or comments."""
    import nh3

    return nh3.clean(
        markup,
        attributes=_ATTRIBUTES,
        filter_style_properties={"text-align"},
        url_schemes={"http", "https", "mailto"},
    )


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


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


def _eval_results(index: Any) -> list[dict[str, str]]:
    """``(name, value)`` of every metric in a ``model-index``, as the Hub's evaluation results panel lists them."""
    rows = []
    for model in index if isinstance(index, list) else []:
        for result in model.get("results", []) if isinstance(model, dict) else []:
            dataset = (result.get("dataset") or {}).get("name", "") if isinstance(result, dict) else ""
            for metric in result.get("metrics", []) if isinstance(result, dict) else []:
                if isinstance(metric, dict):
                    name = str(metric.get("name") or metric.get("type", ""))
                    rows.append({"name": name, "value": str(metric.get("value", "")), "dataset": str(dataset)})
    return rows


def sidebar(data: Mapping[str, Any]) -> dict[str, Any]:
    """The Hub's side panel from a card's frontmatter: chips, datasets, the model tree, evaluation results."""
    license_id = data.get("license")
    licence = None
    if license_id:
        name = data.get("license_name") if license_id == "other" else None
        link = str(data.get("license_link") or "")
        licence = {"text": str(name or license_id), "link": link if link.startswith(("https://", "http://")) else None}
    shown = {"license", "license_name", "license_link", "language", "tags", "datasets", "base_model"}
    shown |= {"base_model_relation", "model-index", "pipeline_tag", "model_name"}
    return {
        "license": licence,
        "pipeline": data.get("pipeline_tag"),
        "languages": _as_list(data.get("language")),
        "tags": _as_list(data.get("tags")),
        "datasets": [{"id": d, "url": f"{HUB}/datasets/{d}"} for d in _as_list(data.get("datasets"))],
        "base_models": [{"id": b, "url": f"{HUB}/{b}"} for b in _as_list(data.get("base_model"))],
        "relation": data.get("base_model_relation") or "finetune",
        "evals": _eval_results(data.get("model-index")),
        "other": [
            {"key": str(k), "value": v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)}
            for k, v in data.items()
            if k not in shown
        ],
    }


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
            side=sidebar(data),
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
