"""The demo build's run section: every command names a built file, and -ngl covers every layer of the real GGUF."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from urllib.parse import unquote

import pytest

from publisher import cards, gguf_info
from publisher.manifest import load_manifest
from publisher.recipe import naming

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

RUNNERS = ("llama-server", "llama-cli", "llama-completion", "ollama", "lms")


def _commands(section: str) -> list[list[str]]:
    lines = [line for block in re.findall(r"```shell\n(.*?)```", section, re.S) for line in block.splitlines()]
    return [shlex.split(line) for line in lines if line.split(" ", 1)[0] in RUNNERS]


def _named_file(argv: list[str], repo: str, built: list[str]) -> str | None:
    """The build file a command runs: ``-m FILE``, ``-hf repo:TAG``, ``-mu URL``, ``hf.co/repo:TAG``, ``URL@TAG``."""
    for flag, value in zip(argv, argv[1:], strict=False):
        if flag == "-m":
            return value
        if flag == "-mu":
            return unquote(value.rsplit("/", 1)[1])
        if flag == "-hf":
            named_repo, tag = value.rsplit(":", 1)
            assert named_repo == repo
            return naming.llama_cpp_pick(built, tag)
    target = argv[-1]
    if argv[0] == "ollama":
        named_repo, tag = target.removeprefix("hf.co/").rsplit(":", 1)
        assert named_repo == repo
        return naming.llama_cpp_pick(built, tag)
    if argv[0] == "lms":
        named_repo, tag = target.removeprefix("https://huggingface.co/").rsplit("@", 1)
        assert named_repo == repo
        return naming.llama_cpp_pick(built, tag)
    return None


def test_every_run_command_names_a_built_file_and_offloads_every_layer(published_demo: Path) -> None:
    build = published_demo / "build" / "smollm2-135m-instruct"
    manifest = load_manifest(build)
    assert manifest is not None
    text = (build / "README.md").read_text(encoding="utf-8")
    section = dict(cards.sections(text))["README_GGUF.md-how-to-run"]
    built = sorted(Path(p).name for a in manifest.passed_artifacts() for p in (a.shards or [a.path]))
    assert built and all((build / name).is_file() for name in built)
    repo = "publisher-demo/SmolLM2-135M-Instruct-GGUF"

    commands = _commands(section)
    assert {argv[0] for argv in commands} == {"llama-server", "llama-cli", "llama-completion", "ollama", "lms"}
    for argv in commands:
        named = _named_file(argv, repo, built)
        assert named in built, f"{shlex.join(argv)} runs {named!r}, not one of {built}"

    # SmolLM2's template was checked by smoke, so the card offers a chat, with the file's own template.
    assert any(argv[0] == "llama-cli" and "-hf" in argv for argv in commands)
    assert "--chat-template" not in section

    example = build / next(argv[argv.index("-m") + 1] for argv in commands if "-m" in argv)
    block_count = gguf_info.metadata(example, ["llama.block_count"])["llama.block_count"]
    for argv in commands:
        if "-ngl" in argv:
            assert int(argv[argv.index("-ngl") + 1]) == block_count + 1  # layers + the output layer
