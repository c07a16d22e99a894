"""The benchmark's faithfulness curve: seqprobe's batched circuits against one hooked transformer_lens run per circuit.

The curve is the study's: its four pairs, heads ranked by seqprobe's "z" sweep (the largest recovery
first), the circuits top-1..top-`CURVE_POINTS`, each evaluated with every other head resample-ablated
(its z from the corrupted run, pair by pair) while the circuit's heads compute normally.
seqprobe evaluates all of them in one batched run (`CircuitRuns.curve`, rows shared until the
circuits' layers differ), its clean, corrupted and ∅ runs included in the time. transformer_lens has
no function for it; the reference is what a user writes with it: one `run_with_hooks` on the clean
prompts per circuit, with a hook on every layer's `hook_z` that puts the corrupted run's z in place
of the heads outside the circuit, plus the run with every head replaced (∅). Both give faithfulness
(m(C) − m(∅)) / (m(clean) − m(∅)) per point; the largest difference is reported.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from seqprobe.engine.circuits import CircuitRuns
from seqprobe.engine.patching import PatchingPair, logit_diff_metric
from seqprobe.vocabulary.circuits import Component
from seqprobe.vocabulary.sites import hook_name

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

__all__ = ["CURVE_POINTS", "CURVE_SWEEP", "curve_row"]

# The benchmark's name for the faithfulness curve, and its number of points (the K).
CURVE_SWEEP = "curve"
CURVE_POINTS = 30


def curve_row(
    bridge: TransformerBridge,
    pairs: Sequence[PatchingPair],
    *,
    z_recovery: Tensor,
    cache: Any,
    clean: float,
    timed: Callable[[str, str, Callable[[], Any]], tuple[float, Any, int]],
) -> tuple[float, float, float, int, int]:
    """(seqprobe s, transformer_lens s, max |diff|, seqprobe peak, transformer_lens peak) of the curve.

    `cache` is transformer_lens's cache of the corrupted run with every layer's hook_z; `clean` its
    clean run's metric; `timed` the benchmark's (tool, step, work) -> (seconds, result, peak).
    """
    n_heads = z_recovery.shape[1]
    order = z_recovery.flatten().nan_to_num(float("-inf")).argsort(descending=True, stable=True)
    ranking = [Component(int(i) // n_heads, "head", int(i) % n_heads) for i in order[:CURVE_POINTS]]
    prompts = torch.stack([pair.clean for pair in pairs]).to(bridge.cfg.device)

    def ours(points: int) -> Tensor:
        runs = CircuitRuns(bridge, pairs, method="resample", scope="heads")
        return runs.fraction(runs.curve(ranking, max_k=points).mean(-1))  # [k]

    def theirs(points: int) -> Tensor:
        with torch.inference_mode():
            empty = _hooked_metric(bridge, prompts, pairs, cache, kept=())
            kept = [_hooked_metric(bridge, prompts, pairs, cache, kept=ranking[:k]) for k in range(1, points + 1)]
        return (torch.tensor(kept) - empty) / (clean - empty)

    # Warm-up, for both tools: a two-point curve pays the first calls' costs.
    ours(2)
    theirs(2)
    step = f"faithfulness curve of the top {len(ranking)} heads by z recovery (resample ablation)"
    ours_seconds, ours_curve, ours_peak = timed("seqprobe", step, lambda: ours(len(ranking)))
    theirs_seconds, expected, theirs_peak = timed("transformer_lens", step, lambda: theirs(len(ranking)))
    return ours_seconds, theirs_seconds, float((ours_curve - expected).abs().max()), ours_peak, theirs_peak


def _hooked_metric(
    bridge: TransformerBridge,
    clean: Tensor,
    pairs: Sequence[PatchingPair],
    corrupted_cache: Any,
    *,
    kept: Sequence[Component],
) -> float:
    """The metric of the clean prompts with every head outside `kept` given its corrupted z, in one hooked run."""
    n_layers, n_heads = bridge.cfg.n_layers, bridge.cfg.n_heads
    off = torch.ones(n_layers, n_heads, dtype=torch.bool)
    for component in kept:
        off[component.layer, component.head] = False

    def hook(layer: int) -> Callable[[Tensor, Any], Tensor]:
        def replace(z: Tensor, hook: Any) -> Tensor:  # [batch pos head d_head]
            z[:, :, off[layer]] = corrupted_cache[hook_name("z", layer)][:, :, off[layer]]
            return z

        return replace

    logits = bridge.run_with_hooks(clean, fwd_hooks=[(hook_name("z", layer), hook(layer)) for layer in range(n_layers)])
    return float(logit_diff_metric(logits, pairs))
