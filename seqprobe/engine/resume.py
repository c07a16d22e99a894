"""Patched runs resumed from a cached run: the engine under `seqprobe.engine.patching`.

A patched run is the *target* run (the corrupted prompt) with some activations replaced by their
values in the *source* run (the clean prompt). Both runs are cached once (`ResumableForward.run`);
every patched run is then computed from the target's cache instead of from the tokens, and each
lever below keeps the result exact:

- A patched run is resumed at the patched sublayer from the target's cached residual stream;
  nothing before it is recomputed.
- Source and target prompts agree up to their first differing token, so every activation before
  it is the same in both runs: patching there is a no-op whose value is the target's metric.
- Under causal attention a patch at position p changes nothing before p: only positions p.. are
  computed, attending to keys and values of the earlier positions from the target's cache. In the
  last block only the positions the metric reads (the prompt's final one, and a multi-token
  continuation's) run their query, attention and MLP.
- Many patch configurations go through the model stacked in one batch, layer by layer, joining
  the batch at the sublayer where their patch applies. The configurations that compute the same
  positions share one buffer, updated in place, that they join by a count (`seqprobe.engine.stack`);
  the keys and values before the first differing position are the target's for all of them and
  are read without a copy per configuration (`seqprobe.engine.shared_prefix`); the patched inputs
  are built per position or per layer for all its configurations at once, and a layer's head
  patches are one indexed write (`seqprobe.engine.head_patches`). So a sweep's operations (a GPU's
  kernel launches) depend on the layers and the computed positions, not on how many
  configurations there are.
- A one-token metric reads two rows of the unembedding (answer and distractor), not the whole
  vocabulary; a continuation's log-probabilities need the whole vocabulary at its positions.

Every patched run's metric comes back per pair, so that intervals can resample the pairs.

Two kinds of patched run: `patched_metric_grid` patches one activation at a time, every cell of a
site's grid stacked in one resumed batch; `patched_heads_metric` patches several heads at once in
one resumed run, where a later head reads the stream the earlier patched heads changed. Path
patching (seqprobe.engine.path_patching) builds on both: its grid's entries go through `fill_grid`,
and its receivers patched together are a `LayerPatch` that `resume_patched` applies.

Memory: only the activations a site needs are cached (`needed_activations`, transformer_lens's
`names_filter`), and the stacked batch peaks at configurations × pairs × patched positions rows of
the MLP's width — for the study's "z" sweep on SmolLM2, 270 × 4 × 5 rows of 1536 floats. Under a
budget (`max_lanes`, seqprobe.engine.memory) the configurations run in chunks of that many rows
(`seqprobe.engine.stack`), and the patched inputs themselves are built as the chunks ask for them
(one layer's head entry, one position's entries), with the same numbers up to float rounding: the products over the shared
prefix hold a chunk's configurations as rows, and a BLAS may round a product of few rows
differently from one of many.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Sequence
from typing import Literal

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from seqprobe.engine.forward import ResumableForward, Run
from seqprobe.engine.head_patches import HeadPatch, head_entries, heads_by_layer, n_head_columns
from seqprobe.engine.metric import Readout, run_metric
from seqprobe.engine.shared_prefix import attend_after_prefix
from seqprobe.engine.stack import AttentionStep, Entry, LayerPatch, chunks, group_by_start
from seqprobe.errors import PatchingError
from seqprobe.vocabulary.sites import HEAD_SITES, POSITION_SITES, SITES

__all__ = [
    "check_sites",
    "fill_grid",
    "first_difference",
    "grid_shape",
    "needed_activations",
    "patched_heads_metric",
    "patched_metric_grid",
    "resume_patched",
    "start_grid",
]

# The cached activations each site's patches are built from: (from the source run, from the target run).
_NEEDS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "resid_pre": (frozenset({"resid_pre"}), frozenset({"resid_pre", "k", "v"})),
    "attn_out": (frozenset({"attn_out"}), frozenset({"resid_pre", "resid_mid", "k", "v"})),
    "mlp_out": (frozenset({"mlp_out"}), frozenset({"resid_pre", "resid_mid", "k", "v"})),
    "z": (frozenset({"z"}), frozenset({"resid_pre", "z", "k", "v"})),
    "v": (frozenset({"v"}), frozenset({"resid_pre", "z", "pattern", "k", "v"})),
    "pattern": (frozenset({"pattern"}), frozenset({"resid_pre", "z", "k", "v"})),
}


def needed_activations(sites: Collection[str], *, role: Literal["source", "target"]) -> frozenset[str]:
    """What a run must keep to be the source (or target) of patches at `sites`, one at a time or together."""
    side = 0 if role == "source" else 1
    return frozenset().union(*(_NEEDS[site][side] for site in sites))


def check_sites(sites: Collection[str]) -> None:
    unknown = [site for site in sites if site not in SITES]
    if unknown:
        raise PatchingError(f"unknown patching site(s) {unknown}; choose from {SITES}")


def first_difference(source: Int[Tensor, "pair pos"], target: Int[Tensor, "pair pos"]) -> int:
    """The first position where any pair's two prompts differ; their length if none does."""
    differs = (source != target).any(dim=0).nonzero()
    return int(differs[0]) if len(differs) else source.shape[1]


def grid_shape(forward: ResumableForward, site: str, readout: Readout) -> tuple[int, int]:
    """(layers, columns) of `site`'s grid: prompt positions for position sites, (key/value) heads for head sites."""
    return forward.n_layers, readout.first + 1 if site in POSITION_SITES else n_head_columns(forward, site)


def patched_metric_grid(
    forward: ResumableForward,
    *,
    source: Run,
    target: Run,
    site: str,
    readout: Readout,
    cells: Bool[Tensor, "layer column"] | None = None,
    max_lanes: int | None = None,
) -> Float[Tensor, "layer column pair"]:
    """Each pair's metric of `target`'s run with each activation of `site` in turn taken from `source`'s run.

    `source` and `target` must hold the activations `needed_activations` lists. Patching the clean
    run into the corrupted one gives transformer_lens's grid (its mean over pairs); patching a run
    into itself gives its own metric everywhere. Position sites patch the prompt's positions, the
    ones before `readout.first` and that one. With `cells`, only those are computed (what a claim
    reads); the others are NaN. Each configuration runs alone in the stacked batch, so a cell's
    value does not depend on which others are computed with it (up to float rounding), and the
    batch may run in chunks of at most `max_lanes` lanes (seqprobe.engine.memory).
    """
    check_sites([site])
    n_layers, n_columns = grid_shape(forward, site, readout)
    wanted = torch.ones(n_layers, n_columns, dtype=torch.bool) if cells is None else cells.cpu()
    if wanted.shape != (n_layers, n_columns):
        raise PatchingError(f"{site}: cells are {tuple(wanted.shape)}, the grid is {(n_layers, n_columns)}")
    start = first_difference(source.tokens, target.tokens)
    grid = start_grid(forward, target, readout, wanted)  # [cell pair]
    # Patches before the first differing position are no-ops: those cells keep the target's metric.
    if start <= readout.first:
        build = _position_entries if site in POSITION_SITES else head_entries
        entries = build(forward, source, target, start, site, wanted=wanted)  # built as the chunks ask
        fill_grid(forward, target, entries, readout, grid, max_lanes=max_lanes)
    return grid.view(n_layers, n_columns, -1)


def start_grid(
    forward: ResumableForward, target: Run, readout: Readout, wanted: Bool[Tensor, "layer column"]
) -> Float[Tensor, "cell pair"]:
    """A grid's cells before any is computed: the target's own metric where wanted, NaN elsewhere."""
    own = run_metric(forward, target, readout)  # [pair]
    grid = own.expand(wanted.numel(), -1).clone()  # [cell pair]
    grid[~wanted.flatten().to(grid.device)] = torch.nan
    return grid


def fill_grid(
    forward: ResumableForward,
    target: Run,
    entries: Iterable[Entry],
    readout: Readout,
    grid: Float[Tensor, "cell pair"],
    *,
    max_lanes: int | None,
) -> None:
    """Resume every entry's configurations to the metric and write it into `grid` at their cells, in place.

    With `max_lanes`, in chunks of at most that many lanes, each chunk's entries built when it runs.
    """
    for stack in [list(entries)] if max_lanes is None else chunks(entries, max_lanes):
        if stack:
            computed = torch.cat([entry.cells for entry in stack])
            grid[computed.to(grid.device)] = _resume_stacked(forward, target, stack, readout)


def patched_heads_metric(
    forward: ResumableForward,
    *,
    source: Run,
    target: Run,
    site: str,
    heads: Collection[tuple[int, int]],
    readout: Readout,
) -> Float[Tensor, " pair"]:
    """Each pair's metric of `target`'s run with every (layer, head) of `heads` at `site` taken from `source`, at once.

    Not the sum of single-head effects: a head in a later layer reads the stream the earlier patched
    heads changed, as in one run with every hook on (transformer_lens's `run_with_hooks`). For "v"
    the heads are key/value heads, the columns of the "v" grid. The run resumes at the attention
    sublayer of the first patched layer; the runs must hold what `needed_activations` lists.
    """
    if site not in HEAD_SITES:
        raise PatchingError(f"heads are patched at {', '.join(HEAD_SITES[:-1])} or {HEAD_SITES[-1]}, not {site!r}")
    by_layer = heads_by_layer(forward, site, heads)
    start = first_difference(source.tokens, target.tokens)
    if start > readout.first or not by_layer:
        return run_metric(forward, target, readout)
    patch = HeadPatch(site=site, heads=by_layer, source=source)
    return resume_patched(forward, target, readout, patch=patch, start=start)


def resume_patched(
    forward: ResumableForward, target: Run, readout: Readout, *, patch: LayerPatch, start: int
) -> Float[Tensor, " pair"]:
    """Each pair's metric of `target`'s run resumed at `patch`'s first layer for positions start.., patched there on."""
    first = min(patch.layers)
    entry = Entry(
        stage=2 * first,
        start=start,
        resid=target["resid_pre", first][None, :, start:],
        cells=torch.zeros(1, dtype=torch.long),
    )
    return _resume_stacked(forward, target, [entry], readout, patch=patch)[0]


def _position_entries(
    forward: ResumableForward, source: Run, target: Run, start: int, site: str, *, wanted: Bool[Tensor, "layer pos"]
) -> Iterator[Entry]:
    """One configuration per wanted (layer, prompt position) from `start` on; earlier positions are no-ops.

    Built per position for all its layers at once: the stream entering the patched sublayer from
    the target run, with the patched position's own value taken from the source.
    """
    n_prompt = wanted.shape[1]
    layers = wanted[:, start:].any(dim=1).nonzero()[:, 0].tolist()
    if not layers:
        return
    if site == "resid_pre":
        first_stage = 0
        stream = _stack(target, "resid_pre", layers)  # [layer pair pos d_model]
        patched = _stack(source, "resid_pre", layers)
    elif site == "attn_out":
        first_stage = 1
        stream = _stack(target, "resid_mid", layers)
        patched = _stack(target, "resid_pre", layers) + _stack(source, "attn_out", layers)
    else:
        first_stage = 2
        after = [*target.acts["resid_pre"][1:], target.resid_final]  # what enters the stage after each MLP
        stream = torch.stack([after[layer] for layer in layers])
        patched = _stack(target, "resid_mid", layers) + _stack(source, "mlp_out", layers)
    wanted_layers = wanted[layers]  # [layer pos]
    for pos in range(start, n_prompt):
        rows = wanted_layers[:, pos].nonzero()[:, 0]
        if not len(rows):
            continue
        index = rows.to(stream.device)
        resid = stream[index, :, pos:]  # [config pair pos d_model], a copy
        resid[:, :, 0] = patched[index, :, pos]
        cells = torch.tensor([layers[row] * n_prompt + pos for row in rows.tolist()])
        for i, row in enumerate(rows.tolist()):
            yield Entry(stage=first_stage + 2 * layers[row], start=pos, resid=resid[i : i + 1], cells=cells[i : i + 1])


def _stack(run: Run, name: str, layers: Sequence[int]) -> Float[Tensor, "layer pair pos d_model"]:
    return torch.stack([run[name, layer] for layer in layers])


def _resume_stacked(
    forward: ResumableForward,
    target: Run,
    entries: Sequence[Entry],
    readout: Readout,
    *,
    patch: LayerPatch | None = None,
) -> Float[Tensor, "cell pair"]:
    """Every entry from its stage to the logits, as one stacked batch updated in place (`StartGroup`)."""
    n_layers = forward.n_layers
    groups = group_by_start(entries)
    for stage in range(min(entry.stage for entry in entries), 2 * n_layers):
        layer, is_mlp = divmod(stage, 2)
        in_flight = [(group, group.joined(stage)) for group in groups if group.joined(stage)]
        if not is_mlp:
            for group, n in in_flight:
                _attention_step(
                    forward, target, layer, group.start, group.resid[:n], read_from=readout.first, patch=patch
                )
            continue
        # After the last attention sublayer only the positions the metric reads are carried on.
        last = layer == n_layers - 1
        _mlp_step(
            forward,
            layer,
            [group.resid[:n, :, readout.first - group.start :] if last else group.resid[:n] for group, n in in_flight],
        )
    metrics = torch.empty(sum(len(group.rows) for group in groups), readout.n_pairs, device=forward.device)
    for group in groups:
        read = group.resid[:, :, readout.first - group.start :]  # [config pair read d_model]
        metrics[group.rows.to(metrics.device)] = readout.per_pair(forward, read)
    return metrics


def _mlp_step(
    forward: ResumableForward, layer: int, carried: Sequence[Float[Tensor, "config pair pos d_model"]]
) -> None:
    """The MLP sublayer for every configuration in flight, as one batch (it treats positions alike), in place."""
    d_model = forward.d_model
    # every [config pair pos d_model] -> one [lane d_model]: bigger matrix products run faster
    flat = [resid.reshape(-1, d_model) for resid in carried]
    out = forward.mlp_output(layer, flat[0] if len(flat) == 1 else torch.cat(flat))
    for resid, part in zip(carried, out.split([len(lanes) for lanes in flat]), strict=True):
        resid += part.view(resid.shape)


def _attention_step(
    forward: ResumableForward,
    target: Run,
    layer: int,
    start: int,
    resid: Float[Tensor, "config pair pos d_model"],
    *,
    read_from: int,
    patch: LayerPatch | None = None,
) -> None:
    """The attention sublayer for positions start.., added to `resid` in place; earlier keys and values are `target`'s.

    The prefix's keys and values are the same in every configuration and are not copied per
    configuration (seqprobe.engine.shared_prefix). In the last block only positions `read_from`..
    run their query and are updated: the metric reads nothing else.
    """
    n_config, n_pair, n_suffix, d_model = resid.shape
    rows = resid.reshape(n_config * n_pair, n_suffix, d_model)  # [config*pair pos d_model], a view
    q, k, v = forward.qkv(layer, forward.attention_input(layer, rows), start=start)
    q_start, updated = start, resid
    if layer == forward.n_layers - 1:
        skip = read_from - start
        q, q_start, updated = q[:, :, skip:], read_from, resid[:, :, skip:]
    prefix_k, prefix_v = target["k", layer][:, :, :start], target["v", layer][:, :, :start]
    pattern, z = attend_after_prefix(
        forward, layer, q, k, v, q_start=q_start, prefix_k=prefix_k, prefix_v=prefix_v
    )  # [config*pair head q_pos k_pos], [config*pair q_pos head d_head]
    if patch is not None and layer in patch.layers:
        step = AttentionStep(
            layer=layer, start=start, q_start=q_start, n_config=n_config, resid=rows, q=q, k=k, v=v,
            pattern=pattern, prefix_k=prefix_k, prefix_v=prefix_v,
        )  # fmt: skip
        patch.rewrite(forward, step, z)
    out = forward.attention_output(layer, z)  # [config*pair pos d_model]
    updated += out.view(n_config, n_pair, -1, d_model)
