"""Fixtures the command-line tests share."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest


@pytest.fixture
def cli(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Callable[..., subprocess.CompletedProcess[str]]:
    """`publisher.cli.main` in this process (fast), with the exit code, stdout and stderr of a run."""
    from publisher import cli as cli_module

    monkeypatch.setattr(cli_module.console, "_width", 200)
    monkeypatch.setattr(cli_module.err_console, "_width", 200)

    def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
        monkeypatch.chdir(cwd)
        monkeypatch.setattr(sys, "argv", ["publisher", *args])
        capsys.readouterr()
        try:
            cli_module.main()
            code = 0
        except SystemExit as exit_:
            code = int(exit_.code or 0)
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(list(args), code, out, err)

    return run
