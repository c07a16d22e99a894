"""The verdicts of circuit claims, on what seqprobe.checks.circuits measured.

Path claims read patching's recovery, (patched − corrupted) / (clean − corrupted), or a receiver's
rank in its sweep; ablation, faithfulness, necessity and curve claims read the circuit scale,
(m − m(∅)) / (m(full) − m(∅)): 0 = the whole scope switched off, 1 = the clean model. Every number
gets its interval over the pairs; what is left after switching components off, and a rank, pass
below their bar. Each claim's baseline metric names its family, what it measures and the ablation
(`metric_name`), so a change of ablation is a new metric, never a silent change of an old one.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from seqprobe.casefiles.circuit_claims import AblateClaim, CurveClaim, FaithfulnessClaim, NecessityClaim
from seqprobe.casefiles.path_claims import PathClaim
from seqprobe.checks.circuits import ablation_of
from seqprobe.checks.judging import ClaimVerdict, Levels, judged, only_column, rank_verdict, recovery_interval
from seqprobe.engine.metric import recovery
from seqprobe.records.intervals import Interval
from seqprobe.vocabulary.circuits import LOGITS
from seqprobe.vocabulary.heads import format_head

if TYPE_CHECKING:
    import numpy as np
    from jaxtyping import Float
    from numpy.typing import NDArray
    from torch import Tensor

    from seqprobe.casefiles.claims import Claim
    from seqprobe.checks.circuits import CircuitEvidence, Curve
    from seqprobe.engine.circuits import CircuitRuns

__all__ = ["check_circuit_claim", "metric_name"]


def check_circuit_claim(claim: Claim, evidence: CircuitEvidence, levels: Levels) -> ClaimVerdict:
    """One circuit claim's verdict, judged like every claim (seqprobe.checks.judging)."""
    metric = metric_name(claim, method=ablation_of(claim, evidence.ablation).method)
    if claim in evidence.absent:
        return ClaimVerdict(
            text=claim.text,
            metric=metric,
            value=math.nan,
            threshold=_threshold(claim),
            passed=False,
            detail=evidence.absent[claim],
            lower_is_better=_lower_is_better(claim),
        )
    if isinstance(claim, PathClaim):
        return _check_path(claim, evidence, levels, metric=metric)
    if isinstance(claim, CurveClaim):
        return _check_curve(claim, evidence.curves[claim], levels, metric=metric)
    assert isinstance(claim, (AblateClaim, FaithfulnessClaim, NecessityClaim))
    circuit_runs = evidence.circuit_runs[claim]
    patched = evidence.measured[claim]  # [pair]
    value = float(circuit_runs.fraction(patched.mean()))
    if isinstance(claim, FaithfulnessClaim):
        what = f"circuit {_circuit_name(claim)} alone keeps"
    elif isinstance(claim, NecessityClaim):
        what = f"switching off circuit {_circuit_name(claim)} leaves"
    else:
        names = "+".join(c.name for c in claim.components)
        what = f"{'switching off' if claim.direction == 'noising' else 'giving back only'} {names} leaves"
    return _on_scale(
        claim,
        levels,
        metric=metric,
        value=value,
        patched=patched,
        ends=(circuit_runs.full_pairs, circuit_runs.empty_pairs),
        detail=f"{what} {value:.3f} of the clean behaviour ({_scale_words(circuit_runs)})",
    )


def metric_name(claim: Claim, *, method: str) -> str:
    """A circuit claim's baseline metric: its family (seqprobe.vocabulary.metrics), what it measures, the ablation.

    "recovery:path:L23H3->logits", "rank:path:L20H0->L23H0.q", "fraction:noising:L23H3@all/mean",
    "faithfulness:ioi/mean", "curve_area:path_logits[1..20]/mean".
    """
    if isinstance(claim, PathClaim):
        senders = "+".join(format_head(*head) for head in claim.senders)
        receivers = "+".join(format_head(*head, key_value=claim.key_value) for head in claim.receivers)
        if claim.top_k is not None:
            return f"rank:path:{senders}->{receivers}.{claim.input}"
        return f"recovery:path:{senders}->{LOGITS if claim.input == LOGITS else f'{receivers}.{claim.input}'}"
    if isinstance(claim, CurveClaim):
        return f"curve_area:{claim.ranking}[1..{claim.max_k}]/{method}"
    if isinstance(claim, FaithfulnessClaim):
        return f"faithfulness:{_circuit_name(claim)}/{method}"
    if isinstance(claim, NecessityClaim):
        return f"fraction:noising:{_circuit_name(claim)}/{method}"
    assert isinstance(claim, AblateClaim)
    names = "+".join(c.name for c in claim.components)
    return f"fraction:{claim.direction}:{names}@{'all' if claim.at is None else claim.at}/{method}"


def _threshold(claim: Claim) -> float:
    if isinstance(claim, PathClaim):
        return float(claim.top_k) if claim.top_k is not None else float(claim.min_recovery)  # type: ignore[arg-type]
    if isinstance(claim, CurveClaim):
        return math.nan if claim.min_area is None else claim.min_area
    if isinstance(claim, FaithfulnessClaim):
        return claim.min_faithfulness
    if isinstance(claim, NecessityClaim):
        return claim.max_fraction
    assert isinstance(claim, AblateClaim)
    bound = claim.max_fraction if claim.direction == "noising" else claim.min_fraction
    assert bound is not None
    return bound


def _lower_is_better(claim: Claim) -> bool:
    """Ranks, and what is left after switching components off, pass below their bar."""
    if isinstance(claim, PathClaim):
        return claim.top_k is not None
    return isinstance(claim, NecessityClaim) or (isinstance(claim, AblateClaim) and claim.direction == "noising")


def _check_path(claim: PathClaim, evidence: CircuitEvidence, levels: Levels, *, metric: str) -> ClaimVerdict:
    runs = evidence.runs
    if claim.top_k is not None:
        ((layer, column),) = claim.receivers
        sweep = evidence.path_sweeps[claim.senders, claim.input]
        return rank_verdict(sweep, layer, column, top_k=claim.top_k, text=claim.text, metric=metric, levels=levels)
    assert claim.min_recovery is not None
    senders = "+".join(format_head(*head) for head in claim.senders)
    receivers = "+".join(format_head(*head, key_value=claim.key_value) for head in claim.receivers)
    target = LOGITS if claim.input == LOGITS else f"{receivers}'s {claim.input} input"
    patched = evidence.measured[claim]  # [pair]
    value = float(
        recovery(patched.mean(), clean=runs.clean_metric, corrupted=runs.corrupted_metric, min_gap=runs.min_gap)
    )
    return _on_scale(
        claim,
        levels,
        metric=metric,
        value=value,
        patched=patched,
        ends=(runs.clean_pairs, runs.corrupted_pairs),
        detail=f"the path from {senders} to {target} alone recovers {value:.3f}",
    )


def _on_scale(
    claim: Claim,
    levels: Levels,
    *,
    metric: str,
    value: float,
    patched: Float[Tensor, " pair"],
    ends: tuple[Float[Tensor, " pair"], Float[Tensor, " pair"]],
    detail: str,
) -> ClaimVerdict:
    """The verdict on `value`, `patched`'s mean on the scale whose 1 and 0 are `ends`' means, with its interval."""
    one, zero = ends
    return judged(
        interval=lambda level: recovery_interval(patched[:, None], one, zero, reduce=only_column, level=level),
        levels=levels,
        text=claim.text,
        metric=metric,
        value=value,
        threshold=_threshold(claim),
        detail=detail,
        lower_is_better=_lower_is_better(claim),
    )


def _check_curve(claim: CurveClaim, curve: Curve, levels: Levels, *, metric: str) -> ClaimVerdict:
    circuit_runs = curve.runs
    fractions = circuit_runs.fraction(curve.metric.mean(-1))  # [k]
    area = float(fractions.mean())
    best = int(fractions.argmax())
    detail = (
        f"mean faithfulness {area:.3f} over k = 1..{len(curve.ranking)} ({_scale_words(circuit_runs)}); "
        f"highest {float(fractions[best]):.3f} at k = {best + 1}; top 3: {', '.join(c.name for c in curve.ranking[:3])}"
    )

    def interval(level: float) -> Interval:
        return recovery_interval(
            curve.metric.T, circuit_runs.full_pairs, circuit_runs.empty_pairs, reduce=_mean, level=level
        )

    if claim.min_area is None:
        # A curve drawn without a bar: its area is recorded, and a baseline catches it moving.
        return ClaimVerdict(
            text=claim.text,
            metric=metric,
            value=area,
            threshold=math.nan,
            passed=True,
            detail=detail + "; no bar: recorded for baselines",
            interval=interval(levels.report),
        )
    return judged(
        interval=interval,
        levels=levels,
        text=claim.text,
        metric=metric,
        value=area,
        threshold=claim.min_area,
        detail=detail,
    )


def _scale_words(circuit_runs: CircuitRuns) -> str:
    """What 0 and 1 mean on the circuit scale, in this case's numbers."""
    return (
        f"0 = scope {circuit_runs.scope} switched off, metric {circuit_runs.empty_metric:.3f}; "
        f"1 = the clean model, {circuit_runs.full_metric:.3f}; {circuit_runs.method} ablation"
    )


def _circuit_name(claim: FaithfulnessClaim | NecessityClaim) -> str:
    return claim.circuit or "+".join(c.name for c in claim.components)


def _mean(values: NDArray[np.float64]) -> NDArray[np.float64]:
    """The `reduce` of a curve's area: [resample k] -> [resample], the mean over its points."""
    return values.mean(axis=1)
