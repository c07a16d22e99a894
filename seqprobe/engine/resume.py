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
  the batch at the sublayer where their patch applies.
- A one-token metric reads two rows of the unembedding (answer and distractor), not the whole
  vocabulary; a continuation's log-probabilities need the whole vocabulary at its positions.

Every patched run's metric comes back per pair, so that intervals can resample the pairs.

Two kinds of patched run: `patched_metric_grid` patches one activation at a time, every cell of a
site's grid stacked in one resumed batch; `patched_heads_metric` patches several heads at once in
one resumed run, where a later head reads the stream the earlier patched heads changed.

Memory: only the activations a site needs are cached (`needed_activations`, transformer_lens's
`names_filter`), and the stacked batch peaks at configurations × pairs × patched positions rows of
the MLP's width — for the study's "z" sweep on SmolLM2, 270 × 4 × 5 rows of 1536 floats. Under a
budget (`max_lanes`, seqprobe.engine.memory) the configurations run in chunks of that many rows
(`seqprobe.engine.stack`), with the same numbers.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from seqprobe.engine.forward import ResumableForward, Run
from seqprobe.engine.metric import Readout, run_metric
from seqprobe.engine.stack import Entry, chunks
from seqprobe.errors import PatchingError
from seqprobe.vocabulary.heads import format_head
from seqprobe.vocabulary.sites import HEAD_SITES, POSITION_SITES, SITES

__all__ = [
    "check_sites",
    "grid_shape",
    "first_difference",
    "needed_activations",
    "patched_heads_metric",
    "patched_metric_grid",
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


@dataclass(frozen=True)
class _HeadPatch:
    """Heads whose `site` activation comes from `source` wherever the resumed run computes their layer."""

    site: str
    # layer -> its patched heads (key/value heads for "v").
    heads: Mapping[int, tuple[int, ...]]
    source: Run


def grid_shape(forward: ResumableForward, site: str, readout: Readout) -> tuple[int, int]:
    """(layers, columns) of `site`'s grid: prompt positions for position sites, (key/value) heads for head sites."""
    return forward.n_layers, readout.first + 1 if site in POSITION_SITES else _n_head_columns(forward, site)


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
    own = run_metric(forward, target, readout)  # [pair]
    grid = own.expand(n_layers * n_columns, -1).clone()  # [cell pair]
    grid[~wanted.flatten().to(grid.device)] = torch.nan
    # Patches before the first differing position are no-ops: those cells keep the target's metric.
    entries = (
        []
        if start > readout.first
        else _position_entries(forward, source, target, start, site, wanted=wanted)
        if site in POSITION_SITES
        else _head_entries(forward, source, target, start, site, wanted=wanted)
    )
    if entries:
        computed = torch.cat([entry.cells for entry in entries])
        grid[computed.to(grid.device)] = _resume(forward, target, entries, readout, max_lanes=max_lanes)
    return grid.view(n_layers, n_columns, -1)


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
    by_layer = _heads_by_layer(forward, site, heads)
    start = first_difference(source.tokens, target.tokens)
    if start > readout.first or not by_layer:
        return run_metric(forward, target, readout)
    first = min(by_layer)
    entry = Entry(
        stage=2 * first,
        start=start,
        resid=target["resid_pre", first][None, :, start:],
        cells=torch.zeros(1, dtype=torch.long),
    )
    return _resume(forward, target, [entry], readout, patch=_HeadPatch(site=site, heads=by_layer, source=source))[0]


def _n_head_columns(forward: ResumableForward, site: str) -> int:
    return forward.n_kv_heads if site == "v" else forward.n_heads


def _heads_by_layer(
    forward: ResumableForward, site: str, heads: Collection[tuple[int, int]]
) -> dict[int, tuple[int, ...]]:
    """layer -> its heads, each once, in order; PatchingError naming every head the model lacks."""
    n_columns = _n_head_columns(forward, site)
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


def _position_entries(
    forward: ResumableForward, source: Run, target: Run, start: int, site: str, *, wanted: Bool[Tensor, "layer pos"]
) -> list[Entry]:
    """One configuration per wanted (layer, prompt position) from `start` on; earlier positions are no-ops."""
    n_layers, n_prompt = wanted.shape
    entries = []
    for layer in range(n_layers):
        for pos in range(start, n_prompt):
            if not wanted[layer, pos]:
                continue
            if site == "resid_pre":
                stage, resid = 2 * layer, target["resid_pre", layer][:, pos:].clone()
                resid[:, 0] = source["resid_pre", layer][:, pos]
            elif site == "attn_out":
                stage, resid = 2 * layer + 1, target["resid_mid", layer][:, pos:].clone()
                resid[:, 0] = target["resid_pre", layer][:, pos] + source["attn_out", layer][:, pos]
            else:
                after = target["resid_pre", layer + 1] if layer + 1 < n_layers else target.resid_final
                stage, resid = 2 * layer + 2, after[:, pos:].clone()
                resid[:, 0] = target["resid_mid", layer][:, pos] + source["mlp_out", layer][:, pos]
            cells = torch.tensor([layer * n_prompt + pos])
            entries.append(Entry(stage=stage, start=pos, resid=resid[None], cells=cells))
    return entries


def _head_entries(
    forward: ResumableForward, source: Run, target: Run, start: int, site: str, *, wanted: Bool[Tensor, "layer head"]
) -> list[Entry]:
    """One configuration per wanted (layer, head); each changes the heads' outputs z at positions start.. ."""
    n_columns = wanted.shape[1]
    entries = []
    for layer in range(forward.n_layers):
        columns = wanted[layer].nonzero()[:, 0]
        if not len(columns):
            continue
        z_target = target["z", layer][:, start:]  # [pair pos head d_head]
        z = z_target.expand(len(columns), *z_target.shape).clone()  # [config pair pos head d_head]
        # The target's own attention at this layer, for the queries the patch can change.
        pattern = target["pattern", layer][:, :, start:] if site == "v" else None  # [pair head pos k_pos]
        values = target["v", layer]  # [pair kv_head k_pos d_head]
        for config, column in enumerate(columns.tolist()):
            _patch_heads(
                forward, site, (column,), source=source, layer=layer, q_start=start, pattern=pattern, values=values,
                z=z[config],
            )  # fmt: skip
        resid = target["resid_pre", layer][:, start:] + forward.attention_output(layer, z)
        entries.append(Entry(stage=2 * layer + 1, start=start, resid=resid, cells=columns + layer * n_columns))
    return entries


def _patch_heads(
    forward: ResumableForward,
    site: str,
    heads: Sequence[int],
    *,
    source: Run,
    layer: int,
    q_start: int,
    pattern: Float[Tensor, "*config pair head q_pos k_pos"] | None,
    values: Float[Tensor, "*config pair kv_head k_pos d_head"],
    z: Float[Tensor, "*config pair q_pos head d_head"],
) -> None:
    """Write into `z`, in place, the outputs `heads` have with their `site` activation from `source`.

    `pattern` (needed for "v" only) and `values` are the patched run's own at `layer`, for queries
    q_start.. and every key. A patched value vector feeds every query head of its group; a patched
    pattern mixes the run's own values; a patched z is the source's output itself.
    """
    group = forward.n_heads // forward.n_kv_heads
    for head in heads:
        if site == "z":
            z[..., head, :] = source["z", layer][:, q_start:, head]
        elif site == "v":
            assert pattern is not None
            reading = slice(head * group, (head + 1) * group)  # the query heads of key/value head `head`
            mixed = pattern[..., reading, :, :] @ source["v", layer][:, head, None]  # [*config pair group q d_head]
            z[..., reading, :] = mixed.transpose(-3, -2)
        else:
            z[..., head, :] = source["pattern", layer][:, head, q_start:] @ values[..., head // group, :, :]


def _resume(
    forward: ResumableForward,
    target: Run,
    entries: Sequence[Entry],
    readout: Readout,
    *,
    patch: _HeadPatch | None = None,
    max_lanes: int | None = None,
) -> Float[Tensor, "cell pair"]:
    """Run every entry from its stage to the logits; each pair's metric per configuration, in entry order.

    The entries run stacked, in chunks of at most `max_lanes` lanes when given (seqprobe.engine.memory).
    With `patch`, its heads are patched in every configuration wherever their layer's attention runs.
    """
    if max_lanes is None:
        return _resume_stacked(forward, target, entries, readout, patch=patch)
    return torch.cat(
        [_resume_stacked(forward, target, chunk, readout, patch=patch) for chunk in chunks(entries, max_lanes)]
    )


def _resume_stacked(
    forward: ResumableForward,
    target: Run,
    entries: Sequence[Entry],
    readout: Readout,
    *,
    patch: _HeadPatch | None = None,
) -> Float[Tensor, "cell pair"]:
    """Every entry from its stage to the logits, as one stacked batch."""
    n_layers = forward.n_layers
    # start -> the configurations in flight that compute positions start.. : [config pair pos d_model]
    active: dict[int, Tensor] = {}
    order: dict[int, list[int]] = {}  # start -> their indices in the concatenated entry order
    offsets = torch.tensor([0] + [e.resid.shape[0] for e in entries]).cumsum(0).tolist()
    by_stage: dict[int, list[int]] = {}
    for i, entry in enumerate(entries):
        by_stage.setdefault(entry.stage, []).append(i)
    for stage in range(min(by_stage), 2 * n_layers + 1):
        for i in by_stage.get(stage, ()):
            entry = entries[i]
            # After the last attention sublayer only the positions the metric reads are carried on.
            resid = entry.resid if stage <= 2 * (n_layers - 1) else entry.resid[:, :, readout.first - entry.start :]
            joined = [active[entry.start], resid] if entry.start in active else [resid]
            active[entry.start] = torch.cat(joined)
            order.setdefault(entry.start, []).extend(range(offsets[i], offsets[i + 1]))
        if stage == 2 * n_layers:
            break
        layer, is_mlp = divmod(stage, 2)
        if is_mlp:
            active = _mlp_step(forward, layer, active)
        else:
            active = {
                start: _attention_step(forward, target, layer, start, resid, read_from=readout.first, patch=patch)
                for start, resid in active.items()
            }
    metrics = torch.empty(offsets[-1], readout.n_pairs, device=forward.device)
    for start, resid in active.items():
        metrics[order[start]] = readout.per_pair(forward, resid)  # [config pair]
    return metrics


def _mlp_step(forward: ResumableForward, layer: int, active: dict[int, Tensor]) -> dict[int, Tensor]:
    """The MLP sublayer for every configuration in flight, as one batch (it treats positions alike)."""
    d_model = forward.d_model
    # every [config pair pos d_model] -> one [lane d_model]: bigger matrix products run faster
    lanes = torch.cat([resid.reshape(-1, d_model) for resid in active.values()])
    out = forward.mlp_output(layer, lanes).split([resid[..., 0].numel() for resid in active.values()])
    return {start: resid + part.view(resid.shape) for (start, resid), part in zip(active.items(), out, strict=True)}


def _attention_step(
    forward: ResumableForward,
    target: Run,
    layer: int,
    start: int,
    resid: Float[Tensor, "config pair pos d_model"],
    *,
    read_from: int,
    patch: _HeadPatch | None = None,
) -> Float[Tensor, "config pair pos d_model"]:
    """The attention sublayer for positions start.., with earlier keys and values from `target`.

    In the last block only positions `read_from`.. are carried on: the metric reads nothing else.
    """
    n_config, n_pair, n_suffix, d_model = resid.shape
    rows = resid.reshape(n_config * n_pair, n_suffix, d_model)  # [config*pair pos d_model]
    q, k, v = forward.qkv(layer, forward.attention_input(layer, rows), start=start)
    keys = torch.cat([_prefix(target["k", layer], start, n_config), k], dim=2)  # [row kv_head pos d_head]
    values = torch.cat([_prefix(target["v", layer], start, n_config), v], dim=2)
    q_start = start
    if layer == forward.n_layers - 1:
        skip = read_from - start
        q, q_start, resid = q[:, :, skip:], read_from, resid[:, :, skip:]
    pattern = forward.pattern(layer, q, keys, q_start=q_start)  # [row head q_pos k_pos]
    z = forward.mix(pattern, values)  # [row q_pos head d_head]
    if patch is not None and layer in patch.heads:
        # [config*pair ...] -> [config pair ...], so the source's [pair ...] values broadcast over configurations
        _patch_heads(
            forward, patch.site, patch.heads[layer], source=patch.source, layer=layer, q_start=q_start,
            pattern=pattern.unflatten(0, (n_config, n_pair)), values=values.unflatten(0, (n_config, n_pair)),
            z=z.unflatten(0, (n_config, n_pair)),
        )  # fmt: skip
    out = forward.attention_output(layer, z)  # [row pos d_model]
    return resid + out.view(n_config, n_pair, -1, d_model)


def _prefix(cached: Float[Tensor, "pair kv_head pos d_head"], start: int, n_config: int) -> Tensor:
    """The target run's keys or values before `start`, repeated for each configuration."""
    head = cached[:, :, :start]
    # [pair kv_head start d_head] -> [config*pair kv_head start d_head]
    return head.expand(n_config, *head.shape).reshape(-1, *head.shape[1:])
