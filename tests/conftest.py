"""Shared test setup: no test may touch the real Hugging Face cache, token or network.

huggingface_hub reads its environment once, at import, so the variables are set here before any
test module can import it, and the per-test fixture also patches the already-read constants.
Subprocesses started by tests inherit the isolated environment.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings
from support.paths import REPO_ROOT

_SESSION_HF_HOME = Path(tempfile.mkdtemp(prefix="publisher-tests-hf-"))
atexit.register(shutil.rmtree, _SESSION_HF_HOME, True)
os.environ["HF_HOME"] = str(_SESSION_HF_HOME)
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ.pop("HF_TOKEN", None)
os.environ.pop("HUGGING_FACE_HUB_TOKEN", None)

# A shell starts a background job (`make test &`) with SIGINT ignored, and an ignored signal stays
# ignored across exec: the Ctrl-C tests' child processes would never see their interrupt. A handler
# is reset to the default on exec instead, so installing Python's own here gives every child one.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# The machine running the tests is shared and slow at times: no per-example deadline.
settings.register_profile("publisher", deadline=None)
settings.load_profile("publisher")


# Modules whose builds take minutes go first, so that under `make test`'s two xdist workers
# (--dist loadscope hands out modules in collection order) the longest start at once, not last.
SLOWEST_FIRST = (
    "integration/gptq/test_demo.py",
    "integration/imatrix/test_smollm2.py",
    "integration/pipeline/test_e2e.py",
    "integration/cards/test_demo.py",
    "integration/gate/test_variants.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        path = item.path.as_posix()
        return next((i for i, tail in enumerate(SLOWEST_FIRST) if path.endswith(tail)), len(SLOWEST_FIRST))

    items.sort(key=rank)


@pytest.fixture(autouse=True)
def isolated_hf_env(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Give every test its own empty HF_HOME, no token, offline mode and no telemetry."""
    hf_home = tmp_path_factory.mktemp("hf_home")
    monkeypatch.setenv("HF_HOME", str(hf_home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:
        patched = {
            "HF_HOME": str(hf_home),
            "HF_HUB_CACHE": str(hf_home / "hub"),
            "HUGGINGFACE_HUB_CACHE": str(hf_home / "hub"),
            "HF_ASSETS_CACHE": str(hf_home / "assets"),
            "HF_XET_CACHE": str(hf_home / "xet"),
            "HF_TOKEN_PATH": str(hf_home / "token"),
            "HF_STORED_TOKENS_PATH": str(hf_home / "stored_tokens"),
            "HF_HUB_OFFLINE": True,
            "HF_HUB_DISABLE_TELEMETRY": True,
        }
        for name, value in patched.items():
            if hasattr(constants, name):
                monkeypatch.setattr(constants, name, value)
    yield hf_home


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The checkout's root folder (recipes/ and recipe.schema.json live here)."""
    return REPO_ROOT


@pytest.fixture
def hub_online(monkeypatch: pytest.MonkeyPatch) -> None:
    """Lift offline mode for a test that talks to a local Hub-like server on 127.0.0.1 (never the real Hub)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)


@pytest.fixture(scope="session")
def smollm2_source() -> Path:
    """The real SmolLM2-135M-Instruct folder from `make setup` (the test is skipped without it)."""
    from support.smollm2_models import require_smollm2

    return require_smollm2()


@pytest.fixture(scope="session")
def smollm2_ggufs(smollm2_source: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """SmolLM2 converted to F16 and quantized to Q8_0 and Q2_K by llama.cpp, once per test run."""
    from support.common import made_once
    from support.smollm2_models import convert, quantize

    def make(folder: Path) -> None:
        f16 = convert(smollm2_source, folder / "smollm2.F16.gguf")
        for q in ("Q8_0", "Q2_K"):
            quantize(f16, folder / f"smollm2.{q}.gguf", q)

    folder = made_once(tmp_path_factory, "smollm2-gguf", make)
    return {q: folder / f"smollm2.{q}.gguf" for q in ("F16", "Q8_0", "Q2_K")}


@pytest.fixture(scope="session")
def published_demo(smollm2_source: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A scratch project where `publisher build RECIPE --publish` ran once, as `make demo` does.

    Holds build/<build name>/ and hub/; tests that need the real demo build share it (across xdist workers too).
    """
    import subprocess

    from support.common import made_once

    def build(work: Path) -> None:
        env = dict(os.environ, COLUMNS="200")
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        recipe = REPO_ROOT / "recipes" / "smollm2-135m-instruct.yaml"
        done = subprocess.run(
            [sys.executable, "-m", "publisher.cli", "build", str(recipe), "--workdir", "build", "--publish"],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=1800,
        )
        assert done.returncode == 0, done.stdout + done.stderr

    return made_once(tmp_path_factory, "demo", build)
