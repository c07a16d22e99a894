"""A check's variants: the space its slots and sequences span, and the uniform sample a large one runs.

A variant is one choice per alternatives slot and one element per `over` variable; a family,
invariance or direction check is the same template rendered at every variant of its space. An
`over` variable ranges over its domain (`seqprobe.casefiles.bindings`): on a sequence that does not
wrap, the elements whose every placeholder stays inside it; from a pool, the elements that the
variables before it have not drawn. A variant holds a coordinate in each domain, so every variant
of the space is in range and distinct draws stay distinct.

A check with more variants than its sample size runs a uniform random sample drawn with its
seed, so the sample's pass rate estimates the whole family's without bias. Hypothesis's own
draws would not: its generator favours first and boundary values (measured on a 93,312-variant
space: the first of 12 months in 20% of 256 draws, the sixth in 1%). Which variants a check runs
follows from its case file alone (`sample: {size, seed}`), never from the model, so the space
and its sample live in the case layer, free of torch and hypothesis; shrinking a failure with
hypothesis is `seqprobe.checks.shrinking`'s.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from random import Random

from seqprobe.casefiles.bindings import Binding, Domain, bind
from seqprobe.casefiles.sequences import WordSequence, find_placeholders, substitute
from seqprobe.casefiles.validation import check_keys, get_number, require_map
from seqprobe.casefiles.yamlsource import SourceMap, line_of

__all__ = [
    "DEFAULT_SAMPLE_SIZE",
    "DEFAULT_SEED",
    "Slot",
    "Variant",
    "VariantSpace",
    "parse_sample",
    "sample_space",
    "uniform_sample",
]

# A space with more variants than this runs a sample of this many: four forward passes of 64, and
# a pass rate within about three points (one standard error) of the whole family's.
DEFAULT_SAMPLE_SIZE = 256
DEFAULT_SEED = 0


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
    # A coordinate in each `over` variable's domain (its index there, for a whole sequence).
    elements: tuple[int, ...]

    @property
    def distance(self) -> int:
        """How many slots use other than their first alternative."""
        return sum(1 for choice in self.choices if choice)


@dataclass(frozen=True)
class VariantSpace:
    """The variants of one check: its slots crossed with its `over` variables' domains."""

    slots: tuple[Slot, ...] = ()
    # Each `over` variable and its domain; a bare sequence given here stands for its whole domain.
    over: tuple[tuple[str, Domain], ...] = ()
    # The bindings `for_each` gave this expansion of the entry; the same for every variant.
    fixed: Mapping[str, Binding] = field(default_factory=dict)

    def __post_init__(self) -> None:
        over = tuple(
            (name, Domain.whole(domain) if isinstance(domain, WordSequence) else domain) for name, domain in self.over
        )
        object.__setattr__(self, "over", over)

    def _sizes(self) -> list[int]:
        """How many values each coordinate takes: slots first, then `over` variables."""
        return [len(slot.alternatives) for slot in self.slots] + [len(domain) for _, domain in self.over]

    def __len__(self) -> int:
        return math.prod(self._sizes())

    def __iter__(self) -> Iterator[Variant]:
        choices = itertools.product(*(range(len(slot.alternatives)) for slot in self.slots))
        elements = itertools.product(*(range(len(domain)) for _, domain in self.over))
        return (Variant(choice, element) for choice, element in itertools.product(choices, elements))

    def variant_at(self, index: int) -> Variant:
        """The variant `index` places into the iteration order (the last coordinate varies fastest)."""
        coordinates = []
        for size in reversed(self._sizes()):
            index, coordinate = divmod(index, size)
            coordinates.append(coordinate)
        coordinates.reverse()
        return Variant(tuple(coordinates[: len(self.slots)]), tuple(coordinates[len(self.slots) :]))

    def bindings(self, variant: Variant) -> dict[str, Binding]:
        return bind(self.over, variant.elements, bound=self.fixed)

    def words(self, variant: Variant) -> dict[str, str]:
        """What each `over` variable is at `variant`: variable -> element."""
        bindings = self.bindings(variant)
        return {name: bindings[name][0].at(bindings[name][1]) for name, _ in self.over}

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
        return chosen | self.words(variant)


def uniform_sample(space: VariantSpace, *, size: int, seed: int) -> list[Variant]:
    """`size` distinct variants, each equally likely, in the space's order."""
    indices = Random(seed).sample(range(len(space)), min(size, len(space)))
    return [space.variant_at(index) for index in sorted(indices)]


def sample_space(space: VariantSpace, *, size: int, seed: int) -> list[Variant]:
    """Every variant of `space` when it has at most `size`; else a uniform sample of `size`."""
    return list(space) if len(space) <= size else uniform_sample(space, size=size, seed=seed)


def parse_sample(path: str, entry: SourceMap) -> tuple[int, int]:
    """An entry's `sample: {size, seed}`, each defaulted: how many variants at most, and the draw's seed."""
    if "sample" not in entry:
        return DEFAULT_SAMPLE_SIZE, DEFAULT_SEED
    node = require_map(path, entry["sample"], where="sample", line=line_of(entry, "sample"))
    check_keys(path, node, ("size", "seed"), where="sample")
    values = {"size": DEFAULT_SAMPLE_SIZE, "seed": DEFAULT_SEED}
    for key, least in (("size", 1), ("seed", 0)):
        if key in node:
            values[key] = get_number(path, node, key, where="sample", integer=True, least=least)
    return values["size"], values["seed"]
