"""The real demo: `publisher build ... --publish` ends with GGUFs + README.md on main in hub/, and a
second run changes nothing. Also: a real SmolLM2 quant split into shards loads in llama.cpp."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from support.paths import REPO_ROOT

from publisher.manifest import load_manifest, sha256_file

RECIPE = REPO_ROOT / "recipes" / "smollm2-135m-instruct.yaml"
MODEL_READY = REPO_ROOT / ".cache" / "models" / "SmolLM2-135M-Instruct" / ".complete"
REPO = Path("publisher-demo") / "SmolLM2-135M-Instruct-GGUF"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.e2e,
    pytest.mark.skipif(not MODEL_READY.exists(), reason="demo model not materialized (run make setup)"),
]


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, COLUMNS="200")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", "publisher.cli", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=1800
    )


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout


@pytest.fixture
def demo(published_demo: Path) -> Path:
    """The demo built and published once per session (tests/conftest.py)."""
    return published_demo


def test_demo_ends_on_main_in_the_local_hub(demo: Path) -> None:
    repo = demo / "hub" / REPO
    manifest = load_manifest(demo / "build" / "smollm2-135m-instruct")
    assert manifest is not None
    ggufs = {Path(a.path).name for a in manifest.passed_artifacts()}
    assert ggufs == {f"SmolLM2-135M-Instruct.{t}.gguf" for t in ("Q2_K", "Q4_K_M", "Q8_0")}
    assert set(git(repo, "ls-tree", "--name-only", "main").split()) == {".gitattributes", "README.md", *ggufs}
    assert git(repo, "status", "--porcelain") == ""
    build_dir = demo / "build" / "smollm2-135m-instruct"
    assert (repo / "README.md").read_bytes() == (build_dir / "README.md").read_bytes()
    for name in ggufs:
        assert not os.path.samefile(repo / name, build_dir / name)  # the mirror owns its bytes
        assert sha256_file(repo / name) == sha256_file(build_dir / name)


def test_a_second_run_changes_nothing(demo: Path) -> None:
    repo = demo / "hub" / REPO
    refs = git(repo, "for-each-ref")

    again = cli("build", str(RECIPE), "--workdir", "build", "--publish", cwd=demo)

    assert again.returncode == 0, again.stdout + again.stderr
    assert "main: up to date, no commit" in again.stdout
    assert git(repo, "for-each-ref") == refs


def test_a_real_quant_split_into_shards_loads_and_answers_alike(smollm2_ggufs: dict[str, Path], tmp_path: Path) -> None:
    llama_cpp = pytest.importorskip("llama_cpp")
    from publisher.shard import split_gguf

    whole = smollm2_ggufs["Q8_0"]
    parts = split_gguf(whole, tmp_path, whole.stat().st_size // 2)
    assert len(parts) >= 2 and parts[0].name == f"smollm2.Q8_0-00001-of-{len(parts):05d}.gguf"

    def answer(path: Path) -> str:
        model = llama_cpp.Llama(str(path), n_ctx=256, n_threads=2, seed=0, verbose=False)
        text = model("The capital of France is", max_tokens=8, temperature=0.0)["choices"][0]["text"]
        model.close()
        return str(text)

    assert answer(parts[0]) == answer(whole)  # llama.cpp found and loaded every shard from the first
