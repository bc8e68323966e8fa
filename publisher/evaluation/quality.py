"""Perplexity, KL divergence and top-1 agreement of a quant against the reference GGUF.

The text (shipped with publisher, or ``smoke.quality.text``) is tokenized once with the
reference model and cut into up to ``max_chunks`` chunks of ``context_length`` tokens. Each chunk
is evaluated from an empty context and, as llama.cpp's ``llama-perplexity`` does, only the second
half of each chunk is scored, so every scored token has at least half a chunk of context.

How the reference's distributions are stored depends on their size (positions x vocabulary):

- up to ``FULL_LIMIT`` entries (SmolLM2's 49152 tokens x 1016 positions is 50M, 100 MB): every
  log-probability as float16, renormalised on load. KL divergence is then exact up to that
  rounding.
- above it (large vocabularies): the ``TOP_K`` most likely tokens per position with their
  log-probabilities and the log of the probability left over. KL is computed over those
  ``TOP_K + 1`` outcomes, the rest lumped together, which is a lower bound of the true KL:
  measured on SmolLM2, 97% of it for both Q8_0 and Q2_K (92% with 256 tokens).

The reference's own top-1 ids and perplexity are always stored exactly.
"""

from __future__ import annotations

import hashlib
import json
import time
from contextlib import closing
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from publisher.errors import SmokeTestError
from publisher.manifest import QualityResult, atomic_path
from publisher.recipe import Recipe
from publisher.runtimes.llama_cpp import open_model

TOP_K = 1024
FULL_LIMIT = 64 * 1024 * 1024  # stored log-probs (128 MiB as float16) before top-k takes over
FORMAT = 1
TEXT_FILE = "quality.txt"

Floats = npt.NDArray[np.floating[Any]]
Ints = npt.NDArray[np.int32]


def quality_text(recipe: Recipe) -> str:
    """The recipe's perplexity text, or the one shipped with publisher."""
    if recipe.smoke.quality.text is None:
        return resources.files("publisher").joinpath("data", TEXT_FILE).read_text(encoding="utf-8")
    path = recipe.resolve_path(recipe.smoke.quality.text)
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise SmokeTestError(f"smoke.quality.text: cannot read {path} as UTF-8 text ({err})") from None


def log_softmax(logits: npt.NDArray[Any]) -> Floats:
    """Row-wise log-softmax in float32 (llama.cpp's precision), normalised with float64 sums."""
    x = np.asarray(logits, dtype=np.float32)
    shifted = x - x.max(axis=-1, keepdims=True)
    norm = np.log(np.exp(shifted).sum(axis=-1, keepdims=True, dtype=np.float64)).astype(np.float32)
    result: Floats = shifted - norm
    return result


def top_k(logp: Floats, k: int) -> tuple[Ints, Floats, Floats]:
    """The ``k`` most likely ids per row (most likely first), their log-probs, and log(rest mass)."""
    k = min(k, logp.shape[-1])
    part = np.argpartition(-logp, k - 1, axis=-1)[:, :k]
    part_logp = np.take_along_axis(logp, part, axis=-1)
    order = np.argsort(-part_logp, axis=-1, kind="stable")
    ids = np.take_along_axis(part, order, axis=-1).astype(np.int32)
    top_logp = np.take_along_axis(part_logp, order, axis=-1)
    rest = np.clip(1.0 - np.exp(top_logp.astype(np.float64)).sum(axis=-1), 0.0, 1.0)
    with np.errstate(divide="ignore"):
        rest_logp = np.log(rest)
    return ids, top_logp, rest_logp


def kl_top_k(ref_top_logp: Floats, ref_rest_logp: Floats, quant_top_logp: Floats) -> Floats:
    """KL(reference || quant) per row over the reference's top ids plus one bin for the rest.

    ``quant_top_logp`` holds the quant's log-probs of the reference's top ids.
    """
    ref_top_logp, quant_top_logp = ref_top_logp.astype(np.float64), quant_top_logp.astype(np.float64)
    p = np.exp(ref_top_logp)
    kl = (p * (ref_top_logp - quant_top_logp)).sum(axis=-1)
    p_rest = np.exp(ref_rest_logp)
    q_rest = np.clip(1.0 - np.exp(quant_top_logp).sum(axis=-1), 1e-30, 1.0)
    # a leftover mass below float32 resolution is rounding noise, not probability
    with np.errstate(invalid="ignore"):  # 0 * -inf where nothing is left over
        tail = np.where(p_rest > 1e-6, p_rest * (ref_rest_logp - np.log(q_rest)), 0.0)
    result: Floats = kl + tail
    return result


def kl_full(ref_logp: Floats, quant_logp: Floats) -> Floats:
    """Exact KL(reference || quant) per row over the whole vocabulary."""
    p = np.exp(ref_logp)
    with np.errstate(invalid="ignore"):  # 0 * -inf where the reference rules a token out
        terms = np.where(p > 0, p * (ref_logp - quant_logp), 0.0)
    result: Floats = terms.sum(axis=-1, dtype=np.float64)
    return result


# ---------------------------------------------------------------------------------------------
# Evaluation with llama.cpp
# ---------------------------------------------------------------------------------------------


def _open_for_logits(gguf: Path, recipe: Recipe) -> Any:
    ctx = recipe.smoke.quality.context_length
    return open_model(
        gguf,
        n_ctx=ctx,
        n_batch=ctx,
        n_ubatch=ctx,
        logits_all=True,
        n_gpu_layers=recipe.smoke.gpu_layers,
        seed=recipe.smoke.seed,
    )


def _chunk_logp(llm: Any, chunk: Ints, first: int) -> Floats:
    """Log-probs predicting tokens ``first+1 .. n-1`` of a chunk evaluated from an empty context."""
    llm.reset()
    llm.eval(chunk.tolist())
    return log_softmax(llm.scores[first : len(chunk) - 1])


def _chunks(llm: Any, text: str, recipe: Recipe) -> Ints:
    ctx = recipe.smoke.quality.context_length
    tokens = np.asarray(llm.tokenize(text.encode("utf-8"), add_bos=False, special=False), dtype=np.int32)
    n_chunks = min(recipe.smoke.quality.max_chunks, len(tokens) // ctx)
    if n_chunks == 0:
        raise SmokeTestError(
            f"smoke.quality: the text has {len(tokens)} tokens, fewer than context_length {ctx}; "
            "use a longer text or a smaller context_length"
        )
    chunks = tokens[: n_chunks * ctx].reshape(n_chunks, ctx).copy()
    if llm._model.add_bos_token() and llm.token_bos() >= 0:
        chunks[:, 0] = llm.token_bos()  # as llama-perplexity does
    return chunks


@dataclass(frozen=True)
class ReferenceLogits:
    """The reference's distributions at the scored positions, as :func:`compute_reference_logits` stored them."""

    meta: dict[str, Any]
    chunks: Ints
    top1: Ints
    full_logp: npt.NDArray[np.float16] | None = None
    top_ids: Ints | None = None
    top_logp: npt.NDArray[np.float32] | None = None
    rest_logp: Floats | None = None

    def kl(self, rows: slice, quant_logp: Floats) -> Floats:
        """KL(reference || quant) for the scored positions ``rows``, given the quant's log-probs there."""
        if self.full_logp is not None:
            return kl_full(log_softmax(self.full_logp[rows]), quant_logp)
        assert self.top_ids is not None and self.top_logp is not None and self.rest_logp is not None
        quant_top = np.take_along_axis(quant_logp, self.top_ids[rows].astype(np.intp), axis=-1)
        return kl_top_k(self.top_logp[rows], self.rest_logp[rows], quant_top)


def pack_reference(
    meta: dict[str, Any], chunks: Ints, logp: list[Floats], max_full_entries: int = FULL_LIMIT
) -> dict[str, npt.NDArray[Any]]:
    """The arrays stored for the reference: full float16 log-probs, or top-k when they would be too big."""
    rows = sum(len(part) for part in logp)
    full = rows * logp[0].shape[-1] <= max_full_entries
    arrays: dict[str, npt.NDArray[Any]] = {
        "meta": np.array(json.dumps(meta | {"storage": "full" if full else f"top-{TOP_K}"})),
        "chunks": chunks,
        "top1": np.concatenate([part.argmax(axis=-1) for part in logp]).astype(np.int32),
    }
    if full:
        arrays["full_logp"] = np.concatenate([part.astype(np.float16) for part in logp])
        return arrays
    tops = [top_k(part, TOP_K) for part in logp]
    arrays["top_ids"] = np.concatenate([ids for ids, _, _ in tops])
    arrays["top_logp"] = np.concatenate([lp for _, lp, _ in tops]).astype(np.float32)
    arrays["rest_logp"] = np.concatenate([rest for _, _, rest in tops])
    return arrays


def unpack_reference(arrays: dict[str, npt.NDArray[Any]]) -> ReferenceLogits:
    """The inverse of :func:`pack_reference`."""
    meta = json.loads(str(arrays["meta"]))
    if meta.get("storage") == "full":
        return ReferenceLogits(meta, arrays["chunks"], arrays["top1"], full_logp=arrays["full_logp"])
    return ReferenceLogits(
        meta,
        arrays["chunks"],
        arrays["top1"],
        top_ids=arrays["top_ids"],
        top_logp=arrays["top_logp"],
        rest_logp=arrays["rest_logp"],
    )


def _settings(recipe: Recipe, text: str) -> dict[str, Any]:
    q = recipe.smoke.quality
    return {
        "format": FORMAT,
        "context_length": q.context_length,
        "max_chunks": q.max_chunks,
        "text_sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
    }


def compute_reference_logits(
    reference_gguf: Path, recipe: Recipe, out: Path, *, max_full_entries: int = FULL_LIMIT
) -> None:
    """Evaluate the reference GGUF on the quality text and store its distributions in ``out`` (.npz).

    Written atomically. Compute it once per build; :func:`measure_quality` reads it for every quant.
    Above ``max_full_entries`` (positions x vocabulary) only the top ``TOP_K`` tokens are kept.
    """
    text = quality_text(recipe)
    first = recipe.smoke.quality.context_length // 2
    started = time.perf_counter()
    llm = _open_for_logits(reference_gguf, recipe)
    logp: list[Floats] = []
    nll: list[Floats] = []
    with closing(llm):
        chunks = _chunks(llm, text, recipe)
        n_vocab = int(llm.n_vocab())
        for chunk in chunks:
            part = _chunk_logp(llm, chunk, first)
            logp.append(part)
            nll.append(-part[np.arange(len(part)), chunk[first + 1 :]])
    all_nll = np.concatenate(nll)
    meta = _settings(recipe, text) | {
        "chunks": len(chunks),
        "first_scored": first,
        "positions": len(all_nll),
        "n_vocab": n_vocab,
        "reference": reference_gguf.name,
        "perplexity": float(np.exp(all_nll.mean(dtype=np.float64))),
        "seconds": round(time.perf_counter() - started, 3),
    }
    arrays = pack_reference(meta, chunks, logp, max_full_entries)
    with atomic_path(out) as tmp, tmp.open("wb") as handle:
        np.savez(handle, **arrays)  # type: ignore[arg-type]


def load_reference_logits(path: Path, recipe: Recipe | None = None) -> ReferenceLogits:
    """Read a reference-logits file; with ``recipe``, check it was made for the recipe's quality settings."""
    try:
        with np.load(path, allow_pickle=False) as data:
            ref = unpack_reference({key: data[key] for key in data.files})
    except (OSError, ValueError, KeyError, EOFError) as err:
        raise SmokeTestError(f"{path}: unreadable reference logits ({err}); delete it and rebuild") from None
    if recipe is not None:
        wanted = _settings(recipe, quality_text(recipe))
        stale = [key for key, value in wanted.items() if ref.meta.get(key) != value]
        if stale:
            raise SmokeTestError(
                f"{path}: reference logits were computed with other quality settings ({', '.join(stale)} changed); "
                "recompute them (publisher build --force smoke)"
            )
    return ref


def reference_quality(reference_logits: Path, recipe: Recipe) -> QualityResult:
    """The reference's own quality, read from its logits file instead of evaluating it a second time."""
    ref = load_reference_logits(reference_logits, recipe)
    return QualityResult(
        perplexity=round(float(ref.meta["perplexity"]), 4),
        kl_divergence=0.0,
        top1_agreement=1.0,
        tokens=int(ref.meta["positions"]),
    )


def measure_quality(gguf: Path, reference_logits: Path, recipe: Recipe) -> QualityResult:
    """Perplexity of ``gguf`` on the reference's tokens, its mean KL divergence from the reference,
    and the share of scored positions where both models' most likely token agrees."""
    ref = load_reference_logits(reference_logits, recipe)
    first = int(ref.meta["first_scored"])
    llm = _open_for_logits(gguf, recipe)
    nll: list[Floats] = []
    kl: list[Floats] = []
    agree: list[npt.NDArray[np.bool_]] = []
    row = 0
    with closing(llm):
        if int(llm.n_vocab()) != int(ref.meta["n_vocab"]):
            raise SmokeTestError(
                f"{gguf}: its vocabulary has {llm.n_vocab()} tokens, the reference's {ref.meta['n_vocab']}; "
                "it was not made from this reference"
            )
        for chunk in ref.chunks:
            logp = _chunk_logp(llm, chunk, first)
            rows = slice(row, row + len(logp))
            row += len(logp)
            nll.append(-logp[np.arange(len(logp)), chunk[first + 1 :]])
            kl.append(ref.kl(rows, logp))
            agree.append(logp.argmax(axis=-1) == ref.top1[rows])
    all_nll = np.concatenate(nll)
    return QualityResult(
        perplexity=round(float(np.exp(all_nll.mean(dtype=np.float64))), 4),
        kl_divergence=round(max(0.0, float(np.concatenate(kl).mean(dtype=np.float64))), 6),
        top1_agreement=round(float(np.concatenate(agree).mean()), 4),
        tokens=len(all_nll),
    )
