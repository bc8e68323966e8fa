"""The whole recipe: its sections, derived names and paths, and the checks across sections."""

from __future__ import annotations

import hashlib
from pathlib import Path

from pydantic import (
    Field,
    PrivateAttr,
    field_validator,
    model_validator,
)

from publisher import limits
from publisher.errors import RecipeError
from publisher.formats import gguf_quants
from publisher.recipe import naming
from publisher.recipe.fields import (
    FieldProblem,
    StrictModel,
    slug,
)
from publisher.recipe.gptq import Awq, Gptq
from publisher.recipe.quantize import Imatrix, Quantize, QuantVariant
from publisher.recipe.sections import Card, Convert, Model, Publish, Source
from publisher.recipe.smoke import Smoke


class Recipe(StrictModel):
    """A whole recipe file."""

    name: str | None = Field(None, description="Build name (folder under the workdir); default: the file's stem")
    source: Source
    model: Model
    convert: Convert = Field(default_factory=Convert)
    imatrix: Imatrix | None = Field(None, description="Importance matrix for the quantizer; required by IQ1-IQ3_XS")
    quantize: Quantize
    gptq: Gptq | None = Field(None, description="GPTQ variants, one branch each, in a sibling -GPTQ repo")
    awq: Awq | None = Field(None, description="AWQ variants, one branch each, in a sibling -AWQ repo")
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
            problem := naming.stem_problem(self.basename, limits.MAX_BASENAME_BYTES)
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
        self._tags_find_their_files()
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
        quantize = self.quantize
        return quantize.basename or naming.default_basename(self.model.name, quantize.naming, quantize.size_label)

    def resolve_path(self, value: str) -> Path:
        """A path from the recipe, taken relative to the recipe file's folder."""
        path = Path(value).expanduser()
        if not path.is_absolute() and self._path is not None:
            path = self._path.parent / path
        return path

    def where(self, *loc: int | str) -> str:
        """``file:LINE: dotted.field`` for a recipe value, for errors found after loading (at build time)."""
        from publisher.recipe.loader import _compose, _dotted, _locate, _read_text

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
        return naming.filename(self.basename, quant_type, self.quantize.naming)

    def _tags_find_their_files(self) -> None:
        """Each type's tag must lead llama.cpp's ``-hf repo:TAG`` to that type's file and no other."""
        branch_of = self.publish.branch_of()
        names = self.quantize.names
        for index, name in enumerate(names):
            same_branch = [self.artifact_filename(n) for n in names if branch_of.get(n) == branch_of.get(name)]
            picked = naming.llama_cpp_pick(same_branch, name)
            if picked != self.artifact_filename(name):
                where = ("quantize", "basename") if self.quantize.basename else ("quantize", "types", index)
                raise FieldProblem(
                    f"llama.cpp's -hf repo:{name} would open {picked or 'no file'} instead of "
                    f"{self.artifact_filename(name)}; choose a basename or a variant name without another type's tag",
                    where,
                )

    def fingerprint(self) -> str:
        """sha256 of the validated recipe content (not of its formatting)."""
        from publisher.recipe.loader import dump_recipe

        return hashlib.sha256(dump_recipe(self).encode()).hexdigest()


def _not_built(name: str) -> str:
    """Why a name listed outside quantize.types is wrong: a typo of a type, or a type not built."""
    try:
        gguf_quants.lookup(name)
    except gguf_quants.UnknownQuantType as err:
        return str(err)
    return f"{name} is not built: add it to quantize.types or drop it here"


_IMATRIX_FIX = "add an imatrix section (imatrix: {} computes one from the shipped calibration text)"


def _needs_no_imatrix(entries: list[str | QuantVariant]) -> None:
    """Refuse the types and tensor types llama.cpp will not write without an importance matrix."""
    for index, entry in enumerate(entries):
        variant = entry if isinstance(entry, QuantVariant) else None
        base = gguf_quants.CATALOGUE[variant.type if variant else str(entry)]
        if base.needs_imatrix:
            where: tuple[int | str, ...] = ("quantize", "types", index) + (("type",) if variant else ())
            raise FieldProblem(
                f"{base.name} needs an importance matrix: {_IMATRIX_FIX}, or choose a type that does not, "
                "such as Q4_K_M or IQ4_XS",
                where,
            )
        for pattern, kind in (variant.tensor_types if variant else {}).items():
            if kind in gguf_quants.IMATRIX_TENSOR_TYPES:
                raise FieldProblem(
                    f"tensor type {kind} needs an importance matrix: {_IMATRIX_FIX}, or pick another type",
                    ("quantize", "types", index, "tensor_types", pattern),
                )
