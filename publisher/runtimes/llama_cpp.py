"""llama.cpp, the one runtime publisher drives: its log, loading, quantizing and built tools.

llama.cpp logs through one process-wide callback (``llama_log_set``). llama-cpp-python sends it to
/dev/null when ``verbose=False``, which also throws away the line that says why a file did not
load. :func:`llama_log` routes that callback into a :class:`LlamaLog` for the duration of a block,
under one lock, for every caller in publisher (loading, quantizing). :func:`open_model` puts
llama.cpp's own last error into a one-line :class:`ModelLoadError`. :func:`quantize` runs
``llama_model_quantize`` in a worker thread with its log captured; :class:`QuantizerImatrix` holds
the ctypes arrays that hand it an importance matrix.
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import importlib.util
import os
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from publisher import interrupts
from publisher.errors import ManifestError, SmokeTestError
from publisher.gguf_info import string_array, string_value, vocabulary_sha256

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
TOOLS_ENV = "PUBLISHER_LLAMA_TOOLS"
KV_STR_MAX = 127  # llama_model_kv_override.val_str holds 128 bytes with the terminator


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


# Bytes that occur in UTF-8 text: 0x00 and the never-used 0xC0, 0xC1 and 0xF5..0xFF left out.
_UTF8_BYTES = (*range(0x01, 0xC0), *range(0xC2, 0xF5))


def unspellable_bytes(gguf: Path) -> list[int]:
    """Bytes of UTF-8 text a SentencePiece vocabulary has no token for; empty for other vocabularies.

    llama.cpp's SentencePiece tokenizer spells a character outside the vocabulary as byte tokens
    (``<0xE2>``), else as a one-byte token. With neither, ``byte_to_token`` throws
    ``std::out_of_range`` inside ``llama_tokenize``, and the exception ends the whole process
    (SIGABRT): no Python code runs after it. A tokenizer trained without ``byte_fallback`` has
    no byte tokens.
    """
    if string_value(gguf, "tokenizer.ggml.model") != "llama":
        return []
    return list(_unspellable(_Vocabulary(vocabulary_sha256(gguf), gguf)))


@dataclass(frozen=True)
class _Vocabulary:
    """A file's vocabulary, equal to another file's when their vocabulary digests are."""

    sha256: str
    gguf: Path = field(compare=False)  # where to read it: any file with this digest


@lru_cache(maxsize=4)
def _unspellable(vocabulary: _Vocabulary) -> tuple[int, ...]:
    # Decoding the token list costs four times the digest it is keyed on; every file of a build
    # shares the one vocabulary, so it is decoded once per build, not once per file.
    tokens = set(string_array(vocabulary.gguf, "tokenizer.ggml.tokens") or [])
    return tuple(b for b in _UTF8_BYTES if f"<0x{b:02X}>" not in tokens and (b >= 0x80 or chr(b) not in tokens))


def _aborting_vocabulary(gguf: Path) -> str | None:
    """Why tokenizing text with this file would abort the process, or None."""
    try:
        missing = unspellable_bytes(gguf)
    except ManifestError:  # unreadable metadata: llama.cpp's own load gives the reason
        return None
    if not missing:
        return None
    return (
        f"llama.cpp would abort the whole process (std::out_of_range) on a character outside this "
        f"SentencePiece vocabulary: it has no byte token for {len(missing)} of the {len(_UTF8_BYTES)} bytes of "
        f"UTF-8 text (first <0x{missing[0]:02X}>), as a tokenizer trained without byte_fallback; "
        "retrain the tokenizer with byte_fallback"
    )


def open_model(gguf: Path, **kwargs: Any) -> Any:
    """``llama_cpp.Llama(gguf, verbose=False, **kwargs)``; a file that does not load is a one-line error.

    The error carries llama.cpp's own reason ("data is not within the file bounds", "...has wrong
    shape..."); the generic hint only when llama.cpp said nothing. A vocabulary whose tokenizer
    would abort the process (:func:`unspellable_bytes`) is refused before llama.cpp sees it.
    Close the returned object (``contextlib.closing``) to free the model deterministically.
    """
    import llama_cpp

    if not gguf.is_file():
        raise ModelLoadError(gguf, "no such GGUF file; rebuild it (publisher build --force quantize)")
    aborting = _aborting_vocabulary(gguf)
    if aborting is not None:
        raise ModelLoadError(gguf, aborting)
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
# Built tools
# ---------------------------------------------------------------------------------------------


def score_chunk(llm: Any, tokens: list[int], first: int) -> npt.NDArray[np.float32]:
    """Evaluate ``tokens`` from an empty context in one batch and return the logits predicting tokens
    ``first+1 .. n-1`` (rows in that order), a view of llama.cpp's output buffer valid until the next
    evaluation. Like ``llama-perplexity``, only those positions ask for logits: the output layer runs
    for them alone (``Llama.eval`` with ``logits_all`` computes and copies every position's).
    ``llm`` must have ``n_batch >= len(tokens)``.
    """
    batch = llm._batch
    llm.reset()
    llm._ctx.kv_cache_clear()
    batch.set_batch(batch=tokens, n_past=0, logits_all=False)
    for i in range(len(tokens)):
        batch.batch.logits[i] = first <= i < len(tokens) - 1
    llm._ctx.decode(batch)
    rows = len(tokens) - 1 - first
    return np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(rows, llm.n_vocab()))


def tools_dir() -> Path:
    """Where ``make tools`` puts llama-imatrix and llama-quantize, keyed by llama-cpp-python's version."""
    override = os.environ.get(TOOLS_ENV)
    if override:
        return Path(override).expanduser()
    version = importlib.metadata.version("llama-cpp-python")
    return Path.home() / ".cache" / "publisher" / "llama-tools" / version


def tool(name: str) -> Path | None:
    """The built llama.cpp program ``name`` (llama-imatrix, llama-quantize), or ``None`` when not built."""
    path = tools_dir() / "bin" / name
    return path if path.is_file() and os.access(path, os.X_OK) else None


# ---------------------------------------------------------------------------------------------
# Quantizing
# ---------------------------------------------------------------------------------------------


class QuantizerImatrix:
    """ctypes arrays for ``llama_model_quantize_params``: per-column importance and the keys written with it.

    ``data`` maps a tensor name to its importance per column (experts one after another);
    ``keys`` are GGUF key/value overrides (llama-quantize's quantize.imatrix.* keys). Holds every
    buffer the C arrays point into; keep the object alive for the whole quantize call.
    """

    def __init__(self, data: Mapping[str, npt.NDArray[np.float32]], keys: list[tuple[str, str | int]]) -> None:
        import llama_cpp

        self._buffers = [np.ascontiguousarray(v, dtype=np.float32) for v in data.values()]
        self._names = [name.encode() for name in data]
        self.entries = (llama_cpp.llama_model_imatrix_data * (len(data) + 1))()
        for slot, (name, buffer) in enumerate(zip(self._names, self._buffers, strict=True)):
            self.entries[slot].name = name
            self.entries[slot].data = buffer.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
            self.entries[slot].size = buffer.size
        self.entries[len(data)].name = None  # the terminator
        self.kv_overrides = (llama_cpp.llama_model_kv_override * (len(keys) + 1))()
        for slot, (key, value) in enumerate(keys):
            item = self.kv_overrides[slot]
            item.key = key.encode()
            union: Any = item.value  # a ctypes union; llama-cpp-python annotates it as the Python value
            if isinstance(value, str):
                item.tag = llama_cpp.LLAMA_KV_OVERRIDE_TYPE_STR
                union.val_str = value.encode()[:KV_STR_MAX]
            else:
                item.tag = llama_cpp.LLAMA_KV_OVERRIDE_TYPE_INT
                union.val_i64 = value
        self.kv_overrides[len(keys)].key = b""  # the terminator

    def apply(self, params: Any) -> None:
        """Point ``params`` (llama_model_quantize_params) at the arrays."""
        params.imatrix = ctypes.cast(self.entries, ctypes.POINTER(type(self.entries[0])))
        params.kv_overrides = ctypes.cast(self.kv_overrides, ctypes.POINTER(type(self.kv_overrides[0])))


@dataclass
class QuantizeRequest:
    """What one ``llama_model_quantize`` call makes: ggml ftype and tensor type numbers, not names."""

    ftype: int
    threads: int = 0  # 0: all cores
    token_embd_type: int | None = None
    output_type: int | None = None
    tensor_types: dict[str, int] = field(default_factory=dict)  # llama.cpp regex -> ggml type
    imatrix: QuantizerImatrix | None = None


@dataclass
class QuantizeResult:
    """How the call ended (its return code, or the exception it raised) and llama.cpp's log of it."""

    log: LlamaLog
    rc: int | None = None
    error: BaseException | None = None


def _tensor_overrides(tensor_types: dict[str, int]) -> Any:
    """``llama_model_tensor_override`` array (NULL-pattern terminated), or None for no overrides."""
    import llama_cpp

    if not tensor_types:
        return None
    items = (llama_cpp.llama_model_tensor_override * (len(tensor_types) + 1))()
    for slot, (pattern, kind) in enumerate(tensor_types.items()):
        items[slot].pattern = pattern.encode()
        items[slot].type = kind
    items[len(tensor_types)].pattern = None
    return items


def quantize(
    reference: Path,
    out: Path,
    request: QuantizeRequest,
    on_line: Callable[[str], None] | None = None,
    while_running: Callable[[], None] | None = None,
) -> QuantizeResult:
    """Quantize ``reference`` into ``out`` with ``llama_model_quantize``, its log captured.

    The call runs in a worker thread (ctypes releases the GIL); ``while_running`` is called about
    ten times a second meanwhile (progress), ``on_line`` with each log line.
    """
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = request.ftype
    params.nthread = request.threads
    if request.token_embd_type is not None:
        params.token_embedding_type = request.token_embd_type
    if request.output_type is not None:
        params.output_tensor_type = request.output_type
    overrides = _tensor_overrides(request.tensor_types)  # kept alive until the call returns
    if overrides is not None:
        params.tt_overrides = ctypes.cast(overrides, ctypes.POINTER(llama_cpp.llama_model_tensor_override))
    if request.imatrix is not None:
        request.imatrix.apply(params)
    ended: dict[str, int | BaseException] = {}

    def work() -> None:
        try:
            ended["rc"] = llama_cpp.llama_model_quantize(
                str(reference).encode(), str(out).encode(), ctypes.byref(params)
            )
        except BaseException as err:  # surfaced in the calling thread
            ended["error"] = err

    with llama_log(on_line=on_line) as log:
        # A daemon thread: Ctrl-C ends the process at once; the unfinished file keeps its temporary name.
        worker = threading.Thread(target=work, name=f"quantize-{out.name}", daemon=True)
        worker.start()
        while worker.is_alive():
            worker.join(0.1)
            if while_running is not None:
                while_running()
    rc, error = ended.get("rc"), ended.get("error")
    return QuantizeResult(
        log=log,
        rc=rc if isinstance(rc, int) else None,
        error=error if isinstance(error, BaseException) else None,
    )
