"""Per-head patches ("z", "pattern", "v"): what a patched head outputs, written for many configurations at once.

A head patch changes only the patched heads' outputs z at the patched layer. What such a head
outputs does not depend on which configuration patches it:

- "z": the source run's z itself;
- "pattern": the source's attention pattern mixing the patched run's own values;
- "v": the patched run's own pattern mixing the source's values, for every query head of the
  key/value head's group (one value vector per key/value head, read by its whole group).

So every head's patched output is computed once, for all heads (`head_replacements`, one product),
and each configuration's heads are taken from it in one indexed write (`write_heads`): the number
of operations does not grow with the number of configurations. A sweep's configurations of one
layer start from the target's cached z (`head_entries`, on `replaced_head_entries`, which path
patching shares); heads patched together in a resumed run use the run's own pattern and values at
their layer (`HeadPatch.rewrite`, called by seqprobe.engine.resume).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from seqprobe.engine.forward import ResumableForward, Run
from seqprobe.engine.stack import Entry
from seqprobe.errors import PatchingError
from seqprobe.vocabulary.heads import format_head

if TYPE_CHECKING:
    from seqprobe.engine.stack import AttentionStep

__all__ = [
    "HeadPatch",
    "head_entries",
    "head_replacements",
    "heads_by_layer",
    "n_head_columns",
    "replaced_head_entries",
    "write_heads",
    "write_step_heads",
]


@dataclass(frozen=True)
class HeadPatch:
    """Heads whose `site` activation comes from `source` wherever the resumed run computes their layer."""

    site: str
    # layer -> its patched heads (key/value heads for "v").
    heads: Mapping[int, tuple[int, ...]]
    source: Run

    @property
    def layers(self) -> Collection[int]:
        return self.heads.keys()

    def rewrite(
        self, forward: ResumableForward, step: AttentionStep, z: Float[Tensor, "row q_pos head d_head"]
    ) -> None:
        """Write the patched heads' outputs at `step`'s layer into `z`, in place, for every configuration."""
        values = step.v
        if self.site == "pattern":
            # The run's own values at every key: [config*pair kv_head k_pos d_head] (one configuration: a small copy)
            values = torch.cat([step.prefix_v.repeat(step.n_config, 1, 1, 1), step.v], dim=2)
        replacements = head_replacements(
            forward, self.site, source=self.source, layer=step.layer, q_start=step.q_start, pattern=step.pattern,
            values=values,
        )  # fmt: skip  # [config*pair q_pos head d_head]
        write_step_heads(forward, self.site, step, z, replacements, self.heads[step.layer])


def write_step_heads(
    forward: ResumableForward,
    site: str,
    step: AttentionStep,
    z: Float[Tensor, "row q_pos head d_head"],
    replacements: Float[Tensor, "row q_pos head d_head"],
    heads: Sequence[int],
) -> None:
    """`write_heads` in a resumed batch's attention step: the same `heads` for every configuration, in place."""
    columns = torch.tensor(heads).expand(step.n_config, -1)  # [config column]
    by_config = (step.n_config, -1)  # [config*pair ...] -> [config pair ...]: views, so the write lands in z
    write_heads(forward, site, z.unflatten(0, by_config), replacements.unflatten(0, by_config), columns)


def n_head_columns(forward: ResumableForward, site: str) -> int:
    """Columns of a head site's grid: key/value heads for "v", query heads otherwise."""
    return forward.n_kv_heads if site == "v" else forward.n_heads


def heads_by_layer(
    forward: ResumableForward, site: str, heads: Collection[tuple[int, int]]
) -> dict[int, tuple[int, ...]]:
    """layer -> its heads, each once, in order; PatchingError naming every head the model lacks."""
    n_columns = n_head_columns(forward, site)
    key_value = site == "v" and n_columns != forward.n_heads
    outside = [(layer, head) for layer, head in heads if not (0 <= layer < forward.n_layers and 0 <= head < n_columns)]
    if outside:
        names = ", ".join(format_head(layer, head, key_value=key_value) for layer, head in outside)
        raise PatchingError(
            f"{site}: the model has no {names}: it has layers 0..{forward.n_layers - 1} and "
            f"{n_columns} {'key/value heads' if key_value else 'heads'} (0..{n_columns - 1}) per layer"
        )
    by_layer: dict[int, set[int]] = {}
    for layer, head in heads:
        by_layer.setdefault(layer, set()).add(head)
    return {layer: tuple(sorted(by_layer[layer])) for layer in sorted(by_layer)}


def head_replacements(
    forward: ResumableForward,
    site: str,
    *,
    source: Run,
    layer: int,
    q_start: int,
    pattern: Float[Tensor, "row head q_pos k_pos"] | None,
    values: Float[Tensor, "row kv_head k_pos d_head"],
) -> Float[Tensor, "row q_pos head d_head"]:
    """Every head's output at `layer` with its `site` activation from `source`, for queries q_start.. .

    `pattern` (needed for "v" only) and `values` are the patched run's own at `layer`, for queries
    q_start.. and every key; their rows are the source's pairs, repeated per configuration when
    the patched run's differ per configuration.
    """
    if site == "z":
        return source["z", layer][:, q_start:]
    if site == "pattern":
        weights = source["pattern", layer][:, :, q_start:]  # [pair head q_pos k_pos]
        return forward.mix(_repeat_rows(weights, values.shape[0]), values)
    assert pattern is not None, "a value patch mixes the patched run's own pattern"
    return forward.mix(pattern, _repeat_rows(source["v", layer], pattern.shape[0]))


def write_heads(
    forward: ResumableForward,
    site: str,
    z: Float[Tensor, "config pair q_pos head d_head"],
    replacements: Float[Tensor, "*config pair q_pos head d_head"],
    columns: Int[Tensor, "config column"],
) -> None:
    """Write into `z`, in place, configuration c's patched `columns[c]` from `replacements`, in one indexed write.

    For "v" a column is a key/value head, and every query head of its group is patched.
    """
    if site == "v":
        group = forward.n_heads // forward.n_kv_heads
        # [config column] -> [config column*group]: each key/value head's query heads, Hugging Face's repeat_kv order
        columns = (columns[..., None] * group + torch.arange(group, device=columns.device)).flatten(-2)
    configs = torch.arange(z.shape[0], device=z.device)[:, None].expand_as(columns)  # [config column]
    columns = columns.to(z.device)
    source = replacements.expand_as(z)  # [config pair q_pos head d_head]
    # Indices on dims 0 and 3 move to the front: both sides are [config column pair q_pos d_head].
    z[configs, :, :, columns] = source[configs, :, :, columns]


def head_entries(
    forward: ResumableForward, source: Run, target: Run, start: int, site: str, *, wanted: Bool[Tensor, "layer head"]
) -> Iterator[Entry]:
    """One entry per layer with wanted heads, one configuration per head; each changes z at positions start.. .

    Built as they are asked for, so a chunked run holds one layer's entry at a time.
    """

    def replacements(layer: int) -> Float[Tensor, "pair pos head d_head"]:
        # The target's own attention at this layer, for the queries the patch can change.
        return head_replacements(
            forward, site, source=source, layer=layer, q_start=start,
            pattern=target["pattern", layer][:, :, start:] if site == "v" else None, values=target["v", layer],
        )  # fmt: skip

    return replaced_head_entries(forward, target, start, site, wanted=wanted, replacements=replacements)


def replaced_head_entries(
    forward: ResumableForward,
    target: Run,
    start: int,
    site: str,
    *,
    wanted: Bool[Tensor, "layer column"],
    replacements: Callable[[int], Float[Tensor, "pair pos head d_head"]],
) -> Iterator[Entry]:
    """`head_entries` with each layer's patched head outputs (positions start..) from `replacements(layer)`.

    A configuration writes its column of the grid (a key/value head's group for "v", `write_heads`)
    into the target's z and joins the resumed run at the layer's MLP. `replacements` is called
    once per layer with wanted columns, when that layer's entry is asked for.
    """
    n_columns = wanted.shape[1]
    for layer in range(forward.n_layers):
        columns = wanted[layer].nonzero()[:, 0]
        if not len(columns):
            continue
        z_target = target["z", layer][:, start:]  # [pair pos head d_head]
        z = z_target.expand(len(columns), *z_target.shape).clone()  # [config pair pos head d_head]
        write_heads(forward, site, z, replacements(layer), columns[:, None])
        resid = target["resid_pre", layer][:, start:] + forward.attention_output(layer, z)
        yield Entry(stage=2 * layer + 1, start=start, resid=resid, cells=columns + layer * n_columns)


def _repeat_rows(pairs: Float[Tensor, "pair ..."], n_rows: int) -> Float[Tensor, "row ..."]:
    """`pairs` once per configuration, when `n_rows` counts configuration × pair rows."""
    if n_rows == pairs.shape[0]:
        return pairs
    # [pair ...] -> [config*pair ...], configuration-major like the resumed batch's rows
    return pairs.repeat(n_rows // pairs.shape[0], *(1,) * (pairs.dim() - 1))
