"""The hf target through the real huggingface_hub client, against a loopback Hub (support/hubserver.py)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.fakebuild import make_build, write_card, write_recipe
from support.hubserver import HubServer
from support.paths import REPO_ROOT

from publisher.errors import PublishError
from publisher.manifest import load_manifest, sha256_file
from publisher.publish import PublishPlan, PublishResult, publish
from publisher.recipe import load_recipe
from publisher.targets.hf import HfTarget

TOKEN = "hf_LeakCanary0123456789abcdefXYZ"
REPO_ID = "tester/Tiny-GGUF"
# huggingface_hub streams LFS uploads with httpx2's data= argument, which httpx2 marks deprecated.
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[HubServer]:
    """A loopback Hub that wants ``TOKEN``; the client is put online, on plain LFS, with the token in HF_TOKEN."""
    from huggingface_hub import constants

    # huggingface_hub read these at import; the test process needs them changed for every call.
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)  # the client picks Xet itself when hf_xet is installed
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    with HubServer(token=TOKEN) as server:
        yield server


def target(hub: HubServer, attempts: int = 3) -> HfTarget:
    return HfTarget(endpoint=hub.url, attempts=attempts, backoff_s=0.01)


def run(recipe_path: Path, work: Path, hub: HubServer, **kwargs: object) -> PublishResult:
    chosen = kwargs.pop("target", None) or target(hub)
    result = publish(load_recipe(recipe_path), workdir=work / "build", target=chosen, **kwargs)  # type: ignore[arg-type]
    assert isinstance(result, PublishResult)
    return result


@pytest.fixture
def built(tmp_path: Path) -> Path:
    recipe_path = write_recipe(tmp_path / "recipes", branches=[{"name": "q8", "types": ["Q8_0"]}])
    make_build(recipe_path, tmp_path / "build")
    return recipe_path


def test_first_publish_creates_repo_branches_and_lfs_files(built: Path, tmp_path: Path, hub: HubServer) -> None:
    build_dir = tmp_path / "build" / "tiny"
    manifest = load_manifest(build_dir)
    assert manifest is not None
    total = sum(a.size_bytes for a in manifest.artifacts.values())

    with hub.counting() as sent:
        result = run(built, tmp_path, hub)

    assert sent["commits"] == 2 and sent["lfs_bytes"] == total
    assert hub.repos[REPO_ID].private is False
    assert set(hub.tree(REPO_ID, "main")) == {".gitattributes", "README.md", "tiny.Q2_K.gguf", "tiny.Q4_K_M.gguf"}
    assert set(hub.tree(REPO_ID, "q8")) == {".gitattributes", "README.md", "tiny.Q8_0.gguf"}
    for quant_type, branch in (("Q2_K", "main"), ("Q4_K_M", "main"), ("Q8_0", "q8")):
        stored = hub.tree(REPO_ID, branch)[f"tiny.{quant_type}.gguf"]
        assert stored.sha256 == manifest.artifacts[quant_type].sha256  # an LFS file, not a git blob
    for branch in ("main", "q8"):
        assert hub.file_bytes(REPO_ID, branch, "README.md") == (build_dir / "README.md").read_bytes()
    # One commit per branch, on top of the initial commit, naming the recipe and the build.
    head = hub.repos[REPO_ID].head("main")
    assert head is not None
    assert [c.title for c in hub.repos[REPO_ID].history("main")][1:] == ["initial commit"]
    assert manifest.recipe_sha256[:12] in head.title
    assert sha256_file(build_dir / "manifest.json")[:12] in head.title
    assert f"Recipe: tiny.yaml (sha256 {manifest.recipe_sha256})" in head.message
    assert [b.commit for b in result.branches] == [head.oid, hub.repos[REPO_ID].branches["q8"]]
    # The real client took the LFS path: batch, PUT to storage, verify; nothing about Xet.
    paths = [p for _, p, _ in hub.requests]
    assert any(p.endswith("/info/lfs/objects/batch") for p in paths)
    assert sum(p.startswith("/lfs-storage/") for p in paths) == 3
    assert not any("xet" in p for p in paths)


def test_published_files_download_through_the_client(built: Path, tmp_path: Path, hub: HubServer) -> None:
    from huggingface_hub import hf_hub_download

    run(built, tmp_path, hub)
    got = hf_hub_download(
        REPO_ID, "tiny.Q8_0.gguf", revision="q8", endpoint=hub.url, token=TOKEN, cache_dir=tmp_path / "cache"
    )
    assert Path(got).read_bytes() == (tmp_path / "build" / "tiny" / "tiny.Q8_0.gguf").read_bytes()


def test_republish_unchanged_sends_no_bytes_and_makes_no_commit(built: Path, tmp_path: Path, hub: HubServer) -> None:
    run(built, tmp_path, hub)
    heads = dict(hub.repos[REPO_ID].branches)
    start = len(hub.requests)

    with hub.counting() as sent:
        result = run(built, tmp_path, hub)

    assert sent == {"lfs_bytes": 0, "commits": 0, "requests": sent["requests"]}
    assert [b.commit for b in result.branches] == [None, None]
    assert hub.repos[REPO_ID].branches == heads
    methods = {(m, p.rsplit("/", 2)[-2]) for m, p, _ in hub.requests[start:]}
    assert not any(m in ("PUT",) or part in ("commit", "preupload", "batch") for m, part in methods)


def test_card_only_change_commits_readme_alone(built: Path, tmp_path: Path, hub: HubServer) -> None:
    run(built, tmp_path, hub)
    write_card(tmp_path / "build" / "tiny", "Rendered by a newer template.")

    with hub.counting() as sent:
        run(built, tmp_path, hub)

    assert sent["commits"] == 2 and sent["lfs_bytes"] == 0
    for branch in ("main", "q8"):
        head = hub.repos[REPO_ID].head(branch)
        assert head is not None and head.parent is not None
        before = hub.repos[REPO_ID].commits[head.parent].files
        changed = {p for p in set(head.files) | set(before) if head.files.get(p) != before.get(p)}
        assert changed == {"README.md"}
        assert b"Rendered by a newer template." in hub.file_bytes(REPO_ID, branch, "README.md")
        assert "- README.md (" in head.message and ".gguf" not in head.message


def test_an_upload_failing_midway_commits_nothing_and_a_rerun_sends_only_the_rest(
    built: Path, tmp_path: Path, hub: HubServer
) -> None:
    manifest = load_manifest(tmp_path / "build" / "tiny")
    assert manifest is not None
    sizes = {t: a.size_bytes for t, a in manifest.artifacts.items()}
    broken = manifest.artifacts["Q4_K_M"].sha256
    # Storage takes the whole body of this object, then fails (507 is not retried by the client itself).
    fault = hub.fail("PUT", f"/lfs-storage/{broken}", 507, times=float("inf"))

    with pytest.raises(PublishError) as caught:
        run(built, tmp_path, hub, target=target(hub, attempts=2))

    message = str(caught.value)
    assert "HTTP 507" in message and "not sent again when you re-run" in message
    assert hub.commits == 0  # the branch is as it was: only the initial commit
    assert [c.title for c in hub.repos[REPO_ID].history("main")] == ["initial commit"]
    assert manifest.artifacts["Q2_K"].sha256 in hub.lfs and broken not in hub.lfs

    hub.faults.remove(fault)
    with hub.counting() as sent:
        run(built, tmp_path, hub)

    assert sent["lfs_bytes"] == sizes["Q4_K_M"] + sizes["Q8_0"]  # Q2_K, already stored, is not sent again
    assert sent["commits"] == 2
    assert set(hub.tree(REPO_ID, "main")) >= {"tiny.Q2_K.gguf", "tiny.Q4_K_M.gguf", "README.md"}


def test_a_transient_commit_failure_is_retried_without_resending(tmp_path: Path, hub: HubServer) -> None:
    recipe_path = write_recipe(tmp_path / "recipes")
    make_build(recipe_path, tmp_path / "build")
    hub.fail("POST", f"/api/models/{REPO_ID}/commit/main", 503, times=1)

    with hub.counting() as sent:
        run(recipe_path, tmp_path, hub)

    commits = [s for m, p, s in hub.requests if p.endswith("/commit/main")]
    assert commits == [503, 200]
    assert sent["commits"] == 1
    manifest = load_manifest(tmp_path / "build" / "tiny")
    assert manifest is not None
    assert sent["lfs_bytes"] == sum(a.size_bytes for a in manifest.artifacts.values())


def test_a_client_error_is_not_retried(tmp_path: Path, hub: HubServer) -> None:
    recipe_path = write_recipe(tmp_path / "recipes")
    make_build(recipe_path, tmp_path / "build")
    hub.fail("POST", f"/api/models/{REPO_ID}/commit/main", 403, times=float("inf"))

    with pytest.raises(PublishError, match="HTTP 403"):
        run(recipe_path, tmp_path, hub)

    assert [s for m, p, s in hub.requests if p.endswith("/commit/main")] == [403]


def test_private_repo_is_created_private_and_hidden_from_anonymous_reads(tmp_path: Path, hub: HubServer) -> None:
    from huggingface_hub import HfApi
    from huggingface_hub.errors import RepositoryNotFoundError

    recipe_path = write_recipe(tmp_path / "recipes", private=True)
    make_build(recipe_path, tmp_path / "build")
    result = run(recipe_path, tmp_path, hub)

    assert hub.repos[REPO_ID].private is True
    assert HfApi(endpoint=hub.url, token=TOKEN).model_info(REPO_ID).private is True
    with pytest.raises(RepositoryNotFoundError):
        HfApi(endpoint=hub.url, token=False).model_info(REPO_ID)
    assert result.branches[0].commit == hub.repos[REPO_ID].branches["main"]


def test_dry_run_lists_skips_and_changes_nothing(built: Path, tmp_path: Path, hub: HubServer) -> None:
    run(built, tmp_path, hub)
    write_card(tmp_path / "build" / "tiny", "New text.")
    heads = dict(hub.repos[REPO_ID].branches)

    plan = publish(load_recipe(built), workdir=tmp_path / "build", target=target(hub), dry_run=True)

    assert isinstance(plan, PublishPlan)
    assert hub.repos[REPO_ID].branches == heads
    main = plan.branches[0]
    assert [f.file.path_in_repo for f in main.uploads] == ["README.md"]
    assert {f.file.path_in_repo for f in main.files if f.present} == {"tiny.Q2_K.gguf", "tiny.Q4_K_M.gguf"}


def test_no_token_fails_before_any_write(
    built: Path, tmp_path: Path, hub: HubServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(PublishError, match="no Hugging Face token: set HF_TOKEN"):
        run(built, tmp_path, hub)
    assert REPO_ID not in hub.repos


# -- the token never shows -----------------------------------------------------------------------


def _cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "publisher.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def _everything_written(*folders: Path) -> bytes:
    return b"".join(p.read_bytes() for folder in folders for p in sorted(folder.rglob("*")) if p.is_file())


def test_token_never_appears_in_output_logs_manifest_or_errors(built: Path, tmp_path: Path, hub: HubServer) -> None:
    env = dict(os.environ)
    env.update(
        {
            "HF_ENDPOINT": hub.url,
            "HF_TOKEN": TOKEN,
            "HF_HUB_OFFLINE": "0",
            "HF_HUB_DISABLE_XET": "1",
            "HF_HOME": str(tmp_path / "hf_home"),
            "PUBLISHER_HF_ATTEMPTS": "2",
            "PUBLISHER_HF_BACKOFF": "0.01",
            "COLUMNS": "200",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
        }
    )
    base = ["publish", str(built), "--workdir", str(tmp_path / "build"), "--target", "hf"]
    outputs: list[str] = []

    ok = _cli(base, env, tmp_path)
    outputs += [ok.stdout, ok.stderr]
    assert ok.returncode == 0, ok.stderr
    assert "main: committed" in ok.stdout

    write_card(tmp_path / "build" / "tiny", "second version")
    hub.token = "hf_someoneElsesToken"  # the Hub now refuses our token: 401
    refused = _cli(["--debug", *base], env, tmp_path)
    outputs += [refused.stdout, refused.stderr]
    assert refused.returncode != 0
    assert "HTTP 401" in refused.stderr

    hub.token = TOKEN
    hub.fail("POST", f"/api/models/{REPO_ID}/commit/main", 500, times=float("inf"), echo_auth=True)
    failed = _cli(base, env, tmp_path)
    outputs += [failed.stdout, failed.stderr]
    assert failed.returncode == 1
    assert "HTTP 500" in failed.stderr and "Bearer ***" in failed.stderr  # the server echoed it; we redacted it
    assert "Traceback" not in failed.stderr

    for text in outputs:
        assert TOKEN not in text
    assert TOKEN.encode() not in _everything_written(tmp_path / "build", tmp_path / "hf_home")


def test_token_never_appears_in_library_logs_or_exceptions(
    built: Path, tmp_path: Path, hub: HubServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    run(built, tmp_path, hub)
    write_card(tmp_path / "build" / "tiny", "again")
    hub.fail("POST", f"/api/models/{REPO_ID}/commit/main", 500, times=float("inf"), echo_auth=True)

    with pytest.raises(PublishError) as caught:
        run(built, tmp_path, hub, target=target(hub, attempts=1))

    texts = [str(caught.value), repr(caught.value), caplog.text]
    assert "Bearer ***" in str(caught.value)
    for text in texts:
        assert TOKEN not in text
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
