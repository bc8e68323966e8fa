"""Smoke test: load a GGUF with llama.cpp, ask the recipe's prompts, check the answers."""

from __future__ import annotations

import codecs
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from publisher import prompts
from publisher.manifest import SmokeAnswer, SmokeResult
from publisher.recipe import Expectation, Recipe, SmokePrompt
from publisher.runtimes.llama_cpp import open_model, vocab
from publisher.runtimes.memory import PeakMemory

# Asked when a recipe lists no smoke prompts, so that load, generation and speed are still tried.
DEFAULT_PROMPT = "Write one sentence about the sea."

# Text that marks the start of another turn in each named template. The turn markers of ChatML and
# Zephyr are special tokens, which generation already stops at; the strings catch a GGUF whose
# vocabulary lost them and prints them as plain text.
STOP_STRINGS: dict[str, tuple[str, ...]] = {
    "chatml": ("<|im_end|>", "<|im_start|>"),
    "llama-2-chat": ("[INST]", "</s>"),
    "mistral": ("[INST]", "</s>"),
    "vicuna": ("USER:", "</s>"),
    "alpaca": ("### Instruction:", "</s>"),
    "zephyr": ("</s>", "<|user|>"),
    "none": (),
}

REPLACEMENT_CHARACTER = "\ufffd"
DEFAULT_BATCH = 512  # llama.cpp's n_batch and n_ubatch unless told otherwise


@dataclass
class Generation:
    """One deterministic answer and what llama.cpp measured while making it."""

    text: str
    tokens: int
    prompt_tokens: int
    prompt_ms: float
    generate_ms: float
    generated_evals: int
    stopped_by: str  # "eog", "control", "stop-string", "max-tokens"


def stop_strings(template: str) -> tuple[str, ...]:
    """Strings that end an answer for a named template; none for a literal template."""
    return STOP_STRINGS.get(template.strip().lower(), ())


def _shorten(text: str, limit: int = 80) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def applies(expectation: Expectation, quant_type: str) -> bool:
    """Whether an expectation is checked for ``quant_type`` (no ``types`` means every type)."""
    return expectation.types is None or quant_type.upper() in {t.upper() for t in expectation.types}


def check_answer(answer: str, expectations: list[Expectation], quant_type: str) -> tuple[list[str], list[str]]:
    """Check one answer; returns ``(problems, advisories)`` as one-line messages.

    An empty answer or one holding U+FFFD (bytes that are not UTF-8) is always a problem; a
    failed expectation is a problem when required and an advisory otherwise.
    """
    problems: list[str] = []
    advisories: list[str] = []
    if not answer.strip():
        problems.append("the answer is empty")
    if REPLACEMENT_CHARACTER in answer:
        problems.append("the answer holds U+FFFD replacement characters (invalid UTF-8 from the vocabulary)")
    folded = answer.casefold()
    for expectation in expectations:
        if not applies(expectation, quant_type):
            continue
        failures = [f"lacks {word!r}" for word in expectation.contains if word.casefold() not in folded]
        failures += [f"contains {word!r}" for word in expectation.not_contains if word.casefold() in folded]
        for failure in failures:
            message = f"the answer {failure}: {_shorten(answer)!r}"
            (problems if expectation.required else advisories).append(message)
    return problems, advisories


def _cut_at_stop(text: str, stops: tuple[str, ...]) -> tuple[str, bool]:
    cuts = [text.find(s) for s in stops if s and s in text]
    if not cuts:
        return text, False
    return text[: min(cuts)], True


def generate(
    llm: Any,
    prompt_text: str,
    max_tokens: int,
    stops: tuple[str, ...] = (),
    context_length: int | None = None,
    on_generating: Callable[[], None] | None = None,
) -> Generation:
    """Greedy generation of up to ``max_tokens`` after ``prompt_text`` (special tokens parsed).

    Stops at an end-of-generation token (``<|im_end|>`` for ChatML models whose GGUF marks it so),
    at any other control token (a new turn marker), or at one of ``stops`` in the text.
    ``context_length`` caps prompt and answer below the context ``llm`` was opened with.
    ``on_generating`` is called once the prompt is evaluated, as llama.cpp starts generating one
    token at a time on ``n_threads`` (by default half the cores, where the prompt used them all).
    """
    import llama_cpp

    prompt_tokens = llm.tokenize(prompt_text.encode("utf-8"), add_bos=True, special=True)
    n_ctx = min(llm.n_ctx(), context_length or llm.n_ctx())
    room = n_ctx - len(prompt_tokens)
    if room <= 0:
        raise ValueError(f"the prompt takes {len(prompt_tokens)} tokens, more than the context of {n_ctx}")
    max_tokens = min(max_tokens, room)
    voc = vocab(llm)
    # incomplete UTF-8 at the end (a character cut off by max_tokens) stays in the decoder, dropped
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    text = ""
    count = 0
    stopped_by = "max-tokens"
    llm.reset()
    llama_cpp.llama_perf_context_reset(llm.ctx)
    started = time.perf_counter()
    for token in llm.generate(prompt_tokens, temp=0.0, top_k=1, top_p=1.0, min_p=0.0, repeat_penalty=1.0):
        if on_generating is not None and count == 0:
            on_generating()
        if llama_cpp.llama_vocab_is_eog(voc, token):
            stopped_by = "eog"
            break
        if llama_cpp.llama_vocab_is_control(voc, token):
            stopped_by = "control"
            break
        count += 1
        text += decoder.decode(llm.detokenize([token]))
        text, hit = _cut_at_stop(text, stops)
        if hit:
            stopped_by = "stop-string"
            break
        if count >= max_tokens:
            break
    wall_ms = (time.perf_counter() - started) * 1000
    perf = llama_cpp.llama_perf_context(llm.ctx)
    prompt_ms, generate_ms, evals = float(perf.t_p_eval_ms), float(perf.t_eval_ms), int(perf.n_eval)
    if evals == 0 and count > 1:  # perf counters off: fall back to wall-clock time
        prompt_ms, generate_ms, evals = 0.0, wall_ms, count
    return Generation(
        text=text.strip(),
        tokens=count,
        prompt_tokens=int(perf.n_p_eval) or len(prompt_tokens),
        prompt_ms=prompt_ms,
        generate_ms=generate_ms,
        generated_evals=evals,
        stopped_by=stopped_by,
    )


def prompts_of(recipe: Recipe) -> list[SmokePrompt]:
    """The recipe's smoke prompts, or one default prompt when it lists none."""
    return list(recipe.smoke.prompts) or [SmokePrompt(prompt=DEFAULT_PROMPT)]


def system_message(recipe: Recipe, prompt: SmokePrompt) -> str:
    """The prompt's own system message, else the model's."""
    return prompt.system_message if prompt.system_message is not None else recipe.model.system_message


@dataclass(frozen=True)
class LoadedModel:
    """A GGUF loaded once as the smoke prompts need it; tokenizer and template parity read the same handle.

    ``memory`` started just before the load: the smoke result's peak counts the load and everything
    done with the handle since.
    """

    llm: Any
    load_s: float
    memory: PeakMemory


def check_context(recipe: Recipe) -> dict[str, int]:
    """llama.cpp context settings under which one load serves the smoke prompts and the quality pass.

    The prompts get llama.cpp's default batch of 512 tokens, answers capped at ``smoke.context_length``
    by :func:`generate`. With quality on, the context also holds one chunk of ``quality.context_length``
    tokens, evaluated in one micro-batch as llama-perplexity does; the micro-batch is the chunk, not
    llama.cpp's 512, because llama.cpp's scratch grows with it (a vocabulary row per token): a prompt
    longer than the chunk is evaluated in several micro-batches.
    """
    smoke = recipe.smoke
    settings = {"n_ctx": smoke.context_length, "n_gpu_layers": smoke.gpu_layers, "seed": smoke.seed}
    if smoke.quality.enabled:
        chunk = smoke.quality.context_length
        batch = max(DEFAULT_BATCH, chunk)
        settings |= {"n_ctx": max(smoke.context_length, chunk), "n_batch": batch, "n_ubatch": chunk}
    return settings


def open_for_checks(gguf: Path, recipe: Recipe) -> LoadedModel:
    """Load ``gguf`` once for every check (:func:`check_context`); close ``.llm`` when done."""
    memory = PeakMemory()
    started = time.perf_counter()
    llm = open_model(gguf, **check_context(recipe))
    load_s = time.perf_counter() - started
    memory.sample()
    return LoadedModel(llm, load_s, memory)


def smoke_test(
    gguf: Path,
    recipe: Recipe,
    quant_type: str,
    loaded: LoadedModel | None = None,
    on_generating: Callable[[], None] | None = None,
) -> SmokeResult:
    """Load ``gguf`` as the recipe says, answer each smoke prompt greedily and check the answers.

    ``tokens_per_s`` and ``prompt_tokens_per_s`` are llama.cpp's own timings over all prompts;
    ``peak_rss_bytes`` is the resident memory that loading and generating added to the process
    (see :class:`~publisher.runtimes.memory.PeakMemory`). Raises
    :class:`~publisher.errors.SmokeTestError` when the file cannot be loaded at all. With
    ``loaded`` (:func:`open_for_checks`), that handle is used and left open for its owner.
    ``on_generating``: see :func:`generate` (called for the first prompt only).
    """
    if loaded is None:
        loaded = open_for_checks(gguf, recipe)
        with closing(loaded.llm):
            return _answer(loaded, recipe, quant_type, on_generating)
    return _answer(loaded, recipe, quant_type, on_generating)


def _answer(
    loaded: LoadedModel, recipe: Recipe, quant_type: str, on_generating: Callable[[], None] | None
) -> SmokeResult:
    """The prompts on an open model, each answer checked."""
    smoke = recipe.smoke
    stops = stop_strings(recipe.model.prompt_template)
    memory = loaded.memory
    answers: list[SmokeAnswer] = []
    prompt_tokens = prompt_ms = evals = generate_ms = 0.0
    for index, item in enumerate(prompts_of(recipe)):
        text = prompts.render(recipe.model.prompt_template, item.prompt, system_message(recipe, item))
        try:
            first = on_generating if index == 0 else None
            gen = generate(loaded.llm, text, smoke.max_tokens, stops, smoke.context_length, first)
        except ValueError as err:
            answers.append(SmokeAnswer(prompt=item.prompt, output="", passed=False, problems=[f"{err}"]))
            continue
        memory.sample()
        problems, advisories = check_answer(gen.text, item.expectations(), quant_type)
        answers.append(
            SmokeAnswer(
                prompt=item.prompt, output=gen.text, passed=not problems, problems=problems, advisories=advisories
            )
        )
        prompt_tokens += gen.prompt_tokens
        prompt_ms += gen.prompt_ms
        evals += gen.generated_evals
        generate_ms += gen.generate_ms
    peak = memory.peak_bytes()
    return SmokeResult(
        passed=all(a.passed for a in answers),
        output=answers[0].output,
        answers=answers,
        tokens_per_s=round(evals / generate_ms * 1000, 2) if generate_ms > 0 and evals else None,
        prompt_tokens_per_s=round(prompt_tokens / prompt_ms * 1000, 2) if prompt_ms > 0 else None,
        load_s=round(loaded.load_s, 3),
        peak_rss_bytes=peak,
    )


def smoke_problems(result: SmokeResult) -> list[str]:
    """Every required check that failed, each prefixed with its prompt, for a failure message."""
    return [f"{_shorten(a.prompt, 40)!r}: {p}" for a in result.answers for p in a.problems]
