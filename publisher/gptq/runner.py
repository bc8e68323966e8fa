"""publisher's side of the GPTQ worker: find the environment, run one request, read its one-line answer.

The worker (``worker.py`` beside this file) runs under ``.venv-gptq/bin/python`` (``make setup-gptq``),
or the interpreter ``PUBLISHER_GPTQ_PYTHON`` names. Request and result are JSON files in a
temporary folder inside the build; the worker's own output goes to a log in ``logs/``.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from publisher.errors import QuantizationError
from publisher.manifest import guard_write

WORKER = Path(__file__).with_name("worker.py")
REQUIREMENTS = Path(__file__).with_name("requirements.txt")
ENV_DIR = ".venv-gptq"
PYTHON_VAR = "PUBLISHER_GPTQ_PYTHON"
SETUP_HINT = "run `make setup-gptq` (about 1.5 GB, a few minutes)"


def worker_python() -> Path:
    """The interpreter of the GPTQ environment."""
    if named := os.environ.get(PYTHON_VAR):
        return Path(named)
    return Path(__file__).resolve().parents[2] / ENV_DIR / "bin" / "python"


def missing_reason() -> str | None:
    """Why the GPTQ environment cannot run now, or ``None`` when it can."""
    python = worker_python()
    if not python.exists():
        return f"the GPTQ environment {python.parent.parent} is missing; {SETUP_HINT}"
    return None


def environment_id() -> str:
    """What identifies the environment for fingerprints: its pinned requirements."""
    return REQUIREMENTS.read_text(encoding="utf-8")


def worker_env() -> dict[str, str]:
    """The environment the worker runs in (the bench's direct gptqmodel script gets the same)."""
    env = os.environ | {"TORCHDYNAMO_DISABLE": "1", "GPTQMODEL_CPU_WORKERS": "2", "PYTHONNOUSERSITE": "1"}
    env.pop("PYTHONPATH", None)  # the worker must not see publisher's packages
    return env


def _last_line(log_path: Path) -> str:
    """The log's last non-blank line: where gptqmodel ends the process from a thread, the exception."""
    lines = [line.strip() for line in log_path.read_text(encoding="utf-8", errors="replace").splitlines()]
    return next((line for line in reversed(lines) if line), "")[:200]


def run_worker(request: dict[str, Any], work_dir: Path, log_path: Path, timeout: float | None = None) -> dict[str, Any]:
    """Run one worker request; its result, or :class:`QuantizationError` with one line naming the log."""
    what = f"{request.get('method', 'gptq')} {request['op']}"
    if reason := missing_reason():
        raise QuantizationError(f"{what}: {reason}")
    guard_write(work_dir).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".gptq-request.", dir=work_dir) as tmp:
        req_path, result_path = Path(tmp) / "request.json", Path(tmp) / "result.json"
        req_path.write_text(json.dumps(request), encoding="utf-8")
        env = worker_env()
        with guard_write(log_path).open("w", encoding="utf-8") as log:
            try:
                done = subprocess.run(
                    [str(worker_python()), str(WORKER), str(req_path), str(result_path)],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    cwd=tmp,  # gptqmodel writes a logs/ folder into its working directory
                    timeout=timeout,
                    check=False,
                )
            except subprocess.TimeoutExpired:
                raise QuantizationError(f"{what}: no answer in {timeout:.0f}s; see {log_path}") from None
        if not result_path.is_file():
            # gptqmodel ends the process (os._exit) when one of its threads raises, before any result is written.
            raise QuantizationError(
                f"{what}: the worker ended with status {done.returncode} and no result "
                f"({_last_line(log_path) or 'no output'}); see {log_path}"
            )
        result: dict[str, Any] = json.loads(result_path.read_text(encoding="utf-8"))
    if not result.get("ok"):
        raise QuantizationError(f"{what}: {result.get('error', 'failed')}; see {log_path}")
    return result
