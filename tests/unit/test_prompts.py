"""Named prompt templates and the rules for literal ones."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from jinja2.sandbox import ImmutableSandboxedEnvironment
from support.paths import DEMO_MODEL

from publisher import prompts


@pytest.mark.parametrize("name", list(prompts.NAMED_TEMPLATES))
def test_named_templates_are_valid_literals(name: str) -> None:
    template = prompts.NAMED_TEMPLATES[name]
    prompts.check_template(template.text)
    assert set(prompts.placeholders(template.text)) <= set(prompts.PLACEHOLDERS)
    assert prompts.resolve(name) == (template.title, template.text)
    assert prompts.resolve(f" {name.upper()} ") == (template.title, template.text)


def test_chatml_renders_exactly() -> None:
    assert prompts.render("chatml", "Hi?", "Be brief.") == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi?<|im_end|>\n<|im_start|>assistant\n"
    )


def test_chatml_matches_the_demo_models_own_chat_template() -> None:
    """Our ChatML text gives the same prompt as SmolLM2's Jinja chat template (the real model's files)."""
    if not (DEMO_MODEL / ".complete").exists():
        pytest.skip("the demo model is not materialized (make setup)")
    config = json.loads((DEMO_MODEL / "tokenizer_config.json").read_text(encoding="utf-8"))
    source = config.get("chat_template") or (DEMO_MODEL / "chat_template.jinja").read_text(encoding="utf-8")
    chat_template = ImmutableSandboxedEnvironment().from_string(source)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of France?"}]
    expected = chat_template.render(messages=messages, add_generation_prompt=True)
    assert prompts.render("chatml", "Capital of France?", "Be brief.") == expected


def test_literal_template_renders_with_doubled_braces() -> None:
    template = "{{json}} {system_message}|{prompt}"
    prompts.check_template(template)
    assert prompts.render(template, "p", "s") == "{json} s|p"
    assert prompts.resolve(template) == ("Custom", template)


@pytest.mark.parametrize(
    ("template", "message"),
    [
        (
            "{foo} {prompt}",
            r"^unknown placeholder \{foo\} in prompt template; allowed: \{system_message\}, \{prompt\}$",
        ),
        ("{system_message} only", r"^prompt template has no \{prompt\} placeholder$"),
        ("no placeholder at all {{}}", r"^prompt template has no \{prompt\} placeholder$"),
        ("{prompt", r"^malformed braces in prompt template \(expected '\}' before end of string\); write literal"),
        ("} {prompt}", r"^malformed braces in prompt template \(single '\}' encountered"),
        ("{prompt!r}", r"^bad placeholder \{prompt!r\}: only \{system_message\} and \{prompt\} are allowed$"),
        ("{prompt:>5}", r"^bad placeholder \{prompt:>5\}"),
        ("{} {prompt}", r"^bad placeholder \{\}"),
        ("{prompt[0]}", r"^bad placeholder \{prompt\[0\]\}"),
        ("{ prompt }", r"^bad placeholder \{ prompt \}"),
    ],
)
def test_bad_literal_templates(template: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        prompts.check_template(template)


_NO_BRACES = st.text(alphabet=st.characters(exclude_characters="{}", codec="utf-8"), max_size=40)


@given(
    before=_NO_BRACES,
    middle=_NO_BRACES,
    after=_NO_BRACES,
    prompt=st.text(),
    system=st.text(),
    with_system=st.booleans(),
)
def test_any_text_around_the_placeholders_validates_and_renders(
    before: str, middle: str, after: str, prompt: str, system: str, with_system: bool
) -> None:
    if with_system:
        template = before + "{system_message}" + middle + "{prompt}" + after
        expected = before + system + middle + prompt + after
    else:
        template = before + "{prompt}" + after
        expected = before + prompt + after
    prompts.check_template(template)
    # values are inserted as they are: braces in a prompt are never read as placeholders
    assert prompts.render(template, prompt, system) == expected


@given(st.text(alphabet=st.sampled_from(list("{}ab_ !:prompt")), max_size=30))
def test_checking_any_text_fails_only_with_value_error(text: str) -> None:
    try:
        prompts.check_template(text)
    except ValueError as err:
        assert "\n" not in str(err)
    else:
        assert "prompt" in prompts.placeholders(text)
        prompts.render(text, "p", "s")
