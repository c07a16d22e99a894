"""A mechanistic claim's verdict, and the intervals over pairs that can judge it.

A claim's number is an aggregate over a handful of pairs: recovery is computed from the pairs'
mean patched, clean and corrupted metrics. The bootstrap (seqprobe.records.intervals) resamples
the pairs, recomputes the claim's number on each resample with the same means, and gives the
central share as the interval. The patched run of every resample is the one already computed:
each pair's metric does not depend on the other pairs, so nothing is rerun.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from jaxtyping import Float
from numpy.typing import NDArray
from torch import Tensor

from seqprobe.records.intervals import Interval, bootstrap_interval
from seqprobe.vocabulary.heads import format_head, format_layer

if TYPE_CHECKING:
    from seqprobe.engine.patching import SweepResult

__all__ = [
    "ClaimVerdict",
    "IntervalAt",
    "Levels",
    "judged",
    "mean_interval",
    "missing_head",
    "only_column",
    "rank_interval",
    "rank_verdict",
    "recovery_interval",
    "sweep_interval",
]

Reduce = Callable[[NDArray[np.float64]], NDArray[np.float64]]
# A claim's interval at a given level, computed on demand: a claim judged at another confidence
# than the run's level needs both.
IntervalAt = Callable[[float], Interval]


@dataclass(frozen=True)
class ClaimVerdict:
    text: str
    # Baseline metric name, e.g. "recovery:resid_pre@substituted[0..0.5]".
    metric: str
    value: float
    threshold: float
    passed: bool
    # Why, in numbers: the worst layer, the rank reached, the layer the lens got there.
    detail: str
    lower_is_better: bool = False
    # The value's interval over pairs at the run's level; None for views without per-pair values.
    interval: Interval | None = None

    def to_json(self) -> dict[str, Any]:
        interval = self.interval.as_pair() if self.interval is not None else None
        return {
            "text": self.text,
            "value": self.value,
            "threshold": self.threshold,
            "passed": self.passed,
            "interval": interval,
        }


@dataclass(frozen=True)
class Levels:
    """The run's level for recorded intervals, and a claim's confidence when a bound judges it."""

    report: float
    confidence: float | None


def judged(
    *,
    text: str,
    metric: str,
    value: float,
    threshold: float,
    detail: str,
    interval: IntervalAt | None,
    levels: Levels,
    lower_is_better: bool = False,
) -> ClaimVerdict:
    """The verdict on one claim's number: `detail` says why, in numbers; the interval's words follow it."""
    passed, recorded, words = _judge(value, threshold, interval, levels, lower_is_better=lower_is_better)
    return ClaimVerdict(
        text=text,
        metric=metric,
        value=value,
        threshold=threshold,
        passed=passed,
        detail=detail + words,
        lower_is_better=lower_is_better,
        interval=recorded,
    )


def _judge(
    value: float,
    threshold: float,
    interval: IntervalAt | None,
    levels: Levels,
    *,
    lower_is_better: bool = False,
) -> tuple[bool, Interval | None, str]:
    """(passed, the interval to record, words for the claim's detail) for one claim's number.

    Without a confidence the point estimate decides. With one, the interval's bound on the bad
    side (a recovery's lower bound, a rank's upper bound) at that level must clear the bar. A
    number without per-pair values (`interval` None) is judged by its point estimate.
    """
    if interval is None:
        passed = value <= threshold if lower_is_better else value >= threshold
        note = (
            ""
            if levels.confidence is None
            else "; no interval (an estimate without per-pair values): judged by the point"
        )
        return passed, None, note
    recorded = interval(levels.report)
    words = f"; {recorded.level:.0%} interval [{recorded.low:.3f}, {recorded.high:.3f}] over {recorded.n} pair(s)"
    if levels.confidence is None:
        passed = value <= threshold if lower_is_better else value >= threshold
        return passed, recorded, words
    judged = recorded if levels.confidence == levels.report else interval(levels.confidence)
    bound, side = (judged.high, "upper") if lower_is_better else (judged.low, "lower")
    passed = bound <= threshold if lower_is_better else bound >= threshold
    relation = ("≤" if passed else ">") if lower_is_better else ("≥" if passed else "<")
    words += (
        f"; judged at {levels.confidence:.0%} confidence: {side} bound {bound:.3f} of "
        f"[{judged.low:.3f}, {judged.high:.3f}] {relation} {threshold:g}"
    )
    return passed, recorded, words


def only_column(values: NDArray[np.float64]) -> NDArray[np.float64]:
    """The `reduce` of a claim on one cell: [resample 1] -> [resample]."""
    return values[:, 0]


def _recoveries(means: NDArray[np.float64]) -> NDArray[np.float64]:
    """[resample cell+2] column means (patched cells, clean, corrupted) -> [resample cell] recoveries."""
    clean, corrupted = means[:, -2:-1], means[:, -1:]
    return (means[:, :-2] - corrupted) / (clean - corrupted)


def _columns(
    patched: Float[Tensor, "pair cell"], clean: Float[Tensor, " pair"], corrupted: Float[Tensor, " pair"]
) -> NDArray[np.float64]:
    return torch.cat([patched, clean[:, None], corrupted[:, None]], dim=1).double().numpy()  # [pair cell+2]


def recovery_interval(
    patched: Float[Tensor, "pair cell"],
    clean: Float[Tensor, " pair"],
    corrupted: Float[Tensor, " pair"],
    *,
    reduce: Reduce,
    level: float,
) -> Interval:
    """The interval of `reduce` (e.g. the lowest over a layer range) of the cells' recoveries."""

    def statistic(means: NDArray[np.float64]) -> NDArray[np.float64]:
        return reduce(_recoveries(means))

    return bootstrap_interval(_columns(patched, clean, corrupted), statistic, level=level)


def rank_interval(
    patched: Float[Tensor, "pair cell"],
    clean: Float[Tensor, " pair"],
    corrupted: Float[Tensor, " pair"],
    *,
    cell: int,
    level: float,
) -> Interval:
    """The interval of one cell's rank by recovery among all cells (1 = the highest; ties count against it)."""

    def rank(recoveries: NDArray[np.float64]) -> NDArray[np.float64]:  # [resample cell] -> [resample]
        return (recoveries >= recoveries[:, cell : cell + 1]).sum(axis=1).astype(np.float64)

    return recovery_interval(patched, clean, corrupted, reduce=rank, level=level)


def mean_interval(
    pairs: Tensor | None, select: Callable[[Tensor], Tensor], *, reduce: Callable[[Any], Any]
) -> IntervalAt | None:
    """The bootstrap interval of `reduce` of the pairs' means of `select(pairs)` ([pair k]); None without pairs."""
    if pairs is None:
        return None
    values = select(pairs).reshape(pairs.shape[0], -1).double().numpy()  # [pair k]
    return lambda level: bootstrap_interval(values, reduce, level=level)


def sweep_interval(
    sweep: SweepResult, compute: Callable[[Float[Tensor, "pair layer column"], float], Interval]
) -> IntervalAt | None:
    """`compute(patched, level)` for an exact sweep; None for an estimate, which has no per-pair values."""
    if sweep.pair_metric is None:
        return None
    patched = sweep.pair_metric.permute(2, 0, 1)  # [layer column pair] -> [pair layer column]
    return lambda level: compute(patched, level)


def _head_label(layer: int, column: int, sweep: SweepResult) -> str:
    """ "L5H3", or "L5KV1" on a grid of key/value heads: the row's layer joined to the column's name."""
    return format_layer(layer) + sweep.labels[column]


def rank_verdict(
    sweep: SweepResult, layer: int, column: int, *, top_k: int, text: str, metric: str, levels: Levels
) -> ClaimVerdict:
    """The verdict on "cell (layer, column) is among the `top_k` of `sweep` by recovery"; cells not computed (NaN) rank last."""
    missing = missing_head(text, sweep.site, sweep.recovery.shape, sweep.labels, layer, column)
    if missing is not None:
        return replace(missing, metric=metric, threshold=float(top_k), lower_is_better=True)
    # Ranked by recovery itself: a head that pushes towards the distractor does not compute the answer.
    values = sweep.recovery.flatten().nan_to_num(nan=-math.inf)
    order = values.argsort(descending=True, stable=True)
    cell = layer * sweep.recovery.shape[1] + column
    rank = int((order == cell).nonzero()[0]) + 1
    leaders = ", ".join(
        f"{_head_label(int(i) // sweep.recovery.shape[1], int(i) % sweep.recovery.shape[1], sweep)} {float(values[i]):.3f}"
        for i in order[:top_k]
    )
    interval = sweep_interval(
        sweep,
        lambda patched, level: rank_interval(
            patched.flatten(1), sweep.clean_pairs, sweep.corrupted_pairs, cell=cell, level=level
        ),
    )
    return judged(
        interval=interval,
        levels=levels,
        text=text,
        metric=metric,
        value=float(rank),
        threshold=float(top_k),
        detail=f"rank {rank} (recovery {sweep.at(layer, column):.3f}); top {top_k}: {leaders}",
        lower_is_better=True,
    )


def missing_head(
    text: str, site: str, shape: Sequence[int], labels: Sequence[str], layer: int, head: int
) -> ClaimVerdict | None:
    """A failed verdict when the model has no such head: a claim about it cannot hold here."""
    n_layers, n_columns = shape
    if 0 <= layer < n_layers and 0 <= head < n_columns:
        return None
    return ClaimVerdict(
        text=text,
        metric="",
        value=math.nan,
        threshold=math.nan,
        passed=False,
        detail=f"this model has no {format_head(layer, head)}: the {site} grid has layers 0..{n_layers - 1} and columns {', '.join(labels)}",
    )
