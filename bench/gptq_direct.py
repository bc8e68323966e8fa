"""GPTQ by hand: what a user writes with gptqmodel, the direct side of the bench's gptq section.

    .venv-gptq/bin/python bench/gptq_direct.py ARGS.json REPORT.json

It runs in the GPTQ environment and never imports publisher (nor anything of the bench). ARGS holds the
source folder, the output folder, a scratch folder to run in (gptqmodel writes a ``logs/`` folder into
its working directory), the QuantizeConfig settings, the thread count and the calibration samples as
token ids: those the gptq stage calibrates on, so both sides quantize identical inputs. The bench sets
the same environment variables as publisher's runner (``GPTQMODEL_CPU_WORKERS``, ``TORCHDYNAMO_DISABLE``).
It loads no tokenizer of its own: ``quantize`` uses the one ``load`` read. REPORT gets the seconds of
load, quantize and save, and the process's peak RSS.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

# As publisher's worker: no network, and the tokenizer's own thread pool off.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def quantize(args: dict[str, Any]) -> dict[str, Any]:
    """Load, quantize with the given settings and samples, save."""
    import torch
    from gptqmodel import GPTQModel, QuantizeConfig

    torch.manual_seed(0)
    torch.set_num_threads(int(args["threads"]))
    samples = [{"input_ids": ids, "attention_mask": [1] * len(ids)} for ids in args["input_ids"]]
    config = QuantizeConfig(
        bits=int(args["bits"]),
        group_size=int(args["group_size"]),
        desc_act=bool(args["desc_act"]),
        damp_percent=float(args["damp"]),
        sym=bool(args["sym"]),
        offload_to_disk=False,
        device="cpu",
    )
    started = time.perf_counter()
    model = GPTQModel.load(args["source"], config)
    model.quantize(samples, batch_size=1, calibration_sort=None)  # with the tokenizer load() read, as the stage
    model.save(args["out"])
    return {
        "work_s": time.perf_counter() - started,
        "samples": len(samples),
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }


def main(argv: list[str]) -> None:
    """Entry point: ``ARGS.json REPORT.json``."""
    args_path, report_path = Path(argv[0]).resolve(), Path(argv[1]).resolve()
    args = json.loads(args_path.read_text(encoding="utf-8"))
    os.chdir(args["work_dir"])
    report = quantize(args)
    report_path.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main(sys.argv[1:])
