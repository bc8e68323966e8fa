"""Helpers for build tests: the SmolLM2 demo model, recipe variants, tiny source folders, GGUF rewrites."""

from __future__ import annotations

import json
import os
import shutil
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from filelock import FileLock

from support.paths import REPO_ROOT

SMOLLM2_DIR = REPO_ROOT / ".cache" / "models" / "SmolLM2-135M-Instruct"
SMOLLM2_RECIPE = REPO_ROOT / "recipes" / "smollm2-135m-instruct.yaml"


MINIMAL_RECIPE = REPO_ROOT / "tests" / "fixtures" / "recipes" / "minimal.yaml"  # 15 lines


def minimal_recipe_with(tmp_path: Path, tail: str) -> Any:
    """The minimal recipe with ``tail`` (YAML from line 16 on) appended, loaded."""
    from publisher.recipe import load_recipe

    path = tmp_path / "r.yaml"
    path.write_text(MINIMAL_RECIPE.read_text(encoding="utf-8") + tail, encoding="utf-8")
    return load_recipe(path)


def require_smollm2() -> Path:
    """The demo model's folder; skips the test when ``make setup`` has not materialized it."""
    if not (SMOLLM2_DIR / ".complete").exists():
        pytest.skip(f"{SMOLLM2_DIR} is not ready (run make setup)")
    return SMOLLM2_DIR


def require_llama_cpp() -> None:
    """Skip when llama-cpp-python is not installed yet."""
    pytest.importorskip("llama_cpp")


def recipe_variant(folder: Path, name: str, changes: dict[str, Any] | None = None) -> Path:
    """A copy of the SmolLM2 demo recipe in ``folder`` named ``name``, with the source path made absolute.

    ``changes`` maps dotted keys to new values, e.g. ``{"smoke.quality.enabled": False}``.
    """
    data = yaml.safe_load(SMOLLM2_RECIPE.read_text(encoding="utf-8"))
    data["name"] = name
    data["source"]["path"] = str(SMOLLM2_DIR)
    for dotted, value in (changes or {}).items():
        *parents, last = dotted.split(".")
        node = data
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


def write_safetensors(path: Path, tensors: dict[str, np.ndarray]) -> None:
    """A real safetensors file holding ``tensors``."""
    from safetensors.numpy import save_file

    save_file(tensors, str(path))


def write_safetensors_header_only(path: Path, shapes: dict[str, list[int]], dtype: str = "BF16") -> None:
    """A safetensors file whose header declares ``shapes`` but which holds no tensor data.

    Enough for code that reads headers only (parameter counts, disk estimates) to see a huge model.
    """
    header: dict[str, Any] = {}
    offset = 0
    for name, shape in shapes.items():
        size = int(np.prod(shape)) * 2
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw)


def tiny_source(folder: Path, *, shapes: dict[str, list[int]] | None = None, header_only: bool = False) -> Path:
    """A model folder with config.json, tokenizer files copied from SmolLM2 when present, and weights."""
    folder.mkdir(parents=True, exist_ok=True)
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 8, "vocab_size": 16}
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    (folder / "tokenizer_config.json").write_text("{}", encoding="utf-8")
    (folder / "notes.txt").write_text("not read by conversion", encoding="utf-8")
    shapes = shapes or {"model.embed_tokens.weight": [16, 8], "model.norm.weight": [8]}
    if header_only:
        write_safetensors_header_only(folder / "model.safetensors", shapes)
    else:
        write_safetensors(folder / "model.safetensors", {n: np.zeros(s, dtype=np.float16) for n, s in shapes.items()})
    return folder


def copy_build(build_dir: Path, workdir: Path, *, only: tuple[str, ...] | None = None) -> Path:
    """Copy a build folder into ``workdir`` (all files, or only those named); returns the new build folder."""
    target = workdir / build_dir.name
    if only is None:
        shutil.copytree(build_dir, target)
    else:
        target.mkdir(parents=True)
        for name in only:
            src = build_dir / name
            if src.is_dir():
                shutil.copytree(src, target / name)
            elif src.exists():
                shutil.copy2(src, target / name)
    return target


def swap_tokens(src: Path, dst: Path, first: str, second: str) -> tuple[int, int]:
    """Copy a GGUF with the text of two vocabulary entries swapped; return their ids.

    The result loads and generates like the original but maps those two ids to the wrong text:
    the shape of the broken-vocabulary GGUFs that tokenizer parity exists to stop.
    """
    import gguf
    from gguf.scripts.gguf_new_metadata import MetadataDetails, copy_with_new_metadata

    reader = gguf.GGUFReader(src, "r")
    tokens = reader.get_field(gguf.Keys.Tokenizer.LIST).contents()
    a, b = tokens.index(first), tokens.index(second)
    tokens[a], tokens[b] = tokens[b], tokens[a]
    arch = reader.get_field(gguf.Keys.General.ARCHITECTURE).contents()
    writer = gguf.GGUFWriter(dst, arch=arch, endianess=reader.endianess)
    changed = {
        gguf.Keys.Tokenizer.LIST: MetadataDetails(gguf.GGUFValueType.ARRAY, tokens, sub_type=gguf.GGUFValueType.STRING)
    }
    copy_with_new_metadata(reader, writer, changed, [])
    return a, b


def tiny_llama_unknown_tokenizer(folder: Path) -> Path:
    """A two-layer Llama with random weights and a freshly trained byte-level BPE tokenizer.

    Its pre-tokenizer (digits split, then byte-level) is one llama.cpp's converter has no hash for,
    so conversion stops with "BPE pre-tokenizer was not recognized", as it does for new models.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    folder.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<s>", "</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(["the quick brown fox jumps over the lazy dog 12345"] * 50, trainer)
    tok.save(str(folder / "tokenizer.json"))
    vocab = tok.get_vocab_size()
    tok_config = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "eos_token": "</s>"}
    (folder / "tokenizer_config.json").write_text(json.dumps(tok_config), encoding="utf-8")
    hidden, layers, inter, kv = 64, 2, 128, 32
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": hidden,
        "intermediate_size": inter,
        "num_hidden_layers": layers,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": vocab,
        "max_position_embeddings": 256,
        "rms_norm_eps": 1e-5,
        "tie_word_embeddings": True,
        "bos_token_id": 0,
        "eos_token_id": 1,
    }
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    rng = np.random.default_rng(0)
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (vocab, hidden), "model.norm.weight": (hidden,)}
    for i in range(layers):
        prefix = f"model.layers.{i}."
        shapes[prefix + "input_layernorm.weight"] = (hidden,)
        shapes[prefix + "post_attention_layernorm.weight"] = (hidden,)
        shapes[prefix + "self_attn.q_proj.weight"] = (hidden, hidden)
        shapes[prefix + "self_attn.k_proj.weight"] = (kv, hidden)
        shapes[prefix + "self_attn.v_proj.weight"] = (kv, hidden)
        shapes[prefix + "self_attn.o_proj.weight"] = (hidden, hidden)
        shapes[prefix + "mlp.gate_proj.weight"] = (inter, hidden)
        shapes[prefix + "mlp.up_proj.weight"] = (inter, hidden)
        shapes[prefix + "mlp.down_proj.weight"] = (hidden, inter)
    tensors = {n: (rng.standard_normal(s) * 0.02).astype(np.float16) for n, s in shapes.items()}
    write_safetensors(folder / "model.safetensors", tensors)
    return folder


CONVERTED_NAME = "smollm2-converted"


def made_once(factory: pytest.TempPathFactory, name: str, make: Callable[[Path], object]) -> Path:
    """A folder that ``make`` fills once per test run, shared by every pytest-xdist worker.

    Each xdist worker has its own basetemp under one common root; the first worker to take the lock
    makes the folder there and the others wait, then reuse it. Without xdist the root is the session's
    basetemp. A folder left half-made by a failed ``make`` is made again. Users only read it.
    """
    base = factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    folder = root / name
    done = folder / ".made"
    with FileLock(str(root / f"{name}.lock")):
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            make(folder)
            done.touch()
    return folder


def converted_smollm2(factory: pytest.TempPathFactory) -> Path:
    """A build folder of the demo model after fetch and convert, made once per test run.

    Tests copy it (``copy_build``) into their own workdir and use a ``recipe_variant`` named
    ``CONVERTED_NAME``, so each starts from the same reference GGUF without converting again.
    """
    require_smollm2()
    require_llama_cpp()

    def convert(workdir: Path) -> None:
        from publisher import pipeline
        from publisher.recipe import load_recipe

        recipe = load_recipe(recipe_variant(workdir / "recipes", CONVERTED_NAME))
        pipeline.execute(recipe, workdir, stages=["fetch", "convert"])

    return made_once(factory, "converted", convert) / CONVERTED_NAME
