"""The sections of a recipe: source, model, convert, quantize, imatrix, smoke, card, publish."""

from __future__ import annotations

import difflib
import re
from pathlib import PurePosixPath
from typing import Annotated, Any, Literal

from pydantic import (
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)

from publisher import licences, limits, prompts
from publisher.formats import gguf_quants
from publisher.recipe.fields import (
    LANGUAGE,
    ArtifactName,
    FieldProblem,
    QuantName,
    RepoId,
    StrictModel,
    StrList,
    TensorTypeName,
    _check_repo_id,
    branch_name_problem,
)
from publisher.recipe.naming import Naming, stem_problem


class Source(StrictModel):
    """Where the unquantized model comes from: a Hub repo at a pinned revision, a local folder, or both."""

    repo: RepoId | None = Field(None, description="Hub repo id of the source model, e.g. CausalLM/14B")
    revision: str = Field("main", description="Branch, tag or commit to fetch; the resolved commit is recorded")
    path: str | None = Field(None, description="Local folder holding the model; relative to the recipe file")

    @model_validator(mode="after")
    def _needs_repo_or_path(self) -> Source:
        if self.repo is None and self.path is None:
            raise ValueError("give source.repo (a Hub repo id) or source.path (a local folder), or both")
        return self


class InheritedLicense(StrictModel):
    """A licence that applies because of a base model (e.g. Meta's Llama 2 licence)."""

    id: str | None = Field(None, description="Hub licence id, e.g. llama2; fills in name, link and use_policy")
    name: str | None = Field(None, description="Human name, e.g. 'Meta Llama 2 Community License'")
    via: str = Field(description="The base model or family it comes from, e.g. 'Llama 2'")
    link: str | None = Field(None, description="Where the licence text is")
    use_policy: str | None = Field(None, description="Where its acceptable-use policy is, if it has one")

    @field_validator("id")
    @classmethod
    def _known_id(cls, value: str | None) -> str | None:
        if value is not None and (problem := licences.licence_id_problem(value)):
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _named(self) -> InheritedLicense:
        if self.id is None and not self.name:
            raise FieldProblem("give the licence's name, or its Hub id (e.g. id: llama2)", ("name",))
        return self


class Model(StrictModel):
    """What the model is: the card's frontmatter and its prompt format."""

    name: str = Field(description="Display name, e.g. 'CausalLM 14B'")
    creator: str = Field(description="Who made the source model, e.g. 'CausalLM'")
    creator_url: str | None = None
    base_model: StrList = Field(default_factory=list, description="Hub ids of the model(s) quantized here")
    model_type: str = Field("llama", description="Architecture family, e.g. llama, mistral, qwen2")
    license: str = Field(description="Hub licence id, e.g. apache-2.0, wtfpl, llama2, other")
    license_name: str | None = Field(None, description="Required with license: other")
    license_link: str | None = Field(
        None, description="Required with license: other; a URL, or the name of a file in license_files"
    )
    license_terms: str | None = Field(
        None, description="What the licence asks, in a sentence, e.g. 'registration required for commercial use'"
    )
    license_files: StrList = Field(
        default_factory=list,
        description="Licence files published beside the GGUFs, from the source folder or next to the recipe; "
        "LICENSE*, USE_POLICY* and NOTICE* in the source are published without being listed",
    )
    inherited_licenses: list[InheritedLicense] = Field(default_factory=list)
    datasets: StrList = Field(default_factory=list)
    languages: StrList = Field(default_factory=list)
    tags: StrList = Field(default_factory=list)
    pipeline_tag: str = "text-generation"
    prompt_template: str = Field(
        "chatml", description="A named template (chatml, llama-2-chat, vicuna, ...) or literal text with {prompt}"
    )
    system_message: str = Field("", description="Default system message for {system_message}")
    llama_cpp_template: str | None = Field(
        None,
        description="A chat template built into llama.cpp (e.g. vicuna) that the card's chat commands pass "
        "with --chat-template, for files whose own template is missing or wrong",
    )
    context_length: limits.ContextLength = Field(
        4096, description="Context the card's RAM figures and run commands use"
    )
    allow_long_context: bool = Field(
        False, description="Allow context lengths beyond config.json's trained context (a warning, not an error)"
    )

    @field_validator("base_model")
    @classmethod
    def _base_models_are_repo_ids(cls, value: list[str]) -> list[str]:
        for index, item in enumerate(value):
            try:
                _check_repo_id(item)
            except ValueError as err:
                raise FieldProblem(str(err), (index,)) from None
        return value

    @field_validator("languages")
    @classmethod
    def _language_codes(cls, value: list[str]) -> list[str]:
        for index, item in enumerate(value):
            if not LANGUAGE.match(item):
                raise FieldProblem(f"{item!r} is not an ISO 639 language code such as en or zh", (index,))
        return value

    @field_validator("prompt_template")
    @classmethod
    def _template(cls, value: str) -> str:
        if value.strip().lower() in prompts.NAMED_TEMPLATES:
            return value.strip().lower()
        if "{" not in value:
            close = difflib.get_close_matches(value.strip().lower(), prompts.NAMED_TEMPLATES, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            names = ", ".join(prompts.NAMED_TEMPLATES)
            raise ValueError(
                f"unknown prompt template {value!r}{hint}; name one of {names}, or write text with {{prompt}}"
            )
        prompts.check_template(value)
        return value

    @field_validator("license")
    @classmethod
    def _known_license(cls, value: str) -> str:
        if problem := licences.licence_id_problem(value):
            raise ValueError(problem)
        return value

    @field_validator("license_files")
    @classmethod
    def _distinct_file_names(cls, value: list[str]) -> list[str]:
        seen: dict[str, int] = {}
        for index, item in enumerate(value):
            name = PurePosixPath(item.replace("\\", "/")).name
            if not name or name in (".", ".."):
                raise FieldProblem(f"{item!r} is not a file", (index,))
            if name in seen:
                raise FieldProblem(f"{name} is listed twice (also at license_files[{seen[name]}])", (index,))
            seen[name] = index
        return value

    @field_validator("llama_cpp_template")
    @classmethod
    def _llama_cpp_template(cls, value: str | None) -> str | None:
        if value is None or value in prompts.LLAMA_CPP_TEMPLATES:
            return value
        close = difflib.get_close_matches(value.strip().lower(), prompts.LLAMA_CPP_TEMPLATES, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ValueError(
            f"{value!r} is not a chat template built into llama.cpp{hint}; name one of llama.cpp's "
            "(chatml, llama2, llama3, mistral-v7, vicuna, zephyr, ...: see README, 'Run commands')"
        )

    @model_validator(mode="after")
    def _other_license_needs_name(self) -> Model:
        if self.license == "other" and not (self.license_name and self.license_link):
            raise FieldProblem("license 'other' needs license_name and license_link as well", ("license",))
        link = self.license_link
        if link and licences.is_relative_link(link) and link not in self.published_license_files:
            raise FieldProblem(
                f"{link!r} names a file of the repo, but no such file is published: list it under model.license_files "
                "or give the licence's URL",
                ("license_link",),
            )
        return self

    @property
    def published_license_files(self) -> list[str]:
        """The names ``license_files`` are published under (their file names)."""
        return [PurePosixPath(item.replace("\\", "/")).name for item in self.license_files]

    @property
    def prompt_template_title(self) -> str:
        """The template's display name (e.g. ``ChatML``), or ``Custom`` for a literal."""
        return prompts.resolve(self.prompt_template)[0]

    @property
    def prompt_template_text(self) -> str:
        """The template text with ``{system_message}`` and ``{prompt}`` placeholders."""
        return prompts.resolve(self.prompt_template)[1]


class Convert(StrictModel):
    """How llama.cpp's converter writes the reference GGUF."""

    outtype: Literal["f16", "bf16", "f32", "q8_0"] = "f16"


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


class Link(StrictModel):
    """A link in the card's header or footer."""

    text: str
    url: str


class Profile(StrictModel):
    """Who publishes: shown in the frontmatter (quantized_by) and the header and footer."""

    quantized_by: str
    url: str | None = None
    header_links: list[Link] = Field(default_factory=list)
    footer_links: list[Link] = Field(default_factory=list)
    footer_text: str | None = None


class RelatedRepo(StrictModel):
    """Another repository worth pointing at from the card (AWQ, GPTQ, the original...)."""

    repo: RepoId
    description: str


class Card(StrictModel):
    """How the model card is written."""

    template: str = Field("gguf", description="gguf, branches, or a path to a Jinja template (relative to the recipe)")
    partials_dir: str | None = Field(None, description="Folder of partials overriding the shipped ones")
    profile: Profile
    title: str | None = Field(None, description="Card title; default '<model name> - GGUF'")
    notes: StrList = Field(default_factory=list, description="Markdown paragraphs for the description")
    related: list[RelatedRepo] = Field(default_factory=list)
    embed_original_card: bool = True
    model_index: bool = Field(
        True, description="Put the measured PPL/KLD into the frontmatter's model-index, which the Hub shows as results"
    )
    original_card_base_url: str | None = Field(
        None,
        description="Repo URL (Hub or GitHub) the original card's relative links resolve against; default source.repo",
    )


class Branch(StrictModel):
    """A branch of the published repo and the artifacts it carries."""

    name: str
    types: list[ArtifactName] = Field(min_length=1)
    description: str = ""

    @field_validator("name")
    @classmethod
    def _branch_name(cls, value: str) -> str:
        problem = branch_name_problem(value)
        if problem:
            raise ValueError(f"{value!r} is not a valid branch name: {problem}")
        return value


class Publish(StrictModel):
    """Where the files and the card go."""

    target: Literal["local", "hf"] = "local"
    repo_id: RepoId
    private: bool = False
    branches: list[Branch] = Field(default_factory=list)

    @field_validator("branches")
    @classmethod
    def _distinct_branches(cls, value: list[Branch]) -> list[Branch]:
        seen: dict[str, int] = {}
        for index, branch in enumerate(value):
            if branch.name in seen:
                raise FieldProblem(
                    f"branch {branch.name!r} is declared twice (also at branches[{seen[branch.name]}])", (index, "name")
                )
            seen[branch.name] = index
        return value

    def branch_of(self) -> dict[str, str]:
        """Each quant type or variant that goes to a branch other than main, and that branch."""
        return {name: branch.name for branch in self.branches for name in branch.types}
