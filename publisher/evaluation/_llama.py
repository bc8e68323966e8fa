"""Loading GGUF files with llama-cpp-python: quiet, with llama.cpp's own reason when it fails.

llama-cpp-python sends llama.cpp's log to /dev/null when ``verbose=False``, which also throws
away the one line that says why a file did not load. ``open_model`` captures the log while it
loads and puts the last error line into a one-line :class:`SmokeTestError`.
"""

from __future__ import annotations

import ctypes
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from publisher.errors import SmokeTestError

_GGML_LOG_ERROR = 3
_GGML_LOG_CONT = 5
_log_lock = threading.Lock()


@contextmanager
def _captured_llama_log() -> Iterator[list[str]]:
    """Route llama.cpp's log into a list for the duration of the block (nothing reaches stderr)."""
    import llama_cpp
    import llama_cpp._logger as llama_logger

    lines: list[str] = []
    last_level = [0]

    @llama_cpp.llama_log_callback  # type: ignore[untyped-decorator]
    def collect(level: int, text: bytes, _user_data: ctypes.c_void_p) -> None:
        level = last_level[0] if level == _GGML_LOG_CONT else level
        last_level[0] = level
        if level == _GGML_LOG_ERROR:
            lines.append(text.decode("utf-8", errors="replace"))

    with _log_lock:
        llama_cpp.llama_log_set(collect, ctypes.c_void_p(0))
        try:
            yield lines
        finally:
            llama_cpp.llama_log_set(llama_logger.llama_log_callback, ctypes.c_void_p(0))


def _reason(log_lines: list[str], err: Exception) -> str:
    text = "".join(log_lines)
    errors = [line.strip() for line in text.splitlines() if line.strip()]
    # the most specific line is usually the first "error loading model" one
    for line in errors:
        if "error loading model" in line:
            return re.sub(r"^\w+: ", "", line)
    if errors:
        return re.sub(r"^\w+: ", "", errors[-1])
    return str(err)


def open_model(gguf: Path, **kwargs: Any) -> Any:
    """``llama_cpp.Llama(gguf, verbose=False, **kwargs)``; a file that does not load is a one-line error.

    Close the returned object (``contextlib.closing``) to free the model deterministically.
    """
    import llama_cpp

    if not gguf.is_file():
        raise SmokeTestError(f"{gguf}: no such GGUF file; rebuild it (publisher build --force quantize)")
    with _captured_llama_log() as log_lines:
        try:
            return llama_cpp.Llama(model_path=str(gguf), verbose=False, **kwargs)
        except (ValueError, RuntimeError, OSError) as err:
            reason = _reason(log_lines, err)
    raise SmokeTestError(
        f"{gguf}: llama.cpp cannot load this GGUF ({reason}); the file may be truncated or corrupt, "
        "or made for a newer llama.cpp: rebuild it or upgrade llama-cpp-python"
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
