"""Claims on the linear views of the clean run: the logit lens and direct logit attribution.

Both read each pair's final logit difference as a sum the residual stream carries, so they are
defined for one-token answers and distractors (`PatchingRuns.token_ids` refuses others); their
intervals resample the pairs' own values, as patching claims do.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from seqprobe.checks.judging import ClaimVerdict, Levels, judged, mean_interval, only_column
from seqprobe.vocabulary.heads import format_head, resolve_layer

if TYPE_CHECKING:
    from seqprobe.casefiles.claims import AttributionClaim, LogitLensClaim
    from seqprobe.engine.attribution import DirectAttribution, LogitLens

__all__ = ["check_attribution", "check_lens"]


def check_lens(claim: LogitLensClaim, lens: LogitLens, levels: Levels) -> ClaimVerdict:
    entries = lens.logit_diff.shape[0]  # one per block input, plus the final stream
    by = resolve_layer(claim.by_layer, entries - 1, inclusive_end=True)
    reached = lens.first_layer_reaching(claim.min_logit_diff)
    # "reaches the bar by entry `by`" is "the best entry up to `by` clears it".
    value = float(lens.logit_diff[: by + 1].max())
    interval = mean_interval(lens.pairs, lambda pairs: pairs[:, : by + 1], reduce=lambda m: m.max(axis=1))
    return judged(
        interval=interval,
        levels=levels,
        text=claim.text,
        metric=f"logit_diff:lens@{claim.by_layer}",
        value=value,
        threshold=claim.min_logit_diff,
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


def check_attribution(claim: AttributionClaim, attribution: DirectAttribution, levels: Levels) -> ClaimVerdict:
    if claim.head is not None:
        layer, head = claim.head
        n_layers, n_heads = attribution.by_head.shape
        if not (0 <= layer < n_layers and 0 <= head < n_heads):
            return ClaimVerdict(
                text=claim.text,
                metric=f"logit_diff:dla@{format_head(layer, head)}",
                value=math.nan,
                threshold=claim.min_logit_diff,
                passed=False,
                detail=f"this model has no {format_head(layer, head)}: layers 0..{n_layers - 1}, heads 0..{n_heads - 1}",
            )
        value, name = float(attribution.by_head[layer, head]), format_head(layer, head)
        interval = mean_interval(attribution.head_pairs, lambda pairs: pairs[:, layer, head], reduce=only_column)
    else:
        assert claim.component is not None
        value, name = attribution.component(claim.component), claim.component
        index = attribution.labels.index(claim.component)
        interval = mean_interval(attribution.component_pairs, lambda pairs: pairs[:, index], reduce=only_column)
    return judged(
        interval=interval,
        levels=levels,
        text=claim.text,
        metric=f"logit_diff:dla@{name}",
        value=value,
        threshold=claim.min_logit_diff,
        detail=(
            f"{name} writes {value:+.3f} of the logit difference {attribution.logit_diff:.3f} "
            f"(components sum to {attribution.logit_diff - attribution.residual:.3f}; residual {attribution.residual:+.2e})"
            f""
        ),
    )
