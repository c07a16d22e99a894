"""Capability robustness: phrasing families, invariance and direction checks (CheckList-style).

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

A check with at most `sample.size` variants (256 by default) runs every one of them; a larger one
runs a uniform random sample of that size, drawn with `sample.seed`, so reruns see the same variants.
Variants run in batches through `seqprobe.engine.scoring`, a few forward passes for hundreds of prompts.
When a check fails, hypothesis shrinks the failure to the smallest failing variant (see
`seqprobe.checks.shrinking`), shown with its top-k table as the falsifying example.
"""

from __future__ import annotations

import difflib
import itertools
import math
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from seqprobe.cases.base import Case, EntryContext, TemplateScope, common_fields
from seqprobe.cases.sequences import FILTERS, CyclicSequence, find_placeholders, substitute
from seqprobe.cases.validation import check_keys, get_str, get_str_list, require_map
from seqprobe.cases.yamlsource import SourceMap, line_of
from seqprobe.checks.outcome import CheckOutcome
from seqprobe.engine.scoring import (
    DEFAULT_BATCH_SIZE,
    Completion,
    PreparedPrompt,
    TokenScore,
    check_expectations,
    final_logits,
    format_completion,
    prepare_prompt,
    prompt_token_ids,
    score_completions,
)
from seqprobe.errors import SeqprobeError

if TYPE_CHECKING:
    from jaxtyping import Float
    from torch import Tensor
    from transformer_lens.model_bridge import TransformerBridge

    from seqprobe.loading.models import LoadedModel

__all__ = [
    "DEFAULT_SAMPLE_SIZE",
    "DirectionCase",
    "FamilyCase",
    "InvarianceCase",
    "PairCheck",
    "Slot",
    "Variant",
    "VariantCheck",
    "VariantResult",
    "VariantSpace",
    "measure_variants",
    "run_variant_checks",
]

# Checks with more variants than this run a sample of this many: four forward passes of 64, and
# a pass rate within about three points (one standard error) of the whole family's.
DEFAULT_SAMPLE_SIZE = 256
DEFAULT_SEED = 0
# The per-variant bars a family's variants are held to (see seqprobe.engine.scoring.check_expectations).
VARIANT_BARS = ("max_rank", "min_prob", "min_logit_diff")
# Failing variants the failure text lists; all of them are in the results file.
FAILING_SHOWN = 10


# ---------------------------------------------------------------------------------------------
# Variants


@dataclass(frozen=True)
class Slot:
    """One `{name}` in a prompt and the texts it can take; the first is the canonical one."""

    name: str
    alternatives: tuple[str, ...]

    @property
    def shrink_order(self) -> tuple[int, ...]:
        """The first alternative, then the others shortest first: what shrinking prefers."""
        rest = sorted(range(1, len(self.alternatives)), key=lambda index: len(self.alternatives[index]))
        return (0, *rest)


@dataclass(frozen=True)
class Variant:
    """One prompt of a check: an alternative per slot and an element per `over` variable."""

    # Index into each slot's alternatives, in the order the file lists the slots.
    choices: tuple[int, ...]
    # Index into each `over` variable's sequence.
    elements: tuple[int, ...]

    @property
    def distance(self) -> int:
        """How many slots use other than their first alternative."""
        return sum(1 for choice in self.choices if choice)


@dataclass(frozen=True)
class VariantSpace:
    """The variants of one check: its slots crossed with its `over` sequences."""

    slots: tuple[Slot, ...] = ()
    over: tuple[tuple[str, CyclicSequence], ...] = ()
    # The bindings `for_each` gave this expansion of the entry; the same for every variant.
    fixed: Mapping[str, tuple[CyclicSequence, int]] = field(default_factory=dict)

    def __len__(self) -> int:
        return math.prod(len(slot.alternatives) for slot in self.slots) * math.prod(len(seq) for _, seq in self.over)

    def __iter__(self) -> Iterator[Variant]:
        choices = itertools.product(*(range(len(slot.alternatives)) for slot in self.slots))
        elements = itertools.product(*(range(len(sequence)) for _, sequence in self.over))
        return (Variant(choice, element) for choice, element in itertools.product(choices, elements))

    def variant_at(self, index: int) -> Variant:
        """The variant `index` places into the iteration order (the last coordinate varies fastest)."""
        sizes = [len(slot.alternatives) for slot in self.slots] + [len(sequence) for _, sequence in self.over]
        coordinates = []
        for size in reversed(sizes):
            index, coordinate = divmod(index, size)
            coordinates.append(coordinate)
        coordinates.reverse()
        return Variant(tuple(coordinates[: len(self.slots)]), tuple(coordinates[len(self.slots) :]))

    def bindings(self, variant: Variant) -> dict[str, tuple[CyclicSequence, int]]:
        over = {name: (sequence, index) for (name, sequence), index in zip(self.over, variant.elements, strict=True)}
        return {**self.fixed, **over}

    def render(self, template: str, variant: Variant) -> str:
        """`template` with each slot's chosen alternative and every variable filled in."""
        text = template
        for slot, choice in zip(self.slots, variant.choices, strict=True):
            # Alternatives never hold slots (the parser checks), so order does not matter.
            text = text.replace("{" + slot.name + "}", slot.alternatives[choice])
        return substitute(text, self.bindings(variant))

    def outline(self, template: str) -> str:
        """`template` with first alternatives and `for_each` values, `over` variables left in."""
        text = template
        for slot in self.slots:
            text = text.replace("{" + slot.name + "}", slot.alternatives[0])
        for placeholder in find_placeholders(text):
            if placeholder.name in self.fixed:
                text = text.replace(placeholder.text, substitute(placeholder.text, self.fixed))
        return text

    def describe(self, variant: Variant) -> dict[str, str]:
        """What a variant chose: slot -> alternative (as written), variable -> element."""
        chosen = {
            slot.name: slot.alternatives[choice] for slot, choice in zip(self.slots, variant.choices, strict=True)
        }
        return chosen | {
            name: sequence.at(index) for (name, sequence), index in zip(self.over, variant.elements, strict=True)
        }


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
        if not self.sampled:
            return list(self.space)
        from seqprobe.checks.shrinking import uniform_sample

        return uniform_sample(self.space, size=self.sample_size, seed=self.seed)


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
    size, seed = _parse_sample(ctx, entry)
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
) -> tuple[tuple[str, CyclicSequence], ...]:
    if "over" not in entry:
        return ()
    node = require_map(ctx.path, entry["over"], where="over", line=line_of(entry, "over"))
    if not node:
        raise ctx.error("over is empty; give VAR: SEQUENCE, e.g. over: {day: days}", entry, "over")
    over = []
    for name, sequence_name in node.items():
        if name in scope.bindings:
            raise ctx.error(f"over: {name} is already bound by for_each; give it another name", node, name)
        if name in {slot.name for slot in slots}:
            raise ctx.error(f"over: {name} is also an alternatives slot; give one of them another name", node, name)
        if not isinstance(sequence_name, str) or sequence_name not in ctx.sequences:
            known = ", ".join(sorted(ctx.sequences))
            raise ctx.error(
                f"over: {name}: unknown sequence {sequence_name!r}{_suggest(str(sequence_name), ctx.sequences)}; "
                f"known sequences: {known} (define more under the file's `sequences:` key)",
                node,
                name,
            )
        over.append((name, ctx.sequences[sequence_name]))
    return tuple(over)


def _parse_sample(ctx: EntryContext, entry: SourceMap) -> tuple[int, int]:
    if "sample" not in entry:
        return DEFAULT_SAMPLE_SIZE, DEFAULT_SEED
    node = require_map(ctx.path, entry["sample"], where="sample", line=line_of(entry, "sample"))
    check_keys(ctx.path, node, ("size", "seed"), where="sample")
    values = {"size": DEFAULT_SAMPLE_SIZE, "seed": DEFAULT_SEED}
    for key, least in (("size", 1), ("seed", 0)):
        if key in node:
            value = node[key]
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                raise ctx.error(f"{key} in sample must be a whole number ≥ {least}, found {key}={value!r}", node, key)
            values[key] = value
    return values["size"], values["seed"]


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
    """Each placeholder in `text` is a variable with a known filter, or (where allowed) a plain slot."""
    slots = [slot.name for slot in space.slots]
    variables = [*space.fixed, *(name for name, _ in space.over)]
    for placeholder in find_placeholders(text):
        name = placeholder.name
        if name in slots and not slots_allowed:
            raise ctx.error(
                f"{placeholder.text} in {where}{key} is an alternatives slot; slots go only in prompt and perturbed",
                node,
                key,
            )
        if name in slots:
            if placeholder.text != "{" + name + "}":
                raise ctx.error(
                    f"{placeholder.text} in {key}: alternatives slots take no arithmetic or filter; write {{{name}}}",
                    node,
                    key,
                )
            continue
        if name not in variables:
            bound = ", ".join(variables) or "nothing"
            also = f"; alternatives slots: {', '.join(slots)}" if slots_allowed and slots else ""
            raise ctx.error(
                f"placeholder {placeholder.text} in {where}{key} is not bound{_suggest(name, variables + slots)}; "
                f"over and for_each bind {bound}{also}",
                node,
                key,
            )
        if placeholder.filter is not None and placeholder.filter not in FILTERS:
            raise ctx.error(
                f"unknown filter |{placeholder.filter} in {placeholder.text}; filters: {', '.join(FILTERS)}", node, key
            )


def _over_bindings(space: VariantSpace) -> Iterator[dict[str, tuple[CyclicSequence, int]]]:
    for elements in itertools.product(*(range(len(sequence)) for _, sequence in space.over)):
        yield space.bindings(Variant(tuple(0 for _ in space.slots), elements))


def _named(bindings: Mapping[str, tuple[CyclicSequence, int]]) -> str:
    return ", ".join(f"{name}={sequence.at(index)}" for name, (sequence, index) in bindings.items()) or "this case"


def _suggest(word: str, choices: Collection[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


# ---------------------------------------------------------------------------------------------
# Measuring variants


@dataclass(frozen=True)
class VariantResult:
    """How one variant fared."""

    variant: Variant
    # The prompt a reader recognises the variant by (the perturbed one, for a pair).
    prompt: str
    passed: bool
    # Why it failed; empty when it passed.
    failures: tuple[str, ...]
    # family: the answer's rank; invariance: the rank, after perturbing, of the original top
    # prediction; direction: the margin.
    value: float
    # (heading, completion) pairs the falsifying example shows as top-k tables.
    completions: tuple[tuple[str, Completion], ...]
    # A line before the tables: the original prediction, or the margin's arithmetic.
    note: str = ""


def measure_variants(
    bridge: TransformerBridge,
    model_name: str,
    runs: Sequence[tuple[VariantCheck, Sequence[Variant]]],
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> list[list[VariantResult]]:
    """Each check's variants' results; the checks of one kind share one batched scoring pass.

    Raises TokenizationError (naming the case and the variant) when a variant cannot be scored.
    """
    prepared = [[_prepare(bridge, case, variant) for variant in variants] for case, variants in runs]
    return _score(bridge, model_name, runs, prepared, batch_size=batch_size)


def _prepare(bridge: TransformerBridge, case: VariantCheck, variant: Variant) -> Any:
    """Tokenize one variant's prompts, answers and distractors."""

    def render(template: str) -> str:
        return case.space.render(template, variant)

    def where(prompt: str) -> str:
        return f"{case.location} case {case.name!r}, variant {prompt!r}"

    if isinstance(case, FamilyCase):
        prompt = render(case.prompt)
        return prepare_prompt(
            bridge, prompt, render(case.answer), [render(d) for d in case.distractors], where=where(prompt)
        )
    assert isinstance(case, PairCheck)
    prompts = (render(case.prompt), render(case.perturbed))
    if isinstance(case, DirectionCase):
        source, target = render(case.source), render(case.target)
        return tuple(prepare_prompt(bridge, prompt, target, [source], where=where(prompt)) for prompt in prompts)
    # Invariance: what the perturbed prompt is scored against is the original's top prediction,
    # known only once the original has run.
    return tuple((prompt, tuple(prompt_token_ids(bridge, prompt, where=where(prompt)))) for prompt in prompts)


def _score(
    bridge: TransformerBridge,
    model_name: str,
    runs: Sequence[tuple[VariantCheck, Sequence[Variant]]],
    prepared: Sequence[Sequence[Any]],
    *,
    batch_size: int,
) -> list[list[VariantResult]]:
    results: list[list[VariantResult]] = [[] for _ in runs]
    for kind, score in _SCORERS.items():
        picked = [
            (index, case, variant, request)
            for index, ((case, variants), requests) in enumerate(zip(runs, prepared, strict=True))
            if isinstance(case, kind)
            for variant, request in zip(variants, requests, strict=True)
        ]
        if picked:
            scored = score(
                bridge, model_name, [(case, variant, request) for _, case, variant, request in picked], batch_size
            )
            for (index, *_), result in zip(picked, scored, strict=True):
                results[index].append(result)
    return results


def _score_families(
    bridge: TransformerBridge, model_name: str, items: Sequence[tuple[Any, Variant, PreparedPrompt]], batch_size: int
) -> list[VariantResult]:
    completions = score_completions(bridge, [prepared for _, _, prepared in items], batch_size=batch_size)
    results = []
    for (case, variant, _), completion in zip(items, completions, strict=True):
        bars = {bar: value for bar, value in case.expect_for(model_name).items() if bar in VARIANT_BARS}
        failures = tuple(check_expectations(completion, bars))
        results.append(
            VariantResult(
                variant=variant,
                prompt=completion.prompt,
                passed=not failures,
                failures=failures,
                value=float(completion.rank),
                completions=(("", completion),),
            )
        )
    return results


def _score_invariances(
    bridge: TransformerBridge, model_name: str, items: Sequence[tuple[Any, Variant, Any]], batch_size: int
) -> list[VariantResult]:
    """Originals first, for their top predictions; then each perturbed prompt, scored against its original's."""
    originals = [original for _, _, (original, _) in items]
    predictions = _top_predictions(bridge, final_logits(bridge, [ids for _, ids in originals], batch_size=batch_size))
    prepared = [
        PreparedPrompt(
            prompt=text, token_ids=ids, answer=top.token, answer_id=top.token_id, distractors=(), distractor_ids=()
        )
        for (_, _, (_, (text, ids))), top in zip(items, predictions, strict=True)
    ]
    completions = score_completions(bridge, prepared, batch_size=batch_size)
    results = []
    for (_, variant, _), (original, _), top, completion in zip(items, originals, predictions, completions, strict=True):
        passed = completion.rank == 1
        changed = () if passed else (f"top prediction changed from {top.token!r} to {completion.top_k[0].token!r}",)
        results.append(
            VariantResult(
                variant=variant,
                prompt=completion.prompt,
                passed=passed,
                failures=changed,
                value=float(completion.rank),
                completions=(("Perturbed prompt, scored against the original's top prediction:", completion),),
                note=f"Original prompt {original!r} predicts {top.token!r} (logit {top.logit:.2f}, prob {top.prob:.2%})",
            )
        )
    return results


def _top_predictions(bridge: TransformerBridge, logits: Float[Tensor, "prompt d_vocab"]) -> list[TokenScore]:
    probs = logits.softmax(dim=-1)
    top = logits.argmax(dim=-1)  # [prompt]
    return [
        TokenScore(bridge.to_string([int(token)]), int(token), float(logits[row, token]), float(probs[row, token]))
        for row, token in enumerate(top)
    ]


def _score_directions(
    bridge: TransformerBridge, model_name: str, items: Sequence[tuple[Any, Variant, Any]], batch_size: int
) -> list[VariantResult]:
    """Both prompts scored with `to` as the answer and `from` as the distractor; the margin is the change."""
    completions = score_completions(
        bridge, [prepared for _, _, pair in items for prepared in pair], batch_size=batch_size
    )
    results = []
    for index, (case, variant, _) in enumerate(items):
        before, after = completions[2 * index], completions[2 * index + 1]
        source = before.distractors[0].token
        gap_before, gap_after = before.logit_diffs[source], after.logit_diffs[source]
        margin = gap_after - gap_before
        bar = case.expect_for(model_name)["min_margin"]
        gap = f"logit({after.answer.token!r}) − logit({source!r})"
        passed = margin >= bar
        short = f"margin {margin:+.2f} < min_margin {bar:g}: {gap} went from {gap_before:+.2f} to {gap_after:+.2f}"
        results.append(
            VariantResult(
                variant=variant,
                prompt=after.prompt,
                passed=passed,
                failures=() if passed else (short,),
                value=margin,
                completions=(("Original prompt:", before), ("Perturbed prompt:", after)),
                note=f"margin = {gap} after − before = ({gap_after:+.2f}) − ({gap_before:+.2f}) = {margin:+.2f}",
            )
        )
    return results


_SCORERS = {FamilyCase: _score_families, InvarianceCase: _score_invariances, DirectionCase: _score_directions}


# ---------------------------------------------------------------------------------------------
# The runner


def run_variant_checks(
    model: LoadedModel,
    model_name: str,
    cases: Sequence[Case],
    *,
    detail: bool = False,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> dict[str, CheckOutcome]:
    """Run family, invariance and direction cases: one batched pass, then shrink what fails.

    A `seqprobe.checks.completion.Runner`; these checks have no figures, so `detail` changes nothing.
    """
    bridge = model.bridge
    outcomes: dict[str, CheckOutcome] = {}
    runs: list[tuple[VariantCheck, list[Variant]]] = []
    prepared: list[list[Any]] = []
    for case in cases:
        assert isinstance(case, VariantCheck)
        variants = case.variants_to_run()
        try:
            requests = [_prepare(bridge, case, variant) for variant in variants]
        except SeqprobeError as error:
            outcomes[case.case_id] = CheckOutcome(prompt=_outline(case), answer=_answer(case), error=error)
            continue
        runs.append((case, variants))
        prepared.append(requests)
    for (case, _), results in zip(runs, _score(bridge, model_name, runs, prepared, batch_size=batch_size), strict=True):
        try:
            outcomes[case.case_id] = _outcome(bridge, model_name, case, results, batch_size=batch_size)
        except SeqprobeError as error:  # a variant tried while shrinking could not be scored
            outcomes[case.case_id] = CheckOutcome(prompt=_outline(case), answer=_answer(case), error=error)
    return outcomes


def _outcome(
    bridge: TransformerBridge, model_name: str, case: VariantCheck, results: Sequence[VariantResult], *, batch_size: int
) -> CheckOutcome:
    bar = case.expect_for(model_name)["min_pass_rate"]
    rate = sum(result.passed for result in results) / len(results)
    failing = sorted((result for result in results if not result.passed), key=_simplicity)
    metrics = {"pass_rate": rate}
    if isinstance(case, DirectionCase):
        metrics["margin"] = sum(result.value for result in results) / len(results)
    details: dict[str, Any] = {
        "variants_total": len(case.space),
        "variants_run": len(results),
        "sampled": case.sampled,
        "seed": case.seed,
        "failing_variants": [result.prompt for result in failing],
    }
    failures: list[str] = []
    explanation = ""
    if rate < bar:
        failures.append(
            f"pass rate {rate:.3f} ({len(results) - len(failing)} of {len(results)} variants) < min_pass_rate {bar:g} "
            f"(short by {bar - rate:.3f})"
        )
        smallest, tried = _falsify(bridge, model_name, case, results, batch_size=batch_size)
        if smallest is not None:
            failures.append(f"smallest failing variant {smallest.prompt!r}: {'; '.join(smallest.failures)}")
            details["smallest_failing"] = _smallest_json(case, smallest, tried)
        explanation = _explain(case, rate, bar, results, failing, smallest, tried)
    return CheckOutcome(
        metrics=metrics,
        failures=tuple(failures),
        explanation=explanation,
        details=details,
        prompt=_outline(case),
        answer=_answer(case),
    )


def _falsify(
    bridge: TransformerBridge, model_name: str, case: VariantCheck, results: Sequence[VariantResult], *, batch_size: int
) -> tuple[VariantResult | None, int]:
    """Hypothesis's smallest failing variant, and how many variants it ran beyond `results`.

    The variants hypothesis tries before its first failure are scored in batches first, so only
    the shrinking steps run one variant per forward pass. None when hypothesis's first
    `sample_size` tries all pass (a sampled check whose failures are rare).
    """
    from seqprobe.checks.shrinking import hypothesis_draws, shrink_failure

    known = {result.variant: result for result in results}
    tried = 0

    def run(variants: Sequence[Variant]) -> None:
        nonlocal tried
        new = [variant for variant in dict.fromkeys(variants) if variant not in known]
        for result in measure_variants(bridge, model_name, [(case, new)], batch_size=batch_size)[0]:
            known[result.variant] = result
        tried += len(new)

    max_examples = min(len(case.space), case.sample_size)
    if case.sampled:
        draws = hypothesis_draws(case.space, max_examples=max_examples, seed=case.seed)
        for start in range(0, len(draws), batch_size):
            chunk = draws[start : start + batch_size]
            run(chunk)
            if any(not known[variant].passed for variant in chunk):
                break
        else:
            return None, tried

    def fails(variant: Variant) -> bool:
        if variant not in known:
            run([variant])
        return not known[variant].passed

    found = shrink_failure(case.space, fails, max_examples=max_examples, seed=case.seed)
    return (known[found] if found is not None else None), tried


def _simplicity(result: VariantResult) -> tuple[int, int, tuple[int, ...], tuple[int, ...]]:
    """Fewest alternatives away from the first, then shortest, then first in the file's order."""
    variant = result.variant
    return variant.distance, len(result.prompt), variant.elements, variant.choices


def _outline(case: VariantCheck) -> str:
    prompt = case.space.outline(case.prompt)
    return f"{prompt} → {case.space.outline(case.perturbed)}" if isinstance(case, PairCheck) else prompt


def _answer(case: VariantCheck) -> str:
    if isinstance(case, FamilyCase):
        return case.space.outline(case.answer)
    if isinstance(case, DirectionCase):
        return case.space.outline(case.target)
    return ""


def _choices(case: VariantCheck, variant: Variant) -> list[str]:
    """One line per slot and variable: what this variant chose."""
    lines = []
    for slot, choice in zip(case.space.slots, variant.choices, strict=True):
        which = "the first" if choice == 0 else f"{choice + 1} of {len(slot.alternatives)}"
        lines.append(f"{slot.name} = {slot.alternatives[choice]!r} (alternative {which})")
    for (name, sequence), index in zip(case.space.over, variant.elements, strict=True):
        lines.append(f"{name} = {sequence.at(index)}")
    return lines


def _explain(
    case: VariantCheck,
    rate: float,
    bar: float,
    results: Sequence[VariantResult],
    failing: Sequence[VariantResult],
    smallest: VariantResult | None,
    tried: int,
) -> str:
    total, run = len(case.space), len(results)
    ran = (
        f"a uniform sample of {run} of {total} variants (seed {case.seed})" if case.sampled else f"all {total} variants"
    )
    lines = [f"Pass rate {rate:.3f} over {ran}; min_pass_rate {bar:g}", ""]
    if smallest is None:
        lines.append(
            f"Hypothesis's first {case.sample_size} tries (seed {case.seed}) all passed: no falsifying example to shrink."
        )
    else:
        away = smallest.variant.distance
        lines.append(
            f"Falsifying example (hypothesis, seed {case.seed}; {away} alternative{'s' * (away != 1)} away from the first; "
            f"{tried} more variant{'s' * (tried != 1)} run to find and shrink it):"
        )
        lines += [f"  {line}" for line in _choices(case, smallest.variant)]
        lines.append(f"  prompt: {smallest.prompt!r}")
        lines += [f"  failed: {failure}" for failure in smallest.failures]
        if smallest.note:
            lines.append(smallest.note)
        for heading, completion in smallest.completions:
            lines += [heading] if heading else []
            lines.append(format_completion(completion))
    lines += ["", f"Failing variants ({len(failing)} of {run}), simplest first:"]
    lines += [f"  {result.prompt!r}" for result in failing[:FAILING_SHOWN]]
    if len(failing) > FAILING_SHOWN:
        lines.append(f"  (+{len(failing) - FAILING_SHOWN} more in the results file, details['failing_variants'])")
    return "\n".join(lines)


def _smallest_json(case: VariantCheck, smallest: VariantResult, tried: int) -> dict[str, Any]:
    return {
        "prompt": smallest.prompt,
        "choices": case.space.describe(smallest.variant),
        "alternatives_away": smallest.variant.distance,
        "failures": list(smallest.failures),
        "extra_variants_run": tried,
        "completions": [
            {
                "heading": heading,
                "prompt": completion.prompt,
                "answer": completion.answer.to_json(),
                "rank": completion.rank,
                "top_k": [score.to_json() for score in completion.top_k],
            }
            for heading, completion in smallest.completions
        ],
    }
