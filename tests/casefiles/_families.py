"""A family case file and a large variant space that the case-file and the check tests share."""

from __future__ import annotations

import textwrap
from typing import Any

from seqprobe.casefiles.reader import parse_case_file
from seqprobe.casefiles.sampling import Slot, VariantSpace
from seqprobe.casefiles.sequences import BUILTIN_SEQUENCES

__all__ = ["FAMILY", "big_space", "parse"]

FAMILY = """
defaults:
  expect: {min_pass_rate: 0.9, max_rank: 1}
suites:
  planted:
    cases:
      - kind: family
        id: tomorrow
        over: {day: days}
        prompt: "{opening} {day}{sep}{ask}"
        alternatives:
          opening: ["Today it is", "Now it is", "It is"]
          sep: [",", ";", " and"]
          ask: [" tomorrow it is", " the next day is", " and then it is", " then it is"]
        answer: " January"
"""


def parse(text: str) -> list[Any]:
    return list(parse_case_file(textwrap.dedent(text), path="cases/r.seqprobe.yaml").cases())


def big_space() -> VariantSpace:
    """Four slots of four alternatives, and the days: 1792 variants."""
    slots = tuple(Slot(name, tuple(f"{name}{i}" for i in range(4))) for name in "abcd")
    return VariantSpace(slots=slots, over=(("day", BUILTIN_SEQUENCES["days"]),))
