"""The one metric every patching grid and linear view is scored on, and recovery, its normalized form.

    metric   = score(answer) − score(distractor), averaged over the pairs
    recovery = (patched − corrupted) / (clean − corrupted)

With one-token answers and distractors the score is the logit at the prompt's final position (the
logit difference, as in transformer_lens); when either has more tokens it is the continuation's
teacher-forced log-probability, the sum of its tokens' log-probs after the prompt — for one-token
continuations the two differences are equal, as the log-softmax's normalizer cancels. A `Readout`
says which, and where the final residual stream is read.

The *same* readout scores the clean, the corrupted and every patched run, with each pair's
distractor fixed for all three; a patched run read with another metric than its two ends would make
recovery measure the difference between metrics instead of the patch. Readouts give one value per
pair, so that intervals can resample the pairs; the metric is their mean. It is computed in float32
whatever the model's dtype, so half-precision models are compared on the same scale as their
float32 baselines. Recovery is undefined when clean ≈ corrupted: `recovery` raises instead of
dividing by almost zero.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from seqprobe.errors import PatchingError

if TYPE_CHECKING:
    from seqprobe.engine.forward import ResumableForward, Run
    from seqprobe.engine.pairs import PatchingPair

__all__ = [
    "DEFAULT_MIN_GAP",
    "ContinuationReadout",
    "NextTokenReadout",
    "Readout",
    "check_gap",
    "logit_diff",
    "logit_diff_metric",
    "pair_token_ids",
    "readout_for",
    "readout_rows",
    "recovery",
    "run_metric",
]

# Below this |clean − corrupted| (in logits), recovery is reported as undefined.
DEFAULT_MIN_GAP = 1e-2
# Full-vocabulary logits are computed for at most this many values at once (4 bytes each: 256 MiB).
_LOGIT_BUDGET = 2**26


def logit_diff(
    answer_logits: Float[Tensor, "*cell pair"], distractor_logits: Float[Tensor, "*cell pair"]
) -> Float[Tensor, "*cell"]:
    """logit(answer) − logit(distractor), averaged over the pairs; float32 whatever the model's dtype."""
    return (answer_logits.float() - distractor_logits.float()).mean(dim=-1)


def pair_token_ids(pairs: Sequence[PatchingPair]) -> Int[Tensor, "pair 2"]:
    """Each pair's (answer, distractor): the two rows of the unembedding the metric reads."""
    return torch.tensor([[p.answer_id, p.distractor_id] for p in pairs])


@dataclass(frozen=True)
class NextTokenReadout:
    """One-token answers: logit(answer) − logit(distractor) at the prompt's final position.

    The rows of a run are the pairs' prompts; only two rows of the unembedding are read.
    """

    token_ids: Int[Tensor, "pair 2"]
    # The one position read: the prompt's last.
    first: int

    @property
    def n_pairs(self) -> int:
        return self.token_ids.shape[0]

    def to(self, device: torch.device) -> NextTokenReadout:
        return replace(self, token_ids=self.token_ids.to(device))

    def per_pair(
        self, forward: ResumableForward, resid: Float[Tensor, "*config row read d_model"], *, normed: bool = False
    ) -> Float[Tensor, "*config pair"]:
        """Each pair's metric from the stream at the read positions (`normed`: already past the final norm)."""
        logits = forward.unembed(resid[..., -1, :], self.token_ids, normed=normed)  # [*config pair 2]
        return logits[..., 0].float() - logits[..., 1].float()

    def describe(self, n_pairs: int) -> str:
        return f"logit(answer) − logit(distractor) at the final position, averaged over {n_pairs} pair(s)"


@dataclass(frozen=True)
class ContinuationReadout:
    """Answers or distractors of several tokens: log p(answer) − log p(distractor), teacher-forced.

    Each pair runs as two rows, prompt + answer and prompt + distractor (each without its last
    token, which is only predicted), right-padded to one width: under causal attention padding
    after a token never changes it. Row 2i is pair i's answer, row 2i+1 its distractor. The read
    positions start at the prompt's last token; `targets[row, j]` is the token predicted at
    position first + j, and `mask` marks those that belong to the row's continuation.
    """

    targets: Int[Tensor, "row read"]
    mask: Bool[Tensor, "row read"]
    first: int

    @property
    def n_pairs(self) -> int:
        return self.targets.shape[0] // 2

    def to(self, device: torch.device) -> ContinuationReadout:
        return replace(self, targets=self.targets.to(device), mask=self.mask.to(device))

    def per_pair(
        self, forward: ResumableForward, resid: Float[Tensor, "*config row read d_model"], *, normed: bool = False
    ) -> Float[Tensor, "*config pair"]:
        """Each pair's metric from the stream at the read positions (`normed`: already past the final norm)."""
        rows, n_read = self.targets.shape
        resid = resid[..., :n_read, :]
        flat = resid.reshape(-1, rows, n_read, resid.shape[-1])  # [config row read d_model]
        chunk = max(1, _LOGIT_BUDGET // (rows * n_read * forward.vocab_size))
        scores = torch.cat(
            [
                self.row_logprobs(forward.logits(flat[i : i + chunk], normed=normed))
                for i in range(0, flat.shape[0], chunk)
            ]
        )  # [config row]
        scores = scores.view(*resid.shape[:-3], rows // 2, 2)  # [*config pair 2]
        return scores[..., 0] - scores[..., 1]

    def row_logprobs(self, logits: Float[Tensor, "*config row read vocab"]) -> Float[Tensor, "*config row"]:
        """Each row's continuation log-probability from the logits at its read positions."""
        logprobs = logits.float().log_softmax(dim=-1)
        targets = self.targets.to(logits.device).expand(*logits.shape[:-1])  # [*config row read]
        picked = logprobs.gather(-1, targets[..., None])[..., 0]
        return (picked * self.mask.to(logits.device)).sum(-1)

    def describe(self, n_pairs: int) -> str:
        return (
            "log p(answer) − log p(distractor), each the sum of its tokens' teacher-forced log-probs after the "
            f"prompt, averaged over {n_pairs} pair(s)"
        )


Readout = NextTokenReadout | ContinuationReadout


def readout_for(pairs: Sequence[PatchingPair]) -> Readout:
    """The next-token readout when every answer and distractor is one token, else the continuation readout."""
    first = pairs[0].clean.numel() - 1
    if all(len(p.answer_ids) == len(p.distractor_ids) == 1 for p in pairs):
        return NextTokenReadout(token_ids=pair_token_ids(pairs), first=first)
    continuations = [ids for p in pairs for ids in (p.answer_ids, p.distractor_ids)]
    n_read = max(len(ids) for ids in continuations)
    targets = torch.tensor([list(ids) + [0] * (n_read - len(ids)) for ids in continuations])
    mask = torch.tensor([[j < len(ids) for j in range(n_read)] for ids in continuations])
    return ContinuationReadout(targets=targets, mask=mask, first=first)


def readout_rows(pairs: Sequence[PatchingPair], readout: Readout, prompts: Sequence[Tensor]) -> Int[Tensor, "row pos"]:
    """The token rows a run of `prompts` (one per pair) needs for `readout`, right-padded."""
    if isinstance(readout, NextTokenReadout):
        return torch.stack(list(prompts))
    rows = [
        torch.cat([prompt, torch.tensor(ids[:-1], dtype=prompt.dtype)])
        for prompt, pair in zip(prompts, pairs, strict=True)
        for ids in (pair.answer_ids, pair.distractor_ids)
    ]
    width = max(row.numel() for row in rows)
    # The pad value is never attended to by a position that is read, so any id will do.
    return torch.stack([torch.cat([row, row[-1:].expand(width - row.numel())]) for row in rows])


def logit_diff_metric(logits: Float[Tensor, "pair pos vocab"], pairs: Sequence[PatchingPair]) -> Float[Tensor, ""]:
    """The metric read from full logits of the rows `readout_rows` builds (the form transformer_lens's sweeps call)."""
    readout = readout_for(pairs)
    read = logits[:, readout.first :]  # [row read vocab]
    if isinstance(readout, NextTokenReadout):
        ids = readout.token_ids.to(logits.device)
        final = read[:, -1]
        return logit_diff(final.gather(-1, ids[:, :1])[:, 0], final.gather(-1, ids[:, 1:])[:, 0])
    scores = readout.row_logprobs(read[:, : readout.targets.shape[1]]).view(-1, 2)  # [pair 2]
    return (scores[:, 0] - scores[:, 1]).mean()


def run_metric(forward: ResumableForward, run: Run, readout: Readout) -> Float[Tensor, " pair"]:
    """Each pair's metric in a cached run, from its final residual stream at the read positions."""
    return readout.per_pair(forward, run.resid_final[:, readout.first :])


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
