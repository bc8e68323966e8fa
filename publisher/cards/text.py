"""Escaping for Markdown and shells: the card's Jinja filters and the helpers its rows use."""

from __future__ import annotations

import html
import re
import shlex


def md_cell(value: object) -> str:
    """Text made safe for one markdown table cell: pipes and backslashes escaped, one line, no HTML."""
    text = html.escape(str(value), quote=False)
    text = text.replace("\\", "\\\\").replace("|", "\\|").replace("`", "\\`")
    text = re.sub(r"\s*\r?\n\s*", " ", text).strip()
    return text or " "


def md_inline(value: object) -> str:
    """Text made safe inside markdown prose or link text (brackets, emphasis and HTML neutralised)."""
    text = html.escape(str(value), quote=False)
    return re.sub(r"([\\`*_\[\]])", r"\\\1", text)


def llama_escape(text: str) -> str:
    """Write ``text`` with the escapes llama.cpp's ``-p``/``-sys`` options decode (``\\n``, ``\\t``, ``\\\\``)."""
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t")


def shell_quote(text: str) -> str:
    """Quote for POSIX shells; always quoted so the command reads the same for every value."""
    quoted = shlex.quote(text)
    return quoted if quoted.startswith("'") else f"'{text}'"


def code_fence(text: str) -> str:
    """A backtick fence longer than any run of backticks inside ``text``."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)
