"""Model cards: a sandboxed Jinja environment, the card's data, rendering, checks and previews.

``render_card(recipe, manifest)`` turns a recipe and (when there is one) a build manifest into a
``README.md``: YAML frontmatter made with :class:`huggingface_hub.ModelCardData`, then a body
rendered from ``templates/`` where every section sits between ``<!-- name start -->`` and
``<!-- name end -->`` markers. Every number in a built card comes from the manifest; without a
build, sizes are estimated from the source's parameter count and marked as estimates.
Nothing here touches the network.
"""

from __future__ import annotations

import dataclasses
import html
import json
import math
import re
import shlex
import struct
import traceback
from collections.abc import Mapping
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import jinja2
import yaml
from huggingface_hub import EvalResult, ModelCardData
from jinja2.sandbox import SandboxedEnvironment

from publisher import prompts, quants
from publisher.errors import CardError
from publisher.manifest import Artifact, Manifest
from publisher.recipe import Recipe

BUILTIN_TEMPLATES = {"gguf": "gguf.md.j2", "branches": "branches.md.j2"}
HTML_TEMPLATE = "page.html.j2"
HUB = "https://huggingface.co"
# llama.cpp's compute buffers, the tokenizer and the process itself, on top of weights and KV cache.
# Measured llama.cpp compute buffers for 7B-14B models at 4k context are 0.2-0.4 GB; we round up.
RAM_OVERHEAD_BYTES = 500_000_000
KV_BYTES_PER_VALUE = 2  # llama.cpp keeps the KV cache in f16 unless told otherwise
MAX_SAFETENSORS_HEADER = 100_000_000
ORIGINAL_SECTION = "original-model-card"
EXAMPLE_PROMPT = "Write a short poem about the sea."
FRONTMATTER = re.compile(r"\A---[ \t]*\r?\n(.*?)\r?\n---[ \t]*(?:\r?\n|\Z)", re.DOTALL)
MARKER = re.compile(r"<!--\s*([A-Za-z0-9_.-]+)\s+(start|end)\s*-->")


def yaml_dump(data: Any, *, sort_keys: bool = False) -> str:
    """YAML as the Hub writes card metadata (block style, unicode kept)."""
    return yaml.safe_dump(data, sort_keys=sort_keys, allow_unicode=True)


# ---------------------------------------------------------------------------------------------
# Locating templates
# ---------------------------------------------------------------------------------------------


def templates_dir() -> Path:
    """The shipped templates: inside the installed package, or the repo's top-level folder (editable installs)."""
    package = Path(__file__).resolve().parent
    for candidate in (package / "templates", package.parent / "templates"):
        if (candidate / BUILTIN_TEMPLATES["gguf"]).is_file():
            return candidate
    raise CardError(
        f"card templates not found in {package / 'templates'} or {package.parent / 'templates'}; reinstall publisher"
    )


def _template_source(recipe: Recipe) -> tuple[Path | None, str]:
    """``(folder of a recipe's own template or None, template name to load)``."""
    choice = recipe.card.template
    if choice in BUILTIN_TEMPLATES:
        return None, BUILTIN_TEMPLATES[choice]
    path = recipe.resolve_path(choice)
    if not path.is_file():
        raise CardError(
            f"card.template: {path}: no such file; name gguf or branches, or a Jinja file relative to the recipe"
        )
    return path.parent, path.name


def _partials_dir(recipe: Recipe) -> Path | None:
    if recipe.card.partials_dir is None:
        return None
    path = recipe.resolve_path(recipe.card.partials_dir)
    if not path.is_dir():
        raise CardError(f"card.partials_dir: {path}: no such folder")
    return path


def template_files(recipe: Recipe) -> dict[str, Path]:
    """Every template file that can take part in rendering this recipe's card, by a location-free label.

    The labels (``shipped/partials/footer.md.j2``, ``partials_dir/footer.md.j2``, ``own/card.md.j2``)
    keep fingerprints stable when the checkout or the recipe folder moves.
    """
    roots: list[tuple[str, Path, str]] = [("shipped", templates_dir(), "*.j2")]
    partials = _partials_dir(recipe)
    if partials is not None:
        roots.append(("partials_dir", partials, "*"))
    own_dir, _own_name = _template_source(recipe)
    if own_dir is not None:
        roots.append(("own", own_dir, "*.j2"))
    files: dict[str, Path] = {}
    for label, root, pattern in roots:
        for path in sorted(root.rglob(pattern)):
            if path.is_file():
                files[f"{label}/{path.relative_to(root).as_posix()}"] = path
    return files


def environment(recipe: Recipe | None = None, *, autoescape: bool = False) -> SandboxedEnvironment:
    """A sandboxed Jinja environment with ``StrictUndefined``.

    Lookup order: the recipe's ``partials_dir`` (as ``partials/...``), the folder of the recipe's
    own template, then the shipped templates.
    """
    loaders: list[jinja2.BaseLoader] = []
    if recipe is not None:
        partials = _partials_dir(recipe)
        if partials is not None:
            loaders.append(jinja2.PrefixLoader({"partials": jinja2.FileSystemLoader(partials)}, delimiter="/"))
        own_dir, _name = _template_source(recipe)
        if own_dir is not None:
            loaders.append(jinja2.FileSystemLoader(own_dir))
    loaders.append(jinja2.FileSystemLoader(templates_dir()))
    env = SandboxedEnvironment(
        loader=jinja2.ChoiceLoader(loaders),
        undefined=jinja2.StrictUndefined,
        autoescape=autoescape,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(
        md_cell=md_cell,
        md_inline=md_inline,
        shell_quote=shell_quote,
        llama_escape=llama_escape,
        py_str=repr,
        gb=format_gb,
    )
    return env


# ---------------------------------------------------------------------------------------------
# Small formatting helpers (also Jinja filters)
# ---------------------------------------------------------------------------------------------


def format_gb(size_bytes: float | None) -> str:
    """Bytes as the Hub shows them: decimal units, ``8.18 GB``; below 1 GB, ``54.4 MB``."""
    if size_bytes is None:
        return "unknown"
    if size_bytes < 1e9:
        return f"{size_bytes / 1e6:.1f} MB"
    return f"{size_bytes / 1e9:.2f} GB"


def format_params(count: int | None) -> str:
    """A parameter count for people: ``14.17B``, ``134.5M``."""
    if count is None:
        return "unknown"
    if count >= 1e9:
        return f"{count / 1e9:.2f}B"
    if count >= 1e6:
        return f"{count / 1e6:.1f}M"
    return f"{count:,}"


def md_cell(value: object) -> str:
    """Text made safe for one markdown table cell: pipes and backslashes escaped, one line, no HTML."""
    text = html.escape(str(value), quote=False)
    text = text.replace("\\", "\\\\").replace("|", "\\|").replace("`", "\\`")
    text = re.sub(r"\s*\r?\n\s*", " ", text).strip()
    return text or " "


def md_inline(value: object) -> str:
    """Text made safe inside markdown prose or link text (brackets, emphasis and HTML neutralised)."""
    text = html.escape(str(value), quote=False)
    return re.sub(r"([\\`*_\[\]])", r"\\\1", text)


def llama_escape(text: str) -> str:
    """Write ``text`` with the escapes llama.cpp's ``-p``/``-sys`` options decode (``\\n``, ``\\t``, ``\\\\``)."""
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t")


def shell_quote(text: str) -> str:
    """Quote for POSIX shells; always quoted so the command reads the same for every value."""
    quoted = shlex.quote(text)
    return quoted if quoted.startswith("'") else f"'{text}'"


def code_fence(text: str) -> str:
    """A backtick fence longer than any run of backticks inside ``text``."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


# ---------------------------------------------------------------------------------------------
# Reading the source folder (never the network)
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Architecture:
    """The shape figures the card needs, read from a transformers ``config.json``."""

    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    hidden: int
    intermediate: int | None
    vocab: int | None
    tied_embeddings: bool
    attention_bias: bool
    max_positions: int | None

    def kv_cache_bytes(self, context: int) -> int:
        """f16 K and V for every layer at ``context`` tokens."""
        return 2 * self.n_layers * self.n_kv_heads * self.head_dim * context * KV_BYTES_PER_VALUE

    def parameters(self) -> int | None:
        """Parameter count of a Llama-style decoder, or ``None`` when the config lacks a figure."""
        if self.intermediate is None or self.vocab is None:
            return None
        q_out = self.n_heads * self.head_dim
        kv_out = self.n_kv_heads * self.head_dim
        attention = self.hidden * q_out + 2 * self.hidden * kv_out + q_out * self.hidden
        if self.attention_bias:
            attention += q_out + 2 * kv_out + self.hidden
        mlp = 3 * self.hidden * self.intermediate
        per_layer = attention + mlp + 2 * self.hidden  # two RMSNorm weights
        embeddings = self.vocab * self.hidden * (1 if self.tied_embeddings else 2)
        return self.n_layers * per_layer + embeddings + self.hidden  # final norm


def _first_int(config: Mapping[str, Any], *keys: str) -> int | None:
    for key in keys:
        value = config.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def read_architecture(source_dir: Path) -> Architecture | None:
    """The shape from ``source_dir/config.json``, or ``None`` when it is absent or not decoder-like."""
    path = source_dir / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        raise CardError(f"{path}: unreadable config ({err}); fix or remove it") from None
    if not isinstance(config, dict):
        raise CardError(f"{path}: config.json is not a JSON object")
    if isinstance(config.get("text_config"), dict):  # multimodal wrappers keep the LM shape here
        config = {**config, **config["text_config"]}
    n_layers = _first_int(config, "num_hidden_layers", "n_layer", "num_layers")
    n_heads = _first_int(config, "num_attention_heads", "n_head")
    hidden = _first_int(config, "hidden_size", "n_embd", "d_model")
    if n_layers is None or n_heads is None or hidden is None:
        return None
    return Architecture(
        n_layers=n_layers,
        n_heads=n_heads,
        n_kv_heads=_first_int(config, "num_key_value_heads", "n_head_kv") or n_heads,
        head_dim=_first_int(config, "head_dim") or hidden // n_heads,
        hidden=hidden,
        intermediate=_first_int(config, "intermediate_size", "n_inner", "ffn_dim"),
        vocab=_first_int(config, "vocab_size"),
        tied_embeddings=bool(config.get("tie_word_embeddings", False)),
        attention_bias=bool(config.get("attention_bias", False)),
        max_positions=_first_int(config, "max_position_embeddings", "n_positions"),
    )


def safetensors_parameters(source_dir: Path) -> int | None:
    """Exact parameter count from the headers of ``*.safetensors`` files (only the headers are read)."""
    files = sorted(source_dir.glob("*.safetensors"))
    if not files:
        return None
    total = 0
    for path in files:
        with path.open("rb") as handle:
            raw = handle.read(8)
            if len(raw) != 8:
                raise CardError(f"{path}: truncated safetensors file")
            (length,) = struct.unpack("<Q", raw)
            if length > MAX_SAFETENSORS_HEADER:
                raise CardError(f"{path}: safetensors header of {length} bytes is implausible; is the file corrupt?")
            try:
                header = json.loads(handle.read(length))
            except ValueError:
                raise CardError(f"{path}: unreadable safetensors header") from None
        for name, entry in header.items():
            if name != "__metadata__" and isinstance(entry, dict):
                total += math.prod(int(d) for d in entry.get("shape", []))
    return total


def strip_frontmatter(text: str) -> str:
    """``text`` without its leading YAML frontmatter block (only the first one)."""
    text = text.removeprefix("\ufeff")
    match = FRONTMATTER.match(text)
    return text[match.end() :] if match else text


def split_frontmatter(text: str) -> tuple[str | None, str]:
    """``(frontmatter YAML or None, body)``."""
    match = FRONTMATTER.match(text.removeprefix("\ufeff"))
    if match is None:
        return None, text
    return match.group(1), text.removeprefix("\ufeff")[match.end() :]


def _resolve_source_dir(recipe: Recipe, manifest: Manifest | None, source_dir: Path | None) -> Path | None:
    if source_dir is not None:
        if not source_dir.is_dir():
            raise CardError(f"--source-dir {source_dir}: no such folder")
        return source_dir
    for candidate in (recipe.source_dir(), Path(manifest.source.path) if manifest and manifest.source else None):
        if candidate is not None and candidate.is_dir():
            return candidate
    return None


# ---------------------------------------------------------------------------------------------
# The card's data
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class FileRow:
    """One row of the provided-files table."""

    name: str
    url: str
    quant_type: str
    method: str
    bits: str
    size: str
    size_bytes: int | None
    max_ram: str
    use_case: str
    branch: str
    parts: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class QualityRow:
    """One row of the measured-quality table (pre-formatted strings)."""

    name: str
    quant_type: str
    perplexity: str
    kl_divergence: str
    top1_agreement: str
    tokens_per_s: str
    smoke_answer: str
    checks: str


@dataclasses.dataclass(frozen=True)
class BranchRow:
    """One row of the branch table."""

    name: str
    url: str
    types: tuple[str, ...]
    bits: str
    size: str
    description: str
    files: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Download:
    """A shell command that downloads some of the repo's files."""

    what: str
    command: str


def _branch_of(recipe: Recipe) -> dict[str, str]:
    return {t: branch.name for branch in recipe.publish.branches for t in branch.types}


def _file_url(repo_id: str, branch: str, name: str) -> str:
    return f"{HUB}/{repo_id}/blob/{branch}/{name}"


def _use_case(quant_type: str) -> str:
    entry = quants.CATALOGUE.get(quant_type)
    return entry.use_case if entry else ""


def _method(quant_type: str) -> str:
    entry = quants.CATALOGUE.get(quant_type)
    return entry.name if entry else quant_type


def _ram(size_bytes: int | None, kv_bytes: int | None) -> str:
    if size_bytes is None or kv_bytes is None:
        return "unknown"
    return format_gb(size_bytes + kv_bytes + RAM_OVERHEAD_BYTES)


def _measured_rows(recipe: Recipe, manifest: Manifest, kv_bytes: int | None) -> list[FileRow]:
    branch_of = _branch_of(recipe)
    rows = []
    for artifact in manifest.passed_artifacts():
        branch = branch_of.get(artifact.quant_type, "main")
        parts = tuple(Path(p).name for p in artifact.shards) or (Path(artifact.path).name,)
        rows.append(
            FileRow(
                name=parts[0],
                url=_file_url(recipe.publish.repo_id, branch, parts[0]),
                quant_type=artifact.quant_type,
                method=_method(artifact.quant_type),
                bits=f"{artifact.bits_per_weight:.2f}",
                size=format_gb(artifact.size_bytes),
                size_bytes=artifact.size_bytes,
                max_ram=_ram(artifact.size_bytes, kv_bytes),
                use_case=_use_case(artifact.quant_type),
                branch=branch,
                parts=parts,
            )
        )
    return rows


def _estimated_rows(recipe: Recipe, parameters: int | None, kv_bytes: int | None) -> list[FileRow]:
    branch_of = _branch_of(recipe)
    rows = []
    for quant_type in recipe.quantize.types:
        entry = quants.CATALOGUE[quant_type]
        size = round(parameters * entry.nominal_bpw / 8) if parameters else None
        name = recipe.artifact_filename(quant_type)
        branch = branch_of.get(quant_type, "main")
        rows.append(
            FileRow(
                name=name,
                url=_file_url(recipe.publish.repo_id, branch, name),
                quant_type=quant_type,
                method=_method(quant_type),
                bits=f"~{entry.nominal_bpw:.2f}",
                size=f"~{format_gb(size)}" if size else "unknown",
                size_bytes=size,
                max_ram=f"~{_ram(size, kv_bytes)}" if size and kv_bytes else "unknown",
                use_case=entry.use_case,
                branch=branch,
                parts=(name,),
            )
        )
    return rows


def _fmt(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def _shorten(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit].rstrip() + "…"


def _quality_rows(manifest: Manifest) -> list[QualityRow]:
    rows = []
    measured = [a for a in ([manifest.reference] if manifest.reference else []) + manifest.passed_artifacts() if a]
    for artifact in measured:
        quality = artifact.quality
        smoke = artifact.smoke
        if quality is None and smoke is None:
            continue
        is_reference = artifact is manifest.reference
        rows.append(
            QualityRow(
                name=Path(artifact.path).name + (" (reference)" if is_reference else ""),
                quant_type=artifact.quant_type,
                perplexity=_fmt(quality.perplexity if quality else None, ".4f"),
                kl_divergence="0 (reference)"
                if is_reference
                else _fmt(quality.kl_divergence if quality else None, ".4f"),
                top1_agreement=(
                    "100% (reference)"
                    if is_reference
                    else _fmt(
                        quality.top1_agreement * 100 if quality and quality.top1_agreement is not None else None, ".1f"
                    )
                    + ("%" if quality and quality.top1_agreement is not None else "")
                ),
                tokens_per_s=_fmt(smoke.tokens_per_s if smoke else None, ".1f"),
                smoke_answer=_shorten(smoke.output) if smoke and smoke.output.strip() else "—",
                checks=_checks_cell(artifact),
            )
        )
    return rows


def _checks_cell(artifact: Artifact) -> str:
    """Tokenizer parity and advisory expectations, in a few words for the quality table."""
    parts = []
    if artifact.tokenizer is not None:
        tokenizer = artifact.tokenizer
        parts.append(f"tokenizer parity {tokenizer.probes - tokenizer.mismatches}/{tokenizer.probes} probes")
    missed = [
        failure.split(":", 1)[0].removeprefix("the answer ")
        for answer in (artifact.smoke.answers if artifact.smoke else [])
        for failure in answer.advisories
    ]
    if missed:
        parts.append("advisory: answer " + ", ".join(dict.fromkeys(missed)))
    return "; ".join(parts) or "—"


def _branch_rows(recipe: Recipe, files: list[FileRow]) -> list[BranchRow]:
    declared = [(b.name, b.description) for b in recipe.publish.branches]
    if not any(name == "main" for name, _d in declared) and any(f.branch == "main" for f in files):
        declared.insert(0, ("main", "Files not placed on another branch"))
    rows = []
    for name, description in declared:
        mine = [f for f in files if f.branch == name]
        known = [f.size_bytes for f in mine if f.size_bytes is not None]
        estimated = any(f.size.startswith("~") for f in mine)
        total = format_gb(sum(known)) if mine and len(known) == len(mine) else "unknown"
        rows.append(
            BranchRow(
                name=name,
                url=f"{HUB}/{recipe.publish.repo_id}/tree/{name}",
                types=tuple(f.quant_type for f in mine),
                bits=", ".join(f.bits for f in mine) or "—",
                size=("~" if estimated and total != "unknown" else "") + total,
                description=description,
                files=tuple(p for f in mine for p in f.parts),
            )
        )
    return rows


def _downloads(
    recipe: Recipe, files: list[FileRow], branches: list[BranchRow]
) -> tuple[list[Download], list[Download]]:
    """``(one command per file, one command per branch)``."""
    repo = recipe.publish.repo_id
    per_file = []
    for f in files:
        revision = "" if f.branch == "main" else f" --revision {shell_quote(f.branch)}"
        names = " ".join(shell_quote(p) for p in f.parts)
        per_file.append(Download(f.name, f"hf download {repo}{revision} {names} --local-dir ."))
    per_branch = [
        Download(
            b.name,
            f"hf download {repo} --revision {shell_quote(b.name)} --local-dir {shell_quote(_folder(repo, b.name))}",
        )
        for b in branches
        if recipe.publish.branches
    ]
    return per_file, per_branch


def _folder(repo: str, branch: str) -> str:
    name = repo.split("/")[-1]
    return name if branch == "main" else f"{name}-{branch.replace('/', '-')}"


def _example_file(files: list[FileRow]) -> FileRow | None:
    """The file the run examples use: Q4_K_M when built, else the one closest to 4.9 bits per weight."""
    if not files:
        return None
    for f in files:
        if f.quant_type == "Q4_K_M":
            return f
    return min(
        files,
        key=lambda f: abs(quants.CATALOGUE[f.quant_type].nominal_bpw - 4.9) if f.quant_type in quants.CATALOGUE else 99,
    )


def _llama_cpp_version(tools: Mapping[str, str]) -> dict[str, str] | None:
    """The llama.cpp that wrote the files, with a link to its release, commit or bundling package."""
    value = tools.get("llama.cpp")
    if not value:
        return None
    bindings = tools.get("llama-cpp-python", "")
    build = re.search(r"\bb(\d{3,6})\b", value)
    commit = re.search(r"\b([0-9a-f]{7,40})\b", value)
    if build:
        url = f"https://github.com/ggml-org/llama.cpp/releases/tag/b{build.group(1)}"
    elif commit:
        url = f"https://github.com/ggml-org/llama.cpp/commit/{commit.group(1)}"
    elif bindings:  # a version string alone does not name a commit; the bundling release does
        url = f"https://github.com/abetlen/llama-cpp-python/releases/tag/v{bindings}"
    else:
        url = "https://github.com/ggml-org/llama.cpp"
    return {"version": value, "url": url, "bindings": bindings}


def _original_card(recipe: Recipe, source_dir: Path | None) -> str | None:
    if not recipe.card.embed_original_card or source_dir is None:
        return None
    path = source_dir / "README.md"
    if not path.is_file():
        return None
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as err:
        raise CardError(f"{path}: cannot read the original card ({err.strerror})") from None
    body = strip_frontmatter(text).strip()
    return body or None


def _eval_results(recipe: Recipe, manifest: Manifest | None) -> list[EvalResult]:
    """Measured quality as model-index results: one metric per quant type and figure."""
    if manifest is None:
        return []
    text = recipe.smoke.quality.text
    dataset = Path(text).name if text else "publisher-sample-text"
    results = []
    for artifact in manifest.passed_artifacts():
        quality = artifact.quality
        if quality is None:
            continue
        figures = [
            ("perplexity", "Perplexity", quality.perplexity),
            ("kl_divergence", "KL divergence vs reference", quality.kl_divergence),
            ("top1_agreement", "Top-1 agreement with reference", quality.top1_agreement),
        ]
        for metric, label, value in figures:
            if value is None:
                continue
            results.append(
                EvalResult(
                    task_type="text-generation",
                    dataset_type="text",
                    dataset_name=dataset,
                    metric_type=metric,
                    metric_name=f"{label} ({artifact.quant_type})",
                    metric_config=artifact.quant_type,
                    metric_value=round(value, 6),
                )
            )
    return results


def frontmatter_data(recipe: Recipe, manifest: Manifest | None = None) -> dict[str, Any]:
    """The card's YAML frontmatter as a dict, made and checked with :class:`ModelCardData`."""
    model = recipe.model
    base_model = model.base_model or ([recipe.source.repo] if recipe.source.repo else [])
    data = ModelCardData(
        base_model=(base_model[0] if len(base_model) == 1 else base_model) or None,
        datasets=list(model.datasets) or None,
        language=list(model.languages) or None,
        license=model.license,
        license_name=model.license_name,
        license_link=model.license_link,
        model_name=model.name,
        pipeline_tag=model.pipeline_tag,
        tags=list(model.tags) or None,
        eval_results=_eval_results(recipe, manifest) or None,
        base_model_relation="quantized",
        inference=False,
        model_creator=model.creator,
        model_type=model.model_type,
        prompt_template=model.prompt_template_text,
        quantized_by=recipe.card.profile.quantized_by,
    ).to_dict()  # type: ignore[no-untyped-call]
    # ModelCardData moves model_name into model-index when there are results; cards keep both.
    data["model_name"] = model.name
    index = data.pop("model-index", None)
    ordered = {key: data[key] for key in sorted(data)}
    if index is not None:
        ordered["model-index"] = index
    return ordered


def card_context(recipe: Recipe, manifest: Manifest | None = None, *, source_dir: Path | None = None) -> dict[str, Any]:
    """Everything the templates may use, as plain data (no pydantic objects, nothing callable)."""
    source = _resolve_source_dir(recipe, manifest, source_dir)
    arch = read_architecture(source) if source else None
    parameters = manifest.source.parameters if manifest and manifest.source and manifest.source.parameters else None
    if parameters is None and source is not None:
        parameters = safetensors_parameters(source) or (arch.parameters() if arch else None)
    context_length = recipe.model.context_length
    kv_bytes = arch.kv_cache_bytes(context_length) if arch else None
    built = manifest is not None and bool(manifest.passed_artifacts())
    files = (
        _measured_rows(recipe, manifest, kv_bytes)
        if manifest is not None and built
        else _estimated_rows(recipe, parameters, kv_bytes)
    )
    branches = _branch_rows(recipe, files)
    per_file, per_branch = _downloads(recipe, files, branches)
    example = _example_file(files)
    model = recipe.model
    title, template_text = prompts.resolve(model.prompt_template)
    example_prompt = recipe.smoke.prompts[0].prompt if recipe.smoke.prompts else EXAMPLE_PROMPT
    filled = template_text.format(system_message=model.system_message, prompt=example_prompt)
    original_repo = (model.base_model[0] if model.base_model else None) or recipe.source.repo
    methods_used = sorted(
        {quants.CATALOGUE[f.quant_type].method for f in files if f.quant_type in quants.CATALOGUE} - {""}
    )
    # Versions only: the CPU feature list is for the manifest, not for readers.
    tools = {k: v for k, v in (manifest.tools if manifest else {}).items() if "system info" not in k}
    related = [r.model_dump() for r in recipe.card.related]
    if original_repo and not any(r["repo"] == original_repo for r in related):
        related.append({"repo": original_repo, "description": f"{model.creator}'s original model, unquantized"})
    return {
        "recipe_file": recipe.path.name if recipe.path else f"{recipe.build_name}.yaml",
        "recipe_sha256": recipe.fingerprint(),
        "repo_id": recipe.publish.repo_id,
        "title": recipe.card.title or f"{model.name} - GGUF",
        "model": {
            **model.model_dump(mode="json"),
            "creator_url": model.creator_url or f"{HUB}/{model.creator}",
            "original_repo": original_repo,
            "original_url": f"{HUB}/{original_repo}" if original_repo else None,
            "prompt_template_title": title,
            "prompt_template_text": template_text,
            "prompt_fence": code_fence(template_text),
        },
        "profile": recipe.card.profile.model_dump(mode="json"),
        "notes": list(recipe.card.notes),
        "related": related,
        "built": built,
        "estimated": not built,
        "files": files,
        "sharded": any(len(f.parts) > 1 for f in files),
        "failed": [a.quant_type for a in manifest.failed_artifacts()] if manifest else [],
        "quality_rows": _quality_rows(manifest) if manifest is not None else [],
        "reference_type": manifest.reference.quant_type
        if manifest and manifest.reference
        else recipe.convert.outtype.upper(),
        "quality_settings": recipe.smoke.quality.model_dump(mode="json"),
        "methods": [{"name": m, "text": quants.METHODS[m]} for m in methods_used if m in quants.METHODS],
        "branches": branches,
        "has_branches": bool(recipe.publish.branches),
        "downloads": per_file,
        "branch_downloads": per_branch,
        "example": example,
        "example_prompt": example_prompt,
        "filled_prompt": filled,
        "llama_cpp": _llama_cpp_version(tools),
        "tools": tools,
        "parameters": parameters,
        "parameters_text": format_params(parameters),
        "arch": dataclasses.asdict(arch) if arch else None,
        "context_length": context_length,
        "kv_cache_bytes": kv_bytes,
        "kv_cache": format_gb(kv_bytes) if kv_bytes is not None else "unknown",
        "ram_overhead": f"{RAM_OVERHEAD_BYTES / 1e9:.1f} GB",
        "gpu_layers": arch.n_layers if arch else 99,
        "source_known": source is not None,
        "original_card": _original_card(recipe, source),
    }


# ---------------------------------------------------------------------------------------------
# Rendering, with template errors as one line naming file and line
# ---------------------------------------------------------------------------------------------


def _display(filename: str | None) -> str:
    if not filename:
        return "<template>"
    path = Path(filename)
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _template_error(err: Exception) -> CardError:
    """One line ``file:line: message`` for any error raised while loading or rendering a template."""
    if isinstance(err, jinja2.TemplateSyntaxError):
        return CardError(f"{_display(err.filename or err.name)}:{err.lineno}: template syntax error: {err.message}")
    if isinstance(err, jinja2.TemplateNotFound):
        where = _template_frame(err)
        prefix = f"{where}: " if where else ""
        return CardError(
            f"{prefix}template {err.name!r} not found (card.template, card.partials_dir or shipped templates)"
        )
    where = _template_frame(err)
    message = str(err).splitlines()[0] if str(err) else type(err).__name__
    if not isinstance(err, jinja2.TemplateError):
        message = f"{type(err).__name__}: {message}"
    return CardError(f"{where or '<template>'}: {message}")


def _template_frame(err: BaseException) -> str | None:
    """``file:line`` of the innermost template frame in ``err``'s traceback (Jinja maps frames to template lines)."""
    found = None
    for frame in traceback.extract_tb(err.__traceback__):
        # Jinja gives compiled template code the template's own file name; everything else is Python.
        if not frame.filename.endswith(".py") and not frame.filename.startswith("<frozen"):
            found = f"{_display(frame.filename)}:{frame.lineno}"
    return found


def render_body(recipe: Recipe, context: Mapping[str, Any]) -> str:
    """The card's markdown body (no frontmatter) from the recipe's template."""
    env = environment(recipe)
    _own_dir, name = _template_source(recipe)
    try:
        template = env.get_template(name)
        return template.render(**context)
    except (jinja2.TemplateError, ArithmeticError, LookupError, TypeError, ValueError, AttributeError) as err:
        raise _template_error(err) from None


def render_card(recipe: Recipe, manifest: Manifest | None = None, *, source_dir: Path | None = None) -> str:
    """The whole ``README.md``: frontmatter, then the rendered body."""
    context = card_context(recipe, manifest, source_dir=source_dir)
    front = yaml_dump(frontmatter_data(recipe, manifest), sort_keys=False).strip()
    body = render_body(recipe, context)
    body = re.sub(r"\n{3,}", "\n\n", body).strip()
    return f"---\n{front}\n---\n\n{body}\n"


def context_fingerprint_data(recipe: Recipe, manifest: Manifest | None, source_dir: Path | None = None) -> Any:
    """JSON-able data covering everything the card shows (for the card stage's fingerprint)."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return dataclasses.asdict(value)
        raise TypeError(type(value).__name__)

    context = card_context(recipe, manifest, source_dir=source_dir)
    return json.loads(
        json.dumps({"context": context, "frontmatter": frontmatter_data(recipe, manifest)}, default=plain)
    )


# ---------------------------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------------------------

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


def _without_code_and_original(text: str) -> str:
    text = re.sub(
        rf"<!--\s*{ORIGINAL_SECTION} start\s*-->.*?<!--\s*{ORIGINAL_SECTION} end\s*-->", "", text, flags=re.DOTALL
    )
    return re.sub(r"^(`{3,}|~{3,})[^\n]*\n.*?^\1[ \t]*$", "", text, flags=re.DOTALL | re.MULTILINE)


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
    pattern = re.compile(rf"{re.escape(HUB)}/{re.escape(repo_id)}/(?:blob|resolve)/([^/\s)]+)/([^\s)\"'>]+)")
    return [(m.group(1), m.group(2)) for m in pattern.finditer(text)]


def _file_problems(text: str, recipe: Recipe, manifest: Manifest | None, build_dir: Path) -> list[str]:
    if manifest is None:
        return [f"{build_dir}: no build manifest, so linked files cannot be checked; run `publisher build` first"]
    by_name: dict[str, tuple[Artifact, str]] = {}
    for artifact in manifest.passed_artifacts():
        for rel in artifact.shards or [artifact.path]:
            by_name[Path(rel).name] = (artifact, rel)
    problems = []
    linked = set()
    for _branch, name in _linked_files(text, recipe.publish.repo_id):
        linked.add(name)
        if name not in by_name:
            problems.append(f"linked file {name} is not a passed artifact of the build in {build_dir}")
        elif not (build_dir / by_name[name][1]).is_file():
            problems.append(f"linked file {name} is missing from {build_dir / by_name[name][1]}")
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
    for match in re.finditer(r"\{\{|\{%|\{#", _without_code_and_original(split_frontmatter(text)[1])):
        problems.append(f"unrendered template placeholder {match.group(0)!r} in the card")
        break
    if build_dir is not None:
        problems += _file_problems(text, recipe, manifest, build_dir)
    return problems


# ---------------------------------------------------------------------------------------------
# Previews: terminal and HTML
# ---------------------------------------------------------------------------------------------


def preview(text: str, console: Any) -> None:
    """Print the card to a rich console: frontmatter as a table, then the markdown."""
    from rich.markdown import Markdown
    from rich.table import Table

    front, body = split_frontmatter(text)
    data = yaml.safe_load(front) if front else {}
    table = Table(title="frontmatter", show_header=False, title_justify="left")
    table.add_column("key", style="bold")
    table.add_column("value", overflow="fold")
    for key, value in (data or {}).items():
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            shown = ", ".join(value)
        elif isinstance(value, str):
            shown = value
        elif isinstance(value, bool | int | float) or value is None:
            shown = json.dumps(value)  # YAML would add a '...' document-end line to a bare scalar
        else:
            shown = yaml_dump(value, sort_keys=False).strip()
        table.add_row(str(key), shown)
    console.print(table)
    console.print(Markdown(re.sub(r"<!--.*?-->\n?", "", body, flags=re.DOTALL)))


_DROP_WITH_CONTENT = {"script", "style", "iframe", "object", "embed", "noscript", "template"}
_DROP_TAG = {"base", "meta", "link", "form", "frame", "frameset"}
_URL_ATTRS = {"href", "src", "action", "formaction", "xlink:href", "poster", "background"}
_VOID = {"area", "br", "col", "hr", "img", "input", "source", "track", "wbr"}


class _Sanitizer(HTMLParser):
    """Re-emit HTML without scripts, event handlers or ``javascript:`` URLs (inline HTML is kept)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.skip_depth = 0

    def _attrs(self, attrs: list[tuple[str, str | None]]) -> str:
        kept = []
        for name, value in attrs:
            name = name.lower()
            if name.startswith("on") or name == "srcdoc":
                continue
            if name in _URL_ATTRS and value is not None:
                scheme = re.sub(r"[\s\x00-\x1f]", "", value).lower()
                if scheme.startswith(("javascript:", "vbscript:")) or (
                    scheme.startswith("data:") and not scheme.startswith("data:image/")
                ):
                    continue
            if name == "style" and value and re.search(r"expression\s*\(|javascript:|url\s*\(", value, re.I):
                continue
            kept.append(f' {name}="{html.escape(value, quote=True)}"' if value is not None else f" {name}")
        return "".join(kept)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _DROP_WITH_CONTENT:
            self.skip_depth += 1
        elif not self.skip_depth and tag not in _DROP_TAG:
            self.out.append(f"<{tag}{self._attrs(attrs)}>")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if not self.skip_depth and tag not in _DROP_TAG | _DROP_WITH_CONTENT:
            self.out.append(f"<{tag}{self._attrs(attrs)}>")

    def handle_endtag(self, tag: str) -> None:
        if tag in _DROP_WITH_CONTENT:
            self.skip_depth = max(0, self.skip_depth - 1)
        elif not self.skip_depth and tag not in _DROP_TAG and tag not in _VOID:
            self.out.append(f"</{tag}>")

    def handle_data(self, data: str) -> None:
        if not self.skip_depth:
            self.out.append(html.escape(data, quote=False))

    def handle_comment(self, data: str) -> None:
        if not self.skip_depth:
            self.out.append(f"<!--{data.replace('--', '- -')}-->")


def sanitize_html(markup: str) -> str:
    """``markup`` without ``<script>`` (and similar) elements, ``on*`` handlers and script URLs."""
    parser = _Sanitizer()
    parser.feed(markup)
    parser.close()
    return "".join(parser.out)


def heading_slug(text: str) -> str:
    """The anchor id of a heading, as the Hub makes them: ``Provided files`` -> ``provided-files``."""
    return re.sub(r"[\s]+", "-", re.sub(r"[^\w\s-]", "", text.strip().lower())) or "section"


def markdown_to_html(body: str) -> str:
    """Markdown to HTML as the Hub renders cards: CommonMark, tables, strikethrough, inline HTML kept.

    Headings get anchor ids (``#provided-files``) so a link or a screenshot can open at a section.
    """
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark", {"html": True, "linkify": False, "typographer": False}).enable(
        ["table", "strikethrough"]
    )
    tokens = md.parse(body)
    seen: dict[str, int] = {}
    for heading, inline in zip(tokens, tokens[1:], strict=False):
        if heading.type == "heading_open" and inline.type == "inline":
            slug = heading_slug(inline.content)
            seen[slug] = seen.get(slug, -1) + 1
            heading.attrSet("id", slug if seen[slug] == 0 else f"{slug}-{seen[slug]}")
    return sanitize_html(md.renderer.render(tokens, md.options, {}))


def _metadata_items(data: Mapping[str, Any]) -> list[dict[str, Any]]:
    items = []
    for key, value in data.items():
        if isinstance(value, list) and all(isinstance(v, str | int | float) for v in value):
            items.append({"key": key, "kind": "chips", "values": [str(v) for v in value]})
        elif isinstance(value, str) and "\n" in value:
            items.append({"key": key, "kind": "pre", "value": value})
        elif isinstance(value, str | int | float | bool):
            items.append(
                {"key": key, "kind": "text", "value": str(value).lower() if isinstance(value, bool) else str(value)}
            )
        else:
            items.append({"key": key, "kind": "pre", "value": yaml_dump(value, sort_keys=False).strip()})
    return items


def card_html(text: str, *, title: str | None = None) -> str:
    """A standalone HTML page showing the card as the Hub does: a metadata panel beside the rendered markdown."""
    front, body = split_frontmatter(text)
    try:
        data = yaml.safe_load(front) if front else {}
    except yaml.YAMLError as err:
        raise CardError(f"card frontmatter is not valid YAML ({str(err).splitlines()[0]})") from None
    data = data if isinstance(data, dict) else {}
    env = environment(autoescape=True)
    try:
        return env.get_template(HTML_TEMPLATE).render(
            title=title or str(data.get("model_name", "Model card")),
            items=_metadata_items(data),
            body=markdown_to_html(body),
        )
    except jinja2.TemplateError as err:
        raise _template_error(err) from None


def write_outputs(text: str, *, out: Path | None = None, html_out: Path | None = None) -> list[Path]:
    """Write the card and/or its HTML page atomically; returns the paths written."""
    from publisher.manifest import write_text_atomic

    written = []
    for path, content in ((out, text), (html_out, card_html(text) if html_out else "")):
        if path is None:
            continue
        try:
            write_text_atomic(path, content)
        except OSError as err:
            raise CardError(f"{path}: cannot write ({err.strerror})") from None
        written.append(path)
    return written


def names_in_table(text: str, section: str = "README_GGUF.md-provided-files") -> list[str]:
    """File names linked from the first column of a section's table (used by checks and tests)."""
    for name, content in sections(text):
        if name == section:
            return re.findall(r"^\| \[([^\]]+)\]\(", content, flags=re.MULTILINE)
    return []


@dataclasses.dataclass(frozen=True)
class CardResult:
    """A card rendered for the CLI: its text, and the build it describes (if any)."""

    text: str
    manifest: Manifest | None
    build_dir: Path


def card_for_recipe(recipe: Recipe, workdir: Path, *, source_dir: Path | None = None) -> CardResult:
    """Render ``recipe``'s card, from its build's manifest when ``<workdir>/<build name>/manifest.json`` exists."""
    from publisher.manifest import load_manifest

    build_dir = workdir / recipe.build_name
    manifest = load_manifest(build_dir)
    return CardResult(render_card(recipe, manifest, source_dir=source_dir), manifest, build_dir)
