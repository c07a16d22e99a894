"""The one metric every patching grid and linear view is scored on, and recovery, its normalized form.

    metric   = logit(answer) − logit(distractor) at the final position, averaged over the pairs
    recovery = (patched − corrupted) / (clean − corrupted)

The *same* function (`logit_diff`) scores the clean, the corrupted and every patched run, with each
pair's distractor fixed for all three; a patched run read with another metric than its two ends
would make recovery measure the difference between metrics instead of the patch. The metric is
computed in float32 whatever the model's dtype, so that half-precision models are compared on the
same scale as their float32 baselines. Recovery is undefined when clean ≈ corrupted: `recovery`
raises instead of dividing by almost zero.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from jaxtyping import Float, Int
from torch import Tensor

from seqprobe.errors import PatchingError

if TYPE_CHECKING:
    from seqprobe.engine.forward import ResumableForward, Run
    from seqprobe.engine.pairs import PatchingPair

__all__ = [
    "DEFAULT_MIN_GAP",
    "check_gap",
    "logit_diff",
    "logit_diff_metric",
    "pair_token_ids",
    "recovery",
    "run_metric",
]

# Below this |clean − corrupted| (in logits), recovery is reported as undefined.
DEFAULT_MIN_GAP = 1e-2


def logit_diff(
    answer_logits: Float[Tensor, "*cell pair"], distractor_logits: Float[Tensor, "*cell pair"]
) -> Float[Tensor, "*cell"]:
    """THE metric: logit(answer) − logit(distractor), averaged over the pairs; float32 whatever the model's dtype."""
    return (answer_logits.float() - distractor_logits.float()).mean(dim=-1)


def pair_token_ids(pairs: Sequence[PatchingPair]) -> Int[Tensor, "pair 2"]:
    """Each pair's (answer, distractor): the two rows of the unembedding the metric reads."""
    return torch.tensor([[p.answer_id, p.distractor_id] for p in pairs])


def logit_diff_metric(logits: Float[Tensor, "pair pos vocab"], pairs: Sequence[PatchingPair]) -> Float[Tensor, ""]:
    """`logit_diff` read from full logits at the final position (the form transformer_lens's sweeps call)."""
    final = logits[:, -1]  # [pair vocab]
    ids = pair_token_ids(pairs).to(final.device)
    return logit_diff(final.gather(-1, ids[:, :1])[:, 0], final.gather(-1, ids[:, 1:])[:, 0])


def run_metric(forward: ResumableForward, run: Run, token_ids: Int[Tensor, "pair 2"]) -> Float[Tensor, ""]:
    """`logit_diff` of a cached run, from its final residual stream (two logits per pair, not the vocabulary)."""
    logits = forward.unembed(run.resid_final[:, -1], token_ids)  # [pair 2]
    return logit_diff(logits[..., 0], logits[..., 1])


def recovery(
    patched: Float[Tensor, "*cell"], *, clean: float, corrupted: float, min_gap: float = DEFAULT_MIN_GAP
) -> Float[Tensor, "*cell"]:
    """(patched − corrupted) / (clean − corrupted); PatchingError when clean ≈ corrupted."""
    check_gap(clean, corrupted, min_gap=min_gap)
    return (patched - corrupted) / (clean - corrupted)


def check_gap(clean: float, corrupted: float, *, min_gap: float = DEFAULT_MIN_GAP) -> None:
    """PatchingError, with what to change in the case, when recovery would divide by almost zero."""
    if not abs(clean - corrupted) >= min_gap:
        raise PatchingError(
            f"recovery is undefined: clean metric {clean:.4f} and corrupted metric {corrupted:.4f} differ by "
            f"{abs(clean - corrupted):.4f}, less than min_gap={min_gap:g}, so (patched − corrupted) / (clean − corrupted) "
            "would divide by almost zero. Choose a corrupted prompt that moves the model towards the distractor "
            "(its metric should be well below the clean one), or a distractor the corrupted prompt favours"
        )
