"""Benchmarks: publisher's stages against llama.cpp run directly (``make bench``, ``python -m bench``).

- ``bench.run``: the sections and the whole run; ``bench.worker``: the child side of each measurement;
- ``bench.proc``: measured subprocesses (wall, CPU, peak RSS, bytes written);
- ``bench.stats``: medians, spread, ratios, run order; ``bench.report``: results.json and the table;
- ``bench.models``: the demo model and the generated larger one.
"""
