"""The study's pictures as interactive plotly figures: the HTML report's counterpart of the PNGs.

Each `FigureSpec` (the contract is in `seqprobe.records.plots`) becomes the plain JSON that
plotly.js's `Plotly.newPlot(element, data, layout)` draws, built here as dicts rather than through
plotly's Python graph objects: validating those trace by trace would cost more than drawing the
PNGs does, and the page only needs the JSON. The report embeds plotly.js itself, once.

The pictures read as the PNGs do: RdBu centred at 0 (blue positive, red negative, white zero),
attention probabilities on its blue half, unmeasured (NaN) cells grey, heatmap rows top to bottom
as in the grid. Hovering names what a point or cell is: a heatmap cell its row label (layer), its
column label (position with its token, or head) and its value; an attention cell the head, both
tokens and the probability; a scatter point its head.

Every piece of text reaches plotly escaped: plotly reads labels as a small HTML dialect (`<b>`,
`<br>`, entities) and text between two `$` as LaTeX, and tokens like "<bos>" or "$5" must show as
they are.
"""

from __future__ import annotations

import html
import json
import math
import textwrap
from collections.abc import Sequence
from typing import Any

from seqprobe.records.figure_specs import AttentionSpec, FigureSpec, HeatmapSpec, LineSpec, ScatterSpec
from seqprobe.records.formatting import format_value, format_with_interval
from seqprobe.records.plots import LABEL_MERGE_DISTANCE, MAX_TICK_LABELS, SCATTER_LABELS

__all__ = ["figure_json", "plotly_js", "script_json"]

# The line and point colour of the PNGs: RdBu's dark blue.
BLUE = "#2166ac"
# Where no value was measured the plot's background shows through: matplotlib's "0.8" grey.
NAN_GREY = "#cccccc"
# Characters per title line; an HTML figure is as wide as the page, wider than the narrowest PNG.
TITLE_WIDTH = 100
# Space between attention subplots, as a fraction of the figure.
SUBPLOT_GAP = 0.08
# Pixels per side of a scatter's square plot area.
SCATTER_SIDE = 500
# Pixels per attention subplot side and per heatmap row, within these bounds.
ATTENTION_SIDE = (260, 520)
HEATMAP_HEIGHT = (340, 900)


def figure_json(spec: FigureSpec) -> dict[str, Any]:
    """`spec` as plotly.js draws it: {"data": [traces], "layout": {...}}, strict JSON (no NaN)."""
    draw = {"heatmap": _heatmap, "line": _line, "scatter": _scatter, "attention": _attention}[spec.kind]
    return draw(spec)


def script_json(value: Any) -> str:
    """JSON safe inside <script>: no "<" can close the element, whatever a token holds."""
    text = json.dumps(value, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def plotly_js() -> str:
    """plotly.js as shipped inside the plotly package: the page fetches nothing."""
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


def _heatmap(spec: HeatmapSpec) -> dict[str, Any]:
    finite = [abs(v) for row in spec.values for v in row if math.isfinite(v)]
    limit = max(finite, default=0.0) or 1.0
    value_name = spec.colorbar_label or "value"
    hover = [
        [
            _hover(f"{spec.y_label}: {row_label}", f"{spec.x_label}: {col_label}", f"{value_name}: {format_value(v)}")
            for col_label, v in zip(spec.col_labels, row, strict=True)
        ]
        for row_label, row in zip(spec.row_labels, spec.values, strict=True)
    ]
    trace = {
        "type": "heatmap",
        "z": [_finite(row) for row in spec.values],
        "x": list(range(len(spec.col_labels))),
        "y": list(range(len(spec.row_labels))),
        "text": hover,
        "hovertemplate": "%{text}<extra></extra>",
        "hoverongaps": False,
        "colorscale": _colorscale(),
        "zmin": -limit,
        "zmax": limit,
        "colorbar": {"title": {"text": _text(spec.colorbar_label)}},
    }
    height = _clamp(220 + 24 * len(spec.row_labels), *HEATMAP_HEIGHT)
    layout = _layout(spec.title, height=height, background=NAN_GREY)
    layout["xaxis"] = _label_axis(spec.col_labels, spec.x_label)
    layout["yaxis"] = _label_axis(spec.row_labels, spec.y_label) | {"autorange": "reversed"}
    return {"data": [trace], "layout": layout}


def _line(spec: LineSpec) -> dict[str, Any]:
    bounds = list(zip(spec.low, spec.high, strict=True)) if spec.has_intervals else [None] * len(spec.values)
    trace: dict[str, Any] = {
        "type": "scatter",
        "mode": "lines+markers",
        "x": list(range(len(spec.x_labels))),
        "y": _finite(spec.values),
        "text": [
            _hover(f"{spec.x_label}: {label}", f"{spec.y_label}: {format_with_interval(v, pair)}")
            for label, v, pair in zip(spec.x_labels, spec.values, bounds, strict=True)
        ],
        "hovertemplate": "%{text}<extra></extra>",
        "line": {"color": BLUE},
        "marker": {"size": 6, "color": BLUE},
    }
    if spec.has_intervals:
        above = [hi - v for v, hi in zip(spec.values, spec.high, strict=True)]
        below = [v - lo for v, lo in zip(spec.values, spec.low, strict=True)]
        trace["error_y"] = {
            "type": "data",
            "symmetric": False,
            "array": _finite(above),
            "arrayminus": _finite(below),
            "color": BLUE,
            "thickness": 1,
            "width": 3,
        }
    layout = _layout(spec.title, height=420)
    layout["xaxis"] = _label_axis(spec.x_labels, spec.x_label) | {"showgrid": True}
    layout["yaxis"] = {"title": {"text": _text(spec.y_label)}, "zeroline": True, "zerolinecolor": "#999999"}
    return {"data": [trace], "layout": layout}


def _scatter(spec: ScatterSpec) -> dict[str, Any]:
    finite = [abs(v) for v in (*spec.x, *spec.y) if math.isfinite(v)]
    limit = 1.1 * max(finite, default=1.0) or 1.0
    groups = _label_groups(spec, near=LABEL_MERGE_DISTANCE * limit)
    points = {
        "type": "scatter",
        "mode": "markers",
        "x": _finite(spec.x),
        "y": _finite(spec.y),
        "text": [
            _hover(label, f"{spec.x_label}: {format_value(x)}", f"{spec.y_label}: {format_value(y)}")
            for label, x, y in zip(spec.point_labels, spec.x, spec.y, strict=True)
        ],
        "hovertemplate": "%{text}<extra></extra>",
        "marker": {"size": 8, "color": BLUE, "opacity": 0.8},
        "showlegend": False,
    }
    labels = {
        "type": "scatter",
        "mode": "text",
        "x": [spec.x[min(group)] for group in groups],
        "y": [spec.y[min(group)] for group in groups],
        "text": [_text(", ".join(spec.point_labels[i] for i in sorted(group))) for group in groups],
        "textposition": "top right",
        "textfont": {"size": 10},
        "cliponaxis": False,
        "hoverinfo": "skip",
        "showlegend": False,
    }
    diagonal = {
        "type": "scatter",
        "mode": "lines",
        "x": [-limit, limit],
        "y": [-limit, limit],
        "name": "y = x",
        "line": {"color": "#808080", "dash": "dash", "width": 1},
        "hoverinfo": "skip",
    }
    layout = _layout(spec.title, height=0)
    # A square plot area, as the PNG's equal axes: the page gets a figure that size, not the page's width.
    margin = layout["margin"]
    layout |= {"height": SCATTER_SIDE + margin["t"] + margin["b"], "width": SCATTER_SIDE + margin["l"] + margin["r"]}
    axis = {"range": [-limit, limit], "zeroline": True, "zerolinecolor": "#999999"}
    layout["xaxis"] = axis | {"title": {"text": _text(spec.x_label)}}
    layout["yaxis"] = axis | {"title": {"text": _text(spec.y_label)}}
    layout["legend"] = {"x": 0.01, "y": 0.99}
    return {"data": [diagonal, points, labels], "layout": layout}


def _attention(spec: AttentionSpec) -> dict[str, Any]:
    n_heads, tokens = len(spec.heads), spec.tokens
    ncols = min(max(n_heads, 1), 3)
    nrows = math.ceil(n_heads / ncols) or 1
    side = _clamp(140 + 24 * len(tokens), *ATTENTION_SIDE)
    layout = _layout(spec.title, height=nrows * side + 120, background=NAN_GREY)
    layout["coloraxis"] = {
        # Probabilities are ≥ 0: the blue half of the scale centred at 0 with limit 1, as in the PNGs.
        "colorscale": _colorscale(half=True),
        "cmin": 0.0,
        "cmax": 1.0,
        "colorbar": {"title": {"text": "attention probability"}},
    }
    layout["annotations"] = []
    traces = []
    for i, head in enumerate(spec.heads):
        suffix = "" if i == 0 else str(i + 1)
        row, col = divmod(i, ncols)
        x_domain = _domain(col, ncols)
        y_domain = _domain(nrows - 1 - row, nrows)
        traces.append(
            {
                "type": "heatmap",
                "z": [_finite(pattern_row) for pattern_row in head.pattern],  # query × key
                "x": list(range(len(tokens))),
                "y": list(range(len(tokens))),
                "xaxis": f"x{suffix}",
                "yaxis": f"y{suffix}",
                "coloraxis": "coloraxis",
                "text": [
                    [
                        _hover(head.label, f"Query: {query!r} ({q})", f"Key: {key!r} ({k})", f"p = {format_value(p)}")
                        for k, (key, p) in enumerate(zip(tokens, pattern_row, strict=True))
                    ]
                    for q, (query, pattern_row) in enumerate(zip(tokens, head.pattern, strict=True))
                ],
                "hovertemplate": "%{text}<extra></extra>",
                "hoverongaps": False,
            }
        )
        # Square cells, as the PNG's: each subplot shrinks inside its share of the figure.
        layout[f"xaxis{suffix}"] = _label_axis(tokens, "Key (attended to)") | {
            "domain": x_domain,
            "anchor": f"y{suffix}",
            "constrain": "domain",
        }
        layout[f"yaxis{suffix}"] = _label_axis(tokens, "Query (attending)") | {
            "domain": y_domain,
            "anchor": f"x{suffix}",
            "autorange": "reversed",
            "scaleanchor": f"x{suffix}",
            "constrain": "domain",
        }
        layout["annotations"].append(
            {
                "text": _text(head.label),
                "x": sum(x_domain) / 2,
                "y": y_domain[1],
                "xref": "paper",
                "yref": "paper",
                "xanchor": "center",
                "yanchor": "bottom",
                "showarrow": False,
            }
        )
    return {"data": traces, "layout": layout}


def _label_groups(spec: ScatterSpec, *, near: float) -> list[list[int]]:
    """The heads furthest from the origin, those (nearly) coinciding sharing one label, as in the PNG.

    On grouped-query models the query heads of one key/value head often land on one spot.
    """
    points = [i for i in range(len(spec.x)) if math.isfinite(math.hypot(spec.x[i], spec.y[i]))]
    furthest = sorted(points, key=lambda i: -math.hypot(spec.x[i], spec.y[i]))[:SCATTER_LABELS]
    groups: list[list[int]] = []
    for i in furthest:
        here = (spec.x[i], spec.y[i])
        group = next((g for g in groups if math.dist((spec.x[g[0]], spec.y[g[0]]), here) < near), None)
        if group is None:
            groups.append([i])
        else:
            group.append(i)
    return groups


def _layout(title: str, *, height: int, background: str = "white") -> dict[str, Any]:
    lines = textwrap.wrap(title, width=TITLE_WIDTH) or [""]
    return {
        "title": {"text": "<br>".join(_text(line) for line in lines), "x": 0.02, "xanchor": "left"},
        "height": height,
        "margin": {"t": 40 + 20 * len(lines), "l": 70, "r": 30, "b": 60},
        "plot_bgcolor": background,
        "paper_bgcolor": "white",
        "hovermode": "closest",
        "font": {"size": 12},
    }


def _label_axis(labels: Sequence[str], title: str) -> dict[str, Any]:
    """An axis over positions 0..n-1 named by `labels`: two equal labels stay two columns."""
    step = math.ceil(len(labels) / MAX_TICK_LABELS) or 1
    positions = list(range(0, len(labels), step))
    return {
        "title": {"text": _text(title)},
        "tickmode": "array",
        "tickvals": positions,
        "ticktext": [_text(labels[i]) for i in positions],
        "showgrid": False,
        "zeroline": False,
        "automargin": True,
    }


def _domain(index: int, count: int) -> list[float]:
    gap = SUBPLOT_GAP if count > 1 else 0.0
    return [index / count + gap / 2, (index + 1) / count - gap / 2]


def _colorscale(*, half: bool = False) -> list[list[Any]]:
    """plotly's RdBu (ColorBrewer: red low, white middle, blue high), the study's scale; `half`: white to blue."""
    from plotly.colors import diverging

    colors = diverging.RdBu[len(diverging.RdBu) // 2 :] if half else diverging.RdBu
    return [[i / (len(colors) - 1), color] for i, color in enumerate(colors)]


def _hover(*lines: str) -> str:
    return "<br>".join(_text(line) for line in lines if line)


def _text(text: str) -> str:
    """Text as plotly shows it literally: tags and entities escaped, "$" never starting LaTeX."""
    return html.escape(text, quote=False).replace("$", "&#36;").replace("\n", "\\n").replace("\r", "\\r")


def _finite(values: Sequence[float]) -> list[float | None]:
    """NaN (not measured) and ±inf as null: plotly leaves the cell or point out."""
    return [v if math.isfinite(v) else None for v in values]


def _clamp(value: int, low: int, high: int) -> int:
    return min(max(value, low), high)
