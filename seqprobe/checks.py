"""Running cases on a model: one runner per kind of case, each given all its cases at once.

The plugin hands every selected case of a kind to that kind's runner in one call, so a runner
can batch forward passes across cases. A runner returns one `CheckOutcome` per case: the
numbers a report and a baseline use, the expectations that failed, and the text a researcher
reads when the case fails. A problem with one case's input (an answer that is two tokens)
becomes that case's `error`, never the whole run's.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from seqprobe.errors import SeqprobeError

if TYPE_CHECKING:
    from seqprobe.casefile import Case
    from seqprobe.models import LoadedModel

__all__ = ["CheckOutcome", "Runner", "get_runner", "run_completion_checks"]


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
    # A problem with this case's input for this model; the case errors instead of failing.
    error: SeqprobeError | None = None


class Runner(Protocol):
    """Given the loaded model, its name (for per-model expectations) and every selected case of one
    kind, return an outcome per case id. `detail` asks for what only a report shows (figures)."""

    def __call__(
        self, model: LoadedModel, model_name: str, cases: Sequence[Case], *, detail: bool = False
    ) -> Mapping[str, CheckOutcome]: ...


def get_runner(kind: str) -> Runner:
    """The runner registered with the case kind (imported now, not when the plugin loads)."""
    from seqprobe.casefile import CASE_KINDS

    module, _, function = CASE_KINDS[kind].runner.partition(":")
    return getattr(importlib.import_module(module), function)


def run_completion_checks(
    model: LoadedModel, model_name: str, cases: Sequence[Case], *, detail: bool = False
) -> dict[str, CheckOutcome]:
    from seqprobe.casefile import CompletionCase
    from seqprobe.scoring import check_expectations, format_completion, prepare_prompt, score_completions

    outcomes: dict[str, CheckOutcome] = {}
    ready: list[tuple[CompletionCase, Any]] = []
    for case in cases:
        assert isinstance(case, CompletionCase)
        try:
            prepared = prepare_prompt(
                model.bridge, case.prompt, case.answer, case.distractors, where=f"{case.location} case {case.name!r}"
            )
        except SeqprobeError as error:
            outcomes[case.case_id] = CheckOutcome(prompt=case.prompt, answer=case.answer, error=error)
            continue
        ready.append((case, prepared))
    completions = score_completions(model.bridge, [prepared for _, prepared in ready])
    for (case, _), completion in zip(ready, completions, strict=True):
        outcomes[case.case_id] = CheckOutcome(
            metrics=completion.metrics(),
            failures=tuple(check_expectations(completion, case.expect_for(model_name))),
            explanation=format_completion(completion),
            details={
                "top_k": [score.to_json() for score in completion.top_k],
                "distractors": [score.to_json() for score in completion.distractors],
                "prompt_tokens": list(completion.prompt_tokens),
            },
            prompt=case.prompt,
            answer=case.answer,
            lower_is_better=("rank",),
        )
    return outcomes
