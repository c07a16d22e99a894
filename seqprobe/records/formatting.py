"""How numbers, metrics and text are written in messages, diffs and markdown reports, in one place."""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from seqprobe.records.intervals import format_level
from seqprobe.vocabulary.metrics import metric_family

__all__ = [
    "format_interval",
    "format_value",
    "format_with_interval",
    "intervals_note",
    "markdown_code",
    "markdown_table",
    "markdown_text",
    "metric_label",
]

# What a bootstrap resamples, by the kind of case: a report's footnote names it.
BOOTSTRAP_ITEMS = {"patching": "pairs", "attribution": "pairs"}


def metric_label(metric: str, answer: str) -> str:
    """How a message names a metric: p(' Monday') for p_answer of the answer ' Monday'."""
    if metric == "p_answer" and answer:
        return f"p({answer!r})"
    if metric in ("rank", "logit_diff", "logprob", "logprob_diff") and answer:
        return f"{metric}({answer!r})"
    return metric


def format_value(value: float | None) -> str:
    """A metric value in three significant digits, as messages and diff tables show it."""
    if value is None:
        return "missing"
    if math.isnan(value):
        return "nan"
    if abs(value) >= 1000:
        return f"{value:.0f}"
    return f"{value:.3g}"


def format_interval(interval: Sequence[float]) -> str:
    """(low, high) as "[0.596, 0.982]", each bound as `format_value` writes it."""
    low, high = interval
    return f"[{format_value(low)}, {format_value(high)}]"


def format_with_interval(value: float | None, interval: Sequence[float] | None) -> str:
    """A metric value followed by its interval when it has a finite one: "0.9 [0.596, 0.982]"."""
    if interval is None or value is None or not all(math.isfinite(bound) for bound in interval):
        return format_value(value)
    return f"{format_value(value)} {format_interval(interval)}"


def intervals_note(cases: Sequence[Any]) -> str | None:
    """One sentence saying what the intervals in `cases` (CaseResults) are: level, method, resamples, seed.

    Read from each case's `details["intervals"]`; None when no case has an interval.
    "Intervals: 95%; pass_rate: Wilson score interval over variants; margin, recovery: percentile
    bootstrap over variants and pairs (2000 resamples, seed 0)."
    """
    levels: dict[float, None] = {}
    wilson: dict[str, None] = {}
    bootstrap: dict[str, None] = {}
    items: dict[str, None] = {}
    settings: dict[str, None] = {}
    for case in cases:
        for metric, info in case.details.get("intervals", {}).items():
            if metric not in case.intervals:
                continue
            levels[float(info.get("level", math.nan))] = None
            if info.get("method") == "wilson":
                wilson[metric_family(metric)] = None
            else:
                bootstrap[metric_family(metric)] = None
                items[BOOTSTRAP_ITEMS.get(case.kind, "variants")] = None
                settings[f"{info.get('resamples', '?')} resamples, seed {info.get('seed', '?')}"] = None
    if not levels:
        return None
    parts = [f"Intervals: {', '.join(format_level(level) for level in sorted(levels))}"]
    if wilson:
        parts.append(f"{', '.join(wilson)}: Wilson score interval over variants")
    if bootstrap:
        parts.append(f"{', '.join(bootstrap)}: percentile bootstrap over {' and '.join(items)} ({'; '.join(settings)})")
    return "; ".join(parts) + "."


def markdown_table(rows: Sequence[Mapping[str, str]], *, right: Collection[str] = ()) -> str:
    """A pipe table of string cells, columns in first-row order, `right` columns right-aligned."""
    import pandas as pd

    frame = pd.DataFrame(list(rows))
    align = ["right" if column in right else "left" for column in frame.columns]
    return frame.to_markdown(index=False, tablefmt="pipe", disable_numparse=True, colalign=align)


def markdown_code(text: str) -> str:
    """`text` as an inline code span that survives a table cell: pipes and newlines escaped."""
    text = text.replace("\n", "\\n").replace("\r", "\\r").replace("|", "\\|")
    fence = "`" * (_longest_backtick_run(text) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _longest_backtick_run(text: str) -> int:
    longest = run = 0
    for char in text:
        run = run + 1 if char == "`" else 0
        longest = max(longest, run)
    return longest


def markdown_text(text: str) -> str:
    """Free text in markdown: no table breaks, no accidental HTML or code spans."""
    for char in ("\\", "|", "<", "`"):
        text = text.replace(char, f"\\{char}")
    return text.replace("\n", " ").replace("\r", " ")
