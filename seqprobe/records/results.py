"""The record of a run: what every case measured, in a form reports and baselines share.

A run produces one `RunResults`; the markdown report renders it, `--baseline` compares it with a
stored one, and `seqprobe compare` diffs two of them. It round-trips through JSON unchanged, so a
results file written today can be compared with one written by the next run.

An aggregate (a pass rate over variants, recovery over pairs) carries its interval beside its
value (`seqprobe.records.intervals`): in the JSON,

    "metrics":   {"pass_rate": 0.9},
    "intervals": {"pass_rate": [0.596, 0.982]},
    "details":   {"intervals": {"pass_rate": {"level": 0.95, "method": "wilson", "n": 10}}, ...}

and the run's header holds `"interval_level": 0.95`, the level asked for (`--interval-level`).
A bootstrap interval's details add its `resamples` and `seed`. Files written before intervals
existed load with none, and compare by tolerance alone.
"""

from __future__ import annotations

import importlib.metadata
import json
import math
import platform
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from seqprobe.errors import BaselineError
from seqprobe.records.atomic import write_text_atomic

__all__ = [
    "RESULTS_FORMAT_VERSION",
    "CaseResult",
    "Outcome",
    "RunResults",
    "VERSIONED_PACKAGES",
    "load_results",
    "run_environment",
    "write_baseline",
]

RESULTS_FORMAT_VERSION = 1
# Packages whose versions decide what a run measures; the header and the results file name them.
VERSIONED_PACKAGES = ("seqprobe", "transformer_lens", "torch")

Outcome = Literal["passed", "failed", "xfailed", "xpassed", "error", "skipped"]


@dataclass(frozen=True)
class CaseResult:
    """One pytest item's measurements and verdict."""

    # The stable id `file::suite::case`, the key baselines match cases by.
    case_id: str
    suite: str
    # What kind of check produced it: "completion", "patching", "attribution", "family",
    # "invariance" or "direction"; reports group by it.
    kind: str
    outcome: Outcome
    # Numbers a baseline can compare: e.g. p_answer, rank, logit_diff, recovery, pass_rate.
    # Higher is better for every metric except those listed in `lower_is_better`.
    metrics: Mapping[str, float]
    prompt: str = ""
    answer: str = ""
    # Human-readable failure lines (which expectation failed and by how much).
    failures: tuple[str, ...] = ()
    # Known-failure reason when the case is recorded as one for this model.
    known_failure: str | None = None
    # Anything a report shows but a baseline does not compare: top-k tables, token strings,
    # sweep grids. Must be JSON-serialisable.
    details: Mapping[str, Any] = field(default_factory=dict)
    lower_is_better: tuple[str, ...] = ()
    # Metric -> (low, high) of its interval, for aggregates; its level and method are in
    # `details["intervals"]`. A baseline compares two intervals to tell a change from noise.
    intervals: Mapping[str, tuple[float, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # [low, high] lists from JSON or a caller become tuples, so a round trip compares equal.
        object.__setattr__(self, "intervals", {name: _bounds(name, pair) for name, pair in self.intervals.items()})

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {
            "failures": list(self.failures),
            "lower_is_better": list(self.lower_is_better),
            "intervals": {name: list(pair) for name, pair in self.intervals.items()},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CaseResult:
        return cls(
            **{
                **data,
                "failures": tuple(data.get("failures", ())),
                "lower_is_better": tuple(data.get("lower_is_better", ())),
                "metrics": dict(data.get("metrics", {})),
                "details": dict(data.get("details", {})),
                "intervals": dict(data.get("intervals", {})),
            }
        )


def _bounds(metric: str, pair: Any) -> tuple[float, float]:
    """An interval's (low, high), checked: two numbers, low ≤ high."""
    try:
        low, high = (float(bound) for bound in pair)
    except (TypeError, ValueError):
        raise ValueError(f"intervals[{metric!r}] must be [low, high], found {pair!r}") from None
    if not low <= high and not (math.isnan(low) or math.isnan(high)):
        raise ValueError(f"intervals[{metric!r}] has low > high: {pair!r}")
    return low, high


@dataclass(frozen=True)
class RunResults:
    """Everything one run measured, with what is needed to know whether two runs compare."""

    # ModelInfo as a dict: name, source, sha256, dtype, device.
    model: Mapping[str, str]
    # Case file path (as given on the command line, posix) -> sha256 of its bytes.
    case_files: Mapping[str, str]
    cases: tuple[CaseResult, ...]
    # Package versions (seqprobe, transformer_lens, torch), the date and the command line.
    environment: Mapping[str, str] = field(default_factory=dict)
    format_version: int = RESULTS_FORMAT_VERSION
    # The level of the run's intervals (--interval-level); None in files from before intervals.
    interval_level: float | None = None

    def by_id(self) -> dict[str, CaseResult]:
        return {case.case_id: case for case in self.cases}

    def to_json(self) -> dict[str, Any]:
        header = {} if self.interval_level is None else {"interval_level": self.interval_level}
        return {
            "format_version": self.format_version,
            "model": dict(self.model),
            "case_files": dict(self.case_files),
            "environment": dict(self.environment),
            **header,
            "cases": [case.to_json() for case in self.cases],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RunResults:
        return cls(
            model=dict(data["model"]),
            case_files=dict(data["case_files"]),
            cases=tuple(CaseResult.from_json(case) for case in data["cases"]),
            environment=dict(data.get("environment", {})),
            format_version=int(data.get("format_version", RESULTS_FORMAT_VERSION)),
            interval_level=None if data.get("interval_level") is None else float(data["interval_level"]),
        )

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def load(cls, path: str | Path) -> RunResults:
        return cls.from_json(json.loads(Path(path).read_text(encoding="utf-8")))


def load_results(path: str | Path, *, fix: str = "write it from a run with --update-baseline") -> RunResults:
    """Read a results file (a baseline, or one side of `seqprobe compare`).

    A BaselineError says what is wrong, ending with `fix`: how to get a good file.
    """
    path = Path(path)
    if not path.is_file():
        raise BaselineError(f"results file {path} does not exist; {fix}")
    try:
        results = RunResults.from_json(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, KeyError, TypeError) as error:
        raise BaselineError(
            f"{path} is not a seqprobe results file ({type(error).__name__}: {error}); "
            f"use the .json written beside a --report, or {fix}"
        ) from error
    if results.format_version > RESULTS_FORMAT_VERSION:
        raise BaselineError(
            f"{path} has format_version={results.format_version}; this seqprobe reads up to "
            f"{RESULTS_FORMAT_VERSION}: upgrade seqprobe, or {fix}"
        )
    return results


def write_baseline(results: RunResults, path: str | Path) -> None:
    """Write `results` as the baseline, atomically. Only --update-baseline may call this."""
    write_text_atomic(path, results.dumps())


def run_environment(*, command: Sequence[str], now: datetime) -> dict[str, str]:
    """`RunResults.environment` for this process: versions, date, and the command to rerun.

    Versions come from installed metadata, so torch is not imported to learn its version.
    """
    versions = {name: _version(name) for name in VERSIONED_PACKAGES}
    return versions | {
        "python": platform.python_version(),
        "date": now.isoformat(timespec="seconds"),
        "command": shlex.join(command),
    }


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"
