"""The results site (results/site/, written by `report --committed`): its Markdown rendering, and every page loaded
in headless Chromium: no console error or failed load, no broken image or link, a real click on a table header
sorts the table, and a screenshot is taken."""

from __future__ import annotations

import math
import re
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
from browser import Browser, find_chromium

from bench.reports.site import PAGES, markdown_html

REPO = Path(__file__).resolve().parents[1]
SITE = REPO / "results" / "site"
ALL_PAGES = ["index.html", *PAGES]


def test_the_reports_markdown_becomes_html_with_links_rewritten_and_text_escaped():
    text = "# Title <x>\n\nSee [rows](../sweeps/a.jsonl) and `code <b>`.\n\n"
    text += "| a | b |\n|---|---|\n| 1 | **2** |\n\n- one"
    page = markdown_html(text, relink=lambda target: "X/" + target)
    assert "<h1>Title &lt;x&gt;</h1>" in page
    assert '<a href="X/../sweeps/a.jsonl">rows</a>' in page and "<code>code &lt;b&gt;</code>" in page
    assert '<table class="sortable"><thead><tr><th>a</th><th>b</th></tr></thead>' in page
    assert "<td><strong>2</strong></td>" in page and "<ul><li>one</li></ul>" in page


def test_the_site_is_committed_with_every_page():
    missing = [page for page in ALL_PAGES if not (SITE / page).exists()]
    assert not missing, f"results/site lacks {missing}: run python -m bench report --committed"


@pytest.fixture(scope="module")
def browser():
    executable = find_chromium()
    if executable is None:
        pytest.skip("no headless Chromium here (Debian: apt-get install chromium; or set CHROMIUM to its path)")
    chromium = Browser(executable)
    yield chromium
    chromium.close()


@pytest.mark.parametrize("page", ALL_PAGES)
def test_every_page_loads_clean_with_its_images_and_links(browser, page):
    browser.open(SITE / page)
    assert browser.errors() == []
    broken = browser.evaluate(
        "Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)"
    )
    assert broken == [], f"{page}: images that do not load: {broken[:5]}"
    links = browser.evaluate("Array.from(document.querySelectorAll('a[href]')).map(a => a.href)")
    files = [Path(unquote(urlparse(link).path)) for link in links if link.startswith("file:")]
    missing = sorted({str(path) for path in files if not path.exists()})
    assert missing == [], f"{page}: links to files that do not exist: {missing[:5]}"
    assert browser.evaluate("document.querySelectorAll('h1').length") == 1


# the first table with >= 3 rows and a column of numbers not already in order: its index, that column, and where
# the column's header is on the screen
FIND_UNSORTED = """(() => {
  const number = t => parseFloat(t.replace(/,/g, '').match(/[-+]?\\d*\\.?\\d+/) || NaN);
  const tables = Array.from(document.querySelectorAll('table.sortable'));
  for (let t = 0; t < tables.length; t++) {
    const rows = Array.from(tables[t].tBodies[0].rows);
    if (rows.length < 3) continue;
    for (let c = 0; c < rows[0].cells.length; c++) {
      const values = rows.map(r => number(r.cells[c].textContent));
      if (values.some(isNaN)) continue;
      if (values.every((v, i) => i === 0 || values[i - 1] <= v)) continue;
      const header = tables[t].querySelectorAll('th')[c];
      header.scrollIntoView({block: 'center'});
      const box = header.getBoundingClientRect();
      return [t, c, box.x + box.width / 2, box.y + box.height / 2];
    }
  }
  return null;
})()"""


def _column(browser, table: int, column: int) -> list[float]:
    texts = browser.evaluate(
        f"Array.from(document.querySelectorAll('table.sortable')[{table}].tBodies[0].rows)"
        f".map(r => r.cells[{column}].textContent)"
    )
    return [float(re.search(r"[-+]?\d*\.?\d+", t.replace(",", "")).group()) for t in texts]


def test_a_click_on_a_table_header_sorts_the_table_and_a_screenshot_is_taken(browser, tmp_path):
    browser.open(SITE / "accuracy.html")
    found = browser.evaluate(FIND_UNSORTED)
    assert found is not None, "no table with an unsorted numeric column to sort"
    table, column, x, y = found
    browser.click(x, y)
    ascending = _column(browser, table, column)
    assert ascending == sorted(ascending) and not any(math.isnan(v) for v in ascending)
    browser.click(x, y)  # a second click: descending
    assert _column(browser, table, column) == sorted(ascending, reverse=True)
    assert browser.errors() == []
    browser.open(SITE / "index.html")
    browser.screenshot(tmp_path / "index.png")
    assert (tmp_path / "index.png").stat().st_size > 20_000
