"""Chat-template rendering across conversation shapes: the source under transformers, the GGUF under llama.cpp.

The same template text can still render differently: transformers and llama-cpp-python each
bring their own Jinja environment, the GGUF carries its own BOS/EOS texts, and a front-end
without Jinja (llama.cpp without ``--jinja``, Ollama's import) does not run the template at all
but picks one of llama.cpp's built-in formats from its text. Each shape below is rendered by
transformers' ``apply_chat_template`` on the source and by llama-cpp-python's
``Jinja2ChatFormatter`` on the GGUF's template; a shape both render differently blocks the file;
a shape either cannot render is reported, not blocked. The plain shapes (string contents, the
three usual roles) are also rendered with ``llama_chat_apply_template`` given the template text,
which is llama.cpp's built-in detection; where it renders differently, that is reported.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from publisher.evaluation.transformers_view import transformers_view

SYSTEM = {"role": "system", "content": "You are a terse assistant."}
USER = {"role": "user", "content": "What is the capital of France?"}
ANSWER = {"role": "assistant", "content": "Paris."}
FOLLOW_UP = {"role": "user", "content": "And of Italy?"}
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
TOOL_CALL = {
    "role": "assistant",
    "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}],
}
TOOL_RESULT = {"role": "tool", "name": "get_weather", "content": '{"celsius": 22}'}
TYPED_USER = {"role": "user", "content": [{"type": "text", "text": "What is the capital of France?"}]}


@dataclass(frozen=True)
class Shape:
    """One conversation to render; ``plain`` ones are what llama.cpp's built-in formats can take."""

    name: str
    messages: tuple[dict[str, Any], ...]
    add_generation_prompt: bool = True
    tools: tuple[dict[str, Any], ...] | None = None
    plain: bool = True


SHAPES = (
    Shape("system and user", (SYSTEM, USER)),
    Shape("no system", (USER,)),
    Shape("multi-turn", (SYSTEM, USER, ANSWER, FOLLOW_UP)),
    Shape("no generation prompt", (SYSTEM, USER, ANSWER), add_generation_prompt=False),
    Shape("tool call and result", (USER, TOOL_CALL, TOOL_RESULT), tools=(WEATHER_TOOL,), plain=False),
    Shape("typed content parts", (SYSTEM, TYPED_USER), plain=False),
)


@dataclass(frozen=True)
class ShapesReport:
    """Which shapes were compared, each difference in one line, and what each side cannot render."""

    compared: int = 0
    differences: list[str] = field(default_factory=list)
    source_cannot: list[str] = field(default_factory=list)
    gguf_cannot: list[str] = field(default_factory=list)
    builtin_format: str | None = None
    builtin_differences: list[str] = field(default_factory=list)


def first_line(err: BaseException) -> str:
    """An exception in one line: what a template raised is the model author's code, any type."""
    return (str(err).splitlines() or [type(err).__name__])[0]


def first_text_difference(ours: str, theirs: str) -> int | None:
    """Index of the first character where two renderings differ (the shorter length if one is a prefix)."""
    if ours == theirs:
        return None
    return next((k for k, (a, b) in enumerate(zip(ours, theirs, strict=False)) if a != b), min(len(ours), len(theirs)))


def difference(name: str, ours: str, theirs: str, ours_label: str, context: int = 20) -> str | None:
    """One line showing where two renderings of shape ``name`` first differ; None when equal."""
    i = first_text_difference(ours, theirs)
    if i is None:
        return None
    lo = max(0, i - context)
    return (
        f"shape {name!r}, character {i}: {ours_label} gives {ours[lo : i + context]!r}, "
        f"transformers gives {theirs[lo : i + context]!r}"
    )


def render_gguf(template: str, shape: Shape, bos_token: str, eos_token: str) -> str:
    """The GGUF's template on ``shape`` under llama-cpp-python's Jinja rules."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    formatter = Jinja2ChatFormatter(
        template=template, eos_token=eos_token, bos_token=bos_token, add_generation_prompt=shape.add_generation_prompt
    )
    tools = list(shape.tools) if shape.tools is not None else None
    return str(formatter(messages=list(shape.messages), tools=tools).prompt)  # type: ignore[arg-type]


def render_builtin(template: str, messages: tuple[dict[str, Any], ...], add_generation_prompt: bool) -> str | None:
    """``llama_chat_apply_template`` with the template text (or a built-in name); None when llama.cpp has no format."""
    import llama_cpp

    chat = (llama_cpp.llama_chat_message * len(messages))()
    kept = []
    for i, message in enumerate(messages):
        role, content = str(message["role"]).encode(), str(message["content"]).encode()
        kept += [role, content]
        chat[i].role, chat[i].content = role, content
    size = 1024 + 2 * sum(len(k) for k in kept)
    buffer = ctypes.create_string_buffer(size)
    apply = llama_cpp.llama_chat_apply_template
    count = apply(template.encode(), chat, len(messages), add_generation_prompt, buffer, size)
    if count < 0 or count > size:
        return None
    return buffer.raw[:count].decode("utf-8", errors="replace")


def builtin_names() -> list[str]:
    """The names of llama.cpp's built-in chat formats."""
    import llama_cpp

    count = int(llama_cpp.llama_chat_builtin_templates(None, 0))
    names = (ctypes.c_char_p * count)()
    llama_cpp.llama_chat_builtin_templates(names, count)
    return [n.decode() for n in names if n is not None]


def detected_format(template: str) -> str | None:
    """The built-in format llama.cpp picks for ``template``: the one name that renders a probe conversation alike."""
    probe = (SYSTEM, USER, ANSWER, FOLLOW_UP)
    rendered = render_builtin(template, probe, True)
    if rendered is None:
        return None
    return next((name for name in builtin_names() if render_builtin(name, probe, True) == rendered), "unnamed")


def compare_shapes(template: str, bos_token: str, eos_token: str, source_dir: Path) -> ShapesReport:
    """Render every shape with transformers on the source and with the GGUF's template under llama.cpp's rules."""
    view = transformers_view(source_dir)
    if view is None or not view.has_template:
        return ShapesReport()
    compared = 0
    differences: list[str] = []
    source_cannot: list[str] = []
    gguf_cannot: list[str] = []
    builtin_differences: list[str] = []
    for shape in SHAPES:
        theirs, error = view.renderings[shape.name]  # transformers' apply_chat_template, in the child
        if error is not None:
            source_cannot.append(f"{shape.name}: {error}")
        try:
            ours = render_gguf(template, shape, bos_token, eos_token)
        except Exception as err:
            gguf_cannot.append(f"{shape.name}: {first_line(err)}")
            ours = None
        if ours is not None and theirs is not None:
            compared += 1
            found = difference(shape.name, ours, theirs, "the GGUF's template")
            if found is not None:
                differences.append(found)
        if shape.plain and theirs is not None:
            builtin = render_builtin(template, shape.messages, shape.add_generation_prompt)
            found = difference(shape.name, builtin, theirs, "llama.cpp's built-in format") if builtin else None
            if found is not None:
                builtin_differences.append(found)
    return ShapesReport(
        compared=compared,
        differences=differences,
        source_cannot=source_cannot,
        gguf_cannot=gguf_cannot,
        builtin_format=detected_format(template),
        builtin_differences=builtin_differences,
    )
