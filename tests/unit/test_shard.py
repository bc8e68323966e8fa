"""Splitting oversize GGUFs into llama.cpp-style shards, and publishing them as one card entry."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gguf import GGUFReader, GGUFWriter
from support.fakebuild import make_build, record_smoke_settings, write_recipe

from publisher import targets
from publisher.errors import PublishError
from publisher.manifest import load_manifest, save_manifest, sha256_file
from publisher.pipeline import execute
from publisher.publish import PublishPlan, PublishResult, publish
from publisher.publishable import expected_gguf_metadata
from publisher.recipe import load_recipe
from publisher.shard import plan_groups, shard_name, split_gguf
from publisher.targets.local import LocalTarget

SHAPE = (32, 64)  # float32: 8192 bytes per tensor


def tiny_gguf(path: Path, tensors: int = 6, metadata: dict[str, Any] | None = None) -> Path:
    """A small but real GGUF: metadata of several kinds (``metadata`` too) and float32 tensors of known values."""
    writer = GGUFWriter(path, "llama")
    extra = dict(metadata or {})
    writer.add_name(extra.pop("general.name", "tiny"))
    for key, item in extra.items():
        if isinstance(item, str):
            writer.add_string(key, item)
        elif isinstance(item, int):
            writer.add_uint32(key, item)
        else:
            writer.add_array(key, item)
    writer.add_context_length(64)
    writer.add_token_list(["<s>", "</s>", "hello", "world"])
    writer.add_token_scores([0.0, 0.0, -1.5, -2.5])
    writer.add_chat_template("{{ messages }}")
    for i in range(tensors):
        writer.add_tensor(f"blk.{i}.weight", np.full(SHAPE, i + 0.5, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def value(reader: GGUFReader, key: str) -> Any:
    field = reader.get_field(key)
    assert field is not None, key
    return field.contents()


def test_shard_names_follow_llama_cpp() -> None:
    assert shard_name("m.Q4_K_M.gguf", 1, 3) == "m.Q4_K_M-00001-of-00003.gguf"
    assert shard_name("m.Q4_K_M.gguf", 12, 12) == "m.Q4_K_M-00012-of-00012.gguf"


def test_split_writes_loadable_layout_under_the_limit(tmp_path: Path) -> None:
    source = tiny_gguf(tmp_path / "m.Q8_0.gguf")
    limit = source.stat().st_size // 2

    parts = split_gguf(source, tmp_path / "out", limit)

    count = len(parts)
    assert count >= 2
    assert [p.name for p in parts] == [shard_name(source.name, i + 1, count) for i in range(count)]
    assert all(p.stat().st_size <= limit for p in parts)
    assert not list((tmp_path / "out").glob(".*"))  # no leftovers of the work folder
    original = GGUFReader(source)
    readers = [GGUFReader(p) for p in parts]
    for index, reader in enumerate(readers):
        assert value(reader, "split.no") == index
        assert value(reader, "split.count") == count
        assert value(reader, "split.tensors.count") == len(original.tensors)
    # The first shard carries all metadata; the others only the split keys.
    first = {name for name in readers[0].fields if not name.startswith("GGUF.")}
    assert {n for n in original.fields if not n.startswith("GGUF.")} <= first
    assert value(readers[0], "tokenizer.ggml.tokens") == ["<s>", "</s>", "hello", "world"]
    assert value(readers[0], "tokenizer.chat_template") == "{{ messages }}"
    assert {n for n in readers[1].fields if not n.startswith("GGUF.")} == {
        "split.no",
        "split.count",
        "split.tensors.count",
    }
    # Every tensor, in order, with its data intact.
    tensors = [t for r in readers for t in r.tensors]
    assert [t.name for t in tensors] == [t.name for t in original.tensors]
    for got, want in zip(tensors, original.tensors, strict=True):
        assert np.array_equal(np.asarray(got.data), np.asarray(want.data))


def test_a_tensor_larger_than_a_shard_is_refused(tmp_path: Path) -> None:
    source = tiny_gguf(tmp_path / "m.gguf")
    with pytest.raises(PublishError, match="tensor blk.0.weight is 8192 bytes"):
        plan_groups(source, 9000)
    with pytest.raises(PublishError, match="metadata alone exceeds"):
        split_gguf(source, tmp_path / "out", 500)


def _real_gguf_build(tmp_path: Path) -> tuple[Path, Path]:
    recipe_path = write_recipe(tmp_path / "recipes", types=("Q8_0",))
    _, build_dir = make_build(recipe_path, tmp_path / "build")
    path = build_dir / "tiny.Q8_0.gguf"
    path.unlink()
    tiny_gguf(path, tensors=8, metadata=expected_gguf_metadata(load_recipe(recipe_path)))
    manifest = load_manifest(build_dir)
    assert manifest is not None
    artifact = manifest.artifacts["Q8_0"]
    artifact.size_bytes, artifact.sha256 = path.stat().st_size, sha256_file(path)
    record_smoke_settings(load_recipe(recipe_path), build_dir, manifest)  # as if tested after the change
    save_manifest(build_dir, manifest)
    return recipe_path, build_dir


def test_the_build_splits_oversize_files_for_its_target_and_publishing_sends_the_shards(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recipe_path, build_dir = _real_gguf_build(tmp_path)
    recipe = load_recipe(recipe_path)
    limit = 30_000
    target = LocalTarget(tmp_path / "hub")
    # the local target's registered limit, lowered so that an 8-tensor file needs shards
    monkeypatch.setitem(targets.MAX_FILE_BYTES, "local", limit)

    with pytest.raises(PublishError, match="did not split it to that size; run `publisher build` again"):
        publish(recipe, workdir=tmp_path / "build", target=target, dry_run=True)

    result = execute(recipe, tmp_path / "build", stages=["shard", "card"])
    assert [(r.name, r.status) for r in result.stages if r.status != "not selected"] == [
        ("shard", "ran"),
        ("card", "ran"),
    ]
    manifest = load_manifest(build_dir)
    assert manifest is not None
    shards = manifest.artifacts["Q8_0"].shards
    names = [Path(s).name for s in shards]
    assert len(names) > 1 and all((build_dir / s).stat().st_size <= limit for s in shards)
    assert names[0] == shard_name("tiny.Q8_0.gguf", 1, len(names))
    card = (build_dir / "README.md").read_text()
    assert f"({len(names)} parts)" in card  # the card stage after it lists one entry with its parts
    assert manifest.card["sha256"] == sha256_file(build_dir / "README.md")
    again = execute(recipe, tmp_path / "build", stages=["shard", "card"])
    assert [(r.name, r.status) for r in again.stages if r.status != "not selected"] == [
        ("shard", "skipped"),
        ("card", "skipped"),
    ]

    plan = publish(recipe, workdir=tmp_path / "build", target=target, dry_run=True)
    assert isinstance(plan, PublishPlan)
    assert [f.file.path_in_repo for f in plan.branches[0].files if f.quant_type] == names
    before = sorted(p.relative_to(build_dir) for p in build_dir.rglob("*"))
    published = publish(recipe, workdir=tmp_path / "build", target=target)

    assert isinstance(published, PublishResult)
    assert sorted(p.relative_to(build_dir) for p in build_dir.rglob("*")) == before  # publishing wrote no shard
    repo = tmp_path / "hub" / "tester" / "Tiny-GGUF"
    tree = subprocess.check_output(["git", "-C", str(repo), "ls-tree", "--name-only", "main"], text=True).split()
    assert sorted(tree) == sorted([".gitattributes", "README.md", *names])
    assert "tiny.Q8_0.gguf" not in tree

    again_published = publish(recipe, workdir=tmp_path / "build", target=LocalTarget(tmp_path / "hub"))
    assert isinstance(again_published, PublishResult)
    assert [b.commit for b in again_published.branches] == [None]
