"""Checks of a rendered card: frontmatter, section markers, leftovers of templates, linked files."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from huggingface_hub import ModelCardData

from publisher.cards.frontmatter import split_frontmatter
from publisher.cards.imatrix import published_files
from publisher.cards.rows import HUB
from publisher.manifest import Manifest
from publisher.recipe import Recipe

ORIGINAL_SECTION = "original-model-card"
MARKER = re.compile(r"<!--\s*([A-Za-z0-9_.-]+)\s+(start|end)\s*-->")


# Frontmatter keys a published quant card needs, and the recipe field each comes from.
REQUIRED_KEYS = {
    "base_model": "model.base_model",
    "base_model_relation": "the card template",
    "license": "model.license",
    "model_name": "model.name",
    "pipeline_tag": "model.pipeline_tag",
    "quantized_by": "card.profile.quantized_by",
}


def sections(text: str) -> list[tuple[str, str]]:
    """``(name, content)`` of every marked section, in order."""
    found = []
    stack: list[tuple[str, int]] = []
    for match in MARKER.finditer(text):
        name, kind = match.group(1), match.group(2)
        if kind == "start":
            stack.append((name, match.end()))
        elif stack and stack[-1][0] == name:
            _name, start = stack.pop()
            found.append((name, text[start : match.start()]))
    return found


def _marker_problems(text: str) -> list[str]:
    problems = []
    stack: list[str] = []
    for match in MARKER.finditer(text):
        name, kind = match.group(1), match.group(2)
        if kind == "start":
            stack.append(name)
        elif not stack or stack[-1] != name:
            problems.append(f"section marker '{name} end' has no matching start")
        else:
            stack.pop()
    problems += [f"section '{name}' is never closed (missing <!-- {name} end -->)" for name in stack]
    return problems


def _own_markup(text: str, literal: list[str]) -> str:
    """The card without what it shows as data: the original card, code, and recipe text put in as written."""
    text = re.sub(
        rf"<!--\s*{ORIGINAL_SECTION} start\s*-->.*?<!--\s*{ORIGINAL_SECTION} end\s*-->", "", text, flags=re.DOTALL
    )
    for passage in literal:
        text = text.replace(passage, "")
    text = re.sub(r"^(`{3,}|~{3,})[^\n]*\n.*?^\1[ \t]*$", "", text, flags=re.DOTALL | re.MULTILINE)
    return re.sub(r"(`+)(?!`).*?(?<!`)\1(?!`)", "", text, flags=re.DOTALL)


def _frontmatter_problems(text: str) -> list[str]:
    front, _body = split_frontmatter(text)
    if front is None:
        return ["frontmatter: missing (the card must start with a --- YAML block ---)"]
    try:
        data = yaml.safe_load(front)
    except yaml.YAMLError as err:
        return [f"frontmatter: invalid YAML ({str(err).splitlines()[0]})"]
    if not isinstance(data, dict):
        return ["frontmatter: not a mapping of keys"]
    problems = [
        f"frontmatter: required key {key!r} is missing (set {field})"
        for key, field in REQUIRED_KEYS.items()
        if not data.get(key)
    ]
    try:
        ModelCardData(**data)
    except (ValueError, TypeError) as err:
        problems.append(f"frontmatter: {str(err).splitlines()[0]}")
    if data.get("base_model_relation") not in (None, "quantized", "adapter", "merge", "finetune"):
        problems.append(f"frontmatter: base_model_relation {data['base_model_relation']!r} is not one the Hub knows")
    return problems


def _linked_files(text: str, repo_id: str) -> list[tuple[str, str]]:
    pattern = re.compile(rf"{re.escape(HUB)}/{re.escape(repo_id)}/(?:blob|resolve)/([^/\s)]+)/([^\s)\"'>`]+)")
    return [(m.group(1), m.group(2)) for m in pattern.finditer(text)]


def _file_problems(text: str, recipe: Recipe, manifest: Manifest | None, build_dir: Path) -> list[str]:
    if manifest is None:
        return [f"{build_dir}: no build manifest, so linked files cannot be checked; run `publisher build` first"]
    by_name: dict[str, str] = {}
    for artifact in manifest.passed_artifacts():
        for rel in artifact.shards or [artifact.path]:
            by_name[Path(rel).name] = rel
    for rel in published_files(recipe, manifest):
        by_name[Path(rel).name] = rel
    facts = manifest.source.facts if manifest.source is not None else None
    for record in facts.licence_files if facts is not None else []:
        by_name[record.name] = record.path or record.name
    problems = []
    linked = set()
    for _branch, name in _linked_files(text, recipe.publish.repo_id):
        linked.add(name)
        if name not in by_name:
            problems.append(f"linked file {name} is not a passed artifact of the build in {build_dir}")
        elif not (build_dir / by_name[name]).is_file():
            problems.append(f"linked file {name} is missing from {build_dir / by_name[name]}")
    for artifact in manifest.passed_artifacts():
        first = Path((artifact.shards or [artifact.path])[0]).name
        if first not in linked:
            problems.append(f"built file {first} ({artifact.quant_type}) is not linked from the card")
    return problems


def check_card(text: str, recipe: Recipe, manifest: Manifest | None, build_dir: Path | None) -> list[str]:
    """Problems with a rendered card: frontmatter, markers, empty sections, placeholders, linked files.

    Linked files are checked only when ``build_dir`` is given.
    """
    problems = _frontmatter_problems(text)
    problems += _marker_problems(text)
    problems += [f"section '{name}' is empty" for name, content in sections(text) if not content.strip()]
    body = _own_markup(split_frontmatter(text)[1], list(recipe.card.notes))
    for match in re.finditer(r"\{\{|\{%|\{#", body):
        problems.append(f"unrendered template placeholder {match.group(0)!r} in the card")
        break
    if build_dir is not None:
        problems += _file_problems(text, recipe, manifest, build_dir)
    return problems


def names_in_table(text: str, section: str = "README_GGUF.md-provided-files") -> list[str]:
    """File names linked from the first column of a section's table (used by checks and tests)."""
    for name, content in sections(text):
        if name == section:
            return re.findall(r"^\| \[([^\]]+)\]\(", content, flags=re.MULTILINE)
    return []
