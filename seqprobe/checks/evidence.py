"""What a patching case's claims are checked against and its figures drawn from: one case's measurements.

`gather_evidence` computes what the claims read and nothing more: the clean and corrupted runs
once, the cells of each sweep a claim reads (every cell for a rank, or when a report draws the
grids), the linear views when a claim or the report needs them, and the circuit measurements
(paths, ablations, circuits) of seqprobe.checks.circuits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from seqprobe.casefiles.circuit_claims import CurveClaim
from seqprobe.casefiles.circuits import AblationSpec
from seqprobe.casefiles.claims import AttributionClaim, Claim, LogitLensClaim, PatchClaim
from seqprobe.casefiles.path_claims import PathClaim
from seqprobe.vocabulary.heads import resolve_layer
from seqprobe.vocabulary.sites import POSITION_SITES, SITES

if TYPE_CHECKING:
    from torch import Tensor
    from transformer_lens.model_bridge import TransformerBridge

    from seqprobe.checks.circuits import CircuitEvidence
    from seqprobe.engine.attribution import DirectAttribution, LogitLens
    from seqprobe.engine.patching import PatchingPair, PatchingRuns, SweepResult

__all__ = ["Evidence", "gather_evidence"]


@dataclass(frozen=True)
class Evidence:
    """Everything a case's claims are checked against."""

    runs: PatchingRuns
    sweeps: Mapping[str, SweepResult]
    # Attribution-patching estimates, computed only when a claim asks for them.
    estimates: Mapping[str, SweepResult]
    # Computed when a claim or the report needs them.
    lens: LogitLens | None
    attribution: DirectAttribution | None
    # Paths, ablations and circuits, when a claim states one.
    circuits: CircuitEvidence | None = None


def gather_evidence(
    bridge: TransformerBridge,
    pairs: Sequence[PatchingPair],
    claims: Sequence[Claim],
    *,
    everything: bool = False,
    max_memory: int | None = None,
    ablation: AblationSpec | None = None,
    where: str = "patching",
) -> Evidence:
    """What the claims need; with `everything`, every sweep and view the report draws.

    `max_memory` bounds each sweep's stacked batch in bytes (seqprobe.engine.memory); `ablation`
    is the case's, which its ablation and circuit claims use unless a claim names its own method;
    `where` names the case in errors.
    """
    from seqprobe.checks.circuits import gather_circuits
    from seqprobe.engine.attribution import (
        DLA_NEEDS,
        LENS_NEEDS,
        attribution_patching,
        direct_logit_attribution,
        logit_lens,
    )
    from seqprobe.engine.patching import prepare_patching

    exact = [c for c in claims if isinstance(c, PatchClaim) and c.method == "exact"]
    # A faithfulness curve ranked by z patching reads the whole z grid.
    ranked_by_z = any(isinstance(c, CurveClaim) and c.ranking == "z" for c in claims)
    # Heads patched together need the runs of their site, not its sweep.
    swept = {c.site for c in exact if c.site in POSITION_SITES or c.top_k is not None} | (
        {"z"} if ranked_by_z else set()
    )
    sites = SITES if everything else tuple(site for site in SITES if site in swept)
    estimated = sorted({c.site for c in claims if isinstance(c, PatchClaim) and c.method == "attribution"})
    together = {c.site for c in exact if c.site not in POSITION_SITES and c.top_k is None}
    # The linear views read one answer logit: a report draws them only for one-token pairs, and a
    # claim on them with longer answers fails with the reason (PatchingRuns.token_ids).
    linear = all(len(p.answer_ids) == len(p.distractor_ids) == 1 for p in pairs)
    wants_lens = (everything and linear) or any(isinstance(c, LogitLensClaim) for c in claims)
    wants_attribution = (everything and linear) or any(isinstance(c, AttributionClaim) for c in claims)
    prepared = tuple(site for site in SITES if site in {*sites, *estimated, *together}) or ("resid_pre",)
    runs = prepare_patching(
        bridge,
        pairs,
        sites=prepared,
        keep_clean=(LENS_NEEDS if wants_lens else frozenset()) | (DLA_NEEDS if wants_attribution else frozenset()),
        max_memory=max_memory,
        paths=any(
            isinstance(c, PathClaim) or (isinstance(c, CurveClaim) and c.ranking == "path_logits") for c in claims
        ),
    )
    sweeps = {
        site: runs.sweep(
            site, cells=None if everything or (site == "z" and ranked_by_z) else _cells_read(site, exact, runs)
        )
        for site in sites
    }
    return Evidence(
        runs=runs,
        sweeps=sweeps,
        estimates=attribution_patching(runs, sites=estimated) if estimated else {},
        lens=logit_lens(runs) if wants_lens else None,
        attribution=direct_logit_attribution(runs) if wants_attribution else None,
        circuits=gather_circuits(
            runs,
            sweeps,
            claims,
            ablation=ablation or AblationSpec(),
            everything=everything,
            max_memory=max_memory,
            where=where,
        ),
    )


def _cells_read(site: str, claims: Sequence[PatchClaim], runs: PatchingRuns) -> Tensor | None:
    """The cells of `site`'s grid the claims read: a layer range of one column each; None (all) for a rank."""
    import torch

    on_site = [c for c in claims if c.site == site]
    if any(c.top_k is not None for c in on_site):
        return None
    n_layers, n_columns = runs.grid_shape(site)
    cells = torch.zeros(n_layers, n_columns, dtype=torch.bool)
    for claim in on_site:
        assert claim.layers is not None and claim.at is not None
        first, last = (resolve_layer(spec, n_layers) for spec in claim.layers)
        cells[first : last + 1, runs.column(site, claim.at)] = True
    return cells
