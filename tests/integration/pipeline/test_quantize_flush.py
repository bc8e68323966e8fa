"""The quantize stage flushes each new file to disk in the background, and records it only once flushed.

Real llama.cpp on the demo model; os.fsync, the manifest's save and the quantizer call are wrapped
(the real ones run) to see in which order, and on which thread, things happened.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import pytest
from support.common import CONVERTED_NAME, converted_smollm2, copy_build, recipe_variant

from publisher import pipeline
from publisher.manifest import Manifest, load_manifest, sha256_file
from publisher.recipe import load_recipe
from publisher.runtimes import llama_cpp
from publisher.stages import context

TYPES = ["Q4_0", "Q8_0"]


@pytest.mark.slow
def test_each_quant_is_flushed_off_the_main_thread_before_the_manifest_claims_it(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    workdir = tmp_path / "work"
    build_dir = copy_build(converted_smollm2(tmp_path_factory), workdir)
    recipe = load_recipe(recipe_variant(tmp_path / "recipes", CONVERTED_NAME, {"quantize.types": TYPES}))
    events: list[tuple[str, str, str]] = []  # (what, file name, thread name)
    real_fsync, real_save, real_quantize = os.fsync, context.save_manifest, llama_cpp.quantize

    def fsync(fd: int) -> None:
        name = Path(os.readlink(f"/proc/self/fd/{fd}")).name
        events.append(("fsync-start", name, threading.current_thread().name))
        real_fsync(fd)
        events.append(("fsync", name, threading.current_thread().name))

    def save(folder: Path, manifest: Manifest) -> None:
        real_save(folder, manifest)
        claimed = [p for key, s in manifest.stages.items() if key.startswith("quantize/") for p in s.outputs]
        events.extend(("claimed", name, threading.current_thread().name) for name in claimed)

    def quantize(reference: Path, out: Path, *args: Any, **kwargs: Any) -> llama_cpp.QuantizeResult:
        result = real_quantize(reference, out, *args, **kwargs)
        events.append(("quantized", out.name, threading.current_thread().name))
        return result

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(context, "save_manifest", save)
    monkeypatch.setattr(llama_cpp, "quantize", quantize)
    result = pipeline.execute(recipe, workdir, stages=["quantize"])
    monkeypatch.undo()
    assert [s.status for s in result.stages if s.name == "quantize"] == ["ran"]

    manifest = load_manifest(build_dir)
    assert manifest is not None and list(manifest.artifacts) == TYPES
    files = [manifest.artifacts[t].path for t in TYPES]
    for quant_type, name in zip(TYPES, files, strict=True):
        assert sha256_file(build_dir / name) == manifest.artifacts[quant_type].sha256
        flushed = [i for i, e in enumerate(events) if e[:2] == ("fsync", name)]
        claimed = [i for i, e in enumerate(events) if e[:2] == ("claimed", name)]
        assert flushed and claimed, f"{name}: flushed {flushed}, claimed {claimed}"
        assert flushed[0] < claimed[0], f"{name} was recorded before its bytes were flushed"
        assert all(events[i][2] != "MainThread" for i in flushed), f"{name} was flushed on the main thread"
    # Nothing flushed a quant's temporary file: the rename does not wait for the disk.
    assert not [e for e in events if e[0] == "fsync" and e[1].endswith(".partial") and ".gguf." in e[1]]
    # Made largest first, whatever the recipe's order: the last file's flush and hash are the ones
    # nothing overlaps, so they should be the smallest.
    made = [e[1] for e in events if e[0] == "quantized"]
    assert [next(t for t in TYPES if f".{t}." in name) for name in made] == ["Q8_0", "Q4_0"]
    # The first file's flush began while the second type was being made, not after.
    first_flush = next(i for i, e in enumerate(events) if e[0] == "fsync-start" and ".Q8_0." in e[1])
    second_made = next(i for i, e in enumerate(events) if e[0] == "quantized" and ".Q4_0." in e[1])
    assert first_flush < second_made
