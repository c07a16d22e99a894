"""Mistakes in sequences, ranges and pools, each a CaseFileError that names file:line and the fix:
arithmetic on a pool, a template whose every binding is skipped, a bad range, an unknown key.
"""

from __future__ import annotations

import textwrap

import pytest

from seqprobe.casefiles.reader import parse_case_file
from seqprobe.errors import CaseFileError

PATH = "cases/o.seqprobe.yaml"


def parse(text: str) -> list:
    return list(parse_case_file(textwrap.dedent(text), path=PATH).cases())


TEMPLATE = """
sequences:
  names: {pool: [Mary, John, Tom]}
  years: {range: [1900, 2100]}
suites:
  t:
    cases:
      - for_each: {x: years}
        prompt: "{x}"
        answer: " {x+1}"
"""

ERRORS = [
    pytest.param(
        [("for_each: {x: years}", "for_each: {x: names}")],
        ":10: {x+1} steps along pool 'names', whose elements have no order to step along; write {x}, "
        "or declare names as elements: [...] (ordered)",
        id="successor-on-a-pool",
    ),
    pytest.param(
        [("for_each: {x: years}", "for_each: {x: letters}"), ('answer: " {x+1}"', 'answer: " {x-30}"')],
        ":8: every binding of for_each is skipped: {x-30} to {x} span 31 elements, but 'letters' has 26 and "
        "does not wrap, so every binding steps past an end",
        id="every-binding-skipped",
    ),
    pytest.param(
        [
            ("for_each: {x: years}", "for_each: {x: names, y: names, z: names, w: names}"),
            ('answer: " {x+1}"', 'answer: " {y}{z}{w}"'),
        ],
        ":8: every binding of for_each is skipped: x, y, z and w draw 4 distinct elements from pool 'names', which has 3",
        id="more-draws-than-the-pool",
    ),
    pytest.param(
        [("[1900, 2100]}", "[1900, '2100']}")],
        ":4: range in sequence 'years' is [first, last], two whole numbers with both ends included, "
        "found range=[1900, '2100']",
        id="range-not-numbers",
    ),
    pytest.param(
        [("[1900, 2100]}", "[1900, 2000, 2100]}")],
        ":4: range in sequence 'years' is [first, last]",
        id="range-of-three",
    ),
    pytest.param(
        [("[1900, 2100]}", "[1900, 2100], step: 30}")],
        ":4: sequence 'years': range [1900, 2100] with step=30 stops at 2080, not 2100; make the last 2080 or 2110",
        id="range-misses-its-end",
    ),
    pytest.param(
        [("[1900, 2100]}", "[2100, 1900]}")],
        ":4: sequence 'years': range [2100, 1900] runs against step=1; give a negative step (step: -1) to count down",
        id="range-backwards",
    ),
    pytest.param(
        [("[1900, 2100]}", "[1900, 2100], step: 0}")],
        ":4: sequence 'years': range [1900, 2100]: step must be a non-zero whole number, found step=0",
        id="range-step-zero",
    ),
    pytest.param(
        [("[1900, 2100]}", "[1900, 2100], step: 1.5}")],
        ":4: step in sequence 'years' must be a whole number, found step=1.5 (float)",
        id="range-step-fraction",
    ),
    pytest.param(
        [("{range: [1900, 2100]}", "{rang: [1900, 2100]}")],
        ":4: unknown key 'rang' in sequence 'years' (did you mean 'range'?); allowed keys: elements, pool, range, step, wrap",
        id="unknown-key-range",
    ),
    pytest.param(
        [("[1900, 2100]}", "[1900, 2100], wrapp: true}")],
        ":4: unknown key 'wrapp' in sequence 'years' (did you mean 'wrap'?)",
        id="unknown-key-wrap",
    ),
    pytest.param(
        [("{pool: [Mary, John, Tom]}", "{pol: [Mary, John, Tom]}")],
        ":3: unknown key 'pol' in sequence 'names' (did you mean 'pool'?)",
        id="unknown-key-pool",
    ),
    pytest.param(
        [("{pool: [Mary, John, Tom]}", "{pool: [Mary, John, Tom], wrap: false}")],
        ":3: wrap does not apply to pool: in sequence 'names'; a pool's elements have no order",
        id="wrap-on-a-pool",
    ),
    pytest.param(
        [("{pool: [Mary, John, Tom]}", "{elements: [A, B], step: 2}")],
        ":3: step does not apply to elements: in sequence 'names'; step belongs to a range",
        id="step-on-elements",
    ),
    pytest.param(
        [("{pool: [Mary, John, Tom]}", "{pool: [Mary, John], elements: [A, B]}")],
        ":3: sequence 'names' gives one of elements: [words] (ordered), range: [first, last] (whole numbers) or "
        "pool: [words] (no order); it gives both elements and pool",
        id="two-forms",
    ),
    pytest.param(
        [("{pool: [Mary, John, Tom]}", "{elements: [A, B], wrap: sometimes}")],
        ":3: wrap in sequence 'names' is true or false, found wrap='sometimes' (str)",
        id="wrap-not-a-bool",
    ),
    pytest.param(
        [("{pool: [Mary, John, Tom]}", "{pool: [Mary, John, Mary]}")],
        ":3: sequence 'names' repeats ['Mary']; each element must appear once",
        id="pool-repeats",
    ),
    pytest.param(
        [("{pool: [Mary, John, Tom]}", "{pool: [Mary]}")],
        ":3: sequence 'names' must be a list of at least two strings, found ['Mary']",
        id="pool-of-one",
    ),
    pytest.param(
        [("{pool: [Mary, John, Tom]}", "\n    pool:\n      - Mary\n      - 7")],
        ":6: sequence 'names': element 2 is 7 (int), not a string; quote it (or write whole numbers as range: [first, last])",
        id="element-not-a-string",
    ),
    pytest.param(
        [("{pool: [Mary, John, Tom]}", "Mary")],
        ":3: sequence 'names' is a list of words (cyclic) or a mapping with elements:, range: or pool:, found 'Mary' (str)",
        id="not-a-list",
    ),
]


@pytest.mark.parametrize(("changes", "message"), ERRORS)
def test_a_sequence_mistake_is_named_with_its_line(changes: list[tuple[str, str]], message: str) -> None:
    text = TEMPLATE
    for old, new in changes:
        assert old in text
        text = text.replace(old, new)
    with pytest.raises(CaseFileError) as error:
        parse(text)
    assert str(error.value).startswith(PATH + message)


PAIRS = """
suites:
  t:
    cases:
      - kind: patching
        id: p
        over: {n: number_words}
        prompt: "It is {n}, next is"
        answer: " {n+1}"
        corrupt: {n: 2}
        claims:
          - logit_lens: {min_logit_diff: 1.0, by_layer: 0.8}
"""

PAIR_ERRORS = [
    pytest.param(
        [("over: {n: number_words}", "over: {n: names}"), ("{n+1}", "{n}")],
        ":11: corrupt: n: 2 steps along pool 'names', whose elements have no order to step along; "
        "write the pairs out under `pairs:`",
        id="corrupt-on-a-pool",
    ),
    pytest.param(
        [("corrupt: {n: 2}", "corrupt: {n: 19}")],
        ":8: every pair of over is skipped (the corrupt: shifts count): {n} to {n+20} span 21 elements, but "
        "'number_words' has 20 and does not wrap, so every binding steps past an end",
        id="every-pair-skipped",
    ),
    pytest.param(
        [
            ("kind: patching", "kind: family"),
            ("{n+1}", "{n+20}"),
            ("corrupt: {n: 2}", "expect: {min_pass_rate: 1.0, max_rank: 1}"),
            ("claims:\n          - logit_lens: {min_logit_diff: 1.0, by_layer: 0.8}\n", "alternatives: {x: [a]}\n"),
            ("It is {n}", "It is{x} {n}"),
        ],
        ":8: every variant of over is skipped: {n} to {n+20} span 21 elements, but 'number_words' has 20",
        id="every-variant-skipped",
    ),
]


@pytest.mark.parametrize(("changes", "message"), PAIR_ERRORS)
def test_pairs_and_variants_left_empty_are_named_with_their_line(changes: list[tuple[str, str]], message: str) -> None:
    text = "sequences:\n  names: {pool: [Mary, John, Tom]}" + PAIRS
    for old, new in changes:
        assert old in text
        text = text.replace(old, new)
    with pytest.raises(CaseFileError) as error:
        parse(text)
    assert str(error.value).startswith(PATH + message)
