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

The claims are parsed in `seqprobe.casefiles.claims`. This module only parses (no torch);
`seqprobe.checks.patching` runs the cases.
"""

from __future__ import annotations

from dataclasses import dataclass

from seqprobe.casefiles.base import Case, EntryContext, TemplateScope, common_fields
from seqprobe.casefiles.bindings import domains, every_binding, skipped_reason, written_offsets
from seqprobe.casefiles.claims import Claim, parse_claims
from seqprobe.casefiles.validation import check_keys, get_str, lookup_sequence, require_map
from seqprobe.casefiles.yamlsource import SourceList, SourceMap, line_of

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
    for key in ("prompt", "answer", "corrupt"):
        if key not in entry:
            raise ctx.error(
                f"a patching case gives `pairs:`, or a template with prompt, answer and corrupt; {key} is missing",
                entry,
            )
    prompt = get_str(ctx.path, entry, "prompt", where="a patching case") or ""
    answer = get_str(ctx.path, entry, "answer", where="a patching case") or ""
    distractor = get_str(ctx.path, entry, "distractor", where="a patching case", required=False)
    corrupt = require_map(ctx.path, entry["corrupt"], where="corrupt", line=line_of(entry, "corrupt"))
    pooled = _pool_scopes(ctx, scope, entry)
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
    # The domains keep every clean and shifted placeholder in range (bindings.written_offsets).
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
    return tuple(pairs)


def _pool_scopes(ctx: EntryContext, scope: TemplateScope, entry: SourceMap) -> list[TemplateScope]:
    """`over: {day: days}` pools one pair per element in range into this one case (the metric
    averages them); on a sequence that does not wrap, an element whose clean or corrupted
    placeholder steps past an end makes no pair."""
    if "over" not in entry:
        return [scope]
    over = require_map(ctx.path, entry["over"], where="over", line=line_of(entry, "over"))
    variables = [(variable, lookup_sequence(ctx.path, over, variable, ctx.sequences, key="over")) for variable in over]
    offsets = written_offsets(ctx.path, entry, dict(variables), shifts=entry.get("corrupt"))
    axes = domains(variables, offsets, bound=scope.bindings)
    scopes = [TemplateScope(bindings) for bindings in every_binding(axes, bound=scope.bindings)]
    if not scopes:
        raise ctx.error(
            f"every pair of over is skipped (the corrupt: shifts count): {skipped_reason(axes, offsets)}", entry, "over"
        )
    return scopes


KEYS = ("pairs", "prompt", "answer", "distractor", "corrupt", "over", "claims")


def parse_patching(ctx: EntryContext, scope: TemplateScope, entry: SourceMap) -> Case:
    common = common_fields(ctx, scope, entry)
    if "pairs" in entry:
        for key in ("prompt", "answer", "distractor", "corrupt", "over"):
            if key in entry:
                raise ctx.error(
                    f"{key} belongs to a template pair; this case writes its pairs out under `pairs:`", entry, key
                )
        pairs = _explicit_pairs(ctx, scope, entry)
    else:
        pairs = _template_pairs(ctx, scope, entry)
    return PatchingCase(**common, pairs=pairs, claims=parse_claims(ctx, entry))
