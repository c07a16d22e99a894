"""Circuit claims of a patching case: which paths carry the answer, which components it needs,
and how much of the behaviour a circuit alone keeps.

    claims:
      - path: {from: L23H3, to: logits, min_recovery: 0.3}
      - path: {from: [L21H9, L22H2], to: {heads: [L25H1, L26H0], input: q}, min_recovery: 0.2}
      - path: {from: L21H9, to: {head: L25H1, input: k}, top_k: 3}   # its rank among all receivers
      - ablate: {components: [L23H3], direction: noising, max_fraction: 0.3}
      - ablate: {components: [L23H3, L20H8], direction: denoising, min_fraction: 0.5, at: final, method: zero}
      - faithfulness: {circuit: movers, min_faithfulness: 0.6}
      - necessity: {circuit: movers, max_fraction: 0.3}
      - faithfulness: {components: [L23H3, L20H8], min_faithfulness: 0.6}
      - faithfulness_curve: {ranking: z, max_k: 30, min_area: 0.5}

A *path* claim patches the senders' clean outputs into the corrupted run only along the path to
the receivers' `input` (q, k or v; q by default) or directly to the logits
(`seqprobe.casefiles.path_claims`, whose PathClaim this module re-exports). An *ablate* claim switches `components` off in the clean
run (`noising`: at most `max_fraction` of the clean behaviour is left) or gives them back in the
run with the whole scope switched off (`denoising`: at least `min_fraction` comes back), at every
position unless `at:` names one, by the case's ablation method unless `method:` names another.
*Faithfulness* keeps only a circuit (named under `circuits:`, or `components:` written inline) and
switches off the rest of the scope; *necessity* switches off only the circuit. A *faithfulness
curve* adds components one at a time in the order `ranking` gives, up to `max_k`; `min_area` (a
mean faithfulness over the curve's points) is optional: a curve may be drawn without a bar. Every
claim takes `confidence:` like the patch claims, and has a `text` (the sentence a report shows)
and a `line` (where it is written). The words (components, methods, scopes) are
`seqprobe.vocabulary.circuits`'s; the case-level settings are `seqprobe.casefiles.circuits`'s.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from seqprobe.casefiles.base import EntryContext
from seqprobe.casefiles.circuits import (
    SCOPE_WORDS,
    AblationSpec,
    CircuitContext,
    ReferenceSpec,
    outside_scope,
    parse_components,
)
from seqprobe.casefiles.claim_fields import (
    confidence_words,
    optional_number,
    parse_choice,
    parse_confidence,
    require_keys,
)
from seqprobe.casefiles.path_claims import PathClaim, parse_path
from seqprobe.casefiles.validation import check_keys, get_number, get_str, suggest
from seqprobe.casefiles.yamlsource import SourceMap
from seqprobe.vocabulary.circuits import (
    ABLATION_METHODS,
    DIRECTIONS,
    SUPPORTED_ABLATIONS,
    Component,
)
from seqprobe.vocabulary.sites import POSITION_NAMES

__all__ = [
    "CIRCUIT_CLAIM_PARSERS",
    "CURVE_RANKINGS",
    "AblateClaim",
    "AblationSpec",
    "CurveClaim",
    "FaithfulnessClaim",
    "NecessityClaim",
    "PathClaim",
    "ReferenceSpec",
    "check_reference_used",
]

# What orders a faithfulness curve's components: each head's z-patching recovery, or its direct
# path to the logits.
CURVE_RANKINGS = ("z", "path_logits")


@dataclass(frozen=True)
class AblateClaim:
    """Switching `components` off (noising) or giving them back (denoising) leaves/restores a share of the behaviour."""

    text: str
    line: int
    components: tuple[Component, ...]
    direction: str
    # "final", "substituted" or an index; None for every position.
    at: str | int | None = None
    # Replaces the case's ablation method for this claim; None keeps the case's.
    method: str | None = None
    min_fraction: float | None = None
    max_fraction: float | None = None
    confidence: float | None = None


@dataclass(frozen=True)
class _OnCircuit:
    """What faithfulness and necessity claims share: the circuit they are about."""

    text: str
    line: int
    # The name under `circuits:`; "" when the components are written inline.
    circuit: str
    components: tuple[Component, ...]


@dataclass(frozen=True)
class FaithfulnessClaim(_OnCircuit):
    """The circuit alone, the rest of the scope switched off, keeps `min_faithfulness` of the behaviour."""

    min_faithfulness: float
    confidence: float | None = None


@dataclass(frozen=True)
class NecessityClaim(_OnCircuit):
    """Switching only the circuit off leaves at most `max_fraction` of the behaviour."""

    max_fraction: float
    confidence: float | None = None


@dataclass(frozen=True)
class CurveClaim:
    """Faithfulness as the top 1..`max_k` components by `ranking` are kept; its mean reaches `min_area`."""

    text: str
    line: int
    ranking: str
    max_k: int
    # None: the curve is drawn and recorded, with no bar.
    min_area: float | None = None
    confidence: float | None = None


CircuitClaim = PathClaim | AblateClaim | FaithfulnessClaim | NecessityClaim | CurveClaim
CircuitClaimParser = Callable[..., CircuitClaim]


def _parse_ablate(ctx: EntryContext, node: SourceMap, *, where: str, line: int, setting: CircuitContext) -> AblateClaim:
    keys = ("components", "direction", "at", "method", "min_fraction", "max_fraction", "confidence")
    check_keys(ctx.path, node, keys, where=where)
    require_keys(ctx, node, ("components", "direction"), where=where)
    direction = parse_choice(ctx, node, "direction", DIRECTIONS, where=where)
    method = parse_choice(ctx, node, "method", ABLATION_METHODS, where=where)
    used = method or setting.ablation.method
    if used == "mean" and setting.ablation.reference is None:
        raise ctx.error(
            f"method: mean in {where} averages over the case's reference prompts; give the case "
            "ablation: {reference: corrupted} or a reference template",
            node,
            "method",
        )
    # Denoising gives components back in a run with the whole scope off, so they must be in it.
    scope = setting.ablation.scope if direction == "denoising" else None
    components = parse_components(ctx, node, "components", where=f"components in {where}", scope=scope)
    for component in components:
        if used not in SUPPORTED_ABLATIONS[component.kind]:
            why = (
                ": zeroing the residual stream leaves the next norm nothing to scale"
                if component.kind == "resid"
                else ""
            )
            raise ctx.error(
                f"{component.name} cannot be ablated with {used}{why}; "
                f"ablate it with {' or '.join(SUPPORTED_ABLATIONS[component.kind])}",
                node,
                "method" if method else "components",
            )
    bar, other = ("max_fraction", "min_fraction") if direction == "noising" else ("min_fraction", "max_fraction")
    if other in node or bar not in node:
        raise ctx.error(
            f"a {direction} ablate claim takes {bar} ({'at most' if bar.startswith('max') else 'at least'} "
            f"this share of the clean behaviour), not {other}",
            node,
            other if other in node else None,
        )
    at = node.get("at")
    if at is not None and not (at in POSITION_NAMES or (isinstance(at, int) and not isinstance(at, bool))):
        raise ctx.error(
            f"at in {where} names the position: 'substituted', 'final', or an index (every position when absent); "
            f"found {at!r}",
            node,
            "at",
        )
    fraction = float(get_number(ctx.path, node, bar, where=where))
    confidence = parse_confidence(ctx, node, where=where)
    names = "+".join(component.name for component in components)
    position = f" at {at}" if at is not None else ""
    text = (
        f"ablating {names}{position} ({used}) leaves ≤ {fraction:g} of the clean behaviour"
        if direction == "noising"
        else f"with the other {SCOPE_WORDS[setting.ablation.scope]} ablated ({used}), giving {names} back{position} "
        f"restores ≥ {fraction:g} of the clean behaviour"
    )
    return AblateClaim(
        text=text + confidence_words(confidence),
        line=line,
        components=components,
        direction=direction or "",
        at=at,
        method=method,
        **{bar: fraction},
        confidence=confidence,
    )


def _circuit(
    ctx: EntryContext, node: SourceMap, *, where: str, setting: CircuitContext
) -> tuple[str, tuple[Component, ...]]:
    """The claim's circuit: `circuit: NAME` (the case's or the file's) or `components:` inline, inside the scope."""
    scope = setting.ablation.scope
    if ("circuit" in node) == ("components" in node):
        raise ctx.error(f"{where} names `circuit: NAME` (from circuits:) or `components: [L5H3, ...]`", node)
    if "components" in node:
        return "", parse_components(ctx, node, "components", where=f"components in {where}", scope=scope)
    name = get_str(ctx.path, node, "circuit", where=where) or ""
    if name not in setting.circuits:
        known = ", ".join(setting.circuits) or "none (define them under circuits:, in the case or atop the file)"
        raise ctx.error(
            f"circuit {name!r} in {where} is not defined{suggest(name, setting.circuits)}; circuits: {known}",
            node,
            "circuit",
        )
    circuit = setting.circuits[name]
    for component in circuit.components:
        problem = outside_scope(component, scope)
        if problem:
            raise ctx.error(f"circuit {name!r} (line {circuit.line}): {problem}", node, "circuit")
    return name, circuit.components


def _on_circuit(
    ctx: EntryContext, node: SourceMap, *, where: str, setting: CircuitContext, bar: str
) -> tuple[str, dict[str, Any]]:
    """A faithfulness or necessity claim's fields but its text: the circuit, the `bar`, the confidence;
    and the circuit as the text names it."""
    check_keys(ctx.path, node, ("circuit", "components", bar, "confidence"), where=where)
    name, components = _circuit(ctx, node, where=where, setting=setting)
    require_keys(ctx, node, (bar,), where=where)
    names = "+".join(component.name for component in components)
    fields = {
        "circuit": name,
        "components": components,
        bar: float(get_number(ctx.path, node, bar, where=where)),
        "confidence": parse_confidence(ctx, node, where=where),
    }
    return (f"circuit {name} ({names})" if name else names), fields


def _parse_faithfulness(
    ctx: EntryContext, node: SourceMap, *, where: str, line: int, setting: CircuitContext
) -> FaithfulnessClaim:
    label, fields = _on_circuit(ctx, node, where=where, setting=setting, bar="min_faithfulness")
    ablation = setting.ablation
    text = (
        f"{label} alone, the other {SCOPE_WORDS[ablation.scope]} ablated ({ablation.method}), "
        f"is ≥ {fields['min_faithfulness']:g} faithful"
    )
    return FaithfulnessClaim(text=text + confidence_words(fields["confidence"]), line=line, **fields)


def _parse_necessity(
    ctx: EntryContext, node: SourceMap, *, where: str, line: int, setting: CircuitContext
) -> NecessityClaim:
    label, fields = _on_circuit(ctx, node, where=where, setting=setting, bar="max_fraction")
    text = f"ablating {label} ({setting.ablation.method}) leaves ≤ {fields['max_fraction']:g} of the clean behaviour"
    return NecessityClaim(text=text + confidence_words(fields["confidence"]), line=line, **fields)


def _parse_curve(ctx: EntryContext, node: SourceMap, *, where: str, line: int, setting: CircuitContext) -> CurveClaim:
    check_keys(ctx.path, node, ("ranking", "max_k", "min_area", "confidence"), where=where)
    require_keys(ctx, node, ("ranking", "max_k"), where=where)
    if setting.ablation.scope != "heads":
        raise ctx.error(
            f"{where}: a faithfulness curve ranks heads, so its circuits are drawn from the heads alone; with scope "
            f"{setting.ablation.scope!r} every MLP would be switched off in each of them; give the case "
            "ablation: {scope: heads}",
            node,
        )
    ranking = parse_choice(ctx, node, "ranking", CURVE_RANKINGS, where=where) or ""
    max_k = int(get_number(ctx.path, node, "max_k", where=where, integer=True, least=1))
    min_area = optional_number(ctx, node, "min_area", where=where)
    confidence = parse_confidence(ctx, node, where=where)
    if confidence is not None and min_area is None:
        raise ctx.error(f"confidence in {where} judges min_area, and this curve has no bar", node, "confidence")
    bar = f"has area ≥ {min_area:g}" if min_area is not None else "is drawn (no bar)"
    text = f"faithfulness curve of the top 1..{max_k} components by {ranking} {bar}"
    return CurveClaim(
        text=text + confidence_words(confidence),
        line=line,
        ranking=ranking,
        max_k=max_k,
        min_area=min_area,
        confidence=confidence,
    )


# Claim kind -> parser(ctx, settings, *, where, line, setting); `seqprobe.casefiles.claims` dispatches here.
CIRCUIT_CLAIM_PARSERS: Mapping[str, CircuitClaimParser] = MappingProxyType(
    {
        "path": parse_path,
        "ablate": _parse_ablate,
        "faithfulness": _parse_faithfulness,
        "necessity": _parse_necessity,
        "faithfulness_curve": _parse_curve,
    }
)


def check_reference_used(ctx: EntryContext, entry: SourceMap, ablation: AblationSpec, claims: Sequence[Any]) -> None:
    """A `reference:` is read only by mean ablation: refused when neither the case nor a claim ablates by mean."""
    if ablation.reference is None or ablation.method == "mean":
        return
    if any(isinstance(claim, AblateClaim) and claim.method == "mean" for claim in claims):
        return
    raise ctx.error(
        f"reference is what mean ablation averages over, and this case ablates by {ablation.method} with no "
        "claim asking for method: mean; leave reference out, or set method: mean",
        entry["ablation"],
        "reference",
    )
