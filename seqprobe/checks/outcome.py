"""What running a case gives back, and the skeleton every kind's runner shares.

The session hands every selected case of a kind to that kind's runner in one call, so a runner
can batch forward passes across cases. A runner returns one `CheckOutcome` per case: the numbers
a report and a baseline use, the expectations that failed, and the text a researcher reads when
the case fails. A problem with one case's input (an answer that is two tokens) becomes that
case's `error`, never the whole run's: `prepare_each` and `guarded` make it so for every kind.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from seqprobe.errors import SeqprobeError
from seqprobe.records.intervals import DEFAULT_LEVEL, Interval

if TYPE_CHECKING:
    from seqprobe.casefiles.base import Case
    from seqprobe.loading.models import LoadedModel

__all__ = ["CheckOutcome", "Runner", "cases_of", "guarded", "prepare_each"]

C = TypeVar("C", bound="Case")
P = TypeVar("P")


@dataclass(frozen=True)
class CheckOutcome:
    metrics: Mapping[str, float] = field(default_factory=dict)
    # One line per unmet expectation, saying by how much.
    failures: tuple[str, ...] = ()
    # What a researcher needs to see when the case fails (token table, sweep summary, ...).
    explanation: str = ""
    details: Mapping[str, Any] = field(default_factory=dict)
    prompt: str = ""
    answer: str = ""
    lower_is_better: tuple[str, ...] = ()
    # Metric name -> its interval at the run's level (seqprobe.records.intervals), for aggregates.
    intervals: Mapping[str, Interval] = field(default_factory=dict)
    # A problem with this case's input for this model; the case errors instead of failing.
    error: SeqprobeError | None = None


class Runner(Protocol):
    """Given the loaded model, its name (for per-model expectations) and every selected case of one
    kind, return an outcome per case id. `detail` asks for what only a report shows (figures);
    `interval_level` is the level of the intervals on aggregates (a claim's `confidence` overrides it);
    `max_memory` bounds a patching sweep's stacked batch in bytes (None: half the free memory)."""

    def __call__(
        self,
        model: LoadedModel,
        model_name: str,
        cases: Sequence[Case],
        *,
        detail: bool = False,
        interval_level: float = DEFAULT_LEVEL,
        max_memory: int | None = None,
    ) -> Mapping[str, CheckOutcome]: ...


def cases_of(cases: Sequence[Case], case_type: type[C]) -> list[C]:
    """`cases`, checked to be of the runner's kind: a case of another kind here is a wiring bug."""
    for case in cases:
        if not isinstance(case, case_type):
            raise TypeError(f"{case.case_id}: a {type(case).__name__} was handed to the {case_type.__name__} runner")
    return list(cases)  # type: ignore[arg-type]


def guarded(compute: Callable[[], CheckOutcome], *, prompt: str, answer: str) -> CheckOutcome:
    """`compute()`, or the case's error outcome when its input does not suit the model."""
    try:
        return compute()
    except SeqprobeError as error:
        return CheckOutcome(prompt=prompt, answer=answer, error=error)


def prepare_each(
    cases: Sequence[C], prepare: Callable[[C], P], *, headline: Callable[[C], tuple[str, str]]
) -> tuple[dict[str, CheckOutcome], list[tuple[C, P]]]:
    """Prepare every case for its kind's batch: (error outcomes by case id, the cases ready with their input).

    `headline(case)` gives the prompt and answer an error outcome shows.
    """
    errors: dict[str, CheckOutcome] = {}
    ready: list[tuple[C, P]] = []
    for case in cases:
        try:
            ready.append((case, prepare(case)))
        except SeqprobeError as error:
            prompt, answer = headline(case)
            errors[case.case_id] = CheckOutcome(prompt=prompt, answer=answer, error=error)
    return errors, ready
