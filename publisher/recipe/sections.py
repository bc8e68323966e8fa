"""The sections of a recipe: source, model, convert, card, publish (quantize and smoke have their own modules)."""

from __future__ import annotations

import difflib
from pathlib import PurePosixPath
from typing import Literal

from pydantic import (
    Field,
    field_validator,
    model_validator,
)

from publisher import licences, limits, prompts
from publisher.recipe.fields import (
    LANGUAGE,
    ArtifactName,
    FieldProblem,
    RepoId,
    StrictModel,
    StrList,
    _check_repo_id,
    branch_name_problem,
)


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
