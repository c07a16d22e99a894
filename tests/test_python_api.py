"""seqprobe from Python tests: the `seqprobe_model` fixture, the expect_* helpers and `seqprobe.casefiles`,
driven with pytester on the tiny Llama, as a user's test module would use them (the README's example)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.filterwarnings("ignore")

PROMPT = "Today it is Sunday, tomorrow it is"

CASES = textwrap.dedent(
    """
    suites:
      tomorrow:
        expect: {max_rank: 100000}
        cases:
          - id: sunday
            prompt: "Today it is Sunday, tomorrow it is"
            answer: " Monday"
            distractors: [" Sunday"]
          - id: monday
            prompt: "Today it is Monday, tomorrow it is"
            answer: " Tuesday"
    """
)

# Counts the model loads of the run, as the session's lazy model loads it.
COUNTING_CONFTEST = textwrap.dedent(
    """
    import seqprobe.loading.models as models

    LOADS = []
    _load = models.load_model


    def _counting(*args, **kwargs):
        LOADS.append(args)
        return _load(*args, **kwargs)


    models.load_model = _counting


    def pytest_terminal_summary(terminalreporter):
        terminalreporter.write_line(f"model loads: {len(LOADS)}")
    """
)

TEST_MODULE = textwrap.dedent(
    f"""
    import pytest

    import seqprobe


    def test_monday_is_somewhere_in_the_vocabulary(seqprobe_model):
        outcome = seqprobe.expect_completion(seqprobe_model, "{PROMPT}", " Monday", max_rank=100000)
        assert outcome.metrics["rank"] >= 1


    def test_an_impossible_bar_fails_with_the_case_file_text(seqprobe_model):
        seqprobe.expect_completion(seqprobe_model, "{PROMPT}", " Monday", distractors=[" Sunday"], min_logit_diff=100)


    @pytest.mark.parametrize("case", seqprobe.cases("days.seqprobe.yaml"))
    def test_days(seqprobe_model, case):
        seqprobe.expect_case(seqprobe_model, case)
    """
)


def write_project(pytester: pytest.Pytester) -> None:
    pytester.makefile(".seqprobe.yaml", days=CASES)
    pytester.makeconftest(COUNTING_CONFTEST)
    pytester.makepyfile(test_python=TEST_MODULE)


def run(pytester: pytest.Pytester, model: Path, *args: str) -> pytest.RunResult:
    return pytester.runpytest(f"--model={model}", "--rootdir", str(pytester.path), "-p", "no:cacheprovider", *args)


def test_the_fixture_loads_the_model_once_for_python_tests_and_case_files(
    pytester: pytest.Pytester, tiny_llama_dir: Path
) -> None:
    write_project(pytester)
    result = run(pytester, tiny_llama_dir)
    # The case file's two cases, the two parametrized from it, and two written in Python.
    result.assert_outcomes(passed=5, failed=1)
    result.stdout.fnmatch_lines(["model loads: 1"])


def test_a_failing_helper_shows_the_case_file_failure_text(pytester: pytest.Pytester, tiny_llama_dir: Path) -> None:
    write_project(pytester)
    result = run(pytester, tiny_llama_dir, "-k", "impossible")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "E   *ExpectationFailed:   failed: logit(' Monday') − logit(' Sunday') = * < min_logit_diff 100 (short by *)",
            "E   *Tokenized prompt: ['<|bos|>', 'T', 'o', 'd', 'a', 'y', *",
            "E   *Answer ' Monday': rank *, logit *, prob *%",
        ]
    )
    assert "test_python.py:12: " in result.stdout.str(), "the failure points at the calling line"


def test_python_cases_join_the_report_and_the_baseline(pytester: pytest.Pytester, tiny_llama_dir: Path) -> None:
    write_project(pytester)
    run(pytester, tiny_llama_dir, "--report", "reports/r.md", "--baseline", "b.json", "--update-baseline")
    ids = [case["case_id"] for case in json.loads((pytester.path / "reports/r.json").read_text())["cases"]]
    assert ids == [
        "days.seqprobe.yaml::tomorrow::sunday",
        "days.seqprobe.yaml::tomorrow::monday",
        "test_python.py::test_monday_is_somewhere_in_the_vocabulary::completion",
        "test_python.py::test_an_impossible_bar_fails_with_the_case_file_text::completion",
        "test_python.py::test_days[tomorrow::sunday]::sunday",
        "test_python.py::test_days[tomorrow::monday]::monday",
    ]
    baseline = json.loads((pytester.path / "b.json").read_text())
    outcomes = {case["case_id"].split("::", 2)[1]: case["outcome"] for case in baseline["cases"]}
    assert outcomes["test_an_impossible_bar_fails_with_the_case_file_text"] == "failed"
    again = run(pytester, tiny_llama_dir, "--baseline", "b.json")
    again.stdout.fnmatch_lines(["6 unchanged (6 cases)"])


def test_a_misspelt_key_is_an_error_at_the_calling_line(pytester: pytest.Pytester, tiny_llama_dir: Path) -> None:
    pytester.makepyfile(
        test_typo=textwrap.dedent(
            f"""
            import seqprobe


            def test_typo(seqprobe_model):
                seqprobe.expect_family(seqprobe_model, prompt="{PROMPT}", answer=" Monday", alternativs={{}})
            """
        )
    )
    result = run(pytester, tiny_llama_dir)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "E   *CaseFileError: test_typo.py:5: unknown key 'alternativs' in a family case (did you mean 'alternatives'?)*"
        ]
    )


def test_known_failures_of_the_model_are_xfail_in_parametrized_cases(
    pytester: pytest.Pytester, tiny_llama_dir: Path
) -> None:
    pytester.makefile(
        ".seqprobe.yaml",
        days=CASES.replace(
            "    cases:\n      - id: sunday",
            '    known_failures: {tiny: {reason: "random weights", cases: [sunday]}}\n    cases:\n      - id: sunday',
        ).replace("expect: {max_rank: 100000}", "expect: {max_rank: 1}"),
    )
    pytester.makepyfile(
        test_known=textwrap.dedent(
            """
            import pytest

            import seqprobe


            @pytest.mark.parametrize("case", seqprobe.cases("days.seqprobe.yaml", model="tiny"))
            def test_days(seqprobe_model, case):
                seqprobe.expect_case(seqprobe_model, case)
            """
        )
    )
    result = run(pytester, tiny_llama_dir, "test_known.py", "-rx")
    result.stdout.fnmatch_lines(["*XFAIL*test_days*known failure of tiny: random weights*"])


REPO = Path(__file__).resolve().parents[1]


@pytest.mark.real_model
def test_the_readme_example_runs_on_the_real_model(pytester: pytest.Pytester, real_model: object) -> None:
    """The "From Python" example, as printed, with the case file it names: one model load for both."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    example = readme.split("## From Python", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    (pytester.path / "cases").mkdir()
    (pytester.path / "cases" / "days.seqprobe.yaml").write_bytes((REPO / "cases" / "days.seqprobe.yaml").read_bytes())
    pytester.makepyfile(test_days=example)
    pytester.makeconftest(COUNTING_CONFTEST)
    result = pytester.runpytest(
        "--model", "smollm2-135m", "--rootdir", str(pytester.path), "-p", "no:cacheprovider", "--report", "r.md"
    )
    # The file's 21 cases as YAML items, again as 21 parametrized tests, and 2 Python tests; 14 of
    # the file's cases are known failures of smollm2-135m (xfail both ways).
    result.assert_outcomes(passed=16, xfailed=28)
    result.stdout.fnmatch_lines(["model loads: 1"])
    ids = [case["case_id"] for case in json.loads((pytester.path / "r.json").read_text())["cases"]]
    assert len(ids) == 44
    assert "test_days.py::test_days[tomorrow::sunday]::sunday" in ids


def test_a_longer_answer_takes_the_continuation_bars(pytester: pytest.Pytester, tiny_llama_dir: Path) -> None:
    pytester.makeconftest(COUNTING_CONFTEST)
    pytester.makepyfile(
        test_longer=f"""
        import seqprobe


        def test_scored_as_a_continuation(seqprobe_model):
            outcome = seqprobe.expect_completion(
                seqprobe_model, "{PROMPT}", " Monday Tuesday", distractors=[" Sunday"], min_logprob=-1000,
                min_logprob_diff=-1000,
            )
            assert set(outcome.metrics) == {{"p_answer", "logprob", "logprob_diff"}}


        def test_greedy_must_write_the_whole_answer(seqprobe_model):
            seqprobe.expect_completion(seqprobe_model, "{PROMPT}", " Monday Tuesday", greedy=True)
        """
    )
    result = run(pytester, tiny_llama_dir)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["E   *ExpectationFailed:   failed: greedy decoding gives *, not ' Monday Tuesday': *"])
