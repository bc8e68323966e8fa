"""Named prompt templates and the rules for literal ones.

A template is plain text with two placeholders, ``{system_message}`` and ``{prompt}``; literal
braces are doubled (``{{`` and ``}}``) as in Python's ``str.format``.
"""

from __future__ import annotations

import string
from dataclasses import dataclass

PLACEHOLDERS = ("system_message", "prompt")


@dataclass(frozen=True)
class NamedTemplate:
    """A well-known prompt format."""

    name: str
    title: str
    text: str


NAMED_TEMPLATES: dict[str, NamedTemplate] = {
    t.name: t
    for t in (
        NamedTemplate(
            "chatml",
            "ChatML",
            "<|im_start|>system\n{system_message}<|im_end|>\n"
            "<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n",
        ),
        NamedTemplate(
            "llama-2-chat",
            "Llama-2-Chat",
            "[INST] <<SYS>>\n{system_message}\n<</SYS>>\n{prompt} [/INST]",
        ),
        NamedTemplate("vicuna", "Vicuna", "{system_message} USER: {prompt} ASSISTANT:"),
        NamedTemplate(
            "alpaca",
            "Alpaca",
            "{system_message}\n\n### Instruction:\n{prompt}\n\n### Response:\n",
        ),
        NamedTemplate("mistral", "Mistral", "[INST] {prompt} [/INST]"),
        NamedTemplate(
            "zephyr",
            "Zephyr",
            "<|system|>\n{system_message}</s>\n<|user|>\n{prompt}</s>\n<|assistant|>\n",
        ),
        NamedTemplate("none", "None", "{prompt}"),
    )
}


def placeholders(text: str) -> list[str]:
    """The placeholder names used in ``text``; raises ``ValueError`` on malformed braces."""
    names = []
    for _literal, field, spec, conversion in string.Formatter().parse(text):
        if field is None:
            continue
        if spec or conversion or not field.isidentifier():
            raise ValueError(
                f"bad placeholder {{{field}{'!' + conversion if conversion else ''}"
                f"{':' + spec if spec else ''}}}: only {{system_message}} and {{prompt}} are allowed"
            )
        names.append(field)
    return names


def check_template(text: str) -> None:
    """Validate a literal template; raises ``ValueError`` naming the first problem."""
    try:
        names = placeholders(text)
    except ValueError as err:
        msg = str(err)
        if msg.startswith("bad placeholder"):
            raise
        msg = msg[:1].lower() + msg[1:]
        raise ValueError(
            f"malformed braces in prompt template ({msg}); write literal braces as {{{{ and }}}}"
        ) from None
    unknown = [n for n in names if n not in PLACEHOLDERS]
    if unknown:
        raise ValueError(
            f"unknown placeholder {{{unknown[0]}}} in prompt template; allowed: {{system_message}}, {{prompt}}"
        )
    if "prompt" not in names:
        raise ValueError("prompt template has no {prompt} placeholder")


def resolve(template: str) -> tuple[str, str]:
    """Return ``(title, text)`` for a named template or a literal one."""
    named = NAMED_TEMPLATES.get(template.strip().lower())
    if named is not None:
        return named.title, named.text
    return "Custom", template


def render(template: str, prompt: str, system_message: str = "") -> str:
    """Fill a (named or literal) template with a prompt and a system message."""
    _title, text = resolve(template)
    return text.format(prompt=prompt, system_message=system_message)


# The chat templates llama.cpp has built in, by the name `--chat-template` takes (llama-chat.cpp's
# LLM_CHAT_TEMPLATES in the llama.cpp that llama-cpp-python 0.3.36 bundles; a unit test compares
# this list with llama_chat_builtin_templates() of the installed library).
LLAMA_CPP_TEMPLATES = (
    "bailing", "bailing-think", "bailing2", "chatglm3", "chatglm4", "chatml", "command-r", "deepseek",
    "deepseek-ocr", "deepseek2", "deepseek3", "exaone-moe", "exaone3", "exaone4", "falcon3", "gemma",
    "gigachat", "glmedge", "gpt-oss", "granite", "granite-4.0", "granite-4.1", "grok-2", "hunyuan-dense",
    "hunyuan-moe", "hunyuan-vl", "kimi-k2", "llama2", "llama2-sys", "llama2-sys-bos", "llama2-sys-strip",
    "llama3", "llama4", "megrez", "minicpm", "mistral-v1", "mistral-v3", "mistral-v3-tekken", "mistral-v7",
    "mistral-v7-tekken", "monarch", "openchat", "orion", "pangu-embedded", "phi3", "phi4", "rwkv-world",
    "seed_oss", "smolvlm", "solar-open", "vicuna", "vicuna-orca", "yandex", "zephyr",
)  # fmt: skip
