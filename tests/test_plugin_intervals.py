"""`--interval-level` and the intervals a run writes: results file, report, baseline, `confidence`."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest

from seqprobe.records.intervals import wilson_interval

pytestmark = pytest.mark.filterwarnings("ignore")

# On the tiny random model every day is within rank 100000 (14 of 14 pass) and none is sure (0 of 14).
CASES = textwrap.dedent(
    """
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
            id: sure-of-it
            over: {day: days}
            prompt: "{opening} {day}, tomorrow it is"
            alternatives: {opening: ["Today it is", "Now it is"]}
            answer: " {day+1}"
            expect: {max_rank: 100000, confidence: 0.95}
    """
)


def run(pytester: pytest.Pytester, model: Path, *args: str) -> pytest.RunResult:
    return pytester.runpytest("--model", str(model), "--rootdir", str(pytester.path), "-p", "no:cacheprovider", *args)


def cases_of(path: Path) -> dict[str, dict[str, Any]]:
    data = json.loads(path.read_text(encoding="utf-8"))
    return {case["case_id"].rsplit("::", 1)[1]: case for case in data["cases"]}


@pytest.mark.parametrize("level", ["1.5", "0", "95", "high"])
def test_a_level_outside_0_and_1_is_a_usage_error(pytester: pytest.Pytester, level: str) -> None:
    pytester.makefile(".seqprobe.yaml", robust=CASES)
    result = pytester.runpytest("--interval-level", level, "--collect-only")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert (
        f"error: argument --interval-level: interval level {level!r}: expected a probability strictly between "
        "0 and 1, e.g. 0.95 or 0.9"
    ) in result.stderr.str()


def test_the_option_is_in_seqprobes_group(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--help")
    result.stdout.fnmatch_lines(["seqprobe: *", "*--interval-level=LEVEL*"])


def test_intervals_reach_the_results_file_and_the_report_at_the_runs_level(
    pytester: pytest.Pytester, tiny_llama_dir: Path
) -> None:
    pytester.makefile(".seqprobe.yaml", robust=CASES)
    run(pytester, tiny_llama_dir, "--report", "r.md").assert_outcomes(passed=1, failed=1)
    assert json.loads((pytester.path / "r.json").read_text(encoding="utf-8"))["interval_level"] == 0.95
    case = cases_of(pytester.path / "r.json")["any-rank"]
    expected = wilson_interval(14, 14)
    assert case["metrics"] == {"pass_rate": 1.0}
    assert case["intervals"] == {"pass_rate": [pytest.approx(expected.low), 1.0]}
    assert case["details"]["intervals"] == {"pass_rate": {"level": 0.95, "method": "wilson", "n": 14}}
    report = (pytester.path / "r.md").read_text(encoding="utf-8")
    assert "- **Intervals:** 95%; pass_rate: Wilson score interval over variants." in report
    assert "1 [0.785, 1]" in report

    run(pytester, tiny_llama_dir, "--report", "r.md", "--interval-level", "0.8").assert_outcomes(passed=1, failed=1)
    assert json.loads((pytester.path / "r.json").read_text(encoding="utf-8"))["interval_level"] == 0.8
    narrow = cases_of(pytester.path / "r.json")["any-rank"]
    assert narrow["intervals"]["pass_rate"][0] == pytest.approx(wilson_interval(14, 14, level=0.8).low)
    assert narrow["intervals"]["pass_rate"][0] > expected.low


def test_confidence_fails_a_check_whose_lower_bound_misses_the_bar(
    pytester: pytest.Pytester, tiny_llama_dir: Path
) -> None:
    pytester.makefile(".seqprobe.yaml", robust=CASES)
    result = run(pytester, tiny_llama_dir, "-k", "sure-of-it", "--interval-level", "0.8")
    result.assert_outcomes(failed=1, deselected=1)
    assert (
        "  failed: pass rate 1.000 (14 of 14 variants), 95% interval [0.785, 1.000]: lower bound 0.785 "
        "< min_pass_rate 0.9" in result.stdout.lines
    ), "the case's confidence judges it, whatever the run's level"
    result.stdout.fnmatch_lines(["All 14 variants passed, but 14 are too few to show a pass rate of 0.9:"])


def test_an_updated_baseline_keeps_the_intervals_and_compares_by_them(
    pytester: pytest.Pytester, tiny_llama_dir: Path
) -> None:
    pytester.makefile(".seqprobe.yaml", robust=CASES)
    baseline = pytester.path / "base.json"
    args = ("-k", "any-rank", "--baseline", str(baseline))
    run(pytester, tiny_llama_dir, *args, "--update-baseline").assert_outcomes(passed=1, deselected=1)
    stored = json.loads(baseline.read_text(encoding="utf-8"))
    assert stored["interval_level"] == 0.95
    assert stored["cases"][0]["intervals"]["pass_rate"] == [pytest.approx(wilson_interval(14, 14).low), 1.0]

    # A baseline that passed less often, beyond tolerance: within the intervals it is noise, outside them a gain.
    stored["cases"][0]["metrics"]["pass_rate"] = 0.8
    stored["cases"][0]["intervals"]["pass_rate"] = [0.55, 0.93]
    baseline.write_text(json.dumps(stored), encoding="utf-8")
    run(pytester, tiny_llama_dir, *args).stdout.fnmatch_lines(["1 within noise (1 case)"])
    stored["cases"][0]["intervals"]["pass_rate"] = [0.7, 0.78]
    baseline.write_text(json.dumps(stored), encoding="utf-8")
    run(pytester, tiny_llama_dir, *args).stdout.fnmatch_lines(["1 improved (1 case)"])


PYTHON_TEST = textwrap.dedent(
    """
    import seqprobe


    def test_family(seqprobe_model):
        outcome = seqprobe.expect_family(
            seqprobe_model,
            prompt="Today it is {day}, tomorrow it is",
            over={"day": "days"},
            answer=" {day+1}",
            expect={"max_rank": 100000},
            min_pass_rate=0.5,
        )
        assert outcome.intervals["pass_rate"].level == 0.8


    def test_family_with_confidence(seqprobe_model):
        seqprobe.expect_family(
            seqprobe_model,
            prompt="Today it is {day}, tomorrow it is",
            over={"day": "days"},
            answer=" {day+1}",
            expect={"max_rank": 100000},
            min_pass_rate=0.9,
            confidence=0.95,
        )
    """
)


def test_python_tests_take_the_runs_level_and_confidence(pytester: pytest.Pytester, tiny_llama_dir: Path) -> None:
    pytester.makepyfile(test_families=PYTHON_TEST)
    result = run(pytester, tiny_llama_dir, "--interval-level", "0.8", "--report", "r.md")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "E  *failed: pass rate 1.000 (7 of 7 variants), 95% interval ?0.646, 1.000?: lower bound 0.646 < min_pass_rate 0.9"
        ]
    )
    cases = json.loads((pytester.path / "r.json").read_text(encoding="utf-8"))["cases"]
    assert [case["case_id"] for case in cases] == [
        "test_families.py::test_family::family",
        "test_families.py::test_family_with_confidence::family",
    ]
    for case in cases:
        assert case["intervals"]["pass_rate"][0] == pytest.approx(wilson_interval(7, 7, level=0.8).low)
