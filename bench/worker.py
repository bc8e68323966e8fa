"""The child side of each measurement: ``python -m bench.worker TASK ARGS.json REPORT.json``.

Each task runs in a fresh interpreter started by :mod:`bench.proc`, does one piece of work and
writes a JSON report (its own timing of the work, plus counts). The publisher tasks call the real
library code (``pipeline.execute``, ``cards.render_card``, the publish API); the ``direct``
tasks call llama.cpp through llama-cpp-python and never import ``publisher``.
"""

from __future__ import annotations

import ctypes
import json
import resource
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

Report = dict[str, Any]


# ---------------------------------------------------------------------------------------------
# Counting what llama.cpp is asked to do (for the smoke stage: loads and quality batches per file)
# ---------------------------------------------------------------------------------------------


def load_kind(kwargs: dict[str, Any]) -> str:
    """What a ``Llama(**kwargs)`` load holds: ``vocab`` (vocab_only) or ``model`` (the weights too)."""
    return "vocab" if kwargs.get("vocab_only") else "model"


@contextmanager
def counting_llama() -> Iterator[dict[str, Counter[str]]]:
    """Count ``Llama`` loads by kind, evaluated tokens and quality batches, per model file, while the block runs.

    The real methods run; they are wrapped, not replaced. Kinds as :func:`load_kind` names them; a
    quality batch is a decode that asks for the logits of more than one position (a chunk of the
    quality text; generation asks for one).
    """
    import llama_cpp
    from llama_cpp._internals import LlamaContext

    counts: dict[str, Counter[str]] = {}
    original_init: Callable[..., None] = llama_cpp.Llama.__init__
    original_eval: Callable[..., None] = llama_cpp.Llama.eval
    original_decode: Callable[..., None] = LlamaContext.decode

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        path = Path(str(kwargs.get("model_path", args[0] if args else "?"))).name
        kind = load_kind(kwargs)
        counts.setdefault(path, Counter())[f"load_{kind}"] += 1
        original_init(self, *args, **kwargs)

    def evaluate(self: Any, tokens: Any) -> None:
        counts.setdefault(Path(self.model_path).name, Counter())["eval_tokens"] += len(tokens)
        original_eval(self, tokens)

    def decode(self: Any, batch: Any) -> None:
        if sum(bool(batch.batch.logits[i]) for i in range(batch.n_tokens())) > 1:
            counts.setdefault(Path(self.model.path_model).name, Counter())["quality_batches"] += 1
        original_decode(self, batch)

    llama_cpp.Llama.__init__ = init  # type: ignore[method-assign]
    llama_cpp.Llama.eval = evaluate  # type: ignore[method-assign]
    LlamaContext.decode = decode  # type: ignore[method-assign]
    try:
        yield counts
    finally:
        llama_cpp.Llama.__init__ = original_init  # type: ignore[method-assign]
        llama_cpp.Llama.eval = original_eval  # type: ignore[method-assign]
        LlamaContext.decode = original_decode  # type: ignore[method-assign]


def cpu_seconds() -> float:
    """User + system CPU of this process and of the children it has waited for."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


@contextmanager
def timing_stages() -> Iterator[dict[str, dict[str, float]]]:
    """Wall and CPU seconds of each stage's ``run`` (the real method, wrapped) while the block runs."""
    from publisher.stages import STAGES, load_stages

    load_stages()
    times: dict[str, dict[str, float]] = {}
    originals: dict[str, Callable[..., None]] = {}
    for name, factory in STAGES.items():
        cls = cast(Any, factory)
        originals[name] = cls.run

        def timed(self: Any, ctx: Any, _run: Callable[..., None] = cls.run, _name: str = name) -> None:
            wall, cpu = time.perf_counter(), cpu_seconds()
            try:
                _run(self, ctx)
            finally:
                times[_name] = {"wall_s": time.perf_counter() - wall, "cpu_s": cpu_seconds() - cpu}

        cls.run = timed
    try:
        yield times
    finally:
        for name, run in originals.items():
            cast(Any, STAGES[name]).run = run


# ---------------------------------------------------------------------------------------------
# publisher side
# ---------------------------------------------------------------------------------------------


@contextmanager
def counting_calls(
    module: Any, names: tuple[str, ...], seconds: dict[str, float] | None = None
) -> Iterator[Counter[str]]:
    """Count calls of ``module.<name>`` (the real functions run; the attributes are wrapped).

    With ``seconds``, also add up the wall time spent in each (whichever thread called it).
    """
    counts: Counter[str] = Counter()
    originals = {name: getattr(module, name) for name in names}

    def wrap(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def counted(*args: Any, **kwargs: Any) -> Any:
            counts[name] += 1
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                if seconds is not None:
                    seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - started

        return counted

    for name, function in originals.items():
        setattr(module, name, wrap(name, function))
    try:
        yield counts
    finally:
        for name, function in originals.items():
            setattr(module, name, function)


@contextmanager
def parity_off(recipe: Any) -> Iterator[Any]:
    """The smoke stage without its parity checks, to measure what they cost (``bench.sections.parity``).

    Tokenizer parity is switched off in the recipe; template parity, which has no switch, is
    replaced by a no-op for the block.
    """
    from publisher import evaluation
    from publisher.manifest import TemplateResult

    original = evaluation.template_parity

    def no_template(*_args: Any, **_kwargs: Any) -> TemplateResult:
        return TemplateResult(checked=False)

    evaluation.template_parity = no_template
    try:
        yield recipe.model_copy(update={"smoke": recipe.smoke.model_copy(update={"tokenizer_parity": False})})
    finally:
        evaluation.template_parity = original


EVALUATIONS = (
    "compute_reference_logits",
    "measure_quality",
    "smoke_test",
    "tokenizer_parity",
    "template_parity",
)


def task_build(args: Report) -> Report:
    """``pipeline.execute`` (what ``publisher build`` runs) with the given stage selection.

    ``parity_off``: the smoke stage without its parity checks (see :func:`parity_off`).
    """
    from contextlib import ExitStack

    from rich.console import Console

    from publisher import evaluation as evaluate
    from publisher import pipeline
    from publisher.recipe import load_recipe

    recipe = load_recipe(Path(args["recipe"]))
    console = Console(file=sys.stderr, width=120)
    seconds: dict[str, float] = {}
    with ExitStack() as stack:
        if args.get("parity_off"):
            recipe = stack.enter_context(parity_off(recipe))
        counts = stack.enter_context(counting_llama())
        stage_times = stack.enter_context(timing_stages())
        calls = stack.enter_context(counting_calls(evaluate, EVALUATIONS, seconds))
        started = time.perf_counter()
        result = pipeline.execute(
            recipe,
            Path(args["workdir"]),
            stages=args.get("stages"),
            force=args.get("force", []),
            only_types=args.get("only"),
            console=console,
        )
        work_s = time.perf_counter() - started
    return {
        "work_s": work_s,
        "stages": [{"name": s.name, "status": s.status, "seconds": s.seconds} for s in result.stages],
        "stage_times": stage_times,
        "failed": [a.quant_type for a in result.failures()],
        "llama": {path: dict(c) for path, c in counts.items()},
        "evaluate_calls": dict(calls),
        "evaluate_seconds": {name: round(s, 4) for name, s in seconds.items()},
    }


def task_card_render(args: Report) -> Report:
    """Render the card of a finished build ``repeats`` times (the first render includes template compilation)."""
    from publisher import cards
    from publisher.manifest import load_manifest
    from publisher.recipe import load_recipe

    recipe = load_recipe(Path(args["recipe"]))
    manifest = load_manifest(Path(args["build_dir"]))
    times = []
    size = 0
    for _ in range(int(args["repeats"])):
        started = time.perf_counter()
        text = cards.render_card(recipe, manifest)
        times.append(time.perf_counter() - started)
        size = len(text.encode())
    return {"render_s": times, "card_bytes": size}


def task_publish_local(args: Report) -> Report:
    """Publish a finished build to a local target folder; report what the target copied, reflinked and linked."""
    from rich.console import Console

    from publisher import publish
    from publisher.recipe import load_recipe
    from publisher.targets.local import LocalTarget

    recipe = load_recipe(Path(args["recipe"]))
    target = LocalTarget(Path(args["hub_dir"]))
    started = time.perf_counter()
    result = publish.publish(recipe, workdir=Path(args["workdir"]), target=target, console=Console(file=sys.stderr))
    work_s = time.perf_counter() - started
    assert isinstance(result, publish.PublishResult)
    files = [f.file for branch in result.plan.branches for f in branch.files]
    return {
        "work_s": work_s,
        "files": {f.path_in_repo: f.size for f in files},
        "published_bytes": sum(f.size for f in files),
        "bytes_copied": target.bytes_copied,
        "bytes_cloned": target.bytes_cloned,
        "bytes_linked": target.bytes_linked,
    }


# ---------------------------------------------------------------------------------------------
# llama.cpp run directly
# ---------------------------------------------------------------------------------------------


def task_quantize_direct(args: Report) -> Report:
    """A bare loop of ``llama_model_quantize`` over the given ftypes."""
    import llama_cpp

    seconds = {}
    started, cpu = time.perf_counter(), cpu_seconds()
    matrix = None
    if args.get("imatrix"):  # the same matrix, read and handed over as the quantize stage does
        from publisher import importance

        path, reference = Path(args["imatrix"]), Path(args["reference"])
        data = importance.read_imatrix(path)
        matrix = importance.quantizer_imatrix(data, importance.quantizer_data(data, reference), path.name)
    for name, ftype in args["types"].items():
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = int(ftype)
        params.nthread = int(args["nthread"])
        if matrix is not None:
            matrix.apply(params)
        out = Path(args["out_dir"]) / f"direct.{name}.gguf"
        begun = time.perf_counter()
        rc = llama_cpp.llama_model_quantize(args["reference"].encode(), str(out).encode(), ctypes.byref(params))
        if rc != 0:
            raise SystemExit(f"llama_model_quantize {name} returned {rc}")
        seconds[name] = time.perf_counter() - begun
    return {"work_s": time.perf_counter() - started, "cpu_s": cpu_seconds() - cpu, "per_type_s": seconds}


def _log_softmax(x: Any) -> Any:
    import numpy as np

    x = np.asarray(x, dtype=np.float64)
    shifted = x - x.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def task_smoke_direct(args: Report) -> Report:
    """The llama.cpp work behind the smoke stage's results, done with llama-cpp-python by hand.

    Per file: a vocab-only load tokenizing the probes, a load answering the prompts greedily,
    a logits load evaluating the quality chunks (logits asked for the scored positions only). The
    reference's logits are computed once and each quant's KL divergence is taken against their top
    ``top_k`` ids.
    """
    import llama_cpp
    import numpy as np

    q = args["quality"]
    ctx_len, top_k = int(q["context_length"]), int(q["top_k"])
    first = ctx_len // 2
    ref_top: list[tuple[Any, Any]] = []
    chunks: Any = None
    out: Report = {"files": {}}
    started, cpu = time.perf_counter(), cpu_seconds()
    with counting_llama() as counts:
        for path in [args["reference"], *args["quants"]]:
            vocab = llama_cpp.Llama(model_path=path, vocab_only=True, verbose=False)
            for probe in args["probes"]:
                vocab.tokenize(probe.encode(), add_bos=False, special=True)
            vocab.close()

            llm: Any = llama_cpp.Llama(
                model_path=path, n_ctx=args["n_ctx"], n_gpu_layers=args["gpu_layers"], seed=args["seed"], verbose=False
            )
            generated = 0
            for prompt in args["prompts"]:
                tokens = llm.tokenize(prompt.encode(), add_bos=True, special=True)
                llm.reset()
                for count, token in enumerate(
                    llm.generate(tokens, temp=0.0, top_k=1, top_p=1.0, min_p=0.0, repeat_penalty=1.0), 1
                ):
                    if llama_cpp.llama_vocab_is_eog(llm._model.vocab, token):
                        break
                    llm.detokenize([token])
                    generated += 1
                    if count >= args["max_tokens"]:
                        break
            llm.close()

            llm = llama_cpp.Llama(
                model_path=path,
                n_ctx=ctx_len,
                n_batch=ctx_len,
                n_ubatch=ctx_len,
                n_gpu_layers=args["gpu_layers"],
                seed=args["seed"],
                verbose=False,
            )
            if chunks is None:
                ids = np.asarray(llm.tokenize(q["text"].encode(), add_bos=False, special=False), dtype=np.int32)
                n = min(int(q["max_chunks"]), len(ids) // ctx_len)
                chunks = ids[: n * ctx_len].reshape(n, ctx_len).copy()
                if llm._model.add_bos_token() and llm.token_bos() >= 0:
                    chunks[:, 0] = llm.token_bos()
            nll, kl = [], []
            for index, chunk in enumerate(chunks):
                # as llama-perplexity does: logits only for the positions scored
                llm.reset()
                llm._ctx.kv_cache_clear()
                llm._batch.set_batch(batch=chunk.tolist(), n_past=0, logits_all=False)
                for i in range(len(chunk)):
                    llm._batch.batch.logits[i] = first <= i < len(chunk) - 1
                llm._ctx.decode(llm._batch)
                rows = len(chunk) - 1 - first
                logp = _log_softmax(np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(rows, llm.n_vocab())))
                nll.append(-logp[np.arange(len(logp)), chunk[first + 1 :]])
                if path == args["reference"]:
                    top = np.argpartition(-logp, top_k - 1, axis=-1)[:, :top_k].copy()  # not a view of it all
                    ref_top.append((top, np.take_along_axis(logp, top, axis=-1)))
                else:
                    top, ref_logp = ref_top[index]
                    p = np.exp(ref_logp)
                    kl.append((p * (ref_logp - np.take_along_axis(logp, top, axis=-1))).sum(axis=-1))
            llm.close()
            out["files"][Path(path).name] = {
                "generated_tokens": generated,
                "perplexity": float(np.exp(np.concatenate(nll).mean())),
                "kl": float(np.concatenate(kl).mean()) if kl else None,
            }
    out["work_s"] = time.perf_counter() - started
    out["cpu_s"] = cpu_seconds() - cpu
    out["llama"] = {path: dict(c) for path, c in counts.items()}
    return out


def task_quality(args: Report) -> Report:
    """Publisher's quality measurement (``side`` "publisher") or llama-perplexity's: see bench.sections.quality."""
    from bench.sections import quality

    return quality.publisher_side(args) if args["side"] == "publisher" else quality.direct_side(args)


TASKS: dict[str, Callable[[Report], Report]] = {
    "build": task_build,
    "card-render": task_card_render,
    "publish-local": task_publish_local,
    "quantize-direct": task_quantize_direct,
    "smoke-direct": task_smoke_direct,
    "quality": task_quality,
}


def main(argv: list[str]) -> None:
    """Entry point: ``TASK ARGS.json REPORT.json``."""
    task, args_path, report_path = argv
    args = json.loads(Path(args_path).read_text(encoding="utf-8"))
    report = TASKS[task](args)
    Path(report_path).write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main(sys.argv[1:])
