"""Next-token scoring: what a model predicts after a prompt, and whether a case's bars are met.

Prompts are run together (`seqprobe.engine.prompt_tree`): each distinct prefix once, or in
right-padded batches through a bridge with hooks; either way each prompt's last position gets the
logits it would alone (tested: together == one at a time, == the bridge).

This is the one-token view (phrasing families, invariance and direction checks read it); a
completion case scores its answer and distractors as continuations of any length in
`seqprobe.engine.continuations`, which shows this view for one-token answers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from seqprobe.errors import TokenizationError

if TYPE_CHECKING:
    from jaxtyping import Float
    from torch import Tensor
    from transformer_lens.model_bridge import TransformerBridge

__all__ = [
    "Completion",
    "PreparedPrompt",
    "TokenScore",
    "check_expectations",
    "completions_from_logits",
    "continuation_token_ids",
    "format_completion",
    "format_percent",
    "format_top_k",
    "final_logits",
    "greedy_tokens",
    "model_name_of",
    "prepare_prompt",
    "prompt_token_ids",
    "score_completions",
    "single_token_id",
]

DEFAULT_BATCH_SIZE = 64
DEFAULT_TOP_K = 10


@dataclass(frozen=True)
class TokenScore:
    token: str
    token_id: int
    logit: float
    prob: float

    def to_json(self) -> dict[str, object]:
        return {"token": self.token, "token_id": self.token_id, "logit": self.logit, "prob": self.prob}


@dataclass(frozen=True)
class Completion:
    """The model's next-token distribution after one prompt, seen from one answer."""

    prompt: str
    prompt_tokens: tuple[str, ...]
    answer: TokenScore
    # 1 = the model's top prediction.
    rank: int
    distractors: tuple[TokenScore, ...]
    top_k: tuple[TokenScore, ...]

    @property
    def logit_diffs(self) -> dict[str, float]:
        return {d.token: self.answer.logit - d.logit for d in self.distractors}

    @property
    def min_logit_diff(self) -> float | None:
        """The answer's lead over its closest distractor; None without distractors."""
        return min(self.logit_diffs.values()) if self.distractors else None

    def metrics(self) -> dict[str, float]:
        """What baselines compare: not the raw logit, whose offset means nothing on its own."""
        metrics = {"p_answer": self.answer.prob, "rank": float(self.rank)}
        if self.min_logit_diff is not None:
            metrics["logit_diff"] = self.min_logit_diff
        return metrics


def continuation_token_ids(bridge: TransformerBridge, text: str, *, role: str, where: str) -> tuple[int, ...]:
    """The ids of `text` tokenized on its own, without BOS: what is appended to a prompt's ids to score it.

    A TokenizationError (naming `where` and `role`) when `text` gives no token at all.
    """
    ids = tuple(bridge.to_tokens(text, prepend_bos=False)[0].tolist()) if text else ()
    if not ids:
        raise TokenizationError(
            f"{where}: {role} {text!r} is no token for {model_name_of(bridge)}; give it some text, e.g. ' Monday'"
        )
    return ids


def single_token_id(bridge: TransformerBridge, text: str, *, role: str, where: str) -> int:
    """The id of `text` as one token; a TokenizationError naming the pieces otherwise."""
    ids = continuation_token_ids(bridge, text, role=role, where=where)
    if len(ids) != 1:
        pieces = [bridge.to_string([i]) for i in ids]
        raise TokenizationError(
            f"{where}: {role} {text!r} is {len(ids)} tokens for {model_name_of(bridge)} ({pieces}); "
            f"{role}s must be one token — pick a form the tokenizer keeps whole (mind the leading space)"
        )
    return ids[0]


def prompt_token_ids(bridge: TransformerBridge, prompt: str, *, where: str) -> list[int]:
    """The prompt's token ids with the model's BOS, bounded by its context length."""
    # truncate=False: the bridge would otherwise cut the prompt to n_ctx without a word.
    ids = bridge.to_tokens(prompt, truncate=False)[0].tolist()
    n_ctx = bridge.cfg.n_ctx
    if len(ids) > n_ctx:
        raise TokenizationError(
            f"{where}: prompt is {len(ids)} tokens, over {model_name_of(bridge)}'s context of {n_ctx}; shorten it"
        )
    return ids


def model_name_of(bridge: TransformerBridge) -> str:
    """The name a tokenization message gives the model: its config's, as TransformerLens recorded it."""
    return str(getattr(bridge.cfg, "model_name", "the model"))


def final_logits(
    bridge: TransformerBridge, token_ids: Sequence[Sequence[int]], *, batch_size: int = DEFAULT_BATCH_SIZE
) -> Float[Tensor, "prompt d_vocab"]:
    """Logits at each prompt's last token: each distinct prefix computed once where the bridge allows
    (seqprobe.engine.prompt_tree), else in right-padded batches."""
    from seqprobe.engine.prompt_tree import read_logits

    return read_logits(bridge, token_ids, [[len(ids) - 1] for ids in token_ids], batch_size=batch_size)


@dataclass(frozen=True)
class PreparedPrompt:
    """A prompt tokenized for one model, with its answer and distractor ids checked."""

    prompt: str
    token_ids: tuple[int, ...]
    answer: str
    answer_id: int
    distractors: tuple[str, ...]
    distractor_ids: tuple[int, ...]


def prepare_prompt(
    bridge: TransformerBridge, prompt: str, answer: str, distractors: Sequence[str], *, where: str
) -> PreparedPrompt:
    """Tokenize one case; raises TokenizationError (naming `where`) for a bad prompt or answer."""
    return PreparedPrompt(
        prompt=prompt,
        token_ids=tuple(prompt_token_ids(bridge, prompt, where=where)),
        answer=answer,
        answer_id=single_token_id(bridge, answer, role="answer", where=where),
        distractors=tuple(distractors),
        distractor_ids=tuple(single_token_id(bridge, d, role="distractor", where=where) for d in distractors),
    )


def score_completions(
    bridge: TransformerBridge,
    prepared: Sequence[PreparedPrompt],
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    top_k: int = DEFAULT_TOP_K,
) -> list[Completion]:
    """Score each prepared prompt against its answer and distractors; one forward pass per batch."""
    if not prepared:
        return []
    logits = final_logits(bridge, [p.token_ids for p in prepared], batch_size=batch_size)
    return completions_from_logits(bridge, prepared, logits, top_k=top_k)


def completions_from_logits(
    bridge: TransformerBridge,
    prepared: Sequence[PreparedPrompt],
    logits: Float[Tensor, "prompt d_vocab"],
    *,
    top_k: int = DEFAULT_TOP_K,
) -> list[Completion]:
    """`score_completions` from logits read already: a caller reading several kinds of prompt reads them together."""
    probs = logits.softmax(dim=-1)
    top = logits.topk(min(top_k, logits.shape[-1]), dim=-1)

    def score(row: int, token_id: int, text: str | None = None) -> TokenScore:
        token = text if text is not None else bridge.to_string([token_id])
        return TokenScore(token, token_id, float(logits[row, token_id]), float(probs[row, token_id]))

    completions = []
    for row, item in enumerate(prepared):
        answer_logit = logits[row, item.answer_id]
        completions.append(
            Completion(
                prompt=item.prompt,
                prompt_tokens=tuple(bridge.to_string([i]) for i in item.token_ids),
                answer=score(row, item.answer_id, item.answer),
                # Ties count against the answer: rank 1 means strictly ahead of every other token.
                rank=int((logits[row] >= answer_logit).sum()),
                distractors=tuple(score(row, i, d) for i, d in zip(item.distractor_ids, item.distractors, strict=True)),
                top_k=tuple(score(row, int(i)) for i in top.indices[row]),
            )
        )
    return completions


def check_expectations(completion: Completion, expect: Mapping[str, float]) -> list[str]:
    """One line per expectation the completion misses, saying by how much; empty when all hold."""
    answer = completion.answer.token
    failures = []
    if "min_prob" in expect and completion.answer.prob < expect["min_prob"]:
        bar = expect["min_prob"]
        failures.append(
            f"p({answer!r}) = {completion.answer.prob:.3f} < min_prob {bar:g} (short by {bar - completion.answer.prob:.3f})"
        )
    if "max_rank" in expect and completion.rank > expect["max_rank"]:
        failures.append(f"rank of {answer!r} = {completion.rank} > max_rank {int(expect['max_rank'])}")
    if "min_logit_diff" in expect:
        bar = expect["min_logit_diff"]
        for distractor, diff in completion.logit_diffs.items():
            if diff < bar:
                failures.append(
                    f"logit({answer!r}) − logit({distractor!r}) = {diff:.2f} < min_logit_diff {bar:g} (short by {bar - diff:.2f})"
                )
    return failures


def format_completion(completion: Completion) -> str:
    """The study's `test_prompt` view: tokens, the answer's standing, distractors, top-k."""

    answer = completion.answer
    lines = [
        f"Tokenized prompt: {list(completion.prompt_tokens)}",
        f"Answer {answer.token!r}: rank {completion.rank}, logit {answer.logit:.2f}, prob {format_percent(answer.prob)}",
    ]
    for distractor in completion.distractors:
        diff = answer.logit - distractor.logit
        lines.append(
            f"Distractor {distractor.token!r}: logit {distractor.logit:.2f}, prob {format_percent(distractor.prob)}, "
            f"answer − distractor = {diff:+.2f}"
        )
    lines.append(format_top_k(completion.top_k, title=f"Top {len(completion.top_k)}:"))
    return "\n".join(lines)


def format_top_k(top_k: Sequence[TokenScore], *, title: str) -> str:
    """`title`, then the model's top predictions as a table: rank, token, logit, prob."""
    from tabulate import tabulate

    table = tabulate(
        [
            [rank, repr(score.token), f"{score.logit:.2f}", format_percent(score.prob)]
            for rank, score in enumerate(top_k, start=1)
        ],
        headers=["rank", "token", "logit", "prob"],
        tablefmt="simple",
        disable_numparse=True,
        colalign=("right", "left", "right", "right"),
    )
    return f"{title}\n{table}"


def format_percent(prob: float) -> str:
    """A probability as the failure text shows it: "19.00%"."""
    return f"{prob * 100:.2f}%" if math.isfinite(prob) else str(prob)


def greedy_tokens(
    bridge: TransformerBridge,
    token_ids: Sequence[Sequence[int]],
    *,
    max_new_tokens: int | Sequence[int],
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> list[tuple[int, ...]]:
    """Greedy decoding after each of `token_ids`: `max_new_tokens` ids each (one count, or one per row).

    No cache: each new token is one read of the rows still growing, `batch_size` at a time, each
    distinct prefix computed once where the bridge allows it (seqprobe.engine.prompt_tree).
    Argmax ties go to the lowest id, as torch's argmax (and transformers' greedy search) has them.
    """
    counts = [max_new_tokens] * len(token_ids) if isinstance(max_new_tokens, int) else list(max_new_tokens)
    grown = [list(ids) for ids in token_ids]
    new: list[list[int]] = [[] for _ in token_ids]
    for step in range(max(counts, default=0)):
        active = [i for i, count in enumerate(counts) if count > step]
        for start in range(0, len(active), batch_size):
            chunk = active[start : start + batch_size]
            logits = final_logits(bridge, [grown[i] for i in chunk], batch_size=batch_size)
            for i, token in zip(chunk, logits.argmax(dim=-1).tolist(), strict=True):
                grown[i].append(token)
                new[i].append(token)
    return [tuple(ids) for ids in new]
