"""Template arithmetic on cyclic sequences: wrap-around, inverses and readable ids, as hypothesis
properties; the sequence kinds themselves (built-ins, direct indexing, ranges).

Ordered sequences, ranges and pools in case files are `test_ordered_sequences.py`'s.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from seqprobe.casefiles.reader import parse_case_file
from seqprobe.casefiles.sequences import (
    BUILTIN_SEQUENCES,
    NumberRange,
    Pool,
    SequenceIndexError,
    WordList,
    WordSequence,
    find_placeholders,
    substitute,
)

CYCLIC = sorted((s for s in BUILTIN_SEQUENCES.values() if s.wrap), key=lambda s: s.name)
sequences = st.sampled_from(CYCLIC)
offsets = st.integers(min_value=-50, max_value=50)


@given(sequences, st.integers(min_value=-100, max_value=100))
def test_index_wraps_with_the_sequence_length(sequence: WordSequence, index: int) -> None:
    assert sequence.at(index) == sequence.at(index + len(sequence)) == sequence.at(index - len(sequence))


@given(sequences, offsets)
def test_successor_of_last_is_first_for_every_offset(sequence: WordSequence, k: int) -> None:
    last = len(sequence) - 1
    assert sequence.at(last + 1) == sequence.at(0)
    assert sequence.index(sequence.at(last + k)) == (last + k) % len(sequence)


@given(sequences, st.data(), offsets)
def test_plus_k_then_minus_k_is_the_identity(sequence: WordSequence, data: st.DataObject, k: int) -> None:
    index = data.draw(st.integers(min_value=0, max_value=len(sequence) - 1))
    shifted = substitute(f"{{x+{k}}}" if k >= 0 else f"{{x-{-k}}}", {"x": (sequence, index)})
    back = sequence.index(shifted) - k
    assert sequence.at(back) == sequence.at(index)


@given(sequences, offsets)
def test_template_expansion_covers_every_element_once(sequence: WordSequence, k: int) -> None:
    sign = "+" if k >= 0 else "-"
    text = f"""
suites:
  s:
    cases:
      - for_each: {{x: {sequence.name}}}
        prompt: "Before {{x}} comes"
        answer: " {{x{sign}{abs(k)}}}"
"""
    cases = list(parse_case_file(text, path="t.seqprobe.yaml").cases())
    assert len(cases) == len(sequence)
    assert len({case.case_id for case in cases}) == len(sequence)
    assert sorted(case.answer.strip() for case in cases) == sorted(sequence)
    for index, case in enumerate(cases):
        assert case.answer == f" {sequence.at(index + k)}"
        assert case.name == sequence.at(index).lower()


def test_wrap_around_at_the_ends_of_days_and_months() -> None:
    days, months = BUILTIN_SEQUENCES["days"], BUILTIN_SEQUENCES["months"]
    assert substitute("{d+1}", {"d": (days, days.index("Sunday"))}) == "Monday"
    assert substitute("{m+1}", {"m": (months, months.index("December"))}) == "January"
    assert substitute("{m-1|lower}", {"m": (months, 0)}) == "december"


def test_placeholders_are_parsed_with_offset_and_filter() -> None:
    (placeholder,) = find_placeholders("x {day-2|upper} y")
    assert (placeholder.name, placeholder.offset, placeholder.filter) == ("day", -2, "upper")


def test_builtins_days_and_months_wrap_and_the_others_do_not() -> None:
    kinds = {name: sequence.kind for name, sequence in BUILTIN_SEQUENCES.items()}
    assert kinds == {
        "days": "cyclic",
        "months": "cyclic",
        "letters": "ordered",
        "number_words": "ordered",
        "ordinals": "ordered",
    }
    letters, words = BUILTIN_SEQUENCES["letters"], BUILTIN_SEQUENCES["number_words"]
    assert (len(letters), letters.at(0), letters.at(25)) == (26, "A", "Z")
    assert (len(words), words.at(0), words.at(19)) == (20, "one", "twenty")
    assert BUILTIN_SEQUENCES["ordinals"].at(2) == "third"


@pytest.mark.parametrize(
    ("sequence", "index", "message"),
    [
        (
            BUILTIN_SEQUENCES["letters"],
            26,
            "index 26 is outside ordered sequence 'letters', which does not wrap: valid indices are 0..25 ('A'..'Z')",
        ),
        (
            BUILTIN_SEQUENCES["number_words"],
            -1,
            "index -1 is outside ordered sequence 'number_words', which does not wrap: valid indices are 0..19 ('one'..'twenty')",
        ),
        (
            NumberRange("years", 1900, 2100),
            201,
            "index 201 is outside ordered sequence 'years', which does not wrap: valid indices are 0..200 ('1900'..'2100')",
        ),
        (
            Pool("names", ("Mary", "John")),
            2,
            "index 2 is outside pool sequence 'names', which does not wrap: valid indices are 0..1 ('Mary'..'John')",
        ),
    ],
    ids=["letters", "number-words", "range", "pool"],
)
def test_indexing_past_an_end_that_does_not_wrap_names_the_sequence_and_range(
    sequence: WordSequence, index: int, message: str
) -> None:
    with pytest.raises(SequenceIndexError) as error:
        sequence.at(index)
    assert str(error.value) == message
    assert isinstance(error.value, IndexError)
    with pytest.raises(SequenceIndexError):
        substitute("{x+1}", {"x": (sequence, len(sequence) - 1)})


def test_a_range_is_computed_not_stored() -> None:
    years = NumberRange("years", 1900, 2100)
    assert (len(years), years.at(0), years.at(200), years.index("2000")) == (201, "1900", "2100", 100)
    assert list(NumberRange("down", 10, 0, step=-5)) == ["10", "5", "0"]
    huge = NumberRange("huge", 0, 10**12)
    assert len(huge) == 10**12 + 1 and huge.at(10**12) == str(10**12)
    assert "0042" not in NumberRange("n", 0, 100) and "42" in NumberRange("n", 0, 100)
    assert NumberRange("hours", 0, 23, wrap=True).at(24) == "0"


@pytest.mark.parametrize(
    ("first", "last", "step", "message"),
    [
        (1900, 2100, 0, "step must be a non-zero whole number"),
        (5, 5, 1, "range [5, 5] has one element"),
        (2100, 1900, 1, "runs against step=1; give a negative step (step: -1) to count down"),
        (1900, 2100, 30, "with step=30 stops at 2080, not 2100; make the last 2080 or 2110"),
    ],
)
def test_a_range_that_cannot_be_counted_says_why(first: int, last: int, step: int, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        NumberRange("r", first, last, step=step)


def test_words_repeated_in_a_list_or_pool_are_refused() -> None:
    with pytest.raises(ValueError, match=r"sequence 'x' repeats \['A'\]"):
        WordList("x", ("A", "B", "A"), wrap=False)
    with pytest.raises(ValueError, match=r"sequence 'p' repeats \['Tom'\]"):
        Pool("p", ("Tom", "Tom"))
