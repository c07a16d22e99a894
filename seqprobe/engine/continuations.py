"""Continuation scoring: how likely a model finds a given continuation of a prompt, token by token.

A continuation c = (c_1 .. c_L) of a prompt is scored by its log-probability given the prompt,
teacher-forced: the true tokens (not the model's own choices) are fed, and each token's
log-prob is read at the position before it,

    log p(c | prompt) = Σ_j log p(c_j | prompt, c_1 .. c_{j-1})

the log-likelihood lm-evaluation-harness scores continuations by. The sum is the score; each
token's log-prob and rank, and the mean over tokens, are kept beside it, and exp(sum) is the
probability of the whole continuation. For a one-token continuation the sum is log p(answer), and
a one-token answer minus a one-token distractor is their logit difference (the normalizer cancels).

Tokenization: a continuation is tokenized on its own, without BOS (`prepend_bos=False`, as
one-token answers always were), and its ids are appended to the prompt's ids (which carry the
model's BOS). The ids scored are the tokenizer's reading of the continuation as written, leading
space included, and they are the ones the failure text and `details` show. (lm-evaluation-harness
instead tokenizes prompt + continuation as one text and splits it; the two differ only where the
tokenizer would merge across the seam.)

Batching: each case gives one row per continuation of two or more tokens, prompt + continuation
without its last token (the last token is read, never fed); a one-token continuation needs only
the distribution after the prompt, which the answer's row already has. Rows run right-padded, one
forward pass per batch: under causal attention a position never sees the padding after it, so
every position read gets the logits it would get alone (tested: batched == one at a time == plain
transformers).

Greedy: greedy decoding reproduces the answer iff at each of its positions the answer's token is
the strict argmax under teacher forcing (by induction, the prefix fed is then what greedy decoding
would have fed), so it comes from the same forward pass; ties count against the answer, as ranks
do. When greedy decoding first leaves the answer at token k, it has produced answer[:k] and the
argmax at k; the rest is generated greedily (`seqprobe.engine.scoring.greedy_tokens`, only for those cases) so the
failure text can show what the model says instead.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from seqprobe.engine.scoring import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_TOP_K,
    Completion,
    TokenScore,
    continuation_token_ids,
    greedy_tokens,
    model_name_of,
    prompt_token_ids,
)
from seqprobe.errors import TokenizationError

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

__all__ = [
    "ContinuationScore",
    "PreparedCompletion",
    "ScoredCompletion",
    "TokenStep",
    "prepare_completion",
    "score_continuations",
]


@dataclass(frozen=True)
class TokenStep:
    """One token of a continuation, read where the model predicts it, with the true tokens before it fed."""

    token: str
    token_id: int
    logprob: float
    # 1 = greedy decoding's choice here: strictly ahead of every other token (ties count against).
    rank: int
    # The raw logit, whose offset means nothing alone; kept so that a one-token answer's lead over
    # a one-token distractor is their very logit difference (`ScoredCompletion.logprob_diffs`).
    logit: float

    def to_json(self) -> dict[str, object]:
        return {"token": self.token, "token_id": self.token_id, "logprob": self.logprob, "rank": self.rank}


@dataclass(frozen=True)
class ContinuationScore:
    """A continuation's teacher-forced score after a prompt, token by token."""

    text: str
    steps: tuple[TokenStep, ...]

    @property
    def logprob(self) -> float:
        """log p(continuation | prompt): the sum of its tokens' log-probs."""
        return math.fsum(step.logprob for step in self.steps)

    @property
    def mean_logprob(self) -> float:
        """Per token: compares continuations of different lengths without favouring the short ones."""
        return self.logprob / len(self.steps)

    @property
    def prob(self) -> float:
        """The probability of the whole continuation, exp(logprob)."""
        return math.exp(self.logprob)

    @property
    def tokens(self) -> tuple[str, ...]:
        return tuple(step.token for step in self.steps)

    @property
    def first_miss(self) -> int | None:
        """The first token greedy decoding would not pick; None when greedy decoding gives this continuation."""
        return next((j for j, step in enumerate(self.steps) if step.rank != 1), None)

    def to_json(self) -> dict[str, object]:
        return {
            "text": self.text,
            "logprob": self.logprob,
            "mean_logprob": self.mean_logprob,
            "tokens": [step.to_json() for step in self.steps],
        }


@dataclass(frozen=True)
class PreparedCompletion:
    """A completion case tokenized for one model: the prompt with BOS, each continuation on its own without."""

    prompt: str
    token_ids: tuple[int, ...]
    answer: str
    answer_ids: tuple[int, ...]
    distractors: tuple[str, ...]
    distractor_ids: tuple[tuple[int, ...], ...]
    # The tokenizer's spelling of each id above, for tables and messages.
    prompt_tokens: tuple[str, ...]
    answer_tokens: tuple[str, ...]
    distractor_tokens: tuple[tuple[str, ...], ...]


def prepare_completion(
    bridge: TransformerBridge, prompt: str, answer: str, distractors: Sequence[str], *, where: str
) -> PreparedCompletion:
    """Tokenize one case; a TokenizationError (naming `where`) for an empty continuation or an over-long case."""

    def spell(ids: Sequence[int]) -> tuple[str, ...]:
        return tuple(bridge.to_string([i]) for i in ids)

    token_ids = tuple(prompt_token_ids(bridge, prompt, where=where))
    answer_ids = continuation_token_ids(bridge, answer, role="answer", where=where)
    distractor_ids = tuple(continuation_token_ids(bridge, d, role="distractor", where=where) for d in distractors)
    longest = max((answer_ids, *distractor_ids), key=len)
    # The last token is read, never fed.
    fed, n_ctx = len(token_ids) + len(longest) - 1, bridge.cfg.n_ctx
    if fed > n_ctx:
        text = answer if longest is answer_ids else distractors[distractor_ids.index(longest)]
        raise TokenizationError(
            f"{where}: the prompt ({len(token_ids)} tokens) and {text!r} ({len(longest)} tokens) feed {fed} "
            f"positions, over {model_name_of(bridge)}'s context of {n_ctx}; shorten them"
        )
    return PreparedCompletion(
        prompt=prompt,
        token_ids=token_ids,
        answer=answer,
        answer_ids=answer_ids,
        distractors=tuple(distractors),
        distractor_ids=distractor_ids,
        prompt_tokens=spell(token_ids),
        answer_tokens=spell(answer_ids),
        distractor_tokens=tuple(spell(ids) for ids in distractor_ids),
    )


@dataclass(frozen=True)
class ScoredCompletion:
    """A completion case scored: its answer and distractors as continuations, and the next-token view."""

    prompt: str
    prompt_tokens: tuple[str, ...]
    answer: ContinuationScore
    distractors: tuple[ContinuationScore, ...]
    # The distribution after the prompt, seen from the answer's first token (and the one-token
    # distractors): exactly the one-token view of `seqprobe.engine.scoring` for a one-token case.
    next_token: Completion
    # What greedy decoding produces for as many tokens as the answer has (the answer's own ids
    # when it reproduces the answer), and its text.
    greedy_ids: tuple[int, ...]
    greedy_tokens: tuple[str, ...]
    greedy_text: str

    @property
    def one_token(self) -> bool:
        """The answer and every distractor are one token: the next-token bars and metrics apply."""
        return all(len(c.steps) == 1 for c in (self.answer, *self.distractors))

    @property
    def greedy(self) -> bool:
        return self.answer.first_miss is None

    @property
    def logprob_diffs(self) -> dict[str, float]:
        """The answer's log-prob minus each distractor's; for two single tokens, their logit difference."""
        return {
            d.text: (
                self.answer.steps[0].logit - d.steps[0].logit
                if len(self.answer.steps) == len(d.steps) == 1
                else self.answer.logprob - d.logprob
            )
            for d in self.distractors
        }

    @property
    def min_logprob_diff(self) -> float | None:
        """The answer's lead over its closest distractor; None without distractors."""
        return min(self.logprob_diffs.values()) if self.distractors else None

    def metrics(self) -> dict[str, float]:
        """What baselines compare; rank and logit_diff only where the answer (and distractors) are one token.

        With one-token answer and distractors, logprob_diff *is* logit_diff (the normalizer
        cancels), so it is recorded once, under the name baselines have always used.
        """
        metrics = {"p_answer": self.answer.prob}
        if len(self.answer.steps) == 1:
            metrics["rank"] = float(self.next_token.rank)
        if self.one_token and self.next_token.min_logit_diff is not None:
            metrics["logit_diff"] = self.next_token.min_logit_diff
        metrics["logprob"] = self.answer.logprob
        if self.min_logprob_diff is not None and "logit_diff" not in metrics:
            metrics["logprob_diff"] = self.min_logprob_diff
        return metrics

    def to_json(self) -> dict[str, object]:
        """The case's `details`: every continuation's per-token scores, greedy decoding's output, the top k."""
        return {
            "prompt_tokens": list(self.prompt_tokens),
            "answer": self.answer.to_json(),
            "distractors": [d.to_json() for d in self.distractors],
            "greedy": {
                "text": self.greedy_text,
                "tokens": list(self.greedy_tokens),
                "token_ids": list(self.greedy_ids),
                "reproduces_answer": self.greedy,
            },
            "top_k": [score.to_json() for score in self.next_token.top_k],
        }


@dataclass(frozen=True)
class _Row:
    """One row of a forward pass, and the (position, token id) pairs read from it."""

    token_ids: tuple[int, ...]
    reads: tuple[tuple[int, int], ...]
    # Whether to keep the top k of the distribution at the first position read (the answer's rows).
    top: bool = False


# Per (position, token id) read: (logit, logprob, rank, argmax id at that position).
_Step = tuple[float, float, int, int]


def _teacher_forced(
    bridge: TransformerBridge, rows: Sequence[_Row], *, batch_size: int, top_k: int
) -> list[tuple[list[_Step], list[tuple[int, float, float]]]]:
    """Each row's reads, and for a `top` row the top k (id, logit, prob) at its first read."""
    import torch

    from seqprobe.engine.prompt_tree import read_logits

    out: list[tuple[list[_Step], list[tuple[int, float, float]]]] = []
    with torch.inference_mode():
        # Batches bound the [read d_vocab] logits held at once; within one, prompts share their prefixes.
        for start in range(0, len(rows), batch_size):
            batch = rows[start : start + batch_size]
            read = read_logits(
                bridge,
                [row.token_ids for row in batch],
                [[position for position, _ in row.reads] for row in batch],
                batch_size=batch_size,
            )  # [read d_vocab]
            target = torch.tensor([token for row in batch for _, token in row.reads])  # [read]
            chosen = read.gather(-1, target[:, None])[:, 0]  # [read]
            normalizer = read.logsumexp(dim=-1)  # [read]
            rank = (read >= chosen[:, None]).sum(dim=-1)  # [read]
            steps = list(
                zip(
                    chosen.tolist(),
                    (chosen - normalizer).tolist(),
                    rank.tolist(),
                    read.argmax(dim=-1).tolist(),
                    strict=True,
                )
            )
            offset = 0
            for row in batch:
                top = []
                if row.top:
                    best = read[offset].topk(min(top_k, read.shape[-1]))
                    probs = (best.values - normalizer[offset]).exp()  # [k]
                    top = list(zip(best.indices.tolist(), best.values.tolist(), probs.tolist(), strict=True))
                out.append((steps[offset : offset + len(row.reads)], top))
                offset += len(row.reads)
    return out


def score_continuations(
    bridge: TransformerBridge,
    prepared: Sequence[PreparedCompletion],
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    top_k: int = DEFAULT_TOP_K,
) -> list[ScoredCompletion]:
    """Score each case's answer and distractors as continuations: one batched forward per batch of rows,
    then greedy decoding, batched, for the multi-token answers it does not reproduce."""
    rows: list[_Row] = []
    for item in prepared:
        first = len(item.token_ids) - 1
        # One-token distractors are read where the answer's first token is, from the answer's row.
        singles = [(first, ids[0]) for ids in item.distractor_ids if len(ids) == 1]
        answer_reads = [(first + j, token) for j, token in enumerate(item.answer_ids)]
        rows.append(_Row(item.token_ids + item.answer_ids[:-1], (*answer_reads, *singles), top=True))
        rows.extend(
            _Row(item.token_ids + ids[:-1], tuple((first + j, token) for j, token in enumerate(ids)))
            for ids in item.distractor_ids
            if len(ids) > 1
        )
    reads = iter(_teacher_forced(bridge, rows, batch_size=batch_size, top_k=top_k))
    parts: list[tuple[ContinuationScore, tuple[ContinuationScore, ...], Completion]] = []
    greedy: list[tuple[int, ...]] = []
    for item in prepared:
        answer_steps, top = next(reads)
        single_steps = answer_steps[len(item.answer_ids) :]
        answer = _continuation(item.answer, item.answer_ids, item.answer_tokens, answer_steps[: len(item.answer_ids)])
        distractors = tuple(
            _continuation(text, ids, pieces, [single_steps.pop(0)] if len(ids) == 1 else next(reads)[0])
            for text, ids, pieces in zip(item.distractors, item.distractor_ids, item.distractor_tokens, strict=True)
        )
        next_token = Completion(
            prompt=item.prompt,
            prompt_tokens=item.prompt_tokens,
            answer=_token_score(answer.steps[0], item.answer if len(answer.steps) == 1 else None),
            rank=answer.steps[0].rank,
            distractors=tuple(_token_score(d.steps[0], d.text) for d in distractors if len(d.steps) == 1),
            top_k=tuple(TokenScore(bridge.to_string([i]), i, logit, prob) for i, logit, prob in top),
        )
        parts.append((answer, distractors, next_token))
        miss = answer.first_miss
        # Greedy decoding agrees with the answer up to its first miss, and takes the argmax there.
        greedy.append(item.answer_ids if miss is None else (*item.answer_ids[:miss], answer_steps[miss][3]))
    unfinished = [i for i, item in enumerate(prepared) if len(greedy[i]) < len(item.answer_ids)]
    generated = greedy_tokens(
        bridge,
        [prepared[i].token_ids + greedy[i] for i in unfinished],
        max_new_tokens=[len(prepared[i].answer_ids) - len(greedy[i]) for i in unfinished],
        batch_size=batch_size,
    )
    for i, more in zip(unfinished, generated, strict=True):
        greedy[i] += more
    return [
        ScoredCompletion(
            prompt=item.prompt,
            prompt_tokens=item.prompt_tokens,
            answer=answer,
            distractors=distractors,
            next_token=next_token,
            greedy_ids=ids,
            greedy_tokens=tuple(bridge.to_string([i]) for i in ids),
            greedy_text=bridge.to_string(list(ids)),
        )
        for item, (answer, distractors, next_token), ids in zip(prepared, parts, greedy, strict=True)
    ]


def _token_score(step: TokenStep, text: str | None) -> TokenScore:
    """A one-token view of `step`, under the case's own spelling `text` when it is one token."""
    return TokenScore(step.token if text is None else text, step.token_id, step.logit, math.exp(step.logprob))


def _continuation(text: str, ids: Sequence[int], pieces: Sequence[str], steps: Sequence[_Step]) -> ContinuationScore:
    return ContinuationScore(
        text,
        tuple(
            TokenStep(piece, token_id, logprob, rank, logit)
            for piece, token_id, (logit, logprob, rank, _) in zip(pieces, ids, steps, strict=True)
        ),
    )
