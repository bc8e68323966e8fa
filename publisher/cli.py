"""The ``publisher`` command: load, validate, call the library. Errors become one line each."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from publisher import __version__, interrupts
from publisher.cli_commands import (
    console,
    err_console,
    load,
    print_error,
    print_plan,
    publish_build,
    publish_cards,
    recipe_summary,
    show_card,
    state,
)
from publisher.errors import PublisherError
from publisher.manifest import DISK_FULL, disk_full_error, write_text_atomic
from publisher.recipe import recipe_json_schema

app = typer.Typer(
    name="publisher",
    help="Build, test, describe and publish quantized GGUF models from a YAML recipe.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
RecipeArg = Annotated[Path, typer.Argument(help="Recipe YAML file.", show_default=False)]
TargetOpt = Annotated[
    str | None, typer.Option("--target", help="Where to publish: local or hf (default: the recipe's publish.target).")
]
HubDirOpt = Annotated[Path, typer.Option("--hub-dir", help="Folder of the local target's repos.")]
DEFAULT_HUB_DIR = Path("hub")


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
    state["debug"] = debug


@app.command()
def validate(recipes: Annotated[list[Path], typer.Argument(help="Recipe YAML files.", show_default=False)]) -> None:
    """Check recipes and print a summary of each, or every problem found."""
    problems: list[str] = []
    for path in recipes:
        try:
            console.print(recipe_summary(load(path)))
        except PublisherError as err:
            if state["debug"]:
                raise
            problems.extend(str(err).splitlines())
    if problems:
        for line in problems:
            print_error(line)
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
        try:
            write_text_atomic(out, text)
        except OSError as err:
            raise PublisherError(f"{out}: cannot write the schema ({err.strerror or err})") from None


# -- commands added by later work go below this line -----------------------------------------


@app.command()
def card(
    recipe_paths: Annotated[
        list[Path], typer.Argument(help="Recipe YAML file; several with --publish.", show_default=False)
    ],
    *,
    workdir: Annotated[
        Path, typer.Option("--workdir", help="Builds folder; uses <workdir>/<build name>/manifest.json if present.")
    ] = Path("build"),
    source_dir: Annotated[
        Path | None, typer.Option("--source-dir", help="A local copy of the source model, in place of the source repo.")
    ] = None,
    preview: Annotated[bool, typer.Option("--preview", help="Show the card in the terminal.")] = False,
    out: Annotated[Path | None, typer.Option("--out", help="Write the card (README.md) to this file.")] = None,
    html: Annotated[Path | None, typer.Option("--html", help="Write a standalone HTML preview to this file.")] = None,
    check: Annotated[bool, typer.Option("--check", help="Check the card; exit 1 listing every problem.")] = False,
    publish_too: Annotated[
        bool,
        typer.Option(
            "--publish", help="Re-render each build's README.md and publish it (a card-only change commits it alone)."
        ),
    ] = False,
    target: TargetOpt = None,
    hub_dir: HubDirOpt = DEFAULT_HUB_DIR,
) -> None:
    """Render a recipe's model card (from its build when there is one, else with estimated sizes)."""
    if publish_too:
        if out or html or preview or check:
            raise PublisherError(
                "--publish renders into each build folder; use --out, --html, --preview, --check alone"
            )
        publish_cards(recipe_paths, workdir=workdir, source_dir=source_dir, target=target, hub_dir=hub_dir)
        return
    if len(recipe_paths) != 1:
        raise PublisherError(f"card: got {len(recipe_paths)} recipes; give one, or several with --publish")
    show_card(recipe_paths[0], workdir=workdir, source_dir=source_dir, preview=preview, out=out, html=html, check=check)


def _split(values: list[str] | None) -> list[str] | None:
    """Repeatable options that also accept comma-separated lists: ``--only Q2_K,Q8_0``."""
    if values is None:
        return None
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


@app.command()
def build(
    recipe_path: RecipeArg,
    *,
    workdir: Annotated[
        Path, typer.Option("--workdir", help="Builds folder; this build goes to <workdir>/<build name>/.")
    ] = Path("build"),
    only: Annotated[
        list[str] | None, typer.Option("--only", help="Build and check only this quant type (repeatable, or a,b).")
    ] = None,
    stages: Annotated[
        list[str] | None,
        typer.Option(
            "--stages",
            help="Run only these stages: fetch, convert, imatrix, quantize, smoke, shard, card (repeatable, or a,b).",
        ),
    ] = None,
    force: Annotated[
        list[str] | None, typer.Option("--force", help="Redo this stage even when its recorded outputs are current.")
    ] = None,
    source_dir: Annotated[
        Path | None, typer.Option("--source-dir", help="A local copy of the source model, in place of the source repo.")
    ] = None,
    publish_too: Annotated[
        bool, typer.Option("--publish", help="Publish the build when every check passed (see `publisher publish`).")
    ] = False,
    target: TargetOpt = None,
    hub_dir: HubDirOpt = DEFAULT_HUB_DIR,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the plan (disk, memory, time per stage) and build nothing.")
    ] = False,
) -> None:
    """Convert, quantize and test a recipe's model; re-running skips work the manifest proves done."""
    from publisher import pipeline

    recipe = load(recipe_path)
    if dry_run:
        print_plan(recipe, workdir, source_dir=source_dir, stages=_split(stages), only=_split(only))
        return
    result = pipeline.execute(
        recipe,
        workdir,
        only_types=_split(only),
        stages=_split(stages),
        force=_split(force) or (),
        source_dir=source_dir,
        console=err_console,
    )
    err_console.print(f"stages: {pipeline.stage_line(result)}", highlight=False, soft_wrap=True)
    console.print(pipeline.result_table(result))
    pipeline.check_failures(result)
    if publish_too:
        publish_build(recipe, workdir=workdir, target=target, hub_dir=hub_dir, dry_run=False)


@app.command(name="plan")
def plan_command(
    recipe_path: RecipeArg,
    *,
    workdir: Annotated[
        Path, typer.Option("--workdir", help="Builds folder (for free disk and files already built).")
    ] = Path("build"),
    only: Annotated[
        list[str] | None, typer.Option("--only", help="Plan only this quant type (repeatable, or a,b).")
    ] = None,
    stages: Annotated[
        list[str] | None, typer.Option("--stages", help="Plan only these stages (repeatable, or a,b).")
    ] = None,
    source_dir: Annotated[
        Path | None, typer.Option("--source-dir", help="A local copy of the source model (its config.json is enough).")
    ] = None,
) -> None:
    """Per stage: the disk a build writes, its peak memory and time; exit 1 when this machine cannot do it."""
    print_plan(load(recipe_path), workdir, source_dir=source_dir, stages=_split(stages), only=_split(only))


@app.command()
def publish(
    recipe_path: RecipeArg,
    *,
    workdir: Annotated[
        Path, typer.Option("--workdir", help="Builds folder; publishes <workdir>/<build name>/.")
    ] = Path("build"),
    target: TargetOpt = None,
    hub_dir: HubDirOpt = DEFAULT_HUB_DIR,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the plan (files, sizes, branches, commit) and change nothing.")
    ] = False,
    hard_links: Annotated[
        bool,
        typer.Option(
            "--hard-links",
            help="Local target: hard-link the build's GGUFs instead of storing a copy (the build and the mirror "
            "then share their bytes).",
        ),
    ] = False,
) -> None:
    """Publish a build's passed GGUFs and README.md: one commit per branch, only what changed."""
    publish_build(
        load(recipe_path),
        workdir=workdir,
        target=target,
        hub_dir=hub_dir,
        dry_run=dry_run,
        hard_links=hard_links,
    )


@app.command()
def summary(
    recipe_path: RecipeArg,
    *,
    workdir: Annotated[Path, typer.Option("--workdir", help="Builds folder.")] = Path("build"),
) -> None:
    """Print a build's files and quality as Markdown tables (for a CI job summary)."""
    from publisher.summary import build_summary

    sys.stdout.write(build_summary(load(recipe_path), workdir))


def main() -> None:
    """Console entry point: run the app, turning known errors into one line and exit code 1."""
    interrupts.install()
    try:
        # Standalone mode: typer itself reports usage errors (exit 2) and interrupts (exit 130);
        # exceptions raised by commands still reach us.
        app()
    except PublisherError as err:
        if state["debug"]:
            raise
        for line in str(err).splitlines() or [type(err).__name__]:
            print_error(line)
        sys.exit(1)
    except OSError as err:
        if state["debug"]:
            raise
        if err.errno in DISK_FULL:  # a full disk outside the writes that map it themselves (a temp folder)
            folder = Path(err.filename).parent if err.filename else Path.cwd()
            print_error(str(disk_full_error(folder)))
            sys.exit(1)
        print_error(f"unexpected {type(err).__name__}: {err} (run with --debug for a traceback)")
        sys.exit(2)
    except Exception as err:
        if state["debug"]:
            raise
        print_error(f"unexpected {type(err).__name__}: {err} (run with --debug for a traceback)")
        sys.exit(2)


if __name__ == "__main__":
    main()
