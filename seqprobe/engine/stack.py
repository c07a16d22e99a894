"""The stacked batch of patch configurations, and its chunks under a lane budget.

A sweep's configurations join the resumed batch at the sublayer where their patch applies
(`Entry`); all of them run stacked, layer by layer, so that matrix products are large. Under a
memory budget (seqprobe.engine.memory) the entries are cut into chunks of at most `max_lanes`
lanes — configuration × pair × computed position — that run one after another.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from jaxtyping import Float, Int
from torch import Tensor

__all__ = ["Entry", "chunks"]


@dataclass(frozen=True)
class Entry:
    """Patch configurations that join the batched run at one sublayer, computing positions `start`.. ."""

    # 2*layer: the attention sublayer of `layer`; 2*layer+1: its MLP; 2*n_layers: the final norm.
    stage: int
    start: int
    # The residual stream entering `stage` at positions start.., one row per configuration.
    resid: Float[Tensor, "config pair pos d_model"]
    # Where each configuration's metric goes in the flattened [layer column] grid.
    cells: Int[Tensor, " config"]


def chunks(entries: Sequence[Entry], max_lanes: int) -> list[list[Entry]]:
    """`entries` in order, split into stacks of at most `max_lanes` lanes (configuration × pair × position).

    An entry with more configurations than fit is split by configuration; a single configuration
    that is over the budget by itself runs alone.
    """
    stacks: list[list[Entry]] = [[]]
    lanes = 0
    for entry in entries:
        per_config = entry.resid.shape[1] * entry.resid.shape[2]
        step = max(1, max_lanes // per_config)
        for first in range(0, entry.resid.shape[0], step):
            part = Entry(entry.stage, entry.start, entry.resid[first : first + step], entry.cells[first : first + step])
            size = part.resid.shape[0] * per_config
            if stacks[-1] and lanes + size > max_lanes:
                stacks.append([])
                lanes = 0
            stacks[-1].append(part)
            lanes += size
    return stacks
