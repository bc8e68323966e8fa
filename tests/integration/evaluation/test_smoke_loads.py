"""What the smoke stage asks of llama.cpp: one load per file for all its checks (prompts, parity, template,
quality, and the reference's logits), one model's weights in memory at a time, the source tokenizer read
once and tokenizer parity run once per vocabulary (on the first file's open handle: no vocab-only load)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from support.common import CONVERTED_NAME, converted_smollm2, copy_build, recipe_variant

from bench.worker import load_kind
from publisher import pipeline
from publisher.gguf_info import vocabulary_sha256
from publisher.recipe import load_recipe


class LoadLog:
    """Every ``llama_cpp.Llama`` created and closed while installed (the real methods run, wrapped);
    ``most_open`` counts the loads that hold weights (not vocab-only)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import llama_cpp

        self.loads: Counter[tuple[str, str]] = Counter()
        self.open: set[int] = set()
        self.most_open = 0
        init, close = llama_cpp.Llama.__init__, llama_cpp.Llama.close

        def counted_init(llm: Any, *args: Any, **kwargs: Any) -> None:
            init(llm, *args, **kwargs)
            kind = load_kind(kwargs)
            self.loads[(Path(kwargs["model_path"]).name, kind)] += 1
            if kind != "vocab":
                self.open.add(id(llm))
                self.most_open = max(self.most_open, len(self.open))

        def counted_close(llm: Any) -> None:
            self.open.discard(id(llm))
            close(llm)

        monkeypatch.setattr(llama_cpp.Llama, "__init__", counted_init)
        monkeypatch.setattr(llama_cpp.Llama, "close", counted_close)


@pytest.mark.slow
def test_each_file_is_loaded_once_for_the_checks_and_parity_runs_once_per_vocabulary(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    import publisher.evaluation.source_tokenizer as source_module
    from publisher.evaluation import parity

    workdir = tmp_path / "work"
    build_dir = copy_build(converted_smollm2(tmp_path_factory), workdir)
    changes = {"quantize.types": ["Q8_0", "Q2_K"], "smoke.quality.max_chunks": 1}
    recipe = load_recipe(recipe_variant(tmp_path / "recipes", CONVERTED_NAME, changes))
    pipeline.execute(recipe, workdir, stages=["quantize"])

    parity._results.clear()  # compared in this run, not taken from an earlier test's
    source_module._load.cache_clear()
    reads = Counter[str]()
    hf_init = source_module.HFTokenizer.__init__

    def counted_read(tok: Any, path: Path) -> None:
        reads[path.name] += 1
        hf_init(tok, path)

    monkeypatch.setattr(source_module.HFTokenizer, "__init__", counted_read)
    log = LoadLog(monkeypatch)
    manifest = pipeline.execute(recipe, workdir, stages=["smoke"]).manifest

    assert manifest.reference is not None
    files = [manifest.reference, manifest.artifacts["Q8_0"], manifest.artifacts["Q2_K"]]
    assert [a.status for a in files] == ["passed"] * 3, [a.failure for a in files]
    names = [a.path for a in files]
    expected = {(name, "model"): 1 for name in names}
    assert dict(log.loads) == expected
    assert log.most_open == 1 and not log.open
    assert reads == {"tokenizer.json": 1}

    # All three files carry the reference's vocabulary byte for byte, and the comparison ran on the first.
    digests = {vocabulary_sha256(build_dir / name) for name in names}
    assert len(digests) == 1
    for artifact in files:
        assert artifact.tokenizer is not None and artifact.tokenizer.passed
        assert artifact.tokenizer.vocabulary_sha256 in digests
        assert artifact.tokenizer.compared_on == names[0]
        assert artifact.template is not None and artifact.template.source_matches is True
        assert artifact.smoke is not None and artifact.smoke.load_s is not None and artifact.smoke.load_s > 0
