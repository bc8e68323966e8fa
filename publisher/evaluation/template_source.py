"""Which chat template the source carries, which one transformers uses, and whether the GGUF has that one.

A source folder can hold several templates: ``chat_template`` in ``tokenizer_config.json`` (a
string, or a list of named templates whose ``default`` is the one used), ``chat_template.jinja``
and ``chat_template.json``. The one transformers uses is read from transformers itself
(``AutoTokenizer(...).chat_template``), so its precedence is whatever the installed version
does; the file it came from is found by comparing texts. The GGUF's ``tokenizer.chat_template``
must be that text; when it is not, the difference names which file each side took.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from publisher.evaluation.transformers_view import transformers_view

DEFAULT_NAME = "default"


@dataclass(frozen=True)
class TemplateSource:
    """Where the GGUF's chat template and transformers' came from, and the difference in one line."""

    source_file: str | None
    gguf_source: str | None
    difference: str | None


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None


def _named(value: Any, label: str) -> dict[str, str]:
    """A ``chat_template`` value (a string or a list of ``{name, template}``) as label -> text."""
    if isinstance(value, str):
        return {label: value}
    found: dict[str, str] = {}
    if isinstance(value, list):
        for item in value:
            if isinstance(item, dict) and isinstance(item.get("template"), str):
                name = str(item.get("name", DEFAULT_NAME))
                found[label if name == DEFAULT_NAME else f"{label} ({name!r})"] = item["template"]
    return found


def source_templates(source_dir: Path) -> dict[str, str]:
    """Every chat template the source folder carries, labelled by the file (and name) it is in."""
    found: dict[str, str] = {}
    config = _read_json(source_dir / "tokenizer_config.json")
    if isinstance(config, dict):
        found |= _named(config.get("chat_template"), "tokenizer_config.json")
    jinja = source_dir / "chat_template.jinja"
    if jinja.is_file():
        found["chat_template.jinja"] = jinja.read_text(encoding="utf-8")
    data = _read_json(source_dir / "chat_template.json")
    if isinstance(data, dict):
        found |= _named(data.get("chat_template"), "chat_template.json")
    for extra in sorted((source_dir / "additional_chat_templates").glob("*.jinja")):
        found[f"additional_chat_templates/{extra.name}"] = extra.read_text(encoding="utf-8")
    return found


def transformers_template(source_dir: Path) -> str | None:
    """The chat template transformers applies by default for this source, None if it has none."""
    view = transformers_view(source_dir)
    return view.chat_template if view is not None else None


def _label(text: str | None, templates: dict[str, str], default: str) -> str | None:
    if text is None:
        return None
    return next((label for label, candidate in templates.items() if candidate == text), default)


def compare_template_source(gguf_template: str | None, source_dir: Path) -> TemplateSource:
    """Whether the GGUF's chat template is the one transformers uses for ``source_dir``."""
    templates = source_templates(source_dir)
    used = transformers_template(source_dir)
    if used is None and templates:  # transformers unavailable: its precedence (chat_template.jinja first, as 5.x)
        label = next(iter(sorted(templates, key=lambda k: k != "chat_template.jinja")))
        used = templates[label]
    source_file = _label(used, templates, "transformers' own default")
    gguf_source = _label(gguf_template, templates, "none of the source's files")
    if used is None or gguf_template == used:
        return TemplateSource(source_file, gguf_source, None)
    if gguf_template is None:
        difference = f"the GGUF carries no chat template, transformers uses the one from {source_file}"
    else:
        difference = f"the GGUF carries the template from {gguf_source}, transformers uses the one from {source_file}"
    return TemplateSource(source_file, gguf_source, difference)
