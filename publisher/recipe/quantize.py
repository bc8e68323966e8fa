"""The quantize and imatrix sections: llama.cpp quant types, variants of them, and the importance matrix."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import Discriminator, Field, Tag, field_validator, model_validator

from publisher import limits
from publisher.formats import gguf_quants
from publisher.recipe.fields import FieldProblem, QuantName, StrictModel, TensorTypeName
from publisher.recipe.naming import Naming, stem_problem


class QuantVariant(StrictModel):
    """A quant type with some tensors at other types, published under its own name (e.g. Q4_K_L)."""

    name: str = Field(description="Name in file names and the card, e.g. Q4_K_L")
    type: QuantName = Field(description="The llama.cpp quant type it starts from, e.g. Q4_K_M")
    token_embd: TensorTypeName | None = Field(None, description="ggml type of the token embedding, e.g. Q8_0")
    output: TensorTypeName | None = Field(None, description="ggml type of the output tensor, e.g. Q8_0")
    tensor_types: dict[str, TensorTypeName] = Field(
        default_factory=dict,
        description="Regular expression on tensor names -> ggml type, as llama-quantize --tensor-type",
    )

    @field_validator("name")
    @classmethod
    def _own_name(cls, value: str) -> str:
        if problem := limits.name_problem(value):
            raise ValueError(f"{value!r} is not a file name part: {problem}")
        key = value.upper()
        if key in gguf_quants.CATALOGUE or key in gguf_quants.ALIASES:
            raise ValueError(f"{value!r} is llama.cpp's own type; give the variant a name of its own, e.g. {key}_L")
        return value

    @field_validator("tensor_types")
    @classmethod
    def _patterns(cls, value: dict[str, str]) -> dict[str, str]:
        for pattern in value:
            try:
                re.compile(pattern)
            except re.error as err:
                raise FieldProblem(f"{pattern!r} is not a valid regular expression ({err})", (pattern,)) from None
        return value

    @property
    def is_plain(self) -> bool:
        """True for a catalogue type with no overrides (a plain name in the recipe)."""
        return self.name == self.type and not (self.token_embd or self.output or self.tensor_types)


def _entry_kind(value: Any) -> str:
    return "quant-variant" if isinstance(value, dict | QuantVariant) else "quant-name"


# A plain name (IQ3_M) or a variant mapping; the tags keep pydantic's errors on the right branch.
QuantEntry = Annotated[
    Annotated[QuantName, Tag("quant-name")] | Annotated[QuantVariant, Tag("quant-variant")],
    Discriminator(_entry_kind),
]


class Quantize(StrictModel):
    """Which llama.cpp quant types (and variants of them) to make from the reference GGUF."""

    types: list[QuantEntry] = Field(
        min_length=1, description="llama.cpp quant types, e.g. Q4_K_M, or variants {name, type, token_embd, ...}"
    )
    threads: limits.Threads | None = Field(None, description="Quantizer threads; 0 or unset: all cores")
    basename: str | None = Field(None, description="File name stem; default from model.name, e.g. causallm_14b")
    naming: Naming = Field(
        "thebloke",
        description="File names: thebloke (causallm_14b.Q4_K_M.gguf) or llama.cpp (CausalLM-14B-Q4_K_M.gguf)",
    )
    size_label: str | None = Field(None, description="Size in llama.cpp-style names, e.g. 14B or 8x7B")

    @field_validator("types")
    @classmethod
    def _unique(cls, value: list[str | QuantVariant]) -> list[str | QuantVariant]:
        seen: dict[str, int] = {}
        for index, entry in enumerate(value):
            name = entry.name if isinstance(entry, QuantVariant) else entry
            if name.upper() in seen:
                raise FieldProblem(f"{name} is listed twice (also at types[{seen[name.upper()]}])", (index,))
            seen[name.upper()] = index
        return value

    @field_validator("basename")
    @classmethod
    def _basename(cls, value: str | None) -> str | None:
        if value is not None and (problem := stem_problem(value, limits.MAX_BASENAME_BYTES)):
            raise ValueError(f"{value!r} is not a file name stem: {problem}")
        return value

    @field_validator("size_label")
    @classmethod
    def _size_label(cls, value: str | None) -> str | None:
        if value is not None and (problem := stem_problem(value, 32)):
            raise ValueError(f"{value!r} is not a size label such as 14B: {problem}")
        return value

    @property
    def names(self) -> list[str]:
        """The artifact names in recipe order: catalogue names and variant names."""
        return [entry.name if isinstance(entry, QuantVariant) else entry for entry in self.types]

    def variant(self, name: str) -> QuantVariant:
        """The entry called ``name``; a plain type comes back as a variant without overrides."""
        for entry in self.types:
            if isinstance(entry, QuantVariant) and entry.name == name:
                return entry
            if entry == name:
                return QuantVariant.model_construct(name=name, type=name, tensor_types={})
        raise KeyError(name)


class Imatrix(StrictModel):
    """The importance matrix: computed by llama.cpp's llama-imatrix from a calibration text, or an existing file."""

    text: str | None = Field(
        None, description="Calibration text file, relative to the recipe; default: the one shipped with publisher"
    )
    chat_template: bool = Field(
        False, description="Render the text's paragraphs as chat turns through model.prompt_template first"
    )
    chunks: limits.Chunks = Field(64, description="At most this many chunks of context_length tokens")
    context_length: limits.ContextLength = Field(512, description="Tokens per chunk")
    gpu_layers: limits.GpuLayers = Field(0, description="Layers offloaded to the GPU; -1 for all")
    threads: limits.Threads | None = Field(None, description="Threads; 0 or unset: all cores")
    file: str | None = Field(None, description="An existing imatrix GGUF to use instead of computing one")
    publish_text: bool | None = Field(
        None,
        description="Publish the calibration text beside the matrix; default: only for the shipped text (MIT)",
    )

    @model_validator(mode="after")
    def _file_or_text(self) -> Imatrix:
        if self.file is not None and (self.text is not None or self.chat_template):
            raise FieldProblem("give either file (an existing imatrix) or text to compute one, not both", ("file",))
        return self
