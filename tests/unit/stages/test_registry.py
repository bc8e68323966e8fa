"""A stage added from outside the package: registered, ordered by what it declares, run, skipped when done.

This is the proof that adding a stage touches one place: the test defines it here and the
pipeline, which knows no stage by name, runs it where its ``after`` puts it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.common import recipe_variant, tiny_source

from publisher import pipeline
from publisher.errors import PublisherError
from publisher.manifest import fingerprint, write_text_atomic
from publisher.recipe import load_recipe
from publisher.stages import STAGES, BuildContext, Stage, ordered_names, register


class WordCountStage(Stage):
    """Counts the words of the source's notes.txt into the build folder."""

    after = ("fetch",)

    def _notes(self, ctx: BuildContext) -> Path:
        source = ctx.manifest.source
        assert source is not None, "runs after fetch, so the source is recorded"
        return Path(source.path) / "notes.txt"

    def _settings(self, ctx: BuildContext) -> str:
        return fingerprint("wordcount", ctx.hash_file(self._notes(ctx)))

    def is_done(self, ctx: BuildContext) -> bool:
        return ctx.is_current(self.name, self._settings(ctx))

    def run(self, ctx: BuildContext) -> None:
        started = time.perf_counter()
        ctx.forget(self.name)
        words = len(self._notes(ctx).read_text(encoding="utf-8").split())
        out = ctx.build_dir / "wordcount.txt"
        write_text_atomic(out, f"{words}\n")
        ctx.record(self.name, self._settings(ctx), [out], time.perf_counter() - started)


@pytest.fixture
def wordcount() -> Iterator[str]:
    register("wordcount")(WordCountStage)
    try:
        yield "wordcount"
    finally:
        STAGES.pop("wordcount", None)


def test_a_stage_from_the_test_folder_is_ordered_run_and_then_skipped(wordcount: str, tmp_path: Path) -> None:
    order = ordered_names()
    assert order.index("fetch") < order.index(wordcount)
    recipe = load_recipe(recipe_variant(tmp_path / "recipes", "tiny"))
    source = tiny_source(tmp_path / "source")

    first = pipeline.execute(recipe, tmp_path / "work", stages=["fetch", wordcount], source_dir=source)
    assert [(s.name, s.status) for s in first.stages if s.status != "not selected"] == [
        ("fetch", "ran"),
        (wordcount, "ran"),
    ]
    assert (first.build_dir / "wordcount.txt").read_text() == "4\n"
    assert first.manifest.stages[wordcount].outputs == {
        "wordcount.txt": first.manifest.stages[wordcount].outputs["wordcount.txt"]
    }

    again = pipeline.execute(recipe, tmp_path / "work", stages=["fetch", wordcount], source_dir=source)
    assert [s.status for s in again.stages if s.name == wordcount] == ["skipped"]

    (source / "notes.txt").write_text("now five words in here", encoding="utf-8")
    changed = pipeline.execute(recipe, tmp_path / "work", stages=["fetch", wordcount], source_dir=source)
    assert [s.status for s in changed.stages if s.name == wordcount] == ["ran"]
    assert (changed.build_dir / "wordcount.txt").read_text() == "5\n"


def test_stages_that_wait_for_each_other_are_refused(tmp_path: Path) -> None:
    class Egg(Stage):
        after = ("chicken",)

    class Chicken(Stage):
        after = ("egg",)

    register("egg")(Egg)
    register("chicken")(Chicken)
    try:
        with pytest.raises(ValueError, match="wait for each other"):
            ordered_names()
    finally:
        STAGES.pop("egg", None)
        STAGES.pop("chicken", None)


def test_an_unknown_stage_name_lists_the_registered_ones(wordcount: str, tmp_path: Path) -> None:
    recipe = load_recipe(recipe_variant(tmp_path / "recipes", "tiny"))
    with pytest.raises(PublisherError, match=r"--stages compile: unknown stage \(stages: fetch, .*wordcount"):
        pipeline.execute(recipe, tmp_path / "work", stages=["compile"])
