"""``python -m bench`` (``make bench``): run the benchmarks, print the table, write bench/results.json."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.console import Console

from bench import models
from bench.proc import BenchError
from bench.report import markdown_table, merge_results, print_table, schema_problems, write_results
from bench.run import SECTIONS, default_sections, run

DEFAULT_OUT = Path(__file__).resolve().parent / "results.json"
DEFAULT_WORK = models.CACHE_DIR / "work"


def parse(argv: list[str]) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--rounds", type=int, default=3, help="A/B rounds per comparison (default 3)")
    parser.add_argument(
        "--build-rounds", type=int, default=2, help="rounds of full build + rebuilds on the demo model (default 2)"
    )
    parser.add_argument(
        "--large-build-rounds",
        type=int,
        default=1,
        help="rounds of full build + rebuilds on the large model (default 1)",
    )
    parser.add_argument(
        "--models",
        default="demo,large",
        help="comma-separated: demo (SmolLM2-135M), large (generated ~300M), scale (generated 1.1B, TinyLlama's shape)",
    )
    parser.add_argument(
        "--sections",
        default=",".join(default_sections()),
        help=f"comma-separated subset of {','.join(SECTIONS)} (default all; gptq only where .venv-gptq is installed)",
    )
    parser.add_argument(
        "--merge", action="store_true", help="add this run's models to --out instead of replacing it (bench-scale)"
    )
    parser.add_argument("--quick", action="store_true", help="one round, demo model only (a smoke test of the harness)")
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK, help="scratch folder (default .cache/bench/work)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results file (default bench/results.json)")
    parser.add_argument(
        "--show", action="store_true", help="run nothing: print the table of --out, then the same as Markdown"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.build_rounds, args.models = 1, 1, "demo"
    return args


def main(argv: list[str] | None = None) -> int:
    """Run, print, write; exit status 1 when a benchmarked command failed."""
    args = parse(sys.argv[1:] if argv is None else argv)
    console = Console() if sys.stdout.isatty() else Console(width=160)
    if args.show:
        shown = json.loads(args.out.read_text(encoding="utf-8"))
        print_table(shown, console)
        print(markdown_table(shown))
        return 0
    chosen_models = [m for m in args.models.split(",") if m]
    sections = [s for s in args.sections.split(",") if s]
    unknown = sorted(set(sections) - set(SECTIONS)) + sorted(set(chosen_models) - {"demo", "large", "scale"})
    if unknown:
        console.print(f"[red]unknown section or model: {', '.join(unknown)}[/]")
        return 2
    try:
        results = run(
            work=args.work,
            rounds=args.rounds,
            build_rounds=args.build_rounds,
            large_build_rounds=args.large_build_rounds,
            models=chosen_models,
            sections=sections,
            console=console,
        )
    except BenchError as err:
        console.print(f"[red]benchmark failed:[/] {err}")
        return 1
    print_table(results, console)
    for error in results["errors"]:
        console.print(f"[red]{error['section']} on {error['model']} failed:[/] {error['error']}", highlight=False)
    if args.merge and args.out.is_file():
        results = merge_results(json.loads(args.out.read_text(encoding="utf-8")), results)
    write_results(args.out, results)
    problems = schema_problems(results)
    if problems and set(sections) >= set(SECTIONS) - {"gptq"}:
        console.print("[yellow]results.json is incomplete:[/] " + "; ".join(problems))
    console.print(f"wrote {args.out} ({results['settings']['seconds']:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
