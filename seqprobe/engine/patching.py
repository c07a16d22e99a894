"""Activation patching, exactly as transformer_lens.patching computes it, without rerunning the model.

The method. A *clean* prompt ("Today it is Sunday, tomorrow it is") makes the model give the answer
(" Monday"); a *corrupted* prompt that differs in one word ("... Tuesday, ...") makes it prefer
another token, the distractor (" Wednesday"). Both runs are cached. Then, for one activation at a
time, the corrupted prompt is run again with that activation replaced by its clean value, and the
metric says how far the output moved back towards the clean one:

    metric   = logit(answer) − logit(distractor) at the final position, averaged over the pairs
    recovery = (patched − corrupted) / (clean − corrupted)

0 means the activation carries none of the difference, 1 all of it. The *same* metric function
(`logit_diff`) scores the clean, the corrupted and every patched run, with each pair's distractor
fixed for all three. Recovery is undefined when clean ≈ corrupted; `recovery` raises instead of
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

Why it is fast (each lever keeps the result exact):

- A patched run is resumed at the patched sublayer from the corrupted run's cached residual
  stream; nothing before it is recomputed.
- Clean and corrupted prompts agree up to their first differing token, so every activation before
  it is the same in both runs: patching there is a no-op whose value is the corrupted metric.
- Under causal attention a patch at position p changes nothing before p: only positions p.. are
  computed, attending to keys and values of the earlier positions from the corrupted cache. In the
  last block only the final position's query, attention and MLP run.
- Many patch configurations go through the model stacked in one batch, layer by layer, joining
  the batch at the sublayer where their patch applies.
- The metric reads two rows of the unembedding (answer and distractor), not the whole vocabulary.

Memory: only the activations a site needs are cached (transformer_lens's `names_filter`), and the
stacked batch peaks at configurations × pairs × patched positions rows of the MLP's width — for the
study's "z" sweep on SmolLM2, 270 × 4 × 5 rows of 1536 floats.

Results equal transformer_lens.patching's to 1e-4 (tests/engine/test_patching.py; `seqprobe bench` shows
the times and the largest difference on a real model).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from jaxtyping import Float, Int
from torch import Tensor

from seqprobe.engine.forward import ResumableForward, Run, resumable_forward
from seqprobe.errors import PatchingError
from seqprobe.vocabulary.sites import POSITION_SITES, SITES

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

__all__ = [
    "DEFAULT_MIN_GAP",
    "PatchingPair",
    "PatchingRuns",
    "SweepResult",
    "logit_diff",
    "logit_diff_metric",
    "make_pair",
    "patch_sweep",
    "patched_metric_grid",
    "prepare_patching",
    "recovery",
]

# Below this |clean − corrupted| (in logits), recovery is reported as undefined.
DEFAULT_MIN_GAP = 1e-2

# The cached activations each site's patches are built from: (from the clean run, from the corrupted run).
_NEEDS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "resid_pre": (frozenset({"resid_pre"}), frozenset({"resid_pre", "k", "v"})),
    "attn_out": (frozenset({"attn_out"}), frozenset({"resid_pre", "resid_mid", "k", "v"})),
    "mlp_out": (frozenset({"mlp_out"}), frozenset({"resid_pre", "resid_mid", "k", "v"})),
    "z": (frozenset({"z"}), frozenset({"resid_pre", "z", "k", "v"})),
    "v": (frozenset({"v"}), frozenset({"resid_pre", "z", "pattern", "k", "v"})),
    "pattern": (frozenset({"pattern"}), frozenset({"resid_pre", "z", "k", "v"})),
}


@dataclass(frozen=True)
class PatchingPair:
    """One clean/corrupted prompt pair, tokenized, with the two tokens the metric compares."""

    clean: Int[Tensor, " pos"]
    corrupted: Int[Tensor, " pos"]
    answer_id: int
    # Scored against the answer in the clean, corrupted and patched runs alike.
    distractor_id: int

    def __post_init__(self) -> None:
        if self.clean.ndim != 1 or self.corrupted.ndim != 1:
            raise PatchingError(
                f"a PatchingPair holds one prompt's token ids each (1-D), got clean.shape={tuple(self.clean.shape)}, "
                f"corrupted.shape={tuple(self.corrupted.shape)}"
            )
        if self.clean.shape != self.corrupted.shape:
            raise PatchingError(
                f"clean and corrupted prompts must have the same number of tokens, so that a position means the "
                f"same slot in both runs: clean has {self.clean.numel()} {self.clean.tolist()}, corrupted has "
                f"{self.corrupted.numel()} {self.corrupted.tolist()}"
            )


def make_pair(
    bridge: TransformerBridge, *, clean: str, corrupted: str, answer: str, distractor: str, where: str = "patching"
) -> PatchingPair:
    """Tokenize a pair as the bridge does (with its BOS); PatchingError if the lengths differ."""
    from seqprobe.engine.scoring import prompt_token_ids, single_token_id

    clean_ids = prompt_token_ids(bridge, clean, where=where)
    corrupted_ids = prompt_token_ids(bridge, corrupted, where=where)
    if len(clean_ids) != len(corrupted_ids):
        raise PatchingError(
            f"{where}: clean and corrupted prompts must tokenize to the same length, so that a position means the "
            f"same slot in both runs: clean {clean!r} is {len(clean_ids)} tokens {_pieces(bridge, clean_ids)}, "
            f"corrupted {corrupted!r} is {len(corrupted_ids)} tokens {_pieces(bridge, corrupted_ids)}; substitute "
            "words that are the same number of tokens"
        )
    return PatchingPair(
        clean=torch.tensor(clean_ids),
        corrupted=torch.tensor(corrupted_ids),
        answer_id=single_token_id(bridge, answer, role="answer", where=where),
        distractor_id=single_token_id(bridge, distractor, role="distractor", where=where),
    )


def _pieces(bridge: TransformerBridge, ids: Sequence[int]) -> list[str]:
    return [bridge.to_string([i]) for i in ids]


def logit_diff(
    answer_logits: Float[Tensor, "*cell pair"], distractor_logits: Float[Tensor, "*cell pair"]
) -> Float[Tensor, "*cell"]:
    """THE metric: logit(answer) − logit(distractor), averaged over the pairs; float32 whatever the model's dtype."""
    return (answer_logits.float() - distractor_logits.float()).mean(dim=-1)


def logit_diff_metric(logits: Float[Tensor, "pair pos vocab"], pairs: Sequence[PatchingPair]) -> Float[Tensor, ""]:
    """`logit_diff` read from full logits at the final position (the form transformer_lens's sweeps call)."""
    final = logits[:, -1]  # [pair vocab]
    ids = _token_ids(pairs).to(final.device)
    return logit_diff(final.gather(-1, ids[:, :1])[:, 0], final.gather(-1, ids[:, 1:])[:, 0])


def recovery(patched: Tensor, *, clean: float, corrupted: float, min_gap: float = DEFAULT_MIN_GAP) -> Tensor:
    """(patched − corrupted) / (clean − corrupted); PatchingError when clean ≈ corrupted."""
    _check_gap(clean, corrupted, min_gap=min_gap)
    return (patched - corrupted) / (clean - corrupted)


def _check_gap(clean: float, corrupted: float, *, min_gap: float) -> None:
    if not abs(clean - corrupted) >= min_gap:
        raise PatchingError(
            f"recovery is undefined: clean metric {clean:.4f} and corrupted metric {corrupted:.4f} differ by "
            f"{abs(clean - corrupted):.4f}, less than min_gap={min_gap:g}, so (patched − corrupted) / (clean − corrupted) "
            "would divide by almost zero. Choose a corrupted prompt that moves the model towards the distractor "
            "(its metric should be well below the clean one), or a distractor the corrupted prompt favours"
        )


@dataclass(frozen=True)
class SweepResult:
    """One site's patching grid: recovery per layer and position (or head)."""

    site: str
    recovery: Float[Tensor, "layer column"]
    # The patched runs' metric itself, before normalizing.
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

    def column(self, key: int | str) -> int:
        """A column index from an index, a label ("Sunday_4", "H3") or a position name ("final")."""
        if isinstance(key, int):
            if not -len(self.labels) <= key < len(self.labels):
                raise PatchingError(
                    f"{self.site}: column {key} is out of range; the grid has {len(self.labels)} columns"
                )
            return key % len(self.labels)
        if key in self.positions:
            return self.positions[key]
        if key in self.labels:
            return self.labels.index(key)
        names = [*self.positions, *self.labels]
        raise PatchingError(f"{self.site}: no column {key!r}; choose one of {names} or an index")

    def at(self, layer: int, column: int | str) -> float:
        return float(self.recovery[layer, self.column(column)])


class PatchingRuns:
    """The clean and corrupted runs of a set of pairs, cached once, ready for any number of sweeps."""

    def __init__(
        self,
        bridge: TransformerBridge,
        pairs: Sequence[PatchingPair],
        *,
        sites: Sequence[str] = SITES,
        min_gap: float = DEFAULT_MIN_GAP,
    ) -> None:
        _check_sites(sites)
        self.bridge = bridge
        self.pairs = tuple(pairs)
        self.sites = tuple(sites)
        self.min_gap = min_gap
        self.forward = resumable_forward(bridge.original_model)
        clean, corrupted = _stack_pairs(self.pairs)
        device = self.forward.device
        self.token_ids = _token_ids(self.pairs).to(device)
        with torch.inference_mode():
            self.clean = self.forward.run(clean.to(device), keep=_kept(sites, side=0))
            self.corrupted = self.forward.run(corrupted.to(device), keep=_kept(sites, side=1))
            self.clean_metric = float(_final_metric(self.forward, self.clean, self.token_ids))
            self.corrupted_metric = float(_final_metric(self.forward, self.corrupted, self.token_ids))

    def sweep(self, site: str) -> SweepResult:
        """Patch each activation of `site` from the clean run into the corrupted run, one at a time."""
        if site not in self.sites:
            raise PatchingError(f"site {site!r} was not prepared; these runs cached {self.sites}")
        _check_gap(self.clean_metric, self.corrupted_metric, min_gap=self.min_gap)
        with torch.inference_mode():
            grid = patched_metric_grid(
                self.forward, source=self.clean, target=self.corrupted, site=site, token_ids=self.token_ids
            )
        return self.result(site, grid)

    def result(self, site: str, metric: Float[Tensor, "layer column"], *, method: str = "exact") -> SweepResult:
        """A site's grid of patched metrics, normalized and labelled."""
        metric = metric.detach().float().cpu()
        return SweepResult(
            site=site,
            recovery=recovery(metric, clean=self.clean_metric, corrupted=self.corrupted_metric, min_gap=self.min_gap),
            metric=metric,
            clean_metric=self.clean_metric,
            corrupted_metric=self.corrupted_metric,
            labels=self._labels(site),
            positions=self._positions() if site in POSITION_SITES else {},
            method=method,
        )

    def _labels(self, site: str) -> tuple[str, ...]:
        if site in POSITION_SITES:
            pieces = self.bridge.to_str_tokens(self.pairs[0].clean)
            return tuple(f"{_display(piece)}_{i}" for i, piece in enumerate(pieces))
        if site == "v" and self.forward.n_kv_heads != self.forward.n_heads:
            return tuple(f"KV{g}" for g in range(self.forward.n_kv_heads))
        return tuple(f"H{h}" for h in range(self.forward.n_heads))

    def _positions(self) -> dict[str, int]:
        clean, corrupted = _stack_pairs(self.pairs)
        return {"substituted": _first_difference(clean, corrupted), "final": clean.shape[1] - 1}


def prepare_patching(
    bridge: TransformerBridge,
    pairs: Sequence[PatchingPair],
    *,
    sites: Sequence[str] = SITES,
    min_gap: float = DEFAULT_MIN_GAP,
) -> PatchingRuns:
    """Run and cache the clean and corrupted prompts, keeping only what `sites` need."""
    return PatchingRuns(bridge, pairs, sites=sites, min_gap=min_gap)


def patch_sweep(
    bridge: TransformerBridge, pairs: Sequence[PatchingPair], site: str, *, min_gap: float = DEFAULT_MIN_GAP
) -> SweepResult:
    """One site's grid; for several sites, `prepare_patching` once and call `.sweep` on it."""
    return prepare_patching(bridge, pairs, sites=(site,), min_gap=min_gap).sweep(site)


def _display(piece: str) -> str:
    return piece.strip() or repr(piece)


def _check_sites(sites: Sequence[str]) -> None:
    unknown = [site for site in sites if site not in SITES]
    if unknown:
        raise PatchingError(f"unknown patching site(s) {unknown}; choose from {SITES}")


def _kept(sites: Sequence[str], *, side: int) -> frozenset[str]:
    return frozenset().union(*(_NEEDS[site][side] for site in sites))


def _stack_pairs(pairs: Sequence[PatchingPair]) -> tuple[Int[Tensor, "pair pos"], Int[Tensor, "pair pos"]]:
    if not pairs:
        raise PatchingError("patching needs at least one clean/corrupted pair")
    lengths = [pair.clean.numel() for pair in pairs]
    if len(set(lengths)) > 1:
        raise PatchingError(
            f"all pairs must have the same number of tokens, since they run as one batch (as in transformer_lens): "
            f"lengths per pair {lengths}; group pairs by length and patch each group"
        )
    return torch.stack([p.clean for p in pairs]), torch.stack([p.corrupted for p in pairs])


def _token_ids(pairs: Sequence[PatchingPair]) -> Int[Tensor, "pair 2"]:
    return torch.tensor([[p.answer_id, p.distractor_id] for p in pairs])


def _first_difference(source: Int[Tensor, "pair pos"], target: Int[Tensor, "pair pos"]) -> int:
    """The first position where any pair's two prompts differ; their length if none does."""
    differs = (source != target).any(dim=0).nonzero()
    return int(differs[0]) if len(differs) else source.shape[1]


def _final_metric(forward: ResumableForward, run: Run, token_ids: Int[Tensor, "pair 2"]) -> Float[Tensor, ""]:
    logits = forward.unembed(run.resid_final[:, -1], token_ids)  # [pair 2]
    return logit_diff(logits[..., 0], logits[..., 1])


# -- the engine -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Entry:
    """Patch configurations that join the batched run at one sublayer, computing positions `start`.. ."""

    # 2*layer: the attention sublayer of `layer`; 2*layer+1: its MLP; 2*n_layers: the final norm.
    stage: int
    start: int
    # The residual stream entering `stage` at positions start.., one row per configuration.
    resid: Float[Tensor, "config pair pos d_model"]
    # Where each configuration's metric goes in the flattened [layer column] grid.
    cells: Int[Tensor, " config"]


def patched_metric_grid(
    forward: ResumableForward, *, source: Run, target: Run, site: str, token_ids: Int[Tensor, "pair 2"]
) -> Float[Tensor, "layer column"]:
    """The metric of `target`'s run with each activation of `site` in turn taken from `source`'s run.

    `source` and `target` must hold the activations `_NEEDS[site]` lists. Patching the clean run
    into the corrupted one gives transformer_lens's grid; patching a run into itself gives its own
    metric everywhere.
    """
    _check_sites([site])
    n_layers, n_pos = forward.n_layers, target.tokens.shape[1]
    start = _first_difference(source.tokens, target.tokens)
    n_columns = n_pos if site in POSITION_SITES else (forward.n_kv_heads if site == "v" else forward.n_heads)
    grid = _final_metric(forward, target, token_ids).expand(n_layers * n_columns).clone()
    if start < n_pos:
        build = _position_entries if site in POSITION_SITES else _head_entries
        entries = build(forward, source, target, start, site)
        cells = torch.cat([entry.cells for entry in entries])
        grid[cells.to(grid.device)] = _resume(forward, target, entries, token_ids)
    return grid.view(n_layers, n_columns)


def _position_entries(forward: ResumableForward, source: Run, target: Run, start: int, site: str) -> list[_Entry]:
    """One configuration per (layer, position) from `start` on; earlier positions are no-ops."""
    n_layers, n_pos = forward.n_layers, target.tokens.shape[1]
    entries = []
    for layer in range(n_layers):
        for pos in range(start, n_pos):
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
            cells = torch.tensor([layer * n_pos + pos])
            entries.append(_Entry(stage=stage, start=pos, resid=resid[None], cells=cells))
    return entries


def _head_entries(forward: ResumableForward, source: Run, target: Run, start: int, site: str) -> list[_Entry]:
    """One configuration per (layer, head); each changes the heads' outputs z at positions start.. ."""
    n_heads, group = forward.n_heads, forward.n_heads // forward.n_kv_heads
    n_columns = forward.n_kv_heads if site == "v" else n_heads
    entries = []
    for layer in range(forward.n_layers):
        z_target = target["z", layer][:, start:]  # [pair pos head d_head]
        z = z_target.expand(n_columns, *z_target.shape).clone()  # [config pair pos head d_head]
        for column in range(n_columns):
            if site == "z":
                z[column, :, :, column] = source["z", layer][:, start:, column]
            elif site == "v":
                heads = slice(column * group, (column + 1) * group)
                pattern = target["pattern", layer][:, heads, start:]  # [pair group pos k_pos]
                mixed = pattern @ source["v", layer][:, column, None]  # [pair group pos d_head]
                z[column, :, :, heads] = mixed.transpose(1, 2)
            else:
                pattern = source["pattern", layer][:, column, start:]  # [pair pos k_pos]
                z[column, :, :, column] = pattern @ target["v", layer][:, column // group]
        resid = target["resid_pre", layer][:, start:] + forward.attention_output(layer, z)
        cells = torch.arange(n_columns) + layer * n_columns
        entries.append(_Entry(stage=2 * layer + 1, start=start, resid=resid, cells=cells))
    return entries


def _resume(
    forward: ResumableForward, target: Run, entries: Sequence[_Entry], token_ids: Int[Tensor, "pair 2"]
) -> Float[Tensor, " cell"]:
    """Run every entry from its stage to the logits, stacked; one metric per configuration, in entry order."""
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
            # After the last attention sublayer only the final position is carried on.
            resid = entry.resid if stage <= 2 * (n_layers - 1) else entry.resid[:, :, -1:]
            joined = [active[entry.start], resid] if entry.start in active else [resid]
            active[entry.start] = torch.cat(joined)
            order.setdefault(entry.start, []).extend(range(offsets[i], offsets[i + 1]))
        if stage == 2 * n_layers:
            break
        layer, is_mlp = divmod(stage, 2)
        if is_mlp:
            active = _mlp_step(forward, layer, active)
        else:
            active = {start: _attention_step(forward, target, layer, start, resid) for start, resid in active.items()}
    metrics = torch.empty(offsets[-1], device=token_ids.device)
    for start, resid in active.items():
        logits = forward.unembed(resid[:, :, -1], token_ids)  # [config pair 2]
        metrics[order[start]] = logit_diff(logits[..., 0], logits[..., 1]).to(metrics.dtype)
    return metrics


def _mlp_step(forward: ResumableForward, layer: int, active: dict[int, Tensor]) -> dict[int, Tensor]:
    """The MLP sublayer for every configuration in flight, as one batch (it treats positions alike)."""
    d_model = forward.d_model
    # every [config pair pos d_model] -> one [lane d_model]: bigger matrix products run faster
    lanes = torch.cat([resid.reshape(-1, d_model) for resid in active.values()])
    out = forward.mlp_output(layer, lanes).split([resid[..., 0].numel() for resid in active.values()])
    return {start: resid + part.view(resid.shape) for (start, resid), part in zip(active.items(), out, strict=True)}


def _attention_step(
    forward: ResumableForward, target: Run, layer: int, start: int, resid: Float[Tensor, "config pair pos d_model"]
) -> Float[Tensor, "config pair pos d_model"]:
    """The attention sublayer for positions start.., with earlier keys and values from `target`.

    In the last block only the final position is carried on: nothing reads the others again.
    """
    n_config, n_pair, n_suffix, d_model = resid.shape
    rows = resid.reshape(n_config * n_pair, n_suffix, d_model)  # [config*pair pos d_model]
    q, k, v = forward.qkv(layer, forward.attention_input(layer, rows), start=start)
    keys = torch.cat([_prefix(target["k", layer], start, n_config), k], dim=2)  # [row kv_head pos d_head]
    values = torch.cat([_prefix(target["v", layer], start, n_config), v], dim=2)
    q_start = start
    if layer == forward.n_layers - 1:
        q, q_start, resid = q[:, :, -1:], keys.shape[2] - 1, resid[:, :, -1:]
    z = forward.mix(forward.pattern(layer, q, keys, q_start=q_start), values)  # [row pos head d_head]
    out = forward.attention_output(layer, z)  # [row pos d_model]
    return resid + out.view(n_config, n_pair, -1, d_model)


def _prefix(cached: Float[Tensor, "pair kv_head pos d_head"], start: int, n_config: int) -> Tensor:
    """The target run's keys or values before `start`, repeated for each configuration."""
    head = cached[:, :, :start]
    # [pair kv_head start d_head] -> [config*pair kv_head start d_head]
    return head.expand(n_config, *head.shape).reshape(-1, *head.shape[1:])
