"""`seqprobe compare OLD.json NEW.json [--out diff.md]`: what changed between two runs.

Both files are results files (the NAME.json beside a report, or a baseline). Every case is
compared metric by metric with `seqprobe.records.baseline`'s tolerances, across models too: diffing a
model against a damaged or fine-tuned copy of itself is what this command is for, so a model
difference is stated at the top instead of stopping the comparison. Cases whose case file
changed are shown but not judged. A metric with an interval in both files shows it beside each
value; a move beyond tolerance whose intervals overlap is "within noise", not a regression.

The command prints a short summary and the regressions, writes a markdown diff (summary at
the top, then every case side by side, biggest changes first) when asked, and exits 1 when any
case regressed, 2 when a file cannot be read, 0 otherwise, so CI can gate on it.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Sequence

from seqprobe.errors import BaselineError
from seqprobe.records.atomic import write_text_atomic
from seqprobe.records.baseline import compare_runs, summary_lines
from seqprobe.records.formatting import (
    format_value,
    format_with_interval,
    markdown_code,
    markdown_table,
    markdown_text,
    metric_label,
)
from seqprobe.records.results import RunResults, load_results
from seqprobe.records.verdicts import STATUS_TEXT, CaseComparison, RunComparison
from seqprobe.vocabulary.metrics import parse_tolerance

__all__ = ["compare_main", "render_diff"]

EXIT_SAME, EXIT_REGRESSED, EXIT_UNREADABLE = 0, 1, 2
LOAD_FIX = "pass the .json written beside a --report, or a --baseline file"


def compare_main(argv: Sequence[str] | None = None) -> int:
    """Run `seqprobe compare` with `argv` (the arguments after "compare"); return the exit code."""
    parser = argparse.ArgumentParser(
        prog="seqprobe compare",
        description="Compare two seqprobe results files; exit 1 when any case regressed.",
    )
    parser.add_argument("old", help="results file of the earlier run (e.g. the baseline)")
    parser.add_argument("new", help="results file of the later run")
    parser.add_argument("--out", metavar="DIFF.md", help="write a markdown diff report here")
    parser.add_argument(
        "--tolerance",
        action="append",
        type=parse_tolerance,
        default=[],
        metavar="METRIC=VALUE",
        help="tolerance for one metric, e.g. --tolerance p_answer=0.1 (repeatable)",
    )
    args = parser.parse_args(argv)
    try:
        old, new = load_results(args.old, fix=LOAD_FIX), load_results(args.new, fix=LOAD_FIX)
    except BaselineError as error:
        print(f"seqprobe compare: {error}", file=sys.stderr)
        return EXIT_UNREADABLE
    comparison = compare_runs(old, new, tolerances=dict(args.tolerance), across_models=True, accept_hint=None)
    # The file first: a reader that stops early (`| head`) must not cost the report.
    if args.out:
        diff = render_diff(old, new, comparison, old_label=args.old, new_label=args.new)
        write_text_atomic(args.out, diff)
        print(f"seqprobe compare: wrote {args.out}", file=sys.stderr)
    regressions = [f"{case.case_id}: {'; '.join(case.messages)}" for case in _regressed(comparison)]
    _print_lines([*summary_lines(comparison), *regressions])
    return EXIT_REGRESSED if comparison.has_regressions else EXIT_SAME


def _print_lines(lines: Sequence[str]) -> None:
    """Print to stdout; a reader that closed the pipe early is no error (the exit code still tells)."""
    try:
        for line in lines:
            print(line)
        sys.stdout.flush()
    except BrokenPipeError:
        # Python would report the failed flush again at exit; point stdout at nothing instead.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def render_diff(old: RunResults, new: RunResults, comparison: RunComparison, *, old_label: str, new_label: str) -> str:
    """The markdown diff: summary, regressions, then every case side by side, biggest first.

    `comparison` is `compare_runs(old, new, ...)`; the labels name the two files.
    """
    summary, *notes = summary_lines(comparison)
    lines = [
        "# seqprobe compare",
        "",
        f"- **Old:** {_side(old_label, old)}",
        f"- **New:** {_side(new_label, new)}",
        "",
        f"**Summary:** {summary}.",
        "",
    ]
    if notes:
        lines += [*(f"- {markdown_text(note)}" for note in notes), ""]
    regressed = _regressed(comparison)
    if regressed:
        lines += ["## Regressions", ""]
        for case in regressed:
            lines.append(f"- {markdown_code(case.case_id)}: {markdown_text('; '.join(case.messages))}")
        lines.append("")
    rows = [row for case in comparison.ordered() for row in _case_rows(case)]
    if rows:
        right = {"Old", "New", "Change", "Tolerance"}
        lines += ["## Cases, biggest changes first", "", markdown_table(rows, right=right), ""]
    return "\n".join(lines).rstrip("\n") + "\n"


def _side(label: str, results: RunResults) -> str:
    model = results.model
    digest = f" (sha256 {markdown_code(model['sha256'][:12])})" if model.get("sha256") else ""
    date = results.environment.get("date", "date unknown")
    name = markdown_text(model.get("name", "unnamed model"))
    return f"{markdown_code(label)}: {name}{digest}, {date}"


def _case_rows(case: CaseComparison) -> list[dict[str, str]]:
    """Old and new side by side: one row per metric, plus the outcome when it changed."""
    answer = (case.current or case.baseline).answer  # type: ignore[union-attr]
    before = case.baseline.outcome if case.baseline else "—"
    after = case.current.outcome if case.current else "—"
    rows = []
    if before != after:
        rows.append({"Metric": "outcome", "Old": before, "New": after, "Change": "", "Tolerance": ""})
    for change in sorted(case.metrics, key=lambda change: -change.size):
        delta = change.delta
        shown = "" if delta is None or math.isnan(delta) else f"{delta:+.3g}" if delta else "0"
        if change.verdict in ("regressed", "improved") and case.status in ("regressed", "improved"):
            shown = f"**{shown}**"
        rows.append(
            {
                "Metric": markdown_text(metric_label(change.metric, answer)),
                "Old": _value(change.baseline, change.baseline_interval, exists=case.baseline is not None),
                "New": _value(change.current, change.current_interval, exists=case.current is not None),
                "Change": shown,
                "Tolerance": format_value(change.tolerance),
            }
        )
    rows = rows or [dict.fromkeys(("Metric", "Old", "New", "Change", "Tolerance"), "")]
    first = {"Case": markdown_code(case.case_id), "Status": _status(case)}
    return [(first if i == 0 else dict.fromkeys(first, "")) | row for i, row in enumerate(rows)]


def _regressed(comparison: RunComparison) -> list[CaseComparison]:
    return [case for case in comparison.ordered() if case.status == "regressed"]


def _status(case: CaseComparison) -> str:
    text = STATUS_TEXT[case.status]
    return f"**{text}**" if case.status == "regressed" else text


def _value(value: float | None, interval: tuple[float, float] | None, *, exists: bool) -> str:
    return format_with_interval(value, interval) if exists else "—"
