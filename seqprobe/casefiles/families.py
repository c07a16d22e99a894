"""Capability robustness, as written in a case file: phrasing families, invariance and direction checks.

A model that answers "Today it is Sunday, tomorrow it is" may still fail "It is Sunday today; the
day after is". These kinds of case ask the same question many ways and report how often the
model gets it right:

- `family`: a prompt whose parts have alternatives (`alternatives: {sep: [", ", "; "]}`),
  crossed with sequences (`over: {day: days}`). Each variant must meet the completion bars
  (`max_rank`, `min_prob`, `min_logit_diff`); the family holds when at least `min_pass_rate` of
  its variants do.
- `invariance` (CheckList INV): a perturbation that should not matter (lower-case day name, an
  extra clause before the prompt) must leave the model's top prediction unchanged.
- `direction` (CheckList DIR): a perturbation that should matter ("tomorrow" → "yesterday") must
  move the log-odds of `to` over `from` up by at least `min_margin`:
  margin = [logit(to) − logit(from)] after perturbing − [logit(to) − logit(from)] before.

Invariance and direction checks take `alternatives` and `over` too: every variant is one
(prompt, perturbed) pair, and the check holds when at least `min_pass_rate` of the pairs do.

An `over` variable takes the elements in range (`seqprobe.casefiles.bindings`): on a sequence that
does not wrap, an element whose `{n+1}` would step past the end makes no variant, and variables
drawn from one pool (`over: {a: names, b: names}`) take distinct elements; a check left with no
variant is an error.

A check with at most `sample.size` variants (256 by default) runs every one of them; a larger one
runs a uniform random sample of that size, drawn with `sample.seed`, so reruns see the same variants
(`seqprobe.casefiles.sampling`, with the variant space).

This module holds what a case file says: the cases, parsed and validated with no torch, no engine
and no hypothesis, so a bad file is a collection error before any model loads. Running, scoring
and shrinking them is `seqprobe.checks.families`'s.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from seqprobe.casefiles.base import Case, EntryContext, TemplateScope, common_fields
from seqprobe.casefiles.bindings import Binding, Domain, domains, skipped_reason, written_offsets
from seqprobe.casefiles.sampling import (
    DEFAULT_SAMPLE_SIZE,
    DEFAULT_SEED,
    Slot,
    Variant,
    VariantSpace,
    parse_sample,
    sample_space,
)
from seqprobe.casefiles.sequences import find_placeholders, substitute
from seqprobe.casefiles.validation import (
    check_placeholders,
    get_str,
    get_str_list,
    lookup_sequence,
    require_map,
)
from seqprobe.casefiles.yamlsource import SourceMap, line_of

__all__ = [
    "DEFAULT_SAMPLE_SIZE",
    "DIRECTION_KEYS",
    "FAMILY_KEYS",
    "INVARIANCE_KEYS",
    "VARIANT_BARS",
    "DirectionCase",
    "FamilyCase",
    "InvarianceCase",
    "PairCheck",
    "VariantCheck",
    "parse_direction",
    "parse_family",
    "parse_invariance",
]

# The per-variant bars a family's variants are held to (see seqprobe.engine.scoring.check_expectations).
VARIANT_BARS = ("max_rank", "min_prob", "min_logit_diff")


# ---------------------------------------------------------------------------------------------
# Cases


@dataclass(frozen=True)
class VariantCheck(Case):
    """What the three kinds share: a prompt template, its variants and how many of them to run."""

    prompt: str = ""
    space: VariantSpace = field(default_factory=VariantSpace)
    # More variants than this: run a uniform sample of this many, drawn with `seed`; `seed` also
    # seeds hypothesis's search for the smallest failing variant.
    sample_size: int = DEFAULT_SAMPLE_SIZE
    seed: int = DEFAULT_SEED

    @property
    def sampled(self) -> bool:
        return len(self.space) > self.sample_size

    def variants_to_run(self) -> list[Variant]:
        return sample_space(self.space, size=self.sample_size, seed=self.seed)


@dataclass(frozen=True)
class FamilyCase(VariantCheck):
    """Every variant of `prompt` must be completed by `answer` (within the completion bars)."""

    answer: str = ""
    distractors: tuple[str, ...] = ()

    kind = "family"


@dataclass(frozen=True)
class PairCheck(VariantCheck):
    """A check on (prompt, perturbed) pairs: what the perturbation does to the prediction."""

    perturbed: str = ""


@dataclass(frozen=True)
class InvarianceCase(PairCheck):
    """`perturbed` must leave the top prediction after `prompt` unchanged."""

    kind = "invariance"


@dataclass(frozen=True)
class DirectionCase(PairCheck):
    """`perturbed` must raise logit(`target`) − logit(`source`) by at least `min_margin`."""

    # YAML `from`: the token that should lose probability; `to`: the one that should gain it.
    source: str = ""
    target: str = ""

    kind = "direction"


# ---------------------------------------------------------------------------------------------
# Parsing

SPACE_KEYS = ("prompt", "alternatives", "over", "sample")
FAMILY_KEYS = (*SPACE_KEYS, "answer", "distractors")
INVARIANCE_KEYS = (*SPACE_KEYS, "perturbed")
DIRECTION_KEYS = (*SPACE_KEYS, "perturbed", "from", "to")


def parse_family(ctx: EntryContext, scope: TemplateScope, entry: SourceMap) -> Case:
    where = "a family case"
    if "alternatives" not in entry and "over" not in entry:
        raise ctx.error(
            "a family needs alternatives: (slot: [texts]) or over: (VAR: SEQUENCE) to vary its prompt; "
            "for a single prompt write a completion case",
            entry,
        )
    fields = _parse_shared(ctx, scope, entry, where=where, templates=("prompt",))
    space = fields["space"]
    answer = _template(ctx, entry, "answer", where=where, space=space)
    if not answer:
        raise ctx.error("answer is empty; give the expected next token, e.g. ' {day+1}'", entry, "answer")
    distractors = get_str_list(ctx.path, entry, "distractors", where=where)
    for text in distractors:
        _check_placeholders(ctx, entry, "distractors", text, space=space)
    bars = [bar for bar in VARIANT_BARS if bar in fields["expect"]]
    if not bars:
        raise ctx.error(
            f"a family needs a bar each variant must meet: one of {', '.join(VARIANT_BARS)} in expect, "
            "e.g. expect: {max_rank: 1}",
            entry,
        )
    if "min_logit_diff" in bars and not distractors:
        raise ctx.error("min_logit_diff needs at least one distractor to compare against", entry, "distractors")
    for bindings in _over_bindings(space):
        filled = substitute(answer, bindings)
        if filled in (substitute(text, bindings) for text in distractors):
            raise ctx.error(f"answer {filled!r} is also a distractor for {_named(bindings)}", entry, "distractors")
    return FamilyCase(**fields, answer=answer, distractors=distractors)


def parse_invariance(ctx: EntryContext, scope: TemplateScope, entry: SourceMap) -> Case:
    return InvarianceCase(
        **_parse_shared(ctx, scope, entry, where="an invariance case", templates=("prompt", "perturbed"))
    )


def parse_direction(ctx: EntryContext, scope: TemplateScope, entry: SourceMap) -> Case:
    where = "a direction case"
    fields = _parse_shared(ctx, scope, entry, where=where, templates=("prompt", "perturbed"))
    source = _template(ctx, entry, "from", where=where, space=fields["space"])
    target = _template(ctx, entry, "to", where=where, space=fields["space"])
    if "min_margin" not in fields["expect"]:
        raise ctx.error(
            "a direction case needs min_margin in expect: how far the perturbation must raise "
            "logit(to) − logit(from), e.g. expect: {min_margin: 1.0}",
            entry,
        )
    for bindings in _over_bindings(fields["space"]):
        if substitute(source, bindings) == substitute(target, bindings):
            raise ctx.error(
                f"from and to are both {substitute(source, bindings)!r} for {_named(bindings)}", entry, "to"
            )
    return DirectionCase(**fields, source=source, target=target)


def _parse_shared(
    ctx: EntryContext, scope: TemplateScope, entry: SourceMap, *, where: str, templates: Sequence[str]
) -> dict[str, Any]:
    """The fields every kind here has: ids and thresholds, the variant space, the sample, and
    the prompt `templates` (prompt, and perturbed for a pair), each checked for its placeholders."""
    fields = common_fields(ctx, scope, entry)
    for expect in (fields["expect"], *fields["model_expect"].values()):
        rate = expect.get("min_pass_rate")
        if rate is not None and not 0 <= rate <= 1:
            raise ctx.error(f"min_pass_rate must be between 0 and 1, found min_pass_rate={rate!r}", entry, "expect")
    if "min_pass_rate" not in fields["expect"]:
        raise ctx.error(
            f"{where} needs min_pass_rate in expect: the share of variants that must pass, "
            "e.g. expect: {min_pass_rate: 0.9} (here, in the suite, or in defaults)",
            entry,
        )
    slots = _parse_alternatives(ctx, entry)
    space = VariantSpace(slots=slots, over=_parse_over(ctx, scope, entry, slots=slots), fixed=dict(scope.bindings))
    for slot in slots:
        for text in slot.alternatives:
            _check_placeholders(ctx, entry["alternatives"], slot.name, text, space=space, where="alternatives of ")
    used: set[str] = set()
    for key in templates:
        text = get_str(ctx.path, entry, key, where=where) or ""
        if not text.strip():
            raise ctx.error(f"{key} is empty; a check needs text for the model to continue", entry, key)
        _check_placeholders(ctx, entry, key, text, space=space, slots_allowed=True)
        used |= {placeholder.name for placeholder in find_placeholders(text)}
        fields[key] = text
    for slot in slots:
        if slot.name not in used:
            raise ctx.error(
                f"alternatives slot {slot.name!r} is not used; put {{{slot.name}}} in {' or '.join(templates)}",
                entry["alternatives"],
                slot.name,
            )
    size, seed = parse_sample(ctx.path, entry)
    return fields | {"space": space, "sample_size": size, "seed": seed}


def _parse_alternatives(ctx: EntryContext, entry: SourceMap) -> tuple[Slot, ...]:
    if "alternatives" not in entry:
        return ()
    node = require_map(ctx.path, entry["alternatives"], where="alternatives", line=line_of(entry, "alternatives"))
    if not node:
        raise ctx.error("alternatives is empty; give SLOT: [texts], e.g. sep: [', ', '; ']", entry, "alternatives")
    slots = []
    for name, texts in node.items():
        if not name.isidentifier():
            raise ctx.error(f"alternatives slot {name!r} must be a name like sep or opening", node, name)
        if not isinstance(texts, list) or not texts or not all(isinstance(text, str) for text in texts):
            raise ctx.error(
                f"alternatives for {name!r} must be a non-empty list of strings, found {texts!r}", node, name
            )
        repeated = sorted({text for text in texts if texts.count(text) > 1})
        if repeated:
            raise ctx.error(
                f"alternatives for {name!r} repeat {repeated}; each variant must be counted once", node, name
            )
        slots.append(Slot(name, tuple(texts)))
    return tuple(slots)


def _parse_over(
    ctx: EntryContext, scope: TemplateScope, entry: SourceMap, *, slots: Sequence[Slot]
) -> tuple[tuple[str, Domain], ...]:
    if "over" not in entry:
        return ()
    node = require_map(ctx.path, entry["over"], where="over", line=line_of(entry, "over"))
    if not node:
        raise ctx.error("over is empty; give VAR: SEQUENCE, e.g. over: {day: days}", entry, "over")
    over = []
    for name in node:
        if name in scope.bindings:
            raise ctx.error(f"over: {name} is already bound by for_each; give it another name", node, name)
        if name in {slot.name for slot in slots}:
            raise ctx.error(f"over: {name} is also an alternatives slot; give one of them another name", node, name)
        over.append((name, lookup_sequence(ctx.path, node, name, ctx.sequences, key="over")))
    offsets = written_offsets(ctx.path, entry, dict(over))
    axes = domains(over, offsets, bound=scope.bindings)
    if not all(len(domain) for _, domain in axes):
        raise ctx.error(f"every variant of over is skipped: {skipped_reason(axes, offsets)}", entry, "over")
    return axes


def _template(ctx: EntryContext, entry: SourceMap, key: str, *, where: str, space: VariantSpace) -> str:
    text = get_str(ctx.path, entry, key, where=where) or ""
    _check_placeholders(ctx, entry, key, text, space=space)
    return text


def _check_placeholders(
    ctx: EntryContext,
    node: SourceMap,
    key: str,
    text: str,
    *,
    space: VariantSpace,
    slots_allowed: bool = False,
    where: str = "",
) -> None:
    """The toolkit's placeholder check, plus this kind's rule: slots only where `slots_allowed`."""
    slots = [slot.name for slot in space.slots]
    if not slots_allowed:
        for placeholder in find_placeholders(text):
            if placeholder.name in slots:
                raise ctx.error(
                    f"{placeholder.text} in {where}{key} is an alternatives slot; slots go only in prompt and perturbed",
                    node,
                    key,
                )
    check_placeholders(
        ctx.path,
        node,
        key,
        text,
        variables=[*space.fixed, *(name for name, _ in space.over)],
        binders="over and for_each",
        slots=slots if slots_allowed else (),
        where=where,
    )


def _over_bindings(space: VariantSpace) -> Iterator[dict[str, Binding]]:
    for elements in itertools.product(*(range(len(domain)) for _, domain in space.over)):
        yield space.bindings(Variant(tuple(0 for _ in space.slots), elements))


def _named(bindings: Mapping[str, Binding]) -> str:
    return ", ".join(f"{name}={sequence.at(index)}" for name, (sequence, index) in bindings.items()) or "this case"
