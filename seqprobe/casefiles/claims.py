"""Claims of a mechanistic case: where the answer is made, and the bars it must clear.

    claims:
      - patch: {site: resid_pre, at: substituted, layers: [0, 0.5], min_recovery: 0.8}
      - patch: {site: z, heads: [L5H3, L7H1], min_recovery: 0.3}      # patched together
      - patch: {site: z, head: L5H3, top_k: 5}                        # among the 5 strongest
      - logit_lens: {min_logit_diff: 1.0, by_layer: 0.8}
      - direct_attribution: {head: L9H1, min_logit_diff: 0.1, confidence: 0.95}
      - path: {from: L23H3, to: logits, min_recovery: 0.3}            # circuit claims:
      - ablate: {components: [L23H3], direction: noising, max_fraction: 0.3}
      - faithfulness: {circuit: movers, min_faithfulness: 0.6}
      - necessity: {circuit: movers, max_fraction: 0.3}
      - faithfulness_curve: {ranking: z, max_k: 30, min_area: 0.5}

The circuit claims (paths, ablations, faithfulness) are parsed in `seqprobe.casefiles.circuit_claims`,
which shows every form; this module holds the patch, logit-lens and attribution claims and the one
dispatch over every kind (`CLAIM_KINDS`). Layers are integers (0-based; negative counts from the end) or fractions of depth written with a
decimal point (0.5 = halfway), so one claim can hold across models of different sizes. A claim's
`confidence:` (or its case's `expect: {confidence}`) judges it by the bound of its interval over
the case's pairs at that level instead of by the point estimate (seqprobe.checks.judging).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from seqprobe.casefiles.base import EntryContext
from seqprobe.casefiles.circuit_claims import (
    CIRCUIT_CLAIM_PARSERS,
    AblateClaim,
    CurveClaim,
    FaithfulnessClaim,
    NecessityClaim,
    PathClaim,
)
from seqprobe.casefiles.circuits import CircuitContext
from seqprobe.casefiles.claim_fields import confidence_words, parse_confidence, parse_heads
from seqprobe.casefiles.validation import check_keys, get_number, get_str, require_map, suggest
from seqprobe.casefiles.yamlsource import SourceList, SourceMap, line_of
from seqprobe.errors import CaseFileError
from seqprobe.vocabulary.heads import LayerSpec, format_head
from seqprobe.vocabulary.sites import METHODS, POSITION_NAMES, POSITION_SITES, SITES

__all__ = [
    "CLAIM_KINDS",
    "AblateClaim",
    "AttributionClaim",
    "Claim",
    "CurveClaim",
    "FaithfulnessClaim",
    "LayerSpec",
    "LogitLensClaim",
    "NecessityClaim",
    "PatchClaim",
    "PathClaim",
    "parse_claims",
]


@dataclass(frozen=True)
class PatchClaim:
    """Patching `site` from the clean run recovers at least `min_recovery`, or ranks a head high."""

    text: str
    site: str
    # Position sites: which position and which layers ([first, last], inclusive).
    at: str | int | None = None
    layers: tuple[LayerSpec, LayerSpec] | None = None
    # "every" layer in range must reach the bar, or "some" layer must.
    require: Literal["every", "some"] = "every"
    # Head sites: the heads patched together, or one head and the rank it must reach.
    heads: tuple[tuple[int, int], ...] = ()
    top_k: int | None = None
    min_recovery: float | None = None
    # "attribution" only when the case file asks for the gradient estimate by name.
    method: Literal["exact", "attribution"] = "exact"
    # Judge by the bound of the interval over pairs at this level (the case's `expect: {confidence}`
    # when None), not by the point estimate.
    confidence: float | None = None


@dataclass(frozen=True)
class LogitLensClaim:
    """The logit lens's answer − distractor logit difference reaches `min_logit_diff` by `by_layer`."""

    text: str
    min_logit_diff: float
    by_layer: LayerSpec
    confidence: float | None = None


@dataclass(frozen=True)
class AttributionClaim:
    """A head's or a component's direct logit attribution is at least `min_logit_diff`."""

    text: str
    min_logit_diff: float
    head: tuple[int, int] | None = None
    # "embed", "L3_attn", "L3_mlp" (see seqprobe.engine.attribution.DirectAttribution).
    component: str | None = None
    confidence: float | None = None


Claim = (
    PatchClaim
    | LogitLensClaim
    | AttributionClaim
    | PathClaim
    | AblateClaim
    | FaithfulnessClaim
    | NecessityClaim
    | CurveClaim
)


def _layer(ctx: EntryContext, node: SourceMap, key: str, value: Any, *, where: str) -> LayerSpec:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ctx.error(
            f"{key} in {where}: a layer is an integer (0-based, negative from the end) or a fraction of depth "
            f"between 0.0 and 1.0, found {value!r}",
            node,
            key,
        )
    if isinstance(value, float) and not 0.0 <= value <= 1.0:
        raise ctx.error(f"{key} in {where}: a fractional layer is between 0.0 and 1.0, found {value!r}", node, key)
    return value


def _parse_patch(ctx: EntryContext, node: SourceMap, *, where: str) -> PatchClaim:
    check_keys(
        ctx.path,
        node,
        ("site", "at", "layers", "require", "heads", "head", "top_k", "min_recovery", "method", "confidence"),
        where=where,
    )
    site = get_str(ctx.path, node, "site", where=where)
    if site not in SITES:
        raise ctx.error(f"site {site!r} in {where} is not a patching site; sites: {', '.join(SITES)}", node, "site")
    method = get_str(ctx.path, node, "method", where=where, required=False) or "exact"
    if method not in METHODS:
        raise ctx.error(f"method in {where} is 'exact' (default) or 'attribution', found {method!r}", node, "method")
    fields: dict[str, Any] = {"site": site, "method": method}
    if "confidence" in node:
        if method == "attribution":
            raise ctx.error(
                "confidence needs per-pair patched runs; attribution patching estimates the grid's mean only",
                node,
                "confidence",
            )
        fields["confidence"] = parse_confidence(ctx, node, where=where)
    if "min_recovery" in node:
        fields["min_recovery"] = float(get_number(ctx.path, node, "min_recovery", where=where))
    if site in POSITION_SITES:
        for key in ("heads", "head", "top_k"):
            if key in node:
                raise ctx.error(f"{key} belongs to head sites (z, v, pattern), not {site}", node, key)
        at = node.get("at")
        if not (at in POSITION_NAMES or (isinstance(at, int) and not isinstance(at, bool))):
            raise ctx.error(
                f"at in {where} names the position: 'substituted' (the first token that differs), 'final', or an index; found {at!r}",
                node,
                "at" if "at" in node else None,
            )
        layers = node.get("layers")
        if not (isinstance(layers, list) and len(layers) == 2):
            raise ctx.error(
                f"layers in {where} is [first, last] (inclusive), found {layers!r}",
                node,
                "layers" if "layers" in node else None,
            )
        require = node.get("require", "every")
        if require not in ("every", "some"):
            raise ctx.error(f"require in {where} is 'every' (default) or 'some', found {require!r}", node, "require")
        if "min_recovery" not in node:
            raise ctx.error(f"{where} needs min_recovery", node)
        fields |= {
            "at": at,
            "layers": tuple(_layer(ctx, node, "layers", value, where=where) for value in layers),
            "require": require,
        }
        layer_text = f"layers {layers[0]}..{layers[1]}"
        text = f"{site} at {at}, {require} layer in {layer_text}, recovers ≥ {fields['min_recovery']:g}"
    else:
        for key in ("at", "layers", "require"):
            if key in node:
                raise ctx.error(
                    f"{key} belongs to position sites (resid_pre, attn_out, mlp_out), not {site}", node, key
                )
        if ("heads" in node) == ("head" in node):
            raise ctx.error(f"{where} names `heads: [...]` (patched together) or `head:` with `top_k:`", node)
        if "heads" in node:
            if "min_recovery" not in node or "top_k" in node:
                raise ctx.error(
                    f"`heads:` in {where} takes min_recovery (the heads patched together), not top_k", node, "heads"
                )
            if method == "attribution":
                raise ctx.error(
                    "heads patched together are measured exactly; method: attribution applies to sweeps", node, "method"
                )
            fields["heads"] = parse_heads(ctx, node, "heads", where=where)
            names = "+".join(format_head(layer, head) for layer, head in fields["heads"])
            text = f"{site} of {names} together recovers ≥ {fields['min_recovery']:g}"
        else:
            if "top_k" not in node or "min_recovery" in node:
                raise ctx.error(
                    f"`head:` in {where} takes top_k (its rank among all heads), not min_recovery", node, "head"
                )
            fields["heads"] = parse_heads(ctx, node, "head", where=where)
            fields["top_k"] = int(get_number(ctx.path, node, "top_k", where=where, integer=True))
            ((layer, head),) = fields["heads"]
            text = f"{format_head(layer, head)} is among the top {fields['top_k']} heads by {site} recovery"
    if method == "attribution":
        text += " (attribution patching)"
    return PatchClaim(text=text + confidence_words(fields.get("confidence")), **fields)


def _parse_logit_lens(ctx: EntryContext, node: SourceMap, *, where: str) -> LogitLensClaim:
    check_keys(ctx.path, node, ("min_logit_diff", "by_layer", "confidence"), where=where)
    for key in ("min_logit_diff", "by_layer"):
        if key not in node:
            raise ctx.error(f"{where} needs {key}", node)
    threshold = float(get_number(ctx.path, node, "min_logit_diff", where=where))
    by_layer = _layer(ctx, node, "by_layer", node["by_layer"], where=where)
    confidence = parse_confidence(ctx, node, where=where)
    return LogitLensClaim(
        text=f"logit lens reaches {threshold:g} by layer {by_layer}{confidence_words(confidence)}",
        min_logit_diff=threshold,
        by_layer=by_layer,
        confidence=confidence,
    )


def _parse_attribution(ctx: EntryContext, node: SourceMap, *, where: str) -> AttributionClaim:
    check_keys(ctx.path, node, ("head", "component", "min_logit_diff", "confidence"), where=where)
    if ("head" in node) == ("component" in node) or "min_logit_diff" not in node:
        raise ctx.error(
            f"{where} names one `head:` (L5H3) or one `component:` (embed, L3_attn, L3_mlp), and min_logit_diff", node
        )
    threshold = float(get_number(ctx.path, node, "min_logit_diff", where=where))
    confidence = parse_confidence(ctx, node, where=where)
    words = confidence_words(confidence)
    if "head" in node:
        (head,) = parse_heads(ctx, node, "head", where=where)
        return AttributionClaim(
            text=f"direct attribution of {format_head(*head)} ≥ {threshold:g}{words}",
            min_logit_diff=threshold,
            head=head,
            confidence=confidence,
        )
    component = get_str(ctx.path, node, "component", where=where)
    return AttributionClaim(
        text=f"direct attribution of {component} ≥ {threshold:g}{words}",
        min_logit_diff=threshold,
        component=component,
        confidence=confidence,
    )


_CLAIM_PARSERS = {"patch": _parse_patch, "logit_lens": _parse_logit_lens, "direct_attribution": _parse_attribution}
CLAIM_KINDS = (*_CLAIM_PARSERS, *CIRCUIT_CLAIM_PARSERS)


def parse_claims(ctx: EntryContext, entry: SourceMap, *, setting: CircuitContext | None = None) -> tuple[Claim, ...]:
    """The case's `claims:`; circuit claims read the case's ablation and circuits from `setting`."""
    claims = entry.get("claims")
    if not isinstance(claims, SourceList) or not claims:
        raise ctx.error(
            f"a patching case needs `claims:`, a list of {' / '.join(CLAIM_KINDS)} claims",
            entry,
            "claims" if "claims" in entry else None,
        )
    parsed: list[Claim] = []
    for claim, line in zip(claims, claims.item_lines, strict=True):
        if not (isinstance(claim, SourceMap) and len(claim) == 1 and next(iter(claim)) in CLAIM_KINDS):
            near = suggest(next(iter(claim)), CLAIM_KINDS) if isinstance(claim, SourceMap) and len(claim) == 1 else ""
            raise CaseFileError(
                f"each claim is one of {', '.join(CLAIM_KINDS)} with its settings, e.g. `- patch: {{site: resid_pre, ...}}`; found {claim!r}{near}",
                path=ctx.path,
                line=line,
            )
        ((kind, settings),) = claim.items()
        where = f"a {kind} claim"
        body = require_map(ctx.path, settings, where=where, line=line_of(claim, kind))
        if kind in CIRCUIT_CLAIM_PARSERS:
            setting = setting or CircuitContext()
            parsed.append(CIRCUIT_CLAIM_PARSERS[kind](ctx, body, where=where, line=line, setting=setting))
        else:
            parsed.append(_CLAIM_PARSERS[kind](ctx, body, where=where))
    return tuple(parsed)
