"""llama.cpp in-process: one capture of its log, and loading GGUF files with llama.cpp's own reason.

llama.cpp logs through one process-wide callback (``llama_log_set``). llama-cpp-python sends it to
/dev/null when ``verbose=False``, which also throws away the line that says why a file did not
load. :func:`llama_log` routes that callback into a :class:`LlamaLog` for the duration of a block,
under one lock, for every caller in publisher (loading here, quantizing in the quantize stage).
:func:`open_model` puts llama.cpp's own last error into a one-line :class:`ModelLoadError`.
"""

from __future__ import annotations

import ctypes
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from publisher import interrupts
from publisher.errors import SmokeTestError

# ggml_log_level: NONE, DEBUG, INFO, WARN, ERROR, CONT (a continuation of the previous message)
GGML_LOG_LEVEL_WARN = 3
GGML_LOG_LEVEL_ERROR = 4
GGML_LOG_LEVEL_CONT = 5
# llama.cpp's loader reports a refused file as "llama_model_load: error loading model: <reason>"
_LOADER_ERROR = re.compile(r"error loading model: ")
_FUNCTION_PREFIX = re.compile(r"^\w+: ")
# lines that only say that loading failed, not why
_GENERIC = re.compile(r"failed to load model|failed to read tensor data")
_log_lock = threading.Lock()


class ModelLoadError(SmokeTestError):
    """llama.cpp refused to load a GGUF file; ``detail`` is the message without the file's path."""

    def __init__(self, path: Path, detail: str) -> None:
        self.detail = detail
        super().__init__(f"{path}: {detail}")


@dataclass
class LlamaLog:
    """llama.cpp's log lines, each with its level (continuations attached to the message they continue)."""

    lines: list[tuple[int, str]] = field(default_factory=list)
    on_line: Callable[[str], None] | None = None
    _level: int = 0
    _partial: str = ""

    def feed(self, level: int, text: str) -> None:
        """Take one callback's text; llama.cpp may split one line over several calls."""
        if level != GGML_LOG_LEVEL_CONT:
            self._level = level
        self._partial += text
        *complete, self._partial = self._partial.split("\n")
        for line in complete:
            self._add(line)

    def close(self) -> None:
        """Keep a last line that did not end in a newline."""
        if self._partial:
            self._add(self._partial)
            self._partial = ""

    def _add(self, line: str) -> None:
        self.lines.append((self._level, line))
        if self.on_line is not None:
            self.on_line(line)

    def text(self) -> list[str]:
        """Every line, whatever its level."""
        return [line for _, line in self.lines]

    def errors(self) -> list[str]:
        """Non-empty lines llama.cpp logged as errors (or warnings, where some loaders report refusals)."""
        return [line.strip() for level, line in self.lines if level >= GGML_LOG_LEVEL_WARN and line.strip()]

    def last_error(self) -> str | None:
        """llama.cpp's own reason for a failure, without the function-name prefix; None if it said nothing.

        The loader's "error loading model: <reason>" line is the most specific, unless it only says
        the load failed; then the first error that says more is the cause.
        """
        errors = self.errors()
        loader = [_LOADER_ERROR.split(line, maxsplit=1)[-1].strip() for line in errors if _LOADER_ERROR.search(line)]
        telling = [r for r in loader if not _GENERIC.search(r)] + [e for e in errors if not _GENERIC.search(e)]
        found = telling[0] if telling else errors[-1] if errors else None
        return " ".join(_FUNCTION_PREFIX.sub("", found).split()) if found is not None else None


@contextmanager
def llama_log(on_line: Callable[[str], None] | None = None) -> Iterator[LlamaLog]:
    """Route llama.cpp's log (every level) into a :class:`LlamaLog` for the block; nothing reaches stderr.

    The callback is process-wide, so blocks are serialized by one lock; llama-cpp-python's own
    logger is restored after. ``on_line`` sees each complete line as it arrives (progress bars).
    """
    import llama_cpp

    log = LlamaLog(on_line=on_line)

    @llama_cpp.llama_log_callback  # type: ignore[untyped-decorator]
    @interrupts.callback
    def collect(level: int, text: bytes, _user_data: ctypes.c_void_p) -> None:
        log.feed(int(level), text.decode("utf-8", errors="replace"))

    with _log_lock:
        llama_cpp.llama_log_set(collect, ctypes.c_void_p(0))
        try:
            yield log
        finally:
            llama_cpp.llama_log_set(_quiet_callback(), ctypes.c_void_p(0))
            log.close()


_quiet: list[Any] = []


def _quiet_callback() -> Any:
    """The callback outside capture blocks: drops llama.cpp's chatter (errors are read where they matter).

    It replaces llama-cpp-python's own logger, which is Python called from C like ours and would
    swallow a Ctrl-C (see ``publisher.interrupts``); kept alive here, since llama.cpp holds only a pointer.
    """
    import llama_cpp

    if not _quiet:

        @llama_cpp.llama_log_callback  # type: ignore[untyped-decorator]
        @interrupts.callback
        def drop(_level: int, _text: bytes, _user_data: ctypes.c_void_p) -> None:
            return None

        _quiet.append(drop)
    return _quiet[0]


def open_model(gguf: Path, **kwargs: Any) -> Any:
    """``llama_cpp.Llama(gguf, verbose=False, **kwargs)``; a file that does not load is a one-line error.

    The error carries llama.cpp's own reason ("data is not within the file bounds", "...has wrong
    shape..."); the generic hint only when llama.cpp said nothing. Close the returned object
    (``contextlib.closing``) to free the model deterministically.
    """
    import llama_cpp

    if not gguf.is_file():
        raise ModelLoadError(gguf, "no such GGUF file; rebuild it (publisher build --force quantize)")
    with llama_log() as log:
        try:
            return llama_cpp.Llama(model_path=str(gguf), verbose=False, **kwargs)
        except (ValueError, RuntimeError, OSError) as err:
            failure = str(err)
    reason = log.last_error()
    if reason is not None:
        raise ModelLoadError(gguf, f"llama.cpp cannot load this file: {reason}")
    raise ModelLoadError(
        gguf,
        f"llama.cpp cannot load this file and gave no reason ({failure}); it may be truncated "
        "or made for a newer llama.cpp: rebuild it or upgrade llama-cpp-python",
    )


def vocab(llm: Any) -> Any:
    """The ``llama_vocab`` pointer of a loaded model."""
    return llm._model.vocab


def token_piece(llm: Any, token: int) -> str:
    """One token as text, special tokens shown as written (e.g. ``<|im_end|>``)."""
    data: bytes = llm._model.token_to_piece(token, special=True)
    return data.rstrip(b"\0").decode("utf-8", errors="replace")


# ---------------------------------------------------------------------------------------------
# Resident memory
# ---------------------------------------------------------------------------------------------


def _status_kib(field: str) -> int | None:
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    match = re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) if match else None


class PeakMemory:
    """Peak resident memory a block of work adds to this process (Linux).

    ``ru_maxrss`` and ``VmHWM`` only ever grow over a process's life, so a second model loaded in
    the same process would be charged the first one's peak. Writing ``5`` to
    ``/proc/self/clear_refs`` resets ``VmHWM`` to the current RSS, which makes the high-water
    mark of just this block measurable. Where that is not allowed, the peak falls back to the
    largest RSS seen at the points ``sample()`` was called (a lower bound). Memory offloaded
    to a GPU is not resident and is not counted.
    """

    def __init__(self) -> None:
        self.exact = False
        self.baseline_kib = _status_kib("VmRSS")
        self._sampled_kib = self.baseline_kib or 0
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self.exact = True
        except OSError:
            self.exact = False

    def sample(self) -> None:
        """Note the current RSS (used only where the high-water mark cannot be reset)."""
        now = _status_kib("VmRSS")
        if now is not None:
            self._sampled_kib = max(self._sampled_kib, now)

    def peak_bytes(self) -> int | None:
        """Peak RSS since construction minus the RSS at construction, in bytes."""
        if self.baseline_kib is None:
            return None
        self.sample()
        peak = _status_kib("VmHWM") if self.exact else self._sampled_kib
        if peak is None:
            return None
        return max(0, peak - self.baseline_kib) * 1024
