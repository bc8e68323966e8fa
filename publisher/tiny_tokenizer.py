"""A small SentencePiece tokenizer trained from publisher's shipped texts, for random-weight models.

The tests' tiny models and the benchmarks' generated Llama both need a ``tokenizer.model`` that
the converter and llama.cpp accept, made offline in seconds. This is the one trainer they share.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

MODEL_FILE = "tokenizer.model"
# What the converter reads beside tokenizer.model: Llama's class and its special tokens.
TOKENIZER_CONFIG = {
    "tokenizer_class": "LlamaTokenizer",
    "bos_token": "<s>",
    "eos_token": "</s>",
    "unk_token": "<unk>",
    "add_bos_token": True,
}


def train_sentencepiece(folder: Path, vocab_size: int, texts: Sequence[str] = ("quality.txt",), **options: Any) -> Path:
    """Train a BPE ``tokenizer.model`` (ids: unk 0, bos 1, eos 2) into ``folder`` and return its path.

    ``texts`` names files of ``publisher/data``; ``options`` override SentencePiece's settings.
    Identity normalization and whitespace kept as it is, as Llama's and Gemma's tokenizers do:
    llama.cpp applies neither SentencePiece's normalizer nor its whitespace folding, so a model
    trained with the defaults tokenizes differently (the gate tests rely on that). Also writes
    ``tokenizer_config.json``.
    """
    import sentencepiece

    folder.mkdir(parents=True, exist_ok=True)
    data = resources.files("publisher").joinpath("data")
    text = folder / "train.txt"
    text.write_text("\n".join(data.joinpath(name).read_text(encoding="utf-8") for name in texts), encoding="utf-8")
    prefix = folder / "tokenizer"
    settings: dict[str, Any] = {
        "normalization_rule_name": "identity",
        "remove_extra_whitespaces": False,
        "byte_fallback": True,
    } | options
    sentencepiece.SentencePieceTrainer.train(
        input=str(text),
        model_prefix=str(prefix),
        vocab_size=vocab_size,
        model_type="bpe",
        character_coverage=1.0,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        num_threads=1,
        minloglevel=2,
        **settings,
    )
    text.unlink()
    prefix.with_suffix(".vocab").unlink()
    (folder / "tokenizer_config.json").write_text(json.dumps(TOKENIZER_CONFIG), encoding="utf-8")
    return folder / MODEL_FILE
