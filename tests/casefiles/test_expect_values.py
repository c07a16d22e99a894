"""Values under `expect:` by kind: numbers, ranks, flags (`greedy`) and levels (`confidence`)."""

from __future__ import annotations

import pytest

from seqprobe.casefiles.reader import parse_case_file
from seqprobe.errors import CaseFileError

CASE = """\
suites:
  s:
    cases:
      - id: a
        prompt: "The capital of Argentina is"
        answer: " Buenos Aires"
        distractors: [" Lima"]
        expect: {{{expect}}}
"""


def test_flags_and_levels_are_read_as_what_they_are() -> None:
    (case,) = parse_case_file(
        CASE.format(expect="greedy: true, confidence: 0.9, min_logprob_diff: 1"), path="c.seqprobe.yaml"
    ).cases()
    assert dict(case.expect) == {"greedy": 1.0, "confidence": 0.9, "min_logprob_diff": 1}


@pytest.mark.parametrize(
    ("expect", "message"),
    [
        ("greedy: 1", "c.seqprobe.yaml:8: greedy in expect in case 'a' must be true or false, found greedy=1 (int)"),
        ("greedy: yes please", "greedy in expect in case 'a' must be true or false, found greedy='yes please' (str)"),
        (
            "confidence: 95",
            "c.seqprobe.yaml:8: confidence in expect in case 'a' is an interval's level, strictly between 0 and 1 "
            "(e.g. 0.95), found confidence=95",
        ),
        ("confidence: 1.0", "found confidence=1.0"),
        ("confidence: true", "confidence in expect in case 'a' must be a number"),
    ],
)
def test_a_wrong_flag_or_level_names_its_line(expect: str, message: str) -> None:
    with pytest.raises(CaseFileError) as error:
        parse_case_file(CASE.format(expect=expect), path="c.seqprobe.yaml").cases()
    assert message in str(error.value)
