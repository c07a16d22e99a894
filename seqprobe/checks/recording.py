"""How a case's outcome becomes the `CaseResult` a report and a baseline keep, in one place.

Two callers record outcomes: the pytest session, which learns a case's status from pytest's
report (xfail markers, errors in setup), and `seqprobe.notebook.run`, which has no pytest and
derives the same status from the outcome and the case's known failures. Both build the record
here, so a results file written from a notebook is the one `pytest --report` writes.

An outcome's intervals are recorded as `intervals: {metric: (low, high)}` beside `metrics`, with
each one's level, method and item count (and a bootstrap's resamples and seed) in
`details["intervals"]`; an interval that could not be computed (NaN bounds) is left out.

Imports no torch: the session imports this module while pytest runs cases that may never load a
model.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from seqprobe.records.results import CaseResult

if TYPE_CHECKING:
    from seqprobe.casefiles.base import Case
    from seqprobe.checks.outcome import CheckOutcome
    from seqprobe.records.intervals import Interval
    from seqprobe.records.results import Outcome

__all__ = ["case_result", "interval_json", "status_of"]


def status_of(case: Case, outcome: CheckOutcome, *, expectations_of: str) -> Outcome:
    """The status the plugin records for `outcome`, when no baseline is compared.

    An input error is "error" (the plugin's xfail expects only missed bars, so a known failure
    that errors is still an error); missed bars are "xfailed" for a known failure of
    `expectations_of`, else "failed"; met bars are "xpassed" (gained) or "passed".
    """
    if outcome.error is not None:
        return "error"
    known = case.known_failure_for(expectations_of) is not None
    if outcome.failures:
        return "xfailed" if known else "failed"
    return "xpassed" if known else "passed"


def case_result(case: Case, outcome: CheckOutcome, *, status: Outcome, expectations_of: str) -> CaseResult:
    """The record of `case`'s `outcome` with `status`; an outcome's error becomes its one failure line.

    `known_failure` is the reason recorded for `expectations_of` whatever the status, as reports
    note it beside a case that gained.
    """
    if outcome.error is not None:
        outcome = replace(outcome, failures=(str(outcome.error),))
    intervals = {name: interval for name, interval in outcome.intervals.items() if interval.finite}
    details = dict(outcome.details)
    if intervals:
        details["intervals"] = {name: interval_json(interval) for name, interval in intervals.items()}
    return CaseResult(
        case_id=case.case_id,
        suite=case.suite,
        kind=case.kind,
        outcome=status,
        metrics=dict(outcome.metrics),
        prompt=outcome.prompt,
        answer=outcome.answer,
        failures=tuple(outcome.failures),
        known_failure=case.known_failure_for(expectations_of),
        details=details,
        lower_is_better=tuple(outcome.lower_is_better),
        intervals={name: (interval.low, interval.high) for name, interval in intervals.items()},
    )


def interval_json(interval: Interval) -> dict[str, Any]:
    """What a reader needs to know of an interval besides its bounds: `details["intervals"][metric]`."""
    described: dict[str, Any] = {"level": interval.level, "method": interval.method, "n": interval.n}
    if interval.method == "bootstrap":
        described |= {"resamples": interval.resamples, "seed": interval.seed}
    return described
