"""The GPTQ and AWQ worker: runs inside the separate ``.venv-gptq`` environment, never inside publisher's own.

It imports only the standard library, numpy, torch, transformers and gptqmodel, so gptqmodel's pins
(numpy, its patches to transformers) never reach the GGUF path. publisher runs it as a subprocess:

    .venv-gptq/bin/python worker.py REQUEST.json RESULT.json

``REQUEST.json`` holds ``{"op": "quantize" | "smoke" | "calibration", "method": "gptq" | "awq", ...}``; the worker
writes ``RESULT.json`` (``{"ok": true, ...}`` or ``{"ok": false, "error": "one line"}``) and exits 0 either way,
unless it was killed. See ``publisher/gptq/runner.py`` for both sides of the contract.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

# Before torch and gptqmodel are imported: torch.compile hits its recompile limit on the CPU kernel,
# and gptqmodel's CPU pool wants two workers even where the parent gets one core.
os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")
os.environ.setdefault("GPTQMODEL_CPU_WORKERS", "2")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _calibration(tokenizer: Any, text: str, samples: int, seq_len: int) -> list[dict[str, list[int]]]:
    """Consecutive ``seq_len``-token windows of the text, at most ``samples`` of them, without special tokens."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    count = min(samples, len(ids) // seq_len)
    if count == 0:
        raise ValueError(f"the calibration text has {len(ids)} tokens, fewer than seq_len {seq_len}")
    windows = [ids[i * seq_len : (i + 1) * seq_len] for i in range(count)]
    return [{"input_ids": w, "attention_mask": [1] * len(w)} for w in windows]


def _request_calibration(tokenizer: Any, req: dict[str, Any]) -> list[dict[str, list[int]]]:
    """The calibration samples of a request: windows of its ``calibration`` text."""
    text = Path(req["calibration"]).read_text(encoding="utf-8")
    return _calibration(tokenizer, text, int(req["samples"]), int(req["seq_len"]))


def calibration(req: dict[str, Any]) -> dict[str, Any]:
    """The token ids ``quantize`` would calibrate on for the same request, without quantizing (the bench's
    direct side quantizes exactly these)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(req["source"])
    return {"input_ids": [sample["input_ids"] for sample in _request_calibration(tokenizer, req)]}


def _config(req: dict[str, Any]) -> Any:
    """gptqmodel's QuantizeConfig for the request's method and settings."""
    from gptqmodel import QuantizeConfig
    from gptqmodel.quantization import METHOD

    common: dict[str, Any] = {
        "bits": int(req["bits"]),
        "group_size": int(req["group_size"]),
        # The default offloads finished layers to a random temporary folder and records its path in the
        # saved config, so two runs would never write the same bytes. Models this worker makes fit in memory.
        "offload_to_disk": False,
        "device": req.get("device", "cpu"),
    }
    if req.get("method", "gptq") == "awq":
        return QuantizeConfig(method=METHOD.AWQ, format=str(req["version"]), sym=not bool(req["zero_point"]), **common)
    return QuantizeConfig(
        desc_act=bool(req["act_order"]), sym=bool(req.get("sym", True)), damp_percent=float(req["damp"]), **common
    )


def quantize(req: dict[str, Any]) -> dict[str, Any]:
    """Quantize ``req["source"]`` with GPTQ or AWQ into ``req["out"]`` (a new folder)."""
    import torch
    from gptqmodel import BACKEND, GPTQModel
    from gptqmodel.version import __version__
    from transformers import AutoTokenizer

    torch.manual_seed(int(req.get("seed", 0)))
    torch.set_num_threads(max(1, int(req.get("threads") or os.cpu_count() or 1)))
    config = _config(req)
    awq_on_cpu = req.get("method") == "awq" and req.get("device", "cpu") == "cpu"
    started = time.perf_counter()
    model = GPTQModel.load(req["source"], config)
    # The tokenizer gptqmodel loaded with the model, which quantize() uses too: loading another one and handing
    # it over (gptqmodel wraps it again) was work a hand-written script does not do.
    tokenizer = model.tokenizer if model.tokenizer is not None else AutoTokenizer.from_pretrained(req["source"])
    calibration = _request_calibration(tokenizer, req)
    # gptqmodel picks the CUDA GEMM kernel to pack AWQ weights; its torch kernel packs the same layout on the CPU.
    backend = BACKEND.AWQ_TORCH if awq_on_cpu else BACKEND.AUTO
    model.quantize(calibration, batch_size=1, calibration_sort=None, backend=backend)
    model.save(req["out"])
    return {
        "samples": len(calibration),
        "seq_len": int(req["seq_len"]),
        "quantizer": f"gptqmodel {__version__}",
        "seconds": round(time.perf_counter() - started, 3),
        "peak_rss_bytes": _peak_rss(),
    }


def smoke(req: dict[str, Any]) -> dict[str, Any]:
    """Load a GPTQ or AWQ folder on ``req["device"]``, answer the prompts, store log-probs of the quality chunks."""
    # Read by gptqmodel's torch kernel when the model is loaded: dequantize each layer once, not on every token.
    # Set here, not for the whole worker: quantizing runs in the environment a hand-written script has.
    os.environ.setdefault("GPTQ_TORCH_CACHE_WEIGHTS", "1")
    import numpy as np
    import torch
    from gptqmodel import BACKEND, GPTQModel
    from transformers import AutoTokenizer

    torch.manual_seed(int(req.get("seed", 0)))
    started = time.perf_counter()
    device = req.get("device", "cpu")
    # For AWQ on the CPU gptqmodel's own choice is right: its ATen int4 kernel (6x faster than the torch
    # kernel, which computes in float16) where the group size allows, the torch kernel otherwise.
    backend = BACKEND.TORCH if device == "cpu" and req.get("method") != "awq" else BACKEND.AUTO
    model = GPTQModel.load(req["model"], device=device, backend=backend)
    net = model.model
    if device == "cpu":
        # The torch kernel loads only as (b)float16, but computes in its input's dtype; on a CPU without
        # bf16 instructions float32 is many times faster (with GPTQ_TORCH_CACHE_WEIGHTS, dequantized once).
        net.to(torch.float32)
    net.eval()
    tokenizer = AutoTokenizer.from_pretrained(req["model"])
    load_s = time.perf_counter() - started
    answers: list[Any] = []
    generated = 0
    gen_s = 0.0
    with torch.inference_mode():
        for messages in req["prompts"]:
            ids: Any = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt")
            if not isinstance(ids, torch.Tensor):  # transformers 5 may return a BatchEncoding
                ids = ids["input_ids"]
            ids = ids.to(net.device)
            t0 = time.perf_counter()
            out = net.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=int(req["max_tokens"]),
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
            )
            gen_s += time.perf_counter() - t0
            new = out[0, ids.shape[1] :]
            generated += int(new.shape[0])
            answers.append(tokenizer.decode(new, skip_special_tokens=True))
        result: dict[str, Any] = {"answers": answers}
        if req.get("chunks"):
            chunks = np.load(req["chunks"])
            first = int(req["first_scored"])
            parts = []
            for chunk in chunks:
                logits = net(torch.as_tensor(chunk[None, :].astype(np.int64), device=net.device)).logits[0]
                logp = torch.log_softmax(logits[first : len(chunk) - 1].float(), dim=-1)
                parts.append(logp.cpu().numpy().astype(np.float32))
            np.save(req["logp_out"], np.concatenate(parts))
    return result | {
        "tokens_per_s": round(generated / gen_s, 3) if gen_s else None,
        "load_s": round(load_s, 3),
        "peak_rss_bytes": _peak_rss(),
    }


OPS = {"quantize": quantize, "smoke": smoke, "calibration": calibration}


def main(argv: list[str]) -> int:
    request_path, result_path = Path(argv[1]), Path(argv[2])
    req = json.loads(request_path.read_text(encoding="utf-8"))
    try:
        result = {"ok": True} | OPS[req["op"]](req)
    except Exception as err:  # reported to publisher as one line; the traceback stays in the log
        import traceback

        traceback.print_exc()
        result = {"ok": False, "error": f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"}
    result_path.write_text(json.dumps(result), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
