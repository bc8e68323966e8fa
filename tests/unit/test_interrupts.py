"""Ctrl-C during C code that calls back into Python (as llama.cpp's log does) stops the process.

libc's qsort calls a Python comparison function from C, like llama.cpp calls its log callback.
Without the mark, the KeyboardInterrupt raised inside the callback is swallowed by ctypes and the
program runs on; with it, the interrupt is sent again and lands once C has returned.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import ctypes, os, signal, threading, time
    from publisher import interrupts

    interrupts.install()
    mark = interrupts.callback if {marked} else (lambda fn: fn)
    Compare = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_int))

    @Compare
    @mark
    def compare(a, b):
        time.sleep(0.002)  # the interrupt arrives while Python runs inside the callback
        return a[0] - b[0]

    values = (ctypes.c_int * 200)(*range(200, 0, -1))
    threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT)).start()
    try:
        ctypes.CDLL(None).qsort(values, len(values), ctypes.sizeof(ctypes.c_int), compare)
        for _ in range(100):
            time.sleep(0.01)
        print("ran on")
    except KeyboardInterrupt:
        print("interrupted", list(values)[:3])
    """
)


@pytest.mark.parametrize(("marked", "expected"), [(True, "interrupted [1, 2, 3]"), (False, "ran on")])
def test_an_interrupt_inside_a_c_callback_is_not_lost(marked: bool, expected: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(marked=marked)], capture_output=True, text=True, timeout=60
    )
    assert done.stdout.strip() == expected, done.stderr
    if not marked:
        assert "KeyboardInterrupt" in done.stderr, "the control case shows ctypes swallowing the interrupt"


BUSY_SCRIPT = textwrap.dedent(
    """
    import ctypes, os, signal, threading, time
    from publisher import interrupts

    interrupts.install()
    Compare = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_int))

    @Compare
    @interrupts.callback
    def compare(a, b):
        return a[0] - b[0]  # no body to speak of: the interrupt lands at the wrapper's entry or exit

    class Finalized:
        def __del__(self):
            until = time.monotonic() + 0.5
            while time.monotonic() < until:  # the interrupt lands here, where Python would ignore it
                pass

    threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT)).start()
    try:
        if "{where}" == "callback":
            values = (ctypes.c_int * 100_000)(*range(100_000, 0, -1))  # about a second of callbacks
            ctypes.CDLL(None).qsort(values, len(values), ctypes.sizeof(ctypes.c_int), compare)
        else:
            Finalized()
        for _ in range(100):
            time.sleep(0.01)
        print("ran on")
    except KeyboardInterrupt:
        print("interrupted")
    """
)


@pytest.mark.parametrize("where", ["callback", "finalizer"])
def test_an_interrupt_at_any_bytecode_of_a_callback_or_in_a_finalizer_is_not_lost(where: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", BUSY_SCRIPT.format(where=where)], capture_output=True, text=True, timeout=120
    )
    assert done.stdout.strip() == "interrupted", done.stderr
