"""What a comparison with a baseline concludes, per metric, per case and per run.

`seqprobe.records.baseline` computes these; the terminal summary, the report and `seqprobe
compare` render them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

from seqprobe.records.results import CaseResult

__all__ = [
    "STATUS_ORDER",
    "STATUS_TEXT",
    "CaseComparison",
    "CaseStatus",
    "MetricChange",
    "MetricVerdict",
    "RunComparison",
]

CaseStatus = Literal[
    "regressed", "improved", "case_file_changed", "model_changed", "new", "missing", "within_noise", "unchanged"
]
# "within_noise": moved beyond its tolerance, but its interval before and after overlap.
MetricVerdict = Literal["regressed", "improved", "new", "missing", "within_noise", "unchanged"]
# The order reports list cases in: what needs action first.
STATUS_ORDER: tuple[CaseStatus, ...] = (
    "regressed",
    "improved",
    "case_file_changed",
    "model_changed",
    "new",
    "missing",
    "within_noise",
    "unchanged",
)
STATUS_TEXT: Mapping[CaseStatus, str] = MappingProxyType(
    {
        "regressed": "regressed",
        "improved": "improved",
        "case_file_changed": "case file changed",
        "model_changed": "model changed",
        "new": "new",
        "missing": "missing",
        "within_noise": "within noise",
        "unchanged": "unchanged",
    }
)


@dataclass(frozen=True)
class MetricChange:
    """One metric of one case, before and after."""

    metric: str
    baseline: float | None
    current: float | None
    tolerance: float
    lower_is_better: bool
    verdict: MetricVerdict
    # Each side's (low, high), when it has one: the noise rule needs both.
    baseline_interval: tuple[float, float] | None = None
    current_interval: tuple[float, float] | None = None

    @property
    def intervals_overlap(self) -> bool | None:
        """Whether the two intervals share a point; None unless both sides have one."""
        if self.baseline_interval is None or self.current_interval is None:
            return None
        return max(self.baseline_interval[0], self.current_interval[0]) <= min(
            self.baseline_interval[1], self.current_interval[1]
        )

    @property
    def delta(self) -> float | None:
        if self.baseline is None or self.current is None:
            return None
        return self.current - self.baseline

    @property
    def size(self) -> float:
        """The change in tolerances, for ordering "biggest first"; appearing or vanishing is ∞."""
        if self.verdict in ("new", "missing"):
            return math.inf
        delta = self.delta
        if delta is None or delta == 0 or math.isnan(delta):
            return 0.0
        return abs(delta) / self.tolerance if self.tolerance > 0 else math.inf


@dataclass(frozen=True)
class CaseComparison:
    """One case against the baseline: its status, each metric's change, what to tell people."""

    case_id: str
    status: CaseStatus
    metrics: tuple[MetricChange, ...]
    # Lines in the form of pytest-regressions' messages, the last one ending with how to accept.
    messages: tuple[str, ...]
    baseline: CaseResult | None
    current: CaseResult | None

    @property
    def size(self) -> float:
        return max((change.size for change in self.metrics), default=0.0)


@dataclass(frozen=True)
class RunComparison:
    """A whole run against the baseline, with what makes the two comparable or not."""

    cases: tuple[CaseComparison, ...]
    # "field: old → new" for model fields that differ; identity fields first.
    model_changes: tuple[str, ...]
    # False when the model's identity differs and cases were not compared (see `compare_runs`).
    models_match: bool
    # Case files whose sha256 differs, as "path: old → new".
    changed_case_files: tuple[str, ...]
    # Versions and other environment fields that differ, as "field: old → new".
    environment_changes: tuple[str, ...]

    def with_status(self, status: CaseStatus) -> tuple[CaseComparison, ...]:
        return tuple(case for case in self.cases if case.status == status)

    def counts(self) -> dict[CaseStatus, int]:
        return {status: len(self.with_status(status)) for status in STATUS_ORDER}

    @property
    def has_regressions(self) -> bool:
        return any(case.status == "regressed" for case in self.cases)

    def by_id(self) -> dict[str, CaseComparison]:
        return {case.case_id: case for case in self.cases}

    def ordered(self) -> list[CaseComparison]:
        """Cases needing action first, then within each status the biggest change first."""
        rank = {status: i for i, status in enumerate(STATUS_ORDER)}
        return sorted(self.cases, key=lambda case: (rank[case.status], -case.size))
