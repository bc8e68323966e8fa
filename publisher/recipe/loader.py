"""The recipe: one YAML file that says what to build, test, describe and publish.

``load_recipe(path)`` reads a file and returns a validated :class:`Recipe`, or raises
:class:`~publisher.errors.RecipeError` whose lines each name the file, the YAML line and the
dotted field, e.g. ``recipes/x.yaml:12: quantize.types[3]: unknown quant type 'Q4_K_X'``.
"""

from __future__ import annotations

import codecs
import datetime
import difflib
import re
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    BaseModel,
    ValidationError,
)

from publisher import limits
from publisher.errors import RecipeError
from publisher.recipe.fields import (
    MAX_EXPANDED_NODES,
    MAX_RECIPE_BYTES,
    FieldProblem,
)
from publisher.recipe.schema import Recipe

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
