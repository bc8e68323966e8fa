"""Bad recipes, each run through the real CLI: one clear `file:line: field: message` line, exit code 1.

Every case edits tests/fixtures/recipes/minimal.yaml, whose lines are:

     1 source:                 6   license: mit          11 card:
     2   repo: acme/tiny       7 quantize:               12   profile:
     3 model:                  8   types:                13     quantized_by: tester
     4   name: Tiny            9     - Q4_K_M            14 publish:
     5   creator: Acme        10     - Q8_0              15   repo_id: tester/Tiny-GGUF

so text appended to it starts on line 16.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from support.paths import FIXTURES as FIXTURES_ROOT
from support.paths import REPO_ROOT
from typer.testing import CliRunner

from publisher import limits
from publisher.cli import app

FIXTURES = FIXTURES_ROOT / "recipes"
MINIMAL = (FIXTURES / "minimal.yaml").read_text(encoding="utf-8")

# One error line: file, line number (absent for whole-file problems), then what and why.
ERROR_LINE = re.compile(r"^error: [^:\s]+(:\d+)?: \S.*$")


def replace(old: str, new: str) -> str:
    assert MINIMAL.count(old) == 1, old
    return MINIMAL.replace(old, new)


def append(text: str) -> str:
    return MINIMAL + text


def _alias_bomb() -> str:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 7)]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Case:
    id: str
    content: str | bytes | None  # None: the path is made by `make`
    expected: str | re.Pattern[str]  # the whole error line after "error: "
    make: Callable[[Path], Path] | None = None


def _directory(tmp: Path) -> Path:
    (tmp / "a_folder").mkdir()
    return Path("a_folder")


def _missing(_tmp: Path) -> Path:
    return Path("no-such-recipe.yaml")


Q = re.compile  # for the few messages long enough that a pattern reads better

CASES = [
    # unknown keys, at several depths
    Case(
        "unknown-top-key", append("bogus: 1\n"), Q(r"r\.yaml:16: bogus: unknown key; expected one of name, source, .*")
    ),
    Case(
        "misspelt-top-key", replace("quantize:", "qantize:"), "r.yaml:7: qantize: unknown key (did you mean quantize?)"
    ),
    Case(
        "unknown-model-key",
        replace("  license: mit\n", "  license: mit\n  licence: mit\n"),
        "r.yaml:7: model.licence: unknown key (did you mean license?)",
    ),
    Case(
        "unknown-depth-3",
        replace("    quantized_by: tester\n", "    quantized_by: tester\n    colour: red\n"),
        Q(r"r\.yaml:14: card\.profile\.colour: unknown key; expected one of quantized_by, url, .*"),
    ),
    Case(
        "unknown-in-list-item",
        append("smoke:\n  prompts:\n    - prompt: hi\n      expected: Paris\n"),
        "r.yaml:19: smoke.prompts[0].expected: unknown key (did you mean expect?)",
    ),
    # wrong types
    Case(
        "int-from-text",
        replace("  types:\n", "  threads: abc\n  types:\n"),
        "r.yaml:8: quantize.threads: input should be a valid integer (got 'abc')",
    ),
    Case(
        "int-from-fraction",
        replace("  types:\n", "  threads: 1.5\n  types:\n"),
        "r.yaml:8: quantize.threads: input should be a valid integer (got 1.5)",
    ),
    Case(
        "bool-from-text",
        append("  private: maybe\n"),
        "r.yaml:16: publish.private: input should be a valid boolean (got 'maybe')",
    ),
    Case(
        "text-from-number",
        replace("name: Tiny", "name: 12"),
        "r.yaml:4: model.name: input should be a valid string (got 12; put it in quotes to make it text)",
    ),
    Case(
        "text-from-date",
        replace("  repo: acme/tiny\n", "  repo: acme/tiny\n  revision: 2024-01-05\n"),
        "r.yaml:3: source.revision: input should be a valid string (got the date 2024-01-05; put it in quotes to make"
        " it text)",
    ),
    Case(
        "mapping-from-list",
        replace("model:\n", "model:\n  - a\nmodel_:\n"),
        "r.yaml:3: model: input should be a mapping of keys (got a list)",
    ),
    Case(
        "mapping-from-nothing",
        replace("source:\n  repo: acme/tiny\n", "source:\n"),
        "r.yaml:1: source: input should be a mapping of keys (got an empty value)",
    ),
    Case(
        "list-from-number",
        replace("  types:\n    - Q4_K_M\n    - Q8_0\n", "  types: 5\n"),
        "r.yaml:8: quantize.types: input should be a valid list (got 5)",
    ),
    Case(
        "empty-list",
        replace("  types:\n    - Q4_K_M\n    - Q8_0\n", "  types: []\n"),
        "r.yaml:8: quantize.types: list should have at least 1 item (got an empty list)",
    ),
    Case(
        "outtype-choice",
        append("convert:\n  outtype: q4\n"),
        "r.yaml:17: convert.outtype: input should be 'f16', 'bf16', 'f32' or 'q8_0' (got 'q4')",
    ),
    Case(
        "publish-target-choice",
        append("  target: s3\n"),
        "r.yaml:16: publish.target: input should be 'local' or 'hf' (got 's3')",
    ),
    # bounds, each with its reason
    Case(
        "gpu-layers-below",
        append("smoke:\n  gpu_layers: -2\n"),
        "r.yaml:17: smoke.gpu_layers: -2 is out of range -1..1000: -1 offloads every layer, and no model has more"
        " than 1000",
    ),
    Case(
        "gpu-layers-above",
        append("smoke:\n  gpu_layers: 1001\n"),
        "r.yaml:17: smoke.gpu_layers: 1001 is out of range -1..1000: -1 offloads every layer, and no model has more"
        " than 1000",
    ),
    Case(
        "threads-absurd",
        replace("  types:\n", "  threads: 1000000000\n  types:\n"),
        f"r.yaml:8: quantize.threads: 1000000000 is out of range 0..{limits.max_threads()}: at most 8 per core of"
        " this machine; 0 uses every core",
    ),
    Case(
        "threads-negative",
        replace("  types:\n", "  threads: -1\n  types:\n"),
        f"r.yaml:8: quantize.threads: -1 is out of range 0..{limits.max_threads()}: at most 8 per core of this"
        " machine; 0 uses every core",
    ),
    Case(
        "smoke-context-beyond-32-bits",
        append("smoke:\n  context_length: 4294967297\n"),
        "r.yaml:17: smoke.context_length: 4294967297 is out of range 16..1048576: llama.cpp allocates the whole"
        " context up front; no model is trained on more",
    ),
    Case(
        "smoke-context-2-31",
        append("smoke:\n  context_length: 2147483648\n  max_tokens: 8\n"),
        "r.yaml:17: smoke.context_length: 2147483648 is out of range 16..1048576: llama.cpp allocates the whole"
        " context up front; no model is trained on more",
    ),
    Case(
        "model-context-zero",
        replace("  license: mit\n", "  license: mit\n  context_length: 0\n"),
        "r.yaml:7: model.context_length: 0 is out of range 16..1048576: llama.cpp allocates the whole context up"
        " front; no model is trained on more",
    ),
    Case(
        "quality-context-tiny",
        append("smoke:\n  quality:\n    context_length: 8\n"),
        "r.yaml:18: smoke.quality.context_length: 8 is out of range 16..1048576: llama.cpp allocates the whole"
        " context up front; no model is trained on more",
    ),
    Case(
        "quality-chunks-absurd",
        append("smoke:\n  quality:\n    max_chunks: 1000000000000\n"),
        "r.yaml:18: smoke.quality.max_chunks: 1000000000000 is out of range 1..10000: each chunk is evaluated on"
        " every file; a few dozen measure quality well",
    ),
    Case(
        "seed-beyond-64-bits",
        append("smoke:\n  seed: 18446744073709551617\n"),
        "r.yaml:17: smoke.seed: 18446744073709551617 is out of range 0..4294967294: llama.cpp seeds are 32-bit and"
        " 4294967295 means a random seed",
    ),
    Case(
        "seed-negative",
        append("smoke:\n  seed: -1\n"),
        "r.yaml:17: smoke.seed: -1 is out of range 0..4294967294: llama.cpp seeds are 32-bit and 4294967295 means a"
        " random seed",
    ),
    Case(
        "max-tokens-absurd",
        append("smoke:\n  max_tokens: 1000000000\n"),
        "r.yaml:17: smoke.max_tokens: 1000000000 is out of range 1..4096: a smoke answer needs a few dozen tokens,"
        " and every file generates it",
    ),
    Case(
        "max-tokens-beyond-context",
        append("smoke:\n  max_tokens: 600\n  context_length: 512\n"),
        "r.yaml:17: smoke.max_tokens: 600 tokens do not fit a smoke context of 512 with the prompt; lower max_tokens"
        " or raise smoke.context_length",
    ),
    Case(
        "empty-prompt",
        append("smoke:\n  prompts:\n    - prompt: ''\n"),
        "r.yaml:18: smoke.prompts[0].prompt: string should have at least 1 character (got '')",
    ),
    # quant types
    Case(
        "unknown-quant-type",
        replace("    - Q8_0\n", "    - Q8_0\n    - Q4_K_X\n"),
        "r.yaml:11: quantize.types[2]: unknown quant type 'Q4_K_X' (did you mean Q4_K_M?)",
    ),
    Case(
        "imatrix-quant-type",
        replace("    - Q8_0\n", "    - Q8_0\n    - IQ2_XS\n"),
        "r.yaml:11: quantize.types[2]: IQ2_XS needs an importance matrix: add an imatrix section (imatrix: {} "
        "computes one from the shipped calibration text), or choose a type that does not, such as Q4_K_M or IQ4_XS",
    ),
    Case(
        "imatrix-variant-base",
        replace("    - Q8_0\n", "    - Q8_0\n    - {name: IQ1_S_L, type: iq1_s, output: Q8_0}\n"),
        Q(r"r\.yaml:11: quantize\.types\[2\]\.type: IQ1_S needs an importance matrix: add an imatrix section .*"),
    ),
    Case(
        "imatrix-tensor-type",
        replace(
            "    - Q8_0\n",
            "    - Q8_0\n    - name: Q4_K_X\n      type: Q4_K_M\n      tensor_types:\n        ffn_up: IQ2_S\n",
        ),
        Q(r"r\.yaml:14: quantize\.types\[2\]\.tensor_types\.ffn_up: tensor type IQ2_S needs an importance matrix.*"),
    ),
    Case(
        "variant-unknown-tensor-type",
        replace("    - Q8_0\n", "    - Q8_0\n    - name: Q4_K_L\n      type: Q4_K_M\n      token_embd: Q8_K_M\n"),
        "r.yaml:13: quantize.types[2].token_embd: unknown tensor type 'Q8_K_M' (did you mean Q8_0?)",
    ),
    Case(
        "variant-invalid-regex",
        replace(
            "    - Q8_0\n",
            "    - Q8_0\n    - name: Q4_K_L\n      type: Q4_K_M\n      tensor_types: {'blk\\.[0-9+\\.ffn': Q8_0}\n",
        ),
        Q(
            r"r\.yaml:13: quantize\.types\[2\]\.tensor_types\.blk\\\.\[0-9\+\\\.ffn: 'blk.*' is not a valid regular "
            r"expression \(unterminated character set at position 5\)"
        ),
    ),
    Case(
        "variant-named-like-a-type",
        replace("    - Q8_0\n", "    - Q8_0\n    - {name: q6_k, type: Q4_K_M, output: Q8_0}\n"),
        "r.yaml:11: quantize.types[2].name: 'q6_k' is llama.cpp's own type; give the variant a name of its own, "
        "e.g. Q6_K_L",
    ),
    Case(
        "variant-missing-type",
        replace("    - Q8_0\n", "    - Q8_0\n    - {name: Q4_K_L, output: Q8_0}\n"),
        "r.yaml:11: quantize.types[2].type: required key is missing",
    ),
    Case(
        "imatrix-unknown-key",
        append("imatrix:\n  chunk: 10\n"),
        "r.yaml:17: imatrix.chunk: unknown key (did you mean chunks?)",
    ),
    Case(
        "imatrix-file-and-text",
        append("imatrix:\n  text: cal.txt\n  file: old.imatrix.gguf\n"),
        "r.yaml:18: imatrix.file: give either file (an existing imatrix) or text to compute one, not both",
    ),
    Case(
        "duplicate-quant-type",
        replace("    - Q8_0\n", "    - Q8_0\n    - q4_k_m\n"),
        "r.yaml:11: quantize.types[2]: Q4_K_M is listed twice (also at types[0])",
    ),
    Case(
        "quant-type-number",
        replace("    - Q8_0\n", "    - 8\n"),
        "r.yaml:10: quantize.types[1]: input should be a valid string (got 8; put it in quotes to make it text)",
    ),
    # source
    Case("missing-source", replace("source:\n  repo: acme/tiny\n", ""), "r.yaml:1: source: required key is missing"),
    Case(
        "source-without-repo-or-path",
        replace("  repo: acme/tiny\n", "  revision: main\n"),
        "r.yaml:1: source: give source.repo (a Hub repo id) or source.path (a local folder), or both",
    ),
    Case(
        "bad-repo-id",
        replace("repo: acme/tiny", "repo: acme tiny"),
        "r.yaml:2: source.repo: 'acme tiny' is not a Hub repo id of the form owner/name",
    ),
    Case(
        "bad-base-model",
        replace("  license: mit\n", "  license: mit\n  base_model: [acme/tiny, tiny]\n"),
        "r.yaml:7: model.base_model[1]: 'tiny' is not a Hub repo id of the form owner/name",
    ),
    Case(
        "missing-nested-key",
        replace("    quantized_by: tester\n", "    url: https://example.org\n"),
        "r.yaml:12: card.profile.quantized_by: required key is missing",
    ),
    # model metadata
    Case(
        "bad-language",
        replace("  license: mit\n", "  license: mit\n  languages:\n    - en\n    - English\n"),
        "r.yaml:9: model.languages[1]: 'English' is not an ISO 639 language code such as en or zh",
    ),
    Case(
        "other-license-alone",
        replace("license: mit", "license: other"),
        "r.yaml:6: model.license: license 'other' needs license_name and license_link as well",
    ),
    # prompt templates
    Case(
        "template-unknown-placeholder",
        replace("  license: mit\n", "  license: mit\n  prompt_template: 'Q: {foo} {prompt}'\n"),
        "r.yaml:7: model.prompt_template: unknown placeholder {foo} in prompt template; allowed: {system_message}, "
        "{prompt}",
    ),
    Case(
        "template-without-prompt",
        replace("  license: mit\n", "  license: mit\n  prompt_template: '{system_message}'\n"),
        "r.yaml:7: model.prompt_template: prompt template has no {prompt} placeholder",
    ),
    Case(
        "template-unclosed-brace",
        replace("  license: mit\n", "  license: mit\n  prompt_template: 'Q: {prompt'\n"),
        "r.yaml:7: model.prompt_template: malformed braces in prompt template (expected '}' before end of string);"
        " write literal braces as {{ and }}",
    ),
    Case(
        "template-stray-brace",
        replace("  license: mit\n", "  license: mit\n  prompt_template: 'a} {prompt}'\n"),
        "r.yaml:7: model.prompt_template: malformed braces in prompt template (single '}' encountered in format"
        " string); write literal braces as {{ and }}",
    ),
    Case(
        "template-format-spec",
        replace("  license: mit\n", "  license: mit\n  prompt_template: '{prompt:>9}'\n"),
        "r.yaml:7: model.prompt_template: bad placeholder {prompt:>9}: only {system_message} and {prompt} are allowed",
    ),
    Case(
        "template-unknown-name",
        replace("  license: mit\n", "  license: mit\n  prompt_template: chatmll\n"),
        Q(
            r"r\.yaml:7: model\.prompt_template: unknown prompt template 'chatmll' \(did you mean chatml\?\); name one "
            r"of chatml, .*, or write text with \{prompt\}"
        ),
    ),
    # smoke expectations and branches refer to built types
    Case(
        "expectation-type-not-built",
        append("smoke:\n  prompts:\n    - prompt: hi\n      expect:\n        - contains: x\n          types: [Q2_K]\n"),
        "r.yaml:21: smoke.prompts[0].expect[0].types[0]: Q2_K is not built: add it to quantize.types or drop it here",
    ),
    Case(
        "expectation-says-nothing",
        append("smoke:\n  prompts:\n    - prompt: hi\n      expect:\n        - required: no\n"),
        "r.yaml:20: smoke.prompts[0].expect[0]: an expectation needs contains or not_contains",
    ),
    Case(
        "branch-type-not-built",
        append("  branches:\n    - name: small\n      types: [Q4_K_M, Q2_K]\n"),
        "r.yaml:18: publish.branches[0].types[1]: Q2_K is not built: add it to quantize.types or drop it here",
    ),
    Case(
        "branch-unknown-type",
        append("  branches:\n    - name: small\n      types: [Q4_K_N]\n"),
        "r.yaml:18: publish.branches[0].types[0]: unknown quant type 'Q4_K_N' (did you mean Q4_K_M?)",
    ),
    Case(
        "duplicate-branch",
        append("  branches:\n    - name: small\n      types: [Q4_K_M]\n    - name: small\n      types: [Q8_0]\n"),
        "r.yaml:19: publish.branches[1].name: branch 'small' is declared twice (also at branches[0])",
    ),
    Case(
        "bad-branch-name",
        append("  branches:\n    - name: a..b\n      types: [Q8_0]\n"),
        "r.yaml:17: publish.branches[0].name: 'a..b' is not a valid branch name: git refuses '..'",
    ),
    # names that become file names
    Case(
        "bad-build-name",
        append("name: my build\n"),
        "r.yaml:16: name: 'my build' is not a build name: a space is not allowed (letters, digits, . _ - only)",
    ),
    Case(
        "build-name-dot-dot",
        append("name: '..'\n"),
        "r.yaml:16: name: '..' is not a build name: must start with a letter or digit",
    ),
    Case(
        "build-name-trailing-dot",
        append("name: tiny.\n"),
        "r.yaml:16: name: 'tiny.' is not a build name: must not end with a dot",
    ),
    Case(
        "build-name-rtl-mark",
        append('name: "tiny\\u200f"\n'),
        "r.yaml:16: name: 'tiny\\u200f' is not a build name: U+200F (RIGHT-TO-LEFT MARK) is not allowed (letters,"
        " digits, . _ - only)",
    ),
    Case(
        "build-name-too-long",
        append(f"name: {'b' * 256}\n"),
        f"r.yaml:16: name: '{'b' * 256}' is not a build name: is 256 bytes; at most 255 fit the longest file name a"
        " build writes",
    ),
    Case(
        "basename-newline",
        replace("  types:\n", '  basename: "tiny\\n"\n  types:\n'),
        "r.yaml:8: quantize.basename: 'tiny\\n' is not a file name stem: U+000A is not allowed (letters, digits,"
        " . _ - only)",
    ),
    Case(
        "basename-separator",
        replace("  types:\n", "  basename: ../up\n  types:\n"),
        "r.yaml:8: quantize.basename: '../up' is not a file name stem: the path separator '/' is not allowed"
        " (letters, digits, . _ - only)",
    ),
    Case(
        "basename-too-long",
        replace("  types:\n", f"  basename: {'a' * 250}\n  types:\n"),
        f"r.yaml:8: quantize.basename: '{'a' * 250}' is not a file name stem: is 250 bytes; at most"
        f" {limits.MAX_BASENAME_BYTES} fit the longest file name a build writes",
    ),
    Case(
        "model-name-too-long-for-a-basename",
        replace("name: Tiny", f"name: {'Tiny ' * 60}"),
        f"r.yaml:4: model.name: the file name stem made from it, '{'tiny_' * 59}tiny', is 299 bytes; at most"
        f" {limits.MAX_BASENAME_BYTES} fit the longest file name a build writes; set quantize.basename",
    ),
    Case(
        "model-name-surrogate",
        replace("name: Tiny", 'name: "Ti\\ud800ny"'),
        "r.yaml:4: model.name: holds a lone surrogate U+D800, which is not a character and cannot be written as UTF-8",
    ),
    Case(
        "template-surrogate",
        replace("  license: mit\n", '  license: mit\n  prompt_template: "\\udfff {prompt}"\n'),
        "r.yaml:7: model.prompt_template: holds a lone surrogate U+DFFF, which is not a character and cannot be"
        " written as UTF-8",
    ),
    # malformed files
    Case("empty-file", "", "r.yaml: the file is empty; a recipe needs source, model, quantize, card and publish"),
    Case(
        "comments-only",
        "# nothing yet\n\n",
        "r.yaml: the file is empty; a recipe needs source, model, quantize, card and publish",
    ),
    Case("top-level-list", "- source\n- model\n", "r.yaml:1: a recipe must be a mapping of keys, not a list"),
    Case(
        "top-level-scalar", "\n\njust some text\n", "r.yaml:3: a recipe must be a mapping of keys, not a single value"
    ),
    Case(
        "syntax-error",
        append("smoke: [\n"),
        "r.yaml:17: YAML syntax error: expected the node content, but found '<stream end>'",
    ),
    Case(
        "bad-indentation",
        replace("  name: Tiny\n", "  name: Tiny\n creator: x\n"),
        "r.yaml:5: YAML syntax error: expected <block end>, but found '<block mapping start>'",
    ),
    Case(
        "tab-indentation",
        replace("  name: Tiny\n", "\tname: Tiny\n"),
        "r.yaml:4: YAML syntax error: found character '\\t' that cannot start any token",
    ),
    Case(
        "two-documents",
        append("---\nmore: 1\n"),
        "r.yaml:16: YAML syntax error: expected a single document in the stream, but found another document",
    ),
    Case(
        "alias-bomb",
        _alias_bomb(),
        Q(r"r\.yaml:\d+: aliases expand to more than 100000 values; refusing \(alias bomb\?\)"),
    ),
    Case("deep-nesting", "a: " + "[" * 150 + "]" * 150 + "\n", "r.yaml:1: nesting is too deep for a recipe"),
    # deeper than PyYAML's recursive composer can go
    Case("very-deep-nesting", "a: " + "[" * 1000 + "]" * 1000 + "\n", "r.yaml: nesting is too deep for a recipe"),
    Case(
        "non-utf8",
        replace("name: Tiny", "name: Caf\xe9").encode("latin-1"),
        "r.yaml:4: not UTF-8 text (byte 0xe9 in column 12); save the file as UTF-8",
    ),
    Case(
        "nul-character",
        replace("name: Tiny", "name: Ti\x00ny").encode(),
        "r.yaml:4: character U+0000 is not allowed in YAML",
    ),
    Case("too-large", b"# " + b"x" * 1_000_000 + b"\n", "r.yaml: more than 1000000 bytes, too large for a recipe"),
    Case("duplicate-key", append("model:\n  name: Other\n"), "r.yaml:16: duplicate key 'model' (first at line 3)"),
    Case(
        "duplicate-nested-key",
        replace("  name: Tiny\n", "  name: Tiny\n  name: Small\n"),
        "r.yaml:5: duplicate key 'name' (first at line 4)",
    ),
    Case("number-key", append("1: one\n"), "r.yaml:16: key '1' is not a name (YAML reads it as an integer)"),
    Case("complex-key", append("? [a, b]\n: c\n"), "r.yaml:16: a key must be a plain name, not a list or mapping"),
    Case(
        "python-tag",
        append("x: !!python/object/apply:os.system [ls]\n"),
        "r.yaml:16: YAML error: could not determine a constructor for the tag"
        " 'tag:yaml.org,2002:python/object/apply:os.system'",
    ),
    Case(
        "impossible-date",
        replace("  repo: acme/tiny\n", "  repo: acme/tiny\n  revision: 2024-13-45\n"),
        "r.yaml:3: YAML error: cannot read '2024-13-45' (month must be in 1..12)",
    ),
    Case("directory", None, "a_folder: is a folder, not a recipe file", make=_directory),
    Case("missing-file", None, "no-such-recipe.yaml: no such file", make=_missing),
]


def _write(case: Case, tmp: Path) -> Path:
    if case.make is not None:
        return case.make(tmp)
    path = tmp / "r.yaml"
    if isinstance(case.content, bytes):
        path.write_bytes(case.content)
    else:
        path.write_text(case.content or "", encoding="utf-8")
    return Path(path.name)


def _matches(expected: str | re.Pattern[str], line: str) -> bool:
    return bool(expected.fullmatch(line)) if isinstance(expected, re.Pattern) else line == expected


def test_there_are_many_distinct_cases() -> None:
    assert len(CASES) >= 25
    assert len({c.id for c in CASES}) == len(CASES)


def test_minimal_fixture_is_valid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "r.yaml").write_text(MINIMAL, encoding="utf-8")
    result = CliRunner().invoke(app, ["validate", "r.yaml"])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_recipe_is_one_clear_line(case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    path = _write(case, tmp_path)
    before = sorted(tmp_path.rglob("*"))
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert sorted(tmp_path.rglob("*")) == before  # validation writes nothing
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit)  # a clean exit, not an escaped exception
    assert "Traceback" not in result.output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines, "no error printed"
    assert all(ERROR_LINE.match(line) for line in lines), lines
    problems = [line.removeprefix("error: ") for line in lines]
    assert any(_matches(case.expected, p) for p in problems), f"expected {case.expected!r}, got {problems}"


# A few cases again through a real interpreter: exit status 1 and no traceback, for real.
SUBPROCESS_CASES = ["unknown-depth-3", "unknown-quant-type", "alias-bomb", "non-utf8", "directory", "python-tag"]


def _subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env["COLUMNS"] = "200"
    return env


def _write_all(tmp: Path, ids: list[str]) -> tuple[list[str], list[Case]]:
    by_id = {c.id: c for c in CASES}
    args, cases = [], []
    for case_id in ids:
        folder = tmp / case_id
        folder.mkdir()
        path = _write(by_id[case_id], folder)
        args.append(f"{case_id}/{path}")
        cases.append(by_id[case_id])
    return args, cases


def _expected_with_folder(case: Case, case_id: str) -> re.Pattern[str]:
    text = case.expected.pattern if isinstance(case.expected, re.Pattern) else re.escape(case.expected)
    return re.compile(re.escape(case_id + "/") + text)


def test_module_entry_point_exits_1_without_traceback(tmp_path: Path) -> None:
    args, cases = _write_all(tmp_path, SUBPROCESS_CASES)
    proc = subprocess.run(
        [sys.executable, "-m", "publisher.cli", "validate", *args],
        cwd=tmp_path,
        env=_subprocess_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    problems = [line.removeprefix("error: ") for line in proc.stderr.splitlines()]
    for case_id, case in zip(SUBPROCESS_CASES, cases, strict=True):
        pattern = _expected_with_folder(case, case_id)
        assert any(pattern.fullmatch(p) for p in problems), (case_id, problems)


def test_console_script_exits_1_without_traceback(tmp_path: Path) -> None:
    script = shutil.which("publisher", path=str(Path(sys.executable).parent))
    if script is None:
        pytest.skip("the publisher console script is not installed (run `make setup`)")
    args, cases = _write_all(tmp_path, ["missing-source", "empty-file"])
    proc = subprocess.run(
        [script, "validate", *args], cwd=tmp_path, env=_subprocess_env(), capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    problems = [line.removeprefix("error: ") for line in proc.stderr.splitlines()]
    for case_id, case in zip(["missing-source", "empty-file"], cases, strict=True):
        assert any(_expected_with_folder(case, case_id).fullmatch(p) for p in problems), problems
