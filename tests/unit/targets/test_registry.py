"""A target added from outside the package: registered by name, planned against, published to, idempotent.

The proof that adding a target touches one place: the test defines an in-memory target here,
registers it, and ``publish`` with ``target="memory"`` uses it like the built-in ones.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.fakebuild import make_build, write_recipe

from publisher.errors import PublishError
from publisher.publish import PublishResult, publish
from publisher.recipe import load_recipe
from publisher.targets import FACTORIES, TargetOptions, make_target, register_target
from publisher.targets.base import LocalFile, RemoteFile, RepoState, Target, check_sha256


class MemoryTarget(Target):
    """Repos held in a dict: branch -> commits, each commit a full file table."""

    name = "memory"

    def __init__(self) -> None:
        self.repos: dict[str, dict[str, list[dict[str, RemoteFile]]]] = {}
        self.stored: dict[str, bytes] = {}

    def location(self, repo_id: str) -> str:
        return f"memory:{repo_id}"

    def repo_state(self, repo_id: str) -> RepoState:
        branches = self.repos.get(repo_id)
        if branches is None:
            return RepoState(exists=False)
        return RepoState(exists=True, private=False, branches={b: f"{b}@{len(c)}" for b, c in branches.items()})

    def remote_files(self, repo_id: str, branch: str, paths: list[str]) -> dict[str, RemoteFile]:
        head = self.repos.get(repo_id, {}).get(branch, [{}])[-1]
        return {p: head[p] for p in paths if p in head}

    def create_repo(self, repo_id: str, *, private: bool) -> None:
        self.repos.setdefault(repo_id, {"main": [{}]})

    def create_branch(self, repo_id: str, branch: str) -> None:
        self.repos[repo_id].setdefault(branch, [{}])

    def store_files(self, repo_id: str, branch: str, files: list[LocalFile]) -> None:
        for file in files:
            data = file.source.read_bytes()
            check_sha256(file, hashlib.sha256(data).hexdigest())
            self.stored[file.sha256] = data

    def commit(
        self,
        repo_id: str,
        branch: str,
        files: list[LocalFile],
        *,
        title: str,
        description: str,
        parent: str | None,
    ) -> str:
        commits = self.repos[repo_id][branch]
        head = dict(commits[-1])
        changed = False
        for file in files:
            remote = RemoteFile(file.path_in_repo, file.size, file.git_oid(), file.sha256 if file.lfs else None)
            if head.get(file.path_in_repo) != remote:
                head[file.path_in_repo] = remote
                changed = True
        if changed:
            commits.append(head)
        return f"{branch}@{len(commits)}"


@pytest.fixture
def memory() -> Iterator[MemoryTarget]:
    target = MemoryTarget()
    register_target("memory")(lambda options: target)
    try:
        yield target
    finally:
        FACTORIES.pop("memory", None)


def test_a_registered_target_is_published_to_by_name_and_a_second_publish_does_nothing(
    memory: MemoryTarget, tmp_path: Path
) -> None:
    recipe_path = write_recipe(tmp_path / "recipes")
    recipe, build_dir = make_build(recipe_path, tmp_path / "build")

    first = publish(load_recipe(recipe_path), workdir=tmp_path / "build", target="memory")
    assert isinstance(first, PublishResult)
    main = memory.repos["tester/Tiny-GGUF"]["main"]
    assert len(main) == 2, "one commit on top of the empty initial state"
    expected = {recipe.artifact_filename(t) for t in recipe.quantize.types} | {"README.md"}
    assert expected <= set(main[-1])
    for name in expected - {"README.md"}:
        assert memory.stored[main[-1][name].sha256 or ""] == (build_dir / name).read_bytes()

    again = publish(load_recipe(recipe_path), workdir=tmp_path / "build", target="memory")
    assert isinstance(again, PublishResult)
    assert len(memory.repos["tester/Tiny-GGUF"]["main"]) == 2, "nothing changed, so no commit"


def test_an_unknown_target_lists_the_registered_ones(memory: MemoryTarget) -> None:
    with pytest.raises(PublishError, match=r"unknown publish target 's3': use one of local, hf, memory"):
        make_target("s3")
    assert make_target("memory") is memory
    assert FACTORIES["memory"](TargetOptions()) is memory
