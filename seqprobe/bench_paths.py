"""The benchmark's path sweep: seqprobe's direct path patching against transformer_lens's, on the study's pairs.

The sender is the head that seqprobe's "z" sweep ranks first (the largest recovery); the receivers
are every later head's query input, as `transformer_lens.patching.get_act_patch_direct_path(...,
component="q")` computes them, one hooked forward per receiver. seqprobe computes the same grid
from its cached runs (`PatchingRuns.path_sweep`). Both tools cache the corrupted run's head outputs
in their setup, as each caches the clean run's there; their grids are compared on the rows after the
sender's layer (transformer_lens puts 0.0 before, seqprobe NaN).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from seqprobe.bench_curves import CURVE_SWEEP
from seqprobe.engine.patching import PatchingPair, PatchingRuns, logit_diff_metric
from seqprobe.vocabulary.heads import format_head
from seqprobe.vocabulary.sites import SITES, hook_name

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

__all__ = ["BENCH_SWEEPS", "PATH_SWEEP", "patching_sites", "path_row", "top_sender"]

# The benchmark's name for the path sweep, timed after the six patching sites, then the faithfulness curve.
PATH_SWEEP = "path"
BENCH_SWEEPS = (*SITES, PATH_SWEEP, CURVE_SWEEP)
# The sweeps that read the "z" sweep (the path's sender, the curve's ranking) and the corrupted run's hook_z.
_FROM_Z = (PATH_SWEEP, CURVE_SWEEP)
# The receivers' input the path sweep times (the one transformer_lens computes on every model).
_INPUT = "q"


def patching_sites(sweeps: Sequence[str]) -> tuple[str, ...]:
    """The patching sites the runs must prepare for `sweeps`: the path's sender and the curve's ranking come from "z"."""
    sites = tuple(sweep for sweep in sweeps if sweep not in _FROM_Z)
    return sites + ("z",) if any(s in sweeps for s in _FROM_Z) and "z" not in sites else sites


def top_sender(z_recovery: Tensor) -> tuple[int, int]:
    """The (layer, head) with the largest recovery in a "z" grid [layer head]."""
    layer, head = divmod(int(z_recovery.nan_to_num(float("-inf")).argmax()), z_recovery.shape[1])
    return layer, head


def path_row(
    bridge: TransformerBridge,
    pairs: Sequence[PatchingPair],
    runs: PatchingRuns,
    *,
    z_recovery: Tensor,
    caches: tuple[Any, Any],
    timed: Callable[[str, str, Callable[[], Any]], tuple[float, Any, int]],
) -> tuple[float, float, float, int, int]:
    """(seqprobe s, transformer_lens s, max |diff|, seqprobe peak, transformer_lens peak) of the path sweep.

    `caches` are transformer_lens's clean and corrupted caches holding every layer's hook_z; `timed`
    is the benchmark's (tool, step, work) -> (seconds, result, peak bytes).
    """
    import transformer_lens.patching as tl_patching

    clean_metric, corrupted_metric = runs.clean_metric, runs.corrupted_metric
    corrupted = torch.stack([pair.corrupted for pair in pairs]).to(bridge.cfg.device)

    def metric(logits: Tensor) -> Tensor:
        return (logit_diff_metric(logits, pairs) - corrupted_metric) / (clean_metric - corrupted_metric)

    def reference(sender: tuple[int, int]) -> Tensor:
        with torch.inference_mode():
            expected = tl_patching.get_act_patch_direct_path(
                bridge, corrupted, *caches, metric, *sender, component=_INPUT, verbose=False
            )
        return expected.float().cpu()

    # Warm-up, for both tools: a sender in the last layer but one (one receiver layer) pays the first calls' costs.
    warm_up = (max(bridge.cfg.n_layers - 2, 0), 0)
    runs.path_sweep([warm_up], _INPUT)
    reference(warm_up)
    layer, head = top_sender(z_recovery)
    step = f"path sweep from {format_head(layer, head)} into every later head's {_INPUT}"
    ours, grid, ours_peak = timed("seqprobe", step, lambda: runs.path_sweep([(layer, head)], _INPUT).recovery)
    theirs, expected, theirs_peak = timed("transformer_lens", step, lambda: reference((layer, head)))
    diff = float((grid[layer + 1 :] - expected[layer + 1 :]).abs().max()) if layer + 1 < len(grid) else 0.0
    return ours, theirs, diff, ours_peak, theirs_peak


def corrupted_hook_names(n_layers: int, sweeps: Sequence[str]) -> list[str]:
    """What transformer_lens caches of the corrupted run: every layer's hook_z when the path sweep or the curve runs."""
    return [hook_name("z", layer) for layer in range(n_layers)] if any(s in sweeps for s in _FROM_Z) else []
