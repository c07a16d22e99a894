"""The interactive HTML capability report: the markdown report's content, in one file a browser opens.

The markdown report (`seqprobe.records.report`) reads well on a git host, but its pictures are
fixed PNGs: one cannot ask which layer or token a cell is, or reorder a table by p(answer). This
report holds the same content, in the same order (header, baseline comparison, summary per
suite, per-case tables failures first, each mechanistic case's claims and pictures), with:

- the pictures drawn by plotly.js from the same figure specs as the PNGs (see
  `seqprobe.records.html_figures`), with hover naming each cell, point and token;
- tables that sort by any column when its header is clicked (a few lines of inline script);
- everything inside the one file, plotly.js included once, so it opens offline, from an e-mail
  or a CI artifact, with nothing fetched from the network.

`write_html_report(results, "reports/NAME.html")` writes `reports/NAME.json` (the `RunResults`,
the file `--baseline` and `seqprobe compare` read) and then `reports/NAME.html`, each atomically
(see `seqprobe.records.atomic`). Every figure spec is parsed first, so a bad one writes nothing.
All text from a run (case ids, prompts, tokens, messages) is escaped: it can hold any character.
"""

from __future__ import annotations

import html
import math
import re
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from seqprobe.records.atomic import write_text_atomic
from seqprobe.records.baseline import summary_lines
from seqprobe.records.formatting import format_value, format_with_interval, intervals_note
from seqprobe.records.html_figures import figure_json, plotly_js, script_json
from seqprobe.records.report import (
    FAILING_VARIANTS_SHOWN,
    KIND_HEADINGS,
    OUTCOME_ORDER,
    OUTCOME_TEXT,
    TOP_K_SHOWN,
    ReportFiles,
    case_name,
    group_cases,
    metric_header,
    refuse_protected,
    report_figures,
    results_path_for,
    suite_label,
    variants_text,
)
from seqprobe.records.results import VERSIONED_PACKAGES, CaseResult, RunResults
from seqprobe.records.verdicts import STATUS_TEXT, RunComparison
from seqprobe.vocabulary.metrics import REPORT_COLUMNS

__all__ = ["render_html_report", "write_html_report"]

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 0; color: #1b1b1b; background: #fff; }
main { max-width: 1280px; margin: 0 auto; padding: 1rem 2rem 4rem; }
table { border-collapse: collapse; margin: 0.5rem 0 1.5rem; font-size: 13px; }
th, td { border: 1px solid #d0d7de; padding: 0.25rem 0.5rem; text-align: left; vertical-align: top; }
th { background: #f6f8fa; }
th button { all: unset; cursor: pointer; font-weight: 600; }
.scroll { overflow-x: auto; }
th button:focus-visible { outline: 2px solid #2166ac; }
th[aria-sort=ascending] button::after { content: " \\25B2"; }
th[aria-sort=descending] button::after { content: " \\25BC"; }
tbody tr:nth-child(even) { background: #fafbfc; }
tfoot td { font-weight: 600; }
td.number { text-align: right; font-variant-numeric: tabular-nums; }
code, pre { font: 12px ui-monospace, monospace; }
code.token { white-space: pre; }
code { white-space: pre-wrap; background: #f3f3f3; padding: 0 0.2em; border-radius: 3px; }
pre { background: #f6f8fa; padding: 0.5rem 1rem; overflow-x: auto; }
.alert { color: #b31d28; font-weight: 600; }
figure { margin: 1rem 0 2rem; }
"""

# Sorting: a cell's data-sort (the exact number, or the outcome's rank) or else its text; numbers
# compare as numbers, and empty cells stay last either way. Drawing: each figure's JSON sits in a
# <script type="application/json"> next to it; one that fails says so in its place.
SCRIPT = """
(() => {
  "use strict";
  const sortKey = (cell) => {
    const raw = cell.dataset.sort ?? cell.textContent.trim();
    if (raw === "") return null;
    const number = Number(raw);
    return Number.isNaN(number) ? raw : number;
  };
  const compare = (a, b) =>
    typeof a === "number" && typeof b === "number" ? a - b : String(a).localeCompare(String(b));
  for (const table of document.querySelectorAll("table.sortable")) {
    const headers = [...table.tHead.rows[0].cells];
    headers.forEach((th, column) => {
      th.querySelector("button").addEventListener("click", () => {
        const ascending = th.getAttribute("aria-sort") !== "ascending";
        headers.forEach((other) => other.removeAttribute("aria-sort"));
        th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
        const body = table.tBodies[0];
        const keyed = [...body.rows].map((row) => [sortKey(row.cells[column]), row]);
        keyed.sort(([a], [b]) =>
          a === null || b === null ? (a === null) - (b === null) : (ascending ? 1 : -1) * compare(a, b));
        for (const [, row] of keyed) body.append(row);
      });
    });
  }
  for (const element of document.querySelectorAll("div.plot")) {
    Promise.resolve()
      .then(() => {
        const figure = JSON.parse(document.getElementById(element.id + "-data").textContent);
        return Plotly.newPlot(element, figure.data, figure.layout, {responsive: true, displaylogo: false});
      })
      .catch((error) => {
        console.error(error);
        element.textContent = "This figure could not be drawn: " + error;
      });
  }
})();
"""


def write_html_report(
    results: RunResults,
    path: str | Path,
    *,
    comparison: RunComparison | None = None,
    baseline_label: str = "",
    protect: Collection[str | Path] = (),
    progress: Callable[[str], None] | None = None,
) -> ReportFiles:
    """Write the report at `path` (NAME.html) and its NAME.json; `figures` is empty (all are inside).

    `protect` lists files the report must never replace (the --baseline file, unless updating
    it): a report whose NAME.json is one of them is refused before anything is written.
    `progress` receives one line per figure drawn (the plugin passes a stderr writer).
    """
    path = Path(path)
    results_path = results_path_for(path)
    if path.suffix != ".html":
        raise ValueError(f"report {path}: expected a .html path; its results go to a .json beside it")
    refuse_protected(path, results_path, protect)
    page = render_html_report(
        results,
        results_file=results_path.name,
        comparison=comparison,
        baseline_label=baseline_label,
        progress=progress,
    )
    write_text_atomic(results_path, results.dumps())
    write_text_atomic(path, page)
    return ReportFiles(markdown=path, results=results_path, figures=())


def render_html_report(
    results: RunResults,
    *,
    results_file: str = "",
    comparison: RunComparison | None = None,
    baseline_label: str = "",
    progress: Callable[[str], None] | None = None,
) -> str:
    """The whole page; `results_file` is linked relatively from the header when given."""
    figures = report_figures(results)
    payloads: dict[tuple[str, str], str] = {}
    for i, (case, spec, _) in enumerate(figures, start=1):
        if progress is not None:
            progress(f"seqprobe: drawing figure {i}/{len(figures)}: {case.case_id} {spec.name}")
        payloads[case.case_id, spec.name] = script_json(figure_json(spec))
    anchors = {
        case.case_id: f"case-{i}"
        for i, case in enumerate(results.cases)
        if case.details.get("claims") or case.details.get("figures")
    }
    parts = _header(results, results_file=results_file)
    if comparison is not None:
        parts += _baseline_section(comparison, baseline_label)
    parts += ["<h2>Summary</h2>", _summary_table(results.cases)]
    for suite, cases in group_cases(results.cases, key=suite_label).items():
        parts.append(f"<h2>Suite <code>{_e(suite)}</code></h2>")
        for kind, of_kind in group_cases(cases, key=lambda case: case.kind).items():
            ordered = sorted(of_kind, key=lambda case: OUTCOME_ORDER.get(case.outcome, 0))
            parts += [f"<h3>{_e(KIND_HEADINGS.get(kind, kind.capitalize()))}</h3>", _case_table(ordered, anchors)]
            for case in ordered:
                parts += _mechanism_section(case, anchors, payloads)
    title = f"Capability report: {results.model.get('name', 'unnamed model')}"
    plotly = f"<script>{plotly_js()}</script>" if figures else ""
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_e(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<main>\n"
        + "\n".join(parts)
        + f"\n</main>\n{plotly}\n<script>{SCRIPT}</script>\n</body>\n</html>\n"
    )


def _header(results: RunResults, *, results_file: str) -> list[str]:
    model, env = results.model, results.environment
    versions = " · ".join(f"{name} {env.get(name, 'unknown')}" for name in VERSIONED_PACKAGES)
    files = ", ".join(
        f"<code>{_e(path)}</code> (sha256 <code>{_e(digest[:12])}</code>)"
        for path, digest in results.case_files.items()
    )
    items = [
        ("Model", _e(model.get("name", "unknown"))),
        ("Source", _e(model.get("source", "unknown"))),
        ("Weights sha256", f"<code>{_e(model.get('sha256') or 'unknown')}</code>"),
        ("dtype / device", _e(f"{model.get('dtype', 'unknown')} / {model.get('device', 'unknown')}")),
        ("Versions", _e(versions)),
        ("Date", _e(env.get("date", "unknown"))),
    ]
    if results_file:
        items.append(("Every metric", f'<a href="{_e(quote(results_file))}">{_e(results_file)}</a>'))
    items.append(("Case files", files or "none"))
    note = intervals_note(results.cases)
    items += [("Intervals", _e(note.removeprefix("Intervals: ")))] if note else []
    parts = [
        f"<h1>Capability report: {_e(model.get('name', 'unnamed model'))}</h1>",
        "<ul>" + "".join(f"<li><strong>{name}:</strong> {value}</li>" for name, value in items) + "</ul>",
    ]
    if env.get("command"):
        parts += ["<p>Reproduce with:</p>", f"<pre><code>{_e(env['command'])}</code></pre>"]
    return parts


def _baseline_section(comparison: RunComparison, label: str) -> list[str]:
    summary, *notes = summary_lines(comparison)
    against = f" with <code>{_e(label)}</code>" if label else ""
    parts = ["<h2>Baseline</h2>", f"<p>Compared{against}: {_e(summary)}.</p>"]
    if notes:
        parts.append("<ul>" + "".join(f"<li>{_e(note)}</li>" for note in notes) + "</ul>")
    rows = [
        [
            _td(f"<code>{_e(case.case_id)}</code>"),
            _td(_e(STATUS_TEXT[case.status]), css="alert" if case.status == "regressed" else ""),
            _td("<br>".join(_e(message) for message in case.messages)),
        ]
        for case in comparison.ordered()
        if case.status != "unchanged"
    ]
    return [*parts, _table(["Case", "Status", "Details"], rows)] if rows else parts


def _summary_table(cases: Sequence[CaseResult]) -> str:
    if not cases:
        return "<p>No cases ran.</p>"
    counts = {
        suite: Counter(case.outcome for case in of_suite)
        for suite, of_suite in group_cases(cases, key=suite_label).items()
    }
    total = sum(counts.values(), Counter())

    def cells(count: Counter[str]) -> list[str]:
        shown = [
            count.total(),
            count["passed"],
            count["failed"] + count["error"],
            count["xfailed"],
            count["xpassed"],
            count["skipped"],
        ]
        return [_td(str(n), sort=str(n), css="number") for n in shown]

    rows = [[_td(f"<code>{_e(suite)}</code>"), *cells(count)] for suite, count in counts.items()]
    headers = ["Suite", "Cases", "Passed", "Failed", "Known failures", "Gained (xpass)", "Skipped"]
    return _table(headers, rows, foot=[_td("Total"), *cells(total)])


def _case_table(cases: Sequence[CaseResult], anchors: Mapping[str, str]) -> str:
    """One row per case; a column appears when any case has something to put in it."""
    metrics = [m for m in REPORT_COLUMNS if any(m in case.metrics for case in cases)]
    metrics += [m for m in dict.fromkeys(m for c in cases for m in c.metrics) if m not in metrics]
    has_answer = any(case.answer for case in cases)
    has_top_k = any(case.details.get("top_k") for case in cases)
    has_family = any("variants_total" in case.details for case in cases)
    headers = ["Outcome", "Case", "Prompt"]
    headers += ["Answer"] * has_answer + [metric_header(m) for m in metrics]
    headers += ["Top-3"] * has_top_k + ["Variants", "Failing variants"] * has_family + ["Notes"]
    rows = []
    for case in cases:
        shown = OUTCOME_TEXT.get(case.outcome, case.outcome)
        name = f"<code>{_e(case_name(case.case_id))}</code>"
        if case.case_id in anchors:
            name = f'<a href="#{anchors[case.case_id]}">{name}</a>'
        row = [
            _td(_e(shown.strip("*")), sort=str(OUTCOME_ORDER.get(case.outcome, 0)), css=_emphasis(shown)),
            _td(name),
            _td(f"<code>{_e(case.prompt)}</code>" if case.prompt else ""),
        ]
        if has_answer:
            row.append(_td(f'<code class="token">{_e(repr(case.answer))}</code>' if case.answer else ""))
        row += [_number_td(case.metrics.get(metric), case.intervals.get(metric)) for metric in metrics]
        if has_top_k:
            row.append(_td(_top_k(case.details.get("top_k", ()))))
        if has_family:
            row.append(_td(_e(variants_text(case.details))))
            row.append(_td(_failing_variants(case.details.get("failing_variants", ()))))
        notes = [*case.failures] + ([f"known failure: {case.known_failure}"] if case.known_failure else [])
        row.append(_td("<br>".join(_e(note) for note in notes)))
        rows.append(row)
    return _table(headers, rows)


def _mechanism_section(
    case: CaseResult, anchors: Mapping[str, str], payloads: Mapping[tuple[str, str], str]
) -> list[str]:
    claims, figures = case.details.get("claims", ()), case.details.get("figures", ())
    if not claims and not figures:
        return []
    parts = [f'<h4 id="{anchors[case.case_id]}"><code>{_e(case_name(case.case_id))}</code></h4>']
    if "metric" in case.details:
        parts.append(f"<p>{_e(str(case.details['metric']))}</p>")
    if claims:
        rows = [
            [
                _td(_e(str(claim.get("text", "")))),
                _number_td(claim.get("value"), claim.get("interval")),
                _number_td(claim.get("threshold")),
                _td("yes" if claim.get("passed") else "no", css="" if claim.get("passed") else "alert"),
            ]
            for claim in claims
        ]
        parts.append(_table(["Claim", "Value", "Threshold", "Holds"], rows))
    for i, figure in enumerate(figures):
        element = f"{anchors[case.case_id]}-figure-{i}"
        title = str(figure.get("title", figure["name"]))
        parts.append(
            f'<figure><div class="plot" id="{element}" role="img" aria-label="{_e(title)}" '
            f'data-name="{_e(figure["name"])}"></div>'
            f'<script type="application/json" id="{element}-data">{payloads[case.case_id, figure["name"]]}</script>'
            "</figure>"
        )
    return parts


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, foot: Sequence[str] = ()) -> str:
    """A table sortable by any column; `headers` are plain text, `rows` and `foot` are `_td` cells."""
    head = "".join(f'<th scope="col"><button type="button">{_breakable(header)}</button></th>' for header in headers)
    body = "\n".join(f"<tr>{''.join(row)}</tr>" for row in rows)
    tfoot = f"<tfoot><tr>{''.join(foot)}</tr></tfoot>" if foot else ""
    return (
        f'<div class="scroll"><table class="sortable">\n<thead><tr>{head}</tr></thead>\n'
        f"<tbody>\n{body}\n</tbody>{tfoot}\n</table></div>"
    )


def _td(content: str, *, sort: str | None = None, css: str = "") -> str:
    """A cell of already-escaped `content`; `sort` replaces its text as the sorting key."""
    attributes = (f' data-sort="{_e(sort)}"' if sort is not None else "") + (f' class="{css}"' if css else "")
    return f"<td{attributes}>{content}</td>"


def _number_td(value: float | None, interval: Sequence[float] | None = None) -> str:
    if value is None:
        return _td("", css="number")
    # The exact number sorts, not its interval; NaN sorts with the empty cells.
    shown = format_with_interval(value, interval)
    return _td(_e(shown), sort="" if math.isnan(value) else repr(float(value)), css="number")


def _emphasis(outcome_text: str) -> str:
    """The markdown report bolds the outcomes that need a look (**failed**, **gained**)."""
    return "alert" if outcome_text.startswith("**") else ""


def _top_k(top_k: Sequence[Mapping[str, Any]]) -> str:
    return ", ".join(
        f'<code class="token">{_e(repr(entry["token"]))}</code> {_e(format_value(entry["prob"]))}'
        for entry in top_k[:TOP_K_SHOWN]
    )


def _failing_variants(prompts: Sequence[str]) -> str:
    shown = [f"<code>{_e(prompt)}</code>" for prompt in prompts[:FAILING_VARIANTS_SHOWN]]
    more = len(prompts) - FAILING_VARIANTS_SHOWN
    return "<br>".join(shown + ([f"(+{more} more)"] if more > 0 else []))


def _breakable(header: str) -> str:
    """A header that may wrap after its punctuation: claim metrics read recovery:resid_pre@final[0.85..1.0]/every."""
    return re.sub(r"([:@/\[])", r"\1<wbr>", _e(header))


def _e(text: str) -> str:
    return html.escape(text, quote=True)
