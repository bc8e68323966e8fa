"""Benchmarks: publisher's stages against llama.cpp run directly (``make bench``, ``python -m bench``).

- ``bench.run``: the whole run; ``bench.sections``: one module per section; ``bench.worker``: the child
  side of each measurement;
- ``bench.subjects``: the models measured and the builds; ``bench.compare``: one alternating comparison;
- ``bench.proc``: measured subprocesses (wall, CPU, peak RSS, bytes written);
- ``bench.stats``: medians, spread, ratios, run order; ``bench.report``: results.json and the table;
- ``bench.models``: the demo model and the generated larger one.
"""
