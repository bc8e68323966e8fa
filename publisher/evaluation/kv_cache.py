"""What llama.cpp allocates for the KV cache of a model, read from its own log.

The card states a KV-cache figure computed from the source's config.json
(:meth:`publisher.manifest.Architecture.kv_cache_bytes`); this reads the figure llama.cpp
reports when it creates a context, one ``llama_kv_cache: size = ... MiB (N cells, L layers``
line per cache (two for models with sliding-window layers), so tests can hold the card to it.
"""

from __future__ import annotations

import re
from pathlib import Path

from publisher.runtimes.llama_cpp import ModelLoadError, llama_log

_SIZE = re.compile(r"llama_kv_cache: size =\s*([\d.]+) MiB \(\s*(\d+) cells,\s*(\d+) layers")
UBATCH = 512


def allocated_kv_cache(gguf: Path, context: int) -> tuple[int, list[tuple[int, int]]]:
    """Bytes llama.cpp allocates for the KV cache at ``context`` tokens, and the (cells, layers) of each cache.

    As llama.cpp's own programs allocate it (``swa_full`` off: sliding-window layers keep only
    their window; llama-cpp-python's default is a full-size cache for them). The sizes are
    logged in MiB with two decimals: exact to about 5 KB per cache.
    """
    import llama_cpp

    with llama_log() as log:
        try:
            llm = llama_cpp.Llama(
                model_path=str(gguf), n_ctx=context, n_batch=UBATCH, n_ubatch=UBATCH, swa_full=False, verbose=False
            )
        except (ValueError, RuntimeError, OSError) as err:
            raise ModelLoadError(gguf, f"llama.cpp cannot load this file: {log.last_error() or err}") from None
        llm.close()
    caches = [match for line in log.text() if (match := _SIZE.search(line))]
    total = sum(round(float(m[1]) * 1024 * 1024) for m in caches)
    return total, [(int(m[2]), int(m[3])) for m in caches]
