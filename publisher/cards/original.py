"""The source model's own card, made fit to embed in ours as data.

The source README is someone else's text: it may carry section markers like ours (a card that is
itself a GGUF quantizer's card), Jinja-looking text (cards that document chat templates), a GitHub
page's HTML with its chrome, and links relative to its own repo. :func:`embeddable_card` turns it
into Markdown that reads the same on our page and that our card checks never mistake for our own
markup: the quantizer's original-card section only, HTML converted, links made absolute, markers
made inert.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from html.parser import HTMLParser

import html2text

from publisher.cards.frontmatter import split_frontmatter

HUB = "https://huggingface.co"
MARKER = re.compile(r"<!--\s*([A-Za-z0-9_.-]+)\s+(start|end)\s*-->")
ORIGINAL_SECTION = re.compile(
    r"<!--\s*original-model-card start\s*-->(.*?)(?:<!--\s*original-model-card end\s*-->|\Z)", re.DOTALL
)
# TheBloke's cards, and cards made from them, head the embedded card this way.
ORIGINAL_HEADING = re.compile(r"^#{1,2}[ \t]+Original model card\b[^\n]*\n", re.MULTILINE | re.IGNORECASE)
# Our own intro line under that heading (see partials/original_card.md.j2).
OUR_INTRO = re.compile(r"\A\s*The text below is the source model's own card[^\n]*\n")
HTML_PAGE = re.compile(r"\A\s*(?:<!DOCTYPE\s+html|<html[\s>])|<article[^>]*\bmarkdown-body\b", re.IGNORECASE)
CHROME_TAGS = {"head", "header", "nav", "footer", "script", "style", "noscript", "template", "svg", "button", "form"}
VOID_TAGS = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
# Markdown links and images: [text](target "title") / ![alt](target); HTML src= and href= attributes.
MD_LINK = re.compile(r"(!?)\[((?:[^\[\]]|\[[^\]]*\])*)\]\(\s*<?([^)\s>]+)>?((?:\s+\"[^\"]*\")?\s*)\)")
MD_REFERENCE = re.compile(r"^([ \t]{0,3}\[[^\]]+\]:[ \t]*)<?(\S+?)>?([ \t]|$)", re.MULTILINE)
HTML_ATTRIBUTE = re.compile(r"(<(\w+)[^>]*?\s(src|href)\s*=\s*)([\"'])(.*?)\4", re.IGNORECASE | re.DOTALL)
FENCED_CODE = re.compile(r"(^(?:`{3,}|~{3,})[^\n]*\n.*?^(?:`{3,}|~{3,})[ \t]*$)", re.DOTALL | re.MULTILINE)
ABSOLUTE = re.compile(r"\A(?:[a-zA-Z][a-zA-Z0-9+.-]*:|//|#)")


@dataclass(frozen=True)
class OriginalCard:
    """The embeddable text and what was done to it, for the card's one-line account of its changes."""

    text: str
    changes: tuple[str, ...]


class _MainContent(HTMLParser):
    """Collects a page's rendered README (GitHub's ``article.markdown-body``), or else the page without its chrome."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=False)
        self.article: list[str] = []
        self.page: list[str] = []
        self._article_depth = 0
        self._chrome_depth = 0

    def _emit(self, raw: str) -> None:
        if self._chrome_depth:
            return
        self.page.append(raw)
        if self._article_depth:
            self.article.append(raw)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        raw = self.get_starttag_text() or ""
        if tag in CHROME_TAGS:
            self._chrome_depth += tag not in VOID_TAGS
            return
        classes = (dict(attrs).get("class") or "").split()
        if self._article_depth:
            self._article_depth += tag not in VOID_TAGS
        elif "markdown-body" in classes and not self._chrome_depth:
            self._article_depth = 1
            return
        self._emit(raw)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._emit(self.get_starttag_text() or "")

    def handle_endtag(self, tag: str) -> None:
        if tag in CHROME_TAGS and self._chrome_depth:
            self._chrome_depth -= 1
            return
        if self._article_depth:
            self._article_depth -= 1
            if not self._article_depth:
                return
        self._emit(f"</{tag}>")

    def handle_data(self, data: str) -> None:
        self._emit(data)

    def handle_entityref(self, name: str) -> None:
        self._emit(f"&{name};")

    def handle_charref(self, name: str) -> None:
        self._emit(f"&#{name};")


def html_to_markdown(page: str) -> str:
    """A GitHub-style HTML page as Markdown: its rendered README only, or the page without its chrome."""
    parser = _MainContent()
    parser.feed(page)
    parser.close()
    main = "".join(parser.article or parser.page)
    converter = html2text.HTML2Text()
    converter.body_width = 0  # keep paragraphs on one line, as Markdown sources usually are
    converter.unicode_snob = True
    converter.mark_code = False
    converter.pad_tables = True
    return re.sub(r"^[ \t]+$", "", converter.handle(main), flags=re.MULTILINE).strip()


def _quantizer_section(body: str) -> str | None:
    """The original-card part of a card that is itself a quantizer's card, without its heading."""
    match = ORIGINAL_SECTION.search(body)
    inner = match.group(1) if match else None
    if inner is None:
        heading = ORIGINAL_HEADING.search(body)
        if heading is None:
            return None
        inner = body[heading.start() :]
    inner = ORIGINAL_HEADING.sub("", inner.strip(), count=1)
    return OUR_INTRO.sub("", inner).strip() or None


def _absolute(target: str, base: str, image: bool) -> str:
    if ABSOLUTE.match(target):
        return target
    path, hash_mark, fragment = target.partition("#")
    path = posixpath.normpath(path.lstrip("/")).removeprefix("./") if path else ""
    if not path or path == "." or path.startswith(".."):
        return target
    kind = "resolve" if image else "blob"
    if base.startswith("https://github.com/"):
        kind = "raw" if image else "blob"
    return f"{base}/{kind}/main/{path}{hash_mark}{fragment}"


def absolute_links(text: str, base: str) -> str:
    """Relative links and images made absolute against a repo (images to raw files, links to file pages)."""

    def markdown(match: re.Match[str]) -> str:
        bang, label, target, title = match.groups()
        return f"{bang}[{label}]({_absolute(target, base, bool(bang))}{title})"

    def reference(match: re.Match[str]) -> str:
        return f"{match.group(1)}{_absolute(match.group(2), base, False)}{match.group(3)}"

    def attribute(match: re.Match[str]) -> str:
        start, tag, name, quote, target = match.groups()
        image = name.lower() == "src"
        return f"{start}{quote}{_absolute(target, base, image)}{quote}"

    def rewrite(prose: str) -> str:
        prose = MD_LINK.sub(markdown, prose)
        prose = MD_REFERENCE.sub(reference, prose)
        return HTML_ATTRIBUTE.sub(attribute, prose)

    # Code blocks are examples, not links: they stay as written.
    parts = FENCED_CODE.split(text)
    return "".join(part if FENCED_CODE.fullmatch(part) else rewrite(part) for part in parts)


def inert_markers(text: str) -> str:
    """Section markers of the embedded card kept as comments that no tool reads as a section of ours."""
    return MARKER.sub(lambda m: f"<!-- {m.group(1)} {m.group(2)} (in the original card) -->", text)


def embeddable_card(readme: str, *, repo: str | None, base_url: str | None = None) -> OriginalCard | None:
    """The source README as our card embeds it; ``None`` when nothing is left to embed.

    ``base_url`` is where relative links point (a Hub or GitHub repo URL); default the Hub page of ``repo``.
    """
    front, body = split_frontmatter(readme)
    changes = []
    if front is not None:
        changes.append("its metadata block was removed")
    section = _quantizer_section(body)
    if section is not None:
        body = section
        changes.append("only the original-card section of that quantized model's card is kept")
    if HTML_PAGE.search(body):
        body = html_to_markdown(body)
        changes.append("its HTML page was converted to Markdown")
    base = (base_url or (f"{HUB}/{repo}" if repo else "")).rstrip("/")
    if base and (linked := absolute_links(body, base)) != body:
        body = linked
        changes.append(f"its relative links now point into {base}")
    if (inert := inert_markers(body)) != body:
        body = inert
        changes.append("its section markers were renamed so that tools do not take them for this card's")
    text = body.strip()
    return OriginalCard(text=text, changes=tuple(changes)) if text else None
