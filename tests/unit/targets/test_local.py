"""The local target: real git repos under --hub-dir, GGUF bytes kept once, idempotent re-publish."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from support.fakebuild import make_build, write_card, write_recipe

from publisher.errors import PublishError
from publisher.manifest import load_manifest
from publisher.publish import PublishPlan, PublishResult, publish
from publisher.targets.base import git_blob_oid, lfs_pointer, parse_lfs_pointer
from publisher.targets.local import LocalTarget

BRANCHES = [{"name": "q8", "types": ["Q8_0"], "description": "8-bit"}]


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout


def do_publish(recipe_path: Path, work: Path, **kwargs: object) -> tuple[PublishResult, LocalTarget]:
    from publisher.recipe import load_recipe

    target = LocalTarget(work / "hub")
    result = publish(load_recipe(recipe_path), workdir=work / "build", target=target, **kwargs)  # type: ignore[arg-type]
    assert isinstance(result, PublishResult)
    return result, target


@pytest.fixture
def built(tmp_path: Path) -> Path:
    recipe_path = write_recipe(tmp_path / "recipes", branches=BRANCHES)
    make_build(recipe_path, tmp_path / "build")
    return recipe_path


def test_pointer_format_round_trips_and_blob_ids_match_git(tmp_path: Path) -> None:
    pointer = lfs_pointer("ab" * 32, 1234)
    assert pointer.startswith(b"version https://git-lfs.github.com/spec/v1\noid sha256:abab")
    assert parse_lfs_pointer(pointer) == ("ab" * 32, 1234)
    assert parse_lfs_pointer(b"---\nlicense: mit\n---\n") is None
    sample = tmp_path / "x"
    sample.write_bytes(pointer)
    assert git_blob_oid(pointer) == subprocess.check_output(["git", "hash-object", str(sample)], text=True).strip()


def test_first_publish_makes_a_git_repo_with_branches_and_one_copy_of_the_bytes(built: Path, tmp_path: Path) -> None:
    result, target = do_publish(built, tmp_path)
    repo = tmp_path / "hub" / "tester" / "Tiny-GGUF"
    build_dir = tmp_path / "build" / "tiny"

    assert [b.name for b in result.branches] == ["main", "q8"]
    assert all(b.commit for b in result.branches)
    assert set(git(repo, "ls-tree", "--name-only", "main").split()) == {
        ".gitattributes",
        "README.md",
        "tiny.Q2_K.gguf",
        "tiny.Q4_K_M.gguf",
    }
    assert set(git(repo, "ls-tree", "--name-only", "q8").split()) == {".gitattributes", "README.md", "tiny.Q8_0.gguf"}
    # The branch starts from the initial commit, so it carries none of main's GGUFs.
    assert git(repo, "log", "--format=%s", "q8").splitlines()[-1] == "initial commit"
    assert "Publish tiny (recipe" in git(repo, "log", "-1", "--format=%s", "main")
    assert git(repo, "status", "--porcelain") == ""

    # git holds a pointer; the bytes are the mirror's own (a copy, or a reflink), shown in the work tree.
    pointer = git(repo, "show", "main:tiny.Q2_K.gguf").encode()
    manifest = load_manifest(build_dir)
    assert manifest is not None
    q2 = manifest.artifacts["Q2_K"]
    assert parse_lfs_pointer(pointer) == (q2.sha256, q2.size_bytes)
    obj = repo / ".git" / "lfs" / "objects" / q2.sha256[:2] / q2.sha256[2:4] / q2.sha256
    assert not os.path.samefile(obj, build_dir / q2.path)
    assert os.path.samefile(repo / "tiny.Q2_K.gguf", obj)
    assert obj.read_bytes() == (build_dir / q2.path).read_bytes()
    assert target.bytes_linked == 0
    assert target.bytes_copied + target.bytes_cloned == sum(a.size_bytes for a in manifest.artifacts.values())
    # No GGUF went into git's own object store: every blob there is small.
    sizes = [int(x.split()[2]) for x in git(repo, "cat-file", "--batch-all-objects", "--batch-check").splitlines()]
    assert max(sizes) < 4096


def test_republish_with_nothing_changed_makes_no_commit(built: Path, tmp_path: Path) -> None:
    do_publish(built, tmp_path)
    repo = tmp_path / "hub" / "tester" / "Tiny-GGUF"
    heads = git(repo, "for-each-ref", "--format=%(refname) %(objectname)")

    result, target = do_publish(built, tmp_path)

    assert [b.commit for b in result.branches] == [None, None]
    assert all(f.present for b in result.plan.branches for f in b.files)
    assert git(repo, "for-each-ref", "--format=%(refname) %(objectname)") == heads
    assert target.bytes_copied == target.bytes_linked == target.bytes_cloned == 0


def test_card_only_change_commits_readme_alone_on_every_branch(built: Path, tmp_path: Path) -> None:
    do_publish(built, tmp_path)
    write_card(tmp_path / "build" / "tiny", "A new template wrote this card.")

    result, _ = do_publish(built, tmp_path)

    repo = tmp_path / "hub" / "tester" / "Tiny-GGUF"
    for branch in ("main", "q8"):
        assert git(repo, "diff", "--name-only", f"{branch}~1", branch).split() == ["README.md"]
        assert "A new template wrote this card." in git(repo, "show", f"{branch}:README.md")
    assert [b.files for b in result.branches] == [1, 1]
    assert "A new template" in (repo / "README.md").read_text()
    assert git(repo, "status", "--porcelain") == ""


def test_dry_run_plans_without_touching_anything(built: Path, tmp_path: Path) -> None:
    from publisher.recipe import load_recipe

    plan = publish(load_recipe(built), workdir=tmp_path / "build", target=LocalTarget(tmp_path / "hub"), dry_run=True)

    assert isinstance(plan, PublishPlan)
    assert not (tmp_path / "hub").exists()
    assert not plan.repo_exists
    main = plan.branches[0]
    assert [f.file.path_in_repo for f in main.uploads] == ["README.md", "tiny.Q2_K.gguf", "tiny.Q4_K_M.gguf"]
    assert plan.title.startswith("Publish tiny (recipe ")


def test_private_flag_is_recorded_and_a_visibility_change_is_reported(tmp_path: Path) -> None:
    recipe_path = write_recipe(tmp_path / "recipes", private=True)
    make_build(recipe_path, tmp_path / "build")
    do_publish(recipe_path, tmp_path)
    target = LocalTarget(tmp_path / "hub")
    assert target.repo_state("tester/Tiny-GGUF").private is True

    write_recipe(tmp_path / "recipes", private=False)
    from publisher.recipe import load_recipe

    plan = publish(load_recipe(recipe_path), workdir=tmp_path / "build", target=target, dry_run=True)
    assert isinstance(plan, PublishPlan)
    assert any("exists and is private" in note for note in plan.notes)


def test_a_lost_object_is_put_back_without_a_commit(built: Path, tmp_path: Path) -> None:
    do_publish(built, tmp_path)
    repo = tmp_path / "hub" / "tester" / "Tiny-GGUF"
    objects = sorted((repo / ".git" / "lfs" / "objects").rglob("*"))
    lost = next(p for p in objects if p.is_file())
    lost.unlink()
    head = git(repo, "rev-parse", "main")

    do_publish(built, tmp_path)

    assert lost.is_file()
    assert git(repo, "rev-parse", "main") == head


def test_files_on_another_filesystem_are_copied_once_even_when_hard_links_are_asked_for(tmp_path: Path) -> None:
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("needs /dev/shm on a filesystem other than the test folder's")
    work = Path(os.path.realpath(shm)) / f"publisher-test-{os.getpid()}-{tmp_path.name}"
    try:
        recipe_path = write_recipe(tmp_path / "recipes")
        make_build(recipe_path, work)
        from publisher.recipe import load_recipe

        target = LocalTarget(tmp_path / "hub", hard_links=True)  # not possible across filesystems: a copy
        publish(load_recipe(recipe_path), workdir=work, target=target)
        manifest = load_manifest(work / "tiny")
        assert manifest is not None
        assert target.bytes_copied == sum(a.size_bytes for a in manifest.artifacts.values())
        assert target.bytes_linked == target.bytes_cloned == 0
        again = LocalTarget(tmp_path / "hub")
        publish(load_recipe(recipe_path), workdir=work, target=again)
        assert again.bytes_copied == again.bytes_linked == 0
    finally:
        subprocess.run(["rm", "-rf", str(work)], check=False)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("no-manifest", "no build manifest; run `publisher build"),
        ("failed", "refusing to publish, 1 artifact(s) failed their checks: Q2_K (answer did not contain Paris)"),
        ("none-passed", "no artifact has passed its smoke tests"),
        ("edited-gguf", "content changed since it was tested"),
        ("edited-card", "README.md: edited after the build rendered it"),
        ("no-card", "README.md: no model card"),
    ],
)
def test_unpublishable_builds_are_refused_with_the_fix(tmp_path: Path, change: str, message: str) -> None:
    recipe_path = write_recipe(tmp_path / "recipes")
    status = {"Q2_K": "failed"} if change == "failed" else None
    if change == "none-passed":
        status = dict.fromkeys(("Q2_K", "Q4_K_M", "Q8_0"), "built")
    _, build_dir = make_build(recipe_path, tmp_path / "build", status=status)
    if change == "no-manifest":
        (build_dir / "manifest.json").unlink()
    elif change == "edited-gguf":
        path = build_dir / "tiny.Q4_K_M.gguf"
        data = bytearray(path.read_bytes())
        data[100] ^= 0xFF
        path.write_bytes(bytes(data))
    elif change == "edited-card":
        with (build_dir / "README.md").open("a") as handle:
            handle.write("hand edit\n")
    elif change == "no-card":
        (build_dir / "README.md").unlink()

    with pytest.raises(PublishError) as caught:
        do_publish(recipe_path, tmp_path)

    assert message in str(caught.value)
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "hub").exists()


def test_untested_artifacts_block_the_release_instead_of_dropping_out(tmp_path: Path) -> None:
    recipe_path = write_recipe(tmp_path / "recipes")
    make_build(recipe_path, tmp_path / "build", status={"Q8_0": "built"})
    with pytest.raises(
        PublishError, match=r"refusing to publish, Q8_0 in quantize.types has not been built and tested"
    ):
        do_publish(recipe_path, tmp_path)
    assert not (tmp_path / "hub").exists()


def test_a_branch_that_moved_meanwhile_is_not_overwritten(built: Path, tmp_path: Path) -> None:
    from publisher.publish import execute_plan, plan_publish
    from publisher.recipe import load_recipe

    do_publish(built, tmp_path)
    write_card(tmp_path / "build" / "tiny", "changed")
    target = LocalTarget(tmp_path / "hub")
    plan = plan_publish(load_recipe(built), target, workdir=tmp_path / "build")
    repo = tmp_path / "hub" / "tester" / "Tiny-GGUF"
    # Someone else commits to main between planning and publishing.
    subprocess.run(
        [
            "git",
            "-C",
            str(repo),
            "-c",
            "user.name=x",
            "-c",
            "user.email=x@x",
            "commit",
            "--allow-empty",
            "-qm",
            "other",
        ],
        check=True,
    )
    moved = git(repo, "rev-parse", "main")

    with pytest.raises(PublishError, match="moved while publishing"):
        execute_plan(plan, target)
    assert git(repo, "rev-parse", "main") == moved


def test_a_file_gone_between_planning_and_storing_is_one_line_and_nothing_is_committed(
    built: Path, tmp_path: Path
) -> None:
    from publisher.publish import execute_plan, plan_publish
    from publisher.recipe import load_recipe

    target = LocalTarget(tmp_path / "hub")
    plan = plan_publish(load_recipe(built), target, workdir=tmp_path / "build")
    gone = tmp_path / "build" / "tiny" / "tiny.Q4_K_M.gguf"
    gone.unlink()

    with pytest.raises(PublishError) as caught:
        execute_plan(plan, target)

    assert str(caught.value).endswith(f"could not store {gone}: No such file or directory")
    repo = tmp_path / "hub" / "tester" / "Tiny-GGUF"
    assert git(repo, "log", "--format=%s", "main").splitlines() == ["initial commit"]
    assert not list((repo / ".git" / "lfs" / "objects").rglob("*.partial"))
