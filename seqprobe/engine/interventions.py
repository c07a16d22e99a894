"""Intervened runs: full forward passes in which chosen component activations take given values.

An ablation or circuit experiment runs the clean prompt while some components (a head's output z,
a block's attention or MLP output, the residual stream entering a block) are *replaced*: by their
value in another run (the corrupted prompt's, for resample ablation; the clean run's own, to give
a component its clean value back), by a mean over reference prompts, or by zero. A mean or zero
replacement differs from the clean run at every position, so, unlike a patch resumed after the
first differing token (seqprobe.engine.resume), an intervened run is computed from the embedding.

A *configuration* maps each replaced component to the index of the `Source` its value comes from;
everything else computes normally on what reaches it, as in one TransformerLens run with a hook
on each replaced activation (`hook_resid_pre`, `attn.hook_z`, `hook_attn_out`, `hook_mlp_out`,
applied in that order within a block). A source covers some positions (`Source.positions`): only
those are replaced, so one source can replace a single position and a reference of prompt length
leaves a continuation's positions computed.

Many configurations run at once, stacked in one batch [config*row pos d_model], layer by layer.
Each layer's plan is a few small index tensors (per configuration: the source of each head, and
of the block's resid, attn and mlp), and each replacement is one indexed write per source and
site, so the number of operations does not grow with the number of configurations. Configurations
whose plans agree on every layer so far share one row until they diverge (`_refine`): the curve of
nested circuits top-1..top-K, which differ only in the layers of their last heads, computes most
layers once instead of K times. Under a lane budget (seqprobe.engine.memory) the configurations
run in chunks of at most `max_lanes` lanes (configuration × row × position), each chunk exactly
as the whole batch would, up to float rounding.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from seqprobe.engine.forward import ResumableForward
from seqprobe.engine.metric import Readout
from seqprobe.vocabulary.circuits import Component

__all__ = ["BLOCK_KINDS", "KEEP", "SOURCE_SITES", "Source", "intervened_metric"]

# The activations a source holds, one tensor per layer: what `ResumableForward.run` records under these names.
SOURCE_SITES = ("resid_pre", "z", "attn_out", "mlp_out")
# The per-block components, in the order their replacements apply within a block (heads come between resid and attn).
BLOCK_KINDS = ("resid", "attn", "mlp")
# A plan's entry for a component that computes normally.
KEEP = -1


@dataclass(frozen=True)
class Source:
    """Values that replaced components take: per site, one tensor per layer, [row pos ...] or [1 pos ...]."""

    # Site (`SOURCE_SITES`) -> per layer; a leading 1 broadcasts over the rows (a mean over references).
    acts: Mapping[str, tuple[Tensor, ...]]
    # The positions it replaces: all of a run's, one (an ablation at one position), or a prompt's
    # (a reference of prompt length leaves a continuation's positions computed).
    positions: slice

    def at(self, layer: int, site: str) -> Tensor:
        return self.acts[site][layer][:, self.positions]


@dataclass(frozen=True)
class _Plan:
    """Each configuration's sources, layer by layer, for the whole batch (KEEP: computes normally)."""

    heads: Int[Tensor, "config layer head"]
    # The sources of resid, attn and mlp (`BLOCK_KINDS`' order).
    blocks: Int[Tensor, "config layer 3"]

    @classmethod
    def of(cls, forward: ResumableForward, configs: Sequence[Mapping[Component, int]]) -> _Plan:
        heads = torch.full((len(configs), forward.n_layers, forward.n_heads), KEEP)
        blocks = torch.full((len(configs), forward.n_layers, len(BLOCK_KINDS)), KEEP)
        for row, config in enumerate(configs):
            for component, source in config.items():
                if component.kind == "head":
                    heads[row, component.layer, component.head] = source
                else:
                    blocks[row, component.layer, BLOCK_KINDS.index(component.kind)] = source
        return cls(heads=heads, blocks=blocks)

    def chunks(self, size: int) -> Iterator[_Plan]:
        for first in range(0, self.heads.shape[0], size):
            yield _Plan(heads=self.heads[first : first + size], blocks=self.blocks[first : first + size])


def intervened_metric(
    forward: ResumableForward,
    tokens: Int[Tensor, "row pos"],
    configs: Sequence[Mapping[Component, int]],
    sources: Sequence[Source],
    readout: Readout,
    *,
    max_lanes: int | None = None,
) -> Float[Tensor, "config pair"]:
    """Each pair's metric of `tokens`' run under each configuration (component -> index into `sources`).

    The components must exist in the model (the caller checks). With `max_lanes`, configurations
    run in chunks of at most that many lanes, one configuration at least.
    """
    rows, n_pos = tokens.shape
    plan = _Plan.of(forward, configs)
    size = len(configs) if max_lanes is None else max(1, max_lanes // (rows * n_pos))
    embedded = forward.embed(tokens.to(forward.layer_devices[0]))  # [row pos d_model]
    return torch.cat([_run_chunk(forward, embedded, chunk, sources, readout) for chunk in plan.chunks(size)])


def _run_chunk(
    forward: ResumableForward,
    embedded: Float[Tensor, "row pos d_model"],
    plan: _Plan,
    sources: Sequence[Source],
    readout: Readout,
) -> Float[Tensor, "config pair"]:
    """One chunk's configurations from the embedding to the metric, rows shared until their plans diverge."""
    rows, n_pos, d_model = embedded.shape
    resid = embedded[None]  # [class row pos d_model]: one class, every configuration's, before any layer
    classes = torch.zeros(plan.heads.shape[0], dtype=torch.long)  # each configuration's class
    for layer in range(forward.n_layers):
        classes, parents, heads, blocks = _refine(classes, plan.heads[:, layer], plan.blocks[:, layer])
        resid = forward.to_layer(layer, resid)
        resid = resid[parents.to(resid.device)]  # [class row pos d_model], a copy
        _replace(resid, blocks[:, 0], sources, layer, "resid_pre")
        flat = resid.view(-1, n_pos, d_model)  # [class*row pos d_model]
        q, k, v = forward.qkv(layer, forward.attention_input(layer, flat), start=0)
        z = forward.mix(forward.pattern(layer, q, k, q_start=0), v)  # [class*row pos head d_head]
        _replace_heads(z.unflatten(0, (-1, rows)), heads, sources, layer)
        attn = forward.attention_output(layer, z).view(resid.shape)  # [class row pos d_model]
        _replace(attn, blocks[:, 1], sources, layer, "attn_out")
        resid = resid + attn
        mlp = forward.mlp_output(layer, resid)
        _replace(mlp, blocks[:, 2], sources, layer, "mlp_out")
        resid = resid + mlp
    metric = readout.per_pair(forward, resid[:, :, readout.first :].to(forward.device))  # [class pair]
    return metric[classes.to(metric.device)]


def _refine(
    classes: Int[Tensor, " config"], heads: Int[Tensor, "config head"], blocks: Int[Tensor, "config 3"]
) -> tuple[Int[Tensor, " config"], Int[Tensor, " class"], Int[Tensor, "class head"], Int[Tensor, "class 3"]]:
    """The classes after one more layer: configurations stay together while their plans agree.

    Returns each configuration's new class, each class's parent (its row before the layer) and its
    plan for the layer.
    """
    keys = torch.cat([classes[:, None], heads, blocks], dim=1)  # [config 1+head+3]
    unique, inverse = torch.unique(keys, dim=0, return_inverse=True)  # [class 1+head+3], [config]
    return inverse, unique[:, 0], unique[:, 1 : 1 + heads.shape[1]], unique[:, 1 + heads.shape[1] :]


def _replace(
    x: Float[Tensor, "class row pos d_model"],
    chosen: Int[Tensor, " class"],
    sources: Sequence[Source],
    layer: int,
    site: str,
) -> None:
    """Write, in place, each class's `site` value from its chosen source (one indexed write per source)."""
    for index, source in enumerate(sources):
        picked = (chosen == index).nonzero()[:, 0].to(x.device)
        if len(picked):
            x[picked, :, source.positions] = source.at(layer, site).to(x.device)


def _replace_heads(
    z: Float[Tensor, "class row pos head d_head"],
    chosen: Int[Tensor, "class head"],
    sources: Sequence[Source],
    layer: int,
) -> None:
    """Write, in place, each (class, head)'s z from its chosen source (one indexed write per source)."""
    for index, source in enumerate(sources):
        picked, head = (chosen == index).nonzero(as_tuple=True)
        if len(picked):
            picked, head = picked.to(z.device), head.to(z.device)
            value = source.at(layer, "z").to(z.device)[:, :, head]  # [row pos picked d_head]
            # Indices on dims 0 and 3 move to the front: both sides are [picked row pos d_head].
            z[picked, :, source.positions, head] = value.movedim(2, 0)
