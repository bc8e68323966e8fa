"""The autouse fixture in tests/conftest.py really keeps tests away from the user's Hub setup."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import huggingface_hub
from huggingface_hub import constants


def test_hub_environment_is_isolated(isolated_hf_env: Path) -> None:
    assert os.environ["HF_HOME"] == str(isolated_hf_env)
    assert isolated_hf_env.is_relative_to(Path(tempfile.gettempdir()))
    assert not any(isolated_hf_env.iterdir())
    assert "HF_TOKEN" not in os.environ
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    assert os.environ["HF_HUB_DISABLE_TELEMETRY"] == "1"
    assert constants.HF_HUB_OFFLINE is True
    assert Path(constants.HF_HUB_CACHE).is_relative_to(isolated_hf_env)
    assert huggingface_hub.get_token() is None


def test_subprocesses_inherit_the_isolation(isolated_hf_env: Path) -> None:
    code = "from huggingface_hub import constants as c, get_token; print(c.HF_HOME, c.HF_HUB_OFFLINE, get_token())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120).stdout
    assert out.split() == [str(isolated_hf_env), "True", "None"]


def test_hub_online_lifts_offline_mode_for_one_test(hub_online: None) -> None:
    assert constants.is_offline_mode() is False
    assert os.environ["HF_HUB_OFFLINE"] == "0"
    assert huggingface_hub.get_token() is None
