"""The recipe: one YAML file that says what to build, test, describe and publish.

``load_recipe(path)`` reads a file and returns a validated :class:`Recipe`, or raises
:class:`~publisher.errors.RecipeError` whose lines each name the file, the YAML line and the
dotted field, e.g. ``recipes/x.yaml:12: quantize.types[3]: unknown quant type 'Q4_K_X'``.
"""

from __future__ import annotations

import codecs
import datetime
import difflib
import hashlib
import re
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    PrivateAttr,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from publisher import limits, prompts, quants
from publisher.errors import RecipeError

MAX_RECIPE_BYTES = 1_000_000
MAX_EXPANDED_NODES = 100_000

REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
LANGUAGE = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})?$")


class FieldProblem(ValueError):
    """A problem with an element below the field being validated.

    ``at`` is appended to pydantic's location, so a list validator can blame one item
    (``model.languages[1]``) and the recipe-wide checks can blame the exact field.
    """

    def __init__(self, message: str, at: tuple[int | str, ...]) -> None:
        super().__init__(message)
        self.at = at


def _as_list(value: Any) -> Any:
    """Let a single string stand for a one-element list."""
    return [value] if isinstance(value, str) else value


# json_schema_input_type: editors must accept the single-string shorthand too.
StrList = Annotated[list[str], BeforeValidator(_as_list, json_schema_input_type=str | list[str])]


class StrictModel(BaseModel):
    """Base for every recipe element: unknown keys are errors, values are not coerced silently."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False)


def _check_repo_id(value: str) -> str:
    if not REPO_ID.match(value):
        raise ValueError(f"{value!r} is not a Hub repo id of the form owner/name")
    return value


RepoId = Annotated[str, BeforeValidator(lambda v: _check_repo_id(v) if isinstance(v, str) else v)]


def _quant_name(value: Any) -> Any:
    return quants.lookup(value).name if isinstance(value, str) else value


QuantName = Annotated[str, BeforeValidator(_quant_name)]


def _artifact_name(value: Any) -> Any:
    """A catalogue name in its canonical spelling, or a variant's name as written (checked against quantize.types)."""
    if not isinstance(value, str):
        return value
    try:
        return quants.lookup(value).name
    except quants.UnknownQuantType:
        if limits.name_problem(value) is None:
            return value
        raise


ArtifactName = Annotated[str, BeforeValidator(_artifact_name)]


def _tensor_type_name(value: Any) -> Any:
    if isinstance(value, str):
        quants.tensor_type(value)
        return value.strip().upper()
    return value


TensorTypeName = Annotated[str, BeforeValidator(_tensor_type_name)]


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

    name: str = Field(description="Human name, e.g. 'Meta Llama 2 Community License'")
    via: str = Field(description="The base model or family it comes from, e.g. 'Llama 2'")
    link: str | None = Field(None, description="Where the licence text is")


class Model(StrictModel):
    """What the model is: the card's frontmatter and its prompt format."""

    name: str = Field(description="Display name, e.g. 'CausalLM 14B'")
    creator: str = Field(description="Who made the source model, e.g. 'CausalLM'")
    creator_url: str | None = None
    base_model: StrList = Field(default_factory=list, description="Hub ids of the model(s) quantized here")
    model_type: str = Field("llama", description="Architecture family, e.g. llama, mistral, qwen2")
    license: str = Field(description="Hub licence id, e.g. apache-2.0, wtfpl, llama2, other")
    license_name: str | None = Field(None, description="Required with license: other")
    license_link: str | None = Field(None, description="Required with license: other")
    inherited_licenses: list[InheritedLicense] = Field(default_factory=list)
    datasets: StrList = Field(default_factory=list)
    languages: StrList = Field(default_factory=list)
    tags: StrList = Field(default_factory=list)
    pipeline_tag: str = "text-generation"
    prompt_template: str = Field(
        "chatml", description="A named template (chatml, llama-2-chat, vicuna, ...) or literal text with {prompt}"
    )
    system_message: str = Field("", description="Default system message for {system_message}")
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

    @model_validator(mode="after")
    def _other_license_needs_name(self) -> Model:
        if self.license == "other" and not (self.license_name and self.license_link):
            raise FieldProblem("license 'other' needs license_name and license_link as well", ("license",))
        return self

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
        if key in quants.CATALOGUE or key in quants.ALIASES:
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
        if value is not None and (problem := limits.name_problem(value, limits.MAX_BASENAME_BYTES)):
            raise ValueError(f"{value!r} is not a file name stem: {problem}")
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


def branch_name_problem(name: str) -> str | None:
    """Why git (``git check-ref-format --branch``) or the Hub would refuse ``name``, or ``None``."""
    components = name.split("/")
    git_rules = [
        (not name, "it is empty"),
        (any(ord(c) < 0x20 or ord(c) == 0x7F for c in name), "git refuses control characters"),
        (any(c in name for c in " ~^:?*[\\"), "git refuses spaces and any of ~ ^ : ? * [ \\"),
        (".." in name, "git refuses '..'"),
        ("@{" in name, "git refuses '@{'"),
        (name == "@", "git refuses '@' alone"),
        (name.startswith("-"), "git refuses a leading '-'"),
        (name.startswith("/") or name.endswith("/") or "//" in name, "git refuses empty parts between '/'"),
        (any(c.startswith(".") for c in components), "git refuses a part that starts with '.'"),
        (any(c.endswith(".lock") for c in components), "git refuses a part that ends with '.lock'"),
        (name.endswith("."), "git refuses a trailing '.'"),
    ]
    hub_rules = [
        (name.startswith("refs/"), "the Hub keeps refs/ for its own refs (refs/pr/N, refs/convert/...)"),
        (bool(re.fullmatch(r"[0-9a-fA-F]{40}", name)), "the Hub would take 40 hex digits for a commit id"),
        (name == "HEAD", "git and the Hub read HEAD as the current commit"),
        (
            not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._/-]*", name),
            "use letters, digits and . _ / - from a letter or digit on",
        ),
    ]
    return next((why for broken, why in git_rules + hub_rules if broken), None)


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


class Recipe(StrictModel):
    """A whole recipe file."""

    name: str | None = Field(None, description="Build name (folder under the workdir); default: the file's stem")
    source: Source
    model: Model
    convert: Convert = Field(default_factory=Convert)
    imatrix: Imatrix | None = Field(None, description="Importance matrix for the quantizer; required by IQ1-IQ3_XS")
    quantize: Quantize
    smoke: Smoke = Field(default_factory=Smoke)
    card: Card
    publish: Publish

    _path: Path | None = PrivateAttr(None)
    _warnings: list[str] = PrivateAttr(default_factory=list)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        if value is not None and (problem := limits.name_problem(value)):
            raise ValueError(f"{value!r} is not a build name: {problem}")
        return value

    @model_validator(mode="after")
    def _cross_checks(self) -> Recipe:
        built = set(self.quantize.names)
        if self.imatrix is None:
            _needs_no_imatrix(self.quantize.types)
        if self.quantize.basename is None and (
            problem := limits.name_problem(self.basename, limits.MAX_BASENAME_BYTES)
        ):
            raise FieldProblem(
                f"the file name stem made from it, {self.basename!r}, {problem}; set quantize.basename",
                ("model", "name"),
            )
        if self.smoke.max_tokens >= self.smoke.context_length:
            raise FieldProblem(
                f"{self.smoke.max_tokens} tokens do not fit a smoke context of {self.smoke.context_length} with the "
                "prompt; lower max_tokens or raise smoke.context_length",
                ("smoke", "max_tokens"),
            )
        for b, branch in enumerate(self.publish.branches):
            for t, name in enumerate(branch.types):
                if name not in built:
                    raise FieldProblem(_not_built(name), ("publish", "branches", b, "types", t))
        for p, prompt in enumerate(self.smoke.prompts):
            # the expect_contains shorthand never names types, so indexes into prompt.expect suffice
            for e, expectation in enumerate(prompt.expect):
                for t, name in enumerate(expectation.types or []):
                    if name not in built:
                        raise FieldProblem(_not_built(name), ("smoke", "prompts", p, "expect", e, "types", t))
        return self

    @property
    def path(self) -> Path | None:
        """The file this recipe was loaded from, if any."""
        return self._path

    @property
    def warnings(self) -> list[str]:
        """Lines about values that are allowed but doubtful, found when the recipe was loaded."""
        return list(self._warnings)

    @property
    def build_name(self) -> str:
        """The folder name of this recipe's build under the workdir."""
        if self.name:
            return self.name
        if self._path is not None:
            return self._path.stem
        return slug(self.model.name, sep="-")

    @property
    def basename(self) -> str:
        """Stem of the artifact file names, e.g. ``causallm_14b`` for ``causallm_14b.Q4_K_M.gguf``."""
        return self.quantize.basename or slug(self.model.name, sep="_")

    def resolve_path(self, value: str) -> Path:
        """A path from the recipe, taken relative to the recipe file's folder."""
        path = Path(value).expanduser()
        if not path.is_absolute() and self._path is not None:
            path = self._path.parent / path
        return path

    def where(self, *loc: int | str) -> str:
        """``file:LINE: dotted.field`` for a recipe value, for errors found after loading (at build time)."""
        if self._path is None:
            return _dotted(loc)
        try:
            root = _compose(self._path, _read_text(self._path))
        except RecipeError:
            return f"{self._path}: {_dotted(loc)}"
        return f"{self._path}:{_locate(root, loc)}: {_dotted(loc)}"

    def source_dir(self) -> Path | None:
        """The local source folder, if the recipe names one."""
        return self.resolve_path(self.source.path) if self.source.path else None

    def artifact_filename(self, quant_type: str) -> str:
        """The published file name of one quant type."""
        return f"{self.basename}.{quant_type}.gguf"

    def fingerprint(self) -> str:
        """sha256 of the validated recipe content (not of its formatting)."""
        return hashlib.sha256(dump_recipe(self).encode()).hexdigest()


def _not_built(name: str) -> str:
    """Why a name listed outside quantize.types is wrong: a typo of a type, or a type not built."""
    try:
        quants.lookup(name)
    except quants.UnknownQuantType as err:
        return str(err)
    return f"{name} is not built: add it to quantize.types or drop it here"


_IMATRIX_FIX = "add an imatrix section (imatrix: {} computes one from the shipped calibration text)"


def _needs_no_imatrix(entries: list[str | QuantVariant]) -> None:
    """Refuse the types and tensor types llama.cpp will not write without an importance matrix."""
    for index, entry in enumerate(entries):
        variant = entry if isinstance(entry, QuantVariant) else None
        base = quants.CATALOGUE[variant.type if variant else str(entry)]
        if base.needs_imatrix:
            where: tuple[int | str, ...] = ("quantize", "types", index) + (("type",) if variant else ())
            raise FieldProblem(
                f"{base.name} needs an importance matrix: {_IMATRIX_FIX}, or choose a type that does not, "
                "such as Q4_K_M or IQ4_XS",
                where,
            )
        for pattern, kind in (variant.tensor_types if variant else {}).items():
            if kind in quants.IMATRIX_TENSOR_TYPES:
                raise FieldProblem(
                    f"tensor type {kind} needs an importance matrix: {_IMATRIX_FIX}, or pick another type",
                    ("quantize", "types", index, "tensor_types", pattern),
                )


def slug(text: str, sep: str) -> str:
    """Lower-case ``text`` with every run of other characters turned into ``sep``."""
    return re.sub(r"[^a-z0-9.]+", sep, text.lower()).strip(sep + ".") or "model"


# ---------------------------------------------------------------------------------------------
# Loading with file:line errors
# ---------------------------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """SafeLoader whose construction errors carry the offending node's position."""

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (ValueError, TypeError, OverflowError) as err:  # e.g. `!!int abc` or a date like 2024-13-01
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read {node.value!r} ({err})", node.start_mark
            ) from None


_KEY_KINDS = {"int": "an integer", "float": "a number", "bool": "a boolean", "null": "null", "timestamp": "a date"}


def _read_text(path: Path) -> str:
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_RECIPE_BYTES + 1)  # bounded: never slurp a huge file or a device
    except FileNotFoundError:
        raise RecipeError([f"{path}: no such file"]) from None
    except IsADirectoryError:
        raise RecipeError([f"{path}: is a folder, not a recipe file"]) from None
    except OSError as err:
        raise RecipeError([f"{path}: cannot read ({err.strerror})"]) from None
    if len(raw) > MAX_RECIPE_BYTES:
        raise RecipeError([f"{path}: more than {MAX_RECIPE_BYTES} bytes, too large for a recipe"])
    raw = raw.removeprefix(codecs.BOM_UTF8)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        column = err.start - raw.rfind(b"\n", 0, err.start)
        byte = raw[err.start]
        raise RecipeError(
            [f"{path}:{line}: not UTF-8 text (byte 0x{byte:02x} in column {column}); save the file as UTF-8"]
        ) from None


def _yaml_problem(path: Path, err: yaml.YAMLError) -> str:
    """One line for a PyYAML error, with the line it points at when it has one."""
    if isinstance(err, yaml.reader.ReaderError):
        return f"{path}: character U+{err.character:04X} is not allowed in YAML"
    if isinstance(err, yaml.MarkedYAMLError):
        mark = err.problem_mark or err.context_mark
        line = f":{mark.line + 1}" if mark else ""
        label = "YAML error" if isinstance(err, yaml.constructor.ConstructorError) else "YAML syntax error"
        problem = err.problem or err.context or "invalid YAML"
        if err.context and problem.startswith("but "):  # "expected a single document ..., but found another"
            problem = f"{err.context}, {problem}"
        return f"{path}{line}: {label}: {problem}"
    return f"{path}: YAML error: {str(err).splitlines()[0] if str(err) else type(err).__name__}"


def _compose(path: Path, text: str) -> yaml.Node:
    try:
        node = yaml.compose(text, Loader=_Loader)
    except yaml.reader.ReaderError as err:
        line = text[: err.position].count("\n") + 1
        raise RecipeError([f"{path}:{line}: character U+{err.character:04X} is not allowed in YAML"]) from None
    except yaml.YAMLError as err:
        raise RecipeError([_yaml_problem(path, err)]) from None
    except RecursionError:  # PyYAML composes recursively: thousands of nested [ or {
        raise RecipeError([f"{path}: nesting is too deep for a recipe"]) from None
    if node is None:
        raise RecipeError([f"{path}: the file is empty; a recipe needs source, model, quantize, card and publish"])
    if not isinstance(node, yaml.MappingNode):
        kind = "a list" if isinstance(node, yaml.SequenceNode) else "a single value"
        raise RecipeError([f"{path}:{node.start_mark.line + 1}: a recipe must be a mapping of keys, not {kind}"])
    return node


def _check_tree(path: Path, root: yaml.Node) -> None:
    """Refuse keys that are not names, duplicate keys and alias expansions that blow up (billion laughs)."""
    sizes: dict[int, int] = {}

    def fail(node: yaml.Node, message: str) -> RecipeError:
        return RecipeError([f"{path}:{node.start_mark.line + 1}: {message}"])

    def expanded(node: yaml.Node, depth: int) -> int:
        if id(node) in sizes:
            return sizes[id(node)]
        if depth > 100:
            raise fail(node, "nesting is too deep for a recipe")
        total = 1
        if isinstance(node, yaml.MappingNode):
            seen: dict[str, int] = {}
            for key, value in node.value:
                if not isinstance(key, yaml.ScalarNode):
                    raise fail(key, "a key must be a plain name, not a list or mapping")
                if key.tag.endswith(":merge"):  # `<<: *alias`
                    pass
                elif not key.tag.endswith(":str"):
                    kind = _KEY_KINDS.get(key.tag.rsplit(":", 1)[-1], "not text")
                    raise fail(key, f"key {key.value!r} is not a name (YAML reads it as {kind})")
                elif key.value in seen:
                    raise fail(key, f"duplicate key {key.value!r} (first at line {seen[key.value]})")
                seen[key.value] = key.start_mark.line + 1
                total += expanded(key, depth + 1) + expanded(value, depth + 1)
        elif isinstance(node, yaml.SequenceNode):
            for item in node.value:
                total += expanded(item, depth + 1)
        sizes[id(node)] = total
        if total > MAX_EXPANDED_NODES:
            raise fail(node, f"aliases expand to more than {MAX_EXPANDED_NODES} values; refusing (alias bomb?)")
        return total

    expanded(root, 0)


def _construct(path: Path, root: yaml.Node) -> Any:
    """Python values from a composed (and checked) tree."""
    loader = _Loader("")
    try:
        return loader.construct_document(root)
    except yaml.YAMLError as err:
        raise RecipeError([_yaml_problem(path, err)]) from None
    finally:
        loader.dispose()


def _locate(root: yaml.Node, loc: tuple[int | str, ...]) -> int:
    """The 1-based line of what ``loc`` names, or of its nearest ancestor present in the file.

    A mapping value is placed on its key's line, a list item where the item starts; so an unknown
    key points at itself, a missing key at the key of the mapping that lacks it.
    """
    node, line = root, root.start_mark.line + 1
    for part in loc:
        if isinstance(node, yaml.MappingNode) and isinstance(part, str):
            found = next((kv for kv in node.value if isinstance(kv[0], yaml.ScalarNode) and kv[0].value == part), None)
            if found is None:
                break
            line, node = found[0].start_mark.line + 1, found[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


def _dotted(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _model_at(loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    """The recipe element class at ``loc`` (list indexes skipped), for did-you-mean hints."""
    model: type[BaseModel] | None = Recipe
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part) if model is not None else None
        if field is None:
            return None
        model = None
        pending: list[Any] = [field.annotation]
        while pending:  # find the model inside X | None, list[X], Annotated[...]
            current = pending.pop()
            if isinstance(current, type) and issubclass(current, BaseModel):
                model = current
                break
            pending.extend(typing.get_args(current))
    return model


def _unknown_key(loc: tuple[int | str, ...]) -> str:
    model = _model_at(loc[:-1])
    if model is None:
        return "unknown key"
    allowed = list(model.model_fields)
    close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
    return f"unknown key (did you mean {close[0]}?)" if close else f"unknown key; expected one of {', '.join(allowed)}"


def _shown(value: Any) -> str:
    """A value as a YAML author would recognize it, for '(got ...)'."""
    if value is None:
        return "an empty value"
    if isinstance(value, dict):
        return "a mapping" if value else "an empty mapping"
    if isinstance(value, list):
        return "a list" if value else "an empty list"
    if isinstance(value, datetime.date):
        return f"the date {value.isoformat()}"
    return repr(value)


def _message(error: Any, loc: tuple[int | str, ...]) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return _unknown_key(loc)
    if kind == "missing":
        return "required key is missing"
    ctx_error = (error.get("ctx") or {}).get("error")
    if kind in ("value_error", "assertion_error") and ctx_error is not None:
        return str(ctx_error)  # our own wording, without pydantic's "Value error, " prefix
    msg = str(error["msg"])
    msg = re.sub(r"a valid dictionary( or instance of \w+)?", "a mapping of keys", msg)
    msg = re.sub(r",? (unable to .*|got a number with .*|after validation.*)$", "", msg)
    msg = msg[:1].lower() + msg[1:]
    got = error.get("input")
    hint = "; put it in quotes to make it text" if kind == "string_type" and not isinstance(got, dict | list) else ""
    if got is None and hint:
        hint = ""
    return f"{msg} (got {_shown(got)}{hint})"


_PYDANTIC_TAG = re.compile(r"^[a-z][a-z-]*\[.*\]$")


_UNION_TAGS = {"quant-name", "quant-variant"}


def _strip_model_tags(loc: tuple[int | str, ...]) -> tuple[int | str, ...]:
    # pydantic may insert validator or union tags such as 'function-before[_quant_name(), str]'
    return tuple(
        p for p in loc if not (isinstance(p, str) and (p in _UNION_TAGS or (_PYDANTIC_TAG.match(p) and "(" in p)))
    )


def _format_errors(path: Path, root: yaml.Node, err: ValidationError) -> list[str]:
    """One line per problem, in the order of the file."""
    problems: list[tuple[int, str]] = []
    for error in err.errors():
        loc = _strip_model_tags(tuple(error["loc"]))
        ctx_error = (error.get("ctx") or {}).get("error")
        if isinstance(ctx_error, FieldProblem):
            loc += ctx_error.at
        line = _locate(root, loc)
        problems.append((line, f"{path}:{line}: {_dotted(loc)}: {_message(error, loc)}"))
    return [text for _line, text in sorted(problems, key=lambda p: p[0])]


def _surrogates(path: Path, root: yaml.Node, data: Any, loc: tuple[int | str, ...] = ()) -> list[str]:
    """One line per text value holding a lone surrogate (YAML lets "\\ud800" escapes make them)."""
    if isinstance(data, dict):
        keys = [key for key in data if isinstance(key, str) and limits.surrogate_problem(key)]
        if keys:  # the key itself cannot be shown, so blame the mapping that holds it
            return [_problem_line(path, root, loc, f"a key {limits.surrogate_problem(keys[0])}")]
        return [line for key, value in data.items() for line in _surrogates(path, root, value, (*loc, str(key)))]
    if isinstance(data, list):
        return [line for index, value in enumerate(data) for line in _surrogates(path, root, value, (*loc, index))]
    problem = limits.surrogate_problem(data) if isinstance(data, str) else None
    return [_problem_line(path, root, loc, problem)] if problem else []


def _problem_line(path: Path, root: yaml.Node, loc: tuple[int | str, ...], message: str) -> str:
    return f"{path}:{_locate(root, loc)}: {_dotted(loc)}: {message}"


def _parse(text: str, path: Path) -> tuple[Recipe, yaml.Node]:
    root = _compose(path, text)
    _check_tree(path, root)
    data = _construct(path, root)
    if problems := _surrogates(path, root, data):
        raise RecipeError(problems)
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as err:
        raise RecipeError(_format_errors(path, root, err)) from None
    recipe._path = path
    return recipe, root


def parse_recipe(text: str, path: Path) -> Recipe:
    """Validate recipe ``text`` as if read from ``path`` (used for messages and relative paths).

    Only the text is checked; :func:`load_recipe` also checks the paths it names.
    """
    return _parse(text, path)[0]


def load_recipe(path: str | Path) -> Recipe:
    """Read and validate a recipe file and the files it names; :class:`RecipeError` has one line per problem.

    Paths must be files or folders of the expected kind, the build name (the file's stem unless
    ``name`` is set) a safe folder name, and context lengths within what the local source was
    trained on (see :mod:`publisher.limits`).
    """
    path = Path(path)
    recipe, root = _parse(_read_text(path), path)
    problems, warnings = limits.check_files(recipe)
    lines = [_problem_line(path, root, loc, message) for loc, message in problems]
    if recipe.name is None and (problem := limits.name_problem(path.stem)):
        lines.insert(0, f"{path}: build name {path.stem!r} (from the file's name): {problem}; set name in the recipe")
    if lines:
        raise RecipeError(lines)
    recipe._warnings = [_problem_line(path, root, loc, message) for loc, message in warnings]
    return recipe


def dump_recipe(recipe: Recipe) -> str:
    """The recipe as YAML that :func:`parse_recipe` reads back to an equal recipe."""
    data = recipe.model_dump(mode="json", exclude_defaults=True)
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)


def recipe_json_schema() -> dict[str, Any]:
    """JSON Schema of the recipe format, for editors (yaml-language-server)."""
    schema = Recipe.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "publisher recipe"
    return schema
