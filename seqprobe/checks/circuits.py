"""Circuit claims: paths between heads, ablations in both directions, and a named circuit's faithfulness.

A case's circuit claims are measured together, on the runs its other claims use:

- `path:` claims read seqprobe.engine.path_patching through `PatchingRuns`: a receiver's rank in
  the sweep over every receiver of its senders (the sweep is computed once per senders and
  input), or the recovery when the senders' write reaches the named receivers (or the logits)
  alone. Recovery is patching's: (patched − corrupted) / (clean − corrupted).
- `ablate:`, `faithfulness:`, `necessity:` and `faithfulness_curve:` read seqprobe.engine.circuits,
  one `CircuitRuns` per ablation (the case's, or the method a claim names). Every circuit of a
  case's claims — the faithfulness claims' and each curve's top-1..top-K — is evaluated in one
  batched run, and the ablations of each direction and position in one more. Their numbers are
  on the circuit scale: (m − m(∅)) / (m(full) − m(∅)), 0 = the whole scope switched off, 1 = the
  clean model, with an interval over the pairs like recovery's.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from seqprobe.casefiles.circuit_claims import AblateClaim, CurveClaim, FaithfulnessClaim, NecessityClaim
from seqprobe.casefiles.circuits import AblationSpec
from seqprobe.casefiles.path_claims import PathClaim
from seqprobe.checks.judging import ClaimVerdict, Levels, judged, only_column, rank_verdict, recovery_interval
from seqprobe.errors import TokenizationError
from seqprobe.records.intervals import Interval
from seqprobe.vocabulary.circuits import LOGITS, Component
from seqprobe.vocabulary.heads import format_head

if TYPE_CHECKING:
    import numpy as np
    from jaxtyping import Float
    from numpy.typing import NDArray
    from torch import Tensor

    from seqprobe.casefiles.claims import Claim
    from seqprobe.engine.circuits import CircuitRuns
    from seqprobe.engine.patching import PatchingRuns, SweepResult

__all__ = ["CIRCUIT_CLAIMS", "CircuitEvidence", "Curve", "check_circuit_claim", "gather_circuits"]

CIRCUIT_CLAIMS = (PathClaim, AblateClaim, FaithfulnessClaim, NecessityClaim, CurveClaim)
Heads = tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class Curve:
    """A faithfulness curve: the top-1..top-K components of a ranking, each prefix evaluated as a circuit."""

    ranking: tuple[Component, ...]
    # Each prefix's metric per pair: row k-1 is the circuit of the top k.
    metric: Float[Tensor, "k pair"]
    runs: CircuitRuns
    ablation: AblationSpec


@dataclass(frozen=True)
class CircuitEvidence:
    """What a case's circuit claims are checked against, and what its report draws of them."""

    runs: PatchingRuns
    # (senders, input) -> the sweep over every receiver of that input.
    path_sweeps: Mapping[tuple[Heads, str], SweepResult]
    # Every head alone, its direct path to the logits: a ranking, and a figure.
    path_logits: SweepResult | None
    # Each claim measured on its pairs: a path's or an ablation's metric [pair], a circuit's [pair].
    measured: Mapping[Claim, Float[Tensor, " pair"]]
    curves: Mapping[CurveClaim, Curve]
    # The circuit runs (their m(full) and m(∅)) each ablation or circuit claim was measured on.
    circuit_runs: Mapping[Claim, CircuitRuns]


def ablation_of(claim: Claim, ablation: AblationSpec) -> AblationSpec:
    """The ablation a claim is measured under: the case's, with the method the claim names."""
    method = getattr(claim, "method", None)
    return ablation if method is None or method == ablation.method else replace(ablation, method=method)


def gather_circuits(
    runs: PatchingRuns,
    sweeps: Mapping[str, SweepResult],
    claims: Sequence[Claim],
    *,
    ablation: AblationSpec,
    everything: bool = False,
    max_memory: int | None = None,
    where: str = "patching",
) -> CircuitEvidence | None:
    """Measure every circuit claim of `claims` on `runs`, batched per ablation; None when there are none.

    `sweeps` are the case's patching sweeps (a curve ranked by `z` reads the whole z grid);
    `everything` also computes the path sweeps a report draws for the receivers claims name.
    """
    ours = [claim for claim in claims if isinstance(claim, CIRCUIT_CLAIMS)]
    if not ours:
        return None
    paths = [claim for claim in ours if isinstance(claim, PathClaim)]
    path_sweeps = {
        (claim.senders, claim.input): runs.path_sweep(claim.senders, claim.input)
        for claim in paths
        if claim.input != LOGITS and (claim.top_k is not None or everything)
    }
    wants_logits = any(isinstance(c, CurveClaim) and c.ranking == "path_logits" for c in ours)
    path_logits = runs.path_logits_sweep() if wants_logits or (everything and paths) else None
    measured: dict[Claim, Tensor] = {
        claim: runs.path_pairs(claim.senders, input=claim.input, receivers=claim.receivers)
        for claim in paths
        if claim.top_k is None
    }
    ablated = [claim for claim in ours if not isinstance(claim, PathClaim)]
    specs = {ablation_of(claim, ablation) for claim in ablated}
    circuit_runs = {spec: _circuit_runs(runs, spec, max_memory=max_memory, where=where) for spec in specs}
    rankings = {claim: _ranking(claim, sweeps, path_logits) for claim in ablated if isinstance(claim, CurveClaim)}
    curves: dict[CurveClaim, Curve] = {}
    for spec, circuit_run in circuit_runs.items():
        mine = [claim for claim in ablated if ablation_of(claim, ablation) == spec]
        measured |= _measure(circuit_run, mine, rankings, runs=runs)
        for claim in mine:
            if isinstance(claim, CurveClaim):
                ranking = rankings[claim][: claim.max_k]
                curves[claim] = Curve(ranking=ranking, metric=measured.pop(claim), runs=circuit_run, ablation=spec)
    return CircuitEvidence(
        runs=runs,
        path_sweeps=path_sweeps,
        path_logits=path_logits,
        measured=measured,
        curves=curves,
        circuit_runs={claim: circuit_runs[ablation_of(claim, ablation)] for claim in ablated},
    )


def _circuit_runs(runs: PatchingRuns, spec: AblationSpec, *, max_memory: int | None, where: str) -> CircuitRuns:
    from seqprobe.engine.circuits import CircuitRuns

    return CircuitRuns(
        runs.bridge,
        runs.pairs,
        method=spec.method,
        scope=spec.scope,
        reference=_reference_rows(runs, spec, where=where),
        max_memory=max_memory,
    )


def _reference_rows(runs: PatchingRuns, spec: AblationSpec, *, where: str) -> list[Tensor] | None:
    """The mean ablation's reference prompts as token rows, each as long as the pairs' prompts."""
    import torch

    from seqprobe.engine.scoring import prompt_token_ids

    reference = spec.reference
    if spec.method != "mean" or reference is None:
        return None
    if reference.from_corrupted:
        return [pair.corrupted for pair in runs.pairs]
    rows = [torch.tensor(prompt_token_ids(runs.bridge, prompt, where=where)) for prompt in reference.prompts]
    length = runs.pairs[0].clean.numel()
    wrong = [
        (prompt, row.numel()) for prompt, row in zip(reference.prompts, rows, strict=True) if row.numel() != length
    ]
    if wrong:
        prompt, n_tokens = wrong[0]
        raise TokenizationError(
            f"{where}: mean ablation averages each position over the reference prompts, so they must be as long as "
            f"the pairs' prompts ({length} tokens); {len(wrong)} of {len(rows)} are not, e.g. {prompt!r} is "
            f"{n_tokens} tokens. Use reference prompts that differ from the pairs' only in words of one token",
            path=reference.path,
            line=reference.line,
        )
    return rows


def _ranking(
    claim: CurveClaim, sweeps: Mapping[str, SweepResult], path_logits: SweepResult | None
) -> tuple[Component, ...]:
    """Every head, best first, by z patching's recovery or by its direct path to the logits."""
    grid = sweeps["z"].recovery if claim.ranking == "z" else path_logits.recovery  # type: ignore[union-attr]
    n_heads = grid.shape[1]
    order = grid.flatten().nan_to_num(nan=-math.inf).argsort(descending=True, stable=True)
    return tuple(Component(layer=int(i) // n_heads, kind="head", head=int(i) % n_heads) for i in order)


def _measure(
    circuit_runs: CircuitRuns,
    claims: Sequence[Claim],
    rankings: Mapping[CurveClaim, tuple[Component, ...]],
    *,
    runs: PatchingRuns,
) -> dict[Claim, Tensor]:
    """Each claim's metric under one ablation: every circuit in one batched run, each direction's ablations in one."""
    circuits: dict[frozenset[Component], int] = {}
    configs: dict[tuple[str, int | None], dict[frozenset[Component], int]] = {}

    def enlist(table: dict[frozenset[Component], int], components: Sequence[Component]) -> frozenset[Component]:
        key = frozenset(components)
        table.setdefault(key, len(table))
        return key

    wanted: dict[Claim, tuple[str, int | None, list[frozenset[Component]]]] = {}
    for claim in claims:
        if isinstance(claim, FaithfulnessClaim):
            wanted[claim] = ("circuit", None, [enlist(circuits, claim.components)])
        elif isinstance(claim, CurveClaim):
            ranking = rankings[claim][: claim.max_k]
            wanted[claim] = ("circuit", None, [enlist(circuits, ranking[: k + 1]) for k in range(len(ranking))])
        else:
            assert isinstance(claim, (AblateClaim, NecessityClaim))
            direction = claim.direction if isinstance(claim, AblateClaim) else "noising"
            at = runs.column("resid_pre", claim.at) if isinstance(claim, AblateClaim) and claim.at is not None else None
            table = configs.setdefault((direction, at), {})
            wanted[claim] = (direction, at, [enlist(table, claim.components)])
    results: dict[tuple[str, int | None], Tensor] = {}
    if circuits:
        results["circuit", None] = circuit_runs.evaluate([sorted(c) for c in circuits])  # [circuit pair]
    for (direction, at), table in configs.items():
        results[direction, at] = circuit_runs.ablated([sorted(c) for c in table], direction=direction, at=at)
    measured = {}
    for claim, (kind, at, keys) in wanted.items():
        table = circuits if kind == "circuit" else configs[kind, at]
        rows = results[kind, at][[table[key] for key in keys]]  # [config pair]
        measured[claim] = rows if isinstance(claim, CurveClaim) else rows[0]
    return measured


def check_circuit_claim(claim: Claim, evidence: CircuitEvidence, levels: Levels) -> ClaimVerdict:
    """One circuit claim's verdict, judged like every claim (seqprobe.checks.judging)."""
    if isinstance(claim, PathClaim):
        return _check_path(claim, evidence, levels)
    if isinstance(claim, CurveClaim):
        return _check_curve(claim, evidence.curves[claim], levels)
    assert isinstance(claim, (AblateClaim, FaithfulnessClaim, NecessityClaim))
    circuit_runs = evidence.circuit_runs[claim]
    patched = evidence.measured[claim]  # [pair]
    value = float(circuit_runs.fraction(patched.mean()))
    lower_is_better = isinstance(claim, NecessityClaim) or (
        isinstance(claim, AblateClaim) and claim.direction == "noising"
    )
    if isinstance(claim, FaithfulnessClaim):
        threshold, family, what = claim.min_faithfulness, "faithfulness", f"circuit {_circuit_name(claim)} alone keeps"
        subject = _circuit_name(claim)
    elif isinstance(claim, NecessityClaim):
        threshold, family, what = claim.max_fraction, "fraction", f"switching off circuit {_circuit_name(claim)} leaves"
        subject = f"noising:{_circuit_name(claim)}"
    else:
        bound = claim.max_fraction if claim.direction == "noising" else claim.min_fraction
        assert bound is not None
        names = "+".join(c.name for c in claim.components)
        threshold, family = bound, "fraction"
        what = f"{'switching off' if claim.direction == 'noising' else 'giving back only'} {names} leaves"
        subject = f"{claim.direction}:{names}@{'all' if claim.at is None else claim.at}"
    method = circuit_runs.method
    return judged(
        interval=lambda level: recovery_interval(
            patched[:, None], circuit_runs.full_pairs, circuit_runs.empty_pairs, reduce=only_column, level=level
        ),
        levels=levels,
        text=claim.text,
        metric=f"{family}:{subject}/{method}",
        value=value,
        threshold=threshold,
        detail=f"{what} {value:.3f} of the clean behaviour ({_scale_words(circuit_runs)})",
        lower_is_better=lower_is_better,
    )


def _check_path(claim: PathClaim, evidence: CircuitEvidence, levels: Levels) -> ClaimVerdict:
    runs = evidence.runs
    senders = "+".join(format_head(*head) for head in claim.senders)
    receivers = "+".join(format_head(*head, key_value=claim.key_value) for head in claim.receivers)
    if claim.top_k is not None:
        ((layer, column),) = claim.receivers
        sweep = evidence.path_sweeps[claim.senders, claim.input]
        metric = f"rank:path:{senders}->{receivers}.{claim.input}"
        return rank_verdict(sweep, layer, column, top_k=claim.top_k, text=claim.text, metric=metric, levels=levels)
    assert claim.min_recovery is not None
    target = LOGITS if claim.input == LOGITS else f"{receivers}.{claim.input}"
    patched = evidence.measured[claim]  # [pair]
    value = float((patched.mean() - runs.corrupted_metric) / (runs.clean_metric - runs.corrupted_metric))
    return judged(
        interval=lambda level: recovery_interval(
            patched[:, None], runs.clean_pairs, runs.corrupted_pairs, reduce=only_column, level=level
        ),
        levels=levels,
        text=claim.text,
        metric=f"recovery:path:{senders}->{target}",
        value=value,
        threshold=claim.min_recovery,
        detail=f"the path from {senders} to {target} alone recovers {value:.3f}",
    )


def _check_curve(claim: CurveClaim, curve: Curve, levels: Levels) -> ClaimVerdict:
    circuit_runs = curve.runs
    fractions = circuit_runs.fraction(curve.metric.mean(-1))  # [k]
    area = float(fractions.mean())
    best = int(fractions.argmax())
    detail = (
        f"mean faithfulness {area:.3f} over k = 1..{len(curve.ranking)} ({_scale_words(circuit_runs)}); "
        f"highest {float(fractions[best]):.3f} at k = {best + 1}; top 3: {', '.join(c.name for c in curve.ranking[:3])}"
    )
    metric = f"curve_area:{claim.ranking}[1..{len(curve.ranking)}]/{circuit_runs.method}"

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
