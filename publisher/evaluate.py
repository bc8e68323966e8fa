"""The evaluation API the build's smoke stage calls; the code lives in :mod:`publisher.evaluation`.

- ``smoke_test(gguf, recipe, quant_type) -> SmokeResult``
- ``tokenizer_parity(gguf, source_dir, recipe) -> TokenizerResult``
- ``template_parity(gguf, recipe) -> TemplateResult``
- ``compute_reference_logits(reference_gguf, recipe, out) -> None`` (once per build)
- ``measure_quality(gguf, reference_logits, recipe) -> QualityResult``
- ``reference_quality(reference_logits, recipe) -> QualityResult`` (the reference's own, from its logits)
"""

from publisher.evaluation import (
    compute_reference_logits,
    measure_quality,
    reference_quality,
    smoke_problems,
    smoke_test,
    template_parity,
    tokenizer_parity,
)

__all__ = [
    "compute_reference_logits",
    "measure_quality",
    "reference_quality",
    "smoke_problems",
    "smoke_test",
    "template_parity",
    "tokenizer_parity",
]
