"""Sources and GGUFs altered on purpose for the gate tests: edited SmolLM2 tokenizers, a tiny Qwen3, patched GGUFs."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from support.tiny_models import tiny_qwen3 as tiny_qwen3  # the one builder of tiny models

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt")
CHATML_WITHOUT_DEFAULT_SYSTEM = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' "
    "+ '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def copy_tokenizer(source: Path, folder: Path) -> Path:
    """The tokenizer files of ``source`` (and its config.json) copied into ``folder``, to be edited there."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in (*TOKENIZER_FILES, "config.json"):
        if (source / name).is_file():
            shutil.copyfile(source / name, folder / name)
    return folder


def copy_source(source: Path, folder: Path) -> Path:
    """A full copy of a model folder (weights linked, not copied) whose tokenizer files can be edited."""
    folder.mkdir(parents=True, exist_ok=True)
    for path in source.iterdir():
        if path.is_file() and path.suffix == ".safetensors":
            (folder / path.name).symlink_to(path)
        elif path.is_file():
            shutil.copyfile(path, folder / path.name)
    return folder


def edit_json(path: Path, change: Callable[[Any], None]) -> None:
    """Load a JSON file, let ``change`` edit it in place, write it back."""
    data = json.loads(path.read_text(encoding="utf-8"))
    change(data)
    path.write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8")


def swap_added_token_ids(folder: Path, first: str, second: str, *, everywhere: bool) -> None:
    """Swap the ids of two added tokens in tokenizer.json's ``added_tokens``, as a careless edit would.

    With ``everywhere``, also in the model's vocabulary and tokenizer_config.json: a consistent
    tokenizer that numbers them the other way round.
    """

    def swap_tokenizer(data: Any) -> None:
        tokens = {t["content"]: t for t in data["added_tokens"]}
        tokens[first]["id"], tokens[second]["id"] = tokens[second]["id"], tokens[first]["id"]
        if everywhere:
            vocab = data["model"]["vocab"]
            vocab[first], vocab[second] = vocab[second], vocab[first]

    def swap_config(data: Any) -> None:
        decoder = data.get("added_tokens_decoder")
        if not decoder:
            return
        by_text = {v["content"]: k for k, v in decoder.items()}
        a, b = by_text[first], by_text[second]
        decoder[a], decoder[b] = decoder[b], decoder[a]

    edit_json(folder / "tokenizer.json", swap_tokenizer)
    if everywhere:
        edit_json(folder / "tokenizer_config.json", swap_config)


def set_add_bos(folder: Path, value: bool) -> None:
    """Set ``add_bos_token`` in tokenizer_config.json."""
    edit_json(folder / "tokenizer_config.json", lambda data: data.__setitem__("add_bos_token", value))


def prepend_in_post_processor(folder: Path, token: str) -> None:
    """Make tokenizer.json's post-processor put ``token`` before every text (what transformers' encode then adds)."""

    def change(data: Any) -> None:
        token_id = next(t["id"] for t in data["added_tokens"] if t["content"] == token)
        data["post_processor"] = {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": token, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {token: {"id": token, "ids": [token_id], "tokens": [token]}},
        }

    edit_json(folder / "tokenizer.json", change)


def write_jinja_template(folder: Path, template: str = CHATML_WITHOUT_DEFAULT_SYSTEM) -> None:
    """A chat_template.jinja beside tokenizer_config.json's own (different) template."""
    (folder / "chat_template.jinja").write_text(template, encoding="utf-8")


def add_token_beyond_vocab(folder: Path, content: str = "<|beyond|>") -> int:
    """Append an added token numbered ``vocab_size`` (one past the embedding) to tokenizer.json; return its id."""
    size = int(json.loads((folder / "config.json").read_text(encoding="utf-8"))["vocab_size"])
    entry = {"id": size, "content": content, "single_word": False, "lstrip": False, "rstrip": False}
    entry |= {"normalized": False, "special": True}
    edit_json(folder / "tokenizer.json", lambda data: data["added_tokens"].append(entry))
    return size


def swap_tensor_dims(gguf_path: Path, out: Path, tensor: str) -> Path:
    """Copy a GGUF with one 2-D tensor's two dimensions swapped in its header (same size, so offsets still hold)."""
    import gguf

    shutil.copyfile(gguf_path, out)
    reader = gguf.GGUFReader(out, "r+")
    info = next(t for t in reader.tensors if t.name == tensor)
    dims = info.field.parts[3]  # name length, name, number of dimensions, dimensions, type, offset
    dims[0], dims[1] = int(dims[1]), int(dims[0])
    reader.data.flush()
    return out


def patch_pre_tokenizer(gguf_path: Path, out: Path, name: str) -> Path:
    """Copy a GGUF with ``tokenizer.ggml.pre`` replaced by ``name`` of the same length (patched in place)."""
    import gguf

    shutil.copyfile(gguf_path, out)
    reader = gguf.GGUFReader(out, "r+")
    value = reader.fields["tokenizer.ggml.pre"].parts[-1]
    if len(value) != len(name.encode()):
        raise ValueError("in-place patch needs a name of the same byte length")
    value[:] = list(name.encode())
    reader.data.flush()
    return out


def truncate(gguf_path: Path, out: Path, keep: float = 0.6) -> Path:
    """Copy the first ``keep`` share of a GGUF's bytes, as an interrupted download leaves it."""
    data = gguf_path.read_bytes()
    out.write_bytes(data[: int(len(data) * keep)])
    return out
