"""Running mechanistic cases: patch, attribute, check each claim, and draw the study's pictures.

For each `kind: patching` case the clean and corrupted prompts are run once and cached; every
patching site's grid comes from seqprobe's exact engine (`seqprobe.engine.patching`), the logit lens and
direct logit attribution from `seqprobe.engine.attribution`, all on one metric — logit(answer) −
logit(distractor) at the final position, averaged over the case's pairs — and recovery =
(patched − corrupted) / (clean − corrupted). Heads claimed to work *together* are patched together
in one run through the bridge's hooks (a sum of single-head recoveries would not be the same).
Attribution patching is used for a claim only when the claim says `method: attribution`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import torch

from seqprobe.cases.patching import AttributionClaim, Claim, LogitLensClaim, PatchClaim, PatchingCase
from seqprobe.checks.outcome import CheckOutcome
from seqprobe.engine.patching import (
    PatchingPair,
    PatchingRuns,
    SweepResult,
    logit_diff_metric,
    make_pair,
    prepare_patching,
    recovery,
)
from seqprobe.errors import PatchingError, SeqprobeError
from seqprobe.records.plots import AttentionHead, AttentionSpec, HeatmapSpec, LineSpec, ScatterSpec
from seqprobe.vocabulary.heads import resolve_layer
from seqprobe.vocabulary.sites import HEAD_SITES, POSITION_SITES, SITES

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

    from seqprobe.cases.base import Case
    from seqprobe.engine.attribution import DirectAttribution, LogitLens
    from seqprobe.loading.models import LoadedModel

__all__ = ["ClaimVerdict", "Evidence", "check_claim", "gather_evidence", "run_patching_checks"]

TOP_HEADS_SHOWN = 3
METRIC_IN_WORDS = (
    "metric = logit(answer) − logit(distractor) at the final position, averaged over {n} pair(s), the same "
    "function for the clean, corrupted and patched runs; recovery = (patched − corrupted) / (clean − corrupted): "
    "0 = the patch restores nothing, 1 = all of the clean behaviour"
)

_HOOKS = {"z": "blocks.{}.attn.hook_z", "v": "blocks.{}.attn.hook_v", "pattern": "blocks.{}.attn.hook_pattern"}


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


@dataclass(frozen=True)
class ClaimVerdict:
    text: str
    # Baseline metric name, e.g. "recovery:resid_pre@substituted[0..0.5]".
    metric: str
    value: float
    threshold: float
    passed: bool
    # Why, in numbers: the worst layer, the rank reached, the layer the lens got there.
    detail: str
    lower_is_better: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"text": self.text, "value": self.value, "threshold": self.threshold, "passed": self.passed}


def gather_evidence(
    bridge: TransformerBridge, pairs: Sequence[PatchingPair], claims: Sequence[Claim], *, everything: bool = False
) -> Evidence:
    """What the claims need; with `everything`, every sweep and view the report draws."""
    from seqprobe.engine.attribution import attribution_patching, direct_logit_attribution, logit_lens

    needed = {c.site for c in claims if isinstance(c, PatchClaim) and c.method == "exact"}
    sites = SITES if everything else tuple(site for site in SITES if site in needed)
    estimated = sorted({c.site for c in claims if isinstance(c, PatchClaim) and c.method == "attribution"})
    runs = prepare_patching(bridge, pairs, sites=tuple(dict.fromkeys([*sites, *estimated])) or ("resid_pre",))
    sweeps = {site: runs.sweep(site) for site in sites}
    estimates = attribution_patching(runs, sites=estimated) if estimated else {}
    prompts = [pair.clean for pair in pairs]
    answers = [pair.answer_id for pair in pairs]
    distractors = [pair.distractor_id for pair in pairs]
    lens = attribution = None
    if everything or any(isinstance(c, LogitLensClaim) for c in claims):
        lens = logit_lens(bridge, prompts, answer_ids=answers, distractor_ids=distractors)
    if everything or any(isinstance(c, AttributionClaim) for c in claims):
        attribution = direct_logit_attribution(bridge, prompts, answer_ids=answers, distractor_ids=distractors)
    return Evidence(runs=runs, sweeps=sweeps, estimates=estimates, lens=lens, attribution=attribution)


def check_claim(claim: Claim, evidence: Evidence, bridge: TransformerBridge) -> ClaimVerdict:
    if isinstance(claim, LogitLensClaim):
        assert evidence.lens is not None
        return _check_lens(claim, evidence.lens)
    if isinstance(claim, AttributionClaim):
        assert evidence.attribution is not None
        return _check_attribution(claim, evidence.attribution)
    sweep = (evidence.estimates if claim.method == "attribution" else evidence.sweeps)[claim.site]
    if claim.site in POSITION_SITES:
        return _check_positions(claim, sweep)
    if claim.top_k is not None:
        return _check_rank(claim, sweep)
    return _check_together(claim, evidence, bridge)


def _check_positions(claim: PatchClaim, sweep: SweepResult) -> ClaimVerdict:
    assert claim.layers is not None and claim.at is not None and claim.min_recovery is not None
    n_layers = sweep.recovery.shape[0]
    first, last = (resolve_layer(spec, n_layers) for spec in claim.layers)
    if first > last:
        raise PatchingError(
            f"claim {claim.text!r}: layers {claim.layers} resolve to {first}..{last} on {n_layers} layers, an empty range"
        )
    column = sweep.column(claim.at)
    values = sweep.recovery[first : last + 1, column]  # [layer]
    pick = values.argmin() if claim.require == "every" else values.argmax()
    value, layer = float(values[pick]), first + int(pick)
    which = "lowest" if claim.require == "every" else "highest"
    return ClaimVerdict(
        text=claim.text,
        metric=f"recovery:{claim.site}@{claim.at}[{claim.layers[0]}..{claim.layers[1]}]/{claim.require}",
        value=value,
        threshold=claim.min_recovery,
        passed=value >= claim.min_recovery,
        detail=f"{which} recovery {value:.3f} at layer {layer} of layers {first}..{last}, position {sweep.labels[column]}",
    )


def _head_label(layer: int, head: int, sweep: SweepResult) -> str:
    return f"L{layer}{sweep.labels[head]}"


def _check_rank(claim: PatchClaim, sweep: SweepResult) -> ClaimVerdict:
    assert claim.top_k is not None
    ((layer, head),) = claim.heads
    missing = _missing_head(claim, sweep, layer, head)
    if missing is not None:
        return replace(
            missing, metric=f"rank:{claim.site}@L{layer}H{head}", threshold=float(claim.top_k), lower_is_better=True
        )
    # Ranked by recovery itself: a head that pushes towards the distractor does not compute the answer.
    order = sweep.recovery.flatten().argsort(descending=True)
    cell = layer * sweep.recovery.shape[1] + head
    rank = int((order == cell).nonzero()[0]) + 1
    leaders = ", ".join(
        f"{_head_label(int(i) // sweep.recovery.shape[1], int(i) % sweep.recovery.shape[1], sweep)} "
        f"{float(sweep.recovery.flatten()[i]):.3f}"
        for i in order[: claim.top_k]
    )
    return ClaimVerdict(
        text=claim.text,
        metric=f"rank:{claim.site}@L{layer}H{head}",
        value=float(rank),
        threshold=float(claim.top_k),
        passed=rank <= claim.top_k,
        detail=f"rank {rank} (recovery {sweep.at(layer, head):.3f}); top {claim.top_k}: {leaders}",
        lower_is_better=True,
    )


def _missing_head(claim: PatchClaim, sweep: SweepResult, layer: int, head: int) -> ClaimVerdict | None:
    """A failed verdict when the model has no such head: a claim about it cannot hold here."""
    n_layers, n_columns = sweep.recovery.shape
    if 0 <= layer < n_layers and 0 <= head < n_columns:
        return None
    return ClaimVerdict(
        text=claim.text,
        metric="",
        value=math.nan,
        threshold=math.nan,
        passed=False,
        detail=f"this model has no L{layer}H{head}: the {claim.site} grid has layers 0..{n_layers - 1} and columns {', '.join(sweep.labels)}",
    )


def _check_together(claim: PatchClaim, evidence: Evidence, bridge: TransformerBridge) -> ClaimVerdict:
    assert claim.min_recovery is not None
    names = "+".join(f"L{layer}H{head}" for layer, head in claim.heads)
    sweep = evidence.sweeps[claim.site]
    for layer, head in claim.heads:
        missing = _missing_head(claim, sweep, layer, head)
        if missing is not None:
            return replace(missing, metric=f"recovery:{claim.site}@{names}", threshold=claim.min_recovery)
    value = patch_heads_together(bridge, evidence.runs, claim.site, claim.heads)
    return ClaimVerdict(
        text=claim.text,
        metric=f"recovery:{claim.site}@{names}",
        value=value,
        threshold=claim.min_recovery,
        passed=value >= claim.min_recovery,
        detail=f"patching {names} together recovers {value:.3f}",
    )


def patch_heads_together(
    bridge: TransformerBridge, runs: PatchingRuns, site: str, heads: Sequence[tuple[int, int]]
) -> float:
    """Recovery when the clean values of several heads at `site` are patched in one run."""
    if site not in HEAD_SITES:
        raise PatchingError(f"heads are patched at z, v or pattern, not {site!r}")
    clean = torch.stack([pair.clean for pair in runs.pairs])  # [pair pos]
    corrupted = torch.stack([pair.corrupted for pair in runs.pairs])  # [pair pos]
    by_layer: dict[int, list[int]] = {}
    for layer, head in heads:
        by_layer.setdefault(layer, []).append(head)
    names = {layer: _HOOKS[site].format(layer) for layer in by_layer}
    device = bridge.cfg.device
    with torch.inference_mode():
        _, cache = bridge.run_with_cache(clean.to(device), names_filter=lambda name: name in names.values())

        def patcher(layer: int) -> Any:
            # Bound per layer: the bridge reports hook aliases (hook_z) under their canonical names.
            clean_activation = cache[names[layer]]

            def patch(activation: torch.Tensor, hook: Any) -> torch.Tensor:
                for head in by_layer[layer]:
                    # z and v: [pair pos head d_head]; pattern: [pair head query key].
                    index = (slice(None), head) if site == "pattern" else (slice(None), slice(None), head)
                    activation[index] = clean_activation[index]
                return activation

            return patch

        logits = bridge.run_with_hooks(
            corrupted.to(device), fwd_hooks=[(names[layer], patcher(layer)) for layer in sorted(names)]
        )
        metric = logit_diff_metric(logits, runs.pairs)
    return float(recovery(metric.cpu(), clean=runs.clean_metric, corrupted=runs.corrupted_metric, min_gap=runs.min_gap))


def _check_lens(claim: LogitLensClaim, lens: LogitLens) -> ClaimVerdict:
    entries = lens.logit_diff.shape[0]  # one per block input, plus the final stream
    by = resolve_layer(claim.by_layer, entries - 1, inclusive_end=True)
    reached = lens.first_layer_reaching(claim.min_logit_diff)
    value = float(lens.logit_diff[: by + 1].max())
    return ClaimVerdict(
        text=claim.text,
        metric=f"logit_diff:lens@{claim.by_layer}",
        value=value,
        threshold=claim.min_logit_diff,
        passed=reached is not None and reached <= by,
        detail=(
            f"best logit difference up to entry {by} is {value:.3f}; "
            + (
                f"first reaches {claim.min_logit_diff:g} at entry {reached}"
                if reached is not None
                else "never reaches it"
            )
            + f" (entries: block inputs 0..{entries - 2}, then the final stream)"
        ),
    )


def _check_attribution(claim: AttributionClaim, attribution: DirectAttribution) -> ClaimVerdict:
    if claim.head is not None:
        layer, head = claim.head
        n_layers, n_heads = attribution.by_head.shape
        if not (0 <= layer < n_layers and 0 <= head < n_heads):
            return ClaimVerdict(
                text=claim.text,
                metric=f"logit_diff:dla@L{layer}H{head}",
                value=math.nan,
                threshold=claim.min_logit_diff,
                passed=False,
                detail=f"this model has no L{layer}H{head}: layers 0..{n_layers - 1}, heads 0..{n_heads - 1}",
            )
        value, name = float(attribution.by_head[layer, head]), f"L{layer}H{head}"
    else:
        assert claim.component is not None
        value, name = attribution.component(claim.component), claim.component
    return ClaimVerdict(
        text=claim.text,
        metric=f"logit_diff:dla@{name}",
        value=value,
        threshold=claim.min_logit_diff,
        passed=value >= claim.min_logit_diff,
        detail=(
            f"{name} writes {value:+.3f} of the logit difference {attribution.logit_diff:.3f} "
            f"(components sum to {attribution.logit_diff - attribution.residual:.3f}; residual {attribution.residual:+.2e})"
        ),
    )


# ---------------------------------------------------------------------------------------------
# Pictures for the report


def figures(evidence: Evidence, *, n_pairs: int) -> list[dict[str, Any]]:
    """The study's pictures; needs evidence gathered with `everything=True`."""
    sweeps, runs = evidence.sweeps, evidence.runs
    assert evidence.lens is not None and evidence.attribution is not None
    specs: list[Any] = []
    for site, sweep in sweeps.items():
        position = site in POSITION_SITES
        specs.append(
            HeatmapSpec(
                name=site,
                title=f"{site} patching: recovery by layer and {'position' if position else 'head'} ({n_pairs} pairs)",
                values=_rows(sweep.recovery),
                row_labels=tuple(f"L{layer}" for layer in range(sweep.recovery.shape[0])),
                col_labels=sweep.labels,
                x_label="Position" if position else "Head",
                y_label="Layer",
                colorbar_label="recovery",
            )
        )
    lens = evidence.lens.logit_diff
    specs.append(
        LineSpec(
            name="logit_lens",
            title="Logit lens: logit(answer) − logit(distractor) from the residual stream",
            x_labels=(*(f"L{layer}" for layer in range(len(lens) - 1)), "final"),
            values=tuple(float(v) for v in lens),
            x_label="Residual stream entering layer",
            y_label="logit difference",
        )
    )
    attribution = evidence.attribution
    specs.append(
        LineSpec(
            name="dla_components",
            title="Direct logit attribution by component",
            x_labels=attribution.labels,
            values=tuple(float(v) for v in attribution.by_component),
            x_label="Component",
            y_label="logit difference",
        )
    )
    specs.append(
        HeatmapSpec(
            name="dla_heads",
            title="Direct logit attribution by head",
            values=_rows(attribution.by_head),
            row_labels=tuple(f"L{layer}" for layer in range(attribution.by_head.shape[0])),
            col_labels=tuple(f"H{head}" for head in range(attribution.by_head.shape[1])),
            x_label="Head",
            y_label="Layer",
            colorbar_label="logit difference",
        )
    )
    z = sweeps["z"].recovery
    head_labels = tuple(f"L{layer}H{head}" for layer in range(z.shape[0]) for head in range(z.shape[1]))
    for other, meaning in (("v", "value"), ("pattern", "attention pattern")):
        specs.append(
            ScatterSpec(
                name=f"z_vs_{other}",
                title=f"Head output vs {meaning} patching (near y = x: the head moves the information it reads)",
                x=tuple(float(v) for v in _per_query_head(sweeps[other].recovery, z.shape[1]).flatten()),
                y=tuple(float(v) for v in z.flatten()),
                point_labels=head_labels,
                x_label=f"{other} patching recovery",
                y_label="head output (z) patching recovery",
            )
        )
    top = z.flatten().argsort(descending=True)[:TOP_HEADS_SHOWN]
    tokens = tuple(evidence.runs.bridge.to_str_tokens(runs.pairs[0].clean))
    specs.append(
        AttentionSpec(
            name="top_heads",
            title=f"Attention patterns of the top {TOP_HEADS_SHOWN} heads by z recovery (first clean prompt)",
            heads=tuple(
                AttentionHead(
                    label=head_labels[int(i)],
                    pattern=_rows(runs.clean["pattern", int(i) // z.shape[1]][0, int(i) % z.shape[1]]),
                )
                for i in top
            ),
            tokens=tokens,
        )
    )
    return [spec.to_json() for spec in specs]


def _per_query_head(grid: torch.Tensor, n_heads: int) -> torch.Tensor:
    """A key/value-head grid spread to query heads (each reads its group's values), for scatters."""
    group = n_heads // grid.shape[1]
    return grid.repeat_interleave(group, dim=1)  # [layer n_heads]


def _rows(grid: torch.Tensor) -> tuple[tuple[float, ...], ...]:
    return tuple(tuple(float(v) for v in row) for row in grid.detach().float().cpu())


# ---------------------------------------------------------------------------------------------


def _explain(case: PatchingCase, evidence: Evidence, verdicts: Sequence[ClaimVerdict]) -> str:
    runs = evidence.runs
    lines = [
        f"clean metric {runs.clean_metric:.3f}, corrupted {runs.corrupted_metric:.3f} "
        f"({METRIC_IN_WORDS.format(n=len(case.pairs))})",
        f"first pair: clean {case.pairs[0].clean!r} / corrupted {case.pairs[0].corrupted!r}, "
        f"answer {case.pairs[0].answer!r} vs distractor {case.pairs[0].distractor!r}",
    ]
    lines += [f"  {'holds' if v.passed else 'FAILS'}: {v.text} — {v.detail}" for v in verdicts]
    if "z" in evidence.sweeps:
        z = evidence.sweeps["z"].recovery
        order = z.flatten().argsort(descending=True)[:5]
        lines.append(
            "top heads by z recovery: "
            + ", ".join(f"L{int(i) // z.shape[1]}H{int(i) % z.shape[1]} {float(z.flatten()[i]):.3f}" for i in order)
        )
    return "\n".join(lines)


def run_patching_checks(
    model: LoadedModel, model_name: str, cases: Sequence[Case], *, detail: bool = False
) -> dict[str, CheckOutcome]:
    """The runner of `kind: patching` cases (see seqprobe.checks.completion); `detail` adds the report's figures."""
    import sys

    outcomes: dict[str, CheckOutcome] = {}
    bridge = model.bridge
    for number, case in enumerate(cases, start=1):
        assert isinstance(case, PatchingCase)
        print(f"seqprobe: patching case {number}/{len(cases)}: {case.name} ({len(case.pairs)} pairs)", file=sys.stderr)
        where = f"{case.location} case {case.name!r}"
        try:
            pairs = [
                make_pair(
                    bridge, clean=p.clean, corrupted=p.corrupted, answer=p.answer, distractor=p.distractor, where=where
                )
                for p in case.pairs
            ]
            evidence = gather_evidence(bridge, pairs, case.claims, everything=detail)
            verdicts = [check_claim(claim, evidence, bridge) for claim in case.claims]
        except SeqprobeError as error:
            outcomes[case.case_id] = CheckOutcome(prompt=case.pairs[0].clean, answer=case.pairs[0].answer, error=error)
            continue
        outcomes[case.case_id] = CheckOutcome(
            metrics={v.metric: v.value for v in verdicts},
            failures=tuple(f"{v.text}: {v.detail}" for v in verdicts if not v.passed),
            explanation=_explain(case, evidence, verdicts),
            details={
                "metric": METRIC_IN_WORDS.format(n=len(pairs)),
                "clean_metric": evidence.runs.clean_metric,
                "corrupted_metric": evidence.runs.corrupted_metric,
                "claims": [v.to_json() for v in verdicts],
                "figures": figures(evidence, n_pairs=len(pairs)) if detail else [],
            },
            prompt=case.pairs[0].clean,
            answer=case.pairs[0].answer,
            lower_is_better=tuple(v.metric for v in verdicts if v.lower_is_better),
        )
    return outcomes
