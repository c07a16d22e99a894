"""Results to compare and render, built the same way for the baseline, compare and report tests."""

from __future__ import annotations

from seqprobe.records.results import CaseResult, RunResults

CASE_FILE = "cases/days.seqprobe.yaml"
MODEL = {"name": "smollm2-135m", "source": "hub", "sha256": "ab" * 32, "dtype": "float32", "device": "cpu"}


def completion_result(
    name: str = "sunday", *, answer: str = " Monday", outcome: str = "passed", **metrics: float
) -> CaseResult:
    """A completion case of the `successor` suite; metrics default to a healthy answer."""
    return CaseResult(
        case_id=f"{CASE_FILE}::successor::{name}",
        suite="successor",
        kind="completion",
        outcome=outcome,  # type: ignore[arg-type]
        metrics={"p_answer": 0.62, "rank": 1.0, "logit_diff": 2.5} | metrics,
        prompt=f"Today it is {name.capitalize()}, tomorrow it is",
        answer=answer,
        lower_is_better=("rank",),
    )


def run_results(
    *cases: CaseResult,
    sha256: str = "ab" * 32,
    case_file: str = "cd" * 32,
    name: str = "smollm2-135m",
    command: str = "pytest",
) -> RunResults:
    return RunResults(
        model={**MODEL, "name": name, "sha256": sha256},
        case_files={CASE_FILE: case_file},
        cases=cases,
        environment={"torch": "2.13.0", "date": "2025-01-01T00:00:00+00:00", "command": command},
    )


def family_result(
    name: str = "weekdays",
    *,
    pass_rate: float = 0.9,
    interval: tuple[float, float] | None = (0.6, 0.98),
    n: int = 10,
    outcome: str = "passed",
) -> CaseResult:
    """A phrasing family of the `successor` suite; its pass rate has a 95% Wilson interval unless `interval` is None."""
    info = {"pass_rate": {"level": 0.95, "method": "wilson", "n": n}}
    return CaseResult(
        case_id=f"{CASE_FILE}::successor::{name}",
        suite="successor",
        kind="family",
        outcome=outcome,  # type: ignore[arg-type]
        metrics={"pass_rate": pass_rate},
        prompt="Today it is {day}, tomorrow it is",
        answer=" {day+1}",
        details={"intervals": info} if interval else {},
        intervals={"pass_rate": interval} if interval else {},
    )
