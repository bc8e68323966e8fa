"""Ctrl-C that is never lost while llama.cpp calls back into Python.

llama.cpp reports through C callbacks (its log), and ctypes swallows any exception raised inside
one ("Exception ignored on calling ctypes callback function"). Python runs the SIGINT handler at
the next bytecode boundary of the main thread, which during a model load is often inside such a
callback: the KeyboardInterrupt would vanish and the build run on. Callbacks wrapped with
``callback`` mark themselves; an interrupt that arrives inside one is sent again a moment later,
until it lands in ordinary Python code and stops the process there.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from functools import wraps
from types import FrameType
from typing import ParamSpec, TypeVar

RESEND_AFTER_S = 0.05

_local = threading.local()
P = ParamSpec("P")
R = TypeVar("R")


def _depth() -> int:
    return int(getattr(_local, "depth", 0))


def callback(fn: Callable[P, R]) -> Callable[P, R]:
    """Mark ``fn`` as running inside a C callback while it runs (wrap before handing it to ctypes)."""

    @wraps(fn)
    def marked(*args: P.args, **kwargs: P.kwargs) -> R:
        _local.depth = _depth() + 1
        try:
            return fn(*args, **kwargs)
        finally:
            _local.depth = _depth() - 1

    return marked


def _on_sigint(signum: int, frame: FrameType | None) -> None:
    if _depth() > 0:
        timer = threading.Timer(RESEND_AFTER_S, os.kill, (os.getpid(), signal.SIGINT))
        timer.daemon = True
        timer.start()
        return
    raise KeyboardInterrupt


def install() -> None:
    """Handle SIGINT as above (call once, in the main thread, before any llama.cpp work)."""
    if (
        threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    ):
        signal.signal(signal.SIGINT, _on_sigint)
