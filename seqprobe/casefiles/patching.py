"""Mechanistic cases in case files: clean/corrupted pairs and claims about where the answer is made.

A `kind: patching` case names prompt pairs that differ in one word — written out under `pairs:`,
or derived from a template by shifting its sequence (`corrupt: {day: 2}` turns "Today it is
Sunday" into "Today it is Tuesday") — and a list of claims checked on them:

    claims:
      - patch: {site: resid_pre, at: substituted, layers: [0, 0.5], min_recovery: 0.8}
      - patch: {site: z, heads: [L5H3, L7H1], min_recovery: 0.3}      # patched together
      - patch: {site: z, head: L5H3, top_k: 5}                        # among the 5 strongest
      - logit_lens: {min_logit_diff: 1.0, by_layer: 0.8}
      - direct_attribution: {head: L9H1, min_logit_diff: 0.1}

A template may instead give its corrupted prompt as a second template, as indirect object
identification does: the names are drawn from a pool, where a shift means nothing, so the
corrupted prompt swaps in a third name. `distractor:` is then required (there is no shifted
answer), and `sample:` takes a uniform sample when the pool's draws are many (more than 256 are
always sampled, with seed 0 unless told):

    sequences:
      names: {pool: [Mary, John, Tom, James, Dan, Sid]}
    circuits:                                          # for every case of the file
      movers: [L9H6, L9H9]
    suites:
      ioi:
        cases:
          - kind: patching
            id: abc
            prompt: "When {a} and {b} went to the store, {b} gave a drink to"
            corrupted: "When {a} and {b} went to the store, {c} gave a drink to"
            answer: " {a}"
            distractor: " {b}"
            over: {a: names, b: names, c: names}       # a, b and c are always distinct
            sample: {size: 64, seed: 0}
            ablation: {method: mean, scope: heads_and_mlps, reference: corrupted}
            circuits: {movers: [L9H6, L9H9, L10_mlp]}  # replaces the file's movers here
            claims:
              - path: {from: L9H6, to: logits, min_recovery: 0.3}
              - ablate: {components: [L9H6], direction: noising, max_fraction: 0.3}
              - faithfulness: {circuit: movers, min_faithfulness: 0.6}
              - necessity: {circuit: movers, max_fraction: 0.3}
              - faithfulness_curve: {ranking: z, max_k: 30, min_area: 0.5}

Every pair must contrast its prompts and its answers. The claims are parsed in
`seqprobe.casefiles.claims` and `seqprobe.casefiles.circuit_claims`, the `ablation:` and
`circuits:` settings in `seqprobe.casefiles.circuits`. This module only parses (no torch);
`seqprobe.checks.patching` runs the cases.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from seqprobe.casefiles.base import Case, EntryContext, TemplateScope, common_fields, over_scopes
from seqprobe.casefiles.circuit_claims import check_reference_used
from seqprobe.casefiles.circuits import AblationSpec, CircuitContext, parse_ablation, visible_circuits
from seqprobe.casefiles.claims import Claim, parse_claims
from seqprobe.casefiles.validation import check_keys, get_str, require_map
from seqprobe.casefiles.yamlsource import SourceList, SourceMap, line_of
from seqprobe.vocabulary.circuits import Component

__all__ = ["PairSpec", "PatchingCase", "parse_patching"]


@dataclass(frozen=True)
class PairSpec:
    clean: str
    corrupted: str
    answer: str
    distractor: str


@dataclass(frozen=True)
class PatchingCase(Case):
    pairs: tuple[PairSpec, ...] = ()
    claims: tuple[Claim, ...] = ()
    # How the circuit claims switch components off (method, scope, mean's reference prompts).
    ablation: AblationSpec = field(default_factory=AblationSpec)
    # Every circuit the case may name: the file's, then its own (which replace a namesake).
    circuits: Mapping[str, tuple[Component, ...]] = field(default_factory=lambda: MappingProxyType({}))

    kind = "patching"


def _explicit_pairs(ctx: EntryContext, scope: TemplateScope, entry: SourceMap) -> tuple[PairSpec, ...]:
    pairs = entry["pairs"]
    if not isinstance(pairs, SourceList) or not pairs:
        raise ctx.error("pairs is a non-empty list of {clean, corrupted, answer, distractor}", entry, "pairs")
    specs = []
    for pair, line in zip(pairs, pairs.item_lines, strict=True):
        pair = require_map(ctx.path, pair, where="a pair", line=line)
        check_keys(ctx.path, pair, ("clean", "corrupted", "answer", "distractor"), where="a pair")
        texts = {
            key: scope.fill(ctx, pair, key, get_str(ctx.path, pair, key, where="a pair") or "")
            for key in ("clean", "corrupted", "answer", "distractor")
        }
        specs.append(PairSpec(**texts))
    return tuple(specs)


def _template_pairs(ctx: EntryContext, scope: TemplateScope, entry: SourceMap) -> tuple[PairSpec, ...]:
    for key in ("prompt", "answer"):
        if key not in entry:
            raise ctx.error(
                "a patching case gives `pairs:`, or a template with prompt, answer and either corrupt: {VAR: shift} "
                f"or corrupted: <template>; {key} is missing",
                entry,
            )
    if ("corrupt" in entry) == ("corrupted" in entry):
        raise ctx.error(
            "a template pair is corrupted one way: corrupt: {VAR: shift} steps a sequence, corrupted: <template> "
            f"is a second prompt; {'both are given' if 'corrupt' in entry else 'neither is given'}",
            entry,
            "corrupted" if "corrupted" in entry else None,
        )
    if "corrupted" in entry:
        return _two_templates(ctx, scope, entry)
    prompt = get_str(ctx.path, entry, "prompt", where="a patching case") or ""
    answer = get_str(ctx.path, entry, "answer", where="a patching case") or ""
    distractor = get_str(ctx.path, entry, "distractor", where="a patching case", required=False)
    corrupt = require_map(ctx.path, entry["corrupt"], where="corrupt", line=line_of(entry, "corrupt"))
    # The domains keep every clean and shifted placeholder in range (bindings.written_offsets).
    pooled = over_scopes(ctx, scope, entry, what="pair", shifts=corrupt)
    bound = set(pooled[0].bindings)
    for variable, shift in corrupt.items():
        if variable not in bound:
            raise ctx.error(
                f"corrupt shifts {variable!r}, which is not bound; bound: {', '.join(sorted(bound)) or 'nothing'} (use over: or for_each:)",
                corrupt,
                variable,
            )
        if isinstance(shift, bool) or not isinstance(shift, int) or shift == 0:
            raise ctx.error(
                f"corrupt: {variable}: the shift is a non-zero whole number, found {shift!r}", corrupt, variable
            )
    pairs = []
    for clean_scope in pooled:
        shifted = TemplateScope(
            {name: (sequence, index + corrupt.get(name, 0)) for name, (sequence, index) in clean_scope.bindings.items()}
        )
        pairs.append(
            PairSpec(
                clean=clean_scope.fill(ctx, entry, "prompt", prompt),
                corrupted=shifted.fill(ctx, entry, "prompt", prompt),
                answer=clean_scope.fill(ctx, entry, "answer", answer),
                # By default the corrupted prompt's own answer: the token it pulls the model towards.
                distractor=(clean_scope if distractor is not None else shifted).fill(
                    ctx, entry, "distractor" if distractor is not None else "answer", distractor or answer
                ),
            )
        )
    return _distinct_pairs(ctx, entry, pairs, pooled)


def _two_templates(ctx: EntryContext, scope: TemplateScope, entry: SourceMap) -> tuple[PairSpec, ...]:
    """`prompt:` and `corrupted:` filled at each binding: the IOI-style pairs, where the corrupted
    prompt swaps a name for a third one instead of stepping a sequence (a pool has no steps)."""
    texts = {key: get_str(ctx.path, entry, key, where="a patching case") or "" for key in ("prompt", "corrupted")}
    if "distractor" not in entry:
        raise ctx.error(
            "a corrupted: template has no shifted answer to compare against; give distractor:, e.g. ' {b}'",
            entry,
            "corrupted",
        )
    if texts["prompt"] == texts["corrupted"]:
        raise ctx.error(
            "corrupted is the same template as prompt; change the words the pair contrasts", entry, "corrupted"
        )
    texts |= {key: get_str(ctx.path, entry, key, where="a patching case") or "" for key in ("answer", "distractor")}
    pooled = over_scopes(ctx, scope, entry, what="pair", templates=("prompt", "corrupted"))
    pairs = [
        PairSpec(
            clean=bound.fill(ctx, entry, "prompt", texts["prompt"]),
            corrupted=bound.fill(ctx, entry, "corrupted", texts["corrupted"]),
            answer=bound.fill(ctx, entry, "answer", texts["answer"]),
            distractor=bound.fill(ctx, entry, "distractor", texts["distractor"]),
        )
        for bound in pooled
    ]
    return _distinct_pairs(ctx, entry, pairs, pooled)


def _distinct_pairs(
    ctx: EntryContext, entry: SourceMap, pairs: Sequence[PairSpec], pooled: Sequence[TemplateScope]
) -> tuple[PairSpec, ...]:
    """Each pair contrasts two prompts and two answers, or its recovery would divide by nothing."""
    for pair, bound in zip(pairs, pooled, strict=True):
        named = ", ".join(f"{name}={sequence.at(index)}" for name, (sequence, index) in bound.bindings.items())
        for first, second, key in (("clean", "corrupted", "over"), ("answer", "distractor", "distractor")):
            if getattr(pair, first) == getattr(pair, second):
                raise ctx.error(
                    f"the {first} and {second} of the pair at {named or 'this case'} are both "
                    f"{getattr(pair, first)!r}; a pair must contrast them",
                    entry,
                    key if key in entry else None,
                )
    return tuple(pairs)


KEYS = (
    "pairs",
    "prompt",
    "answer",
    "distractor",
    "corrupt",
    "corrupted",
    "over",
    "sample",
    "ablation",
    "circuits",
    "claims",
)
_TEMPLATE_KEYS = ("prompt", "answer", "distractor", "corrupt", "corrupted", "over", "sample")


def parse_patching(ctx: EntryContext, scope: TemplateScope, entry: SourceMap) -> Case:
    common = common_fields(ctx, scope, entry)
    if "pairs" in entry:
        for key in _TEMPLATE_KEYS:
            if key in entry:
                raise ctx.error(
                    f"{key} belongs to a template pair; this case writes its pairs out under `pairs:`", entry, key
                )
        pairs = _explicit_pairs(ctx, scope, entry)
    else:
        pairs = _template_pairs(ctx, scope, entry)
    ablation = parse_ablation(ctx, scope, entry)
    circuits = visible_circuits(ctx, entry, scope=ablation.scope)
    claims = parse_claims(ctx, entry, setting=CircuitContext(ablation=ablation, circuits=circuits))
    check_reference_used(ctx, entry, ablation, claims)
    return PatchingCase(
        **common,
        pairs=pairs,
        claims=claims,
        ablation=ablation,
        circuits=MappingProxyType({name: circuit.components for name, circuit in circuits.items()}),
    )
