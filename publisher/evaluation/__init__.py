"""Trying a GGUF before it is published: smoke test, tokenizer and template parity, quality.

Everything here runs the real llama.cpp through llama-cpp-python; nothing is simulated.
"""

from publisher.evaluation.parity import template_parity, tokenizer_parity
from publisher.evaluation.quality import compute_reference_logits, measure_quality, reference_quality
from publisher.evaluation.smoke import LoadedModel, open_for_checks, smoke_problems, smoke_test
from publisher.evaluation.transformers_view import prefetch_transformers_view
from publisher.runtimes.llama_cpp import ModelLoadError

__all__ = [
    "LoadedModel",
    "ModelLoadError",
    "compute_reference_logits",
    "measure_quality",
    "open_for_checks",
    "prefetch_transformers_view",
    "reference_quality",
    "smoke_problems",
    "smoke_test",
    "template_parity",
    "tokenizer_parity",
]
