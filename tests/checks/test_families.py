"""Phrasing families, invariance and direction checks: parsing, sampling, shrinking, running.

Most tests run on the tiny Llama with a planted defect (`Planted`): any prompt holding the
trigger token " then" pushes " January" from the top of the distribution to the bottom, and every
other prompt puts it on top. Which variants fail is then known exactly, so the pass rate and the
smallest failing variant hypothesis must find are too.
"""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
import textwrap
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from seqprobe.cases.casefile import parse_case_file
from seqprobe.cases.families import (
    DirectionCase,
    FamilyCase,
    InvarianceCase,
    Slot,
    Variant,
    VariantSpace,
    measure_variants,
    run_variant_checks,
)
from seqprobe.cases.sequences import BUILTIN_SEQUENCES
from seqprobe.checks.shrinking import hypothesis_draws, shrink_failure, uniform_sample
from seqprobe.errors import CaseFileError
from seqprobe.loading.models import LoadedModel, ModelInfo

pytestmark = pytest.mark.filterwarnings("ignore")

MODEL = "tiny"
TRIGGER, FAVOURITE = " then", " January"

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
# Of the 3 × 3 × 4 × 7 = 252 variants, the half whose `ask` holds " then" fail. The smallest:
# every slot at its first alternative but `ask`, there the shorter of the two with " then".
SMALLEST = "Today it is Monday, then it is"


def parse(text: str, path: str = "cases/r.seqprobe.yaml") -> list[Any]:
    return list(parse_case_file(textwrap.dedent(text), path=path).cases())


class Planted:
    """A bridge whose prompts holding TRIGGER rank FAVOURITE last, and all others first."""

    def __init__(self, bridge: Any) -> None:
        self.bridge = bridge
        self.trigger = int(bridge.to_tokens(TRIGGER, prepend_bos=False)[0, 0])
        self.favourite = int(bridge.to_tokens(FAVOURITE, prepend_bos=False)[0, 0])
        self.forwards = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.bridge, name)

    def __call__(self, tokens: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        self.forwards += 1
        logits = self.bridge(tokens, **kwargs).clone()  # [batch pos d_vocab]
        hit = (tokens == self.trigger).any(dim=-1)  # [batch]
        logits[..., self.favourite] += torch.where(hit, -100.0, 100.0)[:, None]
        return logits


@pytest.fixture
def planted(tiny_llama_bridge: Any) -> LoadedModel:
    info = ModelInfo(name=MODEL, source="test", sha256="", dtype="float32", device="cpu")
    return LoadedModel(bridge=Planted(tiny_llama_bridge), info=info)  # type: ignore[arg-type]


def run_one(model: LoadedModel, case: Any, **kwargs: Any) -> Any:
    return run_variant_checks(model, MODEL, [case], **kwargs)[case.case_id]


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
# Variant spaces, sampling and shrinking, without a model

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


def big_space() -> VariantSpace:
    """Four slots of four alternatives, and the days: 1792 variants."""
    slots = tuple(Slot(name, tuple(f"{name}{i}" for i in range(4))) for name in "abcd")
    return VariantSpace(slots=slots, over=(("day", BUILTIN_SEQUENCES["days"]),))


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


def test_a_seed_draws_the_same_variants_in_another_process() -> None:
    # big_space's own source, so the other process does not import this module (and torch).
    script = (
        "from seqprobe.cases.families import Slot, VariantSpace\n"
        "from seqprobe.cases.sequences import BUILTIN_SEQUENCES\n"
        "from seqprobe.checks.shrinking import hypothesis_draws, uniform_sample\n"
        f"{inspect.getsource(big_space)}\n"
        "print([(v.choices, v.elements) for v in uniform_sample(big_space(), size=64, seed=7)])\n"
        "print([(v.choices, v.elements) for v in hypothesis_draws(big_space(), max_examples=64, seed=7)])\n"
    )
    env = os.environ | {"PYTHONHASHSEED": "123"}
    root = Path(__file__).resolve().parents[2]
    output = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, env=env, cwd=root
    )
    here = [
        [(v.choices, v.elements) for v in uniform_sample(big_space(), size=64, seed=7)],
        [(v.choices, v.elements) for v in hypothesis_draws(big_space(), max_examples=64, seed=7)],
    ]
    assert output.stdout.splitlines() == [str(variants) for variants in here]


def test_hypothesis_tries_its_draws_in_order_until_one_fails() -> None:
    space = big_space()
    draws = hypothesis_draws(space, max_examples=128, seed=0)
    planted = draws[40]
    tried: list[Variant] = []

    def fails(variant: Variant) -> bool:
        tried.append(variant)
        return variant == planted

    assert shrink_failure(space, fails, max_examples=128, seed=0) == planted, "nothing smaller fails"
    assert list(dict.fromkeys(tried[: tried.index(planted) + 1])) == draws[:41]


@pytest.mark.parametrize("sampled", [False, True])
def test_shrinking_finds_the_planted_minimum(sampled: bool) -> None:
    # Fails when slot b uses alternative 2 or 3 and the day is Wednesday or later; the minimum
    # has every other slot at its first alternative, b at 2, and Wednesday.
    space = big_space()
    max_examples = 128 if sampled else len(space)

    def fails(variant: Variant) -> bool:
        return variant.choices[1] >= 2 and variant.elements[0] >= 2

    if sampled:
        assert any(fails(variant) for variant in hypothesis_draws(space, max_examples=max_examples, seed=0))
    found = shrink_failure(space, fails, max_examples=max_examples, seed=0)
    assert found == Variant(choices=(0, 2, 0, 0), elements=(2,))


def test_shrinking_says_none_when_nothing_fails() -> None:
    assert shrink_failure(big_space(), lambda variant: False, max_examples=50, seed=0) is None


# ---------------------------------------------------------------------------------------------
# Running on the tiny model with a planted defect


def test_planted_failure_is_found_and_shrunk(planted: LoadedModel) -> None:
    (case,) = parse(FAMILY)
    outcome = run_one(planted, case)
    assert outcome.error is None
    assert outcome.metrics == {"pass_rate": 0.5}
    details = outcome.details
    assert (details["variants_total"], details["variants_run"], details["sampled"], details["seed"]) == (
        252,
        252,
        False,
        0,
    )
    assert len(details["failing_variants"]) == 126
    assert details["failing_variants"][0] == SMALLEST
    smallest = details["smallest_failing"]
    assert smallest["prompt"] == SMALLEST
    assert smallest["choices"] == {"opening": "Today it is", "sep": ",", "ask": " then it is", "day": "Monday"}
    assert smallest["alternatives_away"] == 1
    assert smallest["extra_variants_run"] == 0, "every variant was run already"
    assert smallest["completions"][0]["top_k"][0]["token"] != FAVOURITE
    assert outcome.failures == (
        "pass rate 0.500 (126 of 252 variants) < min_pass_rate 0.9 (short by 0.400)",
        f"smallest failing variant {SMALLEST!r}: rank of ' January' = {smallest['completions'][0]['rank']} > max_rank 1",
    )
    lines = outcome.explanation.splitlines()
    assert lines[:9] == [
        "Pass rate 0.500 over all 252 variants; min_pass_rate 0.9",
        "",
        "Falsifying example (hypothesis, seed 0; 1 alternative away from the first; 0 more variants run to find and shrink it):",
        "  opening = 'Today it is' (alternative the first)",
        "  sep = ',' (alternative the first)",
        "  ask = ' then it is' (alternative 4 of 4)",
        "  day = Monday",
        f"  prompt: {SMALLEST!r}",
        f"  failed: rank of ' January' = {smallest['completions'][0]['rank']} > max_rank 1",
    ]
    assert "Top 10:" in lines
    assert lines[-12:-10] == ["Failing variants (126 of 252), simplest first:", f"  {SMALLEST!r}"]
    assert lines[-1] == "  (+116 more in the results file, details['failing_variants'])"
    json.dumps(details)  # the results file must be able to hold it


def test_a_family_runs_in_batches(planted: LoadedModel) -> None:
    (case,) = parse(FAMILY.replace("min_pass_rate: 0.9", "min_pass_rate: 0.5"))
    outcome = run_one(planted, case)
    assert not outcome.failures, "0.5 meets the bar: nothing to shrink"
    assert planted.bridge.forwards == 4  # 252 prompts, batches of 64


def test_sampled_and_exhaustive_runs_agree(planted: LoadedModel) -> None:
    (exhaustive,) = parse(FAMILY)
    sampled = replace(exhaustive, sample_size=40)
    variants = sampled.variants_to_run()
    assert len(variants) == 40
    whole = {
        result.variant: result
        for result in measure_variants(planted.bridge, MODEL, [(exhaustive, list(exhaustive.space))])[0]
    }
    part = measure_variants(planted.bridge, MODEL, [(sampled, variants)])[0]
    assert [result.passed for result in part] == [whole[result.variant].passed for result in part]

    outcome = run_one(planted, sampled)
    assert (outcome.details["variants_run"], outcome.details["sampled"]) == (40, True)
    assert outcome.metrics["pass_rate"] == pytest.approx(0.5, abs=0.15), "a uniform sample estimates the family's 0.5"
    assert outcome.details["smallest_failing"]["prompt"] == SMALLEST
    assert "over a uniform sample of 40 of 252 variants (seed 0)" in outcome.explanation.splitlines()[0]


RARE = """
defaults:
  expect: {min_pass_rate: 1.0, max_rank: 1}
suites:
  planted:
    cases:
      - kind: family
        id: rare
        over: {day: days}
        prompt: "{a} {day},{b}{c}"
        alternatives:
          a: ["Today it is", "Now it is", "It is", "So it is", "Well it is", "Today it is,"]
          b: [" tomorrow", " th", " next", " after", " the", " and"]
          c: [" it is", "en it is", " day is", " is", " was", " will be"]
        answer: " January"
        sample: {size: 40, seed: 4}
"""


def test_a_failure_hypothesis_does_not_meet_is_still_reported(planted: LoadedModel) -> None:
    # Only " th" followed by "en it is" spells the trigger: 1 variant in 36. Seed 4's uniform
    # sample holds 4 such variants; hypothesis's first 40 tries with seed 4 hold none.
    (case,) = parse(RARE)
    outcome = run_one(planted, case)
    assert outcome.metrics == {"pass_rate": 36 / 40}
    assert len(outcome.failures) == 1 and "smallest_failing" not in outcome.details
    assert all(", then it is" in prompt for prompt in outcome.details["failing_variants"])
    assert outcome.explanation.splitlines()[2] == (
        "Hypothesis's first 40 tries (seed 4) all passed: no falsifying example to shrink."
    )


def test_sampled_runs_are_reproducible(planted: LoadedModel) -> None:
    (case,) = parse(FAMILY.replace("answer:", "sample: {size: 30, seed: 5}\n        answer:"))
    first, second = run_one(planted, case), run_one(planted, case)
    assert first.metrics == second.metrics
    assert first.details == second.details
    assert first.explanation == second.explanation


def test_batched_evaluation_equals_one_at_a_time(tiny_bridge: Any) -> None:
    (case,) = parse(
        FAMILY.replace('answer: " January"', 'answer: " {day+1}"\n        distractors: [" {day}"]').replace(
            "max_rank: 1", "max_rank: 300, min_logit_diff: 0.0"
        )
    )
    variants = list(case.space)[::9]
    batched = measure_variants(tiny_bridge, MODEL, [(case, variants)], batch_size=64)[0]
    alone = measure_variants(tiny_bridge, MODEL, [(case, variants)], batch_size=1)[0]
    assert len({result.passed for result in batched}) == 2, "some variants must pass and some fail"
    for together, single in zip(batched, alone, strict=True):
        assert (together.variant, together.passed, together.value) == (single.variant, single.passed, single.value)
        (_, a), (_, b) = together.completions[0], single.completions[0]
        assert a.answer.logit == pytest.approx(b.answer.logit, abs=1e-5)
        assert a.logit_diffs == pytest.approx(b.logit_diffs, abs=1e-5)


INVARIANCE_AND_DIRECTION = """
defaults:
  expect: {min_pass_rate: 0.9}
suites:
  s:
    cases:
      - kind: invariance
        id: clause
        over: {day: days}
        prompt: "Today it is {day}, tomorrow it is"
        perturbed: "{clause} Today it is {day}, tomorrow it is"
        alternatives: {clause: ["Hello.", "And then", "So"]}
      - kind: direction
        id: then
        over: {day: days}
        prompt: "Today it is {day},{ask}"
        perturbed: "Today it is {day}, then{ask}"
        alternatives: {ask: [" it is", " the day is"]}
        from: " January"
        to: " {day}"
        expect: {min_margin: 50}
      - kind: direction
        id: no-then
        over: {day: days}
        prompt: "Today it is {day}, tomorrow it is"
        perturbed: "Today it is {day}, next it is"
        from: " January"
        to: " {day}"
        expect: {min_margin: 50}
"""


def test_invariance_and_direction_on_the_planted_defect(planted: LoadedModel) -> None:
    invariance, direction, unmoved = parse(INVARIANCE_AND_DIRECTION)
    outcomes = run_variant_checks(planted, MODEL, [invariance, direction, unmoved])

    inv = outcomes[invariance.case_id]
    assert inv.metrics == {"pass_rate": pytest.approx(2 / 3)}
    assert inv.details["smallest_failing"]["prompt"] == "And then Today it is Monday, tomorrow it is"
    assert inv.failures[1] == (
        "smallest failing variant 'And then Today it is Monday, tomorrow it is': "
        f"top prediction changed from ' January' to {inv.details['smallest_failing']['completions'][0]['top_k'][0]['token']!r}"
    )
    assert "Original prompt 'Today it is Monday, tomorrow it is' predicts ' January'" in inv.explanation
    assert inv.prompt == "Today it is {day}, tomorrow it is → Hello. Today it is {day}, tomorrow it is"

    moved = outcomes[direction.case_id]
    assert moved.failures == () and moved.metrics["pass_rate"] == 1.0
    assert moved.metrics["margin"] > 150, "the trigger moves logit(to) − logit(from) by 200"

    still = outcomes[unmoved.case_id]
    assert still.metrics["pass_rate"] == 0.0 and abs(still.metrics["margin"]) < 10
    assert still.details["smallest_failing"]["prompt"] == "Today it is Monday, next it is"
    assert "margin = logit(' Monday') − logit(' January') after − before = " in still.explanation
    assert [line for line in still.explanation.splitlines() if line.endswith("prompt:")] == [
        "Original prompt:",
        "Perturbed prompt:",
    ]


def test_a_bad_variant_errors_only_its_check(planted: LoadedModel) -> None:
    bad, good = parse(
        FAMILY.replace('answer: " January"', 'answer: " Jan uary"')
        + FAMILY.split("cases:\n", 1)[1].replace("id: tomorrow", "id: other")
    )
    outcomes = run_variant_checks(planted, MODEL, [bad, good])
    assert "answer ' Jan uary' is " in str(outcomes[bad.case_id].error)
    assert "case 'tomorrow', variant 'Today it is Monday, tomorrow it is'" in str(outcomes[bad.case_id].error)
    assert outcomes[good.case_id].metrics == {"pass_rate": 0.5}


# ---------------------------------------------------------------------------------------------
# Through pytest, on the tiny model as it is

PLUGIN_CASES = """
defaults:
  expect: {min_pass_rate: 0.9}
suites:
  robust:
    cases:
      - kind: family
        id: any-rank
        over: {day: days}
        prompt: "{opening} {day}, tomorrow it is"
        alternatives: {opening: ["Today it is", "Now it is"]}
        answer: " {day+1}"
        expect: {max_rank: 100000}
      - kind: family
        id: sure
        over: {day: days}
        prompt: "{opening} {day}, tomorrow it is"
        alternatives: {opening: ["Today it is", "Now it is"]}
        answer: " {day+1}"
        expect: {min_prob: 0.99}
      - kind: family
        id: sure-known
        over: {day: days}
        prompt: "Today it is {day}, tomorrow it is"
        answer: " {day+1}"
        expect: {min_prob: 0.99}
        known_failures: {MODEL: "a random model is never sure"}
      - kind: invariance
        id: same-text
        over: {day: days}
        prompt: "Today it is {day}, tomorrow it is"
        perturbed: "Today it is {day}, tomorrow it is"
      - kind: direction
        id: no-change
        over: {day: days}
        prompt: "Today it is {day}, tomorrow it is"
        perturbed: "Today it is {day}, tomorrow it is"
        from: " {day+1}"
        to: " {day-1}"
        expect: {min_margin: 1.0}
"""


def test_checks_are_pytest_items_with_readable_ids_and_failures(
    pytester: pytest.Pytester, tiny_llama_dir: Path
) -> None:
    pytester.makefile(".seqprobe.yaml", robust=PLUGIN_CASES.replace("MODEL", f'"{tiny_llama_dir}"'))
    collected = pytester.runpytest("--collect-only", "-q")
    collected.stdout.fnmatch_lines(
        ["robust.seqprobe.yaml::robust::any-rank", "robust.seqprobe.yaml::robust::no-change"]
    )

    result = pytester.runpytest("--model", str(tiny_llama_dir), "-p", "no:cacheprovider", "-rfxX", "--report", "r.md")
    result.assert_outcomes(passed=2, failed=2, xfailed=1)
    result.stdout.fnmatch_lines(
        [
            "case robust::sure (*robust.seqprobe.yaml:13) on *",
            "  failed: pass rate 0.000 (0 of 14 variants) < min_pass_rate 0.9 (short by 0.900)",
            "  failed: smallest failing variant 'Today it is Monday, tomorrow it is': p(' Tuesday') = * < min_prob 0.99 *",
            "Pass rate 0.000 over all 14 variants; min_pass_rate 0.9",
            "Falsifying example (hypothesis, seed 0; 0 alternatives away from the first; 0 more variants run to find and shrink it):",
            "  opening = 'Today it is' (alternative the first)",
            "  day = Monday",
            "Top 10:",
        ]
    )
    result.stdout.fnmatch_lines(["*FAILED*robust::no-change*", "*XFAIL*sure-known*a random model is never sure*"])
    report = (pytester.path / "r.md").read_text(encoding="utf-8")
    assert "### Phrasing families" in report and "### Invariances" in report and "### Directions" in report
    assert "| 14/14      |" in report
    cases = {c["case_id"].rsplit("::", 1)[1]: c for c in json.loads((pytester.path / "r.json").read_text())["cases"]}
    assert cases["any-rank"]["metrics"] == {"pass_rate": 1.0}
    assert cases["no-change"]["metrics"] == {"pass_rate": 0.0, "margin": 0.0}


def test_pass_rate_takes_part_in_baselines(pytester: pytest.Pytester, tiny_llama_dir: Path) -> None:
    pytester.makefile(".seqprobe.yaml", robust=PLUGIN_CASES.split("      - kind: family\n        id: sure\n")[0])
    baseline = pytester.path / "base.json"
    args = ("--model", str(tiny_llama_dir), "-p", "no:cacheprovider", "--baseline", str(baseline))
    pytester.runpytest(*args, "--update-baseline").assert_outcomes(passed=1)
    pytester.runpytest(*args).assert_outcomes(passed=1)

    # A baseline from a better run: the same family passed only a little more often, then much more.
    data = json.loads(baseline.read_text())
    data["cases"][0]["metrics"]["pass_rate"] = 1.05
    baseline.write_text(json.dumps(data))
    pytester.runpytest(*args).assert_outcomes(passed=1)
    data["cases"][0]["metrics"]["pass_rate"] = 1.5
    baseline.write_text(json.dumps(data))
    result = pytester.runpytest(*args)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["  failed: regressed: pass_rate 1.5 → 1 (tolerance 0.1)*"])


def test_a_bad_family_is_its_files_collection_error(pytester: pytest.Pytester) -> None:
    pytester.makefile(".seqprobe.yaml", bad=FAMILY.replace('sep: [",", ";", " and"]', 'sep: ",;"'))
    result = pytester.runpytest("--collect-only")
    result.stdout.fnmatch_lines(
        [
            "*CaseFileError: bad.seqprobe.yaml:12: alternatives for 'sep' must be a non-empty list of strings, found ',;'*"
        ]
    )


# ---------------------------------------------------------------------------------------------
# On the real model


@pytest.mark.real_model
def test_a_days_family_on_smollm2_is_one_forward_pass(real_model: LoadedModel) -> None:
    text = (Path(__file__).resolve().parents[2] / "cases" / "days-robustness.seqprobe.yaml").read_text(encoding="utf-8")
    cases = list(parse_case_file(text, path="days-robustness.seqprobe.yaml").cases())
    (family,) = [case for case in cases if case.name == "list-continuation"]
    counting = LoadedModel(bridge=Counting(real_model.bridge), info=real_model.info)  # type: ignore[arg-type]
    outcome = run_variant_checks(counting, "smollm2-135m", [family])[family.case_id]
    assert counting.bridge.forwards == 1, "63 variants fit one batch"
    assert outcome.details["variants_run"] == 63 and outcome.details["smallest_failing"]["extra_variants_run"] == 0
    assert outcome.details["smallest_failing"]["prompt"] == "Monday, Tuesday and"


class Counting:
    """A bridge that counts its forward passes."""

    def __init__(self, bridge: Any) -> None:
        self.bridge = bridge
        self.forwards = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.bridge, name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.forwards += 1
        return self.bridge(*args, **kwargs)
