"""A phrasing family's, invariance's or direction's verdict: its pass rate, intervals and falsifying example.

A check's pass rate is the share of its variants that pass; below `min_pass_rate` the check fails,
and `seqprobe.checks.falsify` finds the smallest failing variant to show as the falsifying example.

The pass rate carries its Wilson interval at the run's `interval_level`, a direction check's mean
margin its bootstrap interval over the variants (`seqprobe.records.intervals`): the variants run
stand for the phrasings one could write. With `confidence` in the case's expect, the check holds
only when the lower bound of the pass rate's Wilson interval at that level reaches
`min_pass_rate`: 9 of 10 variants is a pass rate of 0.9, but at 95% confidence only of 0.596.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from seqprobe.casefiles.families import DirectionCase, FamilyCase, PairCheck, VariantCheck
from seqprobe.casefiles.sampling import Variant
from seqprobe.checks.falsify import VariantResult, explain, falsify, smallest_json
from seqprobe.checks.outcome import CheckOutcome
from seqprobe.errors import CaseFileError
from seqprobe.records.intervals import Interval, bootstrap_interval, format_level, wilson_interval

__all__ = ["headline", "variant_outcome"]


def variant_outcome(
    case: VariantCheck,
    results: Sequence[VariantResult],
    *,
    model_name: str,
    measure: Callable[[Sequence[Variant]], Sequence[VariantResult]],
    batch_size: int,
    level: float,
) -> CheckOutcome:
    """The check's pass rate and its intervals at `level`, judged against its bars; when it fails, the
    smallest failing variant, found by scoring more variants with `measure`, `batch_size` at a time."""
    expect = case.expect_for(model_name)
    bar = expect["min_pass_rate"]
    passed, run = sum(result.passed for result in results), len(results)
    rate = passed / run
    failing = sorted((result for result in results if not result.passed), key=_simplicity)
    metrics = {"pass_rate": rate}
    intervals = {"pass_rate": wilson_interval(passed, run, level=level)}
    if isinstance(case, DirectionCase):
        margins = [result.value for result in results]
        metrics["margin"] = sum(margins) / run
        intervals["margin"] = bootstrap_interval(margins, level=level)
    details: dict[str, Any] = {
        "variants_total": len(case.space),
        "variants_run": run,
        "sampled": case.sampled,
        "seed": case.seed,
        "failing_variants": [result.prompt for result in failing],
    }
    judged = _judged(case, expect, passed, run)
    failures: list[str] = []
    explanation = ""
    if judged is not None and judged.low < bar:
        failures.append(
            f"pass rate {rate:.3f} ({passed} of {run} variants), {format_level(judged.level)} interval "
            f"[{judged.low:.3f}, {judged.high:.3f}]: lower bound {judged.low:.3f} < min_pass_rate {bar:g}"
        )
    elif judged is None and rate < bar:
        failures.append(
            f"pass rate {rate:.3f} ({passed} of {run} variants) < min_pass_rate {bar:g} (short by {bar - rate:.3f})"
        )
    if failures and failing:
        smallest, tried = falsify(
            case,
            results,
            measure=measure,
            batch_size=batch_size,
        )
        if smallest is not None:
            failures.append(f"smallest failing variant {smallest.prompt!r}: {'; '.join(smallest.failures)}")
            details["smallest_failing"] = smallest_json(case, smallest, tried=tried)
        explanation = explain(
            case, rate=rate, bar=bar, results=results, failing=failing, smallest=smallest, tried=tried
        )
        if judged is not None:
            first, rest = explanation.split("\n", 1)
            explanation = f"{first}\n{_judged_line(judged, bar)}\n{rest}"
    elif failures and judged is not None:
        explanation = (
            f"All {run} variants passed, but {run} are too few to show a pass rate of {bar:g}:\n"
            f"{_judged_line(judged, bar)}\nRun more variants (more alternatives, a larger sample.size) "
            "or ask for less confidence."
        )
    prompt, answer = headline(case)
    return CheckOutcome(
        metrics=metrics,
        failures=tuple(failures),
        explanation=explanation,
        details=details,
        prompt=prompt,
        answer=answer,
        intervals=intervals,
    )


def _judged(case: VariantCheck, expect: Any, passed: int, run: int) -> Interval | None:
    """The pass rate's Wilson interval at the case's `confidence`, or None when it asks for none."""
    confidence = expect.get("confidence")
    if confidence is None:
        return None
    if not 0 < confidence < 1:
        raise CaseFileError(
            f"case {case.name!r}: confidence={confidence!r}; give a probability between 0 and 1, e.g. confidence: 0.95",
            path=case.location.path,
            line=case.location.line,
        )
    return wilson_interval(passed, run, level=confidence)


def _judged_line(judged: Interval, bar: float) -> str:
    holds = "<" if judged.low < bar else "≥"
    return (
        f"Judged by the lower bound of the pass rate's {format_level(judged.level)} Wilson interval "
        f"[{judged.low:.3f}, {judged.high:.3f}] over {judged.n} variants: {judged.low:.3f} {holds} min_pass_rate {bar:g}"
    )


def _simplicity(result: VariantResult) -> tuple[int, int, tuple[int, ...], tuple[int, ...]]:
    """Fewest alternatives away from the first, then shortest, then first in the file's order."""
    variant = result.variant
    return variant.distance, len(result.prompt), variant.elements, variant.choices


def headline(case: VariantCheck) -> tuple[str, str]:
    """The prompt and answer a report shows for the whole check: templates with `over` variables left in."""
    prompt = case.space.outline(case.prompt)
    if isinstance(case, PairCheck):
        prompt = f"{prompt} → {case.space.outline(case.perturbed)}"
    if isinstance(case, FamilyCase):
        return prompt, case.space.outline(case.answer)
    if isinstance(case, DirectionCase):
        return prompt, case.space.outline(case.target)
    return prompt, ""
