"""The manifest's per-artifact records: smoke answers, tokenizer and template parity, quality, GPTQ and AWQ settings.

:mod:`publisher.manifest` re-exports each of them; import them from there.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Record(BaseModel):
    """Base of manifest entries: unknown keys are kept out, values are validated on load."""

    model_config = ConfigDict(extra="forbid")


class SmokeAnswer(Record):
    """One smoke prompt's answer and the expectations checked on it."""

    prompt: str
    output: str
    passed: bool
    problems: list[str] = Field(default_factory=list, description="Required expectations that failed")
    advisories: list[str] = Field(default_factory=list, description="Advisory expectations that failed")


class SmokeResult(Record):
    """How an artifact did when loaded and asked the recipe's prompts."""

    passed: bool
    output: str = Field("", description="The first prompt's answer, for the card")
    answers: list[SmokeAnswer] = Field(default_factory=list)
    tokens_per_s: float | None = None
    prompt_tokens_per_s: float | None = None
    load_s: float | None = None
    peak_rss_bytes: int | None = None


class TokenizerResult(Record):
    """Tokenizer parity of the GGUF vocabulary against the source tokenizer."""

    passed: bool
    probes: int
    mismatches: int
    vocab_mismatches: int | None = Field(None, description="Vocabulary entries whose text differs from the source's")
    special_tokens: int | None = Field(
        None, description="Special-token ids, added tokens and BOS/EOS behaviours compared with transformers'"
    )
    special_mismatches: int | None = Field(None, description="How many of those differ")
    sample_strings: int | None = Field(None, description="Strings of the broad sample compared (shipped text, random)")
    sample_characters: int | None = None
    sample_mismatches: int | None = Field(None, description="Sample strings tokenized differently")
    structure_compared: int | None = Field(None, description="Vocabulary entries compared on text, kind and flags")
    structure_differences: int | None = Field(None, description="Structural differences, the normalizer's included")
    vocabulary_sha256: str | None = Field(None, description="sha256 of the tokenizer metadata llama.cpp reads")
    compared_on: str | None = Field(None, description="The file of the build whose identical vocabulary was compared")
    first_mismatch: str | None = None


class TemplateResult(Record):
    """Whether the GGUF's own chat template renders what the recipe's prompt template does."""

    checked: bool
    matches: bool | None = None
    difference: str | None = None
    source_file: str | None = Field(None, description="The source file whose chat template transformers uses")
    gguf_source: str | None = Field(None, description="The source file whose chat template the GGUF carries")
    source_matches: bool | None = Field(
        None, description="Whether the GGUF carries the template transformers uses and renders every shape alike"
    )
    source_difference: str | None = None
    shapes_compared: int | None = Field(None, description="Conversation shapes both engines rendered and compared")
    shapes_differing: int | None = None
    source_cannot_render: list[str] | None = Field(None, description="Shapes transformers cannot render, with why")
    gguf_cannot_render: list[str] | None = Field(None, description="Shapes llama.cpp's Jinja cannot render, with why")
    builtin_format: str | None = Field(None, description="llama.cpp's built-in format picked without --jinja")
    builtin_differences: list[str] | None = Field(None, description="Shapes the built-in format renders otherwise")


class QualityResult(Record):
    """Measured quality against the reference (f16/bf16) GGUF."""

    perplexity: float
    kl_divergence: float | None = None
    top1_agreement: float | None = None
    tokens: int


class FolderParameters(Record):
    """How a folder variant (GPTQ, AWQ) was made: what every format records, the library's own settings apart."""

    bits: int
    group_size: int
    dataset: str = Field(description="The calibration text's file name")
    dataset_sha256: str
    samples: int = Field(description="Calibration samples actually used")
    seq_len: int = Field(description="Tokens per calibration sample")
    branch: str
    quantizer: str = Field(description="The library and version that quantized it, e.g. gptqmodel 7.6.0")

    def calibration_summary(self) -> str:
        """The calibration in words, for commit descriptions."""
        return f"{self.samples} x {self.seq_len} tokens of {self.dataset}; {self.quantizer}."

    def summary(self) -> str:
        """One line for the branch's commit description."""
        return f"{self.bits}-bit, group size {self.group_size}, {self.calibration_summary()}"


class GptqParameters(FolderParameters):
    """How a GPTQ variant was made: the library's own settings plus what it does not record itself."""

    act_order: bool
    damp: float
    sym: bool = True

    def summary(self) -> str:
        """One line for the branch's commit description."""
        return (
            f"GPTQ {self.bits}-bit, group size {self.group_size}, act order {self.act_order}, "
            f"damp {self.damp}, {self.calibration_summary()}"
        )


class AwqParameters(FolderParameters):
    """How an AWQ variant was made."""

    zero_point: bool
    version: str = Field(description="The packing layout, gemm or gemv")

    def summary(self) -> str:
        """One line for the branch's commit description."""
        return (
            f"AWQ {self.bits}-bit, group size {self.group_size}, zero point {self.zero_point}, "
            f"version {self.version.upper()}, {self.calibration_summary()}"
        )
