"""The interactive HTML report: self-contained, every figure and case in it, text escaped, files safe."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seqprobe.errors import BaselineError
from seqprobe.records.figure_specs import AttentionHead, AttentionSpec, HeatmapSpec, LineSpec, ScatterSpec
from seqprobe.records.html import render_html_report, write_html_report
from seqprobe.records.html_figures import figure_json
from seqprobe.records.results import CaseResult, RunResults
from tests.records._builders import MODEL, completion_result

FILE = "cases/days.seqprobe.yaml"
# Text a report must show as it is: markup, entities, quotes, a "$" pair plotly would read as LaTeX.
NASTY = "</td></tr><script>alert('x')</script> & &amp; \"q\" $a$ \u2028 é"

HEATMAP = HeatmapSpec(
    name="resid_pre",
    title="Recovery from patching resid_pre <by layer & position>",
    values=((0.0, 0.9, math.nan), (0.1, -0.3, 1.0)),
    row_labels=("L0", "L1"),
    # Two equal labels: still two columns.
    col_labels=("<bos>_0", "$5_1", "$5_1"),
    x_label="Position",
    y_label="Layer",
    colorbar_label="recovery",
)
LINE = LineSpec(
    name="logit_lens",
    title="Logit lens",
    x_labels=("0_pre", "1_pre", "final"),
    values=(-1.0, math.nan, 2.0),
    x_label="Layer",
    y_label="logit diff",
)
SCATTER = ScatterSpec(
    name="z_vs_v",
    title="Output vs value patching",
    x=(0.77, 0.77, 0.1, math.nan),
    y=(-0.01, -0.012, 0.8, 0.2),
    point_labels=("L2H1", "L2H2", "L2H0", "L0H0"),
    x_label="Value patch",
    y_label="Output patch",
)
ATTENTION = AttentionSpec(
    name="top_heads",
    title="Top heads' attention",
    heads=(
        AttentionHead(label="L1H0", pattern=((1.0, 0.0, 0.0), (0.25, 0.75, 0.0), (0.1, 0.2, 0.7))),
        AttentionHead(label="L2H1", pattern=((1.0, 0.0, 0.0), (0.5, 0.5, 0.0), (math.nan, 0.5, 0.5))),
    ),
    tokens=("<bos>", "$5", " &amp;\n"),
)
SPECS = (HEATMAP, LINE, SCATTER, ATTENTION)


def report_results(*, figures: bool = True) -> RunResults:
    """Every outcome, hostile text in ids, prompts and notes, and (optionally) all four figure kinds."""
    mechanism = CaseResult(
        case_id=f"{FILE}::successor::sunday_patching",
        suite="successor",
        kind="patching",
        outcome="failed",
        metrics={"recovery": 0.83},
        prompt="Today it is Sunday, tomorrow it is",
        failures=("L1H0 moves the day: 0.2 < min_recovery=0.5",),
        details={
            "metric": "logit difference ' Monday' − ' Sunday'",
            "claims": [
                {"text": "resid_pre at Sunday recovers", "value": 0.83, "threshold": 0.6, "passed": True},
                {"text": "L1H0 moves <the> day", "value": 0.2, "threshold": 0.5, "passed": False},
            ],
            "figures": [spec.to_json() for spec in SPECS] if figures else [],
        },
    )
    return RunResults(
        model={**MODEL, "source": "hub <tiny> & co"},
        case_files={FILE: "12" * 32},
        cases=(
            completion_result("sunday", p_answer=0.62),
            completion_result("friday", answer=" Saturday", outcome="failed", p_answer=0.12),
            replace(
                completion_result("pipes", answer=" |", outcome="xfailed", p_answer=0.01),
                known_failure="cannot count | pipes",
            ),
            replace(completion_result(NASTY, p_answer=0.5), prompt=f"a\nb {NASTY}", failures=(NASTY,)),
            replace(completion_result("unmeasured", outcome="skipped"), metrics={"p_answer": math.nan}),
            mechanism,
        ),
        environment={
            "torch": "2.13.0",
            "date": "2025-01-01T00:00:00+00:00",
            "command": "pytest cases/ --report r.html",
        },
    )


class Page(HTMLParser):
    """What the tests read from a page: tags with attributes, table cells' text, scripts' text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.tables: list[list[list[str]]] = []
        self.scripts: dict[str, str] = {}
        self._cell: list[str] | None = None
        self._script: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {name: value or "" for name, value in attrs}
        self.tags.append((tag, attributes))
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "script":
            self._script = attributes.get("id", "")
            self.scripts[self._script] = ""

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell))
            self._cell = None
        elif tag == "script":
            self._script = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        if self._script is not None:
            self.scripts[self._script] += data

    def figures(self) -> dict[str, dict[str, Any]]:
        """Each drawn figure by name: its element's attributes and the plotly JSON beside it."""
        return {
            attrs["data-name"]: attrs | {"figure": json.loads(self.scripts[attrs["id"] + "-data"])}
            for tag, attrs in self.tags
            if tag == "div" and attrs.get("class") == "plot"
        }


def parse(text: str) -> Page:
    page = Page()
    page.feed(text)
    page.close()
    return page


def test_the_page_is_self_contained_with_plotly_embedded_once(tmp_path: Path) -> None:
    from plotly.offline import get_plotlyjs

    write_html_report(report_results(), tmp_path / "run.html")
    text = (tmp_path / "run.html").read_text(encoding="utf-8")
    tags = parse(text).tags
    assert not [attrs for tag, attrs in tags if tag == "script" and "src" in attrs]
    assert not [attrs for tag, attrs in tags if tag == "link"]
    assert not [attrs for _, attrs in tags if re.match(r"\s*(https?:)?//", attrs.get("href", attrs.get("src", "")))]
    assert text.count(get_plotlyjs()) == 1
    assert text.count("<script>") == 2  # plotly.js, then the report's own script


def test_a_page_without_figures_does_not_carry_plotly() -> None:
    text = render_html_report(report_results(figures=False))
    assert "Plotly.newPlot" in text  # the drawing loop, which finds nothing to draw
    assert text.count("<script>") == 1 and len(text) < 100_000


def test_every_figure_appears_with_its_title_and_its_kind_of_plot() -> None:
    figures = parse(render_html_report(report_results())).figures()
    assert list(figures) == [spec.name for spec in SPECS]
    for spec in SPECS:
        shown = figures[spec.name]
        assert shown["aria-label"] == spec.title
        assert shown["figure"] == json.loads(json.dumps(figure_json(spec)))
    titles = [figures[spec.name]["figure"]["layout"]["title"]["text"] for spec in SPECS]
    assert titles == [
        "Recovery from patching resid_pre &lt;by layer &amp; position&gt;",
        "Logit lens",
        "Output vs value patching",
        "Top heads' attention",
    ]
    types = [[trace["type"] for trace in figures[spec.name]["figure"]["data"]] for spec in SPECS]
    assert types == [["heatmap"], ["scatter"], ["scatter"] * 3, ["heatmap", "heatmap"]]


def test_heatmaps_hover_with_row_column_and_value_on_a_centred_rdbu_scale() -> None:
    figure = figure_json(HEATMAP)
    (trace,) = figure["data"]
    assert trace["z"] == [[0.0, 0.9, None], [0.1, -0.3, 1.0]]  # NaN: a gap, the grey background shows
    assert figure["layout"]["plot_bgcolor"] == "#cccccc"
    assert (trace["zmin"], trace["zmax"]) == (-1.0, 1.0)
    scale = trace["colorscale"]
    assert (scale[0], scale[len(scale) // 2], scale[-1]) == (
        [0.0, "rgb(103,0,31)"],
        [0.5, "rgb(247,247,247)"],
        [1.0, "rgb(5,48,97)"],
    )
    assert trace["text"][0][0] == "Layer: L0<br>Position: &lt;bos&gt;_0<br>recovery: 0"
    assert trace["text"][1][2] == "Layer: L1<br>Position: &#36;5_1<br>recovery: 1"
    assert trace["hovertemplate"] == "%{text}<extra></extra>"
    x_axis, y_axis = figure["layout"]["xaxis"], figure["layout"]["yaxis"]
    assert (x_axis["tickvals"], x_axis["ticktext"]) == ([0, 1, 2], ["&lt;bos&gt;_0", "&#36;5_1", "&#36;5_1"])
    assert y_axis["autorange"] == "reversed"  # row 0 on top, as in the grid and the PNG


def test_lines_scatters_and_attention_hover_with_what_each_point_is() -> None:
    line = figure_json(LINE)["data"][0]
    assert line["y"] == [-1.0, None, 2.0]
    assert line["text"][2] == "Layer: final<br>logit diff: 2"
    diagonal, points, labels = figure_json(SCATTER)["data"]
    assert diagonal["name"] == "y = x"
    assert points["text"][0] == "L2H1<br>Value patch: 0.77<br>Output patch: -0.01"
    assert labels["text"] == ["L2H0", "L2H1, L2H2"]  # coinciding heads share one label; L0H0 is unmeasured
    attention = figure_json(ATTENTION)
    first, second = attention["data"]
    assert (first["xaxis"], second["xaxis"], second["yaxis"]) == ("x", "x2", "y2")
    assert first["text"][1][0] == "L1H0<br>Query: '&#36;5' (1)<br>Key: '&lt;bos&gt;' (0)<br>p = 0.25"
    assert second["z"][2] == [None, 0.5, 0.5]
    assert attention["layout"]["xaxis"]["ticktext"] == ["&lt;bos&gt;", "&#36;5", " &amp;amp;\\n"]
    scale = attention["layout"]["coloraxis"]
    assert (scale["cmin"], scale["cmax"], scale["colorscale"][0]) == (0.0, 1.0, [0.0, "rgb(247,247,247)"])
    assert [note["text"] for note in attention["layout"]["annotations"]] == ["L1H0", "L2H1"]


def test_tables_hold_every_case_with_its_text_escaped_failures_first() -> None:
    results = report_results()
    text = render_html_report(results)
    assert "<script>alert" not in text and "</td></tr><script>" not in text
    tables = parse(text).tables
    completions = next(table for table in tables if table[0][:3] == ["Outcome", "Case", "Prompt"])
    rows = {row[1]: row for row in completions[1:]}
    completion_cases = [case for case in results.cases if case.kind == "completion"]
    assert set(rows) == {case.case_id.rsplit("::", 1)[-1] for case in completion_cases}
    assert rows[NASTY][2] == f"a\nb {NASTY}"
    assert rows[NASTY][-1] == NASTY
    assert rows["pipes"][-1] == "known failure: cannot count | pipes"
    assert [row[0] for row in completions[1:]] == ["failed", "known failure", "passed", "passed", "skipped"]
    summary = next(table for table in tables if table[0][0] == "Suite")
    assert summary[1:] == [["days::successor", "6", "2", "2", "1", "0", "1"], ["Total", "6", "2", "2", "1", "0", "1"]]
    claims = next(table for table in tables if table[0][0] == "Claim")
    assert claims[1:] == [
        ["resid_pre at Sunday recovers", "0.83", "0.6", "yes"],
        ["L1H0 moves <the> day", "0.2", "0.5", "no"],
    ]
    case_cells = {row[1] for table in tables if table[0][1:2] == ["Case"] for row in table[1:]}
    assert case_cells == {case.case_id.rsplit("::", 1)[-1] for case in results.cases}
    tags = parse(text).tags
    assert ("a", {"href": "#case-5"}) in tags and ("h4", {"id": "case-5"}) in tags  # the case's section


@settings(max_examples=50, deadline=None)
@given(st.text(max_size=30))
def test_any_text_stays_in_its_table_cell(text: str) -> None:
    case = replace(completion_result("any"), prompt=text, failures=(text,))
    rows = parse(render_html_report(replace(report_results(figures=False), cases=(case,)))).tables[1]
    assert rows[1][2] == text and rows[1][-1] == text


def test_tables_sort_by_any_column_on_exact_numbers() -> None:
    text = render_html_report(report_results())
    page = parse(text)
    assert 'for (const table of document.querySelectorAll("table.sortable"))' in text
    tables = [attrs for tag, attrs in page.tags if tag == "table"]
    assert tables and all(attrs == {"class": "sortable"} for attrs in tables)
    assert sum(tag == "th" for tag, _ in page.tags) == sum(tag == "button" for tag, _ in page.tags)
    sort_keys = [attrs.get("data-sort") for tag, attrs in page.tags if tag == "td"]
    assert "0.62" in sort_keys and "0" in sort_keys  # p(answer) as stored; "failed" ranks first
    assert '<td data-sort="" class="number">nan</td>' in text  # NaN sorts with the empty cells


def test_write_html_report_writes_the_results_beside_it_that_round_trip(tmp_path: Path) -> None:
    results = report_results()
    lines: list[str] = []
    files = write_html_report(results, tmp_path / "reports" / "run.html", progress=lines.append)
    assert (files.markdown, files.results, files.figures) == (
        tmp_path / "reports" / "run.html",
        tmp_path / "reports" / "run.json",
        (),
    )
    assert RunResults.load(files.results).dumps() == results.dumps()  # NaN != NaN: compare the text
    assert '<a href="run.json">run.json</a>' in files.markdown.read_text(encoding="utf-8")
    assert lines == [
        f"seqprobe: drawing figure {i}/4: {FILE}::successor::sunday_patching {spec.name}"
        for i, spec in enumerate(SPECS, 1)
    ]
    assert sorted(path.name for path in (tmp_path / "reports").iterdir()) == ["run.html", "run.json"]


def test_a_report_never_overwrites_the_baseline_and_wants_an_html_path(tmp_path: Path) -> None:
    baseline = tmp_path / "run.json"
    baseline.write_text("{}", encoding="utf-8")
    with pytest.raises(BaselineError, match="would write its results to .*run.json, the baseline file"):
        write_html_report(report_results(), tmp_path / "run.html", protect=[baseline])
    assert baseline.read_text(encoding="utf-8") == "{}"
    assert not (tmp_path / "run.html").exists()
    with pytest.raises(ValueError, match="expected a .html path"):
        write_html_report(report_results(), tmp_path / "run.md")


def test_a_bad_figure_spec_writes_nothing_and_names_the_case(tmp_path: Path) -> None:
    results = report_results()
    broken = replace(results.cases[-1], details={"figures": [{"kind": "pie", "name": "p", "title": "t"}]})
    with pytest.raises(ValueError, match=rf"case {FILE}::successor::sunday_patching: details\['figures'\]"):
        write_html_report(replace(results, cases=(*results.cases[:-1], broken)), tmp_path / "run.html")
    assert list(tmp_path.iterdir()) == []


def test_a_baseline_comparison_is_shown_escaped() -> None:
    from seqprobe.records.baseline import compare_runs

    old = report_results()
    sunday = replace(old.cases[0], metrics={**old.cases[0].metrics, "p_answer": 0.41})
    new = replace(old, cases=(sunday, *old.cases[1:]))
    text = render_html_report(new, comparison=compare_runs(old, new), baseline_label="base <1>.json")
    section = text[text.index("<h2>Baseline</h2>") : text.index("<h2>Summary</h2>")]
    assert "<p>Compared with <code>base &lt;1&gt;.json</code>: 1 regressed, 5 unchanged (6 cases).</p>" in section
    rows = parse(section).tables[0]
    assert rows[1][:2] == [f"{FILE}::successor::sunday", "regressed"]
    assert rows[1][2].startswith("regressed: p(' Monday') 0.62 → 0.41 (tolerance 0.05)")


def test_importing_the_html_report_loads_neither_plotly_nor_matplotlib_nor_pandas() -> None:
    code = "import sys, seqprobe.records.html; print(sorted(m for m in ('plotly', 'matplotlib', 'pandas') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout == "[]\n"


def test_intervals_follow_their_values_sort_by_the_value_and_are_stated_once() -> None:
    family = CaseResult(
        case_id=f"{FILE}::successor::weekdays",
        suite="successor",
        kind="family",
        outcome="passed",
        metrics={"pass_rate": 0.9},
        intervals={"pass_rate": (0.596, 0.982)},
        details={"intervals": {"pass_rate": {"level": 0.9, "method": "wilson", "n": 10}}},
    )
    results = RunResults(model=MODEL, case_files={FILE: "12" * 32}, cases=(family,), interval_level=0.9)
    text = render_html_report(results)
    assert text.count("<strong>Intervals:</strong>") == 1
    assert "<li><strong>Intervals:</strong> 90%; pass_rate: Wilson score interval over variants.</li>" in text
    assert '<td data-sort="0.9" class="number">0.9 [0.596, 0.982]</td>' in text
    assert "Intervals" not in render_html_report(report_results(figures=False))


def test_line_intervals_are_plotly_error_bars() -> None:
    spec = replace(LINE, low=(-1.5, math.nan, 1.0), high=(-0.5, math.nan, 2.5))
    (trace,) = figure_json(spec)["data"]
    assert trace["error_y"] | {"color": None} == {
        "type": "data",
        "symmetric": False,
        "array": [0.5, None, 0.5],
        "arrayminus": [0.5, None, 1.0],
        "color": None,
        "thickness": 1,
        "width": 3,
    }
    assert trace["text"][0] == "Layer: 0_pre<br>logit diff: -1 [-1.5, -0.5]"
    assert trace["text"][1] == "Layer: 1_pre<br>logit diff: nan", "no interval where none was measured"
    assert "error_y" not in figure_json(LINE)["data"][0]
    json.dumps(figure_json(spec), allow_nan=False)
