"""The smoke section: prompts every artifact must answer, and the perplexity/KLD quality run."""

from __future__ import annotations

from pydantic import Field, model_validator

from publisher import limits
from publisher.recipe.fields import ArtifactName, StrictModel, StrList


class Expectation(StrictModel):
    """A check on a smoke answer. Required ones fail the artifact; advisory ones are reported."""

    contains: StrList = Field(default_factory=list, description="Each must appear (case-insensitive)")
    not_contains: StrList = Field(default_factory=list, description="None may appear (case-insensitive)")
    required: bool = True
    types: list[ArtifactName] | None = Field(None, description="Quant types or variants it applies to; default: all")

    @model_validator(mode="after")
    def _says_something(self) -> Expectation:
        if not self.contains and not self.not_contains:
            raise ValueError("an expectation needs contains or not_contains")
        return self


class SmokePrompt(StrictModel):
    """A prompt every artifact must answer, with what the answer should hold."""

    prompt: str = Field(min_length=1)
    system_message: str | None = Field(None, description="Overrides model.system_message")
    expect_contains: StrList = Field(default_factory=list, description="Shorthand for a required expectation")
    expect: list[Expectation] = Field(default_factory=list)

    def expectations(self) -> list[Expectation]:
        """All expectations, the ``expect_contains`` shorthand included."""
        extra = [Expectation(contains=self.expect_contains)] if self.expect_contains else []
        return extra + list(self.expect)


class Quality(StrictModel):
    """Perplexity and KL divergence against the reference GGUF."""

    enabled: bool = True
    text: str | None = Field(None, description="Text file for perplexity; default: the one shipped with publisher")
    context_length: limits.ContextLength = 256
    max_chunks: limits.Chunks = 8


class Smoke(StrictModel):
    """How each artifact is tried before anything is published."""

    prompts: list[SmokePrompt] = Field(default_factory=list)
    max_tokens: limits.MaxTokens = 48
    context_length: limits.ContextLength = 1024
    gpu_layers: limits.GpuLayers = Field(0, description="Layers offloaded to the GPU; -1 for all")
    seed: limits.Seed = 0
    tokenizer_parity: bool = True
    extra_probes: StrList = Field(default_factory=list, description="More strings for the tokenizer parity check")
    quality: Quality = Field(default_factory=Quality)
