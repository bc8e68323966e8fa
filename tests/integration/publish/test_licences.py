"""Licence files travel with the release: fetched into the build, published beside the GGUFs on every branch."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from support.fakebuild import make_build, record_smoke_settings, write_recipe
from support.golden import fetched_source
from support.hubserver import HubServer

from publisher import cards
from publisher.manifest import load_manifest
from publisher.publish import PublishResult, publish
from publisher.recipe import load_recipe
from publisher.stages import BuildContext, get_stage, load_stages
from publisher.targets.hf import HfTarget
from publisher.targets.local import LocalTarget

TOKEN = "hf_LicenceCanary0123456789abcdefXYZ"
BRANCHES = [{"name": "q8", "types": ["Q8_0"], "description": "8-bit"}]
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout


def _release(tmp_path: Path, target: str = "local") -> Path:
    """A fake build of a recipe with an `other` licence whose source folder carries LICENSE and NOTICE."""
    recipe_path = write_recipe(tmp_path / "recipes", branches=BRANCHES, target=target)
    data = yaml.safe_load(recipe_path.read_text(encoding="utf-8"))
    data["model"].update(
        license="other", license_name="Example Licence", license_link="LICENSE", license_files=["LICENSE"]
    )
    recipe_path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    fetched_source(tmp_path / "recipes", "licence-other")  # recipes/source, where the recipe's source.path points
    recipe, build_dir = make_build(recipe_path, tmp_path / "build")
    load_stages()
    ctx = BuildContext(recipe=recipe, build_dir=build_dir, manifest=load_manifest(build_dir))
    get_stage("fetch").run(ctx)
    record_smoke_settings(recipe, build_dir, ctx.manifest)  # smoke runs after fetch in a real build
    get_stage("card").run(ctx)
    ctx.save()
    text = (build_dir / "README.md").read_text(encoding="utf-8")
    assert cards.check_card(text, recipe, ctx.manifest, build_dir) == []
    return recipe_path


def test_licence_files_land_beside_the_ggufs_in_the_local_mirror(tmp_path: Path) -> None:
    recipe_path = _release(tmp_path)
    result = publish(load_recipe(recipe_path), workdir=tmp_path / "build", target=LocalTarget(tmp_path / "hub"))
    assert isinstance(result, PublishResult)
    repo = tmp_path / "hub" / "tester" / "Tiny-GGUF"
    source = tmp_path / "recipes" / "source"
    assert set(_git(repo, "ls-tree", "--name-only", "main").split()) == {
        ".gitattributes",
        "README.md",
        "LICENSE",
        "NOTICE",
        "tiny.Q2_K.gguf",
        "tiny.Q4_K_M.gguf",
    }
    assert {"LICENSE", "NOTICE", "tiny.Q8_0.gguf"} <= set(_git(repo, "ls-tree", "--name-only", "q8").split())
    for branch in ("main", "q8"):
        for name in ("LICENSE", "NOTICE"):
            assert _git(repo, "show", f"{branch}:{name}") == (source / name).read_text(encoding="utf-8")
    card = _git(repo, "show", "main:README.md")
    assert "[LICENSE](https://huggingface.co/tester/Tiny-GGUF/blob/main/LICENSE)" in card

    again = publish(load_recipe(recipe_path), workdir=tmp_path / "build", target=LocalTarget(tmp_path / "hub"))
    assert isinstance(again, PublishResult)
    assert [b.commit for b in again.branches] == [None, None]


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[HubServer]:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    with HubServer(token=TOKEN) as server:
        yield server


def test_licence_files_are_committed_to_the_hub_on_every_branch(tmp_path: Path, hub: HubServer) -> None:
    recipe_path = _release(tmp_path, target="hf")
    target = HfTarget(endpoint=hub.url, attempts=2, backoff_s=0.01)
    result = publish(load_recipe(recipe_path), workdir=tmp_path / "build", target=target)
    assert isinstance(result, PublishResult)
    licence = (tmp_path / "recipes" / "source" / "LICENSE").read_bytes()
    for branch in ("main", "q8"):
        files = target.remote_files("tester/Tiny-GGUF", branch, ["LICENSE", "NOTICE"])
        assert set(files) == {"LICENSE", "NOTICE"}, branch
        assert files["LICENSE"].sha256 is None  # a plain git file, not an LFS object
    assert hub.file_bytes("tester/Tiny-GGUF", "main", "LICENSE") == licence
