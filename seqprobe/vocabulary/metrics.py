"""Metrics and the thresholds that bound them: names, direction, report headers, default tolerances.

A case measures metrics (`p_answer`, `rank`, ...); a case file bounds them with thresholds
(`min_prob`, `max_rank`, ...) and a baseline compares them within a tolerance. Per-claim metrics
carry a suffix ("recovery:resid_pre@L3") and take their family's tolerance and direction.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

__all__ = [
    "DEFAULT_TOLERANCE",
    "DEFAULT_TOLERANCES",
    "Level",
    "METRICS",
    "REPORT_COLUMNS",
    "THRESHOLD_KINDS",
    "TOLERANCE_METRICS",
    "Metric",
    "metric_family",
    "parse_tolerance",
]


@dataclass(frozen=True)
class Metric:
    name: str
    # The column a report shows it under.
    header: str
    # How far it may move against a baseline before it counts as a change (see each value's why).
    tolerance: float
    lower_is_better: bool = False


# In the order messages and baseline tables list them.
METRICS: Mapping[str, Metric] = MappingProxyType(
    {
        metric.name: metric
        for metric in (
            # Absolute probability. Another device or kernel moves it in the third decimal, half
            # precision by about a hundredth; a drop of 0.05 changes how sure the model is.
            Metric("p_answer", "p(answer)", 0.05),
            # Places in a vocabulary of tens of thousands. Near-tied neighbours swap under small
            # numeric changes; falling three or more places is a real change.
            Metric("rank", "Rank", 2, lower_is_better=True),
            # A log odds ratio: 0.5 multiplies the odds of answer over distractor by 1.65, more than
            # precision changes do and enough to flip close pairs.
            Metric("logit_diff", "Logit diff vs distractor", 0.5),
            # The answer's teacher-forced log-prob, summed over its tokens: 0.5 multiplies its
            # probability by 1.65, the scale of logit_diff. Numeric noise is per token (about 1e-3
            # on another device, 1e-2 in half precision), so even a ten-token answer stays well inside.
            Metric("logprob", "Log-prob", 0.5),
            # Answer log-prob minus the closest distractor's: a log odds ratio like logit_diff, which
            # it equals for one-token answers and distractors, so the same tolerance.
            Metric("logprob_diff", "Log-prob diff vs distractor", 0.5),
            # Fraction of the clean-vs-corrupted gap a patch restores; 0.1 is ten points, coarser
            # than numeric noise, finer than the gap between a component that matters and one
            # that does not.
            Metric("recovery", "Recovery", 0.1),
            # Share of the clean behaviour left when components are switched off (noising) or given
            # back (denoising), on the circuit scale: 0 = the whole scope ablated, 1 = the clean
            # model. The same ten points as recovery, for the same reason.
            Metric("fraction", "Fraction of clean", 0.1),
            # A circuit's faithfulness on that scale: ten points, as above.
            Metric("faithfulness", "Faithfulness", 0.1),
            # The area under a faithfulness curve, divided by its number of points (a mean
            # faithfulness): ten points, as above.
            Metric("curve_area", "Curve area", 0.1),
            # Share of a family's variants that pass; 0.1 is one or two variants of a 10-20 variant
            # family flipping, which sampling and near-threshold variants do between runs.
            Metric("pass_rate", "Pass rate", 0.1),
            # Logit margin of an invariance or direction check: same scale as logit_diff.
            Metric("margin", "Margin", 0.5),
        )
    }
)
DEFAULT_TOLERANCES: Mapping[str, float] = MappingProxyType({name: m.tolerance for name, m in METRICS.items()})
# For a metric with no default of its own; "*" in a run's overrides replaces it.
DEFAULT_TOLERANCE = 0.1
# Metrics a case file's `tolerance:` may name.
TOLERANCE_METRICS = tuple(METRICS)
# Report tables show these columns first, in this order; any other metric follows by name.
REPORT_COLUMNS = (
    "p_answer",
    "rank",
    "logit_diff",
    "logprob",
    "logprob_diff",
    "pass_rate",
    "margin",
    "recovery",
    "fraction",
    "faithfulness",
    "curve_area",
)


class Level(float):
    """The kind of an interval's level (`confidence`): a probability strictly between 0 and 1."""


# Threshold name -> what kind of value it is. Higher is better for min_*, lower for max_*; a
# `bool` is a flag that holds or not.
THRESHOLD_KINDS: Mapping[str, type] = MappingProxyType(
    {
        # p(answer); for a longer answer, of the whole continuation: exp(logprob).
        "min_prob": float,
        # Next-token bars: they need a one-token answer (min_logit_diff one-token distractors too).
        "max_rank": int,
        "min_logit_diff": float,
        # Continuations of any length: the answer's summed teacher-forced log-prob, and its lead
        # over each distractor's.
        "min_logprob": float,
        "min_logprob_diff": float,
        # Greedy decoding from the prompt gives exactly the answer's tokens.
        "greedy": bool,
        # Phrasing families and invariance checks: the share of variants that must pass.
        "min_pass_rate": float,
        # Direction checks: how far probability must move, in logits.
        "min_margin": float,
        # Judge aggregates (recovery over pairs, pass rates) by the lower bound of their interval
        # at this level instead of the point estimate (seqprobe.records.intervals).
        "confidence": Level,
    }
)


def metric_family(metric: str) -> str:
    """ "recovery:resid_pre@L3" -> "recovery": per-claim metrics share their family's defaults."""
    return metric.split(":", 1)[0]


def parse_tolerance(text: str) -> tuple[str, float]:
    """Parse a `--tolerance METRIC=VALUE` option; argparse (and pytest) show the error."""
    metric, sep, value = text.partition("=")
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not sep or not metric.strip() or not number >= 0:
        raise argparse.ArgumentTypeError(
            f"tolerance {text!r}: expected METRIC=VALUE with VALUE a number ≥ 0, e.g. p_answer=0.1 or rank=3"
        )
    return metric.strip(), number
