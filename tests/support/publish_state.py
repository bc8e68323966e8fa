"""Projects with a stand-in build, and what a target holds, for the publishing guarantee tests."""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from publisher.manifest import load_manifest, sha256_file
from publisher.targets.base import parse_lfs_pointer
from support.fakebuild import make_build, write_recipe
from support.hubserver import HubServer

TOKEN = "hf_GuaranteesToken0123456789"
REPO_ID = "tester/Tiny-GGUF"
GITATTRIBUTES = ".gitattributes"
TARGETS = ["local", "hf"]


def project(tmp_path: Path, kind: str, **recipe: Any) -> Path:
    """recipes/tiny.yaml (Q8_0 on branch q8) publishing to ``kind``, built under build/."""
    recipe.setdefault("branches", [{"name": "q8", "types": ["Q8_0"]}])
    path = write_recipe(tmp_path / "recipes", target=kind, **recipe)
    make_build(path, tmp_path / "build")
    return tmp_path


def edit_recipe(folder: Path, change: Callable[[dict[str, Any]], None]) -> None:
    path = folder / "recipes" / "tiny.yaml"
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def error_line(done: subprocess.CompletedProcess[str]) -> str:
    """The one error line a refused command ends with (progress lines may come before it)."""
    assert done.returncode == 1, done.stdout + done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and done.stderr.rstrip().endswith(errors[0]), done.stderr
    assert "Traceback" not in done.stderr
    return errors[0].removeprefix("error: ")


def published(folder: Path, kind: str, hub: HubServer | None) -> dict[str, dict[str, str]]:
    """Every branch of the repo: path -> sha256 of the bytes it serves (LFS files resolved and re-hashed)."""
    if kind == "hf":
        assert hub is not None
        if REPO_ID not in hub.repos:
            return {}
        return {
            branch: {path: hashlib.sha256(hub.file_bytes(REPO_ID, branch, path)).hexdigest() for path in files}
            for branch in hub.repos[REPO_ID].branches
            for files in [hub.tree(REPO_ID, branch)]
        }
    repo = folder / "hub" / REPO_ID
    if not repo.exists():
        return {}
    git = ["git", "-C", str(repo)]
    state: dict[str, dict[str, str]] = {}
    for branch in subprocess.check_output([*git, "for-each-ref", "--format=%(refname:short)"], text=True).split():
        state[branch] = {}
        for path in subprocess.check_output([*git, "ls-tree", "-r", "--name-only", branch], text=True).split():
            data = subprocess.check_output([*git, "show", f"{branch}:{path}"])
            pointer = parse_lfs_pointer(data)
            if pointer is not None:
                obj = repo / ".git" / "lfs" / "objects" / pointer[0][:2] / pointer[0][2:4] / pointer[0]
                data = obj.read_bytes() if obj.is_file() else b"(object missing)"
            state[branch][path] = hashlib.sha256(data).hexdigest()
    return state


def expected_files(folder: Path, *types: str, card: bool = True) -> dict[str, str]:
    """What a branch should hold: the tested sha256 of these types' files, the card, .gitattributes."""
    build_dir = folder / "build" / "tiny"
    manifest = load_manifest(build_dir)
    assert manifest is not None
    files = {Path(manifest.artifacts[t].path).name: manifest.artifacts[t].sha256 for t in types}
    if card:
        files["README.md"] = sha256_file(build_dir / "README.md")
    return files


def without_gitattributes(state: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
    return {branch: {p: s for p, s in files.items() if p != GITATTRIBUTES} for branch, files in state.items()}
