"""The HTML card preview, opened in headless Chromium: the DOM holds the tables, scripts are gone."""

from __future__ import annotations

import html
import json
import re
import shutil
import struct
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from support.card_helpers import ARTIFACTS_DIR, CAUSALLM_SOURCE, fake_build, recipe_variant

from publisher import cards

SIZES = {"Q4_0": 8_180_411_392, "Q5_1": 10_685_206_528, "Q8_0": 15_061_544_960}
WIDE_TABLE = (
    "\n\n| Benchmark | Setting | Score | Notes |\n| --- | --- | --- | --- |\n"
    "| MMLU-Pro-Extended-Reasoning-Subset | five-shot-chain-of-thought-with-self-consistency-voting | 71.4 | "
    + "a long remark that goes on and on " * 12
    + "|\n| C-Eval | zero-shot | 66.2 | averaged_over_every_subject_without_any_spaces_at_all_in_this_cell |\n"
)
# Measures every table cell after layout, in the page as the Hub would lay it out, and writes the result into
# the DOM (the page's own CSP forbids scripts, so the test copy allows this one inline script).
MEASURE = """<script>
const cells = [...document.querySelectorAll('article td, article th')];
const clipped = cells.filter(c => c.scrollWidth > c.clientWidth + 1).map(c => c.textContent.trim().slice(0, 60));
const article = document.querySelector('article');
const wide = [...document.querySelectorAll('article table')].filter(t => t.scrollWidth > article.clientWidth + 1);
const out = document.createElement('pre');
out.id = 'measured';
out.textContent = JSON.stringify({cells: cells.length, clipped: clipped, wideTables: wide.length});
document.body.appendChild(out);
</script>"""
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
        handle.write(HOSTILE + WIDE_TABLE)
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
    assert '<span class="chip licence">License: wtfpl</span>' in dom
    assert '<a class="chip base-model" href="https://huggingface.co/CausalLM/14B">CausalLM/14B</a>' in dom
    assert "Quantized (this model)" in dom
    assert '<a class="chip dataset" href="https://huggingface.co/datasets/Open-Orca/OpenOrca">' in dom
    assert "Perplexity (Q4_0) on publisher" in dom
    assert "base_model_relation" not in dom  # chips and the tree, not raw YAML
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


@pytest.mark.browser
@pytest.mark.parametrize("width", [1280, 800])
def test_html_preview_tables_wrap_and_no_cell_is_clipped(tmp_path: Path, width: int) -> None:
    source = tmp_path / "source"
    shutil.copytree(CAUSALLM_SOURCE, source)
    with (source / "README.md").open("a", encoding="utf-8") as handle:
        handle.write(WIDE_TABLE)
    recipe = recipe_variant(tmp_path)
    manifest = fake_build(recipe, tmp_path / "build", SIZES)
    page = cards.card_html(cards.render_card(recipe, manifest, source_dir=source))
    assert "script-src" not in page and "<script" not in page
    measured_page = tmp_path / "measured.html"
    measured_page.write_text(
        page.replace("default-src 'none';", "default-src 'none'; script-src 'unsafe-inline';").replace(
            "</body>", MEASURE + "</body>"
        ),
        encoding="utf-8",
    )
    dom = run_chromium(tmp_path, f"--window-size={width},1000", "--dump-dom", measured_page.as_uri()).stdout
    found = re.search(r'<pre id="measured">(.*?)</pre>', dom, re.S)
    assert found, "the measuring script did not run"
    measured = json.loads(html.unescape(found.group(1)))
    assert measured["cells"] > 40  # the provided files, quality and wide tables were all laid out
    assert measured["clipped"] == []
    assert measured["wideTables"] == 0
