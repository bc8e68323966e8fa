"""The source tokenizer as transformers loads it, read once per source in a short-lived child process.

Three checks compare the GGUF with transformers' ``AutoTokenizer`` of the source: the special
tokens and what ``encode`` adds around a text (:mod:`.special_tokens`), the chat template
transformers applies (:mod:`.template_source`) and its renderings of each conversation shape
(:mod:`.chat_shapes`). Importing transformers and loading a tokenizer takes seconds and a few
hundred MB that a process never gives back, so :mod:`.transformers_child` does all three reads
in one child process and answers in JSON: the smoke stage's process never imports transformers,
and a crash in the tokenizer's native code ends the child, not the build. The answer is kept per
source folder and tokenizer file times, so every file of a build shares one read, and the smoke
stage starts it (:func:`prefetch_transformers_view`) once its first prompt is evaluated, when llama.cpp
generates on half the cores: the child's second of imports and tokenizer loading uses a core that would idle.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from publisher.errors import SmokeTestError

CHILD = Path(__file__).with_name("transformers_child.py")
SOURCE_ROLES = ("bos", "eos", "pad", "unk")  # transformers has no end-of-turn role
SAMPLE_TEXT = "Hello world"  # encoded with and without special tokens: what encode adds around a text
_KEPT_READS = 4  # sources whose answers are kept (a build has one)
_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "chat_template.jinja",
    "chat_template.json",
)


def tokenizer_stamp(source_dir: Path) -> tuple[tuple[str, int, int], ...]:
    """Name, modification time and size of each tokenizer file: what the caches of the source's tokenizer key on."""
    stamps = []
    for name in _TOKENIZER_FILES:
        path = source_dir / name
        if path.is_file():
            stat = path.stat()
            stamps.append((name, stat.st_mtime_ns, stat.st_size))
    return tuple(stamps)


@dataclass(frozen=True)
class TransformersView:
    """What transformers makes of a source's tokenizer (the fields of :mod:`.transformers_child`'s answer)."""

    roles: dict[str, int | None]
    added: dict[int, tuple[str, bool]]  # id -> (text, special)
    ids: dict[str, int]  # text -> id over the whole vocabulary
    plain: list[int]  # SAMPLE_TEXT encoded without special tokens
    full: list[int]  # and with them
    texts: dict[int, str]  # id -> token text of the roles' ids and of ``full``
    chat_template: str | None  # the template transformers applies by default
    has_template: bool
    renderings: dict[str, tuple[str | None, str | None]]  # shape name -> (rendering, first line of its error)


_Key = tuple[Path, tuple[tuple[str, int, int], ...]]
_reads: dict[_Key, Future[TransformersView | None]] = {}
_reads_lock = threading.Lock()


def transformers_view(source_dir: Path) -> TransformersView | None:
    """The source's tokenizer through transformers; None when transformers is not installed or cannot load it."""
    return _pending(source_dir).result()


def prefetch_transformers_view(source_dir: Path) -> None:
    """Start reading :func:`transformers_view` of ``source_dir`` in the background; the first call that
    needs it waits for what is left."""
    _pending(source_dir)


def _pending(source_dir: Path) -> Future[TransformersView | None]:
    key = (source_dir.resolve(), tokenizer_stamp(source_dir))
    with _reads_lock:
        found = _reads.get(key)
        if found is None:
            found = _reads[key] = Future()
            while len(_reads) > _KEPT_READS:
                del _reads[next(iter(_reads))]
            # a daemon thread: the child answers even if the build is interrupted meanwhile
            threading.Thread(target=_answer, args=(found, key[0]), name="transformers-view", daemon=True).start()
        return found


def _answer(future: Future[TransformersView | None], source_dir: Path) -> None:
    try:
        future.set_result(_read(source_dir))
    except BaseException as err:  # surfaced by whoever waits on it
        future.set_exception(err)


def _request(source_dir: Path) -> dict[str, Any]:
    from publisher.evaluation.chat_shapes import SHAPES

    shapes = [
        {
            "name": shape.name,
            "messages": list(shape.messages),
            "tools": list(shape.tools) if shape.tools is not None else None,
            "add_generation_prompt": shape.add_generation_prompt,
        }
        for shape in SHAPES
    ]
    return {"source_dir": str(source_dir), "text": SAMPLE_TEXT, "roles": list(SOURCE_ROLES), "shapes": shapes}


def _failure(source_dir: Path, done: subprocess.CompletedProcess[str]) -> SmokeTestError:
    if done.returncode < 0:
        why = f"killed by {signal.Signals(-done.returncode).name}"
    else:
        why = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
    return SmokeTestError(
        f"{source_dir}: transformers failed reading the source tokenizer ({why}); "
        "check its tokenizer files, or set smoke.tokenizer_parity: false"
    )


def _read(source_dir: Path) -> TransformersView | None:
    # The child must import the same publisher-free code and transformers: same interpreter, same paths.
    done = subprocess.run(
        [sys.executable, "-P", str(CHILD)],
        input=json.dumps(_request(source_dir)),
        capture_output=True,
        text=True,
        encoding="utf-8",
        env=os.environ | {"TOKENIZERS_PARALLELISM": "false"},
        check=False,
    )
    if done.returncode != 0:
        raise _failure(source_dir, done)
    data = json.loads(done.stdout)
    if not data["loaded"]:
        return None
    return TransformersView(
        roles={role: None if token is None else int(token) for role, token in data["roles"].items()},
        added={int(i): (str(text), bool(special)) for i, text, special in data["added"]},
        ids={str(text): int(i) for text, i in data["ids"].items()},
        plain=[int(i) for i in data["plain"]],
        full=[int(i) for i in data["full"]],
        texts={int(i): str(text) for i, text in data["texts"].items()},
        chat_template=data["chat_template"],
        has_template=bool(data["has_template"]),
        renderings={name: (r.get("text"), r.get("error")) for name, r in data["renderings"].items()},
    )
