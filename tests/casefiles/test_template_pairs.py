"""Pooled templates of patching cases: IOI-style pairs from two templates, a mean ablation's
reference prompts, and the sample drawn from them, as hypothesis properties and pinned errors."""

from __future__ import annotations

import math
import re
import textwrap

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seqprobe.casefiles.circuit_claims import AblationSpec, ReferenceSpec
from seqprobe.casefiles.patching import PairSpec, PatchingCase
from seqprobe.casefiles.reader import parse_case_file
from seqprobe.errors import CaseFileError

PATH = "cases/p.seqprobe.yaml"

# Line numbers below count from the blank first line.
IOI = """
sequences:
  names: {pool: [Mary, John, Tom, James]}
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
        claims:
          - logit_lens: {min_logit_diff: 1.0, by_layer: 0.8}
"""
CLEAN = re.compile(r"When (\w+) and (\w+) went to the store, (\w+) gave a drink to")


def parse(text: str) -> list[PatchingCase]:
    return list(parse_case_file(textwrap.dedent(text), path=PATH).cases())


def ioi(names: list[str], *, sample: str = "", ablation: str = "") -> str:
    text = IOI.replace("[Mary, John, Tom, James]", f"[{', '.join(names)}]")
    extra = "".join(f"        {line}\n" for line in (sample, ablation) if line)
    return text.replace("        claims:\n", extra + "        claims:\n")


def test_two_templates_make_every_pair_of_distinct_names() -> None:
    (case,) = parse(IOI)
    assert len(case.pairs) == 4 * 3 * 2
    assert case.pairs[0] == PairSpec(
        clean="When Mary and John went to the store, John gave a drink to",
        corrupted="When Mary and John went to the store, Tom gave a drink to",
        answer=" Mary",
        distractor=" John",
    )


def test_a_shifted_template_takes_a_sample_too() -> None:
    text = """
    suites:
      t:
        cases:
          - kind: patching
            id: days
            over: {day: days}
            prompt: "Today it is {day}, tomorrow it is"
            answer: " {day+1}"
            corrupt: {day: 2}
            sample: {size: 3, seed: 1}
            claims:
              - logit_lens: {min_logit_diff: 1.0, by_layer: 0.8}
    """
    (case,) = parse(text)
    assert len(case.pairs) == len(set(case.pairs)) == 3
    assert case.pairs == parse(text)[0].pairs


def test_mean_ablation_keeps_its_reference_and_its_line() -> None:
    (case,) = parse(ioi(["Mary", "John", "Tom"], ablation="ablation: {method: mean, reference: corrupted}"))
    assert case.ablation == AblationSpec(
        method="mean", reference=ReferenceSpec(prompts=(), from_corrupted=True, path=PATH, line=14)
    )


NAMES = st.lists(
    st.text(alphabet="abcdefgh", min_size=1, max_size=4).map("N".__add__), min_size=3, max_size=7, unique=True
)


# Parsing a whole file per example: the shared test machine's timing varies too much for a deadline.
@settings(deadline=None, max_examples=60)
@given(names=NAMES, size=st.integers(min_value=1, max_value=240), seed=st.integers(min_value=0, max_value=2**16))
def test_sampled_pairs_draw_distinct_names_from_the_pool_and_differ_only_where_the_templates_do(
    names: list[str], size: int, seed: int
) -> None:
    text = ioi(names, sample=f"sample: {{size: {size}, seed: {seed}}}")
    (case,) = parse(text)
    n = len(names)
    assert len(case.pairs) == min(size, n * (n - 1) * (n - 2))
    assert len(set(case.pairs)) == len(case.pairs)
    assert parse(text)[0].pairs == case.pairs  # the seed alone decides the sample
    for pair in case.pairs:
        clean, corrupted = CLEAN.fullmatch(pair.clean), CLEAN.fullmatch(pair.corrupted)
        assert clean is not None and corrupted is not None
        a, b, repeated = clean.groups()
        # The templates differ only in the third name: the rest of the prompts is the same text.
        assert corrupted.groups()[:2] == (a, b) and repeated == b
        c = corrupted[3]
        assert len({a, b, c}) == 3 and {a, b, c} <= set(names)
        assert (pair.answer, pair.distractor) == (f" {a}", f" {b}")


@settings(deadline=None, max_examples=40)
@given(names=NAMES, size=st.integers(min_value=1, max_value=60), seed=st.integers(min_value=0, max_value=2**16))
def test_reference_prompts_are_a_seeded_sample_of_distinct_draws(names: list[str], size: int, seed: int) -> None:
    reference = (
        f'{{prompt: "{{x}} and {{y}} went", over: {{x: names, y: names}}, sample: {{size: {size}, seed: {seed}}}}}'
    )
    text = ioi(names, ablation=f"ablation: {{method: mean, reference: {reference}}}")
    (case,) = parse(text)
    prompts = case.ablation.reference.prompts if case.ablation.reference else ()
    assert len(prompts) == len(set(prompts)) == min(size, math.perm(len(names), 2))
    assert parse(text)[0].ablation == case.ablation
    for prompt in prompts:
        x, y = prompt.removesuffix(" went").split(" and ")
        assert x != y and {x, y} <= set(names)


ERRORS = [
    pytest.param(
        [("        over:", "        corrupt: {a: 1}\n        over:")],
        ":10: a template pair is corrupted one way: corrupt: {VAR: shift} steps a sequence, corrupted: <template> "
        "is a second prompt; both are given",
        id="corrupt-and-corrupted",
    ),
    pytest.param(
        [('        corrupted: "When {a} and {b} went to the store, {c} gave a drink to"\n', "")],
        ":7: a template pair is corrupted one way: corrupt: {VAR: shift} steps a sequence, corrupted: <template> "
        "is a second prompt; neither is given",
        id="neither",
    ),
    pytest.param(
        [('        distractor: " {b}"\n', "")],
        ":10: a corrupted: template has no shifted answer to compare against; give distractor:, e.g. ' {b}'",
        id="corrupted-without-distractor",
    ),
    pytest.param(
        [("{c} gave", "{b} gave")],
        ":10: corrupted is the same template as prompt; change the words the pair contrasts",
        id="same-templates",
    ),
    pytest.param(
        [('distractor: " {b}"', 'distractor: " {a}"')],
        ":12: the answer and distractor of the pair at a=Mary, b=John, c=Tom are both ' Mary'; "
        "a pair must contrast them",
        id="answer-is-distractor",
    ),
    pytest.param(
        [("c: names}", "c: names, d: names}")],
        ":13: over: d is not used in prompt or corrupted, so each pair would repeat once per element; "
        "write {d} there or leave it out",
        id="unused-variable",
    ),
    pytest.param(
        [("        over: {a: names, b: names, c: names}\n", "        sample: {size: 3}\n")],
        ":13: sample draws from the pairs of over:, and this entry has no over",
        id="sample-without-over",
    ),
    pytest.param(
        [("over: {a: names, b: names, c: names}", "over: {a: names, b: names, c: names}\n        sample: {size: 0}")],
        ":14: size in sample must be a whole number ≥ 1, found size=0 (int)",
        id="sample-size",
    ),
    pytest.param(
        [
            ("over: {a: names, b: names, c: names}", "over: {a: names, b: names, c: names, e: names, f: names}"),
            ("{c} gave", "{c}{e}{f} gave"),
        ],
        ":13: every pair of over is skipped: a, b, c, e and f draw 5 distinct elements from pool 'names', which has 4",
        id="more-draws-than-the-pool",
    ),
]


@pytest.mark.parametrize(("changes", "message"), ERRORS)
def test_each_pair_mistake_names_its_line(changes: list[tuple[str, str]], message: str) -> None:
    text = IOI
    for old, new in changes:
        assert old in text, old
        text = text.replace(old, new)
    with pytest.raises(CaseFileError) as error:
        parse(text)
    assert str(error.value).startswith(PATH + message), str(error.value)


def test_a_shift_that_comes_back_round_is_not_a_pair() -> None:
    text = """
    suites:
      t:
        cases:
          - kind: patching
            id: days
            over: {day: days}
            prompt: "Today it is {day}, tomorrow it is"
            answer: " {day+1}"
            corrupt: {day: 7}
            claims:
              - logit_lens: {min_logit_diff: 1.0, by_layer: 0.8}
    """
    with pytest.raises(CaseFileError) as error:
        parse(text)
    assert str(error.value).startswith(
        f"{PATH}:7: the clean and corrupted of the pair at day=Monday are both 'Today it is Monday, tomorrow it is'"
    )
