"""The recipe's ``gptq`` and ``awq`` sections: folder formats for GPU servers, one branch per variant.

Both share one shape (:class:`FolderSection`): a list of variants, each published on its own branch
of a sibling repo in TheBloke's layout, the calibration text, its sample count and length, and the
device. Only the variants' own settings differ.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from publisher.recipe.fields import FieldProblem, RepoId, StrictModel, branch_name_problem

# -1 is one group per row (no grouping); the others are the sizes the GPTQ kernels support.
GROUP_SIZES = (-1, 32, 64, 128, 256, 512, 1024)
# The group sizes every AWQ kernel (AutoAWQ's GEMM and GEMV, vLLM's, gptqmodel's torch) reads.
AWQ_GROUP_SIZES = (-1, 32, 64, 128)


class FolderVariant(StrictModel):
    """One parameter set of a folder format, published on its own branch."""

    kind: ClassVar[str] = ""
    group_sizes: ClassVar[tuple[int, ...]] = GROUP_SIZES
    row_multiple: ClassVar[int] = 1  # what the output widths of the clipped layers must be a multiple of

    bits: int
    group_size: int = Field(128, description="Weights sharing one scale: 32, 64, 128, ... or -1 for a whole row")
    branch: str | None = Field(None, description="Branch name; default from the settings, in TheBloke's style")
    description: str = Field("", description="The branch table's description of this variant")

    @field_validator("group_size")
    @classmethod
    def _group_size(cls, value: int) -> int:
        if value not in cls.group_sizes:
            sizes = ", ".join(str(s) for s in cls.group_sizes)
            raise ValueError(
                f"group size {value} is not one {cls.__name__.removesuffix('Variant')} kernels use ({sizes})"
            )
        return value

    @field_validator("branch")
    @classmethod
    def _branch(cls, value: str | None) -> str | None:
        if value is not None and (problem := branch_name_problem(value)):
            raise ValueError(f"{value!r} is not a valid branch name: {problem}")
        return value

    @property
    def group_tag(self) -> str:
        """The group size as branch names spell it: ``64g``, or ``nogroup`` for a whole row."""
        return "nogroup" if self.group_size == -1 else f"{self.group_size}g"

    @property
    def branch_name(self) -> str:
        """The variant's branch name (the variant on ``main`` gets no branch of its own)."""
        return self.branch or self.default_branch()

    def default_branch(self) -> str:
        """The branch name made from the settings."""
        raise NotImplementedError

    def settings(self) -> dict[str, Any]:
        """The quantizer's settings for this variant (what the worker is given and the manifest records)."""
        return self.model_dump(mode="json", exclude={"branch", "description"})


class GptqVariant(FolderVariant):
    """One GPTQ parameter set."""

    kind: ClassVar[str] = "GPTQ"
    bits: Literal[2, 3, 4, 8] = Field(4, description="Bits per weight: 2, 3, 4 or 8")
    act_order: bool = Field(True, description="Quantize columns in order of decreasing activation (desc_act)")
    damp: Annotated[float, Field(gt=0, lt=1)] = Field(0.1, description="Dampening, as a fraction of the mean diagonal")

    def default_branch(self) -> str:
        """TheBloke's, e.g. ``gptq-4bit-128g-actorder_True``."""
        return f"gptq-{self.bits}bit-{self.group_tag}-actorder_{self.act_order}"


class AwqVariant(FolderVariant):
    """One AWQ parameter set."""

    kind: ClassVar[str] = "AWQ"
    group_sizes: ClassVar[tuple[int, ...]] = AWQ_GROUP_SIZES
    # gptqmodel's clipping search takes a layer's output rows 64 (or 256) at a time and asserts they divide.
    row_multiple: ClassVar[int] = 64

    # gptqmodel packs other widths too, but the AWQ kernels of vLLM, TGI and transformers read 4 bits only.
    bits: Literal[4] = Field(4, description="Bits per weight: 4, the only width AWQ kernels read")
    zero_point: bool = Field(True, description="Asymmetric quantization with a zero point per group")
    version: Literal["gemm", "gemv"] = Field("gemm", description="Packing layout: gemm (batches) or gemv (one token)")

    def default_branch(self) -> str:
        """For example ``awq-4bit-64g``, with ``-gemv`` and ``-sym`` when those differ from AutoAWQ's defaults."""
        suffix = ("-gemv" if self.version == "gemv" else "") + ("" if self.zero_point else "-sym")
        return f"awq-{self.bits}bit-{self.group_tag}{suffix}"


class FolderSection(StrictModel):
    """What every folder format's section holds besides its variants."""

    suffix: ClassVar[str] = ""

    variants: list[Any]
    main: str | None = Field(None, description="The variant (branch name) published on main; default: the first")
    calibration: str | None = Field(
        None, description="Calibration text, relative to the recipe; default: the one shipped with publisher"
    )
    samples: Annotated[int, Field(ge=1, le=4096)] = Field(64, description="Calibration samples of seq_len tokens")
    seq_len: Annotated[int, Field(ge=16, le=32768)] = Field(512, description="Tokens per calibration sample")
    device: Literal["cpu", "cuda"] = Field("cpu", description="Where to quantize and smoke-test")
    repo_id: RepoId | None = Field(None, description="Repo for the branches; default: publish.repo_id as -GPTQ/-AWQ")

    @field_validator("variants")
    @classmethod
    def _distinct_branches(cls, value: list[FolderVariant]) -> list[FolderVariant]:
        seen: dict[str, int] = {}
        for index, variant in enumerate(value):
            name = variant.branch_name
            if name == "main":
                raise FieldProblem(
                    "main is chosen with the section's main, not as a variant's branch", (index, "branch")
                )
            if name in seen:
                raise FieldProblem(
                    f"two variants go to branch {name!r} (also variants[{seen[name]}]); give one a branch name",
                    (index, "branch") if variant.branch else (index,),
                )
            seen[name] = index
        return value

    @model_validator(mode="after")
    def _main_is_a_variant(self) -> FolderSection:
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
        """The sibling repo: ``repo_id``, else the GGUF repo's name with the format's suffix in place of -GGUF."""
        if self.repo_id:
            return self.repo_id
        stem = gguf_repo_id.removesuffix("-GGUF").removesuffix("-gguf")
        return f"{stem}-{self.suffix}"

    def variant(self, branch: str) -> FolderVariant:
        """The variant published on ``branch``."""
        found: FolderVariant = next(v for v in self.variants if v.branch_name == branch)
        return found


class Gptq(FolderSection):
    """GPTQ variants made by gptqmodel in its own environment (``make setup-gptq``)."""

    suffix: ClassVar[str] = "GPTQ"

    variants: list[GptqVariant] = Field(min_length=1, description="One entry per parameter set (and branch)")


class Awq(FolderSection):
    """AWQ variants made by gptqmodel in the same environment (``make setup-gptq``)."""

    suffix: ClassVar[str] = "AWQ"

    variants: list[AwqVariant] = Field(min_length=1, description="One entry per parameter set (and branch)")

    @model_validator(mode="after")
    def _gemv_needs_cuda(self) -> Awq:
        for index, variant in enumerate(self.variants):
            if variant.version == "gemv" and self.device == "cpu":
                raise FieldProblem(
                    "version gemv is packed only by a CUDA kernel; use gemm, or device: cuda",
                    ("variants", index, "version"),
                )
        return self
