"""What the ``publisher`` commands do, behind :mod:`publisher.cli`'s typer layer.

The consoles, the one-line error printer and the recipe loader that prints warnings live here too,
so the command bodies and the entry point share them.
"""

from __future__ import annotations

import sys
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from publisher.errors import PublisherError
from publisher.recipe import Recipe, load_recipe

console = Console()
err_console = Console(stderr=True)

state = {"debug": False}


def print_error(line: str) -> None:
    """Print one error line to stderr; the text is escaped so brackets in it are not read as markup."""
    err_console.print(f"[red]error:[/red] {escape(printable(line))}", highlight=False, soft_wrap=True)


def printable(text: str) -> str:
    """``text`` on one line: line breaks, other control characters and lone surrogates shown as escapes."""
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in text)


def load(path: Path) -> Recipe:
    """Load a recipe and print its warnings (values allowed but doubtful) on stderr."""
    recipe = load_recipe(path)
    for line in recipe.warnings:
        err_console.print(f"[yellow]warning:[/yellow] {escape(printable(line))}", highlight=False, soft_wrap=True)
    return recipe


def recipe_summary(recipe: Recipe) -> Table:
    """What ``publisher validate`` prints for a valid recipe: its names, source, types and target."""
    table = Table(title=escape(f"{recipe.path}: valid"), show_header=False, title_justify="left")
    table.add_column("field", style="bold")
    table.add_column("value")

    def add(field: str, value: str) -> None:
        table.add_row(field, escape(value))  # recipe text is data, not rich markup

    source = recipe.source
    where = " + ".join(
        part for part in (f"{source.repo}@{source.revision}" if source.repo else "", source.path or "") if part
    )
    add("build name", recipe.build_name)
    add("source", where)
    add("model", f"{recipe.model.name} by {recipe.model.creator} ({recipe.model.model_type})")
    add("license", recipe.model.license)
    add("prompt template", recipe.model.prompt_template_title)
    add("convert", recipe.convert.outtype)
    add("quant types", ", ".join(recipe.quantize.names))
    add("smoke prompts", str(len(recipe.smoke.prompts)))
    add("publish", f"{recipe.publish.target}: {recipe.publish.repo_id}")
    if recipe.publish.branches:
        add("branches", ", ".join(b.name for b in recipe.publish.branches))
    return table


def show_card(
    recipe_path: Path,
    *,
    workdir: Path,
    source_dir: Path | None,
    preview: bool,
    out: Path | None,
    html: Path | None,
    check: bool,
) -> None:
    """Render one recipe's card to stdout, files or the terminal, and check it when asked."""
    from publisher import cards

    recipe = load(recipe_path)
    result = cards.card_for_recipe(recipe, workdir, source_dir=source_dir)
    for path in cards.write_outputs(result.text, out=out, html_out=html):
        err_console.print(f"wrote {escape(str(path))}", highlight=False)
    if preview:
        cards.preview(result.text, console)
    elif out is None and html is None and not check:
        sys.stdout.write(result.text)
    if check:
        build_dir = result.build_dir if result.manifest is not None else None
        problems = cards.check_card(result.text, recipe, result.manifest, build_dir)
        if problems:
            raise PublisherError("\n".join(f"card: {problem}" for problem in problems))
        note = "" if build_dir else " (no build yet: linked files not checked)"
        err_console.print(f"card: no problems found{note}", highlight=False)


def publish_cards(
    recipe_paths: list[Path], *, workdir: Path, source_dir: Path | None, target: str | None, hub_dir: Path
) -> None:
    """Re-render and publish the card of each recipe's build; one failure does not stop the others."""
    from publisher import pipeline
    from publisher.manifest import MANIFEST_NAME

    recipes = [load(path) for path in recipe_paths]  # every recipe valid before anything is published
    problems: list[str] = []
    for recipe in recipes:
        try:
            if not (workdir / recipe.build_name / MANIFEST_NAME).is_file():
                raise PublisherError(f"no build in {workdir / recipe.build_name}; run `publisher build {recipe.path}`")
            pipeline.execute(recipe, workdir, stages=["card"], source_dir=source_dir, console=err_console)
            publish_build(recipe, workdir=workdir, target=target, hub_dir=hub_dir, dry_run=False)
        except PublisherError as err:
            if state["debug"]:
                raise
            problems.extend(f"{recipe.path}: {line}" for line in str(err).splitlines())
    if problems:
        raise PublisherError("\n".join(problems))


def print_plan(
    recipe: Recipe, workdir: Path, *, source_dir: Path | None, stages: list[str] | None, only: list[str] | None
) -> None:
    """Print the build plan; raise with every refusal when this machine cannot do the build."""
    from publisher import plan

    built = plan.make_plan(recipe, workdir, source_dir=source_dir, stages=stages, only_types=only)
    console.print(plan.plan_table(built))
    if refusals := built.refusals():
        raise PublisherError("\n".join(refusals))


def publish_build(
    recipe: Recipe, *, workdir: Path, target: str | None, hub_dir: Path, dry_run: bool, hard_links: bool = False
) -> None:
    """Publish (or with ``dry_run`` plan) a build, and its GPTQ and AWQ sibling repos when the recipe has them."""
    from publisher import publish as publishing
    from publisher import publish_view

    outcome = publishing.publish(
        recipe,
        workdir=workdir,
        target=target,
        hub_dir=hub_dir,
        hard_links=hard_links,
        dry_run=dry_run,
        console=err_console,
    )
    if isinstance(outcome, publishing.PublishPlan):
        publish_view.print_plan(outcome, console)
    else:
        publish_view.print_result(outcome, console)
    from publisher.folder_formats import formats_of
    from publisher.publish_gptq import publish_folders

    for fmt in formats_of(recipe):  # the sibling repos (-GPTQ, -AWQ), one branch per variant
        sibling = publish_folders(
            recipe, fmt, workdir=workdir, target=target, hub_dir=hub_dir, dry_run=dry_run, console=err_console
        )
        if isinstance(sibling, publishing.PublishPlan):
            publish_view.print_plan(sibling, console)
        else:
            publish_view.print_result(sibling, console)
