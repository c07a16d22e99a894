"""Clean/corrupted prompt pairs, tokenized and checked: the unit every patching experiment runs on.

Clean and corrupted prompts must have the same number of tokens, so that a position means the
same slot in both runs; the answer and distractor the metric compares are fixed per pair. Either
may be several tokens: the metric is then their teacher-forced log-probabilities after the prompt
(seqprobe.engine.metric's `ContinuationReadout`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from jaxtyping import Int
from torch import Tensor

from seqprobe.errors import PatchingError

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

__all__ = ["PatchingPair", "make_pair"]


@dataclass(frozen=True)
class PatchingPair:
    """One clean/corrupted prompt pair, tokenized, with the two tokens the metric compares."""

    clean: Int[Tensor, " pos"]
    corrupted: Int[Tensor, " pos"]
    # The answer's token ids, as a continuation of the prompt (one id for a one-token answer).
    answer_ids: tuple[int, ...]
    # Scored against the answer in the clean, corrupted and patched runs alike.
    distractor_ids: tuple[int, ...]

    @property
    def answer_id(self) -> int:
        """The answer's one token; PatchingError for a longer answer (views that read one logit need one)."""
        return _one_token(self.answer_ids, "answer")

    @property
    def distractor_id(self) -> int:
        return _one_token(self.distractor_ids, "distractor")

    def __post_init__(self) -> None:
        if self.clean.ndim != 1 or self.corrupted.ndim != 1:
            raise PatchingError(
                f"a PatchingPair holds one prompt's token ids each (1-D), got clean.shape={tuple(self.clean.shape)}, "
                f"corrupted.shape={tuple(self.corrupted.shape)}"
            )
        if self.clean.shape != self.corrupted.shape:
            raise PatchingError(
                f"clean and corrupted prompts must have the same number of tokens, so that a position means the "
                f"same slot in both runs: clean has {self.clean.numel()} {self.clean.tolist()}, corrupted has "
                f"{self.corrupted.numel()} {self.corrupted.tolist()}"
            )
        if not self.answer_ids or not self.distractor_ids:
            raise PatchingError(
                f"a pair's answer and distractor are at least one token each, got answer_ids={self.answer_ids}, "
                f"distractor_ids={self.distractor_ids}"
            )


def _one_token(ids: tuple[int, ...], role: str) -> int:
    if len(ids) != 1:
        raise PatchingError(
            f"this view reads the {role}'s one logit at the final position, but the {role} is {len(ids)} tokens "
            f"{list(ids)}; it is defined for one-token answers and distractors only (patching sweeps accept longer ones)"
        )
    return ids[0]


def make_pair(
    bridge: TransformerBridge, *, clean: str, corrupted: str, answer: str, distractor: str, where: str = "patching"
) -> PatchingPair:
    """Tokenize a pair as the bridge does (with its BOS); PatchingError if the prompts' lengths differ.

    The answer and distractor are tokenized on their own, without BOS, as completion cases do.
    """
    from seqprobe.engine.scoring import continuation_token_ids, prompt_token_ids

    clean_ids = prompt_token_ids(bridge, clean, where=where)
    corrupted_ids = prompt_token_ids(bridge, corrupted, where=where)
    if len(clean_ids) != len(corrupted_ids):
        raise PatchingError(
            f"{where}: clean and corrupted prompts must tokenize to the same length, so that a position means the "
            f"same slot in both runs: clean {clean!r} is {len(clean_ids)} tokens {_pieces(bridge, clean_ids)}, "
            f"corrupted {corrupted!r} is {len(corrupted_ids)} tokens {_pieces(bridge, corrupted_ids)}; substitute "
            "words that are the same number of tokens"
        )
    return PatchingPair(
        clean=torch.tensor(clean_ids),
        corrupted=torch.tensor(corrupted_ids),
        answer_ids=continuation_token_ids(bridge, answer, role="answer", where=where),
        distractor_ids=continuation_token_ids(bridge, distractor, role="distractor", where=where),
    )


def _pieces(bridge: TransformerBridge, ids: Sequence[int]) -> list[str]:
    return [bridge.to_string([i]) for i in ids]
