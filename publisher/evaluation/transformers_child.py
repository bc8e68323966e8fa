"""The child side of :mod:`publisher.evaluation.transformers_view`: run as a script, never imported.

Reads a request (JSON on stdin: the source folder, a text to encode, the conversation shapes),
loads the folder's tokenizer with transformers' ``AutoTokenizer`` and writes what the parity
checks need as JSON on stdout. It imports nothing from publisher (the package's imports would
only add to the child's start-up) and hides torch from transformers, which would import it
without the tokenizer needing any of it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from typing import Any


def first_line(err: BaseException) -> str:
    """An exception in one line (what a template raised is the model author's code, any type)."""
    return (str(err).splitlines() or [type(err).__name__])[0]


def read(request: dict[str, Any]) -> dict[str, Any]:
    """What transformers makes of the tokenizer in ``request["source_dir"]``; ``loaded`` false when it cannot."""
    if importlib.util.find_spec("transformers") is None:
        return {"loaded": False}
    from transformers import AutoTokenizer  # installed but broken: the parent reports the traceback's last line

    try:
        tok = AutoTokenizer.from_pretrained(request["source_dir"], local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError, KeyError, TypeError):
        return {"loaded": False}
    text = request["text"]
    roles = {role: getattr(tok, f"{role}_token_id", None) for role in request["roles"]}
    full = list(tok.encode(text, add_special_tokens=True))
    named = {i for i in roles.values() if i is not None} | set(full)
    template = tok.chat_template
    renderings: dict[str, dict[str, str]] = {}
    for shape in request["shapes"] if template is not None else []:
        try:
            rendered = tok.apply_chat_template(
                shape["messages"],
                tools=shape["tools"],
                add_generation_prompt=shape["add_generation_prompt"],
                tokenize=False,
            )
            renderings[shape["name"]] = {"text": str(rendered)}
        except Exception as err:  # the template is the model author's code: report whatever it raises
            renderings[shape["name"]] = {"error": first_line(err)}
    if isinstance(template, dict):
        template = template.get("default")
    return {
        "loaded": True,
        "roles": roles,
        "added": [[int(i), str(t.content), bool(t.special)] for i, t in tok.added_tokens_decoder.items()],
        "ids": dict(tok.get_vocab()),
        "plain": list(tok.encode(text, add_special_tokens=False)),
        "full": full,
        "texts": {str(i): str(tok.convert_ids_to_tokens(i)) for i in named},
        "chat_template": template if isinstance(template, str) else None,
        "has_template": tok.chat_template is not None,
        "renderings": renderings,
    }


def main() -> None:
    """Answer one request: stdout carries the JSON answer alone (library output goes to stderr)."""
    answer = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    sys.modules["torch"] = None  # type: ignore[assignment]  # transformers then treats torch as absent
    json.dump(read(json.loads(sys.stdin.read())), answer)
    answer.close()


if __name__ == "__main__":
    main()
