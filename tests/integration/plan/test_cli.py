"""`publisher plan` and `publisher build --dry-run` from the command line: the table, refusals, nothing written."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from support.paths import REPO_ROOT

from publisher import plan

Cli = Callable[..., subprocess.CompletedProcess[str]]
CONFIG_14B = str(REPO_ROOT / "tests" / "fixtures" / "causallm-14b")


def _machine(monkeypatch: pytest.MonkeyPatch, memory: int, free: int) -> None:
    monkeypatch.setattr(plan.Machine, "here", classmethod(lambda cls, workdir: cls(2, memory, free)))


def test_plan_prints_each_stage_and_the_totals(cli: Cli, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _machine(monkeypatch, 256 * 10**9, 10**12)
    done = cli(
        "plan", "recipes/causallm-14b.yaml", "--source-dir", CONFIG_14B, "--workdir", str(tmp_path), cwd=REPO_ROOT
    )
    assert done.returncode == 0, done.stderr
    rows = {line.split("│")[1].strip(): line for line in done.stdout.splitlines() if line.count("│") > 4}
    assert {"fetch", "convert", "quantize", "smoke", "card", "total"} <= set(rows)
    assert "28.34 GB" in rows["convert"] and "52.78 GB" in rows["quantize"] and "81.13 GB" in rows["total"]
    assert "14.17B parameters" in done.stdout
    assert not list(tmp_path.iterdir())


def test_plan_refuses_a_machine_too_small(cli: Cli, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _machine(monkeypatch, 16 * 10**9, 40 * 10**9)
    done = cli(
        "plan", "recipes/causallm-14b.yaml", "--source-dir", CONFIG_14B, "--workdir", str(tmp_path), cwd=REPO_ROOT
    )
    assert done.returncode == 1
    errors = done.stderr.splitlines()
    assert [line[:33] for line in errors] == ["error: plan: the build writes 81.", "error: plan: stage smoke needs ab"]
    assert "Traceback" not in done.stderr
    fewer = cli(
        "plan", "recipes/causallm-14b.yaml", "--source-dir", CONFIG_14B, "--workdir", str(tmp_path),
        "--stages", "fetch,convert,quantize", "--only", "Q4_0", cwd=REPO_ROOT,
    )  # fmt: skip
    assert fewer.returncode == 0, fewer.stderr


def test_build_dry_run_shows_the_plan_and_builds_nothing(
    cli: Cli, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _machine(monkeypatch, 256 * 10**9, 10**12)
    done = cli(
        "build", "recipes/smollm2-135m-instruct-imatrix.yaml", "--dry-run", "--workdir", str(tmp_path / "w"),
        cwd=REPO_ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "imatrix" in done.stdout and "SmolLM2-135M-Instruct.imatrix.gguf" in done.stdout
    assert not (tmp_path / "w").exists()


def test_plan_without_a_config_is_one_line(cli: Cli, tmp_path: Path) -> None:
    done = cli("plan", "recipes/causallm-14b.yaml", "--workdir", str(tmp_path), cwd=REPO_ROOT)
    assert done.returncode == 1
    assert done.stderr.startswith("error: plan: cannot tell the shape of CausalLM/14B") and done.stderr.count("\n") == 1
