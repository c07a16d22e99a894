"""Case files: the format's cascade and templates, and a clear error for every kind of mistake."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from seqprobe.casefiles.completion import CompletionCase
from seqprobe.casefiles.reader import is_case_file, load_case_file, parse_case_file
from seqprobe.errors import CaseFileError

REPO = Path(__file__).resolve().parents[2]


def parse(text: str):
    return parse_case_file(textwrap.dedent(text), path="cases/t.seqprobe.yaml")


def test_cascade_defaults_suite_case_and_model_overrides() -> None:
    case_file = parse(
        """
        defaults:
          expect: {max_rank: 1, min_prob: 0.2}
          model_expect: {small: {min_prob: 0.05}}
        suites:
          days:
            expect: {min_logit_diff: 1.0}
            known_failures:
              small: {reason: "skips a day", cases: [b]}
            cases:
              - id: a
                prompt: "Monday, Tuesday and"
                answer: " Wednesday"
                distractors: [" Tuesday"]
                expect: {min_prob: 0.3}
              - id: b
                prompt: "Tuesday, Wednesday and"
                answer: " Thursday"
                distractors: " Wednesday"
        """
    )
    a, b = case_file.cases()
    assert isinstance(a, CompletionCase)
    assert dict(a.expect) == {"max_rank": 1, "min_prob": 0.3, "min_logit_diff": 1.0}
    assert dict(a.expect_for("small")) == {"max_rank": 1, "min_prob": 0.05, "min_logit_diff": 1.0}
    assert a.known_failure_for("small") is None
    assert b.known_failure_for("small") == "skips a day"
    assert b.distractors == (" Wednesday",)
    assert a.case_id == "cases/t.seqprobe.yaml::days::a"
    assert a.location.line == 11


def test_template_expands_with_wrap_around_and_readable_ids() -> None:
    case_file = parse(
        """
        suites:
          tomorrow:
            cases:
              - for_each: {day: days}
                id: "{day|lower}"
                prompt: "Today it is {day}, tomorrow it is"
                answer: " {day+1}"
                distractors: [" {day}"]
                known_failures: {m: {reason: r, cases: [sunday]}}
        """
    )
    cases = list(case_file.cases())
    assert [c.name for c in cases] == ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
    sunday = cases[-1]
    assert (sunday.prompt, sunday.answer, sunday.distractors) == (
        "Today it is Sunday, tomorrow it is",
        " Monday",
        (" Sunday",),
    )
    assert [c.name for c in cases if c.known_failure_for("m")] == ["sunday"]


def test_custom_sequences_and_two_variables_make_a_product() -> None:
    case_file = parse(
        """
        sequences:
          seasons: [Spring, Summer, Autumn, Winter]
        suites:
          s:
            cases:
              - for_each: {season: seasons, day: days}
                prompt: "{season} {day}"
                answer: " {season+1}"
        """
    )
    cases = list(case_file.cases())
    assert len(cases) == 4 * 7
    assert cases[0].name == "spring-monday"


BAD_INPUTS = [
    pytest.param(
        """
        suites:
          s:
            cases:
              - id: a
                prompt: "x"
                answr: " y"
        """,
        "cases/t.seqprobe.yaml:7: unknown key 'answr' in a completion case (did you mean 'answer'?)",
        id="unknown-key",
    ),
    pytest.param(
        """
        suites:
          s:
            cases:
              - id: a
                prompt: "x"
        """,
        "cases/t.seqprobe.yaml:5: a completion case is missing required key 'answer'",
        id="missing-field",
    ),
    pytest.param(
        """
        suites:
          s:
            cases:
              - id: a
                prompt: "x"
                answer: " y"
                expect: {min_prob: high}
        """,
        "cases/t.seqprobe.yaml:8: min_prob in expect in case 'a' must be a number, found min_prob='high' (str)",
        id="wrong-type",
    ),
    pytest.param(
        """
        suites:
          s:
            cases:
              - id: a
                prompt: "x"
                answer: " y"
                expect: {max_rank: 0}
        """,
        "cases/t.seqprobe.yaml:8: max_rank in expect in case 'a' must be a whole number ≥ 1, found max_rank=0 (int)",
        id="rank-below-one",
    ),
    pytest.param(
        """
        suites:
          s:
            cases:
              - for_each: {day: weekdays}
                prompt: "{day}"
                answer: " {day+1}"
        """,
        "cases/t.seqprobe.yaml:5: for_each: day: unknown sequence 'weekdays' (did you mean 'days'?); known sequences: days, letters, months, number_words, ordinals (define more under the file's `sequences:` key)",
        id="undefined-sequence",
    ),
    pytest.param(
        """
        suites:
          s:
            cases:
              - for_each: {day: days}
                prompt: "{month}"
                answer: " {day+1}"
        """,
        "cases/t.seqprobe.yaml:6: placeholder {month} in prompt is not bound; for_each binds day",
        id="undefined-placeholder",
    ),
    pytest.param(
        """
        suites:
          s:
            cases:
              - id: a
                prompt: "   "
                answer: " y"
        """,
        "cases/t.seqprobe.yaml:6: prompt is empty; a case needs text for the model to continue",
        id="empty-prompt",
    ),
    pytest.param(
        """
        suites:
          s:
            cases:
              - id: a
                prompt: "x"
                answer: " y"
              - id: a
                prompt: "z"
                answer: " y"
        """,
        "cases/t.seqprobe.yaml:8: case id 'a' in suite 's' is already used at line 5; ids must be unique",
        id="duplicate-id",
    ),
    pytest.param(
        "suites: [oops\n",
        "cases/t.seqprobe.yaml:2: invalid YAML",
        id="bad-yaml",
    ),
    pytest.param(
        """
        suites:
          s:
            cases:
              - kind: patchin
                id: a
        """,
        "cases/t.seqprobe.yaml:5: unknown case kind 'patchin'",
        id="unknown-kind",
    ),
    pytest.param(
        """
        suites:
          s:
            cases:
              - id: a
                prompt: x
                answer: 5
        """,
        "cases/t.seqprobe.yaml:7: answer in a completion case must be a string, found 5 (int); quote it",
        id="answer-not-a-string",
    ),
]


@pytest.mark.parametrize(("text", "message"), BAD_INPUTS)
def test_bad_input_names_file_line_and_fix(text: str, message: str) -> None:
    with pytest.raises(CaseFileError) as excinfo:
        parse(text)
    assert str(excinfo.value).startswith(message)


def test_yaml_is_loaded_safely() -> None:
    with pytest.raises(CaseFileError, match="invalid YAML"):
        parse("suites: !!python/object/apply:os.system ['echo pwned']\n")


def test_only_seqprobe_yaml_files_are_case_files() -> None:
    assert is_case_file(Path("cases/days.seqprobe.yaml"))
    assert is_case_file(Path("x.seqprobe.yml"))
    assert not is_case_file(Path(".github/workflows/ci.yaml"))
    assert not is_case_file(Path("docker-compose.yml"))


def test_starter_library_parses_with_expected_sizes() -> None:
    sizes = {
        case_file.path: {suite.name: len(suite.cases) for suite in case_file.suites}
        for case_file in (
            load_case_file(p, display_path=p.name) for p in sorted((REPO / "cases").glob("*.seqprobe.yaml"))
        )
    }
    assert sizes == {
        "capitals.seqprobe.yaml": {"capital-of": 10, "capital-of-several-tokens": 6},
        "days-mechanism.seqprobe.yaml": {"tomorrow-mechanism": 5},
        "days-robustness.seqprobe.yaml": {"phrasings": 3, "invariances": 3, "directions": 2},
        "days.seqprobe.yaml": {"list-continuation": 7, "tomorrow": 7, "yesterday": 7},
        "ioi-circuit.seqprobe.yaml": {"ioi-circuit": 2},
        "months-mechanism.seqprobe.yaml": {"list-mechanism": 1},
        "months-robustness.seqprobe.yaml": {"phrasings": 3, "invariances": 3, "directions": 2},
        "months.seqprobe.yaml": {"list-continuation": 12, "next-month": 12},
        # Ordered sequences skip the bindings past their ends: years 1992..2009, words five..nineteen, E..Y.
        "numbers.seqprobe.yaml": {"year-after": 19, "counting": 16, "letters": 21},
    }
