"""What a patching case says about circuits before any claim: how components are switched off,
what a mean ablation averages over, and the circuits it names.

    circuits:                                   # at the top of the file: every case may name these
      movers: [L23H3, L20H8]
    suites:
      ioi:
        cases:
          - kind: patching
            ablation: {method: mean, scope: heads_and_mlps, reference: corrupted}
            circuits: {movers: [L23H3, L20H8, L24_mlp], backup: [L21H0]}

`ablation:` sets the case's method (`resample`, the default; `mean`; `zero`) and scope (`heads`, the
default, or `heads_and_mlps`: what a circuit is drawn from and what outside it is switched off).
`mean` averages each component over `reference:` prompts, required for it and refused when nothing
in the case ablates by mean: `reference: corrupted` (the case's own corrupted prompts) or a
template family `reference: {prompt: "...", over: {a: names}, sample: {size: 16, seed: 0}}`,
expanded here like a pooled pair (`seqprobe.casefiles.base.over_scopes`). The runner compares the
reference prompts' token length with the pairs' and names the `reference:` line when they differ.

A circuit is a non-empty list of components (`seqprobe.vocabulary.circuits.parse_component`), each
inside the case's scope. A case's circuit replaces the file's circuit of the same name for that
case, as a file's sequence replaces a built-in one: the case is where the model-specific detail
lives. A file's circuit is checked against the scope of each case whose claim names it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from seqprobe.casefiles.base import Circuit, EntryContext, TemplateScope, over_scopes
from seqprobe.casefiles.claim_fields import parse_choice
from seqprobe.casefiles.validation import check_keys, describe, get_str, require_map, suggest
from seqprobe.casefiles.yamlsource import SourceList, SourceMap, line_of
from seqprobe.errors import CaseFileError
from seqprobe.vocabulary.circuits import ABLATION_METHODS, SCOPES, Component, parse_component
from seqprobe.vocabulary.heads import parse_head

__all__ = [
    "SCOPE_WORDS",
    "AblationSpec",
    "Circuit",
    "CircuitContext",
    "ReferenceSpec",
    "outside_scope",
    "parse_ablation",
    "parse_circuits",
    "parse_components",
    "visible_circuits",
]


@dataclass(frozen=True)
class ReferenceSpec:
    """The prompts a mean ablation averages each component over, position by position."""

    # The expanded template; empty when `from_corrupted` (the runner takes the case's corrupted prompts).
    prompts: tuple[str, ...]
    from_corrupted: bool
    # Where `reference:` is written, so a token-length mismatch found at run time names its line.
    path: str
    line: int


@dataclass(frozen=True)
class AblationSpec:
    """How a case switches components off; circuit scores change with it, so the file says it."""

    method: str = "resample"
    # What a circuit is drawn from, and what outside it faithfulness switches off (SCOPES).
    scope: str = "heads"
    # Required by mean ablation, by the case's method or a claim's own `method: mean`.
    reference: ReferenceSpec | None = None


@dataclass(frozen=True)
class CircuitContext:
    """What a circuit claim reads from its case: the ablation, and the circuits it may name."""

    ablation: AblationSpec = field(default_factory=AblationSpec)
    circuits: Mapping[str, Circuit] = field(default_factory=lambda: MappingProxyType({}))


# What a kind of component is, and how to bring it into a circuit, for scope errors.
_KIND_WORDS = {
    "head": ("a head", ""),
    "mlp": ("an MLP", "give the case ablation: {{scope: heads_and_mlps}}, or leave it out"),
    "attn": ("a block's whole attention output", "list the block's heads instead (L{layer}H0, L{layer}H1, ...)"),
    "resid": ("the residual stream", "a circuit is made of the heads and MLPs whose outputs it sums"),
}
# A scope as a sentence says it.
SCOPE_WORDS: Mapping[str, str] = MappingProxyType({"heads": "heads", "heads_and_mlps": "heads and MLPs"})


def outside_scope(component: Component, scope: str) -> str | None:
    """Why `component` cannot be in a circuit drawn from `scope`; None when it can."""
    if component.kind in SCOPES[scope]:
        return None
    what, fix = _KIND_WORDS[component.kind]
    return (
        f"{component.name} is {what}, outside the case's ablation scope {scope!r} ({SCOPE_WORDS[scope]} only); "
        + fix.format(layer=component.layer)
    )


def _near_component(text: str) -> str:
    """Did-you-mean for a component name: "l5h3" -> 'L5H3', "L5_attention" -> 'L5_attn'."""
    if parse_component(text.upper()) is not None:
        return f" (did you mean {text.upper()!r}?)"
    layer = re.match(r"[Ll](\d+)", text)
    return suggest(text, [f"L{layer[1]}_{part}" for part in ("attn", "mlp", "resid")]) if layer else ""


def parse_components(
    ctx: EntryContext, node: SourceMap, key: str, *, where: str, scope: str | None = None
) -> tuple[Component, ...]:
    """`node[key]`: one component or a non-empty list, each distinct and, given `scope`, inside it.

    `where` names the list in messages ("circuit 'movers'"); each error is at its item's line.
    """
    raw = node[key]
    items = raw if isinstance(raw, list) else [raw]
    lines = raw.item_lines if isinstance(raw, SourceList) else [line_of(node, key)] * len(items)
    if not items:
        raise ctx.error(f"{where} is empty; give at least one component, e.g. [L5H3, L7_mlp]", node, key)
    components: list[Component] = []
    for text, line in zip(items, lines, strict=True):
        component = parse_component(text) if isinstance(text, str) else None
        problem = None
        if component is None:
            problem = (
                f"{describe(text)} is not a component; components are written L5H3 (a head), L5_attn, L5_mlp "
                f"or L5_resid{_near_component(text) if isinstance(text, str) else ''}"
            )
        elif component in components:
            problem = f"{component.name} is listed twice"
        elif scope is not None:
            problem = outside_scope(component, scope)
        if problem:
            raise CaseFileError(f"{where}: {problem}", path=ctx.path, line=line)
        assert component is not None
        components.append(component)
    return tuple(components)


def parse_circuits(
    ctx: EntryContext, node: SourceMap, *, scope: str | None = None, where: str = "the file"
) -> dict[str, Circuit]:
    """`node["circuits"]`: name -> components (a file's unchecked against any scope; a case's inside its own)."""
    mapping = require_map(ctx.path, node["circuits"], where=f"circuits in {where}", line=line_of(node, "circuits"))
    if not mapping:
        raise ctx.error("circuits is empty; give NAME: [components], e.g. movers: [L9H6, L9H9]", node, "circuits")
    circuits = {}
    for name in mapping:
        if parse_component(name) is not None or parse_head(name) is not None:
            raise ctx.error(
                f"circuit name {name!r} reads as a component; name a circuit by its role (movers, inhibitors)",
                mapping,
                name,
            )
        components = parse_components(ctx, mapping, name, where=f"circuit {name!r}", scope=scope)
        circuits[name] = Circuit(name=name, components=components, line=line_of(mapping, name))
    return circuits


def visible_circuits(ctx: EntryContext, entry: SourceMap, *, scope: str) -> Mapping[str, Circuit]:
    """The circuits a case's claims may name: the file's, then the case's own (which replace a file's namesake)."""
    own = parse_circuits(ctx, entry, scope=scope, where="a patching case") if "circuits" in entry else {}
    return MappingProxyType({**ctx.circuits, **own})


def parse_ablation(ctx: EntryContext, scope: TemplateScope, entry: SourceMap) -> AblationSpec:
    """A case's `ablation:`; a reference that no mean ablation reads is refused after its claims
    (`seqprobe.casefiles.circuit_claims.check_reference_used`), since a claim may ask for mean."""
    if "ablation" not in entry:
        return AblationSpec()
    node = require_map(ctx.path, entry["ablation"], where="ablation", line=line_of(entry, "ablation"))
    check_keys(ctx.path, node, ("method", "scope", "reference"), where="ablation")
    method = parse_choice(ctx, node, "method", ABLATION_METHODS, where="ablation", default="resample")
    scope_name = parse_choice(ctx, node, "scope", tuple(SCOPES), where="ablation", default="heads")
    assert method is not None and scope_name is not None
    if method == "mean" and "reference" not in node:
        raise ctx.error(
            "method: mean replaces each component by its mean over reference prompts; give reference: corrupted "
            "(the case's corrupted prompts) or reference: {prompt: ..., over: {...}}",
            entry,
            "ablation",
        )
    reference = _parse_reference(ctx, scope, node) if "reference" in node else None
    return AblationSpec(method=method, scope=scope_name, reference=reference)


def _parse_reference(ctx: EntryContext, scope: TemplateScope, node: SourceMap) -> ReferenceSpec:
    raw, line = node["reference"], line_of(node, "reference")
    if raw == "corrupted":
        return ReferenceSpec(prompts=(), from_corrupted=True, path=ctx.path, line=line)
    if not isinstance(raw, SourceMap):
        raise ctx.error(
            "reference in ablation is `corrupted` (the case's corrupted prompts) or a template "
            f"{{prompt: ..., over: {{VAR: SEQUENCE}}, sample: {{size, seed}}}}, found {describe(raw)}",
            node,
            "reference",
        )
    check_keys(ctx.path, raw, ("prompt", "over", "sample"), where="reference")
    prompt = get_str(ctx.path, raw, "prompt", where="reference") or ""
    if not prompt.strip():
        raise ctx.error("prompt in reference is empty; give the text the mean is taken over", raw, "prompt")
    scopes = over_scopes(ctx, scope, raw, what="reference prompt")
    prompts = tuple(bound.fill(ctx, raw, "prompt", prompt) for bound in scopes)
    return ReferenceSpec(prompts=prompts, from_corrupted=False, path=ctx.path, line=line)
