"""Completion cases run: continuations of any length, their metrics, failure text and refused bars.

On the tiny Llama, whose tokenizer keeps " Monday" whole and spells " Buenos Aires" in 12 pieces;
its greedy continuation of the prompts here is " is", over and over.
"""

from __future__ import annotations

import textwrap
from dataclasses import replace
from typing import Any

import pytest

from seqprobe.casefiles.reader import parse_case_file
from seqprobe.checks.completion import check_completion, format_scored, run_completion_checks
from seqprobe.engine.continuations import ContinuationScore, ScoredCompletion, TokenStep
from seqprobe.engine.scoring import Completion, TokenScore, format_completion, prepare_prompt, score_completions
from seqprobe.errors import CaseFileError, TokenizationError
from seqprobe.loading.models import LoadedModel, ModelInfo

pytestmark = pytest.mark.filterwarnings("ignore")

MODEL = "tiny"
TOMORROW = "Today it is Sunday, tomorrow it is"
CAPITAL = "The capital of Argentina is"
BUENOS_AIRES_PIECES = "[' ', 'B', 'u', 'e', 'n', 'o', 's', ' A', 'i', 'r', 'e', 's']"


@pytest.fixture
def model(tiny_llama_bridge: Any) -> LoadedModel:
    info = ModelInfo(name=MODEL, source="test", sha256="", dtype="float32", device="cpu")
    return LoadedModel(bridge=tiny_llama_bridge, info=info)


def parse(text: str) -> list[Any]:
    return list(parse_case_file(textwrap.dedent(text), path="cases/c.seqprobe.yaml").cases())


def run(model: LoadedModel, text: str) -> dict[str, Any]:
    cases = parse(text)
    outcomes = run_completion_checks(model, MODEL, cases)
    return {case.name: outcomes[case.case_id] for case in cases}


def case_file(*entries: str, defaults: str = "") -> str:
    body = "".join(textwrap.indent(textwrap.dedent(entry), " " * 6) for entry in entries)
    return f"{defaults}suites:\n  s:\n    cases:\n{body}"


# ---------------------------------------------------------------------------------------------
# Metrics and failure text


def test_a_one_token_case_reads_as_before(model: LoadedModel) -> None:
    outcomes = run(
        model,
        case_file(
            f"""
            - id: monday
              prompt: "{TOMORROW}"
              answer: " Monday"
              distractors: [" Sunday"]
              expect: {{min_logit_diff: 100}}
            """
        ),
    )
    outcome = outcomes["monday"]
    (before,) = score_completions(
        model.bridge, [prepare_prompt(model.bridge, TOMORROW, " Monday", [" Sunday"], where="x")]
    )
    # A one-token logprob_diff is the logit_diff: recorded once, under the old name.
    assert list(outcome.metrics) == ["p_answer", "rank", "logit_diff", "logprob"]
    assert outcome.metrics["logit_diff"] == before.min_logit_diff
    assert outcome.metrics["rank"] == before.rank
    assert outcome.failures == (
        f"logit(' Monday') − logit(' Sunday') = {before.min_logit_diff:.2f} < min_logit_diff 100 "
        f"(short by {100 - before.min_logit_diff:.2f})",
    )
    assert outcome.explanation == format_completion(before)
    assert outcome.details["answer"]["tokens"] == [
        {
            "token": " Monday",
            "token_id": before.answer.token_id,
            "logprob": outcome.metrics["logprob"],
            "rank": before.rank,
        }
    ]


def test_a_multi_token_case_is_scored_token_by_token(model: LoadedModel) -> None:
    outcomes = run(
        model,
        case_file(
            f"""
            - id: capital
              prompt: "{CAPITAL}"
              answer: " Buenos Aires"
              distractors: [" Paris"]
              expect: {{min_prob: 0.5, min_logprob: -1, min_logprob_diff: 0}}
            """
        ),
    )
    outcome = outcomes["capital"]
    assert outcome.error is None
    metrics = outcome.metrics
    assert list(metrics) == ["p_answer", "logprob", "logprob_diff"]
    answer, (paris,) = outcome.details["answer"], outcome.details["distractors"]
    assert metrics["logprob"] == answer["logprob"] == pytest.approx(sum(t["logprob"] for t in answer["tokens"]))
    assert metrics["logprob_diff"] == answer["logprob"] - paris["logprob"]
    assert len(answer["tokens"]) == 12 and len(paris["tokens"]) == 6
    logprob, diff = metrics["logprob"], metrics["logprob_diff"]
    assert outcome.failures == (
        f"p(' Buenos Aires') = exp(logprob) = {metrics['p_answer']:.3g} < min_prob 0.5 (short by 0.5)",
        f"logprob(' Buenos Aires') = {logprob:.2f} < min_logprob -1 (short by {-1 - logprob:.2f})",
        f"logprob(' Buenos Aires') − logprob(' Paris') = {diff:.2f} < min_logprob_diff 0 (short by {-diff:.2f})",
    )
    lines = outcome.explanation.splitlines()
    first = answer["tokens"][0]
    assert lines[1] == (
        f"Answer ' Buenos Aires': 12 tokens {BUENOS_AIRES_PIECES}, logprob {logprob:.2f} "
        f"(mean {logprob / 12:.2f}), prob 0.00%"
    )
    assert lines[2].split() == ["#", "token", "id", "logprob", "rank"]
    assert lines[4].startswith("  1  ' '")
    assert lines[4].split()[-3:] == [str(first["token_id"]), f"{first['logprob']:.2f}", str(first["rank"])]
    assert lines[16] == (
        f"Greedy decoding gives '{' is' * 12}' instead ({[' is'] * 12}): token 1 ' ' is rank {first['rank']}"
    )
    assert lines[17].startswith("Distractor ' Paris': 6 tokens [' ', 'P', 'a', 'r', 'i', 's'], logprob ")
    assert lines[17].endswith(f", answer − distractor = {diff:+.2f}")
    assert lines[18] == "Top 10 after the prompt:"
    assert outcome.details["greedy"]["text"] == " is" * 12
    assert outcome.details["greedy"]["reproduces_answer"] is False


def test_greedy_holds_when_greedy_decoding_gives_the_answer(model: LoadedModel) -> None:
    (own, one, capital) = parse(
        case_file(
            f'- {{id: own, prompt: "{TOMORROW}", answer: " is is is"}}\n',
            f'- {{id: one, prompt: "{TOMORROW}", answer: " Monday"}}\n',
            f'- {{id: capital, prompt: "{CAPITAL}", answer: " Buenos Aires"}}\n',
        )
    )
    # The case files' parser cannot read `greedy: true` yet (see test_plugin_multitoken.py), so set it here.
    cases = [replace(case, expect={"greedy": True}) for case in (own, one, capital)]
    outcomes = run_completion_checks(model, MODEL, cases)
    assert outcomes[cases[0].case_id].failures == ()
    (one_failure,) = outcomes[cases[1].case_id].failures
    assert one_failure.startswith("greedy decoding gives ' is', not ' Monday': rank ")
    (failure,) = outcomes[cases[2].case_id].failures
    assert failure.startswith(f"greedy decoding gives '{' is' * 12}', not ' Buenos Aires': token 1 ' ' is rank ")
    assert "Greedy decoding reproduces the answer" in outcomes[cases[0].case_id].explanation


# ---------------------------------------------------------------------------------------------
# Next-token bars on longer continuations: the case's error, saying what to write instead


def test_an_inherited_max_rank_on_a_longer_answer_says_to_move_it(model: LoadedModel) -> None:
    outcomes = run(
        model,
        case_file(
            f'- {{id: capital, prompt: "{CAPITAL}", answer: " Buenos Aires", distractors: [" Paris"]}}\n',
            f'- {{id: monday, prompt: "{TOMORROW}", answer: " Monday"}}\n',
            defaults="defaults:\n  expect: {max_rank: 3}\n",
        ),
    )
    assert outcomes["monday"].error is None
    error = outcomes["capital"].error
    assert isinstance(error, TokenizationError)
    assert str(error) == (
        f"cases/c.seqprobe.yaml:6 case 'capital': answer ' Buenos Aires' is 12 tokens for "
        f"{MODEL} ({BUENOS_AIRES_PIECES}); answers must be one token for max_rank=3, which "
        "reads the next token only — for a longer answer use `greedy: true` instead of max_rank (greedy decoding "
        "gives exactly the answer); max_rank reaches this case from its suite or the file's defaults, which a case "
        "cannot unset: set it in the expect of the suites or cases whose answers are one token instead"
    )


def test_the_cases_own_next_token_bars_are_named_with_their_replacements(model: LoadedModel) -> None:
    outcomes = run(
        model,
        case_file(
            f"""
            - id: capital
              prompt: "{CAPITAL}"
              answer: " Buenos Aires"
              distractors: [" Paris"]
              expect: {{max_rank: 1, min_logit_diff: 0.5}}
            """
        ),
    )
    message = str(outcomes["capital"].error)
    assert message.endswith(
        "answers must be one token for max_rank=1 and min_logit_diff=0.5, which read the next token only — for a "
        "longer answer use `greedy: true` instead of max_rank (greedy decoding gives exactly the answer) and "
        "`min_logprob_diff` instead of min_logit_diff (log-probs of whole continuations); drop max_rank and "
        "min_logit_diff from this case's expect"
    )


def test_a_longer_distractor_refuses_min_logit_diff_only(model: LoadedModel) -> None:
    outcomes = run(
        model,
        case_file(
            f"""
            - id: diff
              prompt: "{TOMORROW}"
              answer: " Monday"
              distractors: [" Sunday", " Buenos Aires"]
              expect: {{min_logit_diff: 0}}
            - id: rank
              prompt: "{TOMORROW}"
              answer: " Monday"
              distractors: [" Sunday", " Buenos Aires"]
              expect: {{max_rank: 100000}}
            """
        ),
    )
    assert f"distractor ' Buenos Aires' is 12 tokens for {MODEL} ({BUENOS_AIRES_PIECES})" in str(outcomes["diff"].error)
    assert "use `min_logprob_diff` instead of min_logit_diff" in str(outcomes["diff"].error)
    ranked = outcomes["rank"]
    assert ranked.error is None and ranked.failures == ()
    # A one-token answer keeps its rank; logit_diff needs one-token distractors.
    assert list(ranked.metrics) == ["p_answer", "rank", "logprob", "logprob_diff"]


# ---------------------------------------------------------------------------------------------
# The case file: nothing claims one token


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (
            '{id: a, prompt: "x", answer: ""}',
            "answer is empty; give the expected continuation with its leading space, e.g. ' Monday' or ' Buenos Aires'",
        ),
        ('{id: a, prompt: "x", answer: " y", distractors: [" z", ""]}', "distractor 2 is empty"),
        (
            '{id: a, prompt: "x", answer: " y z", expect: {min_logprob_diff: 0}}',
            "min_logprob_diff needs at least one distractor to compare against",
        ),
    ],
)
def test_case_file_errors(entry: str, message: str) -> None:
    with pytest.raises(CaseFileError, match=f"^cases/c.seqprobe.yaml:4: {message}"):
        parse(case_file(f"- {entry}\n"))


def test_a_case_knows_which_bars_it_sets_itself() -> None:
    (case,) = parse(
        case_file(
            '- {id: a, prompt: "x", answer: " y z", expect: {min_logprob: -3}, model_expect: {m: {max_rank: 2}}}\n',
            defaults="defaults:\n  expect: {min_prob: 0.1}\n",
        )
    )
    assert case.own_bars == {"min_logprob", "max_rank"}
    assert dict(case.expect) == {"min_prob": 0.1, "min_logprob": -3}


# ---------------------------------------------------------------------------------------------
# The text, pinned on numbers made up for it


def made_up() -> ScoredCompletion:
    answer = ContinuationScore(
        " Buenos Aires", (TokenStep(" Buenos", 7, -0.5, 1, 12.0), TokenStep(" Aires", 8, -2.25, 3, 10.0))
    )
    paris = ContinuationScore(" Paris", (TokenStep(" Paris", 9, -1.5, 2, 13.0),))
    rio = ContinuationScore(" Rio de", (TokenStep(" Rio", 10, -3.0, 5, 9.0), TokenStep(" de", 11, -0.5, 1, 8.0)))
    top = (TokenScore(" Buenos", 7, 12.0, 0.6), TokenScore(" Paris", 9, 11.0, 0.2231))
    return ScoredCompletion(
        prompt=CAPITAL,
        prompt_tokens=("<s>", "The", " capital", " of", " Argentina", " is"),
        answer=answer,
        distractors=(paris, rio),
        next_token=Completion(
            CAPITAL, (), TokenScore(" Buenos", 7, 12.0, 0.6), 1, (TokenScore(" Paris", 9, 11.0, 0.2231),), top
        ),
        greedy_ids=(7, 12),
        greedy_tokens=(" Buenos", " Dias"),
        greedy_text=" Buenos Dias",
    )


def test_failure_lines_say_by_how_much() -> None:
    scored = made_up()
    expect = {"min_prob": 0.1, "min_logprob": -2, "min_logprob_diff": 0, "greedy": True}
    assert check_completion(scored, expect) == [
        "p(' Buenos Aires') = exp(logprob) = 0.0639 < min_prob 0.1 (short by 0.0361)",
        "logprob(' Buenos Aires') = -2.75 < min_logprob -2 (short by 0.75)",
        "logprob(' Buenos Aires') − logprob(' Paris') = -1.25 < min_logprob_diff 0 (short by 1.25)",
        "greedy decoding gives ' Buenos Dias', not ' Buenos Aires': token 2 ' Aires' is rank 3",
    ]
    assert (
        check_completion(scored, {"min_prob": 0.05, "min_logprob": -3, "min_logprob_diff": -2, "greedy": False}) == []
    )


def test_the_failure_view_of_a_longer_answer() -> None:
    assert format_scored(made_up()) == (
        "Tokenized prompt: ['<s>', 'The', ' capital', ' of', ' Argentina', ' is']\n"
        "Answer ' Buenos Aires': 2 tokens [' Buenos', ' Aires'], logprob -2.75 (mean -1.38), prob 6.39%\n"
        "  #  token        id    logprob    rank\n"
        "---  ---------  ----  ---------  ------\n"
        "  1  ' Buenos'     7      -0.50       1\n"
        "  2  ' Aires'      8      -2.25       3\n"
        "Greedy decoding gives ' Buenos Dias' instead ([' Buenos', ' Dias']): token 2 ' Aires' is rank 3\n"
        "Distractor ' Paris': 1 token, rank 2, logprob -1.50, prob 22.31%, answer − distractor = -1.25\n"
        "Distractor ' Rio de': 2 tokens [' Rio', ' de'], logprob -3.50 (mean -1.75), prob 3.02%, "
        "answer − distractor = +0.75\n"
        "Top 2 after the prompt:\n"
        "  rank  token        logit    prob\n"
        "------  ---------  -------  ------\n"
        "     1  ' Buenos'    12.00  60.00%\n"
        "     2  ' Paris'     11.00  22.31%"
    )
