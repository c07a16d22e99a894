"""Sampling a check's variants, and shrinking a failure with hypothesis, reproducibly.

A variant is one choice per alternatives slot and one element per `over` variable.

Sampling: a check with more variants than its sample size runs a uniform random sample drawn
with its seed, so the sample's pass rate estimates the whole family's without bias. Hypothesis's
own draws would not: its generator favours first and boundary values (measured on a 93,312-
variant space: the first of 12 months in 20% of 256 draws, the sixth in 1%).

Shrinking: hypothesis searches a strategy whose every part shrinks toward what a reader finds
simplest: each slot toward its first alternative, then toward its shorter ones; each sequence
variable toward the sequence's first element. So the falsifying example it reports is a failing
variant few alternatives away from the first one, with short wording. The search is
`hypothesis.find` with a fixed seed and no example database, so it is the same on every machine
and every run; `hypothesis_draws` lists the variants it tries, in order, until one fails, so a
caller can score them in batches before the search asks for them one at a time. On a space no
larger than `max_examples` hypothesis tries every variant before giving up, so it cannot miss.
"""

from __future__ import annotations

from collections.abc import Callable
from random import Random
from typing import TYPE_CHECKING

from hypothesis import HealthCheck, Phase, find, settings
from hypothesis import strategies as st
from hypothesis.errors import NoSuchExample

if TYPE_CHECKING:
    from seqprobe.cases.families import Variant, VariantSpace

__all__ = ["hypothesis_draws", "shrink_failure", "uniform_sample", "variant_strategy"]


def uniform_sample(space: VariantSpace, *, size: int, seed: int) -> list[Variant]:
    """`size` distinct variants, each equally likely, in the space's order."""
    indices = Random(seed).sample(range(len(space)), min(size, len(space)))
    return [space.variant_at(index) for index in sorted(indices)]


def variant_strategy(space: VariantSpace) -> st.SearchStrategy[Variant]:
    """Every variant of `space`, shrinking toward first alternatives, short wording, first elements."""
    from seqprobe.cases.families import Variant

    choices = st.tuples(*(st.sampled_from(slot.shrink_order) for slot in space.slots))
    elements = st.tuples(*(st.integers(0, len(sequence) - 1) for _, sequence in space.over))
    return st.builds(Variant, choices, elements)


def _search_settings(max_examples: int) -> settings:
    # Built from the default profile, so a profile a project loads (more examples, verbose
    # output, a database) cannot change which variants a seed tries.
    return settings(
        settings.get_profile("default"),
        database=None,
        max_examples=max_examples,
        phases=(Phase.generate, Phase.shrink),
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )


def hypothesis_draws(space: VariantSpace, *, max_examples: int, seed: int) -> list[Variant]:
    """The distinct variants `shrink_failure` tries first, in order, while none of them fails."""
    drawn: list[Variant] = []

    def record(variant: Variant) -> bool:
        drawn.append(variant)
        return False

    try:
        find(variant_strategy(space), record, settings=_search_settings(max_examples), random=Random(seed))
    except NoSuchExample:
        pass  # the only way out: `record` never accepts
    return list(dict.fromkeys(drawn))


def shrink_failure(
    space: VariantSpace, fails: Callable[[Variant], bool], *, max_examples: int, seed: int
) -> Variant | None:
    """The smallest variant hypothesis finds for which `fails` holds; None when it finds none.

    Until a variant fails, hypothesis tries exactly `hypothesis_draws(space, max_examples, seed)`
    in order (its generator depends only on the seed and on every earlier try having passed).
    """
    try:
        return find(variant_strategy(space), fails, settings=_search_settings(max_examples), random=Random(seed))
    except NoSuchExample:
        return None
