"""The falsifying example of a failed check: hypothesis's smallest failing variant, and the text that shows it.

A pass rate says how often a check fails, not what a failure looks like. Hypothesis's search
(`seqprobe.checks.shrinking`) shrinks a failure toward the first alternative of every slot,
short wording and the first element of every sequence, so the example a reader sees is the
failing variant closest to the canonical prompt. On an exhaustive check every variant has been
scored already and the search runs no model; on a sampled check the variants hypothesis draws
are scored in batches before it shrinks one variant at a time. The explanation then lists the
example's choices, its top-k tables and the simplest failing variants.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from seqprobe.checks.shrinking import hypothesis_draws, shrink_failure
from seqprobe.engine.scoring import format_completion

if TYPE_CHECKING:
    from seqprobe.casefiles.families import VariantCheck
    from seqprobe.casefiles.sampling import Variant
    from seqprobe.engine.scoring import Completion

__all__ = ["VariantResult", "explain", "falsify", "smallest_json"]

# Failing variants the failure text lists; all of them are in the results file.
FAILING_SHOWN = 10


@dataclass(frozen=True)
class VariantResult:
    """How one variant fared."""

    variant: Variant
    # The prompt a reader recognises the variant by (the perturbed one, for a pair).
    prompt: str
    passed: bool
    # Why it failed; empty when it passed.
    failures: tuple[str, ...]
    # family: the answer's rank; invariance: the rank, after perturbing, of the original top
    # prediction; direction: the margin.
    value: float
    # (heading, completion) pairs the falsifying example shows as top-k tables.
    completions: tuple[tuple[str, Completion], ...]
    # A line before the tables: the original prediction, or the margin's arithmetic.
    note: str = ""


def falsify(
    case: VariantCheck,
    results: Sequence[VariantResult],
    *,
    measure: Callable[[Sequence[Variant]], Sequence[VariantResult]],
    batch_size: int,
) -> tuple[VariantResult | None, int]:
    """Hypothesis's smallest failing variant, and how many variants it ran beyond `results`.

    `measure` scores variants of `case` not among `results`, in one batched pass. The variants
    hypothesis tries before its first failure are scored `batch_size` at a time first, so only
    the shrinking steps run one variant per forward pass. None when hypothesis's first
    `sample_size` tries all pass (a sampled check whose failures are rare).
    """
    known = {result.variant: result for result in results}
    tried = 0

    def run(variants: Sequence[Variant]) -> None:
        nonlocal tried
        new = [variant for variant in dict.fromkeys(variants) if variant not in known]
        for result in measure(new):
            known[result.variant] = result
        tried += len(new)

    max_examples = min(len(case.space), case.sample_size)
    if case.sampled:
        draws = hypothesis_draws(case.space, max_examples=max_examples, seed=case.seed)
        for start in range(0, len(draws), batch_size):
            chunk = draws[start : start + batch_size]
            run(chunk)
            if any(not known[variant].passed for variant in chunk):
                break
        else:
            return None, tried

    def fails(variant: Variant) -> bool:
        if variant not in known:
            run([variant])
        return not known[variant].passed

    found = shrink_failure(case.space, fails, max_examples=max_examples, seed=case.seed)
    return (known[found] if found is not None else None), tried


def _choices(case: VariantCheck, variant: Variant) -> list[str]:
    """One line per slot and variable: what this variant chose."""
    lines = []
    for slot, choice in zip(case.space.slots, variant.choices, strict=True):
        which = "the first" if choice == 0 else f"{choice + 1} of {len(slot.alternatives)}"
        lines.append(f"{slot.name} = {slot.alternatives[choice]!r} (alternative {which})")
    for name, word in case.space.words(variant).items():
        lines.append(f"{name} = {word}")
    return lines


def explain(
    case: VariantCheck,
    *,
    rate: float,
    bar: float,
    results: Sequence[VariantResult],
    failing: Sequence[VariantResult],
    smallest: VariantResult | None,
    tried: int,
) -> str:
    """The failure text: the pass rate, the falsifying example with its top-k tables, the failing variants."""
    total, run = len(case.space), len(results)
    ran = (
        f"a uniform sample of {run} of {total} variants (seed {case.seed})" if case.sampled else f"all {total} variants"
    )
    lines = [f"Pass rate {rate:.3f} over {ran}; min_pass_rate {bar:g}", ""]
    if smallest is None:
        lines.append(
            f"Hypothesis's first {case.sample_size} tries (seed {case.seed}) all passed: no falsifying example to shrink."
        )
    else:
        away = smallest.variant.distance
        lines.append(
            f"Falsifying example (hypothesis, seed {case.seed}; {away} alternative{'s' * (away != 1)} away from the first; "
            f"{tried} more variant{'s' * (tried != 1)} run to find and shrink it):"
        )
        lines += [f"  {line}" for line in _choices(case, smallest.variant)]
        lines.append(f"  prompt: {smallest.prompt!r}")
        lines += [f"  failed: {failure}" for failure in smallest.failures]
        if smallest.note:
            lines.append(smallest.note)
        for heading, completion in smallest.completions:
            lines += [heading] if heading else []
            lines.append(format_completion(completion))
    lines += ["", f"Failing variants ({len(failing)} of {run}), simplest first:"]
    lines += [f"  {result.prompt!r}" for result in failing[:FAILING_SHOWN]]
    if len(failing) > FAILING_SHOWN:
        lines.append(f"  (+{len(failing) - FAILING_SHOWN} more in the results file, details['failing_variants'])")
    return "\n".join(lines)


def smallest_json(case: VariantCheck, smallest: VariantResult, *, tried: int) -> dict[str, Any]:
    """The falsifying example as the results file keeps it (`details['smallest_failing']`)."""
    return {
        "prompt": smallest.prompt,
        "choices": case.space.describe(smallest.variant),
        "alternatives_away": smallest.variant.distance,
        "failures": list(smallest.failures),
        "extra_variants_run": tried,
        "completions": [
            {
                "heading": heading,
                "prompt": completion.prompt,
                "answer": completion.answer.to_json(),
                "rank": completion.rank,
                "top_k": [score.to_json() for score in completion.top_k],
            }
            for heading, completion in smallest.completions
        ],
    }
