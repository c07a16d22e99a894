"""Path patching into the logits: the senders' write read by the unembedding directly, not by later layers.

The receiver of this path is the logits themselves (`LOGITS` in seqprobe.vocabulary.circuits). The
senders' clean − corrupted write D (seqprobe.engine.path_patching) is added to the corrupted run's
final residual stream as the unembedding sees it, through the final norm *frozen at the corrupted
run's scale* (`ResumableForward.frozen_final_norm`, as direct logit attribution reads components),
and nothing else changes:

    normed = final_norm(resid_final_corr) + frozen_final_norm(D)       [pair read d_model]

then the readout reads `normed`: two unembedding rows (soft-capped on Gemma) for one-token answers,
the whole vocabulary's log-probabilities for continuations. No layer after the senders sees D, so
this is what the senders write *directly* to the answer. transformer_lens has no function for it;
the tests compare it with a TransformerBridge rerun that adds D at the last block's
`hook_resid_post` and holds `ln_final.hook_scale` at the corrupted run's.

`path_logits_grid` computes it for every head alone as the sender, [layer head pair]: one batched
attention output per layer at the read positions, no resumed run; circuits rank heads by it.
"""

from __future__ import annotations

from collections.abc import Collection

import torch
from jaxtyping import Float
from torch import Tensor

from seqprobe.engine.forward import ResumableForward, Run
from seqprobe.engine.metric import Readout
from seqprobe.engine.path_patching import head_write_differences, path_writes

__all__ = ["path_logits_grid", "path_logits_metric"]


def path_logits_metric(
    forward: ResumableForward, *, source: Run, target: Run, senders: Collection[tuple[int, int]], readout: Readout
) -> Float[Tensor, " pair"]:
    """Each pair's metric of `target`'s run with the senders' write D added to what the unembedding reads."""
    writes = path_writes(forward, source=source, target=target, senders=senders)[:, readout.first :]
    return _read_with_writes(forward, target, readout, writes[:, :, None])[0]  # [row read 1 d_model] -> [pair]


def path_logits_grid(
    forward: ResumableForward, *, source: Run, target: Run, readout: Readout
) -> Float[Tensor, "layer head pair"]:
    """Each pair's metric with each head alone as the sender of a path into the logits."""
    heads = torch.arange(forward.n_heads)[:, None]  # [config column]: each head alone
    read = slice(readout.first, None)
    writes = torch.cat(
        [
            head_write_differences(forward, source=source, target=target, layer=layer, columns=heads, positions=read)
            .to(forward.device)
            .movedim(0, 2)  # [head row read d_model] -> [row read head d_model]
            for layer in range(forward.n_layers)
        ],
        dim=2,
    )  # [row read layer*head d_model]
    metric = _read_with_writes(forward, target, readout, writes)  # [layer*head pair]
    return metric.view(forward.n_layers, forward.n_heads, -1)


def _read_with_writes(
    forward: ResumableForward, target: Run, readout: Readout, writes: Float[Tensor, "row read config d_model"]
) -> Float[Tensor, "config pair"]:
    """The readout of `target`'s final stream with each configuration's write added through the frozen final norm."""
    total = target.resid_final[:, readout.first :].to(forward.device)  # [row read d_model]
    frozen, _ = forward.frozen_final_norm(writes, total)  # [row read config d_model]; the constant is in final_norm
    normed = forward.final_norm(total)[:, :, None] + frozen  # [row read config d_model]
    return readout.per_pair(forward, normed.movedim(2, 0), normed=True)  # [config row read d_model] in
