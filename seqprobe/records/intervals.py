"""Intervals on aggregates: how far a number measured on a handful of pairs or variants could move.

Two kinds, one per kind of aggregate:

- A *bootstrap* percentile interval for anything computed from per-item values (recovery over
  pairs, the mean margin over variants): the items are resampled with replacement `resamples`
  times from a fixed seed, the statistic is recomputed on each resample, and the interval is the
  central `level` share of those values. Seeded, so the same run gives the same interval.
- A *Wilson* score interval for a pass rate (k of n variants pass): unlike the normal
  approximation it stays inside [0, 1] and keeps its coverage near 0 and 1.

An interval always contains its point estimate: a percentile interval of a ratio can miss it
when the resampled distribution is skewed, and is then widened to it (the rule is stated in the
README). The percentile bootstrap assumes enough items to stand for their population: on 4 to 8
items its 95% intervals cover the true mean only about 80 to 90% of the time (measured in
tests/records/test_intervals.py), so an interval on a handful of pairs is a floor on the
uncertainty, not a guarantee. numpy is imported only when a bootstrap runs, so the plugin can
read the level option for free.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from dataclasses import dataclass
from statistics import NormalDist
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import ArrayLike, NDArray

    Statistic = Callable[[NDArray[np.float64]], NDArray[np.float64]]

__all__ = [
    "DEFAULT_LEVEL",
    "DEFAULT_RESAMPLES",
    "DEFAULT_SEED",
    "Interval",
    "bootstrap_interval",
    "check_level",
    "format_level",
    "parse_level",
    "wilson_interval",
]

DEFAULT_LEVEL = 0.95
# Enough that the percentiles of a 95% interval move by well under a tolerance between seeds.
DEFAULT_RESAMPLES = 2000
DEFAULT_SEED = 0


@dataclass(frozen=True)
class Interval:
    low: float
    high: float
    level: float
    # "bootstrap" or "wilson": how it was computed, for the report's footnote.
    method: str
    # How many items (pairs, variants) it rests on.
    n: int
    # A bootstrap's resamples and seed, which the report states so a reader can reproduce it; 0 and
    # None for a Wilson interval, which has neither.
    resamples: int = 0
    seed: int | None = None

    def __contains__(self, value: float) -> bool:
        return self.low <= value <= self.high

    def as_pair(self) -> list[float]:
        """`[low, high]`, the form the results JSON stores under `intervals`."""
        return [self.low, self.high]

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    @property
    def finite(self) -> bool:
        return math.isfinite(self.low) and math.isfinite(self.high)


def check_level(level: float) -> float:
    """`level` if it is a probability strictly between 0 and 1; ValueError naming it otherwise."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"an interval's level is a probability between 0 and 1 (e.g. 0.95), got {level!r}")
    return level


def parse_level(text: str) -> float:
    """Parse `--interval-level LEVEL`; argparse (and pytest, as a usage error) show the error."""
    try:
        level = float(text)
    except ValueError:
        level = math.nan
    if not 0.0 < level < 1.0:
        raise argparse.ArgumentTypeError(
            f"interval level {text!r}: expected a probability strictly between 0 and 1, e.g. 0.95 or 0.9"
        )
    return level


def format_level(level: float) -> str:
    """0.95 -> "95%", 0.975 -> "97.5%": how messages and reports name a level."""
    return f"{round(level * 100, 6):g}%"


def _mean_of_columns(means: NDArray[np.float64]) -> NDArray[np.float64]:
    return means[:, 0]


def bootstrap_interval(
    values: ArrayLike,
    statistic: Statistic | None = None,
    *,
    level: float = DEFAULT_LEVEL,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
) -> Interval:
    """The percentile bootstrap interval of `statistic` over the rows of `values` ([item] or [item column]).

    `statistic` maps the column means of each resample ([resample column]) to one number per
    resample ([resample]); without it the statistic is the mean of the single column. Recovery,
    for instance, is `(m[:, 0] - m[:, 2]) / (m[:, 1] - m[:, 2])` over columns (patched, clean,
    corrupted). Resamples whose statistic is not finite (a gap that vanished) are left out; with
    no finite resample, or a point estimate that is not finite, both bounds are NaN.
    """
    import numpy as np

    check_level(level)
    rows = np.asarray(values, dtype=np.float64)
    if rows.ndim == 1:
        rows = rows[:, None]  # [item] -> [item 1]
    if rows.ndim != 2 or rows.shape[0] == 0:
        raise ValueError(f"bootstrap_interval needs values shaped [item] or [item column], got {rows.shape}")
    compute = statistic or _mean_of_columns
    with np.errstate(divide="ignore", invalid="ignore"):
        point = float(compute(rows.mean(axis=0)[None])[0])  # [1 column] -> [1]
        n = rows.shape[0]
        picks = np.random.default_rng(seed).integers(0, n, size=(resamples, n))  # [resample item]
        estimates = compute(rows[picks].mean(axis=1))  # [resample item column] -> [resample column] -> [resample]
    finite = estimates[np.isfinite(estimates)]
    if not finite.size or not math.isfinite(point):
        return Interval(math.nan, math.nan, level, "bootstrap", n, resamples, seed)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(finite, [tail, 100 - tail])
    return Interval(min(float(low), point), max(float(high), point), level, "bootstrap", n, resamples, seed)


def wilson_interval(successes: int, trials: int, *, level: float = DEFAULT_LEVEL) -> Interval:
    """The Wilson score interval of a proportion `successes / trials`.

    Clamped to [0, 1] and widened to the proportion itself, which rounding would otherwise put a
    hair outside at 0 of n or n of n.
    """
    check_level(level)
    if trials <= 0 or not 0 <= successes <= trials:
        raise ValueError(f"wilson_interval needs 0 ≤ successes ≤ trials and trials > 0, got {successes}/{trials}")
    z = NormalDist().inv_cdf(1 - (1 - level) / 2)
    rate = successes / trials
    denominator = 1 + z * z / trials
    centre = (rate + z * z / (2 * trials)) / denominator
    spread = z * math.sqrt(rate * (1 - rate) / trials + z * z / (4 * trials * trials)) / denominator
    low, high = min(max(0.0, centre - spread), rate), max(min(1.0, centre + spread), rate)
    return Interval(low, high, level, "wilson", trials)
