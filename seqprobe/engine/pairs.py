"""Clean/corrupted prompt pairs, tokenized and checked: the unit every patching experiment runs on.

Clean and corrupted prompts must have the same number of tokens, so that a position means the
same slot in both runs; the two tokens the metric compares are fixed per pair.
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
    answer_id: int
    # Scored against the answer in the clean, corrupted and patched runs alike.
    distractor_id: int

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


def make_pair(
    bridge: TransformerBridge, *, clean: str, corrupted: str, answer: str, distractor: str, where: str = "patching"
) -> PatchingPair:
    """Tokenize a pair as the bridge does (with its BOS); PatchingError if the lengths differ."""
    from seqprobe.engine.scoring import prompt_token_ids, single_token_id

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
        answer_id=single_token_id(bridge, answer, role="answer", where=where),
        distractor_id=single_token_id(bridge, distractor, role="distractor", where=where),
    )


def _pieces(bridge: TransformerBridge, ids: Sequence[int]) -> list[str]:
    return [bridge.to_string([i]) for i in ids]
