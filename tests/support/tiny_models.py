"""Tiny random-weight models, written as real Hugging Face folders: the one builder every test uses.

Weights come from a transformers config (two layers, hidden size 64), so conversion, quantization
and llama.cpp loading run for real in seconds. The tokenizer is either SmolLM2's (a BPE tokenizer
the converter recognizes) or a small SentencePiece model trained from the shipped quality text
(``publisher.tiny_tokenizer``, which the benchmarks share).
Besides the architectures the converter is proven on (``ARCHITECTURES``), two models are shaped
for one test each: a Qwen3 that answers words (the gate tests) and a Mixtral whose router never
picks two of its experts (the importance matrix's coverage report).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from publisher.tiny_tokenizer import train_sentencepiece
from support.smollm2_models import SMOLLM2_DIR

BPE_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")
SPM_VOCAB = 512

_COMMON: dict[str, Any] = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 4096,
    "torch_dtype": "float16",
}


@dataclass(frozen=True)
class TinyArch:
    """One architecture to prove: its transformers config class, overrides, and which tokenizer it needs."""

    key: str
    config_class: str
    overrides: dict[str, Any] = field(default_factory=dict)
    tokenizer: str = "bpe"  # bpe: SmolLM2's tokenizer.json; spm: a SentencePiece model trained here
    spm_options: dict[str, Any] = field(default_factory=dict)
    prompt_template: str = "chatml"
    tokenizer_class: str | None = None  # written into tokenizer_config.json where the converter reads it
    tokenizer_files: tuple[str, ...] = BPE_FILES  # what a bpe model copies from the tokenizer source
    add_bos: bool | None = None  # written into tokenizer_config.json when set
    shape: Callable[[Any, Path], None] | None = None  # edits the random model (and its folder) before saving


ARCHITECTURES = (
    TinyArch("llama-gqa", "LlamaConfig", {"tie_word_embeddings": False}),
    # Tied weights make a random model repeat the last prompt token; after ChatML's "assistant\n" that is
    # whitespace, an empty answer: these prompt the raw text instead.
    TinyArch(
        "llama-tied", "LlamaConfig", {"tie_word_embeddings": True, "num_key_value_heads": 4}, prompt_template="none"
    ),
    TinyArch("llama-spm", "LlamaConfig", {"tie_word_embeddings": False}, tokenizer="spm"),
    TinyArch("mistral", "MistralConfig", {"sliding_window": 64, "tie_word_embeddings": False}),
    TinyArch("qwen3", "Qwen3Config", {"head_dim": 16, "tie_word_embeddings": True}, prompt_template="none"),
    TinyArch(
        "gemma3",
        "Gemma3TextConfig",
        # llama.cpp places Gemma 3's global layers itself (every sixth): six layers agree with that
        {
            "head_dim": 16,
            "sliding_window": 32,
            "num_hidden_layers": 6,
            "layer_types": ["sliding_attention"] * 5 + ["full_attention"],
        },
        tokenizer="spm",
        spm_options={"add_dummy_prefix": False},  # as Gemma's own tokenizer, and as the converter writes it
    ),
    # Phi-4's layout: the Phi-3 architecture with a GPT-2 style BPE tokenizer.
    TinyArch("phi3", "Phi3Config", {"tie_word_embeddings": False, "pad_token_id": 0}, tokenizer_class="GPT2Tokenizer"),
    TinyArch(
        "qwen2-moe",
        "Qwen2MoeConfig",
        {
            "num_experts": 4,
            "num_experts_per_tok": 2,
            "moe_intermediate_size": 32,
            "shared_expert_intermediate_size": 64,
            "tie_word_embeddings": False,
        },
    ),
)


def make_tiny_model(arch: TinyArch, folder: Path, tokenizer_source: Path = SMOLLM2_DIR) -> Path:
    """Write ``folder`` as a Hugging Face model folder of ``arch`` with random weights."""
    import torch
    import transformers

    folder.mkdir(parents=True, exist_ok=True)
    if arch.tokenizer == "spm":
        train_sentencepiece(folder, SPM_VOCAB, **arch.spm_options)
        vocab, bos, eos = SPM_VOCAB, 1, 2
    else:
        for name in arch.tokenizer_files:
            if (tokenizer_source / name).is_file():
                shutil.copy(tokenizer_source / name, folder / name)
        source_config = json.loads((tokenizer_source / "config.json").read_text(encoding="utf-8"))
        vocab, bos, eos = source_config["vocab_size"], 1, 2
    config_path = folder / "tokenizer_config.json"
    tokenizer_config = json.loads(config_path.read_text(encoding="utf-8"))
    if arch.tokenizer_class is not None:
        tokenizer_config["tokenizer_class"] = arch.tokenizer_class
    if arch.add_bos is not None:
        tokenizer_config["add_bos_token"] = arch.add_bos
    if arch.tokenizer_class is not None or arch.add_bos is not None:
        config_path.write_text(json.dumps(tokenizer_config, indent=2), encoding="utf-8")
    config_class = getattr(transformers, arch.config_class)
    settings = _COMMON | {"vocab_size": vocab, "bos_token_id": bos, "eos_token_id": eos} | arch.overrides
    config = config_class(**settings)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config, torch_dtype=torch.float16)
    if arch.tokenizer == "spm":
        _never_emit_byte_tokens(model, folder / "tokenizer.model")
    if arch.shape is not None:
        arch.shape(model, folder)
    model.save_pretrained(folder, safe_serialization=True)
    return folder


def _answer_words(model: Any, folder: Path) -> None:
    """An output layer that can only pick " the" or " and" (whichever side of one direction the state falls).

    Random weights would answer with control tokens or nothing, failing every smoke prompt.
    """
    import torch

    vocab = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))["model"]["vocab"]
    direction = torch.randn(model.config.hidden_size, dtype=model.lm_head.weight.dtype)
    with torch.no_grad():
        model.lm_head.weight.zero_()
        model.lm_head.weight[vocab["Ġthe"]] = direction
        model.lm_head.weight[vocab["Ġand"]] = -direction


def _route_to_two_experts(model: Any, _folder: Path) -> None:
    """Router weights that send every token to expert 0 or 1, never to 2 or 3."""
    import torch

    with torch.no_grad():
        for layer in model.model.layers:
            moe = layer.mlp if hasattr(layer, "mlp") else layer.block_sparse_moe  # transformers 5 renamed it
            gate = moe.gate.weight
            v = torch.randn(gate.shape[1], dtype=gate.dtype)
            gate.copy_(torch.stack([v, -v, torch.zeros_like(v), torch.zeros_like(v)]))


_TOKENIZER_ONLY = ("tokenizer.json", "tokenizer_config.json")
# Qwen3 with SmolLM2's tokenizer and ``add_bos_token: false`` written out, as Qwen3 ships it (its own
# tokenizer class would bring Qwen's pre-tokenizer, which SmolLM2's vocabulary does not fit).
QWEN3_WORDS = TinyArch(
    "qwen3-words",
    "Qwen3Config",
    {"head_dim": 16, "max_position_embeddings": 2048, "tie_word_embeddings": False},
    tokenizer_files=_TOKENIZER_ONLY,
    add_bos=False,
    shape=_answer_words,
)
MIXTRAL_UNROUTED = TinyArch(
    "mixtral-unrouted",
    "MixtralConfig",
    {"num_local_experts": 4, "num_experts_per_tok": 1, "max_position_embeddings": 1024, "tie_word_embeddings": False},
    tokenizer_files=_TOKENIZER_ONLY,
    shape=_route_to_two_experts,
)


def tiny_qwen3(folder: Path, tokenizer_source: Path) -> Path:
    """The gate tests' Qwen3 (``QWEN3_WORDS``) with ``tokenizer_source``'s tokenizer."""
    return make_tiny_model(QWEN3_WORDS, folder, tokenizer_source)


def _never_emit_byte_tokens(model: Any, tokenizer_model: Path) -> None:
    """Zero the output rows of byte-fallback tokens, so greedy decoding never picks one.

    Random weights would otherwise emit lone UTF-8 bytes, which the smoke test rightly rejects as
    invalid text; every other token keeps a random logit, about half of them positive.
    """
    import sentencepiece
    import torch

    processor = sentencepiece.SentencePieceProcessor(model_file=str(tokenizer_model))
    byte_ids = [i for i in range(processor.get_piece_size()) if processor.is_byte(i)]
    with torch.no_grad():
        model.get_output_embeddings().weight[byte_ids] = 0
