"""The models the benchmarks run on: the demo SmolLM2 folder and a generated, larger Llama.

The larger model has random weights (it only has to be the right shape and size for timing and
memory figures). It is built once with transformers from a fixed seed, saved as bfloat16
safetensors with the demo model's tokenizer so the converter accepts it, and cached under
``.cache/bench/``. A marker file records the spec; a different spec regenerates the folder. The
tokenizer files are copied again whenever the demo model's differ.
"""

from __future__ import annotations

import json
import multiprocessing
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from publisher.tiny_tokenizer import train_sentencepiece

ROOT = Path(__file__).resolve().parent.parent
DEMO_DIR = ROOT / ".cache" / "models" / "SmolLM2-135M-Instruct"
CACHE_DIR = ROOT / ".cache" / "bench"
MARKER = ".complete.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json")


@dataclass(frozen=True)
class LlamaSpec:
    """Shape of the generated model. The defaults give about 304 million parameters."""

    hidden_size: int = 1024
    intermediate_size: int = 2816
    num_hidden_layers: int = 18
    num_attention_heads: int = 16
    num_key_value_heads: int = 4
    vocab_size: int = 49152  # the demo tokenizer's vocabulary
    tie_word_embeddings: bool = False
    seed: int = 0

    def parameters(self) -> int:
        """Parameter count of a Llama of this shape (no biases, RMS norms)."""
        h, i, v = self.hidden_size, self.intermediate_size, self.vocab_size
        kv = h // self.num_attention_heads * self.num_key_value_heads
        layer = 2 * h * h + 2 * h * kv + 3 * h * i + 2 * h
        head = 0 if self.tie_word_embeddings else v * h
        return v * h + self.num_hidden_layers * layer + h + head

    def llama_config(self) -> Any:
        """The transformers ``LlamaConfig`` of this shape (token ids as in SmolLM2's tokenizer)."""
        from transformers import LlamaConfig

        return LlamaConfig(
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            num_key_value_heads=self.num_key_value_heads,
            vocab_size=self.vocab_size,
            tie_word_embeddings=self.tie_word_embeddings,
            max_position_embeddings=2048,
            rms_norm_eps=1e-5,
            bos_token_id=1,
            eos_token_id=2,
            pad_token_id=2,
        )


@dataclass(frozen=True)
class BenchModel:
    """A model folder the benchmarks convert, quantize and test."""

    key: str  # short name used in results.json ("demo", "llama-300m")
    path: Path
    description: str
    random_weights: bool


def demo_model() -> BenchModel:
    """The demo SmolLM2-135M-Instruct folder that ``make setup`` materializes."""
    if not (DEMO_DIR / ".complete").exists():
        raise SystemExit(f"{DEMO_DIR} is missing; run `make setup` first")
    return BenchModel("demo", DEMO_DIR, "SmolLM2-135M-Instruct (demo folder)", random_weights=False)


def generated_model(spec: LlamaSpec = LlamaSpec(), *, cache_dir: Path = CACHE_DIR) -> BenchModel:
    """The generated Llama of ``spec``, created on first use (about a minute on 2 cores)."""
    millions = round(spec.parameters() / 1e6)
    key = f"llama-{millions}m"
    dest = cache_dir / f"random-llama-{millions}m"
    wanted = asdict(spec)
    marker = dest / MARKER
    if not (marker.exists() and json.loads(marker.read_text(encoding="utf-8")) == wanted):
        _in_child(_generate, spec, dest)
    _sync_tokenizer(dest)
    return BenchModel(key, dest, f"Llama {millions}M, random weights (generated)", random_weights=True)


def _in_child(generate: Callable[..., None], *args: Any) -> None:
    """Run ``generate`` in a fresh interpreter, so the bench process never holds torch or the weights.

    Linux hands a parent's peak RSS on to the children it starts (an exec'd child's ``ru_maxrss``
    starts from the peak of the memory it was started from), so a bench process that had generated
    a model in itself would report at least that peak for every side of every comparison after it.
    """
    child = multiprocessing.get_context("spawn").Process(target=generate, args=args)
    child.start()
    child.join()
    if child.exitcode != 0:
        raise SystemExit(f"generating the benchmark model failed (exit status {child.exitcode})")


def _sync_tokenizer(dest: Path) -> None:
    """Keep the tokenizer files equal to the demo model's (``make setup`` may have rebuilt those)."""
    for name in TOKENIZER_FILES:
        source, target = DEMO_DIR / name, dest / name
        if source.is_file() and (not target.is_file() or source.read_bytes() != target.read_bytes()):
            tmp = target.with_name(f".{name}.partial")
            shutil.copyfile(source, tmp)
            tmp.replace(target)


README = """\
---
license: apache-2.0
language:
- en
pipeline_tag: text-generation
---

# Random Llama ({millions}M parameters)

A Llama-architecture model with random weights, generated by publisher's benchmarks
(`bench/models.py`) to measure conversion and quantization at a larger scale than the demo model.
It produces no meaningful text. The tokenizer is SmolLM2's.
"""


def _generate(spec: LlamaSpec, dest: Path) -> None:
    import torch
    from transformers import LlamaForCausalLM

    print(f"generating a {spec.parameters() / 1e6:.0f}M-parameter random Llama at {dest} (once)")
    dest.parent.mkdir(parents=True, exist_ok=True)
    config = spec.llama_config()
    torch.manual_seed(spec.seed)
    model: Any = LlamaForCausalLM(config)
    model.to(dtype=torch.bfloat16)
    with tempfile.TemporaryDirectory(prefix=".gen-", dir=dest.parent) as scratch_name:
        staging = Path(scratch_name) / "model"
        model.save_pretrained(staging)
        for name in TOKENIZER_FILES:
            if (DEMO_DIR / name).exists():
                shutil.copy2(DEMO_DIR / name, staging / name)
        millions = round(spec.parameters() / 1e6)
        (staging / "README.md").write_text(README.format(millions=millions), encoding="utf-8")
        (staging / MARKER).write_text(json.dumps(asdict(spec), indent=1) + "\n", encoding="utf-8")
        if dest.exists():
            shutil.rmtree(dest)
        staging.rename(dest)


# TinyLlama-1.1B's shape, for `make bench-scale`: about 1.1 billion parameters.
SCALE_SPEC = LlamaSpec(
    hidden_size=2048,
    intermediate_size=5632,
    num_hidden_layers=22,
    num_attention_heads=32,
    num_key_value_heads=4,
    vocab_size=32000,
)
SPM_VOCAB = 2000  # what the shipped texts can train; the converter pads the vocabulary to 32000
TEXTS = ("calibration.txt", "quality.txt")  # of publisher/data


def scale_model(spec: LlamaSpec = SCALE_SPEC, *, cache_dir: Path = CACHE_DIR) -> BenchModel:
    """A random Llama of TinyLlama's shape with a SentencePiece tokenizer trained here, made once.

    The weights are written tensor by tensor straight to bfloat16 safetensors (seconds), not through
    transformers' model initialisation (minutes and 4.4 GB of float32 at this size).
    """
    millions = round(spec.parameters() / 1e6)
    key = f"llama-{millions}m-spm"
    dest = cache_dir / f"random-{key}"
    wanted = asdict(spec) | {"tokenizer": f"sentencepiece-bpe-{SPM_VOCAB}"}
    marker = dest / MARKER
    if not (marker.exists() and json.loads(marker.read_text(encoding="utf-8")) == wanted):
        _in_child(_generate_direct, spec, dest, wanted)
    return BenchModel(key, dest, f"Llama {millions}M (TinyLlama's shape), random weights (generated)", True)


def _llama_tensors(spec: LlamaSpec) -> dict[str, tuple[int, ...]]:
    h, i, v = spec.hidden_size, spec.intermediate_size, spec.vocab_size
    kv = h // spec.num_attention_heads * spec.num_key_value_heads
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (v, h), "model.norm.weight": (h,)}
    if not spec.tie_word_embeddings:
        shapes["lm_head.weight"] = (v, h)
    for n in range(spec.num_hidden_layers):
        p = f"model.layers.{n}."
        shapes |= {
            p + "input_layernorm.weight": (h,),
            p + "post_attention_layernorm.weight": (h,),
            p + "self_attn.q_proj.weight": (h, h),
            p + "self_attn.k_proj.weight": (kv, h),
            p + "self_attn.v_proj.weight": (kv, h),
            p + "self_attn.o_proj.weight": (h, h),
            p + "mlp.gate_proj.weight": (i, h),
            p + "mlp.up_proj.weight": (i, h),
            p + "mlp.down_proj.weight": (h, i),
        }
    return shapes


def _generate_direct(spec: LlamaSpec, dest: Path, marker: dict[str, Any]) -> None:
    import torch
    from safetensors.torch import save_file

    print(f"generating a {spec.parameters() / 1e6:.0f}M-parameter random Llama at {dest} (once)")
    dest.parent.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(spec.seed)
    tensors = {}
    for name, shape in _llama_tensors(spec).items():
        if len(shape) == 1:
            tensors[name] = torch.ones(shape, dtype=torch.bfloat16)
        else:
            tensors[name] = (torch.randn(shape, generator=generator) * 0.02).to(torch.bfloat16)
    with tempfile.TemporaryDirectory(prefix=".gen-", dir=dest.parent) as scratch_name:
        staging = Path(scratch_name) / "model"
        staging.mkdir()
        save_file(tensors, str(staging / "model.safetensors"), metadata={"format": "pt"})
        del tensors
        config = spec.llama_config()
        config.architectures = ["LlamaForCausalLM"]  # what the converter dispatches on
        config.save_pretrained(staging)
        train_sentencepiece(staging, SPM_VOCAB, TEXTS)
        millions = round(spec.parameters() / 1e6)
        (staging / "README.md").write_text(
            README.format(millions=millions).replace(
                "The tokenizer is SmolLM2's.", "Its SentencePiece tokenizer was trained on publisher's shipped texts."
            ),
            encoding="utf-8",
        )
        (staging / MARKER).write_text(json.dumps(marker, indent=1) + "\n", encoding="utf-8")
        if dest.exists():
            shutil.rmtree(dest)
        staging.rename(dest)
