"""The card's Jinja environment: sandboxed, ``StrictUndefined``, template lookup, filters, one-line errors."""

from __future__ import annotations

import traceback
from pathlib import Path

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from publisher.cards.kinds import template_source
from publisher.cards.text import llama_escape, md_cell, md_inline, shell_quote
from publisher.errors import CardError
from publisher.recipe import Recipe
from publisher.report import format_bytes

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"


def templates_dir() -> Path:
    """The shipped templates, package data of ``publisher.cards``."""
    if not (TEMPLATES_DIR / "partials").is_dir():
        raise CardError(f"card templates not found in {TEMPLATES_DIR}; reinstall publisher")
    return TEMPLATES_DIR


def _partials_dir(recipe: Recipe) -> Path | None:
    if recipe.card.partials_dir is None:
        return None
    path = recipe.resolve_path(recipe.card.partials_dir)
    if not path.is_dir():
        raise CardError(f"card.partials_dir: {path}: no such folder")
    return path


def template_files(recipe: Recipe) -> dict[str, Path]:
    """Every template file that can take part in rendering this recipe's card, by a location-free label.

    The labels (``shipped/partials/footer.md.j2``, ``partials_dir/footer.md.j2``, ``own/card.md.j2``)
    keep fingerprints stable when the checkout or the recipe folder moves.
    """
    roots: list[tuple[str, Path, str]] = [("shipped", templates_dir(), "*.j2")]
    partials = _partials_dir(recipe)
    if partials is not None:
        roots.append(("partials_dir", partials, "*"))
    own_dir, _own_name = template_source(recipe)
    if own_dir is not None:
        roots.append(("own", own_dir, "*.j2"))
    files: dict[str, Path] = {}
    for label, root, pattern in roots:
        for path in sorted(root.rglob(pattern)):
            if path.is_file():
                files[f"{label}/{path.relative_to(root).as_posix()}"] = path
    return files


def environment(recipe: Recipe | None = None, *, autoescape: bool = False) -> SandboxedEnvironment:
    """A sandboxed Jinja environment with ``StrictUndefined``.

    Lookup order: the recipe's ``partials_dir`` (as ``partials/...``), the folder of the recipe's
    own template, then the shipped templates.
    """
    loaders: list[jinja2.BaseLoader] = []
    if recipe is not None:
        partials = _partials_dir(recipe)
        if partials is not None:
            loaders.append(jinja2.PrefixLoader({"partials": jinja2.FileSystemLoader(partials)}, delimiter="/"))
        own_dir, _name = template_source(recipe)
        if own_dir is not None:
            loaders.append(jinja2.FileSystemLoader(own_dir))
    loaders.append(jinja2.FileSystemLoader(templates_dir()))
    env = SandboxedEnvironment(
        loader=jinja2.ChoiceLoader(loaders),
        undefined=jinja2.StrictUndefined,
        autoescape=autoescape,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(
        md_cell=md_cell,
        md_inline=md_inline,
        shell_quote=shell_quote,
        llama_escape=llama_escape,
        py_str=repr,
        gb=format_bytes,
    )
    return env


# ---------------------------------------------------------------------------------------------
# Template errors as one line naming file and line
# ---------------------------------------------------------------------------------------------


def _display(filename: str | None) -> str:
    if not filename:
        return "<template>"
    path = Path(filename)
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def template_error(err: Exception) -> CardError:
    """One line ``file:line: message`` for any error raised while loading or rendering a template."""
    if isinstance(err, jinja2.TemplateSyntaxError):
        return CardError(f"{_display(err.filename or err.name)}:{err.lineno}: template syntax error: {err.message}")
    if isinstance(err, jinja2.TemplateNotFound):
        where = _template_frame(err)
        prefix = f"{where}: " if where else ""
        return CardError(
            f"{prefix}template {err.name!r} not found (card.template, card.partials_dir or shipped templates)"
        )
    where = _template_frame(err)
    message = str(err).splitlines()[0] if str(err) else type(err).__name__
    if not isinstance(err, jinja2.TemplateError):
        message = f"{type(err).__name__}: {message}"
    return CardError(f"{where or '<template>'}: {message}")


def _template_frame(err: BaseException) -> str | None:
    """``file:line`` of the innermost template frame in ``err``'s traceback (Jinja maps frames to template lines)."""
    found = None
    for frame in traceback.extract_tb(err.__traceback__):
        # Jinja gives compiled template code the template's own file name; everything else is Python.
        if not frame.filename.endswith(".py") and not frame.filename.startswith("<frozen"):
            found = f"{_display(frame.filename)}:{frame.lineno}"
    return found


# Errors a template can raise while rendering, beyond Jinja's own.
RENDER_ERRORS = (jinja2.TemplateError, ArithmeticError, LookupError, TypeError, ValueError, AttributeError)


def render_template(env: SandboxedEnvironment, name: str, context: dict[str, object]) -> str:
    """Render template ``name`` of ``env``; any error becomes one :class:`CardError` line."""
    try:
        return env.get_template(name).render(**context)
    except RENDER_ERRORS as err:
        raise template_error(err) from None
