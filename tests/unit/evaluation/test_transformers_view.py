"""What transformers makes of the source tokenizer, read in a child process (no llama.cpp here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from support.smollm2_models import SMOLLM2_DIR

from publisher.errors import SmokeTestError
from publisher.evaluation.chat_shapes import SHAPES
from publisher.evaluation.special_tokens import source_specials
from publisher.evaluation.template_source import source_templates
from publisher.evaluation.transformers_view import prefetch_transformers_view, transformers_view


def test_the_demo_tokenizer_is_read_whole_in_the_child() -> None:
    if not (SMOLLM2_DIR / "tokenizer.json").is_file():
        pytest.skip("the demo model is not materialized (make setup)")
    prefetch_transformers_view(SMOLLM2_DIR)
    view = transformers_view(SMOLLM2_DIR)
    assert view is not None and view.has_template
    assert transformers_view(SMOLLM2_DIR) is view  # one child per source, its answer shared
    assert view.chat_template in source_templates(SMOLLM2_DIR).values()
    assert set(view.renderings) == {shape.name for shape in SHAPES}
    text, error = view.renderings["system and user"]
    assert error is None and text is not None and text.startswith("<|im_start|>system\n")
    specials = source_specials(SMOLLM2_DIR)
    assert specials is not None
    assert specials.ids["<|im_end|>"] == 2 and specials.added[2] == ("<|im_end|>", True)
    assert (specials.before, specials.after) == ((), ())
    assert len(specials.ids) == 49152


def test_the_parent_never_imports_transformers_or_torch() -> None:
    if not (SMOLLM2_DIR / "tokenizer.json").is_file():
        pytest.skip("the demo model is not materialized (make setup)")
    script = (
        "import sys\nfrom pathlib import Path\n"
        "from publisher.evaluation.special_tokens import source_specials\n"
        "assert source_specials(Path(sys.argv[1])) is not None\n"
        "print(sorted(m for m in ('transformers', 'torch') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(SMOLLM2_DIR)], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_a_broken_transformers_install_is_a_one_line_error_not_a_silent_skip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Not a stand-in for transformers' work: an installation that fails on import, as a bad upgrade does.
    broken = tmp_path / "site" / "transformers"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text("raise RuntimeError('half-installed')\n", encoding="utf-8")
    monkeypatch.setenv("PYTHONPATH", f"{broken.parent}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    source = tmp_path / "source"
    source.mkdir()
    (source / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "GPT2Tokenizer"}), encoding="utf-8")
    prefetch_transformers_view(source)  # started in the background: the failure waits for whoever needs the answer
    with pytest.raises(SmokeTestError) as err:
        transformers_view(source)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{source.resolve()}: transformers failed reading the source tokenizer (")
    assert "RuntimeError: half-installed" in message
