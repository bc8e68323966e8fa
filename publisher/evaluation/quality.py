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
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, closing, nullcontext
from dataclasses import dataclass, field
from functools import partial
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from publisher.errors import SmokeTestError
from publisher.manifest import QualityResult, atomic_path
from publisher.recipe import Recipe
from publisher.runtimes.llama_cpp import open_model, score_chunk

TOP_K = 1024
FULL_LIMIT = 64 * 1024 * 1024  # stored log-probs (128 MiB as float16) before top-k takes over
FORMAT = 1
TEXT_FILE = "quality.txt"

Floats = npt.NDArray[np.floating[Any]]
Ints = npt.NDArray[np.int32]
T = TypeVar("T")
Kept = npt.NDArray[np.float16] | tuple[Ints, Floats, Floats]  # one chunk of the reference, as stored


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


def row_logsumexp(x: Floats) -> npt.NDArray[np.float64]:
    """``log(sum(exp(x)))`` per row of float32 ``x`` (float64 sums)."""
    peak = x.max(axis=-1, keepdims=True)
    expd: Floats = x - peak
    np.exp(expd, out=expd)  # in place: one row-sized temporary, not two
    lse: npt.NDArray[np.float64] = peak[:, 0].astype(np.float64) + np.log(expd.sum(axis=-1, dtype=np.float64))
    return lse


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


def _opened_for_logits(gguf: Path, recipe: Recipe, llm: Any) -> AbstractContextManager[Any]:
    """``llm`` as it is (its owner closes it), or ``gguf`` loaded for one chunk per batch and closed after."""
    if llm is not None:
        return nullcontext(llm)
    ctx = recipe.smoke.quality.context_length
    settings = {"n_ctx": ctx, "n_batch": ctx, "n_ubatch": ctx}
    return closing(open_model(gguf, n_gpu_layers=recipe.smoke.gpu_layers, seed=recipe.smoke.seed, **settings))


def _in_halves(pool: ThreadPoolExecutor, work: Callable[[slice], T], rows: int) -> list[T]:
    """``work`` on the first and the second half of ``rows`` rows, in two threads: numpy releases the
    GIL over whole-row loops, so the work after each evaluation uses both cores, as llama.cpp did."""
    half = rows // 2
    return [future.result() for future in [pool.submit(work, part) for part in (slice(0, half), slice(half, rows))]]


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
    row_norms: dict[tuple[int, int], npt.NDArray[np.float64]] = field(default_factory=dict, compare=False, repr=False)

    def kl(self, rows: slice, scores: Floats, lse: npt.NDArray[np.float64] | None = None) -> Floats:
        """KL(reference || quant) for the scored positions ``rows``, given the quant's raw logits there
        (or its log-probs) and their row log-sum-exps (see :func:`score_chunk`; computed when not given).

        With full storage this is :func:`kl_full` of the renormalised reference against the quant's
        log-softmax, computed without either array: ``sum p (r - q)`` with ``r - q`` formed as
        ``(reference - scores) + (lse_quant - lse_reference)``, so the float32 sum runs over terms
        that are small where ``p`` is large; ``lse_reference`` (which renormalises the float16 rows) is
        computed for the first quant and kept in ``row_norms`` for the others.
        """
        if lse is None:
            lse = row_logsumexp(np.asarray(scores, dtype=np.float32))
        if self.full_logp is None:
            assert self.top_ids is not None and self.top_logp is not None and self.rest_logp is not None
            quant_top = np.take_along_axis(scores, self.top_ids[rows].astype(np.intp), axis=-1) - lse[:, None]
            return kl_top_k(self.top_logp[rows], self.rest_logp[rows], quant_top.astype(np.float32))
        diff = self.full_logp[rows].astype(np.float32)
        ref_lse = self.row_norms.get((rows.start, rows.stop))
        if ref_lse is None:  # the same for every quant: computed for the first, kept for the others
            ref_lse = self.row_norms[(rows.start, rows.stop)] = row_logsumexp(diff)
        p = np.exp(diff - ref_lse.astype(np.float32)[:, None])
        diff -= scores
        diff += (lse - ref_lse).astype(np.float32)[:, None]
        result: Floats = np.einsum("ij,ij->i", p, diff).astype(np.float64)
        inexact = ~np.isfinite(result)  # a token the stored reference rules out (-inf): 0 * inf
        if inexact.any():
            ref = log_softmax(self.full_logp[rows][inexact])
            result[inexact] = kl_full(ref, scores[inexact] - lse[inexact, None])
        return result


def pack_reference(
    meta: dict[str, Any], chunks: Ints, logp: list[Floats], max_full_entries: int = FULL_LIMIT
) -> dict[str, npt.NDArray[Any]]:
    """The arrays stored for the reference: full float16 log-probs, or top-k when they would be too big."""
    full = sum(len(part) for part in logp) * logp[0].shape[-1] <= max_full_entries
    top1 = [part.argmax(axis=-1) for part in logp]
    kept: list[Kept] = [part.astype(np.float16) if full else top_k(part, TOP_K) for part in logp]
    return _pack(meta, chunks, top1, kept, full)


def _pack(meta: dict[str, Any], chunks: Ints, top1: list[Ints], kept: list[Kept], full: bool) -> dict[str, Any]:
    arrays: dict[str, npt.NDArray[Any]] = {
        "meta": np.array(json.dumps(meta | {"storage": "full" if full else f"top-{TOP_K}"})),
        "chunks": chunks,
        "top1": np.concatenate(top1).astype(np.int32),
    }
    if full:
        parts = [part for part in kept if not isinstance(part, tuple)]
        arrays["full_logp"] = parts[0] if len(parts) == 1 else np.concatenate(parts)
        return arrays
    tops = [part for part in kept if isinstance(part, tuple)]
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


def _reduce_reference_rows(
    stored: npt.NDArray[np.float16] | None, offset: int, scores: Floats, targets: Ints, part: slice
) -> tuple[Floats, Ints, Kept | None]:
    """The reference's negative log-likelihoods, top-1 ids and stored log-probs for the rows ``part`` of a chunk.

    With full storage the log-probs go straight into rows ``offset + part`` of ``stored`` (every
    scored row of the reference, allocated once: no per-chunk copies to join); otherwise their top
    ``TOP_K`` are returned.
    """
    scores, targets = scores[part], targets[part]
    lse = row_logsumexp(scores)
    kept: Kept | None = None
    if stored is None:
        kept = top_k(scores - lse.astype(np.float32)[:, None], TOP_K)
    else:  # straight into the float16 rows: no float32 copy (the reference's evaluation is the stage's peak)
        rows = stored[offset + part.start : offset + part.stop]
        np.subtract(scores, lse.astype(np.float32)[:, None], out=rows, casting="same_kind")
    return lse - scores[np.arange(len(lse)), targets], scores.argmax(axis=-1).astype(np.int32), kept


def _score_rows(
    ref: ReferenceLogits, offset: int, scores: Floats, targets: Ints, part: slice
) -> tuple[Floats, Floats, npt.NDArray[np.bool_]]:
    """A quant's negative log-likelihoods, KL divergences and top-1 agreement for the rows ``part`` of the
    chunk whose first scored row is row ``offset`` of the reference."""
    rows = slice(offset + part.start, offset + part.stop)
    scores, targets = scores[part], targets[part]
    lse = row_logsumexp(scores)
    agree: npt.NDArray[np.bool_] = scores.argmax(axis=-1) == ref.top1[rows]
    return lse - scores[np.arange(len(lse)), targets], ref.kl(rows, scores, lse), agree


def compute_reference_logits(
    reference_gguf: Path, recipe: Recipe, out: Path, *, max_full_entries: int = FULL_LIMIT, llm: Any = None
) -> ReferenceLogits:
    """Evaluate the reference GGUF on the quality text and store its distributions in ``out`` (.npz).

    Written atomically. Compute it once per build; :func:`measure_quality` reads it for every quant
    (or takes the returned distributions, which are what ``out`` holds, without reading them back).
    Above ``max_full_entries`` (positions x vocabulary) only the top ``TOP_K`` tokens are kept.
    ``llm``: the file already open with room for a chunk in one batch, left open; else it is loaded.
    """
    text = quality_text(recipe)
    first = recipe.smoke.quality.context_length // 2
    started = time.perf_counter()
    kept: list[Kept] = []
    top1: list[Ints] = []
    nll: list[Floats] = []
    with _opened_for_logits(reference_gguf, recipe, llm) as llm:
        chunks = _chunks(llm, text, recipe)
        n_vocab = int(llm.n_vocab())
        # each chunk is reduced to what is stored as soon as it is evaluated: no float32 copy of them all
        rows = chunks.shape[1] - 1 - first
        full = len(chunks) * rows * n_vocab <= max_full_entries
        stored = np.empty((len(chunks) * rows, n_vocab), dtype=np.float16) if full else None
        with ThreadPoolExecutor(2, thread_name_prefix="quality") as pool:
            for index, chunk in enumerate(chunks):
                scores, targets = score_chunk(llm, chunk.tolist(), first), chunk[first + 1 :]
                reduce = partial(_reduce_reference_rows, stored, index * rows, scores, targets)
                halves = _in_halves(pool, reduce, len(scores))
                nll.extend(h[0] for h in halves)
                top1.extend(h[1] for h in halves)
                kept.extend(h[2] for h in halves if h[2] is not None)
        if stored is not None:
            kept.append(stored)
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
    arrays = _pack(meta, chunks, top1, kept, full)
    with atomic_path(out) as tmp, tmp.open("wb") as handle:
        np.savez(handle, **arrays)
    return unpack_reference(arrays)


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


def _reference(reference_logits: Path | ReferenceLogits, recipe: Recipe) -> ReferenceLogits:
    """The reference's distributions: as given, or read from their file and checked against ``recipe``."""
    if isinstance(reference_logits, ReferenceLogits):
        return reference_logits
    return load_reference_logits(reference_logits, recipe)


def reference_quality(reference_logits: Path | ReferenceLogits, recipe: Recipe) -> QualityResult:
    """The reference's own quality, read from its logits instead of evaluating it a second time."""
    ref = _reference(reference_logits, recipe)
    return QualityResult(
        perplexity=round(float(ref.meta["perplexity"]), 4),
        kl_divergence=0.0,
        top1_agreement=1.0,
        tokens=int(ref.meta["positions"]),
    )


def measure_quality(
    gguf: Path, reference_logits: Path | ReferenceLogits, recipe: Recipe, llm: Any = None
) -> QualityResult:
    """Perplexity of ``gguf`` on the reference's tokens, its mean KL divergence from the reference,
    and the share of scored positions where both models' most likely token agrees (``llm``: as for
    :func:`compute_reference_logits`)."""
    ref = _reference(reference_logits, recipe)
    first = int(ref.meta["first_scored"])
    nll: list[Floats] = []
    kl: list[Floats] = []
    agree: list[npt.NDArray[np.bool_]] = []
    row = 0
    with _opened_for_logits(gguf, recipe, llm) as llm:
        if int(llm.n_vocab()) != int(ref.meta["n_vocab"]):
            raise SmokeTestError(
                f"{gguf}: its vocabulary has {llm.n_vocab()} tokens, the reference's {ref.meta['n_vocab']}; "
                "it was not made from this reference"
            )
        with ThreadPoolExecutor(2, thread_name_prefix="quality") as pool:
            for chunk in ref.chunks:
                scores, targets = score_chunk(llm, chunk.tolist(), first), chunk[first + 1 :]
                work = partial(_score_rows, ref, row, scores, targets)
                for part_nll, part_kl, part_agree in _in_halves(pool, work, len(scores)):
                    nll.append(part_nll)
                    kl.append(part_kl)
                    agree.append(part_agree)
                row += len(scores)
    all_nll = np.concatenate(nll)
    return QualityResult(
        perplexity=round(float(np.exp(all_nll.mean(dtype=np.float64))), 4),
        kl_divergence=round(max(0.0, float(np.concatenate(kl).mean(dtype=np.float64))), 6),
        top1_agreement=round(float(np.concatenate(agree).mean()), 4),
        tokens=len(all_nll),
    )
