"""Golden cards: compare a rendered card with its file in tests/fixtures/cards/ (UPDATE_GOLDEN=1 rewrites it)."""

from __future__ import annotations

import os

from support.card_helpers import CARDS_FIXTURES, REPO_ROOT

SOURCES = REPO_ROOT / "tests" / "fixtures" / "sources"


def assert_golden(name: str, text: str) -> None:
    """``text`` equals ``tests/fixtures/cards/<name>.md``; regenerate only for intended changes and review the diff."""
    path = CARDS_FIXTURES / f"{name}.md"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"golden card {path.name} missing: run with UPDATE_GOLDEN=1"
    assert text == path.read_text(encoding="utf-8")
