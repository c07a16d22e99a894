"""The markdown capability report: what a run measured, readable on a git host.

`write_report(results, "reports/NAME.md")` writes three things, each file atomically (see
`seqprobe.records.atomic`), so an interrupted run never leaves a half-written file: the previous
markdown and results file stay whole (its PNGs may already be the new run's, each one whole):

- `reports/NAME_files/*.png`: the pictures of every case that has `details["figures"]`, one PNG
  per figure spec (the contract is in `seqprobe.records.plots`), named by `plots.figure_filename`;
- `reports/NAME.json`: the `RunResults` itself: every metric of every case, the model metadata
  and the case files' sha256, the file `--baseline` and `seqprobe compare` read;
- `reports/NAME.md`, last, linking both relatively.

The markdown is, in order: a header (model, source, weights sha256, dtype, device, versions,
date, results file, case files, the command that reproduces it); the baseline comparison when
there is one; a summary table per suite; then per suite, one table per kind of case, failures
first, with a column for each metric any of its cases has; then for each case with claims or
figures (patching, attribution) its claims and its pictures.

What report cells read from a `CaseResult`:
- `metrics`: any names; p_answer, rank, logit_diff, pass_rate, margin, recovery come first with
  readable headers, others follow under their own names; `intervals[metric]` follows its value
  as "0.9 [0.596, 0.982]", and the header says once what the intervals are
  (`details["intervals"]`: level, method, resamples, seed).
- `details["top_k"]`: [{"token", "logit", "prob"}, ...]; the first three make the Top-3 column.
- `details["variants_total"]`, `["variants_run"]`, `["sampled"]`, `["failing_variants"]`: the
  Variants and Failing variants columns of a phrasing family.
- `details["claims"]`: [{"text", "value", "threshold", "passed"}, ...], a mechanistic case's claims;
  a claim's optional "interval": [low, high] is shown beside its value.
- `details["figures"]`: [FigureSpec JSON, ...], the case's pictures.
- `failures` and `known_failure`: the Notes column.

pandas is imported inside the functions that build tables, so the pytest plugin can import this
module for free.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import quote

from seqprobe.errors import BaselineError
from seqprobe.records.atomic import write_text_atomic
from seqprobe.records.baseline import case_file_of, summary_lines
from seqprobe.records.formatting import (
    format_value,
    format_with_interval,
    intervals_note,
    markdown_code,
    markdown_table,
    markdown_text,
)
from seqprobe.records.plots import figure_filename, render_figure, report_figures
from seqprobe.records.results import VERSIONED_PACKAGES, CaseResult, RunResults
from seqprobe.records.verdicts import STATUS_TEXT, RunComparison
from seqprobe.vocabulary.metrics import METRICS, REPORT_COLUMNS

__all__ = [
    "FAILING_VARIANTS_SHOWN",
    "KIND_HEADINGS",
    "OUTCOME_ORDER",
    "OUTCOME_TEXT",
    "TOP_K_SHOWN",
    "ReportFiles",
    "case_name",
    "group_cases",
    "metric_header",
    "refuse_protected",
    "report_figures",
    "suite_label",
    "variants_text",
    "figures_dir_for",
    "render_report",
    "results_path_for",
    "write_report",
]


# Failures first: they are what a reader opens the report for; then what changed for the better.
OUTCOME_ORDER = {"failed": 0, "error": 0, "xpassed": 1, "xfailed": 2, "passed": 3, "skipped": 4}
OUTCOME_TEXT = MappingProxyType(
    {
        "failed": "**failed**",
        "error": "**error**",
        "xpassed": "**gained**",
        "xfailed": "known failure",
        "passed": "passed",
        "skipped": "skipped",
    }
)
KIND_HEADINGS = MappingProxyType(
    {
        "completion": "Completions",
        "family": "Phrasing families",
        "invariance": "Invariances",
        "direction": "Directions",
        "patching": "Activation patching",
    }
)
TOP_K_SHOWN = 3
FAILING_VARIANTS_SHOWN = 3


@dataclass(frozen=True)
class ReportFiles:
    """What `write_report` wrote."""

    markdown: Path
    results: Path
    figures: tuple[Path, ...]


def results_path_for(report: str | Path) -> Path:
    """reports/NAME.md -> reports/NAME.json, the results file written beside a report."""
    return Path(report).with_suffix(".json")


def figures_dir_for(report: str | Path) -> Path:
    """reports/NAME.md -> reports/NAME_files, the folder of a report's PNGs."""
    report = Path(report)
    return report.with_name(f"{report.stem}_files")


def write_report(
    results: RunResults,
    path: str | Path,
    *,
    comparison: RunComparison | None = None,
    baseline_label: str = "",
    protect: Collection[str | Path] = (),
    progress: Callable[[str], None] | None = None,
) -> ReportFiles:
    """Write the report at `path` (NAME.md), its NAME.json and its NAME_files/ PNGs.

    `protect` lists files the report must never replace (the --baseline file, unless updating
    it): a report whose NAME.json is one of them is refused before anything is written.
    `progress` receives one line per figure drawn (the plugin passes a stderr writer).
    PNGs a previous report left in NAME_files/ that this one does not use are removed.
    """
    path = Path(path)
    results_path, figures_dir = results_path_for(path), figures_dir_for(path)
    if path.suffix == ".json":
        raise ValueError(f"report {path}: expected a .md path; its results go to a .json beside it")
    refuse_protected(path, results_path, protect)
    figures = report_figures(results)
    written = []
    for i, (case, spec, filename) in enumerate(figures, start=1):
        if progress is not None:
            progress(f"seqprobe: drawing figure {i}/{len(figures)}: {case.case_id} {spec.name}")
        render_figure(spec, figures_dir / filename)
        written.append(figures_dir / filename)
    write_text_atomic(results_path, results.dumps())
    markdown = render_report(
        results,
        figures_dir=figures_dir.name,
        results_file=results_path.name,
        comparison=comparison,
        baseline_label=baseline_label,
    )
    write_text_atomic(path, markdown)
    _remove_stale_figures(figures_dir, keep={p.name for p in written})
    return ReportFiles(markdown=path, results=results_path, figures=tuple(written))


def refuse_protected(report: Path, results_path: Path, protect: Collection[str | Path]) -> None:
    """A report whose results file is a protected one (the baseline) is refused before anything is written."""
    if any(results_path.resolve() == Path(other).resolve() for other in protect):
        raise BaselineError(
            f"report {report} would write its results to {results_path}, the baseline file; only "
            "--update-baseline writes a baseline: pick another --report name"
        )


def render_report(
    results: RunResults,
    *,
    figures_dir: str = "figures",
    results_file: str = "",
    comparison: RunComparison | None = None,
    baseline_label: str = "",
) -> str:
    """The report's markdown; figure links point into `figures_dir`, relative to the report."""
    lines = _header(results, results_file=results_file)
    if comparison is not None:
        lines += _baseline_section(comparison, baseline_label)
    lines += ["## Summary", "", _summary_table(results.cases), ""]
    for suite, cases in group_cases(results.cases, key=suite_label).items():
        lines += [f"## Suite {markdown_code(suite)}", ""]
        for kind, of_kind in group_cases(cases, key=lambda case: case.kind).items():
            ordered = sorted(of_kind, key=lambda case: OUTCOME_ORDER.get(case.outcome, 0))
            lines += [f"### {KIND_HEADINGS.get(kind, kind.capitalize())}", ""]
            lines += [_case_table(ordered), ""]
            for case in ordered:
                lines += _mechanism_section(case, figures_dir)
    return "\n".join(lines).rstrip("\n") + "\n"


def _header(results: RunResults, *, results_file: str) -> list[str]:
    model, env = results.model, results.environment
    versions = " · ".join(f"{name} {env.get(name, 'unknown')}" for name in VERSIONED_PACKAGES)
    files = ", ".join(
        f"{markdown_code(path)} (sha256 {markdown_code(digest[:12])})" for path, digest in results.case_files.items()
    )
    lines = [
        f"# Capability report: {markdown_text(model.get('name', 'unnamed model'))}",
        "",
        f"- **Model:** {markdown_text(model.get('name', 'unknown'))}",
        f"- **Source:** {markdown_text(model.get('source', 'unknown'))}",
        f"- **Weights sha256:** {markdown_code(model.get('sha256') or 'unknown')}",
        f"- **dtype / device:** {model.get('dtype', 'unknown')} / {model.get('device', 'unknown')}",
        f"- **Versions:** {versions}",
        f"- **Date:** {env.get('date', 'unknown')}",
    ]
    if results_file:
        lines.append(f"- **Every metric:** [{results_file}]({quote(results_file)})")
    lines.append(f"- **Case files:** {files or 'none'}")
    note = intervals_note(results.cases)
    lines += [f"- **Intervals:** {markdown_text(note.removeprefix('Intervals: '))}"] if note else []
    if env.get("command"):
        lines += ["", "Reproduce with:", "", "```sh", env["command"], "```"]
    return [*lines, ""]


def _baseline_section(comparison: RunComparison, label: str) -> list[str]:
    summary, *notes = summary_lines(comparison)
    against = f" with {markdown_code(label)}" if label else ""
    lines = ["## Baseline", "", f"Compared{against}: {summary}.", ""]
    if notes:
        lines += [*(f"- {markdown_text(note)}" for note in notes), ""]
    rows = [
        {
            "Case": markdown_code(case.case_id),
            "Status": STATUS_TEXT[case.status],
            "Details": "<br>".join(markdown_text(message) for message in case.messages),
        }
        for case in comparison.ordered()
        if case.status != "unchanged"
    ]
    return [*lines, markdown_table(rows), ""] if rows else lines


def _summary_table(cases: Sequence[CaseResult]) -> str:
    import pandas as pd

    if not cases:
        return "No cases ran."
    outcomes = list(OUTCOME_ORDER)
    frame = pd.DataFrame({"suite": [suite_label(case) for case in cases], "outcome": [case.outcome for case in cases]})
    suites = list(dict.fromkeys(frame["suite"]))
    counts = pd.crosstab(frame["suite"], frame["outcome"]).reindex(index=suites, columns=outcomes, fill_value=0)
    counts.loc["**Total**"] = counts.sum()
    rows = [
        {
            "Suite": markdown_code(str(suite)) if suite != "**Total**" else suite,
            "Cases": str(row.sum()),
            "Passed": str(row["passed"]),
            "Failed": str(row["failed"] + row["error"]),
            "Known failures": str(row["xfailed"]),
            "Gained (xpass)": str(row["xpassed"]),
            "Skipped": str(row["skipped"]),
        }
        for suite, row in counts.iterrows()
    ]
    return markdown_table(rows, right=set(rows[0]) - {"Suite"})


def _case_table(cases: Sequence[CaseResult]) -> str:
    """One row per case; a column appears when any case has something to put in it."""
    metrics = [m for m in REPORT_COLUMNS if any(m in case.metrics for case in cases)]
    metrics += [m for m in dict.fromkeys(m for c in cases for m in c.metrics) if m not in metrics]
    has = {
        "answer": any(case.answer for case in cases),
        "top_k": any(case.details.get("top_k") for case in cases),
        "family": any("variants_total" in case.details for case in cases),
    }
    rows = []
    for case in cases:
        row = {
            "Outcome": OUTCOME_TEXT.get(case.outcome, case.outcome),
            "Case": markdown_code(case_name(case.case_id)),
            "Prompt": markdown_code(case.prompt) if case.prompt else "",
        }
        if has["answer"]:
            row["Answer"] = markdown_code(repr(case.answer)) if case.answer else ""
        for metric in metrics:
            value = case.metrics.get(metric)
            row[metric_header(metric)] = (
                "" if value is None else format_with_interval(value, case.intervals.get(metric))
            )
        if has["top_k"]:
            row["Top-3"] = _top_k(case.details.get("top_k", ()))
        if has["family"]:
            row["Variants"] = variants_text(case.details)
            row["Failing variants"] = _failing_variants(case.details.get("failing_variants", ()))
        row["Notes"] = _notes(case)
        rows.append(row)
    return markdown_table(rows, right={metric_header(m) for m in metrics})


def metric_header(metric: str) -> str:
    return METRICS[metric].header if metric in METRICS else metric


def _mechanism_section(case: CaseResult, figures_dir: str) -> list[str]:
    claims, figures = case.details.get("claims", ()), case.details.get("figures", ())
    if not claims and not figures:
        return []
    lines = [f"#### {markdown_code(case_name(case.case_id))}", ""]
    if "metric" in case.details:
        lines += [markdown_text(str(case.details["metric"])), ""]
    if claims:
        rows = [
            {
                "Claim": markdown_text(str(claim.get("text", ""))),
                "Value": format_with_interval(claim.get("value"), claim.get("interval")),
                "Threshold": format_value(claim.get("threshold")),
                "Holds": "yes" if claim.get("passed") else "**no**",
            }
            for claim in claims
        ]
        lines += [markdown_table(rows, right={"Value", "Threshold"}), ""]
    for figure in figures:
        link = quote(f"{figures_dir}/{figure_filename(case.case_id, figure['name'])}")
        title = markdown_text(str(figure.get("title", figure["name"])))
        alt = title.replace("[", "\\[").replace("]", "\\]")
        lines += [f"![{alt}]({link})", ""]
    return lines


def _remove_stale_figures(figures_dir: Path, *, keep: Collection[str]) -> None:
    if not figures_dir.is_dir():
        return
    for png in figures_dir.glob("*.png"):
        if png.name not in keep:
            png.unlink()
    if not any(figures_dir.iterdir()):
        figures_dir.rmdir()


def suite_label(case: CaseResult) -> str:
    """`file::suite` (file without its `.seqprobe.yaml`): suites of the same name in two files stay apart."""
    file_name = case_file_of(case.case_id).rsplit("/", 1)[-1]
    return f"{file_name.removesuffix('.seqprobe.yaml').removesuffix('.seqprobe.yml')}::{case.suite}"


def group_cases(cases: Sequence[CaseResult], *, key: Callable[[CaseResult], str]) -> dict[str, list[CaseResult]]:
    groups: dict[str, list[CaseResult]] = {}
    for case in cases:
        groups.setdefault(key(case), []).append(case)
    return groups


def _top_k(top_k: Sequence[Mapping[str, Any]]) -> str:
    return ", ".join(
        f"{markdown_code(repr(entry['token']))} {format_value(entry['prob'])}" for entry in top_k[:TOP_K_SHOWN]
    )


def variants_text(details: Mapping[str, Any]) -> str:
    if "variants_total" not in details:
        return ""
    run, total = details.get("variants_run", details["variants_total"]), details["variants_total"]
    return f"{run}/{total}{' (sampled)' if details.get('sampled') else ''}"


def _failing_variants(prompts: Sequence[str]) -> str:
    shown = [markdown_code(prompt) for prompt in prompts[:FAILING_VARIANTS_SHOWN]]
    more = len(prompts) - FAILING_VARIANTS_SHOWN
    return "<br>".join(shown + ([f"(+{more} more)"] if more > 0 else []))


def _notes(case: CaseResult) -> str:
    notes = list(case.failures)
    if case.known_failure:
        notes.append(f"known failure: {case.known_failure}")
    return "<br>".join(markdown_text(note) for note in notes)


def case_name(case_id: str) -> str:
    """The case's own name; the suite is the section heading and the file is in the header."""
    return case_id.rsplit("::", 1)[-1]
