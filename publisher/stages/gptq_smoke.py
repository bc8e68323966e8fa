"""gptq-smoke and awq-smoke: load each folder in the quantizer's environment, ask the prompts, measure quality.

The worker loads the folder the way a user's transformers does (gptqmodel's torch kernels on the CPU),
renders each prompt through the folder's own chat template and answers greedily; the expectations
are the GGUF smoke test's. Quality uses the reference logits the smoke stage stored: the same
token chunks, scored at the same positions, so the GPTQ and AWQ rows sit in one table with the GGUF rows.
The folder's tokenizer files must equal the source's byte for byte.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from publisher.errors import ManifestError, PublisherError
from publisher.evaluation.quality import load_reference_logits
from publisher.evaluation.smoke import check_answer, prompts_of, system_message
from publisher.folder_formats import AWQ, GPTQ, FolderFormat
from publisher.gptq import folder as gptq_folder
from publisher.gptq.runner import environment_id, run_worker
from publisher.manifest import Artifact, QualityResult, SmokeAnswer, SmokeResult, fingerprint, guard_write
from publisher.stages import BuildContext, register
from publisher.stages.gptq import FormatStage
from publisher.stages.smoke import LOGITS_KEY, logits_path


def work_key(fmt: FolderFormat, branch: str) -> str:
    """The manifest key of one variant's smoke record."""
    return f"{fmt.name}-smoke/{branch}"


def settings(ctx: BuildContext, fmt: FolderFormat, artifact: Artifact) -> str:
    """Fingerprint of one folder's checks: its files, the smoke settings, the reference logits, the environment."""
    logits = ctx.manifest.stages.get(LOGITS_KEY)
    return fingerprint(
        f"{fmt.name}-smoke",
        artifact.sha256,
        ctx.recipe.smoke.model_dump(mode="json"),
        ctx.recipe.model.system_message,
        logits.outputs if logits else None,
        environment_id(),
    )


def _current(ctx: BuildContext, fmt: FolderFormat, artifact: Artifact) -> bool:
    return artifact.status != "built" and ctx.is_current(
        work_key(fmt, artifact.quant_type), settings(ctx, fmt, artifact)
    )


def _messages(ctx: BuildContext) -> list[list[dict[str, str]]]:
    chats = []
    for item in prompts_of(ctx.recipe):
        system = system_message(ctx.recipe, item)
        chats.append(
            ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": item.prompt}]
        )
    return chats


def _quality(logits: Path, quant_logp_path: Path, ctx: BuildContext) -> QualityResult:
    """Perplexity, KL divergence and top-1 agreement from the worker's log-probs, computed as for a GGUF."""
    ref = load_reference_logits(logits, ctx.recipe)
    first = int(ref.meta["first_scored"])
    logp = np.load(quant_logp_path)
    targets = np.concatenate([chunk[first + 1 :] for chunk in ref.chunks])
    nll = -logp[np.arange(len(logp)), targets]
    return QualityResult(
        perplexity=round(float(np.exp(nll.mean(dtype=np.float64))), 4),
        kl_divergence=round(max(0.0, float(ref.kl(slice(0, len(logp)), logp).mean(dtype=np.float64))), 6),
        top1_agreement=round(float((logp.argmax(axis=-1) == ref.top1[: len(logp)]).mean()), 4),
        tokens=len(nll),
    )


class FolderSmokeStage(FormatStage):
    """Check every folder of the format and mark it passed or failed."""

    def is_done(self, ctx: BuildContext) -> bool:
        """Every variant was checked with the current inputs."""
        section = self.fmt.section(ctx.recipe)
        records = self.fmt.records(ctx.manifest)
        arts = [records.get(b) for b in section.branches()] if section else []
        return bool(arts) and all(a is not None and _current(ctx, self.fmt, a) for a in arts)

    def problems(self, ctx: BuildContext) -> list[str]:
        """A variant that failed its checks."""
        return [f"{a.path}: {a.failure}" for a in self.fmt.records(ctx.manifest).values() if a.status == "failed"]

    def run(self, ctx: BuildContext) -> None:
        """Check the folders whose results are missing or stale."""
        section = self.fmt.section(ctx.recipe)
        if section is None:
            return
        records = self.fmt.records(ctx.manifest)
        missing = [b for b in section.branches() if b not in records]
        if missing:
            raise ManifestError(
                f"{ctx.build_dir}: {self.name} needs {', '.join(missing)}; run with --stages {self.fmt.name}"
            )
        logits = logits_path(ctx) if ctx.recipe.smoke.quality.enabled and LOGITS_KEY in ctx.manifest.stages else None
        forced = self.name in ctx.forced
        for branch in section.branches():
            artifact = records[branch]
            if forced or not _current(ctx, self.fmt, artifact):
                self._check(ctx, artifact, logits)

    def _check(self, ctx: BuildContext, artifact: Artifact, logits: Path | None) -> None:
        fmt = self.fmt
        section = self.section(ctx)
        source = ctx.manifest.source
        assert source is not None
        started = time.perf_counter()
        ctx.forget(work_key(fmt, artifact.quant_type))
        folder = ctx.build_dir / artifact.path
        work = guard_write(ctx.build_dir / fmt.name / f".{artifact.quant_type}.smoke")
        work.mkdir(parents=True, exist_ok=True)
        request: dict[str, Any] = {
            "op": "smoke",
            "method": fmt.name,
            "model": str(folder),
            "device": section.device,
            "prompts": _messages(ctx),
            "max_tokens": ctx.recipe.smoke.max_tokens,
            "seed": ctx.recipe.smoke.seed,
        }
        if logits is not None:
            ref = load_reference_logits(logits, ctx.recipe)
            np.save(guard_write(work / "chunks.npy"), ref.chunks)
            request |= {
                "chunks": str(work / "chunks.npy"),
                "first_scored": int(ref.meta["first_scored"]),
                "logp_out": str(guard_write(work / "logp.npy")),
            }
        problems: list[str] = []
        quality: QualityResult | None = None
        answers: list[SmokeAnswer] = []
        result: dict[str, Any] = {}
        try:
            result = run_worker(request, work, ctx.logs_dir() / f"{self.name}-{artifact.quant_type}.log")
            for item, answer in zip(prompts_of(ctx.recipe), result["answers"], strict=True):
                found, advisories = check_answer(answer, item.expectations(), artifact.quant_type)
                answers.append(
                    SmokeAnswer(
                        prompt=item.prompt, output=answer, passed=not found, problems=found, advisories=advisories
                    )
                )
                problems += found
            if logits is not None:
                quality = _quality(logits, work / "logp.npy", ctx)
        except PublisherError as err:
            problems.append(str(err))
        finally:
            for name in ("chunks.npy", "logp.npy"):
                (work / name).unlink(missing_ok=True)
            work.rmdir()
        mismatched = gptq_folder.tokenizer_mismatches(folder, Path(source.path))
        if mismatched:
            problems.append(f"tokenizer files differ from the source's: {', '.join(mismatched)}")
        smoke = SmokeResult(
            passed=not problems,
            output=answers[0].output if answers else "",
            answers=answers,
            tokens_per_s=result.get("tokens_per_s"),
            load_s=result.get("load_s"),
            peak_rss_bytes=result.get("peak_rss_bytes"),
        )
        fmt.records(ctx.manifest)[artifact.quant_type] = artifact.model_copy(
            update={
                "status": "failed" if problems else "passed",
                "failure": "; ".join(problems) or None,
                "smoke": smoke,
                "quality": quality,
            }
        )
        ctx.record(work_key(fmt, artifact.quant_type), settings(ctx, fmt, artifact), [], time.perf_counter() - started)
        shown = f", PPL {quality.perplexity:.2f}, KLD {quality.kl_divergence:.4f}" if quality else ""
        ctx.console.print(f"{self.name}: {artifact.quant_type} {'passed' if not problems else 'FAILED'}{shown}")


@register("gptq-smoke")
class GptqSmokeStage(FolderSmokeStage):
    """Check every GPTQ folder."""

    fmt = GPTQ
    after = ("gptq", "smoke")


@register("awq-smoke")
class AwqSmokeStage(FolderSmokeStage):
    """Check every AWQ folder."""

    fmt = AWQ
    after = ("awq", "smoke")
