"""Template arithmetic: wrap-around, inverses and readable ids, as hypothesis properties."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from seqprobe.casefiles.reader import parse_case_file
from seqprobe.casefiles.sequences import BUILTIN_SEQUENCES, CyclicSequence, find_placeholders, substitute

sequences = st.sampled_from(sorted(BUILTIN_SEQUENCES.values(), key=lambda s: s.name))
offsets = st.integers(min_value=-50, max_value=50)


@given(sequences, st.integers(min_value=-100, max_value=100))
def test_index_wraps_with_the_sequence_length(sequence: CyclicSequence, index: int) -> None:
    assert sequence.at(index) == sequence.at(index + len(sequence)) == sequence.at(index - len(sequence))


@given(sequences, offsets)
def test_successor_of_last_is_first_for_every_offset(sequence: CyclicSequence, k: int) -> None:
    last = len(sequence) - 1
    assert sequence.at(last + 1) == sequence.elements[0]
    assert sequence.index(sequence.at(last + k)) == (last + k) % len(sequence)


@given(sequences, st.data(), offsets)
def test_plus_k_then_minus_k_is_the_identity(sequence: CyclicSequence, data: st.DataObject, k: int) -> None:
    index = data.draw(st.integers(min_value=0, max_value=len(sequence) - 1))
    shifted = substitute(f"{{x+{k}}}" if k >= 0 else f"{{x-{-k}}}", {"x": (sequence, index)})
    back = sequence.index(shifted) - k
    assert sequence.at(back) == sequence.elements[index]


@given(sequences, offsets)
def test_template_expansion_covers_every_element_once(sequence: CyclicSequence, k: int) -> None:
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
    assert sorted(case.answer.strip() for case in cases) == sorted(sequence.elements)
    for index, case in enumerate(cases):
        assert case.answer == f" {sequence.at(index + k)}"
        assert case.name == sequence.elements[index].lower()


def test_wrap_around_at_the_ends_of_days_and_months() -> None:
    days, months = BUILTIN_SEQUENCES["days"], BUILTIN_SEQUENCES["months"]
    assert substitute("{d+1}", {"d": (days, days.index("Sunday"))}) == "Monday"
    assert substitute("{m+1}", {"m": (months, months.index("December"))}) == "January"
    assert substitute("{m-1|lower}", {"m": (months, 0)}) == "december"


def test_placeholders_are_parsed_with_offset_and_filter() -> None:
    (placeholder,) = find_placeholders("x {day-2|upper} y")
    assert (placeholder.name, placeholder.offset, placeholder.filter) == ("day", -2, "upper")
