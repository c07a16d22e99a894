"""The study's pictures as PNG files, drawn from the figure specs of `seqprobe.records.figure_specs`.

A case that runs a patching or attribution experiment puts its grids in
`CaseResult.details["figures"]` as a list of JSON dicts, one per picture. Each dict is the
`to_json()` of one `FigureSpec` subclass, told apart by its "kind":

- "heatmap" (`HeatmapSpec`): a rows × cols grid of signed values, e.g. patching recovery per
  layer × position (column labels like "Sunday_4") or per layer × head, or per-head direct
  attribution.
- "line" (`LineSpec`): one value per x label, e.g. the logit lens (logit difference read from the
  accumulated residual stream after each layer) or per-layer direct attribution; optional `low`
  and `high` bounds per value (an interval over pairs) are drawn as error bars.
- "scatter" (`ScatterSpec`): one point per head, e.g. output (z) patching against value patching,
  or against pattern patching. A head whose output effect matches its value effect *moves*
  information; one whose effect matches its pattern effect decides *where to attend*. The
  diagonal y = x is drawn to make that reading direct, and the heads furthest from the origin
  are labelled.
- "attention" (`AttentionSpec`): the attention patterns (query × key) of a few heads over the
  prompt's tokens.

Every colour scale is RdBu centred at 0, as in the study: blue is positive, red negative, white
zero; attention probabilities therefore run from white to blue. Producers build the dataclasses
(`HeatmapSpec(name=..., title=..., ...).to_json()`) or the equivalent dicts; `FigureSpec.from_json`
validates a dict and says which field is wrong. A value that was not measured is NaN in a spec,
`null` in its JSON, and is drawn grey (or not at all, in a line or scatter).

`report_figures(results)` parses every figure of a run and names its PNG before anything is
drawn, so a bad spec writes nothing; both reports use it. matplotlib is imported inside
`render_figure` and drawn on the Agg canvas directly (no pyplot, no display, no global figure
registry), so importing this module stays cheap for the pytest plugin.
"""

from __future__ import annotations

import math
import re
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from seqprobe.records.atomic import atomic_open
from seqprobe.records.figure_specs import AttentionSpec, FigureSpec, HeatmapSpec, LineSpec, ScatterSpec

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from seqprobe.records.results import CaseResult, RunResults

__all__ = ["figure_filename", "render_figure", "report_figures"]

# The study's diverging scale (plotly "RdBu", centred with color_continuous_midpoint=0).
COLORMAP = "RdBu"
# Beyond this many tick labels on an axis, show every n-th so they stay legible.
MAX_TICK_LABELS = 40
# Scatter plots name this many heads, the furthest from the origin; the rest would overlap.
SCATTER_LABELS = 8
# Labelled points closer than this fraction of the axis range get one label between them.
LABEL_MERGE_DISTANCE = 0.03
# Characters per title line: what the narrowest figure (6.5 in) fits at matplotlib's default size.
TITLE_WIDTH = 60


def figure_filename(case_id: str, name: str) -> str:
    """The PNG file name for figure `name` of `case_id`: readable, stable, safe in any URL.

    ("cases/days.yaml::successor::sunday", "resid_pre")
    -> "cases_days.yaml_successor_sunday__resid_pre.png"
    """
    return f"{_slug(case_id)}__{_slug(name)}.png"


def report_figures(results: RunResults) -> list[tuple[CaseResult, FigureSpec, str]]:
    """Every figure of the run, parsed before any file is written so a bad spec writes nothing."""
    figures: list[tuple[CaseResult, FigureSpec, str]] = []
    owners: dict[str, tuple[str, str]] = {}
    for case in results.cases:
        for data in case.details.get("figures", ()):
            try:
                spec = FigureSpec.from_json(data)
            except (ValueError, TypeError, KeyError) as error:
                raise ValueError(f"case {case.case_id}: details['figures']: {error}") from error
            filename = figure_filename(case.case_id, spec.name)
            if filename in owners:
                raise ValueError(
                    f"case {case.case_id}: figure {spec.name!r} would be written to {filename}, "
                    f"as is figure {owners[filename][1]!r} of case {owners[filename][0]}; "
                    "give each figure of a case its own name"
                )
            owners[filename] = (case.case_id, spec.name)
            figures.append((case, spec, filename))
    return figures


def render_figure(spec: FigureSpec, path: str | Path) -> None:
    """Draw `spec` and write it to `path` as a PNG, atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    draw = {
        "heatmap": _draw_heatmap,
        "line": _draw_line,
        "scatter": _draw_scatter,
        "attention": _draw_attention,
    }[spec.kind]
    figure = draw(spec)
    FigureCanvasAgg(figure)
    with atomic_open(path, binary=True) as handle:
        # No "Software" stamp: the same data gives the same bytes, so reports diff cleanly.
        figure.savefig(handle, format="png", dpi=100, metadata={"Software": None})


def _draw_heatmap(spec: HeatmapSpec) -> Figure:
    import numpy as np
    from matplotlib.figure import Figure

    values = np.array(spec.values, dtype=float).reshape(len(spec.row_labels), len(spec.col_labels))
    rows, cols = values.shape
    size = (_clamp(2.5 + 0.45 * cols, 5, 16), _clamp(1.8 + 0.3 * rows, 3.5, 14))
    figure = Figure(figsize=size, layout="constrained")
    axes = figure.add_subplot()
    image = axes.imshow(values, aspect="auto", interpolation="nearest", **_diverging(values))
    _ticks(axes, "x", spec.col_labels, rotate=True)
    _ticks(axes, "y", spec.row_labels)
    _labels(axes, spec.title, spec.x_label, spec.y_label)
    figure.colorbar(image, ax=axes, label=_text(spec.colorbar_label))
    return figure


def _draw_line(spec: LineSpec) -> Figure:
    from matplotlib.figure import Figure

    width = _clamp(2.5 + 0.25 * len(spec.values), 6, 16)
    figure = Figure(figsize=(width, 4.5), layout="constrained")
    axes = figure.add_subplot()
    axes.axhline(0.0, color="0.6", linewidth=0.8)
    positions = range(len(spec.values))
    axes.plot(positions, spec.values, marker="o", markersize=3, color="#2166ac")
    if spec.has_intervals:
        below = [v - lo if math.isfinite(v - lo) else 0.0 for v, lo in zip(spec.values, spec.low, strict=True)]
        above = [hi - v if math.isfinite(hi - v) else 0.0 for v, hi in zip(spec.values, spec.high, strict=True)]
        axes.errorbar(positions, spec.values, yerr=[below, above], fmt="none", ecolor="#2166ac", alpha=0.6, capsize=2)
    axes.grid(True, alpha=0.3)
    _ticks(axes, "x", spec.x_labels, rotate=True)
    _labels(axes, spec.title, spec.x_label, spec.y_label)
    return figure


def _draw_scatter(spec: ScatterSpec) -> Figure:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.5, 6), layout="constrained")
    axes = figure.add_subplot()
    finite = [abs(v) for v in (*spec.x, *spec.y) if math.isfinite(v)]
    limit = 1.1 * max(finite, default=1.0) or 1.0
    axes.axhline(0.0, color="0.6", linewidth=0.8)
    axes.axvline(0.0, color="0.6", linewidth=0.8)
    diagonal = [-limit, limit]
    axes.plot(diagonal, diagonal, linestyle="--", color="0.5", linewidth=0.8, label="y = x")
    axes.scatter(spec.x, spec.y, s=18, color="#2166ac", alpha=0.8)
    points = [i for i in range(len(spec.x)) if math.isfinite(math.hypot(spec.x[i], spec.y[i]))]
    furthest = sorted(points, key=lambda i: -math.hypot(spec.x[i], spec.y[i]))[:SCATTER_LABELS]
    # Points that (nearly) coincide share one label: on grouped-query models the query heads of one
    # key/value head have the same value-patching recovery, and often the same output recovery too.
    near = LABEL_MERGE_DISTANCE * limit
    groups: list[list[int]] = []
    for i in furthest:
        group = next((g for g in groups if math.dist(_xy(spec, g[0]), _xy(spec, i)) < near), None)
        if group is None:
            groups.append([i])
        else:
            group.append(i)
    for members in groups:
        i = min(members)
        axes.annotate(
            ", ".join(_text(spec.point_labels[m]) for m in sorted(members)),
            (spec.x[i], spec.y[i]),
            xytext=(4, 4),
            textcoords="offset points",
            fontsize=8,
        )
    axes.set_xlim(-limit, limit)
    axes.set_ylim(-limit, limit)
    axes.set_aspect("equal")
    axes.legend(loc="upper left", fontsize=8)
    axes.grid(True, alpha=0.3)
    _labels(axes, spec.title, spec.x_label, spec.y_label)
    return figure


def _draw_attention(spec: AttentionSpec) -> Figure:
    import numpy as np
    from matplotlib.figure import Figure

    n_heads, n_tokens = max(len(spec.heads), 1), len(spec.tokens)
    ncols = min(n_heads, 3)
    nrows = math.ceil(n_heads / ncols)
    side = _clamp(1.5 + 0.3 * n_tokens, 3.5, 8)
    figure = Figure(figsize=(side * ncols + 1.2, side * nrows + 0.6), layout="constrained")
    grid = figure.subplots(nrows, ncols, squeeze=False)
    image = None
    for axes, head in zip(grid.flat, spec.heads, strict=False):
        pattern = np.array(head.pattern, dtype=float).reshape(n_tokens, n_tokens)  # query × key
        # Probabilities are ≥ 0: centring at 0 with limit 1 shows them on the blue half of RdBu.
        image = axes.imshow(pattern, interpolation="nearest", **_diverging(pattern, limit=1.0))
        _ticks(axes, "x", spec.tokens, rotate=True)
        _ticks(axes, "y", spec.tokens)
        _labels(axes, head.label, "Key (attended to)", "Query (attending)")
    for axes in list(grid.flat)[len(spec.heads) :]:
        axes.set_axis_off()
    figure.suptitle(_text(spec.title))
    if image is not None:
        colorbar = figure.colorbar(image, ax=grid.ravel().tolist(), label="attention probability")
        colorbar.ax.set_ylim(0.0, 1.0)  # the scale stays centred at 0; only its used half is shown
    return figure


def _xy(spec: ScatterSpec, i: int) -> tuple[float, float]:
    return spec.x[i], spec.y[i]


def _diverging(values: Any, *, limit: float | None = None) -> dict[str, Any]:
    """imshow arguments for RdBu centred at 0, symmetric about the largest |value|; NaN is grey."""
    import matplotlib
    import numpy as np

    if limit is None:
        finite = np.abs(values[np.isfinite(values)])
        limit = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    cmap = matplotlib.colormaps[COLORMAP].with_extremes(bad="0.8")
    return {"cmap": cmap, "vmin": -limit, "vmax": limit}


def _ticks(axes: Axes, axis: str, labels: Sequence[str], *, rotate: bool = False) -> None:
    step = math.ceil(len(labels) / MAX_TICK_LABELS) or 1
    positions = list(range(0, len(labels), step))
    shown = [_text(labels[i]).replace("\n", "\\n") for i in positions]
    if axis == "x":
        # Short labels (H0, L3) read fine level; token labels need turning to fit.
        upright = not rotate or max((len(label) for label in shown), default=0) <= 3
        axes.set_xticks(positions, shown, rotation=0 if upright else 90, fontsize=8)
    else:
        axes.set_yticks(positions, shown, fontsize=8)


def _labels(axes: Axes, title: str, x_label: str, y_label: str) -> None:
    # Titles say how to read the plot, so they run long; wrapped, the narrowest figure shows them whole.
    axes.set_title("\n".join(textwrap.wrap(_text(title), width=TITLE_WIDTH)))
    axes.set_xlabel(_text(x_label))
    axes.set_ylabel(_text(y_label))


def _text(text: str) -> str:
    """Text as matplotlib shows it literally: a "$" in a token would start mathtext."""
    return text.replace("$", r"\$")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "_"


def _clamp(value: float, low: float, high: float) -> float:
    return min(max(value, low), high)
