"""The completion runner: every selected completion case scored in batched forward passes.

A case's answer and distractors are scored as continuations of any length
(`seqprobe.engine.continuations`) and held to its bars:

- `min_prob`: p(answer); for a longer answer, the probability of the whole continuation, exp(logprob).
- `min_logprob`: the answer's log-prob, the sum of its tokens' teacher-forced log-probs.
- `min_logprob_diff`: the answer's log-prob minus each distractor's.
- `greedy: true`: greedy decoding from the prompt gives exactly the answer's tokens.
- `max_rank`, `min_logit_diff`: next-token bars, for one-token answers (and, for min_logit_diff,
  one-token distractors); a case holding one with a longer continuation is that case's error.

A one-token case reads and fails exactly as before continuations: the next-token view of
`seqprobe.engine.scoring`.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING

from seqprobe.casefiles.completion import CompletionCase
from seqprobe.checks.outcome import CheckOutcome, cases_of, prepare_each
from seqprobe.engine.continuations import prepare_completion, score_continuations
from seqprobe.engine.scoring import check_expectations, format_completion, format_percent, format_top_k
from seqprobe.errors import TokenizationError
from seqprobe.records.intervals import DEFAULT_LEVEL

if TYPE_CHECKING:
    from seqprobe.casefiles.base import Case
    from seqprobe.engine.continuations import ContinuationScore, PreparedCompletion, ScoredCompletion
    from seqprobe.loading.models import LoadedModel

__all__ = [
    "NEXT_TOKEN_BARS",
    "check_bars_apply",
    "check_completion",
    "format_scored",
    "run_completion_checks",
]

# Bars that read the next token only, and what a longer continuation states instead.
NEXT_TOKEN_BARS: Mapping[str, str] = {
    "max_rank": "`greedy: true` instead of max_rank (greedy decoding gives exactly the answer)",
    "min_logit_diff": "`min_logprob_diff` instead of min_logit_diff (log-probs of whole continuations)",
}


def run_completion_checks(
    model: LoadedModel,
    model_name: str,
    cases: Sequence[Case],
    *,
    detail: bool = False,
    interval_level: float = DEFAULT_LEVEL,
    max_memory: int | None = None,
) -> dict[str, CheckOutcome]:
    """A `seqprobe.checks.outcome.Runner`; one prompt has no aggregate, so `detail` and `interval_level` change nothing."""

    def prepare(case: CompletionCase) -> PreparedCompletion:
        where = f"{case.location} case {case.name!r}"
        prepared = prepare_completion(model.bridge, case.prompt, case.answer, case.distractors, where=where)
        check_bars_apply(
            prepared, case.expect_for(model_name), model=model.info.name, where=where, set_here=case.own_bars
        )
        return prepared

    outcomes, ready = prepare_each(
        cases_of(cases, CompletionCase), prepare, headline=lambda case: (case.prompt, case.answer)
    )
    scored = score_continuations(model.bridge, [prepared for _, prepared in ready])
    for (case, _), result in zip(ready, scored, strict=True):
        outcomes[case.case_id] = CheckOutcome(
            metrics=result.metrics(),
            failures=tuple(check_completion(result, case.expect_for(model_name))),
            explanation=format_scored(result),
            details=result.to_json(),
            prompt=case.prompt,
            answer=case.answer,
            lower_is_better=("rank",),
        )
    return outcomes


def check_bars_apply(
    prepared: PreparedCompletion,
    expect: Mapping[str, float],
    *,
    model: str,
    where: str,
    set_here: Collection[str] = (),
) -> None:
    """Refuse next-token bars (`NEXT_TOKEN_BARS`) on continuations of several tokens: a TokenizationError.

    max_rank ranks the next token and min_logit_diff compares next-token logits, so neither means
    anything for a longer answer, nor min_logit_diff for a longer distractor. `model` is the model
    as the user named it. `set_here` names the bars the case sets itself; any other reaches it from
    its suite or the file's defaults, and a case cannot unset an inherited bar, so the message says
    to move it.
    """
    if len(prepared.answer_ids) > 1:
        role, text, pieces = "answer", prepared.answer, prepared.answer_tokens
        refused = [bar for bar in NEXT_TOKEN_BARS if bar in expect]
    else:
        longer = [(d, p) for d, p in zip(prepared.distractors, prepared.distractor_tokens, strict=True) if len(p) > 1]
        if not longer or "min_logit_diff" not in expect:
            return
        role, (text, pieces) = "distractor", longer[0]
        refused = ["min_logit_diff"]
    if not refused:
        return
    bars = " and ".join(f"{bar}={expect[bar]:g}" for bar in refused)
    inherited = [bar for bar in refused if bar not in set_here]
    if inherited:
        fix = (
            f"{' and '.join(inherited)} reach{'es' * (len(inherited) == 1)} this case from its suite or the file's "
            f"defaults, which a case cannot unset: set {'it' if len(inherited) == 1 else 'them'} in the expect of "
            "the suites or cases whose answers are one token instead"
        )
    else:
        fix = f"drop {' and '.join(refused)} from this case's expect"
    raise TokenizationError(
        f"{where}: {role} {text!r} is {len(pieces)} tokens for {model} ({list(pieces)}); {role}s must be "
        f"one token for {bars}, which read{'s' * (len(refused) == 1)} the next token only — for a longer {role} "
        f"use {' and '.join(NEXT_TOKEN_BARS[bar] for bar in refused)}; {fix}"
    )


def check_completion(scored: ScoredCompletion, expect: Mapping[str, float]) -> list[str]:
    """One line per expectation the case misses, saying by how much; empty when all hold.

    Next-token bars a longer continuation cannot meet are refused before scoring
    (`check_bars_apply`); here they are read for one-token answers only.
    """
    answer = scored.answer
    if len(answer.steps) == 1:
        next_token_bars = {bar: expect[bar] for bar in ("min_prob", "max_rank", "min_logit_diff") if bar in expect}
        failures = check_expectations(scored.next_token, next_token_bars)
    else:
        failures = []
        if "min_prob" in expect and answer.prob < expect["min_prob"]:
            bar = expect["min_prob"]
            failures.append(
                f"p({answer.text!r}) = exp(logprob) = {answer.prob:.3g} < min_prob {bar:g} "
                f"(short by {bar - answer.prob:.3g})"
            )
    if "min_logprob" in expect and answer.logprob < expect["min_logprob"]:
        bar = expect["min_logprob"]
        failures.append(
            f"logprob({answer.text!r}) = {answer.logprob:.2f} < min_logprob {bar:g} (short by {bar - answer.logprob:.2f})"
        )
    if "min_logprob_diff" in expect:
        bar = expect["min_logprob_diff"]
        for distractor, diff in scored.logprob_diffs.items():
            if diff < bar:
                failures.append(
                    f"logprob({answer.text!r}) − logprob({distractor!r}) = {diff:.2f} < min_logprob_diff {bar:g} "
                    f"(short by {bar - diff:.2f})"
                )
    if expect.get("greedy") and not scored.greedy:
        failures.append(f"greedy decoding gives {scored.greedy_text!r}, not {answer.text!r}: {_miss(answer)}")
    return failures


def format_scored(scored: ScoredCompletion) -> str:
    """A one-token case as `format_completion` shows it; a longer one token by token, then greedy's output."""
    if scored.one_token:
        return format_completion(scored.next_token)
    from tabulate import tabulate

    answer = scored.answer
    lines = [
        f"Tokenized prompt: {list(scored.prompt_tokens)}",
        f"Answer {answer.text!r}: {_summary(answer)}",
        tabulate(
            [[j, repr(s.token), s.token_id, f"{s.logprob:.2f}", s.rank] for j, s in enumerate(answer.steps, start=1)],
            headers=["#", "token", "id", "logprob", "rank"],
            tablefmt="simple",
            disable_numparse=True,
            colalign=("right", "left", "right", "right", "right"),
        ),
        "Greedy decoding reproduces the answer"
        if scored.greedy
        else f"Greedy decoding gives {scored.greedy_text!r} instead ({list(scored.greedy_tokens)}): {_miss(answer)}",
    ]
    for distractor, diff in zip(scored.distractors, scored.logprob_diffs.values(), strict=True):
        lines.append(f"Distractor {distractor.text!r}: {_summary(distractor)}, answer − distractor = {diff:+.2f}")
    top = scored.next_token.top_k
    lines.append(format_top_k(top, title=f"Top {len(top)} after the prompt:"))
    return "\n".join(lines)


def _summary(continuation: ContinuationScore) -> str:
    """ "2 tokens [' Buenos', ' Aires'], logprob -3.21 (mean -1.61), prob 4.03%"."""
    n = len(continuation.steps)
    tokens = f"1 token, rank {continuation.steps[0].rank}" if n == 1 else f"{n} tokens {list(continuation.tokens)}"
    mean = f" (mean {continuation.mean_logprob:.2f})" if n > 1 else ""
    return f"{tokens}, logprob {continuation.logprob:.2f}{mean}, prob {format_percent(continuation.prob)}"


def _miss(answer: ContinuationScore) -> str:
    """Where greedy decoding leaves the answer: "token 2 ' Aires' is rank 3"."""
    j = answer.first_miss
    if j is None:
        return "it does not"
    step = answer.steps[j]
    return f"token {j + 1} {step.token!r} is rank {step.rank}" if len(answer.steps) > 1 else f"rank {step.rank}"
