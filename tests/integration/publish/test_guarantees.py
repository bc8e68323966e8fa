"""What is published is what was tested, on both targets, as `publisher publish` reports it.

Each case runs the real command (in-process) against the local target and the loopback Hub
(tests/support/hubserver.py, driven by the real huggingface_hub client) and checks the one line it
prints, its exit status, and exactly what the target holds afterwards.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from support.hubserver import HubServer
from support.publish_state import (
    REPO_ID,
    TARGETS,
    TOKEN,
    error_line,
    expected_files,
    project,
    published,
    without_gitattributes,
)

from publisher.manifest import sha256_file

pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")

Cli = Callable[..., subprocess.CompletedProcess[str]]


# -- 1. bytes are hashed when they are stored or sent -------------------------------------------


@pytest.mark.parametrize("kind", TARGETS)
def test_a_file_changed_without_a_new_mtime_is_refused_by_name(
    tmp_path: Path, kind: str, cli: Cli, request: pytest.FixtureRequest
) -> None:
    hub = request.getfixturevalue("cli_hub") if kind == "hf" else None
    folder = project(tmp_path, kind)
    assert cli("publish", "recipes/tiny.yaml", "--dry-run", cwd=folder).returncode == 0  # the hash cache is warm
    gguf = folder / "build" / "tiny" / "tiny.Q4_K_M.gguf"
    before = gguf.stat()
    data = bytearray(gguf.read_bytes())
    data[-100] ^= 0xFF  # bit rot: same size, same mtime
    gguf.write_bytes(bytes(data))
    os.utime(gguf, ns=(before.st_atime_ns, before.st_mtime_ns))

    line = error_line(cli("publish", "recipes/tiny.yaml", cwd=folder))

    assert line.startswith("build/tiny/tiny.Q4_K_M.gguf: content changed since it was tested (sha256 ")
    assert line.endswith("nothing was published from it; run `publisher build` again")
    # Branches were made before anything was stored; no commit refers to anything.
    assert without_gitattributes(published(folder, kind, hub)) == {"main": {}, "q8": {}}
    if hub is not None:
        assert hub.commits == 0 and expected_files(folder, "Q4_K_M", card=False)[gguf.name] not in hub.lfs


@pytest.mark.parametrize("kind", TARGETS)
def test_a_first_publish_holds_exactly_the_tested_bytes(
    tmp_path: Path, kind: str, cli: Cli, request: pytest.FixtureRequest
) -> None:
    hub = request.getfixturevalue("cli_hub") if kind == "hf" else None
    folder = project(tmp_path, kind)

    done = cli("publish", "recipes/tiny.yaml", cwd=folder)

    assert done.returncode == 0, done.stderr
    assert without_gitattributes(published(folder, kind, hub)) == {
        "main": expected_files(folder, "Q2_K", "Q4_K_M"),
        "q8": expected_files(folder, "Q8_0"),
    }


# -- 2. the local mirror owns its bytes and checks them ------------------------------------------


def test_a_damaged_mirror_object_is_repaired_on_the_next_publish(tmp_path: Path, cli: Cli) -> None:
    folder = project(tmp_path, "local")
    assert cli("publish", "recipes/tiny.yaml", cwd=folder).returncode == 0
    repo = folder / "hub" / REPO_ID
    heads = subprocess.check_output(["git", "-C", str(repo), "for-each-ref"], text=True)
    sha = expected_files(folder, "Q2_K", card=False)["tiny.Q2_K.gguf"]
    obj = repo / ".git" / "lfs" / "objects" / sha[:2] / sha[2:4] / sha
    obj.chmod(0o644)
    with obj.open("r+b") as handle:  # same size, other bytes
        handle.seek(1000)
        handle.write(b"\0" * 16)
    assert sha256_file(repo / "tiny.Q2_K.gguf") != sha  # the work tree shows the damage too

    done = cli("publish", "recipes/tiny.yaml", cwd=folder)

    assert done.returncode == 0, done.stderr
    assert "main: up to date, no commit; repaired 1 file in the mirror" in done.stdout
    assert "q8: up to date, no commit" in done.stdout
    assert sha256_file(obj) == sha and sha256_file(repo / "tiny.Q2_K.gguf") == sha
    assert subprocess.check_output(["git", "-C", str(repo), "for-each-ref"], text=True) == heads
    assert without_gitattributes(published(folder, "local", None))["main"] == expected_files(folder, "Q2_K", "Q4_K_M")


@pytest.mark.parametrize("hard_links", [False, True])
def test_a_build_file_changed_in_place_changes_the_mirror_only_with_hard_links(
    tmp_path: Path, cli: Cli, hard_links: bool
) -> None:
    folder = project(tmp_path, "local")
    done = cli("publish", "recipes/tiny.yaml", *(["--hard-links"] if hard_links else []), cwd=folder)
    assert done.returncode == 0, done.stderr
    gguf = folder / "build" / "tiny" / "tiny.Q2_K.gguf"
    mirrored = folder / "hub" / REPO_ID / "tiny.Q2_K.gguf"
    assert os.path.samefile(gguf, mirrored) is hard_links
    sha = sha256_file(mirrored)

    gguf.chmod(0o644)
    with gguf.open("r+b") as handle:
        handle.seek(2000)
        handle.write(b"changed in place")

    assert (sha256_file(mirrored) == sha) is not hard_links


# -- 3. a Hub that never answers -----------------------------------------------------------------


def test_a_hub_that_accepts_and_never_answers_ends_in_one_line(
    tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    from huggingface_hub import constants
    from support.hubserver import SilentServer

    folder = project(tmp_path, "hf")
    with SilentServer() as silent:
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "ENDPOINT", silent.url)
        for name, value in {
            "HF_TOKEN": TOKEN,
            "PUBLISHER_HF_ATTEMPTS": "2",
            "PUBLISHER_HF_BACKOFF": "0.01",
            "PUBLISHER_HF_READ_TIMEOUT": "0.3",
        }.items():
            monkeypatch.setenv(name, value)
        started = time.monotonic()
        line = error_line(cli("publish", "recipes/tiny.yaml", cwd=folder))
        seconds = time.monotonic() - started
        connections = silent.connections

    assert line.startswith(
        f"reading {silent.url}/{REPO_ID} failed (2 attempts): no answer from GET {silent.url}/api/models/{REPO_ID} "
        "within 0.3 s (PUBLISHER_HF_READ_TIMEOUT)"
    ), line
    assert connections == 2  # one per attempt: the timeout is retried like a dropped connection
    assert seconds < 10


# -- 4. all or nothing per release ---------------------------------------------------------------


def test_hf_a_refused_branch_creation_publishes_nothing_and_a_rerun_completes(
    tmp_path: Path, cli: Cli, cli_hub: HubServer
) -> None:
    hub = cli_hub
    folder = project(tmp_path, "hf")
    fault = hub.fail("POST", f"/api/models/{REPO_ID}/branch/q8", 403, times=float("inf"))

    line = error_line(cli("publish", "recipes/tiny.yaml", cwd=folder))

    assert line == (
        f"creating branch q8 of {hub.url}/{REPO_ID} failed: the token may not write here (HTTP 403): "
        "use a token with write access to this namespace"
    )
    assert without_gitattributes(published(folder, "hf", hub)) == {"main": {}}
    assert hub.commits == 0

    hub.faults.remove(fault)
    done = cli("publish", "recipes/tiny.yaml", cwd=folder)
    assert done.returncode == 0, done.stderr
    assert without_gitattributes(published(folder, "hf", hub)) == {
        "main": expected_files(folder, "Q2_K", "Q4_K_M"),
        "q8": expected_files(folder, "Q8_0"),
    }


def test_hf_a_branch_refused_after_main_is_reported_exactly_and_a_rerun_completes(
    tmp_path: Path, cli: Cli, cli_hub: HubServer
) -> None:
    hub = cli_hub
    folder = project(tmp_path, "hf")
    fault = hub.fail("POST", f"/api/models/{REPO_ID}/commit/q8", 403, times=float("inf"))

    line = error_line(cli("publish", "recipes/tiny.yaml", cwd=folder))

    main = hub.repos[REPO_ID].branches["main"]
    assert line == (
        f"release incomplete at {hub.url}/{REPO_ID}: published main ({main[:12]}); not published: q8 "
        f"(q8: committing to {hub.url}/{REPO_ID}@q8 failed: the token may not write here (HTTP 403): "
        "use a token with write access to this namespace); run publish again to publish the rest"
    )
    assert without_gitattributes(published(folder, "hf", hub)) == {
        "main": expected_files(folder, "Q2_K", "Q4_K_M"),
        "q8": {},
    }

    hub.faults.remove(fault)
    done = cli("publish", "recipes/tiny.yaml", cwd=folder)
    assert done.returncode == 0, done.stderr
    assert "main: up to date, no commit" in done.stdout and "q8: committed" in done.stdout
    assert hub.repos[REPO_ID].branches["main"] == main
    assert without_gitattributes(published(folder, "hf", hub))["q8"] == expected_files(folder, "Q8_0")


def test_local_a_refused_branch_creation_publishes_nothing_and_a_rerun_completes(tmp_path: Path, cli: Cli) -> None:
    from publisher.targets.local import LocalTarget

    folder = project(tmp_path, "local")
    target = LocalTarget(folder / "hub")
    target.create_repo(REPO_ID, private=False)
    lock = folder / "hub" / REPO_ID / ".git" / "refs" / "heads" / "q8.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.write_text("")  # a git process that died holding the branch's lock

    line = error_line(cli("publish", "recipes/tiny.yaml", cwd=folder))

    assert line.startswith(f"{folder / 'hub' / REPO_ID}: git update-ref failed: ")
    assert "q8.lock" in line
    assert without_gitattributes(published(folder, "local", None)) == {"main": {}}

    lock.unlink()
    done = cli("publish", "recipes/tiny.yaml", cwd=folder)
    assert done.returncode == 0, done.stderr
    assert without_gitattributes(published(folder, "local", None)) == {
        "main": expected_files(folder, "Q2_K", "Q4_K_M"),
        "q8": expected_files(folder, "Q8_0"),
    }


def test_local_a_branch_that_fails_after_main_is_reported_exactly_and_a_rerun_completes(tmp_path: Path) -> None:
    from support.fakebuild import write_card

    from publisher.errors import PublishError
    from publisher.publish import execute_plan, plan_publish, publish
    from publisher.recipe import load_recipe
    from publisher.targets.local import LocalTarget

    folder = project(tmp_path, "local")
    recipe = load_recipe(folder / "recipes" / "tiny.yaml")
    publish(recipe, workdir=folder / "build", target=LocalTarget(folder / "hub"))
    write_card(folder / "build" / "tiny", "second card")
    target = LocalTarget(folder / "hub")
    plan = plan_publish(recipe, target, workdir=folder / "build")
    repo = folder / "hub" / REPO_ID
    # Someone else commits to q8 between planning and publishing.
    git = ["git", "-C", str(repo), "-c", "user.name=x", "-c", "user.email=x@x"]
    other = subprocess.check_output([*git, "commit-tree", "q8^{tree}", "-p", "q8", "-m", "other"], text=True).strip()
    subprocess.run([*git, "update-ref", "refs/heads/q8", other], check=True)

    with pytest.raises(PublishError) as caught:
        execute_plan(plan, target)

    main = subprocess.check_output([*git, "rev-parse", "main"], text=True).strip()
    assert str(caught.value) == (
        f"release incomplete at {repo}: published main ({main[:12]}); not published: q8 "
        f"(q8: {repo}: branch q8 moved while publishing (now {other[:12]}); run publish again); "
        "run publish again to publish the rest"
    )
    assert without_gitattributes(published(folder, "local", None))["main"] == expected_files(folder, "Q2_K", "Q4_K_M")
    assert "second card" not in subprocess.check_output([*git, "show", "q8:README.md"], text=True)

    publish(recipe, workdir=folder / "build", target=LocalTarget(folder / "hub"))
    assert without_gitattributes(published(folder, "local", None))["q8"] == expected_files(folder, "Q8_0")
    assert subprocess.check_output([*git, "rev-parse", "main"], text=True).strip() == main


def test_hard_links_are_refused_for_the_hub(tmp_path: Path, cli: Cli) -> None:
    folder = project(tmp_path, "hf")
    line = error_line(cli("publish", "recipes/tiny.yaml", "--hard-links", cwd=folder))
    assert line == "--hard-links is for the local target, not 'hf'"
    assert not (folder / "hub").exists()
