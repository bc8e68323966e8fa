"""Where things are in the checkout, named once for every test."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
FIXTURES = REPO_ROOT / "tests" / "fixtures"
DEMO_MODEL = REPO_ROOT / ".cache" / "models" / "SmolLM2-135M-Instruct"
