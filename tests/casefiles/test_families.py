"""Phrasing families, invariance and direction checks as written: parsing, variant spaces, the uniform sample.

No model runs here: what a file says is checked without torch (`tests/checks/test_families.py`
runs the checks, `tests/checks/test_shrinking.py` shrinks their failures).
"""

from __future__ import annotations

import textwrap
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from seqprobe.casefiles.families import DirectionCase, FamilyCase, InvarianceCase
from seqprobe.casefiles.sampling import Slot, Variant, VariantSpace, uniform_sample
from seqprobe.casefiles.sequences import BUILTIN_SEQUENCES
from seqprobe.errors import CaseFileError
from tests.casefiles._families import FAMILY, big_space, parse

# ---------------------------------------------------------------------------------------------
# Parsing


def test_family_crosses_alternatives_with_the_sequence() -> None:
    (case,) = parse(FAMILY)
    assert isinstance(case, FamilyCase)
    assert case.kind == "family" and case.name == "tomorrow"
    assert len(case.space) == 3 * 3 * 4 * 7 == len(set(case.space))
    assert not case.sampled
    assert case.space.outline(case.prompt) == "Today it is {day}, tomorrow it is"
    last = Variant(choices=(2, 2, 3), elements=(6,))
    assert case.space.render(case.prompt, last) == "It is Sunday and then it is"
    assert case.space.describe(last) == {"opening": "It is", "sep": " and", "ask": " then it is", "day": "Sunday"}
    assert dict(case.expect) == {"min_pass_rate": 0.9, "max_rank": 1}


def test_invariance_and_direction_share_slots_between_prompt_and_perturbed() -> None:
    invariance, direction = parse(
        """
        defaults:
          expect: {min_pass_rate: 1.0}
        suites:
          s:
            cases:
              - kind: invariance
                id: clause
                over: {day: days}
                prompt: "Today it is {day}, tomorrow it is"
                perturbed: "{clause} Today it is {day|lower}, tomorrow it is"
                alternatives: {clause: ["Hi.", "Well then."]}
              - kind: direction
                id: yesterday
                over: {day: days}
                prompt: "{today}, tomorrow it is"
                perturbed: "{today}, yesterday it was"
                alternatives: {today: ["Today it is {day}", "It is {day} today"]}
                from: " {day+1}"
                to: " {day-1}"
                expect: {min_margin: 1.0}
        """
    )
    assert isinstance(invariance, InvarianceCase) and isinstance(direction, DirectionCase)
    variant = Variant(choices=(1,), elements=(6,))
    assert invariance.space.render(invariance.perturbed, variant) == "Well then. Today it is sunday, tomorrow it is"
    assert direction.space.render(direction.perturbed, variant) == "It is Sunday today, yesterday it was"
    assert (direction.space.render(direction.source, variant), direction.space.render(direction.target, variant)) == (
        " Monday",
        " Saturday",
    )


def test_for_each_makes_one_check_per_element_and_over_varies_inside_it() -> None:
    cases = parse(
        """
        suites:
          s:
            cases:
              - kind: family
                for_each: {month: months}
                id: "{month|lower}"
                over: {day: days}
                prompt: "It is {day} in {month}, tomorrow it is"
                answer: " {day+1}"
                expect: {min_pass_rate: 0.5, max_rank: 1}
        """
    )
    assert [case.name for case in cases][:2] == ["january", "february"]
    assert all(len(case.space) == 7 for case in cases)
    assert cases[1].space.outline(cases[1].prompt) == "It is {day} in February, tomorrow it is"


def test_sample_size_decides_sampling() -> None:
    (case,) = parse(FAMILY.replace("answer:", "sample: {size: 40, seed: 3}\n        answer:"))
    assert case.sampled and (case.sample_size, case.seed) == (40, 3)


ERRORS = [
    (
        "        allternatives: {a: [x]}\n",
        "r.seqprobe.yaml:16: unknown key 'allternatives' in a family case (did you mean 'alternatives'?)",
    ),
    (
        "        distractors: [' {dya}']\n",
        "r.seqprobe.yaml:16: placeholder {dya} in distractors is not bound (did you mean 'day'?); over and for_each bind day",
    ),
    ("        sample: {size: 0}\n", "r.seqprobe.yaml:16: size in sample must be a whole number ≥ 1, found size=0"),
    ("        sample: {sead: 1}\n", "r.seqprobe.yaml:16: unknown key 'sead' in sample (did you mean 'seed'?)"),
    (
        "        expect: {min_pass_rate: 1.5}\n",
        "r.seqprobe.yaml:16: min_pass_rate must be between 0 and 1, found min_pass_rate=1.5",
    ),
    (
        "        expect: {min_pass_rat: 1}\n",
        "r.seqprobe.yaml:16: unknown key 'min_pass_rat' in expect in case 'tomorrow' (did you mean 'min_pass_rate'?)",
    ),
    (
        "        distractors: [' January']\n",
        "r.seqprobe.yaml:16: answer ' January' is also a distractor for day=Monday",
    ),
]


@pytest.mark.parametrize(("extra", "message"), ERRORS)
def test_a_mistake_is_named_with_its_line(extra: str, message: str) -> None:
    with pytest.raises(CaseFileError) as error:
        parse(textwrap.dedent(FAMILY) + extra)
    assert str(error.value).startswith("cases/" + message)


SLOT_ERRORS = [
    (
        'prompt: "{opening} {day}{sep}{ask}"',
        'prompt: "{opening} {day}{sep}{ask}{tail}"',
        ":10: placeholder {tail} in prompt is not bound; over and for_each bind day; alternatives slots: opening, sep, ask",
    ),
    (
        'prompt: "{opening} {day}{sep}{ask}"',
        'prompt: "{opening} {day}{sep+1}{ask}"',
        ":10: {sep+1} in prompt: alternatives slots take no arithmetic or filter; write {sep}",
    ),
    (
        'prompt: "{opening} {day}{sep}{ask}"',
        'prompt: "{opening} {day}{ask}"',
        ":13: alternatives slot 'sep' is not used; put {sep} in prompt",
    ),
    (
        'sep: [",", ";", " and"]',
        'sep: [",", "{ask}"]',
        ":13: {ask} in alternatives of sep is an alternatives slot; slots go only in prompt and perturbed",
    ),
    (
        'answer: " January"',
        'answer: " {sep}"',
        ":15: {sep} in answer is an alternatives slot; slots go only in prompt and perturbed",
    ),
    (
        'sep: [",", ";", " and"]',
        'sep: [",", ","]',
        ":13: alternatives for 'sep' repeat [',']; each variant must be counted once",
    ),
    ('sep: [",", ";", " and"]', "sep: []", ":13: alternatives for 'sep' must be a non-empty list of strings, found []"),
    ("over: {day: days}", "over: {day: dayz}", ":9: over: day: unknown sequence 'dayz' (did you mean 'days'?)"),
    (
        "over: {day: days}",
        "over: {opening: days}",
        ":9: over: opening is also an alternatives slot; give one of them another name",
    ),
    (
        "expect: {min_pass_rate: 0.9, max_rank: 1}",
        "expect: {min_pass_rate: 0.9}",
        ":7: a family needs a bar each variant must meet: one of max_rank, min_prob, min_logit_diff in expect",
    ),
    (
        "expect: {min_pass_rate: 0.9, max_rank: 1}",
        "expect: {max_rank: 1}",
        ":7: a family case needs min_pass_rate in expect: the share of variants that must pass",
    ),
]


@pytest.mark.parametrize(("old", "new", "message"), SLOT_ERRORS)
def test_alternatives_mistakes_are_named_with_their_line(old: str, new: str, message: str) -> None:
    assert old in FAMILY
    with pytest.raises(CaseFileError) as error:
        parse(FAMILY.replace(old, new))
    assert str(error.value).startswith("cases/r.seqprobe.yaml" + message)


def test_direction_needs_a_margin_and_two_different_tokens() -> None:
    direction = """
    suites:
      s:
        expect: {min_pass_rate: 0.9, min_margin: 1.0}
        cases:
          - kind: direction
            id: d
            over: {day: days}
            prompt: "Today it is {day}, tomorrow it is"
            perturbed: "Today it is {day}, yesterday it was"
            from: " {day+1}"
            to: " {day-1}"
    """
    assert len(parse(direction)[0].space) == 7
    with pytest.raises(CaseFileError, match=r":6: a direction case needs min_margin in expect"):
        parse(direction.replace(", min_margin: 1.0", ""))
    with pytest.raises(CaseFileError, match=r":12: from and to are both ' Tuesday' for day=Monday"):
        parse(direction.replace("{day-1}", "{day+1}"))


# ---------------------------------------------------------------------------------------------
# Variant spaces and the uniform sample

# No braces: an alternative holding "{day}" would be filled in, which is the point of a template.
slot_lists = st.lists(st.text(st.characters(exclude_characters="{}"), max_size=6), min_size=1, max_size=4, unique=True)


@st.composite
def spaces(draw: st.DrawFn) -> VariantSpace:
    names = draw(st.lists(st.sampled_from(["a", "b", "c"]), unique=True, max_size=3))
    over = draw(st.sampled_from([(), (("day", BUILTIN_SEQUENCES["days"]),)]))
    return VariantSpace(slots=tuple(Slot(name, tuple(draw(slot_lists))) for name in names), over=over)


@given(spaces())
def test_a_space_lists_each_variant_once_and_renders_its_choices(space: VariantSpace) -> None:
    variants = list(space)
    assert len(variants) == len(space) == len(set(variants))
    template = "".join("{" + slot.name + "}|" for slot in space.slots) + ("{day}" if space.over else "")
    for variant in variants[:50]:
        expected = "".join(
            slot.alternatives[choice] + "|" for slot, choice in zip(space.slots, variant.choices, strict=True)
        )
        expected += space.over[0][1].at(variant.elements[0]) if space.over else ""
        assert space.render(template, variant) == expected


@given(slot_lists)
def test_shrink_order_starts_with_the_first_alternative_then_shortest(alternatives: list[str]) -> None:
    order = Slot("s", tuple(alternatives)).shrink_order
    assert sorted(order) == list(range(len(alternatives))) and order[0] == 0
    assert [len(alternatives[i]) for i in order[1:]] == sorted(len(a) for a in alternatives[1:])


@given(spaces())
def test_variant_at_follows_the_iteration_order(space: VariantSpace) -> None:
    assert [space.variant_at(index) for index in range(len(space))] == list(space)


def test_a_seed_draws_the_same_uniform_sample_every_time() -> None:
    space = big_space()
    first = uniform_sample(space, size=256, seed=7)
    assert first == uniform_sample(space, size=256, seed=7)
    assert len(first) == len(set(first)) == 256 and set(first) <= set(space)
    assert first != uniform_sample(space, size=256, seed=8)
    assert uniform_sample(space, size=5000, seed=7) == list(space)


def test_the_sample_favours_no_element() -> None:
    # Hypothesis's own draws would: it tries first and boundary values far more often.
    counts = Counter(variant.elements[0] for variant in uniform_sample(big_space(), size=256, seed=0))
    assert len(counts) == 7 and max(counts.values()) < 1.5 * min(counts.values())
