"""Phrasing families, invariance and direction checks run: pass rates, falsifying examples, through pytest.

Most tests run on the tiny Llama with a planted defect (`Planted`): any prompt holding the
trigger token " then" pushes " January" from the top of the distribution to the bottom, and every
other prompt puts it on top. Which variants fail is then known exactly, so the pass rate and the
smallest failing variant hypothesis must find are too.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
import torch

from seqprobe.casefiles.reader import parse_case_file
from seqprobe.checks.families import measure_variants, run_variant_checks
from seqprobe.errors import CaseFileError
from seqprobe.loading.models import LoadedModel, ModelInfo
from seqprobe.records.intervals import bootstrap_interval, wilson_interval
from tests.casefiles._families import FAMILY, parse

pytestmark = pytest.mark.filterwarnings("ignore")

MODEL = "tiny"
TRIGGER, FAVOURITE = " then", " January"

# Of the 3 × 3 × 4 × 7 = 252 variants, the half whose `ask` holds " then" fail. The smallest:
# every slot at its first alternative but `ask`, there the shorter of the two with " then".
SMALLEST = "Today it is Monday, then it is"


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


def run_one(model: LoadedModel, case: Any) -> Any:
    return run_variant_checks(model, MODEL, [case])[case.case_id]


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


def test_every_kind_reads_its_prompts_in_one_tree_and_scores_as_alone(
    tiny_llama_bridge: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from seqprobe.engine import prompt_tree

    invariance, direction, _ = parse(INVARIANCE_AND_DIRECTION)
    (family,) = parse(FAMILY)
    runs = [(case, list(case.space)[::5]) for case in (family, invariance, direction)]
    trees: list[int] = []
    run_tree = prompt_tree.run_tree
    monkeypatch.setattr(
        prompt_tree, "run_tree", lambda forward, tree: trees.append(tree.n_nodes) or run_tree(forward, tree)
    )

    together = measure_variants(tiny_llama_bridge, MODEL, runs)

    rows = {
        tuple(tiny_llama_bridge.to_tokens(text)[0].tolist())
        for case, variants in runs
        for variant in variants
        for text in _prompts_of(case, variant)
    }
    assert trees == [len({row[:n] for row in rows for n in range(1, len(row) + 1)})], (
        "one tree for the three kinds, one node per distinct prefix of all their prompts"
    )
    for (case, variants), results in zip(runs, together, strict=True):
        alone = measure_variants(tiny_llama_bridge, MODEL, [(case, variants)])[0]
        assert [(r.variant, r.passed) for r in results] == [(r.variant, r.passed) for r in alone]
        assert [r.value for r in results] == pytest.approx([r.value for r in alone], abs=1e-4)


def _prompts_of(case: Any, variant: Any) -> list[str]:
    """The prompts a check reads for one variant: its prompt, and a pair's perturbed prompt."""
    templates = [case.prompt, *([case.perturbed] if hasattr(case, "perturbed") else [])]
    return [case.space.render(template, variant) for template in templates]


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
# Intervals, and `confidence`: judging a pass rate by its interval's lower bound


def test_the_pass_rate_carries_its_wilson_interval_at_the_runs_level(planted: LoadedModel) -> None:
    (case,) = parse(FAMILY)
    outcome = run_one(planted, case)
    assert outcome.intervals == {"pass_rate": wilson_interval(126, 252)}
    at_80 = run_variant_checks(planted, MODEL, [case], interval_level=0.8)[case.case_id]
    assert at_80.intervals["pass_rate"] == wilson_interval(126, 252, level=0.8)
    assert at_80.failures == outcome.failures, "without confidence, the level changes no verdict"


def test_a_directions_mean_margin_carries_its_bootstrap_interval_over_variants(planted: LoadedModel) -> None:
    _, direction, _ = parse(INVARIANCE_AND_DIRECTION)
    outcome = run_one(planted, direction)
    margin = outcome.intervals["margin"]
    assert (margin.method, margin.n, margin.level, margin.resamples, margin.seed) == ("bootstrap", 14, 0.95, 2000, 0)
    assert outcome.metrics["margin"] in margin
    assert outcome.intervals["pass_rate"] == wilson_interval(14, 14)
    again = run_one(planted, direction).intervals["margin"]
    assert again == margin == bootstrap_interval(margin_values(planted, direction)), "seeded: the same every run"


def margin_values(model: LoadedModel, case: Any) -> list[float]:
    return [result.value for result in measure_variants(model.bridge, MODEL, [(case, case.variants_to_run())])[0]]


def test_with_confidence_a_pass_rate_above_the_bar_fails_on_its_lower_bound(planted: LoadedModel) -> None:
    # 126 of 252 is 0.5 ≥ 0.45, but the 95% Wilson interval's lower bound is 0.439.
    (lenient,) = parse(FAMILY.replace("min_pass_rate: 0.9", "min_pass_rate: 0.45"))
    assert run_one(planted, lenient).failures == ()
    (sure,) = parse(FAMILY.replace("min_pass_rate: 0.9", "min_pass_rate: 0.45, confidence: 0.95"))
    outcome = run_one(planted, sure)
    assert outcome.failures[0] == (
        "pass rate 0.500 (126 of 252 variants), 95% interval [0.439, 0.561]: lower bound 0.439 < min_pass_rate 0.45"
    )
    assert outcome.failures[1].startswith(f"smallest failing variant {SMALLEST!r}: ")
    assert outcome.explanation.splitlines()[:2] == [
        "Pass rate 0.500 over all 252 variants; min_pass_rate 0.45",
        "Judged by the lower bound of the pass rate's 95% Wilson interval [0.439, 0.561] over 252 variants: "
        "0.439 < min_pass_rate 0.45",
    ]
    assert outcome.intervals["pass_rate"] == wilson_interval(126, 252), "recorded at the run's level"
    (loose,) = parse(FAMILY.replace("min_pass_rate: 0.9", "min_pass_rate: 0.45, confidence: 0.5"))
    assert run_one(planted, loose).failures == (), "at 50% confidence the lower bound is 0.479"


ALL_PASS = FAMILY.replace("min_pass_rate: 0.9", "min_pass_rate: 0.8, confidence: 0.95").replace(
    'prompt: "{opening} {day}{sep}{ask}"', 'prompt: "Today it is {day}, tomorrow it is"'
)
ALL_PASS = ALL_PASS.split("        alternatives:")[0] + '        answer: " January"\n'


def test_with_confidence_too_few_variants_fail_even_when_all_pass(planted: LoadedModel) -> None:
    (case,) = parse(ALL_PASS)
    outcome = run_one(planted, case)
    assert outcome.metrics == {"pass_rate": 1.0}
    assert outcome.failures == (
        "pass rate 1.000 (7 of 7 variants), 95% interval [0.646, 1.000]: lower bound 0.646 < min_pass_rate 0.8",
    )
    assert "smallest_failing" not in outcome.details
    assert outcome.explanation.splitlines() == [
        "All 7 variants passed, but 7 are too few to show a pass rate of 0.8:",
        "Judged by the lower bound of the pass rate's 95% Wilson interval [0.646, 1.000] over 7 variants: "
        "0.646 < min_pass_rate 0.8",
        "Run more variants (more alternatives, a larger sample.size) or ask for less confidence.",
    ]


def test_a_confidence_outside_0_and_1_errors_its_case(planted: LoadedModel) -> None:
    (case,) = parse(FAMILY)
    bad = replace(case, expect=MappingProxyType({**case.expect, "confidence": 95.0}))
    outcome = run_one(planted, bad)
    assert isinstance(outcome.error, CaseFileError)
    assert str(outcome.error) == (
        "cases/r.seqprobe.yaml:7: case 'tomorrow': confidence=95.0; give a probability between 0 and 1, "
        "e.g. confidence: 0.95"
    )


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

    result = pytester.runpytest(
        "--model", str(tiny_llama_dir), "-p", "no:cacheprovider", "-rfxX", "--report", "r.md", "-s"
    )
    result.assert_outcomes(passed=2, failed=2, xfailed=1)
    # The three kinds share one runner call, so their prompts share one prefix tree.
    result.stderr.fnmatch_lines([f"seqprobe: running 5 family, invariance and direction case(s) on {tiny_llama_dir}"])
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
    # Far beyond tolerance, but the stored 95% interval of 14 of 14 variants still overlaps this run's: noise.
    data["cases"][0]["metrics"]["pass_rate"] = 1.5
    assert data["cases"][0]["intervals"]["pass_rate"] == [pytest.approx(0.785, abs=1e-3), 1.0]
    baseline.write_text(json.dumps(data))
    pytester.runpytest(*args).assert_outcomes(passed=1)
    data["cases"][0]["intervals"]["pass_rate"] = [1.4, 1.6]
    baseline.write_text(json.dumps(data))
    result = pytester.runpytest(*args)
    result.assert_outcomes(failed=1)
    assert (
        "  failed: regressed: pass_rate 1.5 [1.4, 1.6] → 1 [0.785, 1] (tolerance 0.1; the intervals do not overlap); "
        "to accept, rerun with --update-baseline" in result.stdout.lines
    )


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
