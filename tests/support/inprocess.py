"""Run the `publisher` console entry point in this process (fast, and monkeypatches apply)."""

from __future__ import annotations

import contextlib
import io
import sys

from publisher import cli


def run_cli(*args: str) -> tuple[int, str]:
    """``publisher ARGS...`` through ``cli.main``, as the console script runs it: exit status and stderr."""
    out, err = io.StringIO(), io.StringIO()
    argv = sys.argv
    sys.argv = ["publisher", *args]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            cli.main()
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    finally:
        sys.argv = argv
    return code, err.getvalue()
