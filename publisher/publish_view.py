"""What publishing shows: the plan before it runs, and one line per branch after."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from publisher.publish import PublishPlan, PublishResult
from publisher.report import format_bytes


def print_plan(plan: PublishPlan, console: Console) -> None:
    """Show the plan: target, branches, each file with its size and whether it is sent or skipped."""
    state = "exists" if plan.repo_exists else "will be created" + (" (private)" if plan.private else "")
    console.print(f"[bold]{escape(plan.target)}[/bold] {escape(plan.location)}: {state}", highlight=False)
    for branch in plan.branches:
        table = Table(
            title=escape(f"branch {branch.name}" + ("" if branch.exists else " (new)")),
            title_justify="left",
            show_edge=False,
        )
        table.add_column("file")
        table.add_column("size", justify="right")
        table.add_column("action")
        for planned in branch.files:
            action = "skip: already present" if planned.present else "upload"
            table.add_row(escape(planned.file.path_in_repo), format_bytes(planned.file.size, "any"), action)
        console.print(table)
        if branch.uploads:
            console.print(
                f"commit on {escape(branch.name)}: {escape(plan.title)} "
                f"({_count(len(branch.uploads))}, {format_bytes(branch.upload_bytes, 'any')})",
                highlight=False,
            )
            for line in branch.description.splitlines()[:2]:  # the recipe and build lines of the message body
                console.print(f"  {escape(line)}", highlight=False)
        else:
            console.print(f"{escape(branch.name)}: up to date, no commit", highlight=False)
    for note in plan.notes:
        console.print(f"note: {escape(note)}", highlight=False)


def print_result(result: PublishResult, console: Console) -> None:
    """One line per branch: the commit made, or that nothing changed."""
    for branch in result.branches:
        if branch.commit is None:
            repaired = f"; repaired {_count(branch.repaired)} in the mirror" if branch.repaired else ""
            console.print(f"{escape(branch.name)}: up to date, no commit{repaired}", highlight=False)
        else:
            console.print(
                f"{escape(branch.name)}: committed {branch.commit[:12]} "
                f"({_count(branch.files)}, {format_bytes(branch.bytes, 'any')}) to {escape(result.plan.location)}",
                highlight=False,
            )
    for note in result.plan.notes:
        console.print(f"note: {escape(note)}", highlight=False)


def _count(files: int) -> str:
    return f"{files} file" if files == 1 else f"{files} files"
