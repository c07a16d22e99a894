"""Shrinking a check's failure with hypothesis, reproducibly.

A variant is one choice per alternatives slot and one element per `over` variable
(`seqprobe.casefiles.sampling`, which also draws the uniform sample a large check runs: hypothesis's
own draws favour first and boundary values, so they would bias a pass rate).

Hypothesis searches a strategy whose every part shrinks toward what a reader finds simplest:
each slot toward its first alternative, then toward its shorter ones; each sequence variable
toward the sequence's first element. So the falsifying example it reports is a failing variant
few alternatives away from the first one, with short wording. The search is
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

from seqprobe.casefiles.sampling import Variant

if TYPE_CHECKING:
    from seqprobe.casefiles.sampling import VariantSpace

__all__ = ["hypothesis_draws", "shrink_failure", "variant_strategy"]


def variant_strategy(space: VariantSpace) -> st.SearchStrategy[Variant]:
    """Every variant of `space`, shrinking toward first alternatives, short wording, first elements."""
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
