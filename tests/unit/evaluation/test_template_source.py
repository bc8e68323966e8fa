"""Every chat template a source folder carries, labelled by the file (and name) it is in."""

from __future__ import annotations

import json
from pathlib import Path

from publisher.evaluation.template_source import source_templates


def test_every_template_is_found_with_its_file_and_name(tmp_path: Path) -> None:
    config = {
        "chat_template": [
            {"name": "default", "template": "A"},
            {"name": "tool_use", "template": "B"},
            {"name": "broken"},
        ]
    }
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    (tmp_path / "chat_template.jinja").write_text("C", encoding="utf-8")
    (tmp_path / "chat_template.json").write_text(json.dumps({"chat_template": "D"}), encoding="utf-8")
    (tmp_path / "additional_chat_templates").mkdir()
    (tmp_path / "additional_chat_templates" / "rag.jinja").write_text("E", encoding="utf-8")
    assert source_templates(tmp_path) == {
        "tokenizer_config.json": "A",
        "tokenizer_config.json ('tool_use')": "B",
        "chat_template.jinja": "C",
        "chat_template.json": "D",
        "additional_chat_templates/rag.jinja": "E",
    }


def test_a_folder_without_templates_or_with_unreadable_json_has_none(tmp_path: Path) -> None:
    assert source_templates(tmp_path) == {}
    (tmp_path / "tokenizer_config.json").write_text("{not json", encoding="utf-8")
    (tmp_path / "chat_template.json").write_text(json.dumps(["not", "a", "mapping"]), encoding="utf-8")
    assert source_templates(tmp_path) == {}
