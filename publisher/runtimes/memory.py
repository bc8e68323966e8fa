"""Peak resident memory of a block of work in this process (loading a model, running it)."""

from __future__ import annotations

import re
from pathlib import Path


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
