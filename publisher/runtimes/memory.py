"""Peak resident memory of a block of work in this process (loading a model, running it)."""

from __future__ import annotations

import re
from pathlib import Path


def status_kib(field: str) -> int | None:
    """A ``/proc/self/status`` figure in KiB (``VmRSS``, ``VmHWM``), None where there is none."""
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    match = re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) if match else None


class PeakMemory:
    """Peak resident memory a block of work adds to this process (Linux).

    The process's high-water mark (``VmHWM``, ``ru_maxrss``) only ever grows, so a second model
    loaded in the same process would be charged the first one's peak. It is never reset here:
    ``/proc/self/clear_refs`` could, but that also erases the peak the kernel reports for the
    whole process, to ``/usr/bin/time`` and to whoever waits for it (measured: a smoke stage at
    2.32 GB resident exited reporting 1.40 GB). Instead the peak is the larger of the RSS at the
    points :meth:`sample` was called (after loading, after each answer: a model's weights,
    KV cache and compute buffers stay resident between them) and the high-water mark, when this
    block raised it. Memory offloaded to a GPU is not resident and is not counted.
    """

    def __init__(self) -> None:
        self.baseline_kib = status_kib("VmRSS")
        self._high_water_kib = status_kib("VmHWM")
        self._sampled_kib = self.baseline_kib or 0

    def sample(self) -> None:
        """Note the current RSS."""
        now = status_kib("VmRSS")
        if now is not None:
            self._sampled_kib = max(self._sampled_kib, now)

    def peak_bytes(self) -> int | None:
        """Peak RSS since construction minus the RSS at construction, in bytes."""
        if self.baseline_kib is None:
            return None
        self.sample()
        peak = self._sampled_kib
        high_water = status_kib("VmHWM")
        if high_water is not None and self._high_water_kib is not None and high_water > self._high_water_kib:
            peak = max(peak, high_water)  # this block set the process's record: that is its exact peak
        return max(0, peak - self.baseline_kib) * 1024
