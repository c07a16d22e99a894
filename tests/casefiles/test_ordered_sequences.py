"""Sequences that do not wrap, ranges and pools in case files: the skip rule and distinct draws,
in templates, family variants and patching pairs. Hypothesis checks the invariants on drawn
sequences; `test_sequence_errors.py` pins the mistakes' messages.
"""

from __future__ import annotations

import itertools
import math
import textwrap

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seqprobe.casefiles.bindings import domains
from seqprobe.casefiles.families import FamilyCase
from seqprobe.casefiles.patching import PatchingCase
from seqprobe.casefiles.reader import parse_case_file
from seqprobe.casefiles.sampling import VariantSpace, uniform_sample
from seqprobe.casefiles.sequences import BUILTIN_SEQUENCES, NumberRange, Pool
from seqprobe.errors import CaseFileError

PATH = "cases/o.seqprobe.yaml"


def parse(text: str) -> list:
    return list(parse_case_file(textwrap.dedent(text), path=PATH).cases())


def placeholder(variable: str, offset: int) -> str:
    return f"{{{variable}{offset:+d}}}" if offset else f"{{{variable}}}"


# ---------------------------------------------------------------------------------------------
# The skip rule


# Parsing a whole file per example: the shared test machine's timing varies too much for a deadline.
@settings(deadline=None)
@given(
    length=st.integers(min_value=2, max_value=12),
    prompt_offsets=st.lists(st.integers(min_value=-14, max_value=14), min_size=1, max_size=3),
    answer_offset=st.integers(min_value=-14, max_value=14),
)
def test_every_case_stays_inside_and_the_count_is_the_bindings_in_range(
    length: int, prompt_offsets: list[int], answer_offset: int
) -> None:
    words = [f"W{i}" for i in range(length)]
    text = f"""
    sequences:
      s: {{elements: [{", ".join(words)}]}}
    suites:
      t:
        cases:
          - for_each: {{x: s}}
            prompt: "{" ".join(placeholder("x", k) for k in prompt_offsets)}"
            answer: " {placeholder("x", answer_offset)}"
    """
    offsets = [*prompt_offsets, answer_offset]
    in_range = [i for i in range(length) if all(0 <= i + k < length for k in offsets)]
    if not in_range:
        with pytest.raises(CaseFileError) as error:
            parse(text)
        assert str(error.value).startswith(f"{PATH}:7: every binding of for_each is skipped: ")
        return
    cases = parse(text)
    assert len(cases) == len(in_range)
    for index, case in zip(in_range, cases, strict=True):
        assert case.name == f"w{index}"
        assert case.prompt == " ".join(words[index + k] for k in prompt_offsets)
        assert case.answer == f" {words[index + answer_offset]}"


@settings(deadline=None)
@given(
    first=st.integers(min_value=-50, max_value=50),
    count=st.integers(min_value=2, max_value=20),
    step=st.integers(min_value=1, max_value=7),
    k=st.integers(min_value=1, max_value=5),
    days_offset=st.integers(min_value=-9, max_value=9),
)
def test_a_product_keeps_the_range_window_and_wraps_the_cyclic_axis(
    first: int, count: int, step: int, k: int, days_offset: int
) -> None:
    last = first + (count - 1) * step
    text = f"""
    sequences:
      r: {{range: [{first}, {last}], step: {step}}}
    suites:
      t:
        cases:
          - for_each: {{n: r, day: days}}
            prompt: "{{n}} {placeholder("day", days_offset)}"
            answer: " {{n+{k}}}"
    """
    if count <= k:
        with pytest.raises(CaseFileError, match=rf"^{PATH}:7: every binding of for_each is skipped: "):
            parse(text)
        return
    cases = parse(text)
    assert len(cases) == (count - k) * 7
    numbers = [int(case.prompt.split()[0]) for case in cases]
    assert numbers == [first + i * step for i in range(count - k) for _ in range(7)]
    assert all(int(case.answer) == number + k * step for case, number in zip(cases, numbers, strict=True))
    days = BUILTIN_SEQUENCES["days"]
    assert [case.prompt.split()[1] for case in cases[:7]] == [days.at(i + days_offset) for i in range(7)]


def test_the_last_number_word_has_no_successor_so_it_makes_no_case() -> None:
    cases = parse(
        """
        suites:
          count:
            cases:
              - for_each: {n: number_words}
                prompt: "{n}, {n+1},"
                answer: " {n+2}"
              - for_each: {c: letters}
                prompt: "After {c} comes"
                answer: " {c+1}"
                distractors: [" {c-1}"]
        """
    )
    words, letters = cases[:18], cases[18:]
    assert [case.name for case in words][-1] == "eighteen" and words[-1].answer == " twenty"
    assert [case.name for case in letters][:2] == ["b", "c"] and letters[-1].name == "y"
    assert letters[-1].answer == " Z" and letters[0].distractors == (" A",)


def test_a_mapping_that_says_wrap_true_is_cyclic_and_a_plain_list_still_is() -> None:
    cases = parse(
        """
        sequences:
          seasons: [Spring, Summer, Autumn, Winter]
          hours: {range: [0, 23], wrap: true}
          abc: {elements: [A, B, C], wrap: true}
        suites:
          t:
            cases:
              - for_each: {s: seasons}
                prompt: "{s}"
                answer: " {s+1}"
              - for_each: {h: hours}
                id: "h{h}"
                prompt: "{h}"
                answer: " {h+1}"
              - for_each: {x: abc}
                id: "x{x}"
                prompt: "{x}"
                answer: " {x-1}"
        """
    )
    assert len(cases) == 4 + 24 + 3
    assert (cases[3].answer, cases[4 + 23].answer, cases[-3].answer) == (" Spring", " 0", " C")


def test_range_ids_are_the_numbers() -> None:
    cases = parse(
        """
        sequences:
          years: {range: [1900, 2100]}
        suites:
          t:
            cases:
              - for_each: {y: years}
                prompt: "In {y}, the next year is"
                answer: " {y+1}"
        """
    )
    assert len(cases) == 200 and (cases[0].name, cases[-1].name, cases[-1].answer) == ("1900", "2099", " 2100")


@given(st.integers(min_value=-(10**6), max_value=10**6), st.integers(min_value=2, max_value=50), st.data())
def test_plus_k_then_minus_k_is_the_identity_on_a_wrapping_range(first: int, size: int, data: st.DataObject) -> None:
    hours = NumberRange("r", first, first + size - 1, wrap=True)
    index = data.draw(st.integers(min_value=0, max_value=size - 1))
    k = data.draw(st.integers(min_value=-3 * size, max_value=3 * size))
    assert hours.at(hours.index(hours.at(index + k)) - k) == hours.at(index)


# ---------------------------------------------------------------------------------------------
# Pools


@settings(deadline=None)
@given(st.integers(min_value=2, max_value=6), st.integers(min_value=1, max_value=3))
def test_draws_from_one_pool_are_distinct_and_every_distinct_draw_is_made(size: int, draws: int) -> None:
    names = [f"N{i}" for i in range(size)]
    variables = "abc"[:draws]
    text = f"""
    sequences:
      names: {{pool: [{", ".join(names)}]}}
    suites:
      t:
        cases:
          - for_each: {{{", ".join(f"{v}: names" for v in variables)}}}
            prompt: "{" ".join("{" + v + "}" for v in variables)}"
            answer: " {{a}}"
    """
    if draws > size:
        with pytest.raises(CaseFileError, match=rf"^{PATH}:7: every binding of for_each is skipped: .* draw {draws} "):
            parse(text)
        return
    cases = parse(text)
    drawn = [tuple(case.prompt.split()[:draws]) for case in cases]
    assert all(len(set(names)) == draws for names in drawn)
    assert len(cases) == math.perm(size, draws) == len({case.name for case in cases})
    assert set(drawn) == set(itertools.permutations(names, draws))


@settings(deadline=None)
@given(st.integers(min_value=2, max_value=6), st.integers(min_value=0, max_value=2), st.data())
def test_a_variant_space_draws_distinct_elements_after_the_for_each_draws(
    size: int, fixed_draws: int, data: st.DataObject
) -> None:
    pool = Pool("names", tuple(f"N{i}" for i in range(size)))
    fixed = {f"f{i}": (pool, index) for i, index in enumerate(data.draw(st.permutations(range(size)))[:fixed_draws])}
    over_draws = data.draw(st.integers(min_value=1, max_value=max(1, min(3, size - fixed_draws))))
    variables = [(f"v{i}", pool) for i in range(over_draws)]
    space = VariantSpace(over=domains(variables, {}, bound=fixed), fixed=fixed)
    assert len(space) == math.perm(size - len(fixed), over_draws)
    drawn = [tuple(index for _, index in space.bindings(variant).values()) for variant in space]
    assert all(len(set(indices)) == len(indices) for indices in drawn)
    assert len(set(drawn)) == len(space), "each distinct assignment has one variant"
    assert [space.variant_at(index) for index in range(len(space))] == list(space)


IOI = """
sequences:
  names: {pool: [Mary, John, Tom, Anna]}
defaults:
  expect: {min_pass_rate: 0.9, max_rank: 1}
suites:
  ioi:
    cases:
      - kind: family
        id: ioi
        over: {a: names, b: names}
        prompt: "{when} {a} and {b} went to the store, {b} gave a drink to"
        alternatives: {when: ["When", "After"]}
        answer: " {a}"
        distractors: [" {b}"]
"""


def test_an_ioi_family_draws_two_different_names_in_every_variant() -> None:
    (case,) = parse(IOI)
    assert isinstance(case, FamilyCase)
    assert len(case.space) == 2 * 4 * 3
    variants = list(case.space)
    assert [case.space.variant_at(index) for index in range(len(case.space))] == variants
    words = [case.space.words(variant) for variant in variants]
    assert all(chosen["a"] != chosen["b"] for chosen in words)
    assert len({(chosen["a"], chosen["b"]) for chosen in words}) == 12
    assert case.space.render(case.prompt, variants[0]) == "When Mary and John went to the store, John gave a drink to"
    assert case.space.describe(variants[3]) == {"when": "When", "a": "John", "b": "Mary"}
    sample = uniform_sample(case.space, size=10, seed=1)
    assert len(set(sample)) == 10 and all(case.space.words(v)["a"] != case.space.words(v)["b"] for v in sample)


def test_an_over_draw_stays_distinct_from_a_for_each_draw_of_the_same_pool() -> None:
    cases = parse(
        IOI.replace("over: {a: names, b: names}", "for_each: {a: names}\n        over: {b: names}").replace(
            "id: ioi", 'id: "ioi-{a|lower}"'
        )
    )
    assert [case.name for case in cases] == ["ioi-mary", "ioi-john", "ioi-tom", "ioi-anna"]
    for case in cases:
        a = case.space.outline("{a}")
        assert len(case.space) == 2 * 3 and a not in {case.space.words(v)["b"] for v in case.space}


def test_pool_ids_name_both_draws() -> None:
    cases = parse(
        """
        sequences:
          names: {pool: [Mary, John, New York]}
        suites:
          t:
            cases:
              - for_each: {a: names, b: names}
                prompt: "{a} and {b}"
                answer: " {a}"
        """
    )
    assert [case.name for case in cases] == [
        "mary-john",
        "mary-new_york",
        "john-mary",
        "john-new_york",
        "new_york-mary",
        "new_york-john",
    ]


# ---------------------------------------------------------------------------------------------
# Families and patching pairs follow the same rule


def test_a_family_over_letters_has_no_variant_past_z() -> None:
    (case,) = parse(
        """
        defaults:
          expect: {min_pass_rate: 0.9, max_rank: 1}
        suites:
          t:
            cases:
              - kind: family
                id: next-letter
                over: {c: letters}
                prompt: "{c}{sep} {c+1}{sep}"
                alternatives: {sep: [",", ";"]}
                answer: " {c+2}"
        """
    )
    assert len(case.space) == 2 * 24
    last = list(case.space)[-1]
    assert (case.space.render(case.prompt, last), case.space.render(case.answer, last)) == ("X; Y;", " Z")


def test_patching_pairs_skip_a_corrupted_prompt_past_the_end() -> None:
    pooled, *shifted = parse(
        """
        suites:
          t:
            cases:
              - kind: patching
                id: pooled
                over: {n: number_words}
                prompt: "It is {n}, next is"
                answer: " {n+1}"
                corrupt: {n: 2}
                claims:
                  - logit_lens: {min_logit_diff: 1.0, by_layer: 0.8}
              - kind: patching
                for_each: {c: letters}
                prompt: "It is {c}, next is"
                answer: " {c+1}"
                corrupt: {c: -3}
                claims:
                  - logit_lens: {min_logit_diff: 1.0, by_layer: 0.8}
        """
    )
    assert isinstance(pooled, PatchingCase) and len(pooled.pairs) == 17
    last = pooled.pairs[-1]
    assert (last.clean, last.corrupted, last.answer, last.distractor) == (
        "It is seventeen, next is",
        "It is nineteen, next is",
        " eighteen",
        " twenty",
    )
    assert [case.name for case in shifted] == [chr(code).lower() for code in range(ord("D"), ord("Z"))]
    assert shifted[0].pairs[0].corrupted == "It is A, next is"
