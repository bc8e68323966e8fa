"""The ``publisher`` command: load, validate, call the library. Errors become one line each."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from publisher import __version__
from publisher.errors import PublisherError
from publisher.recipe import Recipe, load_recipe, recipe_json_schema

app = typer.Typer(
    name="publisher",
    help="Build, test, describe and publish quantized GGUF models from a YAML recipe.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)

_state = {"debug": False}

RecipeArg = Annotated[Path, typer.Argument(help="Recipe YAML file.", show_default=False)]


def _version(value: bool) -> None:
    if value:
        console.print(f"publisher {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    *,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    _state["debug"] = debug


def _summary(recipe: Recipe) -> Table:
    table = Table(title=f"{recipe.path}: valid", show_header=False, title_justify="left")
    table.add_column("field", style="bold")
    table.add_column("value")
    source = recipe.source
    where = " + ".join(
        part for part in (f"{source.repo}@{source.revision}" if source.repo else "", source.path or "") if part
    )
    table.add_row("build name", recipe.build_name)
    table.add_row("source", where)
    table.add_row("model", f"{recipe.model.name} by {recipe.model.creator} ({recipe.model.model_type})")
    table.add_row("license", recipe.model.license)
    table.add_row("prompt template", recipe.model.prompt_template_title)
    table.add_row("convert", recipe.convert.outtype)
    table.add_row("quant types", ", ".join(recipe.quantize.types))
    table.add_row("smoke prompts", str(len(recipe.smoke.prompts)))
    table.add_row("publish", f"{recipe.publish.target}: {recipe.publish.repo_id}")
    if recipe.publish.branches:
        table.add_row("branches", ", ".join(b.name for b in recipe.publish.branches))
    return table


@app.command()
def validate(recipes: Annotated[list[Path], typer.Argument(help="Recipe YAML files.", show_default=False)]) -> None:
    """Check recipes and print a summary of each, or every problem found."""
    problems: list[str] = []
    for path in recipes:
        try:
            console.print(_summary(load_recipe(path)))
        except PublisherError as err:
            problems.extend(str(err).splitlines())
    if problems:
        for line in problems:
            err_console.print(f"[red]error:[/red] {line}", markup=True, highlight=False, soft_wrap=True)
        raise typer.Exit(1)


@app.command()
def schema(
    *, out: Annotated[Path | None, typer.Option("--out", help="Write to this file instead of stdout.")] = None
) -> None:
    """Print the recipe JSON Schema (for editor completion and checks)."""
    text = json.dumps(recipe_json_schema(), indent=2) + "\n"
    if out is None:
        sys.stdout.write(text)
    else:
        out.write_text(text, encoding="utf-8")


# -- commands added by later work go below this line -----------------------------------------


def main() -> None:
    """Console entry point: run the app, turning known errors into one line and exit code 1."""
    try:
        # standalone_mode=False lets PublisherError reach us; click then returns exit codes instead of exiting.
        result = app(standalone_mode=False)
        if isinstance(result, int) and result:
            sys.exit(result)
    except PublisherError as err:
        if _state["debug"]:
            raise
        for line in str(err).splitlines() or [type(err).__name__]:
            err_console.print(f"[red]error:[/red] {line}", markup=True, highlight=False, soft_wrap=True)
        sys.exit(1)
    except typer.Exit as exit_:
        sys.exit(exit_.exit_code)
    except typer.Abort:
        err_console.print("aborted")
        sys.exit(130)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
    except Exception as err:  # click usage errors and the like
        import click

        if isinstance(err, click.exceptions.ClickException):
            err.show()
            sys.exit(err.exit_code)
        if _state["debug"]:
            raise
        err_console.print(f"[red]error:[/red] unexpected {type(err).__name__}: {err} (run with --debug for a traceback)")
        sys.exit(2)


if __name__ == "__main__":
    main()
