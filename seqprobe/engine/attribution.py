"""Linear views of a model's answer: attribution patching, direct logit attribution, the logit lens.

**Attribution patching** estimates every activation-patching cell at once. Patching activation a
from its corrupted value a* to its clean value a changes the metric by about ∂metric/∂a · (a − a*),
the first-order Taylor term at the corrupted run. One clean forward (already cached by
`PatchingRuns`), one corrupted forward and one backward pass give the gradient at every site, so a
whole model is screened in the time of three passes; `agreement` then says how well the estimate
ranks the cells that exact patching finds (correlation, overlap of the top k). It is a screen: where
the metric bends (softmax saturation, MLP gates) the estimate can be far off — notably for the
residual stream at the substituted token in early layers, where patching swaps a whole token
embedding, a jump no tangent describes — which is why claims are checked on the exact grid.

**Direct logit attribution (DLA)** splits the final residual stream at the last position into what
each component wrote (the embedding, each block's attention and MLP, each head) and maps each part
through the final norm *frozen at the real residual's scale* and the answer−distractor unembedding
direction. Frozen, the norm is affine, so the parts add up to the real logit difference except for
its constant term — the norm's bias (LayerNorm) and the unembedding's bias — which no component
writes; `DirectAttribution.constant` reports it and `DirectAttribution.residual` shows what is left.

Why the study's DLA summed to 1.39 while the logit difference was 1.347. Its GPT-2 was loaded with
`fold_ln=True`, which folds the final LayerNorm's weight into W_U and its bias into b_U. The study
applied `cache.apply_ln_to_stack` (centring and the cached scale: exact) and dotted with
`tokens_to_residual_directions` (W_U only), so b_U[answer] − b_U[distractor] — the folded ln_final
bias, averaged over the four prompts — was left out. Dividing the pooled sum by len(prompts) is a
plain mean and not the cause; neither is LayerNorm's non-linearity (frozen at the cached scale it is
exact). Measured on a GPT-2 with a non-zero ln_final bias: the study's recipe misses the real logit
difference by exactly that bias term (tests/engine/test_attribution.py); SmolLM2 and Gemma 3 have an RMSNorm
with no bias and an unembedding without bias, so their residual is float noise.

**Logit lens**: the residual stream entering each block, put through the real final norm (its own
scale recomputed, as `apply_ln_to_stack(recompute_ln=True)` does) and read off as the answer−distractor
logit difference; the last entry is the model's own logit difference.

All three read the runs `PatchingRuns` cached (DLA and the lens its clean run, so a case's clean
prompts run once) and average over the pairs, like the metric in seqprobe.engine.metric.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from jaxtyping import Float, Int
from torch import Tensor

from seqprobe.engine.metric import logit_diff
from seqprobe.errors import PatchingError
from seqprobe.vocabulary.heads import component_label
from seqprobe.vocabulary.sites import POSITION_SITES

if TYPE_CHECKING:
    from seqprobe.engine.forward import ResumableForward, Run
    from seqprobe.engine.patching import PatchingRuns, SweepResult

__all__ = [
    "DLA_NEEDS",
    "LENS_NEEDS",
    "Agreement",
    "DirectAttribution",
    "LogitLens",
    "agreement",
    "attribution_patching",
    "direct_logit_attribution",
    "logit_lens",
]

DEFAULT_TOP_K = 10
# What direct logit attribution and the logit lens read from the clean run (`PatchingRuns(keep_clean=...)`).
DLA_NEEDS = frozenset({"resid_pre", "attn_out", "mlp_out", "z"})
LENS_NEEDS = frozenset({"resid_pre"})


def attribution_patching(runs: PatchingRuns, *, sites: Sequence[str] | None = None) -> dict[str, SweepResult]:
    """Gradient estimates of every cell of each site's patching grid, from one backward pass."""
    sites = runs.sites if sites is None else tuple(sites)
    missing = [site for site in sites if site not in runs.sites]
    if missing:
        raise PatchingError(f"site(s) {missing} were not prepared; these runs cached {runs.sites}")
    forward, clean = runs.forward, runs.clean
    with torch.enable_grad():
        corrupted = forward.run(runs.corrupted.tokens, keep=sites, differentiable=True)
        logits = forward.unembed(corrupted.resid_final[:, -1], runs.token_ids)  # [pair 2]
        metric = logit_diff(logits[..., 0], logits[..., 1])
        inputs = [act for site in sites for act in corrupted.acts[site]]
        grads = iter(torch.autograd.grad(metric, inputs))
    results = {}
    for site in sites:
        # ∂metric/∂a · (clean − corrupted), summed over everything a patch of one cell replaces.
        cells = [
            _per_cell(site, next(grads) * (clean[site, layer] - corrupted[site, layer].detach()))
            for layer in range(forward.n_layers)
        ]
        estimate = runs.corrupted_metric + torch.stack(cells)  # [layer column]
        results[site] = runs.result(site, estimate, method="attribution")
    return results


def _per_cell(site: str, effect: Tensor) -> Float[Tensor, " column"]:
    """Sum a per-element effect over what one cell of `site` patches (layouts: seqprobe.engine.forward)."""
    if site in POSITION_SITES:
        return effect.sum(dim=(0, 2))  # [pair pos d_model] -> [pos]
    if site == "z":
        return effect.sum(dim=(0, 1, 3))  # [pair pos head d_head] -> [head]
    if site == "v":
        return effect.sum(dim=(0, 2, 3))  # [pair kv_head pos d_head] -> [kv_head]
    return effect.sum(dim=(0, 2, 3))  # pattern: [pair head q_pos k_pos] -> [head]


@dataclass(frozen=True)
class Agreement:
    """How well attribution patching's estimate matches exact patching on one site."""

    site: str
    # Pearson correlation of the two recovery grids over the cells a patch can change.
    correlation: float
    # Share of exact patching's k largest |recovery| cells that are among the estimate's k largest.
    top_k_overlap: float
    k: int


def agreement(exact: SweepResult, estimate: SweepResult, *, k: int = DEFAULT_TOP_K) -> Agreement:
    """Compare an attribution estimate with the exact grid of the same site."""
    if exact.site != estimate.site or exact.recovery.shape != estimate.recovery.shape:
        raise PatchingError(
            f"agreement compares one site's two grids: got {exact.site!r} {tuple(exact.recovery.shape)} and "
            f"{estimate.site!r} {tuple(estimate.recovery.shape)}"
        )
    # Cells before the substituted token are no-ops both methods get exactly right; leave them out.
    first = exact.positions.get("substituted", 0)
    x = exact.recovery[:, first:].flatten().double()
    y = estimate.recovery[:, first:].flatten().double()
    k = min(k, x.numel())
    top_exact = set(x.abs().topk(k).indices.tolist())
    top_estimate = set(y.abs().topk(k).indices.tolist())
    return Agreement(
        site=exact.site,
        correlation=float(torch.corrcoef(torch.stack([x, y]))[0, 1]),
        top_k_overlap=len(top_exact & top_estimate) / k,
        k=k,
    )


@dataclass(frozen=True)
class DirectAttribution:
    """What each component's write adds to logit(answer) − logit(distractor), averaged over prompts."""

    # "embed", then "L{layer}_attn" and "L{layer}_mlp" for each block.
    labels: tuple[str, ...]
    by_component: Float[Tensor, " component"]
    # Each head's share of its block's attention write (output biases excluded).
    by_head: Float[Tensor, "layer head"]
    # The logit difference no component writes: final-norm bias and unembedding bias.
    constant: float
    # The model's own logit difference.
    logit_diff: float
    # Each pair's values, whose means the fields above are: what intervals resample.
    component_pairs: Float[Tensor, "pair component"] | None = None
    head_pairs: Float[Tensor, "pair layer head"] | None = None

    @property
    def residual(self) -> float:
        """Real logit difference − the components' sum; equals `constant` up to float error."""
        return self.logit_diff - float(self.by_component.sum())

    def component(self, label: str) -> float:
        if label not in self.labels:
            raise PatchingError(f"no component {label!r}; components are {list(self.labels)}")
        return float(self.by_component[self.labels.index(label)])


def direct_logit_attribution(runs: PatchingRuns) -> DirectAttribution:
    """DLA of each pair's answer over its distractor at the final position of its clean prompt, averaged over pairs.

    Reads the clean run `runs` cached; prepare them with `keep_clean=DLA_NEEDS`.
    """
    forward, run = runs.forward, _cached_clean(runs, DLA_NEEDS, "direct_logit_attribution")
    ids = runs.token_ids  # [pair 2]
    with torch.inference_mode():
        last = run.resid_final[:, -1]  # [pair d_model]
        writes = [run["resid_pre", 0][:, -1]]
        for layer in range(forward.n_layers):
            writes += [run["attn_out", layer][:, -1], run["mlp_out", layer][:, -1]]
        head_writes = torch.stack(
            [forward.head_writes(layer, run["z", layer][:, -1]) for layer in range(forward.n_layers)], dim=1
        )  # [pair layer head d_model]
        stack = torch.cat([torch.stack(writes, dim=1), head_writes.flatten(1, 2)], dim=1)  # [pair component d_model]
        normed, constant = forward.frozen_final_norm(stack, last)
        direction, bias_difference = _unembedding_difference(forward, ids)  # [pair d_model], [pair]
        attributions = (normed @ direction[..., None])[..., 0]  # [pair component]
        constants = (constant * direction).sum(-1) + bias_difference  # [pair]
        logits = forward.unembed(last, ids)  # [pair 2]
    by_head = attributions[:, len(writes) :].unflatten(1, (forward.n_layers, forward.n_heads))  # [pair layer head]
    labels = ("embed", *(component_label(layer, part) for layer in range(forward.n_layers) for part in ("attn", "mlp")))
    components = attributions[:, : len(writes)].float().cpu()  # [pair component]
    heads = by_head.float().cpu()  # [pair layer head]
    return DirectAttribution(
        labels=labels,
        by_component=components.mean(0),
        by_head=heads.mean(0),
        constant=float(constants.mean()),
        logit_diff=float((logits[:, 0] - logits[:, 1]).mean()),
        component_pairs=components,
        head_pairs=heads,
    )


def _unembedding_difference(
    forward: ResumableForward, ids: Int[Tensor, "pair 2"]
) -> tuple[Float[Tensor, "pair d_model"], Float[Tensor, " pair"]]:
    """The unembedding's answer − distractor direction and bias difference, read through the module."""
    if getattr(forward.config, "final_logit_softcapping", None) is not None:
        raise PatchingError(
            "direct logit attribution is linear only without final logit soft-capping; this model caps its "
            f"logits (final_logit_softcapping={forward.config.final_logit_softcapping})"
        )
    rows, bias = forward.unembedding_rows(ids)  # [pair 2 d_model], [pair 2] or None
    bias_difference = bias[:, 0] - bias[:, 1] if bias is not None else torch.zeros(len(ids), device=ids.device)
    return rows[:, 0] - rows[:, 1], bias_difference


@dataclass(frozen=True)
class LogitLens:
    """logit(answer) − logit(distractor) read from the residual stream entering each block."""

    # Entry i: the stream entering block i; the last entry: after the last block (the model's output).
    logit_diff: Float[Tensor, " layer_plus_one"]
    # Each pair's lens, whose mean `logit_diff` is: what intervals resample.
    pairs: Float[Tensor, "pair layer_plus_one"] | None = None

    def first_layer_reaching(self, value: float) -> int | None:
        """The first entry whose logit difference is at least `value`; None if none is."""
        reached = (self.logit_diff >= value).nonzero()
        return int(reached[0]) if len(reached) else None


def logit_lens(runs: PatchingRuns) -> LogitLens:
    """The logit lens at the final position of each pair's clean prompt, averaged over pairs.

    Reads the clean run `runs` cached; prepare them with `keep_clean=LENS_NEEDS`.
    """
    forward, run = runs.forward, _cached_clean(runs, LENS_NEEDS, "logit_lens")
    n_layers = forward.n_layers
    with torch.inference_mode():
        streams = torch.stack(
            [*(run["resid_pre", layer][:, -1] for layer in range(n_layers)), run.resid_final[:, -1]], dim=1
        )  # [pair layer+1 d_model]
        ids = runs.token_ids[:, None].expand(-1, n_layers + 1, 2)  # [pair layer+1 2]
        logits = forward.unembed(streams, ids)  # [pair layer+1 2]
    per_pair = (logits[..., 0] - logits[..., 1]).float().cpu()  # [pair layer+1]
    return LogitLens(logit_diff=per_pair.mean(0), pairs=per_pair)


def _cached_clean(runs: PatchingRuns, needs: frozenset[str], view: str) -> Run:
    missing = sorted(needs - set(runs.clean.acts))
    if missing:
        raise PatchingError(
            f"{view} reads the cached clean run's {', '.join(sorted(needs))}, but these runs did not keep "
            f"{', '.join(missing)}; prepare them with prepare_patching(..., keep_clean={sorted(needs)})"
        )
    return runs.clean
