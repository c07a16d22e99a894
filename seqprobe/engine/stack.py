"""The stacked batch of patch configurations, its chunks under a lane budget, and its buffers by start.

A sweep's configurations join the resumed batch at the sublayer where their patch applies
(`Entry`); all of them run stacked, layer by layer, so that matrix products are large. Under a
memory budget (seqprobe.engine.memory) the entries are cut into chunks of at most `max_lanes`
lanes — configuration × pair × computed position — that run one after another.

Within a chunk, the configurations that compute the same positions start.. share one buffer
(`StartGroup`), allocated once and ordered by the stage at which each joins: the configurations in
flight at a stage are a prefix of its rows, each sublayer adds its update to them in place, and a
configuration joins by a count growing, not by concatenating the batch again. So the number of
operations per stage depends on how many distinct starts are in flight (at most the prompt's
length), not on how many configurations there are.

What a patch sees of one attention sublayer (`AttentionStep`) and what it may change there
(`LayerPatch`: heads patched together, a path's receivers) are defined here too, below both the
resumed run (seqprobe.engine.resume) and the patches (head_patches, path_patching).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import torch
from jaxtyping import Float, Int
from torch import Tensor

if TYPE_CHECKING:
    from seqprobe.engine.forward import ResumableForward

__all__ = ["AttentionStep", "Entry", "LayerPatch", "StartGroup", "chunks", "group_by_start"]


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


def chunks(entries: Iterable[Entry], max_lanes: int) -> Iterator[list[Entry]]:
    """`entries` in order, split into stacks of at most `max_lanes` lanes (configuration × pair × position).

    An entry with more configurations than fit is split by configuration; a single configuration
    that is over the budget by itself runs alone. Lazy: a stack is handed on as soon as it is full,
    so entries built on demand exist only one stack (and the entry being cut) at a time.
    """
    stack: list[Entry] = []
    lanes = 0
    for entry in entries:
        per_config = entry.resid.shape[1] * entry.resid.shape[2]
        step = max(1, max_lanes // per_config)
        for first in range(0, entry.resid.shape[0], step):
            part = Entry(entry.stage, entry.start, entry.resid[first : first + step], entry.cells[first : first + step])
            size = part.resid.shape[0] * per_config
            if stack and lanes + size > max_lanes:
                yield stack
                stack, lanes = [], 0
            stack.append(part)
            lanes += size
    if stack:
        yield stack


@dataclass(frozen=True)
class StartGroup:
    """The configurations that compute positions `start`.., in one buffer, in the order they join."""

    start: int
    # Updated in place as the run goes; rows [:joined(stage)] are the configurations in flight.
    resid: Float[Tensor, "config pair pos d_model"]
    # Each row's stage, ascending.
    stages: tuple[int, ...]
    # Each row's index in the entries' concatenated configurations, where its metric goes.
    rows: Int[Tensor, " config"]

    def joined(self, stage: int) -> int:
        """How many configurations are in flight at `stage` (those that joined there or earlier)."""
        return bisect_right(self.stages, stage)


def group_by_start(entries: Sequence[Entry]) -> list[StartGroup]:
    """The entries' configurations by start, each group's rows copied once into a buffer of its own.

    The copy also keeps the run from writing into the entries, which may be views of a cached run.
    """
    offsets = [0]
    for entry in entries:
        offsets.append(offsets[-1] + entry.resid.shape[0])
    by_start: dict[int, list[int]] = {}
    for i, entry in enumerate(entries):
        by_start.setdefault(entry.start, []).append(i)
    groups = []
    for start, members in by_start.items():
        members.sort(key=lambda i: entries[i].stage)  # stable: equal stages keep the entries' order
        groups.append(
            StartGroup(
                start=start,
                resid=torch.cat([entries[i].resid for i in members]),  # [config pair pos d_model]
                stages=tuple(entries[i].stage for i in members for _ in range(entries[i].resid.shape[0])),
                rows=torch.tensor([row for i in members for row in range(offsets[i], offsets[i + 1])]),
            )
        )
    return groups


@dataclass(frozen=True)
class AttentionStep:
    """One attention sublayer of a resumed batch, as a patch at that layer sees it (rows: config × pair)."""

    layer: int
    # The first position computed, and the first whose query runs (later in the last block).
    start: int
    q_start: int
    n_config: int
    # The stream entering the sublayer at positions start.. .
    resid: Float[Tensor, "row pos d_model"]
    # The run's own queries (positions q_start..), keys and values (positions start..), and attention.
    q: Float[Tensor, "row head q_pos d_head"]
    k: Float[Tensor, "row kv_head pos d_head"]
    v: Float[Tensor, "row kv_head pos d_head"]
    pattern: Float[Tensor, "row head q_pos k_pos"]
    # The target's keys and values before `start`, shared by every configuration.
    prefix_k: Float[Tensor, "pair kv_head prefix d_head"]
    prefix_v: Float[Tensor, "pair kv_head prefix d_head"]


class LayerPatch(Protocol):
    """What a resumed run changes at some layers' attention sublayer: heads' outputs, rewritten in place."""

    @property
    def layers(self) -> Collection[int]: ...

    def rewrite(
        self, forward: ResumableForward, step: AttentionStep, z: Float[Tensor, "row q_pos head d_head"]
    ) -> None: ...
