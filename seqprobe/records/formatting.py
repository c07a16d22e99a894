"""How numbers, metrics and text are written in messages, diffs and markdown reports, in one place."""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence

__all__ = ["format_value", "markdown_code", "markdown_table", "markdown_text", "metric_label"]


def metric_label(metric: str, answer: str) -> str:
    """How a message names a metric: p(' Monday') for p_answer of the answer ' Monday'."""
    if metric == "p_answer" and answer:
        return f"p({answer!r})"
    if metric in ("rank", "logit_diff") and answer:
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
