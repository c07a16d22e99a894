"""Direct path patching: what sender heads write, delivered to one receiver only, exactly and batched.

The method (Wang et al. 2022, the IOI paper's path patching; transformer_lens's
`get_act_patch_direct_path`). Activation patching replaces a head's output everywhere it is read;
path patching asks whether a *path* matters: does the difference that sender heads S make reach
the answer through one receiver? The clean and corrupted runs are cached. The senders' clean −
corrupted write is

    D = Σ over sender layers l of attention_output(l, z_corr with S's heads at their clean z)
                                   − attention_output(l, z_corr)                [pair pos d_model]

(on GPT-2 and Llama this is Σ_h (z_clean − z_corr)_h W_O[h], transformer_lens's delta; written
through `attention_output`, it also covers Gemma 3, whose post-attention norm acts on the heads'
sum). D is zero before the first position where the prompts differ. Then the corrupted run is
rerun with D added to the receiver's input only — every other reader sees the corrupted run:

- a receiver is a later head's query, key or value input (`PATH_INPUTS`): that head reads
  attention_input(L, resid_pre[L] + D) for that one projection; its other projections, and every
  other head, read the run's own stream. Its changed output z then flows through every later
  layer normally. Receivers before or at a sender's layer are refused (they cannot read it).
- the logits (seqprobe.engine.path_logits): D through the final norm frozen at the corrupted
  run's scale into the unembedding, not through later layers.

The metric is the patching metric (seqprobe.engine.metric), per pair, of the patched run.

Grouped-query models (SmolLM2: 9 query heads share 3 key/value heads; Gemma 3). A query receiver is
a query head. Keys and values exist per *key/value* head, so a key or value receiver is a key/value
head ("KV1", like the columns of the "v" patching grid): the keys or values of key/value head g are
computed from the modified input, and every query head of group g reads them (Hugging Face's
`repeat_kv` order). transformer_lens refuses k and v receivers on such models; seqprobe defines
them so, and its tests check them against a rerun with TransformerBridge's per-key/value-head
`hook_k_input` / `hook_v_input` forks.

How it is computed, as activation patching is (seqprobe.engine.resume): nothing before the
receiver's layer is rerun. For a grid of receivers alone (`path_metric_grid`), each receiver
layer's heads are computed once from the modified input — one q/k/v projection and one attention
for all its heads — and each configuration takes its head's output from that (`write_heads`), so
the number of operations does not grow with the number of receivers; the configurations join the
stacked resumed batch at that layer's MLP, like a "z" patch. Receivers patched together
(`path_heads_metric`) run as one resumed run in which each receiver layer reads the run's own
(already changed) stream plus D, as one rerun with every receiver hooked does.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from seqprobe.engine.forward import ResumableForward, Run
from seqprobe.engine.head_patches import (
    heads_by_layer,
    n_head_columns,
    replaced_head_entries,
    write_heads,
    write_step_heads,
)
from seqprobe.engine.metric import Readout, run_metric
from seqprobe.engine.resume import fill_grid, first_difference, resume_patched, start_grid
from seqprobe.engine.shared_prefix import attend_after_prefix
from seqprobe.engine.stack import AttentionStep
from seqprobe.errors import PatchingError
from seqprobe.vocabulary.circuits import LOGITS, PATH_INPUTS
from seqprobe.vocabulary.heads import format_head, format_layer

__all__ = [
    "PATH_NEEDS",
    "PathPatch",
    "head_write_differences",
    "path_heads_metric",
    "path_metric_grid",
    "path_writes",
    "receiver_site",
    "sender_layers",
]

# What the source and the target run keep for path patching (`ResumableForward.run(keep=...)`).
PATH_NEEDS = (frozenset({"z"}), frozenset({"resid_pre", "z", "k", "v"}))
# The head site whose grid columns a receiver input shares: query heads, or key/value heads.
_COLUMN_SITES = {"q": "z", "k": "v", "v": "v"}


def receiver_site(input: str) -> str:
    """The head site whose columns `input`'s receivers are: "z" (query heads) for q, "v" (key/value heads) for k, v."""
    try:
        return _COLUMN_SITES[input]
    except KeyError:
        raise PatchingError(
            f"a path's receiver reads a later head's {', '.join(PATH_INPUTS)} input, or the {LOGITS}; "
            f"got input={input!r}"
        ) from None


def sender_layers(forward: ResumableForward, senders: Collection[tuple[int, int]]) -> dict[int, tuple[int, ...]]:
    """layer -> its sender heads; PatchingError when there are none or the model lacks one."""
    if not senders:
        raise PatchingError("a path needs at least one sender head, (layer, head); got none")
    return heads_by_layer(forward, "z", senders)


def head_write_differences(
    forward: ResumableForward,
    *,
    source: Run,
    target: Run,
    layer: int,
    columns: Int[Tensor, "config column"],
    positions: slice,
) -> Float[Tensor, "config pair pos d_model"]:
    """What `layer`'s attention writes at `positions` with each configuration's heads at `source`'s z, minus `target`'s write.

    Exactly zero where the heads' z do not change: two products of equal rows may round apart
    (a BLAS treats a batch's tail rows differently), and Gemma 3's post-attention norm would scale
    that rounding up into a write no head made.
    """
    z_target = target["z", layer][:, positions]  # [pair pos head d_head]
    z = z_target.expand(len(columns), *z_target.shape).clone()  # [config pair pos head d_head]
    write_heads(forward, "z", z, source["z", layer][:, positions], columns)
    changed = (z != z_target).flatten(-2).any(-1, keepdim=True)  # [config pair pos 1]
    written = forward.attention_output(layer, z) - forward.attention_output(layer, z_target)
    return torch.where(changed, written, 0.0)


def path_writes(
    forward: ResumableForward, *, source: Run, target: Run, senders: Collection[tuple[int, int]]
) -> Float[Tensor, "pair pos d_model"]:
    """D: the senders' write with their `source` z minus their write with `target`'s, summed over their layers."""
    writes = [
        head_write_differences(
            forward, source=source, target=target, layer=layer, columns=torch.tensor([heads]), positions=slice(None)
        )[0].to(forward.device)  # [pair pos d_model]
        for layer, heads in sender_layers(forward, senders).items()
    ]
    return torch.stack(writes).sum(0)


def path_metric_grid(
    forward: ResumableForward,
    *,
    source: Run,
    target: Run,
    senders: Collection[tuple[int, int]],
    input: str,
    readout: Readout,
    cells: Bool[Tensor, "layer column"] | None = None,
    max_lanes: int | None = None,
) -> Float[Tensor, "layer column pair"]:
    """Each pair's metric with the path from `senders` into each later head's `input` alone.

    Columns are query heads for "q", key/value heads for "k" and "v". Rows up to the last sender's
    layer are NaN (no receiver there can read the senders; transformer_lens puts 0.0), and so are
    cells not in `cells`. Runs hold what `PATH_NEEDS` lists; `max_lanes` as in `patched_metric_grid`.
    """
    site = receiver_site(input)
    last = max(sender_layers(forward, senders))
    shape = (forward.n_layers, n_head_columns(forward, site))
    wanted = torch.ones(shape, dtype=torch.bool) if cells is None else cells.cpu().clone()
    if wanted.shape != shape:
        raise PatchingError(f"path:{input}: cells are {tuple(wanted.shape)}, the grid is {shape}")
    wanted[: last + 1] = False
    grid = start_grid(forward, target, readout, wanted)  # [cell pair]
    grid[: (last + 1) * shape[1]] = torch.nan
    start = first_difference(source.tokens, target.tokens)
    # D is zero before `start`: with nothing to deliver up to the read position, every cell is the target's.
    if start <= readout.first:
        writes = path_writes(forward, source=source, target=target, senders=senders)[:, start:]  # [pair pos d_model]

        def replacements(layer: int) -> Float[Tensor, "pair pos head d_head"]:
            resid = target["resid_pre", layer][:, start:]
            own = forward.qkv(layer, forward.attention_input(layer, resid), start=start)
            return _receiver_outputs(
                forward, layer, input, resid=resid, writes=writes, own=own, start=start, q_start=start,
                prefix_k=target["k", layer][:, :, :start], prefix_v=target["v", layer][:, :, :start],
            )  # fmt: skip

        entries = replaced_head_entries(forward, target, start, site, wanted=wanted, replacements=replacements)
        fill_grid(forward, target, entries, readout, grid, max_lanes=max_lanes)
    return grid.view(*shape, -1)


def path_heads_metric(
    forward: ResumableForward,
    *,
    source: Run,
    target: Run,
    senders: Collection[tuple[int, int]],
    receivers: Collection[tuple[int, int]],
    input: str,
    readout: Readout,
) -> Float[Tensor, " pair"]:
    """Each pair's metric with the path from `senders` into every receiver's `input` at once, in one resumed run.

    Receivers are (layer, head), key/value heads for "k" and "v"; a receiver in a later layer
    reads the stream the earlier receivers changed, plus D. PatchingError for a receiver at or
    before a sender's layer.
    """
    site = receiver_site(input)
    by_sender = sender_layers(forward, senders)
    by_receiver = heads_by_layer(forward, site, receivers)
    _check_order(forward, by_sender, by_receiver, key_value=n_head_columns(forward, site) != forward.n_heads)
    start = first_difference(source.tokens, target.tokens)
    if start > readout.first or not by_receiver:
        return run_metric(forward, target, readout)
    writes = path_writes(forward, source=source, target=target, senders=senders)[:, start:]  # [pair pos d_model]
    patch = PathPatch(input=input, receivers=by_receiver, writes=writes)
    return resume_patched(forward, target, readout, patch=patch, start=start)


@dataclass(frozen=True)
class PathPatch:
    """Receivers' heads reading the run's stream plus the senders' write D, in a resumed run (a `LayerPatch`)."""

    input: str
    # layer -> its receivers (key/value heads for "k" and "v").
    receivers: Mapping[int, tuple[int, ...]]
    # D at the positions the resumed run computes.
    writes: Float[Tensor, "pair pos d_model"]

    @property
    def layers(self) -> Collection[int]:
        return self.receivers.keys()

    def rewrite(
        self, forward: ResumableForward, step: AttentionStep, z: Float[Tensor, "row q_pos head d_head"]
    ) -> None:
        """Write the receivers' outputs at `step`'s layer, computed from the modified input, into `z` in place."""
        writes = self.writes.repeat(step.n_config, 1, 1)  # [pair pos d_model] -> [config*pair pos d_model]
        replacements = _receiver_outputs(
            forward, step.layer, self.input, resid=step.resid, writes=writes, own=(step.q, step.k, step.v),
            start=step.start, q_start=step.q_start, prefix_k=step.prefix_k, prefix_v=step.prefix_v,
        )  # fmt: skip  # [config*pair q_pos head d_head]
        write_step_heads(forward, receiver_site(self.input), step, z, replacements, self.receivers[step.layer])


def _receiver_outputs(
    forward: ResumableForward,
    layer: int,
    input: str,
    *,
    resid: Float[Tensor, "row pos d_model"],
    writes: Float[Tensor, "row pos d_model"],
    own: tuple[Tensor, Tensor, Tensor],
    start: int,
    q_start: int,
    prefix_k: Float[Tensor, "pair kv_head prefix d_head"],
    prefix_v: Float[Tensor, "pair kv_head prefix d_head"],
) -> Float[Tensor, "row q_pos head d_head"]:
    """Every head's output at `layer` had it read `input` from resid + D (positions start..) and the rest as its own.

    `own` are the run's queries (positions q_start..), keys and values (start..). Each head's output
    depends on its own query and its key/value head's keys and values only, so one attention over
    all heads gives each receiver's output as if it alone read the modified input.
    """
    modified = forward.attention_input(layer, resid + forward.to_layer(layer, writes))
    q, k, v = forward.qkv(layer, modified, start=start)  # [row head pos d_head], [row kv_head pos d_head] ×2
    q = q[:, :, q_start - start :]
    own_q, own_k, own_v = own
    chosen = {"q": (q, own_k, own_v), "k": (own_q, k, own_v), "v": (own_q, own_k, v)}[input]
    _, z = attend_after_prefix(forward, layer, *chosen, prefix_k=prefix_k, prefix_v=prefix_v, q_start=q_start)
    return z


def _check_order(
    forward: ResumableForward,
    senders: Mapping[int, tuple[int, ...]],
    receivers: Mapping[int, tuple[int, ...]],
    *,
    key_value: bool,
) -> None:
    """PatchingError naming the first receiver at or before a sender's layer, and that sender."""
    last = max(senders)
    for layer, heads in receivers.items():
        if layer <= last:
            sender = format_head(last, senders[last][0])
            receiver = format_head(layer, heads[0], key_value=key_value)
            raise PatchingError(
                f"path from {sender} to {receiver}: a receiver reads only what earlier layers wrote; "
                f"{format_layer(layer)} is not after {format_layer(last)}"
            )
