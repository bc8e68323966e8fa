"""The HTML card preview, opened in headless Chromium: the DOM holds the tables, scripts are gone."""

from __future__ import annotations

import shutil
import struct
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from support.card_helpers import ARTIFACTS_DIR, CAUSALLM_SOURCE, fake_build, recipe_variant

from publisher import cards

SIZES = {"Q4_0": 8_180_411_392, "Q5_1": 10_685_206_528, "Q8_0": 15_061_544_960}
HOSTILE = (
    '\n\n<script>document.title = "pwned"</script>\n\n'
    '<img src="x.png" onerror="document.title = \'pwned\'">\n\n'
    "<a href=\"javascript:document.title='pwned'\">click</a>\n"
)


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("headless Chromium is not installed (`make browser` or `apt-get install chromium` installs it)")


def run_chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)


class Tables(HTMLParser):
    """Rows of every <table> in the article, plus the tags and attributes seen anywhere."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self.row: list[str] | None = None
        self.cell: list[str] | None = None
        self.tags: list[str] = []
        self.attrs: list[str] = []
        self.title = ""
        self.in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs += [f"{k}={v}" for k, v in attrs]
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.row = []
        elif tag in ("td", "th"):
            self.cell = []
        elif tag == "title":
            self.in_title = True

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self.row is not None and self.cell is not None:
            self.row.append("".join(self.cell).strip())
            self.cell = None
        elif tag == "tr" and self.row is not None:
            self.tables[-1].append(self.row)
            self.row = None
        elif tag == "title":
            self.in_title = False

    def handle_data(self, data: str) -> None:
        if self.cell is not None:
            self.cell.append(data)
        if self.in_title:
            self.title += data


@pytest.mark.browser
def test_html_preview_renders_tables_in_chromium(tmp_path: Path) -> None:
    source = tmp_path / "source"
    shutil.copytree(CAUSALLM_SOURCE, source)
    with (source / "README.md").open("a", encoding="utf-8") as handle:
        handle.write(HOSTILE)
    recipe = recipe_variant(tmp_path)
    manifest = fake_build(recipe, tmp_path / "build", SIZES, failed=("Q5_1",))
    page = tmp_path / "card.html"
    page.write_text(cards.card_html(cards.render_card(recipe, manifest, source_dir=source)), encoding="utf-8")

    dom = run_chromium(tmp_path, "--dump-dom", page.as_uri()).stdout
    parsed = Tables()
    parsed.feed(dom)
    provided = next(t for t in parsed.tables if t[0][:2] == ["Name", "Quant method"])
    assert [row[0] for row in provided[1:]] == ["causallm_14b.Q4_0.gguf", "causallm_14b.Q8_0.gguf"]
    assert [row[3] for row in provided[1:]] == ["8.18 GB", "15.06 GB"]
    quality = next(t for t in parsed.tables if t[0][0] == "File")
    assert [row[1] for row in quality[1:]] == ["6.5000", "6.7000"]
    assert parsed.title == "CausalLM 14B"
    assert "script" not in parsed.tags
    assert not any(a.startswith("on") or "javascript:" in a for a in parsed.attrs)
    assert "pwned" not in dom  # neither the script, the handler nor the script URL survived
    assert 'id="metadata"' in dom and "base_model_relation" in dom
    assert '<h2 id="provided-files">Provided files</h2>' in dom

    ARTIFACTS_DIR.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS_DIR / "card-preview.png"
    shot.unlink(missing_ok=True)
    run_chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,2000", "--hide-scrollbars", page.as_uri())
    raw = shot.read_bytes()
    assert raw[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", raw[16:24])
    assert (width, height) == (1280, 2000)
    assert len(raw) > 50_000  # a blank page compresses to a few kB
