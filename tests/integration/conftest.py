"""Fixtures the command-line tests share."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support.hubserver import HubServer
from support.publish_state import TOKEN


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


@pytest.fixture
def cli_hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[HubServer]:
    """A loopback Hub that `publisher publish --target hf` in this process talks to."""
    from huggingface_hub import constants

    with HubServer(token=TOKEN) as server:
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
        monkeypatch.setattr(constants, "ENDPOINT", server.url)
        for name, value in {
            "HF_HUB_OFFLINE": "0",
            "HF_HUB_DISABLE_XET": "1",
            "HF_TOKEN": TOKEN,
            "PUBLISHER_HF_ATTEMPTS": "2",
            "PUBLISHER_HF_BACKOFF": "0.01",
        }.items():
            monkeypatch.setenv(name, value)
        yield server
