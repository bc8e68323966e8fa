"""Field types and checks the recipe sections share: strict models, names, ids, branch names."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
)

from publisher import limits
from publisher.formats import gguf_quants

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
    return gguf_quants.lookup(value).name if isinstance(value, str) else value


QuantName = Annotated[str, BeforeValidator(_quant_name)]


def _artifact_name(value: Any) -> Any:
    """A catalogue name in its canonical spelling, or a variant's name as written (checked against quantize.types)."""
    if not isinstance(value, str):
        return value
    try:
        return gguf_quants.lookup(value).name
    except gguf_quants.UnknownQuantType:
        if limits.name_problem(value) is None:
            return value
        raise


ArtifactName = Annotated[str, BeforeValidator(_artifact_name)]


def _tensor_type_name(value: Any) -> Any:
    if isinstance(value, str):
        gguf_quants.tensor_type(value)
        return value.strip().upper()
    return value


TensorTypeName = Annotated[str, BeforeValidator(_tensor_type_name)]


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


def slug(text: str, sep: str) -> str:
    """Lower-case ``text`` with every run of other characters turned into ``sep``."""
    return re.sub(r"[^a-z0-9.]+", sep, text.lower()).strip(sep + ".") or "model"
