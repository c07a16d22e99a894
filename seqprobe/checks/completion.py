"""The completion runner: every selected completion case scored in batched forward passes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from seqprobe.casefiles.completion import CompletionCase
from seqprobe.checks.outcome import CheckOutcome, cases_of, prepare_each
from seqprobe.engine.scoring import check_expectations, format_completion, prepare_prompt, score_completions

if TYPE_CHECKING:
    from seqprobe.casefiles.base import Case
    from seqprobe.loading.models import LoadedModel

__all__ = ["run_completion_checks"]


def run_completion_checks(
    model: LoadedModel, model_name: str, cases: Sequence[Case], *, detail: bool = False
) -> dict[str, CheckOutcome]:
    """A `seqprobe.checks.outcome.Runner`; completions have no figures, so `detail` changes nothing."""
    outcomes, ready = prepare_each(
        cases_of(cases, CompletionCase),
        lambda case: prepare_prompt(
            model.bridge, case.prompt, case.answer, case.distractors, where=f"{case.location} case {case.name!r}"
        ),
        headline=lambda case: (case.prompt, case.answer),
    )
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
