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


def test_run_commands_of_real_smollm2_files_checked_by_template_parity(
    smollm2_ggufs: dict[str, Path], smollm2_source: Path, tmp_path: Path
) -> None:
    """The same checks on the session's converted and quantized SmolLM2 files, without a whole build.

    The files are renamed as the demo recipe names them, smoke's template check runs on each, and the
    card is rendered from a manifest of those real records.
    """
    from support.smollm2_models import demo_recipe

    from publisher import evaluation, pipeline
    from publisher.manifest import Artifact, Manifest, SourceFacts, SourceRecord, fingerprint, sha256_file
    from publisher.source import read_architecture

    recipe = demo_recipe()
    build = tmp_path / "build"
    build.mkdir()
    artifacts = {}
    for quant_type in ("Q8_0", "Q2_K"):
        name = recipe.artifact_filename(quant_type)
        path = build / name
        path.symlink_to(smollm2_ggufs[quant_type])
        artifacts[quant_type] = Artifact(
            quant_type=quant_type,
            path=name,
            size_bytes=path.stat().st_size,
            sha256=sha256_file(path),
            bits_per_weight=gguf_info.bits_per_weight(path),
            fingerprint=fingerprint("test", quant_type),
            status="passed",
            template=evaluation.template_parity(path, recipe, smollm2_source),
        )
    facts = SourceFacts(architecture=read_architecture(smollm2_source))
    manifest = Manifest(
        build_name=recipe.build_name,
        recipe_sha256=recipe.fingerprint(),
        tools=pipeline.tool_versions(),
        source=SourceRecord(path=str(smollm2_source), parameters=134_515_008, facts=facts),
        artifacts=artifacts,
    )
    text = cards.render_card(recipe, manifest)
    section = dict(cards.sections(text))["README_GGUF.md-how-to-run"]
    built = sorted(artifact.path for artifact in artifacts.values())
    commands = _commands(section)
    assert {argv[0] for argv in commands} == {"llama-server", "llama-cli", "llama-completion", "ollama", "lms"}
    for argv in commands:
        named = _named_file(argv, recipe.publish.repo_id, built)
        assert named in built, f"{shlex.join(argv)} runs {named!r}, not one of {built}"
    example = build / next(argv[argv.index("-m") + 1] for argv in commands if "-m" in argv)
    block_count = gguf_info.metadata(example, ["llama.block_count"])["llama.block_count"]
    assert block_count == 30
    assert all(int(argv[argv.index("-ngl") + 1]) == block_count + 1 for argv in commands if "-ngl" in argv)
    assert "--chat-template" not in section
    compat = dict(cards.sections(text))["compatibility_gguf"]
    assert re.search(r"llama\.cpp \[b\d+\]\(https://github\.com/ggml-org/llama\.cpp/releases/tag/b\d+\)", compat)
