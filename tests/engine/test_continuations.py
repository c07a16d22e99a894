"""Continuation scoring equals plain transformers' teacher-forced log-probs, whatever the batch; greedy == generate."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from seqprobe.engine.continuations import prepare_completion, score_continuations
from seqprobe.engine.scoring import greedy_tokens, prepare_prompt, score_completions
from seqprobe.errors import TokenizationError

pytestmark = pytest.mark.filterwarnings("ignore")

# Answers and distractors of one token and of several (" Buenos Aires" is 12 for the tiny tokenizer).
CASES = [
    ("The capital of Argentina is", " Buenos Aires", [" Paris", " Lima"]),
    ("Today it is Sunday, tomorrow it is", " Monday", [" Sunday"]),
    ("Monday, Tuesday and", " Wednesday", [" Tuesday and", " Monday"]),
    ("Now it is August, the next month is", " September", [" Septembre"]),
    ("November, December and", " January February March", []),
]
# Oracle tolerance: every number seqprobe computes equals transformers' to 1e-4 (STYLE.md).
ORACLE = 1e-4


def prepared_cases(bridge: Any) -> list[Any]:
    return [prepare_completion(bridge, p, a, d, where=f"case {i}") for i, (p, a, d) in enumerate(CASES)]


def hf_model(model_dir: Path | str) -> Any:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    # Greedy decoding runs its full length, as seqprobe's does: an EOS is just another token.
    model.generation_config.eos_token_id = None
    return model


def hf_logprobs(model: Any, prompt_ids: tuple[int, ...], ids: tuple[int, ...]) -> list[float]:
    """Teacher-forced log p(ids[j] | prompt, ids[:j]) from a plain forward: log_softmax, then gather."""
    with torch.inference_mode():
        logits = model(torch.tensor([[*prompt_ids, *ids]])).logits[0].float()  # [pos vocab]
    logprobs = logits.log_softmax(dim=-1)[len(prompt_ids) - 1 : -1]  # [len(ids) vocab]
    return logprobs.gather(-1, torch.tensor(ids)[:, None])[:, 0].tolist()


def hf_greedy(model: Any, prompt_ids: tuple[int, ...], n: int) -> tuple[int, ...]:
    ids = torch.tensor([prompt_ids])
    with torch.inference_mode():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=n)
    return tuple(out[0, len(prompt_ids) :].tolist())


def max_oracle_gap(bridge: Any, model: Any, prepared: list[Any]) -> float:
    """The largest |seqprobe − transformers| over every token of every answer and distractor."""
    gaps = []
    for item, scored in zip(prepared, score_continuations(bridge, prepared, batch_size=3), strict=True):
        for ids, continuation in [
            (item.answer_ids, scored.answer),
            *zip(item.distractor_ids, scored.distractors, strict=True),
        ]:
            reference = hf_logprobs(model, item.token_ids, ids)
            gaps += [abs(step.logprob - ref) for step, ref in zip(continuation.steps, reference, strict=True)]
            gaps.append(abs(continuation.logprob - math.fsum(reference)))
            assert continuation.mean_logprob == pytest.approx(continuation.logprob / len(ids))
    return max(gaps)


@pytest.fixture(params=["gpt2", "llama"])
def tiny(request: pytest.FixtureRequest) -> tuple[Any, Path]:
    """Each tiny default-init architecture: its bridge and its folder."""
    return request.getfixturevalue(f"tiny_{request.param}_bridge"), request.getfixturevalue(f"tiny_{request.param}_dir")


def test_logprobs_equal_plain_transformers_on_tiny_models(tiny: tuple[Any, Path]) -> None:
    bridge, model_dir = tiny
    assert max_oracle_gap(bridge, hf_model(model_dir), prepared_cases(bridge)) < ORACLE


def test_logprobs_and_ranks_equal_plain_transformers_on_sharp_models(sharp_bridge: Any, sharp_model_dir: Path) -> None:
    """Logits of several units (Gemma 3 with a sliding window shorter than the prompts among them)."""
    model = hf_model(sharp_model_dir)
    prepared = prepared_cases(sharp_bridge)
    assert max_oracle_gap(sharp_bridge, model, prepared) < ORACLE
    for item, scored in zip(prepared, score_continuations(sharp_bridge, prepared), strict=True):
        with torch.inference_mode():
            logits = model(torch.tensor([[*item.token_ids, *item.answer_ids]])).logits[0]  # [pos vocab]
        read = logits[len(item.token_ids) - 1 : -1]  # [answer vocab]
        chosen = read.gather(-1, torch.tensor(item.answer_ids)[:, None])  # [answer 1]
        assert [step.rank for step in scored.answer.steps] == (read >= chosen).sum(dim=-1).tolist()


def test_the_tokenization_rule(tiny_llama_bridge: Any) -> None:
    """The prompt with BOS; each continuation tokenized on its own, without BOS, appended."""
    (item, *_) = prepared_cases(tiny_llama_bridge)
    assert list(item.token_ids) == tiny_llama_bridge.to_tokens(CASES[0][0])[0].tolist()
    assert list(item.answer_ids) == tiny_llama_bridge.to_tokens(" Buenos Aires", prepend_bos=False)[0].tolist()
    assert len(item.answer_ids) == len(item.answer_tokens) == 12
    assert item.answer_tokens[-2:] == ("e", "s")


def test_empty_and_over_long_continuations_are_named(tiny_llama_bridge: Any) -> None:
    with pytest.raises(TokenizationError, match=r"^here: distractor '' is no token for .*; give it some text"):
        prepare_completion(tiny_llama_bridge, "Today it is", " Monday", [""], where="here")
    prompt = " Monday" * 120
    with pytest.raises(
        TokenizationError,
        match=r"^here: the prompt \(121 tokens\) and ' Buenos Aires' \(12 tokens\) feed 132 positions, "
        r"over .*'s context of 128; shorten them$",
    ):
        prepare_completion(tiny_llama_bridge, prompt, " Monday", [" Buenos Aires"], where="here")


@pytest.fixture(scope="module")
def alone(tiny_llama_bridge: Any) -> list[Any]:
    """Each case scored on its own, in a batch of one."""
    return [
        score_continuations(tiny_llama_bridge, [item], batch_size=1)[0] for item in prepared_cases(tiny_llama_bridge)
    ]


@settings(max_examples=25, deadline=None)
@given(
    picks=st.lists(st.integers(min_value=0, max_value=len(CASES) - 1), min_size=1, max_size=8),
    batch_size=st.integers(min_value=1, max_value=9),
)
def test_any_batch_gives_the_numbers_of_one_at_a_time(
    tiny_llama_bridge: Any, alone: list[Any], picks: list[int], batch_size: int
) -> None:
    prepared = prepared_cases(tiny_llama_bridge)
    together = score_continuations(tiny_llama_bridge, [prepared[i] for i in picks], batch_size=batch_size)
    for i, scored in zip(picks, together, strict=True):
        single = alone[i]
        for a, b in zip((scored.answer, *scored.distractors), (single.answer, *single.distractors), strict=True):
            assert [s.logprob for s in a.steps] == pytest.approx([s.logprob for s in b.steps], abs=1e-5)
            assert [s.token_id for s in a.steps] == [s.token_id for s in b.steps]
        assert [s.token_id for s in scored.next_token.top_k] == [s.token_id for s in single.next_token.top_k]
        assert scored.greedy_ids == single.greedy_ids


def test_greedy_tokens_equal_generate(sharp_bridge: Any, sharp_model_dir: Path) -> None:
    model = hf_model(sharp_model_dir)
    prompts = [item.token_ids for item in prepared_cases(sharp_bridge)]
    counts = [6, 1, 3, 6, 4]
    produced = greedy_tokens(sharp_bridge, prompts, max_new_tokens=counts, batch_size=2)
    assert produced == [hf_greedy(model, ids, n) for ids, n in zip(prompts, counts, strict=True)]
    assert greedy_tokens(sharp_bridge, prompts[:2], max_new_tokens=0) == [(), ()]


def test_greedy_is_every_answer_token_at_rank_one_and_shows_what_generate_gives(
    sharp_bridge: Any, sharp_model_dir: Path
) -> None:
    model = hf_model(sharp_model_dir)
    prepared = prepared_cases(sharp_bridge)
    # The model's own greedy continuation, as an answer (by ids: its text need not re-tokenize to them).
    own_ids = hf_greedy(model, prepared[0].token_ids, 4)
    own = tuple(sharp_bridge.to_string([i]) for i in own_ids)
    prepared.append(replace(prepared[0], answer="".join(own), answer_ids=own_ids, answer_tokens=own))
    # ... and one that leaves it at its third token: greedy decoding goes on from its own choice there.
    other = next(i for i in range(10) if i != own_ids[2])
    veer = (*own_ids[:2], other, own_ids[3])
    prepared.insert(0, replace(prepared[0], answer_ids=veer, answer_tokens=tuple(map(str, veer))))
    first, *_ = results = score_continuations(sharp_bridge, prepared, batch_size=2)
    for item, scored in zip(prepared, results, strict=True):
        assert scored.greedy == all(step.rank == 1 for step in scored.answer.steps)
        assert scored.greedy_ids == hf_greedy(model, item.token_ids, len(item.answer_ids))
        assert scored.greedy == (scored.greedy_ids == item.answer_ids)
        assert scored.greedy_text == sharp_bridge.to_string(list(scored.greedy_ids))
    assert scored.greedy and scored.answer.first_miss is None
    assert first.answer.first_miss == 2 and first.greedy_ids == own_ids


def test_a_one_token_case_keeps_its_next_token_view(tiny_llama_bridge: Any) -> None:
    """logprob = log p(answer), logprob_diff = logit_diff exactly (recorded once), and the next-token numbers of before."""
    prompt, answer, distractors = CASES[1]
    (scored,) = score_continuations(tiny_llama_bridge, [prepare_completion(tiny_llama_bridge, *CASES[1], where="x")])
    (before,) = score_completions(
        tiny_llama_bridge, [prepare_prompt(tiny_llama_bridge, prompt, answer, distractors, where="x")]
    )
    assert scored.one_token
    assert scored.next_token.rank == before.rank
    assert scored.next_token.answer.logit == before.answer.logit
    assert scored.next_token.answer.prob == pytest.approx(before.answer.prob, rel=1e-5)
    assert [s.token_id for s in scored.next_token.top_k] == [s.token_id for s in before.top_k]
    metrics = scored.metrics()
    assert list(metrics) == ["p_answer", "rank", "logit_diff", "logprob"]
    assert scored.min_logprob_diff == metrics["logit_diff"] == before.min_logit_diff
    assert metrics["logprob"] == pytest.approx(math.log(before.answer.prob), abs=1e-5)
    assert metrics["p_answer"] == pytest.approx(before.answer.prob, rel=1e-5)


def test_a_longer_case_has_no_next_token_metrics(tiny_llama_bridge: Any) -> None:
    (scored,) = score_continuations(tiny_llama_bridge, prepared_cases(tiny_llama_bridge)[:1])
    metrics = scored.metrics()
    assert list(metrics) == ["p_answer", "logprob", "logprob_diff"]
    assert metrics["p_answer"] == math.exp(metrics["logprob"])
    assert metrics["logprob_diff"] == min(scored.answer.logprob - d.logprob for d in scored.distractors)
    details = scored.to_json()
    assert set(details) == {"prompt_tokens", "answer", "distractors", "greedy", "top_k"}
    assert set(details["answer"]) == {"text", "logprob", "mean_logprob", "tokens"}
    assert set(details["answer"]["tokens"][0]) == {"token", "token_id", "logprob", "rank"}
    assert set(details["greedy"]) == {"text", "tokens", "token_ids", "reproduces_answer"}


@pytest.mark.real_model
def test_logprobs_and_greedy_equal_transformers_on_the_real_model(real_model: Any) -> None:
    from seqprobe.loading.models import weights_location

    bridge = real_model.bridge
    model = hf_model(weights_location("smollm2-135m"))
    prepared = [
        prepare_completion(
            bridge, "The capital of Argentina is", " Buenos Aires", [" Paris", " Rio de Janeiro"], where="a"
        ),
        prepare_completion(bridge, "Today it is Sunday, tomorrow it is", " Monday", [" Sunday"], where="b"),
    ]
    assert prepared[0].answer_tokens == (" Buenos", " Aires")
    assert max_oracle_gap(bridge, model, prepared) < ORACLE
    for item, scored in zip(prepared, score_continuations(bridge, prepared), strict=True):
        assert scored.greedy_ids == hf_greedy(model, item.token_ids, len(item.answer_ids))
