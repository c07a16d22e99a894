"""Running mechanistic cases: patch, attribute, and check each claim against the numbers.

For each set of pairs (cases with the same pairs share them) the clean and corrupted prompts are
run once and cached (`PatchingRuns`); the patching grids come from seqprobe's exact engine
(`seqprobe.engine.patching`), computing only the cells the claims read unless a report asks for
every grid; the logit lens and direct logit attribution come from `seqprobe.engine.attribution`,
reading the same cached clean run. All share one metric (`seqprobe.engine.metric`: the logit
difference, or the continuations' log-probabilities for longer answers), averaged over the pairs,
and recovery = (patched − corrupted) / (clean − corrupted). Heads claimed to work *together* are
patched together in one resumed run (a sum of single-head recoveries would not be the same).
Attribution patching is used only when a claim says `method: attribution`. Every claim's number
gets an interval over the pairs (`seqprobe.checks.judging`); the report's pictures are designed
in `seqprobe.checks.figures`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from seqprobe.casefiles.circuits import AblationSpec
from seqprobe.casefiles.claims import AttributionClaim, Claim, LogitLensClaim, PatchClaim
from seqprobe.casefiles.patching import PairSpec, PatchingCase
from seqprobe.checks.circuit_figures import circuit_figures
from seqprobe.checks.circuit_verdicts import check_circuit_claim
from seqprobe.checks.circuits import CIRCUIT_CLAIMS
from seqprobe.checks.evidence import Evidence, gather_evidence
from seqprobe.checks.figures import figures
from seqprobe.checks.judging import (
    ClaimVerdict,
    Levels,
    judged,
    missing_head,
    only_column,
    rank_verdict,
    recovery_interval,
    sweep_interval,
)
from seqprobe.checks.linear_views import check_attribution, check_lens
from seqprobe.checks.outcome import CheckOutcome
from seqprobe.engine.patching import SweepResult, make_pair, recovery
from seqprobe.errors import PatchingError, SeqprobeError
from seqprobe.records.intervals import DEFAULT_LEVEL, Interval
from seqprobe.vocabulary.heads import format_head, resolve_layer
from seqprobe.vocabulary.sites import POSITION_SITES

if TYPE_CHECKING:
    from seqprobe.casefiles.base import Case
    from seqprobe.loading.models import LoadedModel

__all__ = ["ClaimVerdict", "Evidence", "check_claim", "gather_evidence", "run_patching_checks"]

METRIC_IN_WORDS = (
    "metric = {readout}, the same function for the clean, corrupted and patched runs; recovery = "
    "(patched − corrupted) / (clean − corrupted): 0 = the patch restores nothing, 1 = all of the clean behaviour"
)


def _metric_in_words(evidence: Evidence) -> str:
    runs = evidence.runs
    return METRIC_IN_WORDS.format(readout=runs.readout.describe(len(runs.pairs)))


def check_claim(
    claim: Claim, evidence: Evidence, *, interval_level: float = DEFAULT_LEVEL, confidence: float | None = None
) -> ClaimVerdict:
    """One claim's verdict; exact patch claims get an interval over pairs at `interval_level`.

    `confidence` (the case's) applies when the claim sets none: an exact patch claim is then
    judged by its interval's bound at that level. Attribution estimates and the linear views
    have no per-pair values, so the point estimate judges them.
    """
    levels = Levels(interval_level, claim.confidence if claim.confidence is not None else confidence)
    if isinstance(claim, CIRCUIT_CLAIMS):
        assert evidence.circuits is not None
        return check_circuit_claim(claim, evidence.circuits, levels)
    if isinstance(claim, LogitLensClaim):
        assert evidence.lens is not None
        return check_lens(claim, evidence.lens, levels)
    if isinstance(claim, AttributionClaim):
        assert evidence.attribution is not None
        return check_attribution(claim, evidence.attribution, levels)
    if claim.site not in POSITION_SITES and claim.top_k is None:
        return _check_together(claim, evidence, levels)
    sweep = (evidence.estimates if claim.method == "attribution" else evidence.sweeps)[claim.site]
    if claim.site in POSITION_SITES:
        return _check_positions(claim, sweep, levels)
    return _check_rank(claim, sweep, levels)


def _check_positions(claim: PatchClaim, sweep: SweepResult, levels: Levels) -> ClaimVerdict:
    assert claim.layers is not None and claim.at is not None and claim.min_recovery is not None
    n_layers = sweep.recovery.shape[0]
    first, last = (resolve_layer(spec, n_layers) for spec in claim.layers)
    if first > last:
        raise PatchingError(
            f"claim {claim.text!r}: layers {claim.layers} resolve to {first}..{last} on {n_layers} layers, an empty range"
        )
    column = sweep.column(claim.at)
    values = sweep.recovery[first : last + 1, column]  # [layer]
    every = claim.require == "every"
    pick = values.argmin() if every else values.argmax()
    value, layer = float(values[pick]), first + int(pick)
    interval = sweep_interval(
        sweep,
        lambda patched, level: recovery_interval(
            patched[:, first : last + 1, column],
            sweep.clean_pairs,
            sweep.corrupted_pairs,
            reduce=(lambda r: r.min(axis=1)) if every else (lambda r: r.max(axis=1)),
            level=level,
        ),
    )
    return judged(
        interval=interval,
        levels=levels,
        text=claim.text,
        metric=f"recovery:{claim.site}@{claim.at}[{claim.layers[0]}..{claim.layers[1]}]/{claim.require}",
        value=value,
        threshold=claim.min_recovery,
        detail=f"{'lowest' if every else 'highest'} recovery {value:.3f} at layer {layer} of layers {first}..{last}, "
        f"position {sweep.labels[column]}",
    )


def _check_rank(claim: PatchClaim, sweep: SweepResult, levels: Levels) -> ClaimVerdict:
    assert claim.top_k is not None
    ((layer, head),) = claim.heads
    return rank_verdict(
        sweep,
        layer,
        head,
        top_k=claim.top_k,
        text=claim.text,
        metric=f"rank:{claim.site}@{format_head(layer, head)}",
        levels=levels,
    )


def _check_together(claim: PatchClaim, evidence: Evidence, levels: Levels) -> ClaimVerdict:
    assert claim.min_recovery is not None
    names = "+".join(format_head(layer, head) for layer, head in claim.heads)
    runs = evidence.runs
    for layer, head in claim.heads:
        missing = missing_head(
            claim.text, claim.site, runs.grid_shape(claim.site), runs.labels(claim.site), layer, head
        )
        if missing is not None:
            return replace(missing, metric=f"recovery:{claim.site}@{names}", threshold=claim.min_recovery)
    patched = runs.heads_together_pairs(claim.site, claim.heads)  # [pair]
    value = float(
        recovery(patched.mean(), clean=runs.clean_metric, corrupted=runs.corrupted_metric, min_gap=runs.min_gap)
    )

    def interval(level: float) -> Interval:
        return recovery_interval(
            patched[:, None], runs.clean_pairs, runs.corrupted_pairs, reduce=only_column, level=level
        )

    return judged(
        interval=interval,
        levels=levels,
        text=claim.text,
        metric=f"recovery:{claim.site}@{names}",
        value=value,
        threshold=claim.min_recovery,
        detail=f"patching {names} together recovers {value:.3f}",
    )


def _explain(case: PatchingCase, evidence: Evidence, verdicts: Sequence[ClaimVerdict]) -> str:
    runs = evidence.runs
    lines = [
        f"clean metric {runs.clean_metric:.3f}, corrupted {runs.corrupted_metric:.3f} ({_metric_in_words(evidence)})",
        f"first pair: clean {case.pairs[0].clean!r} / corrupted {case.pairs[0].corrupted!r}, "
        f"answer {case.pairs[0].answer!r} vs distractor {case.pairs[0].distractor!r}",
    ]
    lines += [f"  {'holds' if v.passed else 'FAILS'}: {v.text} — {v.detail}" for v in verdicts]
    if "z" in evidence.sweeps:
        z = evidence.sweeps["z"].recovery
        order = z.flatten().argsort(descending=True)[:5]
        lines.append(
            "top heads by z recovery: "
            + ", ".join(f"{format_head(*divmod(int(i), z.shape[1]))} {float(z.flatten()[i]):.3f}" for i in order)
        )
    return "\n".join(lines)


def run_patching_checks(
    model: LoadedModel,
    model_name: str,
    cases: Sequence[Case],
    *,
    detail: bool = False,
    interval_level: float = DEFAULT_LEVEL,
    max_memory: int | None = None,
) -> dict[str, CheckOutcome]:
    """The runner of `kind: patching` cases (see seqprobe.checks.completion); `detail` adds the report's figures."""
    import sys

    outcomes: dict[str, CheckOutcome] = {}
    bridge = model.bridge
    # Cases with the same pairs (and ablation) share one set of runs and sweeps, computed for all their claims.
    groups: dict[tuple[tuple[PairSpec, ...], AblationSpec], list[PatchingCase]] = {}
    for case in cases:
        assert isinstance(case, PatchingCase)
        groups.setdefault((case.pairs, case.ablation), []).append(case)
    number = 0
    for (specs, ablation), group in groups.items():
        number += len(group)
        names = ", ".join(case.name for case in group)
        print(f"seqprobe: patching case {number}/{len(cases)}: {names} ({len(specs)} pairs)", file=sys.stderr)
        where = f"{group[0].location} case {group[0].name!r}"
        try:
            pairs = [
                make_pair(
                    bridge, clean=p.clean, corrupted=p.corrupted, answer=p.answer, distractor=p.distractor, where=where
                )
                for p in specs
            ]
            claims = [c for case in group for c in case.claims]
            evidence = gather_evidence(
                bridge, pairs, claims, everything=detail, max_memory=max_memory, ablation=ablation, where=where
            )
        except SeqprobeError as error:
            for case in group:
                outcomes[case.case_id] = CheckOutcome(prompt=specs[0].clean, answer=specs[0].answer, error=error)
            continue
        # The same evidence draws the same pictures: once for every case of the group.
        drawn = figures(evidence, n_pairs=len(specs), level=interval_level) if detail else []
        if detail and evidence.circuits is not None:
            drawn += circuit_figures(evidence.circuits, level=interval_level)
        for case in group:
            outcomes[case.case_id] = _outcome(case, evidence, model_name, interval_level=interval_level, drawn=drawn)
    return outcomes


def _outcome(
    case: PatchingCase, evidence: Evidence, model_name: str, *, interval_level: float, drawn: list[dict[str, Any]]
) -> CheckOutcome:
    """One case's verdicts on evidence it may share with other cases of the same pairs."""
    confidence = case.expect_for(model_name).get("confidence")
    try:
        verdicts = [
            check_claim(claim, evidence, interval_level=interval_level, confidence=confidence) for claim in case.claims
        ]
    except SeqprobeError as error:
        return CheckOutcome(prompt=case.pairs[0].clean, answer=case.pairs[0].answer, error=error)
    return CheckOutcome(
        metrics={v.metric: v.value for v in verdicts},
        failures=tuple(f"{v.text}: {v.detail}" for v in verdicts if not v.passed),
        intervals={v.metric: v.interval for v in verdicts if v.interval is not None},
        explanation=_explain(case, evidence, verdicts),
        details={
            "metric": _metric_in_words(evidence),
            "clean_metric": evidence.runs.clean_metric,
            "corrupted_metric": evidence.runs.corrupted_metric,
            "claims": [v.to_json() for v in verdicts],
            "figures": drawn,
        },
        prompt=case.pairs[0].clean,
        answer=case.pairs[0].answer,
        lower_is_better=tuple(v.metric for v in verdicts if v.lower_is_better),
    )
