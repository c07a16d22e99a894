"""Activation patching, exactly as transformer_lens.patching computes it, without rerunning the model.

The method. A *clean* prompt ("Today it is Sunday, tomorrow it is") makes the model give the answer
(" Monday"); a *corrupted* prompt that differs in one word ("... Tuesday, ...") makes it prefer
another token, the distractor (" Wednesday"). Both runs are cached. Then, for one activation at a
time, the corrupted prompt is run again with that activation replaced by its clean value, and the
metric says how far the output moved back towards the clean one:

    metric   = logit(answer) − logit(distractor) at the final position, averaged over the pairs
    recovery = (patched − corrupted) / (clean − corrupted)

0 means the activation carries none of the difference, 1 all of it. When an answer or distractor
is several tokens, the metric is log p(answer) − log p(distractor), each continuation's
teacher-forced log-probability after the prompt; position sweeps then patch the prompt's positions
while the resumed runs compute the continuations after them. The *same* readout
(`seqprobe.engine.metric.Readout`) scores the clean, the corrupted and every patched run, with
each pair's distractor fixed for all three, and gives one value per pair. Recovery is undefined when clean ≈ corrupted; `recovery` raises instead of
dividing by almost zero.

Sites (`SITES`), one grid each, equal to the transformer_lens.patching function named:

- "resid_pre": the residual stream entering block `layer`, at one position — `get_act_patch_resid_pre`.
- "attn_out" / "mlp_out": what a block's attention / MLP adds at one position — `get_act_patch_attn_out`
  / `get_act_patch_mlp_out`.
- "z": one head's output at every position — `get_act_patch_attn_head_out_all_pos`.
- "v": one key/value head's values at every position — `get_act_patch_attn_head_v_all_pos`.
- "pattern": one head's attention pattern — `get_act_patch_attn_head_pattern_all_pos`.

Per-head values on grouped-query models (SmolLM2: 9 query heads share 3 key/value heads; Gemma 3:
4 share 1). There is no per-query-head value: the model computes one value vector per *key/value*
head and every query head of its group reads it. So, as transformer_lens does (its `hook_v` has
`n_key_value_heads` heads and its sweep iterates over them), the "v" grid has one column per
key/value head, labelled "KV0", "KV1", ...: patching column g gives the clean values to all
`n_heads / n_key_value_heads` query heads of group g at once (query heads g*group ... (g+1)*group-1,
Hugging Face's `repeat_kv` order). On multi-head models (GPT-2) the columns are the heads, "H0"...

How it is computed: the clean and corrupted runs are cached once, and every patched run resumes
from the corrupted run's cache instead of rerunning the model (`seqprobe.engine.resume`, which lists
the levers that keep it exact). Heads claimed to work together are patched together in one resumed
run (`PatchingRuns.patch_heads_together`): a sum of single-head recoveries would not be the same.
The metric and recovery are defined once, in `seqprobe.engine.metric`.

Path patching (`prepare_patching(paths=True)`, then `PatchingRuns.path_sweep`, `path_logits_sweep`
and `path_pairs`): the difference sender heads write, delivered to one receiver only — a later
head's query, key or value input, or the logits (seqprobe.engine.path_patching, path_logits). Its
site names are "path:q", "path:k", "path:v" and "path:logits".

Results equal transformer_lens.patching's to 1e-4 (tests/engine/test_patching.py; `seqprobe bench` shows
the times and the largest difference on a real model).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from seqprobe.engine.architectures import resumable_forward
from seqprobe.engine.memory import max_lanes
from seqprobe.engine.metric import (
    DEFAULT_MIN_GAP,
    NextTokenReadout,
    check_gap,
    logit_diff,
    logit_diff_metric,
    readout_for,
    readout_rows,
    recovery,
    run_metric,
)
from seqprobe.engine.pairs import PatchingPair, make_pair
from seqprobe.engine.path_logits import path_logits_grid, path_logits_metric
from seqprobe.engine.path_patching import (
    PATH_NEEDS,
    path_heads_metric,
    path_metric_grid,
    receiver_site,
)
from seqprobe.engine.resume import (
    check_sites,
    first_difference,
    grid_shape,
    needed_activations,
    patched_heads_metric,
    patched_metric_grid,
)
from seqprobe.errors import PatchingError
from seqprobe.vocabulary.circuits import LOGITS
from seqprobe.vocabulary.heads import format_head, format_layer
from seqprobe.vocabulary.sites import POSITION_SITES, SITES

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

# The metric's names are re-exported: this module is where the public patching API is looked up.
__all__ = [
    "DEFAULT_MIN_GAP",
    "PatchingPair",
    "PatchingRuns",
    "SweepResult",
    "head_columns",
    "logit_diff",
    "logit_diff_metric",
    "make_pair",
    "patch_sweep",
    "prepare_patching",
    "recovery",
]


def head_columns(n_columns: int, *, key_value: bool = False) -> tuple[str, ...]:
    """A head grid's column names: "H0", "H1", ... or, for key/value heads, "KV0", ... .

    Each is the head's name (`format_head`) without its layer, the same in every row, so that a
    row's layer and a column's name join into the head's name: "L5" + "KV1" is "L5KV1".
    """
    return tuple(format_head(0, c, key_value=key_value).removeprefix(format_layer(0)) for c in range(n_columns))


@dataclass(frozen=True)
class SweepResult:
    """One site's patching grid: recovery per layer and position (or head)."""

    site: str
    recovery: Float[Tensor, "layer column"]
    # The patched runs' metric itself (the mean over pairs), before normalizing.
    metric: Float[Tensor, "layer column"]
    clean_metric: float
    corrupted_metric: float
    # Column names: "Sunday_4" (token and index, from the first pair's clean prompt) or "H3" / "KV1".
    labels: tuple[str, ...]
    # Positions named by what they are, for position sites: "substituted" (the first position where
    # clean and corrupted differ) and "final"; empty for head sites.
    positions: Mapping[str, int]
    # "exact" (activation patching) or "attribution" (its gradient estimate, seqprobe.engine.attribution).
    method: str = "exact"
    # Each pair's metric in the patched, clean and corrupted runs, which intervals resample; an
    # attribution estimate has none.
    pair_metric: Float[Tensor, "layer column pair"] | None = None
    clean_pairs: Float[Tensor, " pair"] | None = None
    corrupted_pairs: Float[Tensor, " pair"] | None = None

    def column(self, key: int | str) -> int:
        """A column index from an index, a label ("Sunday_4", "H3") or a position name ("final")."""
        return _column(self.site, self.labels, self.positions, key)

    def at(self, layer: int, column: int | str) -> float:
        return float(self.recovery[layer, self.column(column)])


def _column(site: str, labels: Sequence[str], positions: Mapping[str, int], key: int | str) -> int:
    if isinstance(key, int):
        if not -len(labels) <= key < len(labels):
            raise PatchingError(f"{site}: column {key} is out of range; the grid has {len(labels)} columns")
        return key % len(labels)
    if key in positions:
        return positions[key]
    if key in labels:
        return labels.index(key)
    names = [*positions, *labels]
    raise PatchingError(f"{site}: no column {key!r}; choose one of {names} or an index")


class PatchingRuns:
    """The clean and corrupted runs of a set of pairs, cached once, ready for any number of sweeps.

    The clean run also serves the linear views of seqprobe.engine.attribution (direct logit
    attribution, the logit lens), which read it instead of running the clean prompts again:
    `keep_clean` names what they need beyond the sites' patches. `paths` keeps what path patching
    reads as well.
    """

    def __init__(
        self,
        bridge: TransformerBridge,
        pairs: Sequence[PatchingPair],
        *,
        sites: Sequence[str] = SITES,
        min_gap: float = DEFAULT_MIN_GAP,
        keep_clean: Collection[str] = (),
        max_memory: int | None = None,
        paths: bool = False,
    ) -> None:
        check_sites(sites)
        self.bridge = bridge
        # Bytes a sweep's stacked batch may take (None: half the device's free memory).
        self.max_memory = max_memory
        self.pairs = tuple(pairs)
        self.sites = tuple(sites)
        self.paths = paths
        self.min_gap = min_gap
        self.forward = resumable_forward(bridge.original_model)
        _check_lengths(self.pairs)
        device = self.forward.device
        self.readout = readout_for(self.pairs).to(device)
        clean = readout_rows(self.pairs, self.readout, [p.clean for p in self.pairs])  # [row pos]
        corrupted = readout_rows(self.pairs, self.readout, [p.corrupted for p in self.pairs])
        with torch.inference_mode():
            source_needs, target_needs = PATH_NEEDS if paths else (frozenset(), frozenset())
            keep = needed_activations(sites, role="source") | frozenset(keep_clean) | source_needs
            self.clean = self.forward.run(clean.to(device), keep=keep)
            keep = needed_activations(sites, role="target") | target_needs
            self.corrupted = self.forward.run(corrupted.to(device), keep=keep)
            self.clean_pairs = run_metric(self.forward, self.clean, self.readout).float().cpu()
            self.corrupted_pairs = run_metric(self.forward, self.corrupted, self.readout).float().cpu()
        self.clean_metric = float(self.clean_pairs.mean())
        self.corrupted_metric = float(self.corrupted_pairs.mean())
        # Positions named by what they are: the first where the prompts differ, and the prompt's last.
        prompts = [torch.stack([getattr(p, side) for p in self.pairs]) for side in ("clean", "corrupted")]
        self.positions = {"substituted": first_difference(*prompts), "final": self.readout.first}

    @property
    def token_ids(self) -> Int[Tensor, "pair 2"]:
        """Each pair's (answer, distractor) token, for the views that read one logit (DLA, the lens)."""
        if not isinstance(self.readout, NextTokenReadout):
            raise PatchingError(
                "direct logit attribution, the logit lens and attribution patching read one answer and one "
                "distractor logit at the final position; these pairs have multi-token answers or distractors, "
                "whose log-probabilities are not linear in the residual stream. Use activation patching claims "
                "(`patch:`), which score the whole continuations"
            )
        return self.readout.token_ids

    def sweep(self, site: str, *, cells: Bool[Tensor, "layer column"] | None = None) -> SweepResult:
        """Patch each activation of `site` from the clean run into the corrupted run, one at a time.

        With `cells`, only those are patched (what the claims read); the others are NaN.
        """
        self._check_prepared(site)
        with torch.inference_mode():
            lanes = max_lanes(self.forward, n_keys=self.corrupted.tokens.shape[1], budget=self.max_memory)
            grid = patched_metric_grid(
                self.forward, source=self.clean, target=self.corrupted, site=site, readout=self.readout,
                cells=cells, max_lanes=lanes,
            )  # fmt: skip  # [layer column pair]
        return self.result(site, grid.mean(-1), pair_metric=grid)

    def grid_shape(self, site: str) -> tuple[int, int]:
        """(layers, columns) of `site`'s grid, without computing it."""
        return grid_shape(self.forward, site, self.readout)

    def column(self, site: str, key: int | str) -> int:
        """The column `key` names in `site`'s grid (as `SweepResult.column`), without computing it."""
        return _column(site, self.labels(site), dict(self.positions) if site in POSITION_SITES else {}, key)

    def patch_heads_together(self, site: str, heads: Collection[tuple[int, int]]) -> float:
        """Recovery when the clean `site` activations of all `heads` (layer, head) are patched in one run.

        For "v" the heads are key/value heads, the columns of the "v" grid.
        """
        metric = self.heads_together_pairs(site, heads).mean()
        return float(recovery(metric, clean=self.clean_metric, corrupted=self.corrupted_metric, min_gap=self.min_gap))

    def heads_together_pairs(self, site: str, heads: Collection[tuple[int, int]]) -> Float[Tensor, " pair"]:
        """Each pair's metric when the clean `site` activations of all `heads` are patched in one run."""
        self._check_prepared(site)
        with torch.inference_mode():
            metric = patched_heads_metric(
                self.forward, source=self.clean, target=self.corrupted, site=site, heads=heads, readout=self.readout
            )
        return metric.float().cpu()

    def path_sweep(
        self, senders: Collection[tuple[int, int]], input: str, *, cells: Bool[Tensor, "layer column"] | None = None
    ) -> SweepResult:
        """The path from `senders` (layer, head) into each later head's `input` ("q", "k", "v") alone.

        Columns are key/value heads for "k" and "v"; rows up to the last sender's layer are NaN,
        and so are the cells outside `cells`.
        """
        self._check_paths()
        with torch.inference_mode():
            lanes = max_lanes(self.forward, n_keys=self.corrupted.tokens.shape[1], budget=self.max_memory)
            grid = path_metric_grid(
                self.forward, source=self.clean, target=self.corrupted, senders=senders, input=input,
                readout=self.readout, cells=cells, max_lanes=lanes,
            )  # fmt: skip  # [layer column pair]
        return self.result(f"path:{input}", grid.mean(-1), pair_metric=grid)

    def path_logits_sweep(self) -> SweepResult:
        """Every head alone as the sender of a path into the logits, [layer head]."""
        self._check_paths()
        with torch.inference_mode():
            grid = path_logits_grid(self.forward, source=self.clean, target=self.corrupted, readout=self.readout)
        return self.result(f"path:{LOGITS}", grid.mean(-1), pair_metric=grid)

    def path_pairs(
        self, senders: Collection[tuple[int, int]], *, input: str, receivers: Collection[tuple[int, int]] = ()
    ) -> Float[Tensor, " pair"]:
        """Each pair's metric with the path from `senders` into the logits (`input="logits"`), or into
        every receiver's `input` at once (key/value heads for "k" and "v")."""
        self._check_paths()
        clean, corrupted, readout = self.clean, self.corrupted, self.readout
        with torch.inference_mode():
            if input == LOGITS:
                metric = path_logits_metric(
                    self.forward, source=clean, target=corrupted, senders=senders, readout=readout
                )
            else:
                metric = path_heads_metric(
                    self.forward, source=clean, target=corrupted, senders=senders, receivers=receivers,
                    input=input, readout=readout,
                )  # fmt: skip
        return metric.float().cpu()

    def _check_prepared(self, site: str) -> None:
        if site not in self.sites:
            raise PatchingError(f"site {site!r} was not prepared; these runs cached {self.sites}")
        check_gap(self.clean_metric, self.corrupted_metric, min_gap=self.min_gap)

    def _check_paths(self) -> None:
        if not self.paths:
            raise PatchingError("path patching was not prepared; call prepare_patching(..., paths=True)")
        check_gap(self.clean_metric, self.corrupted_metric, min_gap=self.min_gap)

    def result(
        self,
        site: str,
        metric: Float[Tensor, "layer column"],
        *,
        method: str = "exact",
        pair_metric: Float[Tensor, "layer column pair"] | None = None,
    ) -> SweepResult:
        """A site's grid of patched metrics, normalized and labelled."""
        metric = metric.detach().float().cpu()
        exact = pair_metric is not None
        return SweepResult(
            site=site,
            recovery=recovery(metric, clean=self.clean_metric, corrupted=self.corrupted_metric, min_gap=self.min_gap),
            metric=metric,
            clean_metric=self.clean_metric,
            corrupted_metric=self.corrupted_metric,
            labels=self.labels(site),
            positions=dict(self.positions) if site in POSITION_SITES else {},
            method=method,
            pair_metric=pair_metric.detach().float().cpu() if exact else None,
            clean_pairs=self.clean_pairs if exact else None,
            corrupted_pairs=self.corrupted_pairs if exact else None,
        )

    def labels(self, site: str) -> tuple[str, ...]:
        if site in POSITION_SITES:
            pieces = self.bridge.to_str_tokens(self.pairs[0].clean)
            return tuple(f"{_display(piece)}_{i}" for i, piece in enumerate(pieces))
        # A path's receivers into keys or values are key/value heads, like the "v" grid's columns.
        if site.startswith("path:") and site != f"path:{LOGITS}":
            site = receiver_site(site.removeprefix("path:"))
        if site == "v" and self.forward.n_kv_heads != self.forward.n_heads:
            return head_columns(self.forward.n_kv_heads, key_value=True)
        return head_columns(self.forward.n_heads)


def prepare_patching(
    bridge: TransformerBridge,
    pairs: Sequence[PatchingPair],
    *,
    sites: Sequence[str] = SITES,
    min_gap: float = DEFAULT_MIN_GAP,
    keep_clean: Collection[str] = (),
    max_memory: int | None = None,
    paths: bool = False,
) -> PatchingRuns:
    """Run and cache the clean and corrupted prompts, keeping only what `sites` (and `keep_clean`, `paths`) need."""
    return PatchingRuns(
        bridge, pairs, sites=sites, min_gap=min_gap, keep_clean=keep_clean, max_memory=max_memory, paths=paths
    )


def patch_sweep(
    bridge: TransformerBridge, pairs: Sequence[PatchingPair], site: str, *, min_gap: float = DEFAULT_MIN_GAP
) -> SweepResult:
    """One site's grid; for several sites, `prepare_patching` once and call `.sweep` on it."""
    return prepare_patching(bridge, pairs, sites=(site,), min_gap=min_gap).sweep(site)


def _display(piece: str) -> str:
    return piece.strip() or repr(piece)


def _check_lengths(pairs: Sequence[PatchingPair]) -> None:
    if not pairs:
        raise PatchingError("patching needs at least one clean/corrupted pair")
    lengths = [pair.clean.numel() for pair in pairs]
    if len(set(lengths)) > 1:
        raise PatchingError(
            f"all pairs' prompts must have the same number of tokens, since they run as one batch (as in "
            f"transformer_lens): lengths per pair {lengths}; group pairs by length and patch each group"
        )
