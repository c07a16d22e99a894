"""Running family, invariance and direction checks: every variant scored in batches, then the pass rate.

Each variant of a check (`seqprobe.casefiles.sampling`) is rendered into its prompts and scored
through `seqprobe.engine.scoring`, the variants of every check of every kind together: one prefix
tree (`seqprobe.engine.prompt_tree`) for hundreds of prompts that share their beginnings:

- family: the variant's prompt completed by its answer, held to the completion bars
  (`max_rank`, `min_prob`, `min_logit_diff`); its value is the answer's rank.
- invariance: the variant passes when the original prompt's top prediction is still the top one
  after the perturbed prompt (both read in the same pass); its value is that token's rank.
- direction: both prompts scored with `to` as the answer and `from` as the distractor;
  margin = [logit(to) − logit(from)] after perturbing − the same before, which must reach `min_margin`.

A check's pass rate and what a failure shows are judged in `seqprobe.checks.pass_rates`.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

from seqprobe.casefiles.families import VARIANT_BARS, DirectionCase, FamilyCase, InvarianceCase, PairCheck, VariantCheck
from seqprobe.casefiles.sampling import Variant
from seqprobe.checks.falsify import VariantResult
from seqprobe.checks.outcome import CheckOutcome, cases_of, guarded, prepare_each
from seqprobe.checks.pass_rates import headline, variant_outcome
from seqprobe.engine.scoring import (
    DEFAULT_BATCH_SIZE,
    PreparedPrompt,
    TokenScore,
    check_expectations,
    completions_from_logits,
    final_logits,
    prepare_prompt,
    prompt_token_ids,
)
from seqprobe.records.intervals import DEFAULT_LEVEL

if TYPE_CHECKING:
    from jaxtyping import Float
    from torch import Tensor
    from transformer_lens.model_bridge import TransformerBridge

    from seqprobe.casefiles.base import Case
    from seqprobe.loading.models import LoadedModel

__all__ = ["VariantResult", "measure_variants", "run_variant_checks"]


def measure_variants(
    bridge: TransformerBridge,
    model_name: str,
    runs: Sequence[tuple[VariantCheck, Sequence[Variant]]],
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> list[list[VariantResult]]:
    """Each check's variants' results; all the checks share one batched scoring pass.

    Raises TokenizationError (naming the case and the variant) when a variant cannot be scored.
    """
    return _score(
        bridge,
        model_name,
        [(case, variants, _prepare_all(bridge, case, variants)) for case, variants in runs],
        batch_size=batch_size,
    )


def _prepare_all(bridge: TransformerBridge, case: VariantCheck, variants: Sequence[Variant]) -> list[Any]:
    return [_prepare(bridge, case, variant) for variant in variants]


def _prepare(bridge: TransformerBridge, case: VariantCheck, variant: Variant) -> Any:
    """Tokenize one variant's prompts, answers and distractors."""

    def render(template: str) -> str:
        return case.space.render(template, variant)

    def where(prompt: str) -> str:
        return f"{case.location} case {case.name!r}, variant {prompt!r}"

    if isinstance(case, FamilyCase):
        prompt = render(case.prompt)
        return prepare_prompt(
            bridge, prompt, render(case.answer), [render(d) for d in case.distractors], where=where(prompt)
        )
    assert isinstance(case, PairCheck)
    prompts = (render(case.prompt), render(case.perturbed))
    if isinstance(case, DirectionCase):
        source, target = render(case.source), render(case.target)
        return tuple(prepare_prompt(bridge, prompt, target, [source], where=where(prompt)) for prompt in prompts)
    # Invariance: what the perturbed prompt is scored against is the original's top prediction,
    # known only once the original has run.
    return tuple((prompt, tuple(prompt_token_ids(bridge, prompt, where=where(prompt)))) for prompt in prompts)


def _score(
    bridge: TransformerBridge,
    model_name: str,
    runs: Sequence[tuple[VariantCheck, Sequence[Variant], Sequence[Any]]],
    *,
    batch_size: int,
) -> list[list[VariantResult]]:
    """Each run's results, in its variants' order.

    Every kind's prompts are read in one pass (seqprobe.engine.prompt_tree): a family's wordings, an
    invariance's and a direction's pairs share their beginnings, and each shared prefix runs once.
    """
    picked = {
        kind: [
            (index, case, variant, request)
            for index, (case, variants, requests) in enumerate(runs)
            if isinstance(case, kind)
            for variant, request in zip(variants, requests, strict=True)
        ]
        for kind in _SCORERS
    }
    reads = {kind: _SCORERS[kind][0]([request for *_, request in items]) for kind, items in picked.items()}
    logits = final_logits(bridge, [row for rows in reads.values() for row in rows], batch_size=batch_size)
    results: list[list[VariantResult]] = [[] for _ in runs]
    first = 0
    for kind, items in picked.items():
        stop = first + len(reads[kind])
        if items:
            score = _SCORERS[kind][1]
            scored = score(
                bridge,
                model_name,
                [(case, variant, request) for _, case, variant, request in items],
                logits[first:stop],
            )
            for (index, *_), result in zip(items, scored, strict=True):
                results[index].append(result)
        first = stop
    return results


def _family_reads(requests: Sequence[PreparedPrompt]) -> list[Sequence[int]]:
    return [prepared.token_ids for prepared in requests]


def _score_families(
    bridge: TransformerBridge, model_name: str, items: Sequence[tuple[Any, Variant, PreparedPrompt]], logits: Tensor
) -> list[VariantResult]:
    completions = completions_from_logits(bridge, [prepared for _, _, prepared in items], logits)
    results = []
    for (case, variant, _), completion in zip(items, completions, strict=True):
        bars = {bar: value for bar, value in case.expect_for(model_name).items() if bar in VARIANT_BARS}
        failures = tuple(check_expectations(completion, bars))
        results.append(
            VariantResult(
                variant=variant,
                prompt=completion.prompt,
                passed=not failures,
                failures=failures,
                value=float(completion.rank),
                completions=(("", completion),),
            )
        )
    return results


def _invariance_reads(requests: Sequence[tuple[tuple[str, Sequence[int]], ...]]) -> list[Sequence[int]]:
    """Each pair's original, then its perturbed prompt."""
    return [ids for pair in requests for _, ids in pair]


def _direction_reads(requests: Sequence[tuple[PreparedPrompt, ...]]) -> list[Sequence[int]]:
    """Each pair's original, then its perturbed prompt."""
    return [prepared.token_ids for pair in requests for prepared in pair]


def _score_invariances(
    bridge: TransformerBridge, model_name: str, items: Sequence[tuple[Any, Variant, Any]], logits: Tensor
) -> list[VariantResult]:
    """Each perturbed prompt scored against its original's top prediction (rows: original, perturbed, ...)."""
    originals = [original for _, _, (original, _) in items]
    predictions = _top_predictions(bridge, logits[0::2])
    prepared = [
        PreparedPrompt(
            prompt=text, token_ids=ids, answer=top.token, answer_id=top.token_id, distractors=(), distractor_ids=()
        )
        for (_, _, (_, (text, ids))), top in zip(items, predictions, strict=True)
    ]
    completions = completions_from_logits(bridge, prepared, logits[1::2])
    results = []
    for (_, variant, _), (original, _), top, completion in zip(items, originals, predictions, completions, strict=True):
        passed = completion.rank == 1
        changed = () if passed else (f"top prediction changed from {top.token!r} to {completion.top_k[0].token!r}",)
        results.append(
            VariantResult(
                variant=variant,
                prompt=completion.prompt,
                passed=passed,
                failures=changed,
                value=float(completion.rank),
                completions=(("Perturbed prompt, scored against the original's top prediction:", completion),),
                note=f"Original prompt {original!r} predicts {top.token!r} (logit {top.logit:.2f}, prob {top.prob:.2%})",
            )
        )
    return results


def _top_predictions(bridge: TransformerBridge, logits: Float[Tensor, "prompt d_vocab"]) -> list[TokenScore]:
    probs = logits.softmax(dim=-1)
    top = logits.argmax(dim=-1)  # [prompt]
    return [
        TokenScore(bridge.to_string([int(token)]), int(token), float(logits[row, token]), float(probs[row, token]))
        for row, token in enumerate(top)
    ]


def _score_directions(
    bridge: TransformerBridge, model_name: str, items: Sequence[tuple[Any, Variant, Any]], logits: Tensor
) -> list[VariantResult]:
    """Both prompts scored with `to` as the answer and `from` as the distractor; the margin is the change."""
    completions = completions_from_logits(bridge, [prepared for _, _, pair in items for prepared in pair], logits)
    results = []
    for index, (case, variant, _) in enumerate(items):
        before, after = completions[2 * index], completions[2 * index + 1]
        source = before.distractors[0].token
        gap_before, gap_after = before.logit_diffs[source], after.logit_diffs[source]
        margin = gap_after - gap_before
        bar = case.expect_for(model_name)["min_margin"]
        gap = f"logit({after.answer.token!r}) − logit({source!r})"
        passed = margin >= bar
        short = f"margin {margin:+.2f} < min_margin {bar:g}: {gap} went from {gap_before:+.2f} to {gap_after:+.2f}"
        results.append(
            VariantResult(
                variant=variant,
                prompt=after.prompt,
                passed=passed,
                failures=() if passed else (short,),
                value=margin,
                completions=(("Original prompt:", before), ("Perturbed prompt:", after)),
                note=f"margin = {gap} after − before = ({gap_after:+.2f}) − ({gap_before:+.2f}) = {margin:+.2f}",
            )
        )
    return results


# Each kind's reads (the rows, from its requests), and its scorer of their logits, in that order.
_SCORERS = {
    FamilyCase: (_family_reads, _score_families),
    InvarianceCase: (_invariance_reads, _score_invariances),
    DirectionCase: (_direction_reads, _score_directions),
}


def run_variant_checks(
    model: LoadedModel,
    model_name: str,
    cases: Sequence[Case],
    *,
    detail: bool = False,
    interval_level: float = DEFAULT_LEVEL,
    max_memory: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> dict[str, CheckOutcome]:
    """Run family, invariance and direction cases: one batched pass, then shrink what fails.

    A `seqprobe.checks.outcome.Runner`; these checks have no figures, so `detail` changes nothing.
    Pass rates and margins get intervals at `interval_level`.
    """
    bridge = model.bridge

    def prepare(case: VariantCheck) -> tuple[list[Variant], list[Any]]:
        variants = case.variants_to_run()
        return variants, _prepare_all(bridge, case, variants)

    outcomes, ready = prepare_each(cases_of(cases, VariantCheck), prepare, headline=headline)
    runs = [(case, variants, requests) for case, (variants, requests) in ready]
    for (case, _, _), results in zip(runs, _score(bridge, model_name, runs, batch_size=batch_size), strict=True):
        prompt, answer = headline(case)
        measure = partial(_measure_check, bridge, model_name, case, batch_size=batch_size)
        # Guarded too: a variant tried while shrinking may not suit the model.
        outcomes[case.case_id] = guarded(
            partial(
                variant_outcome,
                case,
                results,
                model_name=model_name,
                measure=measure,
                batch_size=batch_size,
                level=interval_level,
            ),
            prompt=prompt,
            answer=answer,
        )
    return outcomes


def _measure_check(
    bridge: TransformerBridge, model_name: str, case: VariantCheck, variants: Sequence[Variant], *, batch_size: int
) -> list[VariantResult]:
    """More variants of one check, scored: what shrinking asks for."""
    return measure_variants(bridge, model_name, [(case, variants)], batch_size=batch_size)[0]
