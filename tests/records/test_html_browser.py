"""The HTML report in a real browser: its scripts run cleanly, every figure draws, tables sort, it is not blank.

The page is opened from disk by headless Chromium (see `tests._browser`), offline as a reader
would open an artifact. Skipped where chromium is not installed; CI installs it.
"""

from __future__ import annotations

import html
import re
from pathlib import Path

import pytest

from seqprobe.records.html import write_html_report
from tests._browser import (
    dump_dom,
    ids_containing,
    recorded,
    recorded_errors,
    require_chromium,
    screenshot,
    with_error_hook,
)
from tests.records.test_html import NASTY, SPECS, report_results

# Run after the report's own script, as a reader would: sort the completions table by p(answer)
# twice (ascending, then descending); once the figures are drawn, hover a cell of the first heatmap
# and of the first attention pattern. What each showed lands where --dump-dom shows it.
PROBE = """<script>
(() => {
  const record = (name, value) => document.documentElement.setAttribute(name, JSON.stringify(value));
  const table = [...document.querySelectorAll("table.sortable")]
    .find((t) => t.tHead.rows[0].cells[4].textContent === "p(answer)");
  const orders = [];
  for (let i = 0; i < 2; i++) {
    table.tHead.rows[0].cells[4].querySelector("button").click();
    orders.push([...table.tBodies[0].rows].map((row) => row.cells[1].textContent));
  }
  record("data-sorted", orders);
  setTimeout(() => {
    const hovered = [];
    for (const name of ["resid_pre", "top_heads"]) {
      const plot = document.querySelector(`div.plot[data-name="${name}"]`);
      Plotly.Fx.hover(plot, {xval: 0, yval: 1});  // column 0, row 1 (of the first subplot)
      hovered.push([...plot.querySelectorAll(".hovertext tspan.line")].map((line) => line.textContent));
      Plotly.Fx.unhover(plot);
    }
    record("data-hovered", hovered);
  }, 1000);
})();
</script>"""


@pytest.fixture(scope="module")
def browser_page(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """The test results' report, with the error hook and `PROBE`, as a local file; and its own text."""
    folder = tmp_path_factory.mktemp("html_report")
    write_html_report(report_results(), folder / "run.html")
    page = with_error_hook((folder / "run.html").read_text(encoding="utf-8"))
    checked = folder / "checked.html"
    checked.write_text(page.replace("</body>", f"{PROBE}\n</body>"), encoding="utf-8")
    return page, checked


@pytest.fixture(scope="module")
def dom(browser_page: tuple[str, Path]) -> str:
    return dump_dom(require_chromium(), browser_page[1])


def test_the_page_runs_without_javascript_errors(dom: str) -> None:
    assert recorded_errors(dom) == []


def test_every_figure_is_drawn_by_plotly(browser_page: tuple[str, Path], dom: str) -> None:
    plots = set(re.findall(r'<div class="plot" id="([^"]+)"', browser_page[0]))
    assert len(plots) == len(SPECS)
    assert plots <= ids_containing(dom, css_class="main-svg")
    assert ">This figure could not be drawn" not in dom  # what the report puts in a figure that failed


def test_plotly_shows_titles_and_tokens_as_they_are(dom: str) -> None:
    texts = {html.unescape(text) for text in re.findall(r"<text[^>]*>([^<]*)</text>", dom)}
    assert {"<bos>_0", "$5_1", "<bos>", "$5", " &amp;\\n", "L2H1, L2H2"} <= texts
    # Plotly splits a title into <tspan>s only when it wraps; these are short.
    assert "Recovery from patching resid_pre <by layer & position>" in texts


def test_clicking_a_header_sorts_its_table_numerically_with_empty_cells_last(dom: str) -> None:
    ascending, descending = recorded(dom, "data-sorted")
    assert ascending == ["pipes", "friday", NASTY, "sunday", "unmeasured"]
    assert descending == ["sunday", NASTY, "friday", "pipes", "unmeasured"]


def test_hovering_a_cell_names_its_row_column_and_value(dom: str) -> None:
    heatmap, attention = recorded(dom, "data-hovered")
    assert heatmap == ["Layer: L1", "Position: <bos>_0", "recovery: 0.1"]
    assert attention == ["L1H0", "Query: '$5' (1)", "Key: '<bos>' (0)", "p = 0.25"]


def test_a_screenshot_of_the_page_is_not_blank(browser_page: tuple[str, Path], tmp_path: Path) -> None:
    from PIL import Image

    shot = screenshot(require_chromium(), browser_page[1], tmp_path / "page.png", size=(1280, 2400))
    with Image.open(shot) as image:
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
        size = image.size
    assert size == (1280, 2400)
    assert colours is not None and len(colours) > 100  # text, tables and the heatmap's scale, not one fill
    blue = sum(count for count, (r, g, b) in colours if b > r + 60)
    assert blue > 10_000, "no blue cells: the first heatmap did not draw"


def test_a_figure_that_cannot_be_drawn_is_an_error_the_hook_catches(
    browser_page: tuple[str, Path], tmp_path: Path
) -> None:
    """The checks above would pass vacuously if the hook caught nothing: break one figure's JSON."""
    page, _ = browser_page
    broken = re.sub(r'(<script type="application/json" id="[^"]+">)[^<]*', r"\1{", page, count=1)
    (tmp_path / "broken.html").write_text(broken, encoding="utf-8")
    dom = dump_dom(require_chromium(), tmp_path / "broken.html")
    (error,) = recorded_errors(dom)
    assert error.startswith("console.error: SyntaxError")
    assert ">This figure could not be drawn: SyntaxError" in dom
    assert len(ids_containing(dom, css_class="main-svg")) == len(SPECS) - 1
