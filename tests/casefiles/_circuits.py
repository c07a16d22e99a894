"""A patching case with named circuits that the circuit-claim tests edit, one change at a time."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

from seqprobe.casefiles.patching import PatchingCase
from seqprobe.casefiles.reader import parse_case_file

__all__ = ["CASE", "PATH", "case_with", "claims", "parse"]

PATH = "cases/c.seqprobe.yaml"


def parse(text: str) -> list[PatchingCase]:
    return list(parse_case_file(textwrap.dedent(text), path=PATH).cases())  # type: ignore[arg-type]


# Line numbers below count from the blank first line.
CASE = """
sequences:
  names: {pool: [Mary, John, Tom, James]}
circuits:
  shared: [L9H6, L9H9]
  wide: [L9H6, L8_mlp]
suites:
  ioi:
    cases:
      - kind: patching
        id: abc
        prompt: "When {a} and {b} went to the store, {b} gave a drink to"
        corrupted: "When {a} and {b} went to the store, {c} gave a drink to"
        answer: " {a}"
        distractor: " {b}"
        over: {a: names, b: names, c: names}
        ablation: {method: resample, scope: heads}
        circuits:
          movers: [L9H6, L9H9]
        claims:
          - faithfulness: {circuit: movers, min_faithfulness: 0.6}
"""


def case_with(claims: str = "", changes: Sequence[tuple[str, str]] = ()) -> str:
    """CASE with its one claim replaced by `claims` (YAML list items), and each (old, new) text change."""
    text = CASE
    if claims:
        text = text.replace("          - faithfulness: {circuit: movers, min_faithfulness: 0.6}\n", claims)
    for old, new in changes:
        assert old in text, old
        text = text.replace(old, new)
    return text


def claims(*lines: str) -> str:
    """YAML list items of the case's `claims:`, one a line."""
    return "".join(f"          - {line}\n" for line in lines)
