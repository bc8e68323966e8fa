"""fetch from a Hub repo, through the real huggingface_hub client, against a loopback Hub (support/hubserver.py)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.common import REPO_ROOT, recipe_variant, tiny_source
from support.hubserver import HubServer, lfs_pointer

from publisher.manifest import load_manifest, sha256_file

SOURCE_REPO = "tester/tiny-source"
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")


class TreeHub(HubServer):
    """The loopback Hub plus the tree listing ``snapshot_download`` reads to know what to fetch."""

    def handle(self, method: str, raw_path: str, headers: Any, body: bytes) -> tuple[int, Any, dict[str, str]]:
        path = raw_path.partition("?")[0]
        match = re.fullmatch(r"/api/models/(?P<repo>[^/]+/[^/]+)/tree/(?P<rev>[^/]+)", path)
        if method != "GET" or match is None:
            return super().handle(method, raw_path, headers, body)
        with self.lock:
            repo = self.repos.get(match["repo"])
            commit = repo.head(match["rev"]) if repo else None
            if commit is None:
                return 404, {"error": "Revision not found"}, {"X-Error-Code": "RevisionNotFound"}
            entries = []
            for name, stored in sorted(commit.files.items()):
                entry: dict[str, Any] = {"type": "file", "path": name, "size": stored.size, "oid": stored.git_oid}
                if stored.sha256:
                    pointer = len(lfs_pointer(stored.sha256, stored.size))
                    entry["lfs"] = {"oid": stored.sha256, "size": stored.size, "pointerSize": pointer}
                entries.append(entry)
            return 200, entries, {}


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[HubServer]:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    with TreeHub() as server:
        yield server


def _upload_source(hub: HubServer, folder: Path) -> str:
    from huggingface_hub import HfApi

    api = HfApi(endpoint=hub.url, token=False)
    api.create_repo(SOURCE_REPO)
    info = api.upload_folder(repo_id=SOURCE_REPO, folder_path=folder)
    return str(info.oid)


def _build(
    recipe: Path, workdir: Path, hub: HubServer, tmp_path: Path, **extra_env: str
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        **extra_env,
        "HF_ENDPOINT": hub.url,
        "HF_HUB_OFFLINE": "0",
        "HF_HUB_DISABLE_XET": "1",
        "HF_HOME": str(tmp_path / "hf_home"),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
    }
    cmd = [sys.executable, "-m", "publisher.cli", "build", str(recipe), "--workdir", str(workdir), "--stages", "fetch"]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)


def test_fetch_downloads_only_what_conversion_needs_and_records_the_commit(hub: HubServer, tmp_path: Path) -> None:
    source = tiny_source(tmp_path / "upload")
    (source / "README.md").write_text("---\nlicense: mit\n---\n# tiny\n", encoding="utf-8")
    (source / "pytorch_model.bin").write_bytes(b"weights in a second format, not needed when safetensors exist")
    commit = _upload_source(hub, source)
    recipe = recipe_variant(tmp_path / "recipes", "from-hub", {"source.path": None, "source.repo": SOURCE_REPO})

    proc = _build(recipe, tmp_path / "work", hub, tmp_path)
    assert proc.returncode == 0, proc.stderr
    build_dir = tmp_path / "work" / "from-hub"
    fetched = sorted(p.name for p in (build_dir / "source").iterdir() if p.is_file())
    assert fetched == ["README.md", "config.json", "model.safetensors", "tokenizer_config.json"]
    manifest = load_manifest(build_dir)
    assert manifest is not None and manifest.source is not None
    assert (manifest.source.repo, manifest.source.revision, manifest.source.commit) == (SOURCE_REPO, "main", commit)
    assert manifest.source.parameters == 16 * 8 + 8
    for name, digest in manifest.source.files.items():
        assert sha256_file(source / name) == digest


def test_a_missing_repo_or_revision_is_one_line(hub: HubServer, tmp_path: Path) -> None:
    _upload_source(hub, tiny_source(tmp_path / "upload"))
    missing = recipe_variant(tmp_path / "recipes", "missing", {"source.path": None, "source.repo": "tester/nope"})
    proc = _build(missing, tmp_path / "work", hub, tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "error: source.repo tester/nope@main: repo not found (or private); fix source.repo or log in"
    ]
    branch = recipe_variant(
        tmp_path / "recipes", "branch", {"source.path": None, "source.repo": SOURCE_REPO, "source.revision": "v9"}
    )
    proc = _build(branch, tmp_path / "work", hub, tmp_path)
    assert proc.returncode == 1
    assert "no such branch, tag or commit; fix source.revision" in proc.stderr


def test_fetch_downloads_the_licence_files_and_records_them_for_publishing(hub: HubServer, tmp_path: Path) -> None:
    source = tiny_source(tmp_path / "upload")
    (source / "LICENSE").write_text("Tiny licence.\n", encoding="utf-8")
    (source / "USE_POLICY.md").write_text("Use it kindly.\n", encoding="utf-8")
    (source / "CONTRIBUTING.md").write_text("Not a licence.\n", encoding="utf-8")
    _upload_source(hub, source)
    recipe = recipe_variant(tmp_path / "recipes", "licensed", {"source.path": None, "source.repo": SOURCE_REPO})

    proc = _build(recipe, tmp_path / "work", hub, tmp_path)
    assert proc.returncode == 0, proc.stderr
    build_dir = tmp_path / "work" / "licensed"
    fetched = {p.name for p in (build_dir / "source").iterdir() if p.is_file()}
    assert {"LICENSE", "USE_POLICY.md"} <= fetched and "CONTRIBUTING.md" not in fetched
    manifest = load_manifest(build_dir)
    assert manifest is not None and manifest.source is not None and manifest.source.facts is not None
    recorded = {f.name: f for f in manifest.source.facts.licence_files}
    assert sorted(recorded) == ["LICENSE", "USE_POLICY.md"]
    for name, record in recorded.items():
        assert record.path == f"licences/{name}"
        assert sha256_file(build_dir / record.path) == sha256_file(source / name) == record.sha256


def test_fetch_retries_what_the_hub_fails_for_a_moment_and_reports_the_rest_in_one_redacted_line(
    hub: HubServer, tmp_path: Path
) -> None:
    _upload_source(hub, tiny_source(tmp_path / "upload"))
    recipe = recipe_variant(tmp_path / "recipes", "from-hub", {"source.path": None, "source.repo": SOURCE_REPO})
    info = rf"/api/models/{SOURCE_REPO}/revision/main"

    hub.fail("GET", info, 503, times=2)
    proc = _build(recipe, tmp_path / "work", hub, tmp_path, PUBLISHER_HF_BACKOFF="0")
    assert proc.returncode == 0, proc.stderr
    assert sum(1 for method, path, _ in hub.requests if method == "GET" and path.startswith(info)) == 3

    secret = "hf_fetchsecret123"
    hub.fail("GET", info, 503, times=10, echo_auth=True)
    env = {"PUBLISHER_HF_BACKOFF": "0", "PUBLISHER_HF_ATTEMPTS": "2", "HF_TOKEN": secret}
    proc = _build(recipe, tmp_path / "again", hub, tmp_path, **env)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"error: source.repo {SOURCE_REPO}@main (2 attempts): HTTP 503: injected failure 503 for Bearer ***; "
        "check the network; files already downloaded are not fetched again when you re-run"
    ]
    assert secret not in proc.stderr + proc.stdout
