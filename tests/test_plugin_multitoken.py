"""Answers of several tokens, from outside: a case file run by pytest, its report, and `seqprobe prompt`.

On the tiny Llama, whose tokenizer spells " Buenos Aires" in 12 pieces and " Paris" in 6.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from seqprobe.cli import main

pytestmark = pytest.mark.filterwarnings("ignore")

CAPITAL = "The capital of Argentina is"
TOMORROW = "Today it is Sunday, tomorrow it is"


def write(pytester: pytest.Pytester, text: str) -> None:
    pytester.makefile(".seqprobe.yaml", capitals=textwrap.dedent(text))


def test_a_multi_token_answer_runs_and_reports_its_logprob(pytester: pytest.Pytester, tiny_llama_dir: Path) -> None:
    write(
        pytester,
        f"""
        suites:
          capitals:
            cases:
              - id: argentina
                prompt: "{CAPITAL}"
                answer: " Buenos Aires"
                distractors: [" Paris"]
              - id: argentina-bar
                prompt: "{CAPITAL}"
                answer: " Buenos Aires"
                distractors: [" Paris"]
                expect: {{min_logprob_diff: 0}}
        """,
    )
    result = pytester.runpytest("--model", str(tiny_llama_dir), "--report", "reports/tiny.md")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            f"case capitals::argentina-bar (*capitals.seqprobe.yaml:8) on {tiny_llama_dir}",
            "  failed: logprob(' Buenos Aires') − logprob(' Paris') = -* < min_logprob_diff 0 (short by *)",
            "Answer ' Buenos Aires': 12 tokens *, logprob -* (mean -*), prob *%",
            "*#*token*id*logprob*rank",
            "Greedy decoding gives * instead (*): token 1 ' ' is rank *",
            "Distractor ' Paris': 6 tokens *, logprob *, answer − distractor = -*",
            "Top 10 after the prompt:",
        ]
    )
    # fnmatch reads [...] as a character class, so the token lists are matched here.
    assert "12 tokens [' ', 'B', 'u', 'e', 'n', 'o', 's', ' A', 'i', 'r', 'e', 's'], " in result.stdout.str()
    assert "6 tokens [' ', 'P', 'a', 'r', 'i', 's'], " in result.stdout.str()
    results = json.loads((pytester.path / "reports" / "tiny.json").read_text(encoding="utf-8"))
    by_id = {case["case_id"].rsplit("::", 1)[-1]: case for case in results["cases"]}
    metrics = by_id["argentina"]["metrics"]
    assert set(metrics) == {"p_answer", "logprob", "logprob_diff"}
    assert metrics["logprob"] < metrics["logprob_diff"] < 0
    details = by_id["argentina"]["details"]
    assert [token["token"] for token in details["answer"]["tokens"]][:3] == [" ", "B", "u"]
    assert details["greedy"]["reproduces_answer"] is False


def test_next_token_bars_on_a_multi_token_answer_are_that_cases_error(
    pytester: pytest.Pytester, tiny_llama_dir: Path
) -> None:
    write(
        pytester,
        f"""
        defaults:
          expect: {{max_rank: 100000}}
        suites:
          capitals:
            cases:
              - id: inherited
                prompt: "{CAPITAL}"
                answer: " Buenos Aires"
              - id: own
                prompt: "{CAPITAL}"
                answer: " Buenos Aires"
                distractors: [" Paris"]
                expect: {{min_logit_diff: 0}}
              - id: whole
                prompt: "{TOMORROW}"
                answer: " Monday"
        """,
    )
    result = pytester.runpytest("--model", str(tiny_llama_dir))
    result.assert_outcomes(passed=1, failed=2)
    out = result.stdout.str()
    result.stdout.fnmatch_lines(
        [
            "*TokenizationError: *capitals.seqprobe.yaml:6 case 'inherited': answer ' Buenos Aires' is 12 tokens for*",
            "*TokenizationError: *capitals.seqprobe.yaml:9 case 'own': answer ' Buenos Aires' is 12 tokens for*",
        ]
    )
    assert (
        "answers must be one token for max_rank=100000, which reads the next token only — for a longer answer use "
        "`greedy: true` instead of max_rank (greedy decoding gives exactly the answer); max_rank reaches this case "
        "from its suite or the file's defaults, which a case cannot unset: set it in the expect of the suites or "
        "cases whose answers are one token instead"
    ) in out
    assert (
        "answers must be one token for max_rank=100000 and min_logit_diff=0, which read the next token only — for a "
        "longer answer use `greedy: true` instead of max_rank (greedy decoding gives exactly the answer) and "
        "`min_logprob_diff` instead of min_logit_diff (log-probs of whole continuations); max_rank reaches this case "
        "from its suite or the file's defaults"
    ) in out


def test_greedy_true_in_a_case_file(pytester: pytest.Pytester, tiny_llama_dir: Path) -> None:
    write(
        pytester,
        f"""
        suites:
          s:
            expect: {{greedy: true}}
            cases:
              - {{id: own, prompt: "{TOMORROW}", answer: " is is is"}}
              - {{id: capital, prompt: "{CAPITAL}", answer: " Buenos Aires"}}
        """,
    )
    result = pytester.runpytest("--model", str(tiny_llama_dir))
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["  failed: greedy decoding gives '* is', not ' Buenos Aires': token 1 ' ' is rank *"])


def test_the_prompt_command_shows_the_continuation_table(
    tiny_llama_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["prompt", CAPITAL, " Buenos Aires", "--distractor", " Paris", "--model", str(tiny_llama_dir)])
    out = capsys.readouterr().out
    # Greedy decoding does not give the answer: exit 1, as a one-token answer not ranked first does.
    assert code == 1
    assert "Answer ' Buenos Aires': 12 tokens [' ', 'B', " in out
    assert "Greedy decoding gives ' is is is is is is is is is is is is' instead" in out
    assert "Top 10 after the prompt:" in out
    assert "    # measured on this model: logprob -" in out
    assert out.rstrip().endswith("; greedy decoding misses the answer")
    assert main(["prompt", TOMORROW, " is is", "--model", str(tiny_llama_dir)]) == 0
    assert "Greedy decoding reproduces the answer" in capsys.readouterr().out
