"""The quality section: publisher's perplexity and KL divergence against llama.cpp's own ``llama-perplexity``.

Both sides run in a fresh process (``bench.worker``), alternately, on the same files:

- ``stage`` (:func:`publisher_side`): the smoke stage's quality code, nothing else. The reference's
  distributions are computed and stored once (``compute_reference_logits``), the reference's own
  perplexity is read back from them (``reference_quality``), then each quant is measured
  (``measure_quality``: perplexity, mean KL divergence, top-1 agreement). Timed from before the
  reference is loaded to after the last quant's figures; interpreter start and imports are not.
- ``direct`` (:func:`direct_side`): ``llama-perplexity`` run as a user would for the same figures:
  once on the reference with ``--kl-divergence-base`` (it writes its log-probabilities and tokens),
  then once per quant with ``--kl-divergence`` (which reads the tokens back from that file). Same
  text file, context (``-c``), chunks (``--chunks``), threads and GPU layers; ``-b`` set to the
  context so each pass evaluates one chunk, as publisher does (llama-perplexity would otherwise put
  several chunks in one batch), and flash attention off, as llama-cpp-python has it by default
  (llama-perplexity's ``auto`` turns it on, which moves a Q2_K's perplexity by a few tenths of a
  percent). Whole processes, timed one after the other.

Tokens: publisher tokenizes the text without BOS and sets each chunk's first token to BOS when the
model adds one; llama-perplexity tokenizes with BOS prepended to the whole text and sets the same
first tokens at evaluation. For a model that adds no BOS (SmolLM2) the chunks are identical; for one
that does, llama-perplexity's chunks are shifted by that one token. ``same_tokens`` says which (it
compares the tokens stored in llama-perplexity's base file with publisher's reference logits file).
Both score the second half of each chunk. llama-perplexity keeps the reference's log-probabilities
as 16-bit integers over each row's range; publisher as float16 (or the top 1024 for vocabularies too
large to keep whole), so their KL divergences differ in the last digits.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.compare import compare, prepare
from bench.proc import BenchError, Measured, warm
from bench.subjects import Bench, Subject

BASE_MAGIC = b"_logits_"
# llama-perplexity's summary lines (tools/perplexity/perplexity.cpp)
_FINAL = re.compile(r"Final estimate: PPL = ([0-9.]+)")
_MEAN_PPL = re.compile(r"Mean PPL\(Q\)\s*:\s*([0-9.]+)")
_MEAN_KLD = re.compile(r"Mean\s+KLD:\s*(-?[0-9.]+)")
_SAME_TOP = re.compile(r"Same top p:\s*([0-9.]+)")


def parse_perplexity_log(text: str) -> dict[str, float]:
    """The figures llama-perplexity printed: ``perplexity``, and with ``--kl-divergence`` also
    ``kl_divergence`` and ``top1_agreement`` (a fraction, as publisher keeps it)."""
    found: dict[str, float] = {}
    if (kld := _MEAN_KLD.search(text)) is not None:
        mean_ppl, same_top = _MEAN_PPL.search(text), _SAME_TOP.search(text)
        if mean_ppl is None or same_top is None:
            raise BenchError("llama-perplexity printed a KL divergence without its perplexity or top-1 agreement")
        found = {
            "perplexity": float(mean_ppl[1]),
            "kl_divergence": float(kld[1]),
            "top1_agreement": float(same_top[1]) / 100.0,
        }
    elif (final := _FINAL.search(text)) is not None:
        found = {"perplexity": float(final[1])}
    else:
        raise BenchError("llama-perplexity printed no final perplexity")
    return found


def base_file_tokens(path: Path) -> np.ndarray[Any, np.dtype[np.int32]]:
    """The chunks of tokens a ``--kl-divergence-base`` file holds, ``(chunks, context)``."""
    with path.open("rb") as handle:
        if handle.read(len(BASE_MAGIC)) != BASE_MAGIC:
            raise BenchError(f"{path}: not a llama-perplexity log-probabilities file")
        n_ctx, _n_vocab, n_chunk = np.fromfile(handle, dtype=np.int32, count=3)
        tokens = np.fromfile(handle, dtype=np.int32, count=int(n_chunk) * int(n_ctx))
    return tokens.reshape(int(n_chunk), int(n_ctx))


def same_tokens(publisher_chunks: np.ndarray[Any, Any], direct_chunks: np.ndarray[Any, Any]) -> dict[str, bool]:
    """Whether both sides evaluated the same tokens: every chunk's tokens after the first, and the first ones
    (both sides set those to BOS at evaluation when the model adds one)."""
    if publisher_chunks.shape != direct_chunks.shape:
        return {"same_tokens": False, "same_first_tokens": False}
    return {
        "same_tokens": bool((publisher_chunks[:, 1:] == direct_chunks[:, 1:]).all()),
        "same_first_tokens": bool((publisher_chunks[:, 0] == direct_chunks[:, 0]).all()),
    }


# -- the two sides, each run by bench.worker in a fresh process --------------------------------


def publisher_side(args: dict[str, Any]) -> dict[str, Any]:
    """The smoke stage's quality measurement: the reference's logits once, then every quant against them."""
    from bench.worker import cpu_seconds
    from publisher import evaluation
    from publisher.recipe import load_recipe

    recipe = load_recipe(Path(args["recipe"]))
    logits = Path(args["logits"])
    figures: dict[str, dict[str, float]] = {}
    started, cpu = time.perf_counter(), cpu_seconds()
    reference = evaluation.compute_reference_logits(Path(args["reference"]), recipe, logits)  # kept, as the stage
    figures[Path(args["reference"]).name] = evaluation.reference_quality(reference, recipe).model_dump(mode="json")
    for quant in args["quants"]:
        figures[Path(quant).name] = evaluation.measure_quality(Path(quant), reference, recipe).model_dump(mode="json")
    return {"work_s": time.perf_counter() - started, "cpu_s": cpu_seconds() - cpu, "files": figures}


def perplexity_commands(args: dict[str, Any]) -> list[list[str]]:
    """llama-perplexity's command lines: the reference with ``--kl-divergence-base``, then each quant."""
    common = ["-c", str(args["context"]), "-b", str(args["context"]), "-t", str(args["threads"])]
    # flash attention off: llama-cpp-python's default, which publisher keeps
    common += ["-ngl", str(args["gpu_layers"]), "-fa", "off", "--kl-divergence-base", args["base"]]
    reference = [args["program"], "-m", args["reference"], "-f", args["text"], "--chunks", str(args["chunks"])]
    return [reference + common] + [[args["program"], "-m", q, *common, "--kl-divergence"] for q in args["quants"]]


def direct_side(args: dict[str, Any]) -> dict[str, Any]:
    """llama-perplexity on the reference (writing the base file), then on each quant against it."""
    from bench.worker import cpu_seconds

    figures: dict[str, dict[str, float]] = {}
    started, cpu = time.perf_counter(), cpu_seconds()
    for cmd in perplexity_commands(args):
        done = subprocess.run(cmd, capture_output=True, text=True, errors="replace", check=False)
        if done.returncode != 0:
            tail = (done.stdout + done.stderr).strip().splitlines()[-5:]
            raise SystemExit(f"{' '.join(cmd)} exited with {done.returncode}:\n" + "\n".join(tail))
        figures[Path(cmd[cmd.index("-m") + 1]).name] = parse_perplexity_log(done.stdout + done.stderr)
    return {"work_s": time.perf_counter() - started, "cpu_s": cpu_seconds() - cpu, "files": figures}


# -- the section ---------------------------------------------------------------------------------


def agreement(publisher: dict[str, dict[str, Any]], direct: dict[str, dict[str, float]]) -> dict[str, Any]:
    """Both sides' figures per file, and the largest relative difference of each figure over the files."""
    files: dict[str, Any] = {}
    worst: dict[str, float] = {}
    for name, theirs in direct.items():
        ours = publisher[name]
        files[name] = {"publisher": {k: ours[k] for k in theirs}, "direct": theirs}
        for key, value in theirs.items():
            if key == "kl_divergence" and value == 0:
                continue
            diff = abs(float(ours[key]) - value) / abs(value) if value else abs(float(ours[key]))
            worst[key] = max(worst.get(key, 0.0), diff)
    return {"files": files, "max_relative_difference": {k: round(v, 5) for k, v in worst.items()}}


def bench_quality(bench: Bench, subject: Subject) -> dict[str, Any]:
    """Publisher's quality measurement against llama-perplexity on the same files, text, context and chunks."""
    from publisher.evaluation import quality
    from publisher.recipe import load_recipe
    from publisher.runtimes import llama_cpp

    program = llama_cpp.tool("llama-perplexity")
    if program is None:
        raise BenchError(f"llama-perplexity is not built in {llama_cpp.tools_dir()}; run `make tools`")
    prepare(bench, subject, "quantize")
    recipe = load_recipe(subject.recipe_path)
    manifest = subject.manifest()
    folder = subject.folder / "quality"
    folder.mkdir(parents=True, exist_ok=True)
    text = folder / "quality.txt"
    text.write_text(quality.quality_text(recipe), encoding="utf-8")
    reference = subject.reference()
    quants = [str(subject.build_dir / manifest["artifacts"][t]["path"]) for t in subject.types]
    settings = recipe.smoke.quality
    ours: dict[str, Any] = {
        "side": "publisher",
        "recipe": str(subject.recipe_path),
        "reference": str(reference),
        "quants": quants,
    }
    ours["logits"] = str(folder / "reference-logits.npz")
    theirs: dict[str, Any] = {
        "side": "direct",
        "program": str(program),
        "reference": str(reference),
        "quants": quants,
        "text": str(text),
        "context": settings.context_length,
        "chunks": settings.max_chunks,
        "threads": os.cpu_count() or 1,
        "gpu_layers": recipe.smoke.gpu_layers,
        "base": str(folder / "kld-base.bin"),
    }
    warm([reference, *map(Path, quants)])
    reports: dict[str, dict[str, Any]] = {}

    def run(args: dict[str, Any]) -> tuple[Measured, float, float]:
        measured = bench.worker("quality", args)
        reports[args["side"]] = measured.report
        return measured, float(measured.report["work_s"]), float(measured.report["cpu_s"])

    entry = compare(bench, subject, "quality", lambda: run(ours), lambda: run(theirs))
    with np.load(ours["logits"]) as stored:
        tokens = same_tokens(stored["chunks"], base_file_tokens(Path(theirs["base"])))
    settings_used = {k: theirs[k] for k in ("context", "chunks", "threads", "gpu_layers")}
    commands = [" ".join(cmd) for cmd in perplexity_commands(theirs)]
    return quality_entry(entry, reports, tokens, settings_used, commands)


def quality_entry(
    base: dict[str, Any],
    reports: dict[str, dict[str, Any]],
    tokens: dict[str, bool],
    settings: dict[str, Any],
    commands: list[str],
) -> dict[str, Any]:
    """The per-model entry: ``base`` (the ``compare`` entry) with what was run and how the figures agree."""
    return base | {
        "sides": {"stage": "publisher's quality code (smoke stage)", "direct": "llama-perplexity --kl-divergence"},
        "settings": settings,
        "commands": commands,
        **tokens,
        **agreement(reports["publisher"]["files"], reports["direct"]["files"]),
    }
