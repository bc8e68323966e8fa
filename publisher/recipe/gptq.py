"""The recipe's ``gptq`` section: GPTQ variants, one branch each, in TheBloke's branch layout."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from publisher.recipe.fields import FieldProblem, RepoId, StrictModel, branch_name_problem

# -1 is one group per row (no grouping); the others are the sizes the GPTQ kernels support.
GROUP_SIZES = (-1, 32, 64, 128, 256, 512, 1024)


class GptqVariant(StrictModel):
    """One GPTQ parameter set, published on its own branch."""

    bits: Literal[2, 3, 4, 8] = Field(4, description="Bits per weight: 2, 3, 4 or 8")
    group_size: int = Field(128, description="Weights sharing one scale: 32, 64, 128, ... or -1 for a whole row")
    act_order: bool = Field(True, description="Quantize columns in order of decreasing activation (desc_act)")
    damp: Annotated[float, Field(gt=0, lt=1)] = Field(0.1, description="Dampening, as a fraction of the mean diagonal")
    branch: str | None = Field(None, description="Branch name; default TheBloke's, e.g. gptq-4bit-128g-actorder_True")
    description: str = Field("", description="The branch table's description of this variant")

    @field_validator("group_size")
    @classmethod
    def _group_size(cls, value: int) -> int:
        if value not in GROUP_SIZES:
            sizes = ", ".join(str(s) for s in GROUP_SIZES)
            raise ValueError(f"group size {value} is not one GPTQ kernels use ({sizes})")
        return value

    @field_validator("branch")
    @classmethod
    def _branch(cls, value: str | None) -> str | None:
        if value is not None and (problem := branch_name_problem(value)):
            raise ValueError(f"{value!r} is not a valid branch name: {problem}")
        return value

    @property
    def branch_name(self) -> str:
        """The variant's branch name (the variant on ``main`` gets no branch of its own)."""
        if self.branch:
            return self.branch
        group = "nogroup" if self.group_size == -1 else f"{self.group_size}g"
        return f"gptq-{self.bits}bit-{group}-actorder_{self.act_order}"


class Gptq(StrictModel):
    """GPTQ variants made by gptqmodel in its own environment (``make setup-gptq``)."""

    variants: list[GptqVariant] = Field(min_length=1, description="One entry per parameter set (and branch)")
    main: str | None = Field(None, description="The variant (branch name) published on main; default: the first")
    calibration: str | None = Field(
        None, description="Calibration text, relative to the recipe; default: the one shipped with publisher"
    )
    samples: Annotated[int, Field(ge=1, le=4096)] = Field(64, description="Calibration samples of seq_len tokens")
    seq_len: Annotated[int, Field(ge=16, le=32768)] = Field(512, description="Tokens per calibration sample")
    device: Literal["cpu", "cuda"] = Field("cpu", description="Where to quantize and smoke-test")
    repo_id: RepoId | None = Field(None, description="Repo for the GPTQ branches; default: publish.repo_id as -GPTQ")

    @field_validator("variants")
    @classmethod
    def _distinct_branches(cls, value: list[GptqVariant]) -> list[GptqVariant]:
        seen: dict[str, int] = {}
        for index, variant in enumerate(value):
            name = variant.branch_name
            if name == "main":
                raise FieldProblem("main is chosen with gptq.main, not as a variant's branch", (index, "branch"))
            if name in seen:
                raise FieldProblem(
                    f"two variants go to branch {name!r} (also variants[{seen[name]}]); give one a branch name",
                    (index, "branch") if variant.branch else (index,),
                )
            seen[name] = index
        return value

    @model_validator(mode="after")
    def _main_is_a_variant(self) -> Gptq:
        if self.main is not None and self.main not in self.branches():
            known = ", ".join(self.branches())
            raise FieldProblem(f"{self.main!r} is none of the variants' branches ({known})", ("main",))
        return self

    def branches(self) -> list[str]:
        """Every variant's branch name, in recipe order."""
        return [v.branch_name for v in self.variants]

    @property
    def main_branch(self) -> str:
        """The branch name of the variant published on main."""
        return self.main or self.variants[0].branch_name

    def repo(self, gguf_repo_id: str) -> str:
        """The GPTQ repo: ``repo_id``, else the GGUF repo's name with -GPTQ in place of -GGUF."""
        if self.repo_id:
            return self.repo_id
        stem = gguf_repo_id.removesuffix("-GGUF").removesuffix("-gguf")
        return f"{stem}-GPTQ"

    def variant(self, branch: str) -> GptqVariant:
        """The variant published on ``branch``."""
        return next(v for v in self.variants if v.branch_name == branch)
