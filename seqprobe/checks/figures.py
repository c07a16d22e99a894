"""The pictures of a patching case's report: what is drawn from its evidence, and how it is labelled.

Each picture answers one question of the study, on the same metric as the claims:

- one heatmap per patching site: where the clean−corrupted difference lives (recovery by layer and
  position, or by layer and head);
- the residual stream's recovery at the substituted token by layer, with each layer's interval
  over pairs as error bars: how sure the handful of pairs makes the curve;
- the logit lens: from which layer the residual stream already names the answer over the distractor;
- direct logit attribution by component and by head: who writes the final logit difference (these
  two read one answer logit, so they are drawn for one-token answers and distractors only);
- z against v and against pattern patching, per head: whether a head moves what it reads (near
  y = x) or changes where it looks;
- the attention patterns of the heads whose output recovers most.

Figures are specifications (seqprobe.records.plots), drawn to PNG when the report is written.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from jaxtyping import Float
from torch import Tensor

from seqprobe.checks.judging import only_column, recovery_interval
from seqprobe.engine.patching import SweepResult, head_columns
from seqprobe.records.figure_specs import AttentionHead, AttentionSpec, HeatmapSpec, LineSpec, ScatterSpec
from seqprobe.records.intervals import DEFAULT_LEVEL
from seqprobe.vocabulary.heads import format_head, format_layer
from seqprobe.vocabulary.sites import POSITION_SITES

if TYPE_CHECKING:
    from seqprobe.checks.evidence import Evidence

__all__ = ["TOP_HEADS_SHOWN", "figures", "layer_labels", "rows"]

# Attention patterns drawn: the heads whose z patching recovers most; more than a few no longer fit a page.
TOP_HEADS_SHOWN = 3


def figures(evidence: Evidence, *, n_pairs: int, level: float = DEFAULT_LEVEL) -> list[dict[str, Any]]:
    """The study's pictures as JSON specs; needs evidence gathered with `everything=True`."""
    sweeps, runs = evidence.sweeps, evidence.runs
    specs: list[Any] = []
    for site, sweep in sweeps.items():
        position = site in POSITION_SITES
        specs.append(
            HeatmapSpec(
                name=site,
                title=f"{site} patching: recovery by layer and {'position' if position else 'head'} ({n_pairs} pairs)",
                values=rows(sweep.recovery),
                row_labels=layer_labels(sweep.recovery.shape[0]),
                col_labels=sweep.labels,
                x_label="Position" if position else "Head",
                y_label="Layer",
                colorbar_label="recovery",
            )
        )
    specs.append(_substituted_by_layer(sweeps["resid_pre"], level))
    specs += _linear_views(evidence)
    z = sweeps["z"].recovery
    head_labels = tuple(format_head(layer, head) for layer in range(z.shape[0]) for head in range(z.shape[1]))
    for other, meaning in (("v", "value"), ("pattern", "attention pattern")):
        specs.append(
            ScatterSpec(
                name=f"z_vs_{other}",
                title=f"Head output vs {meaning} patching (near y = x: the head moves the information it reads)",
                x=tuple(float(v) for v in _per_query_head(sweeps[other].recovery, z.shape[1]).flatten()),
                y=tuple(float(v) for v in z.flatten()),
                point_labels=head_labels,
                x_label=f"{other} patching recovery",
                y_label="head output (z) patching recovery",
            )
        )
    top = z.flatten().argsort(descending=True)[:TOP_HEADS_SHOWN]
    tokens = tuple(runs.bridge.to_str_tokens(runs.pairs[0].clean))
    specs.append(
        AttentionSpec(
            name="top_heads",
            title=f"Attention patterns of the top {TOP_HEADS_SHOWN} heads by z recovery (first clean prompt)",
            heads=tuple(
                AttentionHead(
                    label=head_labels[int(i)],
                    pattern=rows(runs.clean["pattern", int(i) // z.shape[1]][0, int(i) % z.shape[1]]),
                )
                for i in top
            ),
            tokens=tokens,
        )
    )
    return [spec.to_json() for spec in specs]


def _linear_views(evidence: Evidence) -> list[Any]:
    """The logit lens and direct logit attribution, when the evidence has them (one-token pairs)."""
    if evidence.lens is None or evidence.attribution is None:
        return []
    lens, attribution = evidence.lens.logit_diff, evidence.attribution
    specs: list[Any] = [
        LineSpec(
            name="logit_lens",
            title="Logit lens: logit(answer) − logit(distractor) from the residual stream",
            x_labels=(*layer_labels(len(lens) - 1), "final"),
            values=tuple(float(v) for v in lens),
            x_label="Residual stream entering layer",
            y_label="logit difference",
        )
    ]
    specs.append(
        LineSpec(
            name="dla_components",
            title="Direct logit attribution by component",
            x_labels=attribution.labels,
            values=tuple(float(v) for v in attribution.by_component),
            x_label="Component",
            y_label="logit difference",
        )
    )
    specs.append(
        HeatmapSpec(
            name="dla_heads",
            title="Direct logit attribution by head",
            values=rows(attribution.by_head),
            row_labels=layer_labels(attribution.by_head.shape[0]),
            col_labels=head_columns(attribution.by_head.shape[1]),
            x_label="Head",
            y_label="Layer",
            colorbar_label="logit difference",
        )
    )
    return specs


def _substituted_by_layer(sweep: SweepResult, level: float) -> LineSpec:
    """resid_pre recovery at the substituted token, per layer, with its bootstrap interval over pairs."""
    column = sweep.column("substituted")
    assert sweep.pair_metric is not None and sweep.clean_pairs is not None and sweep.corrupted_pairs is not None
    patched = sweep.pair_metric[:, column].T  # [layer pair] -> [pair layer]
    intervals = [
        recovery_interval(
            patched[:, layer : layer + 1],
            sweep.clean_pairs,
            sweep.corrupted_pairs,
            reduce=only_column,
            level=level,
        )
        for layer in range(patched.shape[1])
    ]
    return LineSpec(
        name="resid_pre_substituted",
        title=f"Residual stream at the substituted token ({sweep.labels[column]}): recovery by layer, "
        f"{level:.0%} interval over {patched.shape[0]} pair(s)",
        x_labels=layer_labels(patched.shape[1]),
        values=tuple(float(v) for v in sweep.recovery[:, column]),
        low=tuple(i.low for i in intervals),
        high=tuple(i.high for i in intervals),
        x_label="Layer",
        y_label="recovery",
    )


def layer_labels(n_layers: int) -> tuple[str, ...]:
    return tuple(format_layer(layer) for layer in range(n_layers))


def _per_query_head(grid: Float[Tensor, "layer column"], n_heads: int) -> Float[Tensor, "layer head"]:
    """A key/value-head grid spread to query heads (each reads its group's values), for scatters."""
    group = n_heads // grid.shape[1]
    return grid.repeat_interleave(group, dim=1)  # [layer n_heads]


def rows(grid: Float[Tensor, "row column"]) -> tuple[tuple[float, ...], ...]:
    return tuple(tuple(float(v) for v in row) for row in grid.detach().float().cpu())
