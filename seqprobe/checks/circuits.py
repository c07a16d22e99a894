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

A claim that names a head or component the model lacks is not measured and fails with what the
model has, as a patch claim on a missing head does; the case's other claims are measured as usual.
The verdicts are seqprobe.checks.circuit_verdicts'.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from seqprobe.casefiles.circuit_claims import AblateClaim, CurveClaim, FaithfulnessClaim, NecessityClaim
from seqprobe.casefiles.circuits import AblationSpec
from seqprobe.casefiles.path_claims import PathClaim
from seqprobe.errors import TokenizationError
from seqprobe.vocabulary.circuits import LOGITS, Component
from seqprobe.vocabulary.heads import format_head

if TYPE_CHECKING:
    from jaxtyping import Float
    from torch import Tensor

    from seqprobe.casefiles.claims import Claim
    from seqprobe.engine.circuits import CircuitRuns
    from seqprobe.engine.forward import ResumableForward
    from seqprobe.engine.patching import PatchingRuns, SweepResult

__all__ = ["CIRCUIT_CLAIMS", "CircuitEvidence", "Curve", "ablation_of", "gather_circuits"]

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
    # Claims that name a head or component the model lacks, with what it has: they fail, unmeasured.
    absent: Mapping[Claim, str]
    # The case's ablation, which names the metrics of claims that were not measured.
    ablation: AblationSpec


def ablation_of(claim: Claim, ablation: AblationSpec) -> AblationSpec:
    """The ablation a claim is measured under: the case's, with the method an `ablate:` claim names."""
    method = claim.method if isinstance(claim, AblateClaim) else None
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
    named = [claim for claim in claims if isinstance(claim, CIRCUIT_CLAIMS)]
    if not named:
        return None
    # A claim on a head this model lacks fails on its own; the case's other claims are still measured.
    absent = {claim: words for claim in named if (words := _unmeasurable(claim, runs.forward))}
    ours = [claim for claim in named if claim not in absent]
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
    circuit_runs = {
        spec: _circuit_runs(runs, spec, max_memory=max_memory, where=where)
        for spec in {ablation_of(claim, ablation) for claim in ablated}
    }
    runs_of = {claim: circuit_runs[ablation_of(claim, ablation)] for claim in ablated}
    rankings = {
        claim: _ranking(claim, sweeps, path_logits)[: claim.max_k] for claim in ablated if isinstance(claim, CurveClaim)
    }
    for circuit_run in circuit_runs.values():
        mine = [claim for claim in ablated if runs_of[claim] is circuit_run]
        measured |= _measure(circuit_run, mine, rankings, runs=runs)
    curves = {
        claim: Curve(
            ranking=ranking, metric=measured[claim], runs=runs_of[claim], ablation=ablation_of(claim, ablation)
        )
        for claim, ranking in rankings.items()
    }
    return CircuitEvidence(
        runs=runs,
        path_sweeps=path_sweeps,
        path_logits=path_logits,
        measured={claim: metric for claim, metric in measured.items() if claim not in curves},
        curves=curves,
        circuit_runs=runs_of,
        absent=absent,
        ablation=ablation,
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


# A batched call: every circuit ("circuit", None), or the ablations of one direction at one position.
_Batch = tuple[str, int | None]


def _measure(
    circuit_runs: CircuitRuns,
    claims: Sequence[Claim],
    rankings: Mapping[CurveClaim, tuple[Component, ...]],
    *,
    runs: PatchingRuns,
) -> dict[Claim, Tensor]:
    """Each claim's metric under one ablation: every circuit in one batched run, each direction's ablations in one.

    A curve's is [k pair] (its prefixes top-1..top-K), any other claim's [pair].
    """
    batches: dict[_Batch, dict[frozenset[Component], int]] = {}
    rows_of: dict[Claim, tuple[_Batch, list[int]]] = {}
    for claim in claims:
        batch, sets = _configurations(claim, rankings, runs=runs)
        table = batches.setdefault(batch, {})
        rows_of[claim] = (batch, [table.setdefault(frozenset(components), len(table)) for components in sets])
    results = {}
    for (kind, at), table in batches.items():
        configs = [sorted(components) for components in table]
        results[kind, at] = (
            circuit_runs.evaluate(configs)
            if kind == "circuit"
            else circuit_runs.ablated(configs, direction=kind, at=at)
        )  # [config pair]
    measured = {claim: results[batch][rows] for claim, (batch, rows) in rows_of.items()}  # [config pair]
    return {claim: metric if isinstance(claim, CurveClaim) else metric[0] for claim, metric in measured.items()}


def _configurations(
    claim: Claim, rankings: Mapping[CurveClaim, tuple[Component, ...]], *, runs: PatchingRuns
) -> tuple[_Batch, list[Sequence[Component]]]:
    """The batched call a claim is measured in, and the component sets it reads there."""
    if isinstance(claim, FaithfulnessClaim):
        return ("circuit", None), [claim.components]
    if isinstance(claim, CurveClaim):
        ranking = rankings[claim]
        return ("circuit", None), [ranking[: k + 1] for k in range(len(ranking))]
    if isinstance(claim, NecessityClaim):
        return ("noising", None), [claim.components]
    assert isinstance(claim, AblateClaim)
    at = None if claim.at is None else runs.column("resid_pre", claim.at)
    return (claim.direction, at), [claim.components]


def _unmeasurable(claim: Claim, forward: ResumableForward) -> str:
    """Why a claim cannot be measured on this model (a head it lacks, with what it has); "" when it can."""
    from seqprobe.engine.circuits import absent_components

    if isinstance(claim, CurveClaim):
        return ""
    grouped = forward.n_kv_heads != forward.n_heads
    if isinstance(claim, PathClaim) and claim.input in ("k", "v") and grouped and not claim.key_value:
        return (
            f"this model's {forward.n_heads} query heads share {forward.n_kv_heads} key/value heads, so a {claim.input} "
            f"receiver is a key/value head: write it L<layer>KV<head> (e.g. L1KV0), as the {claim.input} sweep's columns are"
        )
    if isinstance(claim, PathClaim):
        n_receivers = forward.n_kv_heads if claim.key_value else forward.n_heads
        heads = [(head, forward.n_heads, False) for head in claim.senders]
        heads += [(head, n_receivers, claim.key_value) for head in claim.receivers]
        missing = [
            format_head(*head, key_value=key_value)
            for head, n_heads, key_value in heads
            if not (head[0] < forward.n_layers and head[1] < n_heads)
        ]
    else:
        missing = [c.name for c in absent_components(forward, claim.components)]
    if not missing:
        return ""
    kv = f", {forward.n_kv_heads} key/value heads" if grouped else ""
    return (
        f"this model has no {', '.join(missing)}: it has layers 0..{forward.n_layers - 1} and {forward.n_heads} "
        f"heads (0..{forward.n_heads - 1}){kv} per layer"
    )
