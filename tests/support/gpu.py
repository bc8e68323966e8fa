"""The marks of a test that needs a GPU build of llama-cpp-python and a device (never on CI)."""

from __future__ import annotations

import pytest


def _can_offload() -> bool:
    try:
        import llama_cpp
    except ImportError:
        return False
    return bool(llama_cpp.llama_supports_gpu_offload())


GPU_ONLY = [
    pytest.mark.slow,
    pytest.mark.gpu,
    pytest.mark.skipif(
        not _can_offload(),
        reason="this llama-cpp-python build cannot offload to a GPU (see the README's GPU section)",
    ),
]
