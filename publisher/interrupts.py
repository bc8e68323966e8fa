"""Ctrl-C that is never lost while llama.cpp calls back into Python.

llama.cpp reports through C callbacks (its log), and ctypes swallows any exception raised inside
one ("Exception ignored on calling ctypes callback function"). Python runs the SIGINT handler at
the next bytecode boundary of the main thread, which during a model load is often inside such a
callback: the KeyboardInterrupt would vanish and the build run on. The same holds inside a
finalizer (``__del__``). Callbacks wrapped with ``callback`` are recognized on the interrupted
stack; an interrupt that arrives inside one, or inside a finalizer, is sent again a moment later,
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

P = ParamSpec("P")
R = TypeVar("R")


def callback(fn: Callable[P, R]) -> Callable[P, R]:
    """Mark ``fn`` as a C callback (wrap before handing it to ctypes): a Ctrl-C inside it is sent again."""

    @wraps(fn)
    def marked(*args: P.args, **kwargs: P.kwargs) -> R:
        return fn(*args, **kwargs)

    return marked


# Every wrapper ``callback`` makes runs this code object. The handler looks for it on the interrupted
# stack rather than keeping a counter: a counter set inside the wrapper leaves a bytecode or two at
# its entry and exit where the handler would raise into ctypes, which drops the exception silently.
_CALLBACK_CODE = callback(lambda: None).__code__


def _exception_would_vanish(frame: FrameType | None) -> bool:
    """Whether the interrupted code runs inside a C callback or a finalizer (``__del__``, which the
    garbage collector may run in the middle of anything; Python ignores what it raises)."""
    while frame is not None:
        if frame.f_code is _CALLBACK_CODE or frame.f_code.co_name == "__del__":
            return True
        frame = frame.f_back
    return False


def _on_sigint(signum: int, frame: FrameType | None) -> None:
    if _exception_would_vanish(frame):
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
