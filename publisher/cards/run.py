"""The run section's commands, chosen from what the build proved about the files.

Chat commands appear only when smoke's template check found a chat template in the file that
renders (or when the recipe names one of llama.cpp's built-in templates, passed with
``--chat-template``); otherwise the card offers completions of raw text. Files on ``main`` are
reached the way people run GGUFs today, by repo and quant tag (``-hf repo:QUANT``,
``hf.co/repo:QUANT``, ``repo@QUANT``); llama.cpp's ``-hf``, Ollama and LM Studio read only the
``main`` branch, so a file on another branch is run from its URL (``-mu``) or after a download.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from urllib.parse import quote

from publisher.cards.rows import HUB, FileRow
from publisher.cards.text import llama_escape, shell_quote
from publisher.manifest import Manifest
from publisher.recipe import Recipe

ChatMode = Literal["file", "named", "none"]
# llama.cpp offloads the output layer as one more layer: -ngl n_layer + 1 puts everything on the GPU.
GPU_LAYERS_UNKNOWN = 99
MAX_TOKENS = 256


@dataclass(frozen=True)
class RunOptions:
    """What every command of the section shares: context length, GPU layers, the raw prompt."""

    context: int
    ngl: int
    raw_prompt: str

    @property
    def flags(self) -> str:
        return f"-c {self.context} -ngl {self.ngl}"

    @property
    def prompt(self) -> str:
        return shell_quote(llama_escape(self.raw_prompt))


@dataclass(frozen=True)
class RunCommand:
    """One command of the run section and the build files it runs."""

    tool: str
    command: str
    files: tuple[str, ...]


def chat_mode(recipe: Recipe, manifest: Manifest | None, example: FileRow | None) -> ChatMode:
    """``named`` for a recipe's llama.cpp template, ``file`` when smoke proved the file's own, else ``none``."""
    if recipe.model.llama_cpp_template:
        return "named"
    if manifest is None or example is None:
        return "none"
    artifact = manifest.artifacts.get(example.quant_type)
    template = artifact.template if artifact is not None else None
    if template is None or not template.checked:
        return "none"
    renders = not (template.difference or "").startswith("the GGUF chat template fails to render")
    return "file" if renders else "none"


def resolve_url(repo: str, branch: str, name: str) -> str:
    """The Hub's download URL of one file on one branch, percent-encoded for tools that send it as is."""
    return f"{HUB}/{repo}/resolve/{quote(branch, safe='')}/{quote(name)}"


def gpu_layers(n_layers: int | None) -> int:
    """``-ngl`` that offloads every repeating layer and the output layer."""
    return n_layers + 1 if n_layers else GPU_LAYERS_UNKNOWN


def hub_commands(recipe: Recipe, example: FileRow, mode: ChatMode, run: RunOptions) -> list[RunCommand]:
    """Commands that fetch ``example`` from the Hub themselves: by quant tag on ``main``, by URL elsewhere."""
    repo = recipe.publish.repo_id
    files = example.parts
    options = run.flags
    if mode == "named":
        options += f" --chat-template {recipe.model.llama_cpp_template}"
    system = recipe.model.system_message
    sys_option = f" -sys {shell_quote(llama_escape(system))}" if system and mode != "none" else ""
    prompt = run.prompt
    if example.branch != "main":
        if len(files) > 1:
            return []  # -mu fetches one file; a split file on a branch is downloaded first (see below)
        source = f"-mu {resolve_url(repo, example.branch, example.name)}"
    else:
        source = f"-hf {repo}:{example.quant_type}"
    commands = [RunCommand("llama-server", f"llama-server {source} {options}", files)]
    if mode == "none":
        completion = f"llama-completion {source} {options} -n {MAX_TOKENS} -no-cnv -p {prompt}"
        commands.append(RunCommand("llama-completion", completion, files))
    else:
        commands.append(RunCommand("llama-cli", f"llama-cli {source} {options}{sys_option}", files))
    if example.branch == "main":
        commands += [
            RunCommand("ollama", f"ollama run hf.co/{repo}:{example.quant_type}", files),
            RunCommand("lms", f"lms get {HUB}/{repo}@{example.quant_type}", files),
        ]
    return commands


def local_commands(recipe: Recipe, example: FileRow, mode: ChatMode, run: RunOptions) -> list[RunCommand]:
    """Commands on a downloaded copy of ``example`` (``-m`` takes the first part of a split file)."""
    name = shell_quote(example.name)
    options, prompt = run.flags, run.prompt
    commands = []
    if mode != "none":
        named = f" --chat-template {recipe.model.llama_cpp_template}" if mode == "named" else ""
        system = recipe.model.system_message
        sys_option = f" -sys {shell_quote(llama_escape(system))}" if system else ""
        commands.append(RunCommand("llama-cli", f"llama-cli -m {name} {options}{named}{sys_option}", example.parts))
    commands.append(
        RunCommand(
            "llama-completion",
            f"llama-completion -m {name} {options} -n {MAX_TOKENS} -no-cnv -p {prompt}",
            example.parts,
        )
    )
    return commands
