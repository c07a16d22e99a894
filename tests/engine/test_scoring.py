"""Scoring on tiny real-architecture models: batching changes no number; bad tokens are named."""

from __future__ import annotations

import pytest
import torch

from seqprobe.engine.scoring import (
    Completion,
    TokenScore,
    check_expectations,
    continuation_token_ids,
    format_completion,
    prepare_prompt,
    score_completions,
    single_token_id,
)
from seqprobe.errors import TokenizationError

PROMPTS = [
    ("Today it is Sunday, tomorrow it is", " Monday", [" Sunday"]),
    ("Monday, Tuesday and", " Wednesday", [" Tuesday", " Monday"]),
    ("Now it is August, the next month is", " September", [" August"]),
    ("November, December and", " January", []),
    ("Today it is Wednesday, yesterday it was the day before the day after", " Tuesday", [" Thursday"]),
]


def _prepared(bridge):
    return [prepare_prompt(bridge, p, a, d, where=f"case {i}") for i, (p, a, d) in enumerate(PROMPTS)]


def test_batched_scoring_equals_one_at_a_time(tiny_bridge) -> None:
    prepared = _prepared(tiny_bridge)
    assert len({len(p.token_ids) for p in prepared}) > 1, "prompts must differ in length to exercise padding"
    batched = score_completions(tiny_bridge, prepared, batch_size=len(prepared))
    alone = [score_completions(tiny_bridge, [p], batch_size=1)[0] for p in prepared]
    for together, single in zip(batched, alone, strict=True):
        assert together.rank == single.rank
        assert together.answer.logit == pytest.approx(single.answer.logit, abs=1e-5)
        assert together.answer.prob == pytest.approx(single.answer.prob, abs=1e-6)
        assert [s.token_id for s in together.top_k] == [s.token_id for s in single.top_k]
        for a, b in zip(together.distractors, single.distractors, strict=True):
            assert a.logit == pytest.approx(b.logit, abs=1e-5)


def test_scores_agree_with_a_plain_forward(tiny_llama_bridge) -> None:
    (prepared,) = _prepared(tiny_llama_bridge)[:1]
    (completion,) = score_completions(tiny_llama_bridge, [prepared])
    with torch.inference_mode():
        logits = tiny_llama_bridge(torch.tensor([prepared.token_ids]))[0, -1]
    assert completion.answer.logit == pytest.approx(float(logits[prepared.answer_id]), abs=1e-5)
    assert completion.rank == int((logits >= logits[prepared.answer_id]).sum())
    assert completion.top_k[0].token_id == int(logits.argmax())
    assert completion.min_logit_diff == pytest.approx(
        float(logits[prepared.answer_id] - logits[prepared.distractor_ids[0]]), abs=1e-5
    )


def test_multi_token_answer_names_its_pieces(tiny_llama_bridge) -> None:
    with pytest.raises(TokenizationError) as excinfo:
        prepare_prompt(tiny_llama_bridge, "Today it is", " Mon day", [], where="cases/x.seqprobe.yaml:3 case 'a'")
    message = str(excinfo.value)
    assert message.startswith("cases/x.seqprobe.yaml:3 case 'a': answer ' Mon day' is 2 tokens for ")
    assert message.endswith(
        "([' Mon', ' day']); answers must be one token — pick a form the tokenizer keeps whole (mind the leading space)"
    )


def test_multi_token_distractor_is_rejected(tiny_llama_bridge) -> None:
    with pytest.raises(TokenizationError, match="distractor 'Sunday' is .* tokens"):
        prepare_prompt(tiny_llama_bridge, "Today it is", " Monday", ["Sunday"], where="here")


def test_continuation_ids_are_the_text_tokenized_alone(tiny_llama_bridge) -> None:
    """No BOS, whatever its length: what a completion case appends to its prompt's ids."""
    ids = continuation_token_ids(tiny_llama_bridge, " Buenos Aires", role="answer", where="here")
    assert ids == tuple(tiny_llama_bridge.to_tokens(" Buenos Aires", prepend_bos=False)[0].tolist())
    assert len(ids) == 12
    monday = continuation_token_ids(tiny_llama_bridge, " Monday", role="answer", where="here")
    assert monday == (single_token_id(tiny_llama_bridge, " Monday", role="answer", where="here"),)
    with pytest.raises(
        TokenizationError, match=r"^here: answer '' is no token for .*; give it some text, e.g. ' Monday'$"
    ):
        continuation_token_ids(tiny_llama_bridge, "", role="answer", where="here")


def test_over_long_prompt_is_rejected(tiny_llama_bridge) -> None:
    prompt = " Monday" * (tiny_llama_bridge.cfg.n_ctx + 5)
    with pytest.raises(TokenizationError, match=r"here: prompt is 134 tokens, over .*'s context of 128; shorten it"):
        prepare_prompt(tiny_llama_bridge, prompt, " Monday", [], where="here")


def _completion(prob: float, rank: int, answer_logit: float, distractor_logit: float) -> Completion:
    return Completion(
        prompt="Today it is Sunday, tomorrow it is",
        prompt_tokens=("<s>", "Today", " it", " is", " Sunday", ",", " tomorrow", " it", " is"),
        answer=TokenScore(" Monday", 1, answer_logit, prob),
        rank=rank,
        distractors=(TokenScore(" Sunday", 2, distractor_logit, 0.1),),
        top_k=(TokenScore(" Wednesday", 3, 15.0, 0.4), TokenScore(" Monday", 1, answer_logit, prob)),
    )


def test_expectation_failures_say_by_how_much() -> None:
    completion = _completion(prob=0.19, rank=2, answer_logit=14.2, distractor_logit=13.9)
    assert check_expectations(completion, {"min_prob": 0.3, "max_rank": 1, "min_logit_diff": 1.0}) == [
        "p(' Monday') = 0.190 < min_prob 0.3 (short by 0.110)",
        "rank of ' Monday' = 2 > max_rank 1",
        "logit(' Monday') − logit(' Sunday') = 0.30 < min_logit_diff 1 (short by 0.70)",
    ]
    assert check_expectations(completion, {"min_prob": 0.1, "max_rank": 2, "min_logit_diff": 0.2}) == []


def test_failure_view_matches_the_study_test_prompt_layout() -> None:
    text = format_completion(_completion(prob=0.19, rank=2, answer_logit=14.2, distractor_logit=13.9))
    assert text == (
        "Tokenized prompt: ['<s>', 'Today', ' it', ' is', ' Sunday', ',', ' tomorrow', ' it', ' is']\n"
        "Answer ' Monday': rank 2, logit 14.20, prob 19.00%\n"
        "Distractor ' Sunday': logit 13.90, prob 10.00%, answer − distractor = +0.30\n"
        "Top 2:\n"
        "  rank  token           logit    prob\n"
        "------  ------------  -------  ------\n"
        "     1  ' Wednesday'    15.00  40.00%\n"
        "     2  ' Monday'       14.20  19.00%"
    )
