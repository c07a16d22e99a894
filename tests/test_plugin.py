"""The pytest plugin, driven from outside with pytester on a tiny local Llama model."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.filterwarnings("ignore")

PROMPT = "Today it is Sunday, tomorrow it is"


@pytest.fixture(scope="module")
def ranked(tiny_llama_bridge) -> list[str]:
    """The tiny model's next-token predictions after PROMPT among day names, best first."""
    days = [" Monday", " Tuesday", " Wednesday", " Thursday", " Friday", " Saturday", " Sunday"]
    ids = [int(tiny_llama_bridge.to_tokens(day, prepend_bos=False)[0, 0]) for day in days]
    with torch.inference_mode():
        logits = tiny_llama_bridge(PROMPT)[0, -1]
    return [day for _, day in sorted(zip((-float(logits[i]) for i in ids), days, strict=True))]


def write_cases(pytester: pytest.Pytester, model: Path, ranked: list[str], name: str = "days.seqprobe.yaml") -> None:
    best, worst = ranked[0], ranked[-1]
    pytester.makefile(
        ".seqprobe.yaml" if name == "days.seqprobe.yaml" else "",
        **{
            name.removesuffix(".seqprobe.yaml"): textwrap.dedent(
                f"""
                defaults:
                  expect: {{max_rank: 100000}}
                suites:
                  tomorrow:
                    cases:
                      - id: passes
                        prompt: "{PROMPT}"
                        answer: "{best}"
                        distractors: ["{worst}"]
                      - id: fails
                        prompt: "{PROMPT}"
                        answer: "{worst}"
                        distractors: ["{best}"]
                        expect: {{min_logit_diff: 0.0}}
                      - id: known-failure
                        prompt: "{PROMPT}"
                        answer: "{worst}"
                        distractors: ["{best}"]
                        expect: {{min_logit_diff: 0.0}}
                        known_failures: {{"{model}": "the tiny model is random"}}
                      - id: gained
                        prompt: "{PROMPT}"
                        answer: "{best}"
                        distractors: ["{worst}"]
                        expect: {{min_logit_diff: 0.0}}
                        known_failures: {{"{model}": "expected to fail, but passes"}}
                """
            )
        },
    )


def test_outcomes_and_failure_text(pytester: pytest.Pytester, tiny_llama_dir: Path, ranked: list[str]) -> None:
    write_cases(pytester, tiny_llama_dir, ranked)
    result = pytester.runpytest("--model", str(tiny_llama_dir), "-rxX")
    result.assert_outcomes(passed=1, failed=1, xfailed=1, xpassed=1)
    best, worst = ranked[0], ranked[-1]
    assert (
        "Tokenized prompt: ['<|bos|>', 'T', 'o', 'd', 'a', 'y', ' it', ' is', ' Sunday', ',', ' tomorrow', ' it', ' is']"
        in result.stdout.lines
    )
    result.stdout.fnmatch_lines(
        [
            f"case tomorrow::fails (*days.seqprobe.yaml:10) on {tiny_llama_dir}",
            f"  failed: logit({worst!r}) − logit({best!r}) = -* < min_logit_diff 0 (short by *)",
            "Tokenized prompt: *",
            f"Answer {worst!r}: rank *, logit *, prob *%",
            "Top 10:",
            "*XFAIL*known-failure*known failure of*the tiny model is random*",
            "*XPASS*gained*",
        ]
    )


def test_a_copy_answers_to_its_originals_known_failures(
    pytester: pytest.Pytester, tiny_llama_dir: Path, ranked: list[str]
) -> None:
    """A folder holding a copy of "tiny-base" is held to tiny-base's records only when asked."""
    write_cases(pytester, Path("tiny-base"), ranked)
    as_copy = pytester.runpytest("--model", str(tiny_llama_dir), "--as-model", "tiny-base", "-rxX")
    as_copy.assert_outcomes(passed=1, failed=1, xfailed=1, xpassed=1)
    as_copy.stdout.fnmatch_lines(["*XFAIL*known-failure*known failure of tiny-base: the tiny model is random*"])
    as_itself = pytester.runpytest("--model", str(tiny_llama_dir))
    as_itself.assert_outcomes(passed=2, failed=2)


def test_collect_only_loads_no_model(pytester: pytest.Pytester, tiny_llama_dir: Path, ranked: list[str]) -> None:
    write_cases(pytester, tiny_llama_dir, ranked)
    result = pytester.runpytest("--collect-only", "-q", "--model", "no-such-model")
    result.stdout.fnmatch_lines(["days.seqprobe.yaml::tomorrow::passes", "*4 tests collected*"])
    assert result.ret == 0


def test_ids_select_cases_with_k(pytester: pytest.Pytester, tiny_llama_dir: Path, ranked: list[str]) -> None:
    write_cases(pytester, tiny_llama_dir, ranked)
    result = pytester.runpytest("--model", str(tiny_llama_dir), "-k", "passes")
    result.assert_outcomes(passed=1, deselected=3)


def test_other_yaml_is_not_collected(pytester: pytest.Pytester) -> None:
    pytester.makefile(".yaml", config="suites: [this is not a case file")
    pytester.makefile(".yml", **{"docker-compose": "services: {}"})
    result = pytester.runpytest("--collect-only")
    assert result.ret == pytest.ExitCode.NO_TESTS_COLLECTED


def test_bad_case_file_is_one_collection_error_with_its_line(
    pytester: pytest.Pytester, tiny_llama_dir: Path, ranked: list[str]
) -> None:
    write_cases(pytester, tiny_llama_dir, ranked)
    pytester.makefile(
        ".seqprobe.yaml",
        broken="suites:\n  s:\n    cases:\n      - id: a\n        prompt: x\n        answr: ' y'\n",
    )
    result = pytester.runpytest("--model", str(tiny_llama_dir), "--continue-on-collection-errors")
    result.assert_outcomes(passed=1, failed=1, xfailed=1, xpassed=1, errors=1)
    result.stdout.fnmatch_lines(
        ["*CaseFileError: *broken.seqprobe.yaml:6: unknown key 'answr' in a completion case (did you mean 'answer'?)*"]
    )
    assert "Traceback" not in result.stdout.str()


def test_multi_token_answer_errors_that_case_only(pytester: pytest.Pytester, tiny_llama_dir: Path) -> None:
    pytester.makefile(
        ".seqprobe.yaml",
        cases=textwrap.dedent(
            f"""
            suites:
              s:
                expect: {{max_rank: 1000}}
                cases:
                  - id: split
                    prompt: "{PROMPT}"
                    answer: " Mon day"
                  - id: whole
                    prompt: "{PROMPT}"
                    answer: " Monday"
            """
        ),
    )
    result = pytester.runpytest("--model", str(tiny_llama_dir))
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        ["*TokenizationError: *cases.seqprobe.yaml:5 case 'split': answer ' Mon day' is 2 tokens for*"]
    )
    assert "([' Mon', ' day']); answers must be one token" in result.stdout.str()


def test_unknown_model_is_one_line_listing_known_names(
    pytester: pytest.Pytester, tiny_llama_dir: Path, ranked: list[str]
) -> None:
    write_cases(pytester, tiny_llama_dir, ranked)
    result = pytester.runpytest("--model", "smollm3-135m")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*ModelLoadError*smollm3-135m*smollm2-135m*"])
    result.assert_outcomes(failed=1)
